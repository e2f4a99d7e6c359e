"""Test helpers shared by the test modules (conftest puts this folder on sys.path)."""

import numpy as np

import fastsoftmax as fs
from fastsoftmax import reference as ref

FLOAT_DTYPES = [np.float32, np.float64]


def oracle_dtype(dtype):
    """Higher precision to compute expected values in."""
    return np.float64 if np.dtype(dtype) == np.float32 else np.longdouble


def oracle(func, *arrays, **kwargs):
    """The reference function evaluated in higher precision (float64 for
    float32 data, long double for float64 data)."""
    dtype = np.result_type(*arrays)
    high = [np.asarray(a, dtype=oracle_dtype(dtype)) for a in arrays]
    return func(*high, **kwargs)


def assert_ulp_close(actual, expected, dtype, ulps, floor=None):
    """|actual - expected| <= ulps * ulp(expected) elementwise, where
    ulp(e) = eps * |e| floored at eps * `floor`, with NaN and infinities
    required to match exactly.

    The default floor is the dtype's smallest normal number, so subnormal
    results are held to `ulps` subnormal steps (their ulp is absolute).  A
    larger floor suits values whose error is absolute rather than relative
    (e.g. log-probabilities near 0, which inherit eps * |log S|)."""
    if floor is None:
        floor = np.finfo(dtype).tiny
    actual = np.asarray(actual, dtype=np.float64 if dtype == np.float32 else np.longdouble)
    expected = np.asarray(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape
    same_special = (np.isnan(actual) == np.isnan(expected)).all() and \
        (actual[np.isinf(expected)] == expected[np.isinf(expected)]).all()
    assert same_special, "NaN/inf pattern differs"
    finite = np.isfinite(expected)
    eps = np.finfo(dtype).eps
    scale = eps * np.maximum(np.abs(expected), floor)[finite]   # one ulp per element
    err = np.abs(actual[finite] - expected[finite])
    if err.size:
        safe = np.where(scale > 0, scale, 1.0)  # a zero scale (floor=0) allows no error
        in_ulp = np.where(scale > 0, err / safe, np.where(err > 0, np.inf, 0.0))
        worst = int(np.argmax(in_ulp))
        assert in_ulp[worst] <= ulps, (
            f"error {err[worst]:.3g} is {in_ulp[worst]:.2f} ulp > {ulps} ulp "
            f"(expected {expected[finite][worst]!r}, got {actual[finite][worst]!r})")


# --------------------------------------------------------------------------
# The forward functions: registry and error budget shared by the test files
# --------------------------------------------------------------------------

FORWARD = [(fs.softmax, ref.softmax), (fs.log_softmax, ref.log_softmax)]
FORWARD_IDS = ["softmax", "log_softmax"]
DTYPE_IDS = ["float32", "float64"]


# --------------------------------------------------------------------------
# Error budget
# --------------------------------------------------------------------------
# Units: eps * max(|exact|, floor), eps the dtype's machine epsilon.  The
# kernels compute, per row, m = max, y_j = exp(x_j - m) with the difference
# x_j - m taken exactly (TwoSum) and the polynomial exp within 1.2 ulp,
# T = sum(y_j) in double lanes (compensated for double data: its own
# rounding does not grow with n), then
#   softmax:      s_j = y_j * (1/T), the product rounded once to the dtype
#                 (1/T as an unevaluated hi + lo pair, fused multiply-add;
#                 the SSE2 build, without FMA, rounds 1/T and the product);
#   log_softmax:  l_j = (x_j - m) - log(T), in double, rounded once.
#
# softmax, float32: own exp 1.2 + T's error (T is a positively weighted sum
#   of the y_j, so its relative error is at most the largest of theirs, 1.2;
#   the double accumulation adds ~2**-29 ulp of float32, i.e. nothing) + the
#   final rounding 0.5 = 2.9 -> 3.  floor = tiny: a subnormal result is
#   rounded to the subnormal grid (spacing eps * tiny) by the exp and again
#   by the scaling, at most 1 eps * tiny in all.
# softmax, float64: the same terms, but T is accumulated in the dtype itself:
#   own exp 1.2 + T (1.2 from the terms + 1 for a compensated sum, Kahan's
#   2u) + 1/T rounded 0.5 (SSE2 build only) + final rounding 0.5 = 4.4 -> 4.5.
# log_softmax, float32 (floor = 1: near 0 the error is absolute, eps-sized,
#   ~ eps * |log T|'s error, not relative to a tiny |l_j|): log(T) inherits
#   T's relative error as an absolute one, <= 1.2 eps; x_j - m and the
#   subtraction are exact or negligible in double; final rounding 0.5 ->
#   1.7 -> 2.
# log_softmax, float64 (floor = 1): x_j - m rounded 0.5 (|x_j - m| <= |l_j|)
#   + log T's error 2.2 (T as above) + log rounded 0.5 (log T <= |l_j|) +
#   the subtraction rounded 0.5 = 3.7 -> 4.
BOUNDS = {
    ("softmax", np.float32): (3, np.finfo(np.float32).tiny),
    ("softmax", np.float64): (4.5, np.finfo(np.float64).tiny),
    ("log_softmax", np.float32): (2, 1.0),
    ("log_softmax", np.float64): (4, 1.0),
}


def check(actual, expected, func, dtype, factor=1):
    """assert_ulp_close with the budget above (times `factor`) for `func` on
    `dtype` data."""
    ulps, floor = BOUNDS[(func.__name__, np.dtype(dtype).type)]
    assert_ulp_close(actual, expected, np.dtype(dtype).type, factor * ulps, floor=floor)
