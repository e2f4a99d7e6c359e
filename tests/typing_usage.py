"""User code as a type checker sees it: every public function, several dtypes.

This file is not a test module (pytest does not collect it).
tests/test_typing.py runs ``mypy --strict`` on it, which checks each
``assert_type`` (the static type is exactly the one written) and each
``# type: ignore[...]`` (mypy must report that error there: an ignore with
nothing to ignore is itself an error under --strict).  test_typing.py also
runs :func:`main`, whose run-time asserts confirm the dtypes that the
annotations promise.
"""

from __future__ import annotations

import io
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray
from typing_extensions import assert_type  # in typing from Python 3.11 on

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax.testing import check_grad, check_vjp, numerical_jacobian

Floats = NDArray[np.floating[Any]]  # what any array-like input gives
rng = np.random.default_rng(0)


def rejected(error: type[Exception], what: str, call: Callable[[], object]) -> None:
    """A call the type checker refuses must fail at run time too."""
    try:
        call()
    except error:
        return
    raise AssertionError(f"{what} was accepted")


def forward_keeps_the_float_dtype() -> None:
    x64 = rng.standard_normal((4, 5))
    x32 = rng.standard_normal((4, 5), dtype=np.float32)
    x16 = x32.astype(np.float16)

    p64 = fs.softmax(x64)
    p32 = fs.softmax(x32, axis=0)
    p16 = fs.log_softmax(x16, axis=(0, 1))
    assert_type(p64, NDArray[np.float64])
    assert_type(p32, NDArray[np.float32])
    assert_type(p16, NDArray[np.float16])
    assert p64.dtype == np.float64 and p32.dtype == np.float32 and p16.dtype == np.float16

    # A mask (where=) keeps the dtype; any boolean array-like is one.
    masked = fs.softmax(x32, where=np.array([True, False, True, True, False]))
    masked_log = fs.log_softmax(x32, where=[[True], [False], [True], [True]])
    assert_type(masked, NDArray[np.float32])
    assert_type(masked_log, NDArray[np.float32])
    assert masked[:, 1].max() == 0 and (masked_log[1] == -np.inf).all()
    lse = fs.logsumexp(x64, where=x64 > 0)
    assert np.shape(lse) == (4,)

    # Lists, integer arrays and scalars: some floating dtype (float64 here).
    from_list = fs.softmax([[1.0, 2.0], [3.0, -np.inf]])
    from_ints = fs.log_softmax(np.arange(6).reshape(2, 3), axis=None)
    from_scalar = fs.softmax(3.0)
    assert_type(from_list, Floats)
    assert_type(from_ints, Floats)
    assert_type(from_scalar, Floats)
    assert from_list.dtype == from_ints.dtype == from_scalar.dtype == np.float64

    # An axis may be any integer, NumPy's included.
    assert fs.softmax(x64, axis=np.int64(0)).shape == x64.shape


def out_is_returned_with_its_type() -> None:
    x = rng.standard_normal((3, 4), dtype=np.float32)
    out = np.empty_like(x)
    result = fs.softmax(x, out=out)
    assert_type(result, NDArray[np.float32])
    assert result is out

    in_place = fs.log_softmax(x, -1, out=x)
    assert_type(in_place, NDArray[np.float32])
    assert in_place is x


def derivatives() -> None:
    x = rng.standard_normal((2, 3, 4), dtype=np.float32)
    g = rng.standard_normal((2, 3, 4), dtype=np.float32)
    s = fs.softmax(x, axis=1)
    logp = fs.log_softmax(x, axis=1)

    jvp = fs.softmax_jvp(s, g, axis=1)
    vjp = fs.softmax_vjp(s, g, 1)
    log_vjp = fs.log_softmax_vjp(logp, g, axis=1)
    jac = fs.softmax_jacobian(s, axis=1)
    assert_type(jvp, NDArray[np.float32])
    assert_type(vjp, NDArray[np.float32])
    assert_type(log_vjp, NDArray[np.float32])
    assert_type(jac, NDArray[np.float32])
    assert jac.shape == (2, 4, 3, 3) and jac.dtype == np.float32
    assert np.allclose(jvp, vjp)

    # float32 with float64 computes in float64: the overload for one float
    # dtype does not apply, the result is "some floating dtype".
    mixed = fs.softmax_vjp(s, g.astype(np.float64), axis=1)
    assert_type(mixed, Floats)
    assert mixed.dtype == np.float64

    # The derivatives take the axes the softmax was taken over.
    joint = fs.softmax_jvp(s, g, axis=(0, 1))
    assert_type(joint, NDArray[np.float32])
    assert joint.shape == (2, 3, 4)


def cross_entropy() -> None:
    logits = rng.standard_normal((8, 5))
    labels = rng.integers(0, 5, size=8)
    probs = fs.softmax(rng.standard_normal((8, 5)))

    # PyTorch's options keep the result types
    weighted = fs.softmax_cross_entropy(logits, labels, weight=[1.0, 2.0, 1.0, 1.0, 0.5],
                                        ignore_index=-100, label_smoothing=0.1)
    assert_type(weighted, np.floating[Any])
    per_row, dweighted = fs.softmax_cross_entropy(logits, labels, reduction="none",
                                                  return_grad=True, label_smoothing=0.1)
    assert_type(per_row, Floats)
    assert per_row.shape == (8,) and dweighted.shape == (8, 5)

    mean = fs.softmax_cross_entropy(logits, labels)
    assert_type(mean, np.floating[Any])
    total = fs.softmax_cross_entropy(logits, probs, reduction="sum")
    assert_type(total, np.floating[Any])
    per_row = fs.softmax_cross_entropy(logits, labels, reduction="none")
    assert_type(per_row, Floats)
    assert per_row.shape == (8,)
    assert np.isclose(float(mean), float(per_row.mean()))

    # return_grad=True: a (loss, dlogits) pair, unpacked without a cast.
    loss, dlogits = fs.softmax_cross_entropy(logits, labels, return_grad=True)
    assert_type(loss, np.floating[Any])
    assert_type(dlogits, Floats)
    assert dlogits.shape == logits.shape
    losses, grad = fs.softmax_cross_entropy(logits.T, probs.T, axis=0, reduction="none",
                                            return_grad=True)
    assert_type(losses, Floats)
    assert_type(grad, Floats)

    # A flag known only at run time: either form.
    want_grad = bool(rng.integers(0, 2))
    either = fs.softmax_cross_entropy(logits, labels, return_grad=want_grad)
    assert isinstance(either, tuple) == want_grad

    # A misspelt reduction is caught before the code runs.
    rejected(ValueError, 'reduction="avg"',
             lambda: fs.softmax_cross_entropy(logits, labels,  # type: ignore[call-overload]
                                              reduction="avg"))


def reference_module() -> None:
    x = rng.standard_normal((3, 4))
    assert_type(ref.softmax(x), Floats)
    assert_type(ref.softmax_jacobian(ref.softmax(x)), Floats)
    loss, grad = ref.softmax_cross_entropy(x, [0, 1, 3], return_grad=True)
    assert np.allclose(grad, fs.softmax_cross_entropy(x, np.array([0, 1, 3]),
                                                      return_grad=True)[1])
    assert np.isclose(float(loss), float(fs.softmax_cross_entropy(x, np.array([0, 1, 3]))))


def gradient_checks() -> None:
    x = rng.standard_normal((2, 3))
    g = rng.standard_normal((2, 3))
    labels = np.array([0, 2])

    def loss(z: NDArray[np.float64]) -> float:
        return float(fs.softmax_cross_entropy(z, labels))

    def loss_grad(z: NDArray[np.float64]) -> NDArray[np.floating[Any]]:
        return fs.softmax_cross_entropy(z, labels, return_grad=True)[1]

    error: float = check_grad(loss, loss_grad, x)
    assert error < 1e-6
    error = check_vjp(fs.softmax, lambda z, g: fs.softmax_vjp(fs.softmax(z), g), x, g)
    assert error < 1e-6
    jac = numerical_jacobian(fs.log_softmax, x[0])
    assert_type(jac, NDArray[np.float64])
    assert jac.shape == (3, 3)


def threads_and_config() -> None:
    n: int = fs.get_num_threads()
    fs.set_num_threads(1)
    fs.set_num_threads(np.int64(n))  # any integer
    fs.set_num_threads(None)
    report = io.StringIO()
    fs.show_config(file=report)
    assert report.getvalue().startswith("fastsoftmax ")


def main() -> None:
    forward_keeps_the_float_dtype()
    out_is_returned_with_its_type()
    derivatives()
    cross_entropy()
    reference_module()
    gradient_checks()
    threads_and_config()


if __name__ == "__main__":
    main()
