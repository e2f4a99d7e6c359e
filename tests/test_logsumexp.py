"""logsumexp (docs/api.rst, section logsumexp).

test_equivalence.py runs it against the reference in higher precision over
dtypes, shapes, axes, layouts and threads (with scale factors b >= 0 too);
here: SciPy's semantics (negative b, the sign, keepdims, broadcasting),
the special values, the accuracy near 0, one huge row split across
threads, rows that stay independent, out= and the errors.
"""

import re

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref

from _registry import LOGSUMEXP_ULPS, assert_ulp_close, oracle

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

special = pytest.importorskip("scipy.special")

DTYPES = [np.float32, np.float64]


# --------------------------------------------------------------------------
# SciPy's semantics
# --------------------------------------------------------------------------

# docs/api.rst, section logsumexp: "Semantics of scipy.special.logsumexp except for the default
# axis"; "b (scale factors, broadcastable to x; negative values allowed with return_sign=True)";
# "keepdims"
@pytest.mark.parametrize("b_shape", [None, (3, 4, 5), (5,), (4, 1), ()], ids=repr)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [-1, 0, (0, 2), (2, 1), None, ()], ids=repr)
def test_matches_scipy(axis, keepdims, b_shape, rng):
    x = 3 * rng.standard_normal((3, 4, 5))
    b = None if b_shape is None else rng.standard_normal(b_shape)
    result, sign = fs.logsumexp(x, axis, b=b, keepdims=keepdims, return_sign=True)
    expected, expected_sign = special.logsumexp(x, axis=axis, b=b, keepdims=keepdims,
                                                return_sign=True)
    assert np.shape(result) == np.shape(expected) == np.shape(sign)
    np.testing.assert_array_equal(sign, expected_sign)
    np.testing.assert_allclose(result, expected, rtol=1e-13, atol=1e-13)
    if b is not None:
        # without return_sign, a negative sum is NaN
        plain = fs.logsumexp(x, axis, b=b, keepdims=keepdims)
        np.testing.assert_array_equal(np.isnan(plain), np.asarray(sign) < 0)


def test_default_axis_is_the_last(rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(fs.logsumexp(x), fs.logsumexp(x, -1))
    np.testing.assert_allclose(fs.logsumexp(x), special.logsumexp(x, axis=-1), rtol=1e-14)


@pytest.mark.parametrize("x_dtype, b_dtype, result", [
    (np.float32, None, np.float32), (np.float64, None, np.float64),
    (np.float16, None, np.float16), (np.int64, None, np.float64),
    (np.float32, np.float32, np.float32), (np.float32, np.float64, np.float64),
    (np.float32, np.int64, np.float64), (np.float64, np.float32, np.float64)])
def test_dtypes(x_dtype, b_dtype, result):
    # docs/api.rst, section logsumexp: "dtypes as the forward functions"; b's dtype joins in as
    # the second input of a product does
    x = np.arange(6).reshape(2, 3).astype(x_dtype)
    b = None if b_dtype is None else np.ones(3, b_dtype)
    value, sign = fs.logsumexp(x, b=b, return_sign=True)
    assert value.dtype == sign.dtype == result


def test_scalars_and_0d(rng):
    # a 0-d result is a NumPy scalar, as SciPy's; a 0-d input is a row of one
    total = fs.logsumexp(rng.standard_normal(7))
    assert isinstance(total, np.float64)
    assert fs.logsumexp(np.float32(2.5)) == np.float32(2.5)
    assert isinstance(fs.logsumexp(np.float32(2.5)), np.float32)
    assert fs.logsumexp([1.0, 2.0], axis=None, keepdims=True).shape == (1,)


# --------------------------------------------------------------------------
# Special values
# --------------------------------------------------------------------------

# docs/api.rst, section logsumexp: "a row of only -inf (or with no included entry, or an empty
# axis) gives -inf; a +inf entry gives +inf; a NaN gives NaN"; "excluded entries contribute
# nothing" (b = 0).  The threads fixture lowers the thresholds: the rows go to the threads, and
# one at a time, tiled 30 times (90 > 64 elements), each row is split across them.
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(dtype, threads):
    inf, nan = np.inf, np.nan
    x = np.array([[-inf, -inf, -inf], [inf, 1, 2], [nan, 1, 2], [inf, nan, 0],
                  [inf, inf, 0], [1, 2, 3], [nan, inf, 5], [1, 1, 1]], dtype)
    b = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1],
                  [1, -1, 1], [0, 0, 0], [0, 0, 1], [1, -1, 0]], dtype)
    value, sign = fs.logsumexp(x, b=b, return_sign=True)
    # -inf / +inf / NaN / NaN with NaN, whatever b does elsewhere
    np.testing.assert_array_equal(value[:4], [-inf, inf, nan, nan])
    # +inf with weights of both signs there: inf - inf; nothing weighted: -inf;
    # NaN and inf left out by b = 0; a sum of 0
    np.testing.assert_array_equal(value[4:], [nan, -inf, 5, -inf])
    np.testing.assert_array_equal(sign[4:], [nan, 0, 1, 0])
    for reps in (1, 30):
        xt, bt = np.tile(x, reps), np.tile(b, reps)
        for weights in (None, bt):
            value, sign = fs.logsumexp(xt, b=weights, return_sign=True)
            expected, expected_sign = ref.logsumexp(xt, b=weights, return_sign=True)
            np.testing.assert_array_equal(value, expected)
            np.testing.assert_array_equal(sign, expected_sign)
            for row in range(len(xt)):  # one row: split
                one = None if weights is None else weights[row]
                np.testing.assert_array_equal(
                    fs.logsumexp(xt[row], b=one, return_sign=True),
                    (expected[row], expected_sign[row]))


# IEEE arithmetic on the infinite and NaN factors, as SciPy's: b * exp(x) with b = inf
# and exp(x) = 0 is NaN, inf - inf is NaN
@pytest.mark.parametrize("x, b", [
    ([np.inf, 5.0], [1, np.nan]), ([1.0, 5.0], [1, np.nan]), ([np.inf, 5.0], [1, -np.inf]),
    ([np.inf, np.inf], [2.0, -1.0]), ([np.inf, np.inf], [1.0, 1.0]), ([np.inf, 1.0], [-1, 1]),
    ([1.0, 2.0], [np.inf, 1.0]), ([-np.inf, 2.0], [np.inf, 1.0]), ([np.nan, 2.0], [0, 1.0]),
    ([-np.inf, -np.inf], [1.0, 1.0])], ids=repr)
def test_infinite_and_nan_factors_as_scipy(x, b):
    x, b = np.array(x), np.array(b, float)
    result, sign = fs.logsumexp(x, b=b, return_sign=True)
    expected, expected_sign = special.logsumexp(x, b=b, return_sign=True)
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(sign, expected_sign)
    np.testing.assert_array_equal([result, sign], ref.logsumexp(x, b=b, return_sign=True))


def test_empty_axis_and_empty_batch():
    value, sign = fs.logsumexp(np.empty((3, 0)), return_sign=True)
    np.testing.assert_array_equal(value, [-np.inf] * 3)
    np.testing.assert_array_equal(sign, [0] * 3)
    assert fs.logsumexp(np.empty((0, 4))).shape == (0,)
    assert fs.logsumexp(np.empty((0, 4)), keepdims=True).shape == (0, 1)


# --------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------

# docs/api.rst, section logsumexp: "within 2 ulp of the larger of |result| and |max(x)|"
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["tail", "small weights", "cancelling max"])
def test_accuracy_near_zero_and_small_sums(case, dtype):
    # tail: log(1 + e^-50 + ...) ~ 2e-22 when max(x) = 0: held to ulps of
    # the result itself, which log(S) (off by eps) would miss; small
    # weights: S = 3 b << 1, where log1p(S - 1) would lose S's digits;
    # cancelling max: max(x) = -3 and log S ~ 3.
    x = {"tail": np.array([0.0, -50.0, -60.0, -70.0]),
         "small weights": np.full(3, 2.7), "cancelling max": np.array([-3.0, -3.0])}[case]
    b = {"tail": None, "small weights": np.full(3, 7.85e-4),
         "cancelling max": np.full(2, np.exp(3.0) / 2)}[case]
    x = x.astype(dtype)
    b = None if b is None else b.astype(dtype)
    result = fs.logsumexp(x, b=b)
    args = (x,) if b is None else (x, b)
    expected = oracle(lambda x, b=None: ref.logsumexp(x, b=b), *args)
    assert_ulp_close(result, expected, dtype, LOGSUMEXP_ULPS, floor=abs(float(x.max())))


# docs/api.rst, section Threads: "a single huge row is split across them too"
@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("row", ["random", "masked chunk", "+inf"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_row_split_across_threads(dtype, row, weights, rng):
    # 200_003 >= SPLIT_ROW_MIN and 1 row < 2 threads: split with the defaults
    n = 200_003
    x = (3 * rng.standard_normal(n)).astype(dtype)
    if row == "masked chunk":
        x[:150_000] = -np.inf   # a whole chunk of -inf on 2 threads
    elif row == "+inf":
        x[190_000] = np.inf     # in the last chunk
    b = rng.random(n).astype(dtype) if weights else None
    args = (x,) if b is None else (x, b)
    expected = oracle(lambda x, b=None: ref.logsumexp(x, b=b), *args)
    try:
        for threads in (1, 2, 3):
            fs.set_num_threads(threads)
            result = fs.logsumexp(x, b=b)
            assert_ulp_close(result, expected, dtype, LOGSUMEXP_ULPS,
                             floor=abs(float(x.max())))
    finally:
        fs.set_num_threads(None)


# --------------------------------------------------------------------------
# Rows are independent; out=
# --------------------------------------------------------------------------

def test_a_row_does_not_depend_on_the_others(rng):
    # docs/api.rst, section Threads: "Results are identical whatever the
    # thread count when rows are split among threads"
    x = 3 * rng.standard_normal((300, 50))
    b = rng.random((300, 50))
    expected = fs.logsumexp(x, b=b)
    try:
        fs.set_num_threads(2)
        for rows in (slice(None), slice(7, 8), slice(None, None, -3)):
            np.testing.assert_array_equal(fs.logsumexp(x[rows], b=b[rows]), expected[rows])
    finally:
        fs.set_num_threads(None)


def test_out(rng):
    x = rng.standard_normal((6, 7))
    out = np.empty(6)
    assert fs.logsumexp(x, out=out) is out
    np.testing.assert_array_equal(out, fs.logsumexp(x))
    out = np.empty((6, 1), np.float32)
    result, sign = fs.logsumexp(x.astype(np.float32), keepdims=True, out=out, return_sign=True)
    assert result is out and sign.shape == (6, 1)
    # out overlapping the input: the result of a separate out
    buffer = rng.standard_normal(49)
    x, out = buffer.reshape(7, 7), buffer[3:10]
    expected = fs.logsumexp(x)
    fs.logsumexp(x, out=out)
    np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

# docs/api.rst, section logsumexp: b "broadcastable to x"; section Errors
@pytest.mark.parametrize("b_shape", [(4,), (2, 5), (1, 3, 5)], ids=repr)
def test_b_that_does_not_broadcast(b_shape):
    out = np.full(3, -7.0)
    message = re.escape(f"b must broadcast to the shape of x, got b.shape={b_shape!r} and "
                        f"x.shape=(3, 5)")
    with pytest.raises(ValueError, match=message):
        fs.logsumexp(np.zeros((3, 5)), b=np.ones(b_shape), out=out)
    np.testing.assert_array_equal(out, -7.0)


def test_bad_arguments():
    out = np.full(3, -7.0)
    with pytest.raises(TypeError, match="complex"):
        fs.logsumexp(np.zeros((3, 5)), b=np.ones(5, complex), out=out)
    with pytest.raises(AxisError):
        fs.logsumexp(np.zeros((3, 5)), axis=(1, -1), out=out)
    with pytest.raises(ValueError, match="out has shape"):
        fs.logsumexp(np.zeros((3, 5)), out=np.empty((3, 5)))
    np.testing.assert_array_equal(out, -7.0)
