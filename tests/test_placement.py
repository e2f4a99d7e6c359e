"""Results do not depend on where the output lies relative to the inputs.

Where a store into the output would stall the loads of an input (4K
aliasing: the output a little after an input modulo a page), the kernels
keep their terms in a scratch row, or store none, or copy an input, or
walk a row backward (docs/performance.rst, "Where the arrays lie").  None
of it may change a bit of the result: every function runs here with its
output -- and for the products their second input -- at offsets inside
and outside that window, on every SIMD path, on 1 and 2 threads, and must
agree bit for bit with the output placed at the input's own page offset.
"""

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _backend
from fastsoftmax._placement import placed

from _registry import DTYPE_IDS, FLOAT_DTYPES, FUNCTIONS, quiet

# Bytes from the first input, modulo a page: inside the window where
# stores would stall (64 to 448), outside it, and just before the input.
OFFSETS = (0, 64, 256, 448, 2048, 4032)
ROWS_AND_LENGTHS = [(3, 1), (3, 10), (9, 37), (3, 64), (17, 130), (2, 1000), (1, 3000),
                    (2, 5000)]


def logits_with_specials(rng, rows, n, dtype):
    """Spread-3 logits, and where there is room, rows that take the kernels'
    special paths: a -inf mask, one dominant entry (log1p), terms on the
    subnormal grid (the scaled tail sum), a NaN."""
    x = 3 * rng.standard_normal((rows, n))
    if n > 1:
        x[rng.random((rows, n)) < 0.1] = -np.inf
        x[:, 0] = 0.0
    if rows >= 3 and n > 1:
        x[1] = -rng.uniform(10, 40, n)
        x[1, n // 2] = 0.5
        lo, hi = (87, 104) if dtype == np.float32 else (708, 745)
        x[2] = -rng.uniform(lo, hi, n)
        x[2, -1] = 0.0
    if rows >= 9:
        x[8, 3] = np.nan
    return x.astype(dtype)


def loss_kernel_call(x, target, grad):
    """The loss has no out=: its kernel writes a gradient placed by the test.
    `target` holds class indices or probabilities."""
    index, probs_ = (target, None) if target.dtype == np.int64 else (None, target)
    loss = np.empty(len(x))
    total, _ = _backend.kernels.cross_entropy_rows(x, probs_, index, loss, grad, 0.5,
                                                   fs.get_num_threads())
    return total, loss, grad


def run_placed(name, inputs, offset, other_offset):
    """`name` on `inputs` (2-d, rows along axis -1) with its output at
    `offset` and its second input, if any, at `other_offset` from the first."""
    first = inputs[0]
    if name == "softmax_cross_entropy":
        grad = placed(first.shape, first.dtype, first, offset)
        return loss_kernel_call(first, inputs[1], grad)
    args = [first]
    for a in inputs[1:]:
        args.append(placed(a.shape, a.dtype, first, other_offset))
        args[-1][...] = a
    out = placed(FUNCTIONS[name].result_shape(first.shape), first.dtype, first, offset)
    return (FUNCTIONS[name].fast(*args, out=out),)


def inputs_for(name, rng, rows, n, dtype, target):
    """The registry's inputs made from logits with special rows; for the
    loss, class indices or (target="probabilities") probabilities."""
    x = logits_with_specials(rng, rows, n, dtype)
    if name == "softmax_cross_entropy" and target == "indices":
        return [x, rng.integers(0, n, rows)]
    other = rng.standard_normal((rows, n)).astype(dtype)
    with quiet():
        return [np.asarray(a, dtype) for a in FUNCTIONS[name].from_logits(x, other, -1)]


def assert_same_bits(actual, expected):
    """Bit for bit, except that a NaN matches any NaN: IEEE 754 leaves the
    sign and payload of NaN * NaN to the hardware, which takes one operand's,
    and a vectorised loop may order the operands unlike a scalar one."""
    for a, e in zip(actual, expected):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype and a.shape == e.shape
        nan = np.isnan(a)
        assert np.array_equal(nan, np.isnan(e)), "NaN in different places"
        a, e = np.where(nan, 0, a), np.where(nan, 0, e)
        assert a.tobytes() == e.tobytes(), \
            f"{np.count_nonzero(a.view(np.uint8) != e.view(np.uint8))} bytes differ"


# each function once, the loss once per kind of target
CASES = [(name, "indices") for name in FUNCTIONS] + [("softmax_cross_entropy", "probabilities")]


@pytest.mark.parametrize("rows, n", ROWS_AND_LENGTHS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name, target", CASES,
                         ids=[f"{name}-{target}" if name == "softmax_cross_entropy" else name
                              for name, target in CASES])
def test_results_do_not_depend_on_placement(name, target, dtype, rows, n, simd_path, threads,
                                            rng):
    if name == "softmax_jacobian" and n > 130:
        pytest.skip("the Jacobian's output is n times its input")
    inputs = inputs_for(name, rng, rows, n, dtype, target)
    with quiet():
        expected = run_placed(name, inputs, 0, 0)
        for offset in OFFSETS[1:]:
            assert_same_bits(run_placed(name, inputs, offset, 0), expected)
            if len(inputs) > 1 and name != "softmax_cross_entropy":
                # the second input in the window too, and on either side of y
                assert_same_bits(run_placed(name, inputs, offset, offset), expected)
                assert_same_bits(run_placed(name, inputs, offset, 4096 - offset), expected)


# The products' backward walk (walk_backward in _vmath.hpp): row lengths
# at the edges of its range (128 bytes to 1 KiB) and of a vector, in
# place, and rows spaced unequally, so that each row decides for itself.
WALK_LENGTHS = (15, 16, 31, 32, 33, 128, 129, 256, 257)


def product_kernel_call(name, a, b, out):
    """The products' kernel on 2-d rows as given (strides included)."""
    _backend.kernels.product_rows(a, b, out, fs.get_num_threads(), name == "log_softmax_vjp")
    return (out,)


@pytest.mark.parametrize("n", WALK_LENGTHS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ["softmax_vjp", "log_softmax_vjp"])
def test_products_walk_backward_with_the_same_bits(name, dtype, n, simd_path, threads, rng):
    a, b = inputs_for(name, rng, 5, n, dtype, "indices")
    with quiet():
        expected = run_placed(name, [a, b], 0, 0)
        for offset in (64, 128, 448):
            assert_same_bits(run_placed(name, [a, b], offset, offset), expected)
            # in place: y is the second input, placed after the first ...
            second = placed(b.shape, dtype, a, offset)
            second[...] = b
            assert_same_bits((FUNCTIONS[name].fast(a, second, out=second),), expected)
            # ... or the first, placed after the second
            first = placed(a.shape, dtype, b, offset)
            first[...] = a
            assert_same_bits((FUNCTIONS[name].fast(first, b, out=first),), expected)
            # rows of the first input 64 bytes further apart than y's
            wide = placed((a.shape[0], n + 64 // a.itemsize), dtype, a, 0)[:, :n]
            wide[...] = a
            out = placed(a.shape, dtype, wide, offset)
            assert_same_bits(product_kernel_call(name, wide, b, out), expected)
