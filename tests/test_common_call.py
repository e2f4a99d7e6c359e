"""The common call, checked in C (docs/performance.rst, "Per-call overhead").

C-contiguous float32/float64 ndarrays reduced along their last axis go to
the kernels as they are, through the kernel module's is_plain,
softmax_plain, product_plain and logsumexp_plain.  Every other call must be turned down
there, and so take the general way, which validates, copies and reports
errors: a call taken for plain that is not would read or write the wrong
memory.  This pins the rule down case by case, on every SIMD path.
"""

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _backend
from fastsoftmax import reference as ref


def _x(dtype=np.float32, shape=(3, 5)):
    return np.linspace(-2, 2, int(np.prod(shape))).reshape(shape).astype(dtype)


def _misaligned(shape=(3, 5), dtype=np.float32):
    itemsize = np.dtype(dtype).itemsize
    buffer = np.zeros(int(np.prod(shape)) * itemsize + 1, np.uint8)
    a = np.ndarray(shape, dtype, buffer=buffer, offset=1)
    a[...] = _x(dtype, shape)
    return a


def _read_only(a):
    a.flags.writeable = False
    return a


class _Subclass(np.ndarray):
    pass


X = _x()
X_BUFFER = np.zeros(20, np.float32)

# (x, axis, out, b) -> is the call plain?
CASES = {
    "2-D, axis -1": ((X, -1, None, None), True),
    "2-D, axis 1": ((X, 1, None, None), True),
    "float64": ((_x(np.float64), -1, None, None), True),
    "1-D": ((_x(shape=(7,)), 0, None, None), True),
    "3-D": ((_x(shape=(2, 3, 4)), 2, None, None), True),
    "one element": ((_x(shape=(1, 1)), -1, None, None), True),
    "out": ((X, -1, np.empty_like(X), None), True),
    "out is x": ((X.copy(), -1, "x", None), True),
    "b": ((X, -1, None, X + 1), True),
    "out is b": ((X, -1, "b", X + 1), True),
    # the axis
    "axis 0": ((X, 0, None, None), False),
    "axis -2": ((X, -2, None, None), False),
    "axis None": ((X, None, None, None), False),
    "axis (1,)": ((X, (1,), None, None), False),
    "axis True": ((_x(shape=(7,)), True, None, None), False),
    "axis np.int64": ((X, np.int64(-1), None, None), False),
    "axis 2**70 - 1": ((X, 2**70 - 1, None, None), False),
    "axis -2**70": ((X, -2**70, None, None), False),
    # x
    "list": ((X.tolist(), -1, None, None), False),
    "subclass": ((X.view(_Subclass), -1, None, None), False),
    "byte-swapped": ((X.astype(X.dtype.newbyteorder()), -1, None, None), False),
    "misaligned": ((_misaligned(), -1, None, None), False),
    "strided": ((_x(shape=(3, 10))[:, ::2], -1, None, None), False),
    "Fortran order": ((np.asfortranarray(X), -1, None, None), False),
    "float16": ((X.astype(np.float16), -1, None, None), False),
    "int": ((X.astype(np.int64), -1, None, None), False),
    "0-d": ((np.ones((), np.float32), 0, None, None), False),
    "empty rows": ((_x(shape=(0, 5)), -1, None, None), False),
    "empty row": ((_x(shape=(3, 0)), -1, None, None), False),
    # out
    "out float64": ((X, -1, np.empty(X.shape), None), False),
    "out transposed shape": ((X, -1, np.empty((5, 3), np.float32), None), False),
    "out read-only": ((X, -1, _read_only(np.empty_like(X)), None), False),
    "out Fortran order": ((X, -1, np.empty(X.shape, np.float32, order="F"), None), False),
    "out strided": ((X, -1, np.empty((3, 10), np.float32)[:, ::2], None), False),
    "out misaligned": ((X, -1, _misaligned(), None), False),
    "out subclass": ((X, -1, np.empty_like(X).view(_Subclass), None), False),
    "out overlaps x": ((X_BUFFER[:15].reshape(3, 5), -1, X_BUFFER[5:].reshape(3, 5), None),
                       False),
    "out overlaps b": ((X, -1, X_BUFFER[5:].reshape(3, 5), X_BUFFER[:15].reshape(3, 5)),
                       False),
    # b
    "b float64": ((X, -1, None, X.astype(np.float64)), False),
    "b other shape": ((X, -1, None, X.reshape(5, 3)), False),
    "b strided": ((X, -1, None, _x(shape=(3, 10))[:, ::2]), False),
    "b misaligned": ((X, -1, None, _misaligned()), False),
}


def _arguments(case):
    x, axis, out, b = case
    if isinstance(out, str):
        out = {"x": x, "b": b}[out]
    return x, axis, out, b


@pytest.mark.parametrize("case, plain", CASES.values(), ids=CASES.keys())
def test_which_calls_are_plain(case, plain, simd_path):
    x, axis, out, b = _arguments(case)
    assert _backend.kernels.is_plain(x, axis, out, b) is plain
    if b is None:
        before = None if out is None else out.copy()
        result = _backend.kernels.softmax_plain(x, axis, out, False, 1)
    else:
        before = None if out is None or out is b else out.copy()
        result = _backend.kernels.product_plain(x, b, axis, out, 1, False)
    if b is None and out is None:
        reduced = _backend.kernels.logsumexp_plain(x, axis, 1)
        assert (reduced is not None) is plain
    if not plain:
        assert result is None
        if before is not None:  # nothing written
            np.testing.assert_array_equal(out, before)
    else:
        assert result is not None and (out is None or result is out)


# The general way gives other layouts, dtypes and axes their results
# (tests/test_equivalence.py) and bad input its error (tests/test_errors.py).
# An output that overlaps an input only in part is the case where taking the
# call for plain would silently give a wrong answer.
@pytest.mark.parametrize("shift", [1, 4, 5, 14])
def test_partly_overlapping_out(shift, simd_path):
    buffer = np.linspace(-3, 3, 15 + shift).astype(np.float32)
    x, out = buffer[:15].reshape(3, 5), buffer[shift:].reshape(3, 5)
    expected = ref.softmax(x.astype(np.float64))
    assert fs.softmax(x, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    buffer = np.linspace(-3, 3, 15 + shift).astype(np.float32)
    s, out, v = buffer[:15].reshape(3, 5), buffer[shift:].reshape(3, 5), X + 1
    expected = ref.softmax_jvp(s.astype(np.float64), v.astype(np.float64))
    assert fs.softmax_jvp(s, v, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_plain_result_is_the_kernels(rng):
    # the plain entry runs the same kernel as the general way
    x = rng.standard_normal((37, 11)).astype(np.float32)
    for take_log in (False, True):
        expected = np.empty_like(x)
        _backend.kernels.softmax_rows(x, expected, 1, take_log)
        result = _backend.kernels.softmax_plain(x, -1, None, take_log, 1)
        assert result.dtype == x.dtype and result.flags.c_contiguous
        np.testing.assert_array_equal(result, expected)
