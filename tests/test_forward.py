"""softmax and log_softmax (docs/api.rst, section Forward).

test_equivalence.py runs them against the plain NumPy reference over dtypes
x shapes x axes x memory layouts x thread counts and on every SIMD path;
the tests here pin down the invariants and, one by one, the contract
sentences of docs/api.rst.
"""

import math

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _backend
from fastsoftmax import reference as ref
from fastsoftmax._checks import ulp_errors

from _helpers import laid_out
from _registry import (BOUNDS, DTYPE_IDS, FLOAT_DTYPES, FORWARD, FORWARD_IDS, check, oracle,
                       oracle_dtype, representable)

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError


# --------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------

@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def num_threads_default_thresholds(request):
    """1 or 2 threads with the library's own serial/split thresholds."""
    fs.set_num_threads(request.param)
    yield request.param
    fs.set_num_threads(None)


# docs/api.rst, section Accuracy: "one row of 10⁶ float32 values still sums to 1 within 1e-6"
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_one_huge_row(func, reference, dtype, num_threads_default_thresholds, rng):
    # with 2 threads one row of 10**6 (>= SPLIT_ROW_MIN, fewer rows than
    # threads) is split across the threads; with 1 it is not
    x = (3 * rng.standard_normal(1_000_003)).astype(dtype)
    result = func(x)
    check(result, oracle(reference, x), func, dtype)
    if func is fs.softmax:
        assert abs(result.sum(dtype=np.float64) - 1) <= 1e-6
        # the tighter bound the per-entry budget implies, whatever n
        ulps, _ = BOUNDS[("softmax", dtype)]
        assert abs(math.fsum(result.tolist()) - 1) <= (ulps + 0.5) * np.finfo(dtype).eps


# docs/api.rst, section Accuracy:
# "float64 likewise against long double; sums are accumulated so that
# the error does not grow linearly with n"
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_accuracy_when_one_logit_dominates(func, reference, dtype, simd_path):
    # One logit at 0 and many whose exp is just above half an ulp of 1.0: a
    # sum in the working precision that is not compensated rounds up by
    # almost half an ulp at each of these additions (the float64 case; float32
    # terms are summed in double, where this costs nothing).  The per-entry
    # budget (_registry.BOUNDS) holds for any input, so it must hold here too.
    eps = np.finfo(dtype).eps
    x = np.full(1000, np.log(0.6 * eps), dtype=dtype)
    x[0] = 0
    check(func(x), oracle(reference, x), func, dtype)


# docs/api.rst, section Accuracy: "float32 results within a few ulp of the exact value (computed in
# float64), float64 likewise against long double"
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_accuracy_wide_logits(func, reference, dtype, simd_path):
    # ordinary logits with a wide spread, N(0, 10**2): a few terms dominate
    # each row's sum
    rng = np.random.default_rng(7)
    x = (10 * rng.standard_normal((64, 1000))).astype(dtype)
    check(func(x), oracle(reference, x), func, dtype)


# docs/api.rst, section Accuracy: "softmax and log_softmax stay within 2 ulp";
# docs/accuracy.rst explains the float64 budget and the SSE2 exception.
@pytest.mark.parametrize("regime", ["wide", "normal", "short"])
def test_float64_softmax_within_2_ulp(regime, simd_path):
    # Rows whose S is close to 1 ("wide": one term near 1, the others far
    # smaller) are where an S rounded to double, or a row sum that loses
    # half an ulp of the max's term 1, shows most: each cost up to an ulp
    # of the results whose mantissa is near 2 (2.6 ulp here before the
    # kernels kept S's rounding error).  Measured in true ulp (ulp_errors),
    # not the relative units of `check`.
    if not _backend.kernels.has_fma():
        pytest.skip("without FMA the scaling rounds twice: up to 2.9 ulp (SSE2 build)")
    if np.finfo(np.longdouble).nmant < 63:
        pytest.skip("long double is no wider than double here: no oracle")
    rng = np.random.default_rng(0)
    x = {"wide": lambda: rng.uniform(-700, 700, (200, 1000)),
         "normal": lambda: rng.standard_normal((200, 1000)),
         "short": lambda: 3 * rng.standard_normal((20000, 10))}[regime]()
    errors = ulp_errors(fs.softmax(x), oracle(ref.softmax, x), np.dtype(np.float64))
    assert errors.max() <= 2


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1000, 4097, 70_000])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_rows_sum_to_one(dtype, n, threads, rng):
    # Every s_j is within B ulp (relative) of the exact p_j, so the row sum is
    # within B eps of sum(p_j) = 1 whatever n; fsum adds no error of its own
    # beyond its final rounding (0.5 eps of float64).
    x = (3 * rng.standard_normal((5, n))).astype(dtype)
    s = fs.softmax(x)
    ulps, _ = BOUNDS[("softmax", dtype)]
    tol = (ulps + 0.5) * np.finfo(dtype).eps
    for row in s:
        assert abs(math.fsum(row.astype(np.float64).tolist()) - 1) <= tol


# Most short rows go through tiles of rows, vectorised across the rows
# (_vmath.hpp, softmax_short_rows; the others, by length, the row kernel):
# a row's result must not depend on which tile it lands in, where in the
# tile, or how many rows share it (rows fewer than a vector's lanes, alone
# or at the end of a call, are computed one by one with the tile's
# arithmetic).
@pytest.mark.parametrize("n", [1, 3, 10, 16, 23, 24, 31, 37, 39])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_short_rows_whatever_their_tile(func, reference, dtype, n, threads, rng):
    x = (3 * rng.standard_normal((700, n))).astype(dtype)
    x[5, : n // 2] = -np.inf
    whole = func(x)
    check(whole, oracle(reference, x), reference, dtype)
    for i in (0, 5, 127, 128, 300, 699):
        np.testing.assert_array_equal(func(x[i]), whole[i], strict=True)
        np.testing.assert_array_equal(func(x[i:700:3])[0], whole[i], strict=True)
    for rows in (3, 131):   # a last tile of 3 rows when 128 fit in one
        np.testing.assert_array_equal(func(x[:rows]), whole[:rows], strict=True)


@pytest.mark.parametrize("n", [10, 37])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_short_rows_alone_are_the_tiles_on_many_rows(func, reference, dtype, n, simd_path,
                                                      rng):
    # Every row of many computed alone (calls of 7 rows, fewer than an
    # AVX-512 vector holds; elsewhere a tile and rows alone) and in tiles:
    # a difference that shows in a few rows in 10 000 (a log whose
    # multiply-adds the compiler fused in one copy of the code and not in
    # the other differed in 0.03 %) needs this many.
    x = (3 * rng.standard_normal((14000, n))).astype(dtype)
    whole = func(x)
    for start in range(0, len(x), 7):
        np.testing.assert_array_equal(func(x[start:start + 7]), whole[start:start + 7],
                                      strict=True)


@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_short_row_alone_sums_in_the_tiles_order(func, reference, simd_path):
    # a row whose tail sum rounds differently if summed in another order:
    # computed alone (fewer rows than a vector holds) it must still get the
    # bits it gets as a column of the tile
    row = np.array([0.0, -37.406097412109375, -74.03369903564453, -87.83786010742188,
                    -38.573978424072266], np.float32)
    np.testing.assert_array_equal(func(row), func(np.tile(row, (40, 1)))[0], strict=True)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_log_softmax_of_equal_rows_is_minus_log_n(dtype, simd_path):
    # n equal values: every term is exactly 1 and S = n, so each entry is
    # -log(n), which a log within 0.57 ulp rounds correctly to float32 (and,
    # as it happens, for these n to float64 too): the kernels take their
    # logs from log1p_nonneg (_vmath.hpp), the SSE2 build from libm; in a
    # tile, alone, in the row kernel (n >= 40), and down columns
    if dtype == np.float64 and np.finfo(np.longdouble).nmant < 63:
        pytest.skip("long double is no wider than double here: no oracle")
    for n in range(1, 70):
        x = np.full((100, n), 1.5, dtype)
        expected = dtype(-np.log(oracle_dtype(dtype)(n)))
        for result in (fs.log_softmax(x), fs.log_softmax(x[:1]), fs.log_softmax(x.T, axis=0)):
            assert (result == expected).all(), f"n = {n}"


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
@pytest.mark.parametrize("c", [1e3, -1e3, 2.0 ** 16, -(2.0 ** 16)])
def test_shift_invariance(func, reference, dtype, c, threads, rng):
    # x on the grid k/64 with |k| < 2**10 (|x| < 16), c an integer with
    # |c| <= 2**16: |x + c| < 2**17 on the grid 2**-6 needs at most 23 bits,
    # so x + c is exact in float32 and float64, and softmax(x + c) has exactly
    # the values of softmax(x).
    x = (rng.integers(-1023, 1024, size=(4, 300)) / 64).astype(dtype)
    shifted = x + dtype(c)
    assert np.array_equal(shifted - dtype(c), x)  # the shift was exact
    expected = oracle(reference, x)
    check(func(shifted), expected, func, dtype)
    check(func(x), expected, func, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_shift_invariance_of_rounded_shift(dtype, threads, rng):
    # an arbitrary shift rounds x + c; the result is then that of the rounded
    # array, and still the softmax of x up to the rounding of x + c
    x = rng.standard_normal((4, 100)).astype(dtype)
    shifted = x + dtype(1e3)
    check(fs.softmax(shifted), oracle(ref.softmax, shifted), fs.softmax, dtype)
    # each x_j + c is off by h <= 0.5 ulp(1e3); log p_j = x_j - logsumexp(x)
    # then moves by <= 2h (the logsumexp by a weighted mean of the moves), p_j
    # by a factor <= exp(2h); plus each result's own budget
    h = 0.5 * float(np.spacing(dtype(1e3)))
    rtol = 2 * h + 2 * BOUNDS[("softmax", dtype)][0] * float(np.finfo(dtype).eps)
    np.testing.assert_allclose(fs.softmax(shifted), fs.softmax(x), rtol=rtol, atol=0)


# --------------------------------------------------------------------------
# Special values (docs/api.rst, section Special values)
# --------------------------------------------------------------------------

# docs/api.rst, section Special values: "Numerics: stable for any finite input"
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_large_gap_is_exact(dtype, threads):
    # exp(-1000) underflows to 0 in both dtypes and 1 + 0 = 1 exactly
    np.testing.assert_array_equal(fs.softmax(np.array([1000, 0], dtype)), [1, 0])
    np.testing.assert_array_equal(fs.softmax(np.array([0, 1000], dtype)), [0, 1])
    np.testing.assert_array_equal(fs.log_softmax(np.array([1000, 0], dtype)), [0, -1000])


# docs/api.rst, section Special values:
# "`-inf` entries get probability exactly 0 (log-prob `-inf`): this is
# how masks are written"
@pytest.mark.parametrize("n", [2, 5, 33, 1000])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_minus_inf_mask(dtype, n, threads, rng):
    x = rng.standard_normal((8, n)).astype(dtype)
    mask = rng.random((8, n)) < 0.5
    mask[:, 0] = False  # every row keeps a finite entry
    x[mask] = -np.inf
    s, logp = fs.softmax(x), fs.log_softmax(x)
    assert (s[mask] == 0).all() and not np.signbit(s[mask]).any()
    assert (logp[mask] == -np.inf).all()
    # the rest is the softmax of the unmasked entries
    check(s, oracle(ref.softmax, x), fs.softmax, dtype)
    check(logp, oracle(ref.log_softmax, x), fs.log_softmax, dtype)
    for i in range(8):
        check(s[i][~mask[i]], oracle(ref.softmax, x[i][~mask[i]]), fs.softmax, dtype)


# docs/api.rst, section Special values:
# "A row whose entries are all `-inf`, or that holds a NaN or `+inf`,
# yields NaN in every entry of that row only; other rows are unaffected."
@pytest.mark.parametrize("n", [3, 40, 1000])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_nan_rows(func, reference, dtype, n, threads, rng):
    x = rng.standard_normal((10, n)).astype(dtype)  # more rows than threads
    x[1] = -np.inf
    x[3, n // 2] = np.nan
    x[5, -1] = np.inf
    x[6, 0], x[6, -1] = np.inf, -np.inf
    x[7, :] = np.inf
    x[8, 0] = np.nan
    x[8, 1:] = -np.inf
    bad = [1, 3, 5, 6, 7, 8]
    good = [i for i in range(10) if i not in bad]
    result = func(x)
    assert np.isnan(result[bad]).all()
    assert not np.isnan(result[good]).any()
    # the good rows are exactly what they are on their own
    np.testing.assert_array_equal(result[good], func(x[good]))
    check(result[good], oracle(reference, x[good]), func, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("bad", ["nan", "+inf", "all -inf", "nan among -inf"])
def test_nan_row_split_across_threads(func, dtype, where, bad, threads, rng):
    # one long row: with 2 threads (the fixture lowers the split threshold)
    # it is split, and the bad value may sit in either thread's chunk
    n = 1000
    x = rng.standard_normal(n).astype(dtype)
    pos = {"first": 0, "middle": n // 2 + 1, "last": n - 1}[where]
    if bad == "nan":
        x[pos] = np.nan
    elif bad == "+inf":
        x[pos] = np.inf
    elif bad == "all -inf":
        x[:] = -np.inf
    else:  # a chunk that holds only -inf and one NaN
        x[: n // 2 + 64] = -np.inf
        x[min(pos, n // 2)] = np.nan
    assert np.isnan(func(x)).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
@pytest.mark.parametrize("masked", ["first half", "second half", "all but one"])
def test_masked_chunk_of_split_row(func, reference, dtype, masked, threads, rng):
    # a whole thread chunk of -inf (its partial max is -inf) must add 0, not NaN
    n = 1000
    x = rng.standard_normal(n).astype(dtype)
    if masked == "first half":
        x[: n // 2 + 100] = -np.inf
    elif masked == "second half":
        x[n // 2 - 100:] = -np.inf
    else:
        x[:] = -np.inf
        x[n - 3] = 2.5
    result = func(x)
    check(result, oracle(reference, x), func, dtype)
    if func is fs.softmax:
        assert (result[np.isneginf(x)] == 0).all()


HUGE = {
    # rows whose exact softmax and log_softmax are representable
    np.float32: [[1e30, -1e30, 0.0, 1e30], [3e38, 2e38, 1e38, 3e38],
                 [-3e38, -2e38, -3e38, -1e38], [3.4028235e38, 1e38, 0.0, 1e30]],
    np.float64: [[1e300, -1e300, 0.0, 1e300], [1.7e308, 1e308, 0.0, 1.7e308],
                 [-1.7e308, -1e308, -1.7e308, -0.5e308],
                 [1.7976931348623157e308, 1e308, 0.0, 1e300]],
}


# docs/api.rst, section Special values:
# "Numerics: stable for any finite input (|x| up to the dtype's max)."
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_huge_logits(func, reference, dtype, threads):
    x = np.array(HUGE[dtype], dtype)
    result = func(x)
    assert np.isfinite(result).all()
    check(result, oracle(reference, x), func, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_extreme_logits(dtype, threads):
    # +-max in one row: x - max = -2 max overflows; softmax is still [1, 0]
    # and log_softmax [0, -2 max], which rounds to -inf in the dtype
    big = np.finfo(dtype).max
    x = np.array([[big, -big], [-big, big], [-big, -big]], dtype)
    s = fs.softmax(x)
    assert np.isfinite(s).all()
    np.testing.assert_array_equal(s, [[1, 0], [0, 1], [0.5, 0.5]])
    logp = fs.log_softmax(x)
    expected = representable(oracle(ref.log_softmax, x), dtype)
    check(logp, expected, fs.log_softmax, dtype)
    assert logp[0, 0] == 0 and logp[0, 1] == -np.inf


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------

# docs/api.rst, section out=: "With `out=` the function returns `out` itself."
@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [np.float16], ids=DTYPE_IDS + ["float16"])
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_out_is_returned(func, dtype, rng):
    x = rng.standard_normal((3, 5)).astype(dtype)
    out = np.full_like(x, 7)
    assert func(x, out=out) is out
    np.testing.assert_array_equal(out, func(x))
    x0 = np.array(2.0, dtype)  # 0-d
    out0 = np.full((), 7, dtype)
    assert func(x0, out=out0) is out0 and out0 == func(x0)


# docs/api.rst, section out=: "`out`: an ndarray of the result's shape and dtype; any strides."
@pytest.mark.parametrize("axis", [0, 1, -1, None, (0, 1)])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_out_any_strides(func, dtype, axis, threads, rng):
    x = rng.standard_normal((6, 9)).astype(dtype)
    expected = func(x, axis=axis)
    sentinel = dtype(-123.5)

    fortran = np.full(x.shape, sentinel, dtype, order="F")
    assert func(x, axis=axis, out=fortran) is fortran
    np.testing.assert_array_equal(fortran, expected)

    # views of a bigger array: steps (one negative), and contiguous rows
    # spaced apart; the rest of the bigger array must stay untouched
    for index in [np.s_[2:14:2, 27:0:-3], np.s_[3:9, 4:13]]:
        big = np.full((20, 30), sentinel, dtype)
        view = big[index]
        assert view.shape == x.shape
        assert func(x, axis=axis, out=view) is view
        np.testing.assert_array_equal(view, expected)
        untouched = np.ones(big.shape, bool)
        untouched[index] = False
        assert (big[untouched] == sentinel).all(), "out= wrote outside the view"


# docs/api.rst, section out=: "`out=x` (in place) is allowed."
@pytest.mark.parametrize("layout", ["C", "F", "strided", "reversed", "rows-reversed",
                                    "padded", "row-strided"])
@pytest.mark.parametrize("axis", [0, -1, None, (1, 0)])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_out_in_place(func, dtype, axis, layout, threads, rng):
    x = laid_out(rng.standard_normal((5, 70)).astype(dtype), layout)
    # the same array, not a copy: the kernel depends on the memory layout (a
    # C-contiguous array reduced along axis 0 takes the column kernel, an
    # F-contiguous one the row kernel), and these may round differently
    expected = func(x, axis=axis)
    assert func(x, axis=axis, out=x) is x
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_out_in_place_one_long_row(func, dtype, threads, rng):
    # the split-row path, in place
    x = rng.standard_normal(5000).astype(dtype)
    expected = func(x.copy())
    func(x, out=x)
    np.testing.assert_array_equal(x, expected)


# Short rows go through the kernels eight rows at a time (docs/performance.rst):
# a row's result must not depend on its neighbours or on its place in a
# block (full or partial), in place or not, on any path or thread count.
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_row_result_does_not_depend_on_its_block(func, dtype, simd_path, threads, rng):
    x = (rng.standard_normal((21, 37)) * 10).astype(dtype)  # blocks of 8, 8 and 5 rows
    x[3, :5] = -np.inf                                       # a partly masked row
    x[10, 7] = np.nan                                        # a NaN row mid-block
    whole = func(x)
    alone = np.concatenate([func(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(whole, alone)
    func(x, out=x)
    np.testing.assert_array_equal(x, whole)


@pytest.mark.parametrize("overlap", ["reversed", "shifted+1", "shifted-1", "rows shifted",
                                     "transposed"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_out_partially_overlapping_input(func, dtype, overlap, threads, rng):
    # out shares memory with x in another layout: the result must be that of
    # the original x, as if computed into fresh memory and then copied
    buf = rng.standard_normal(200).astype(dtype)
    if overlap == "reversed":
        x, out, axis = buf[:100], buf[:100][::-1], -1
    elif overlap == "shifted+1":
        x, out, axis = buf[1:101], buf[:100], -1
    elif overlap == "shifted-1":
        x, out, axis = buf[:100], buf[1:101], -1
    elif overlap == "rows shifted":
        x, out, axis = buf[:190].reshape(19, 10)[:-1], buf[10:190].reshape(18, 10), -1
    else:
        square = buf[:196].reshape(14, 14)
        x, out, axis = square, square.T, 0
    assert np.shares_memory(x, out)
    expected = func(x, axis=axis)  # x itself: the same layout, the same kernel
    assert func(x, axis=axis, out=out) is out
    np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------
# dtypes (docs/api.rst, section Dtypes)
# --------------------------------------------------------------------------

# docs/api.rst, section Dtypes: "float32 and float64 are computed natively and keep their dtype."
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_float_dtypes_are_kept(func, reference, dtype, rng):
    x = rng.standard_normal((4, 50)).astype(dtype)
    result = func(x)
    assert result.dtype == dtype
    # with the accuracy of its own dtype: float64 is not a float32 round trip
    check(result, oracle(reference, x), func, dtype)


# docs/api.rst, section Dtypes: "float16 is computed in float32 and returned as float16."
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_float16(func, rng):
    x = rng.standard_normal((4, 50)).astype(np.float16)
    result = func(x)
    assert result.dtype == np.float16
    np.testing.assert_array_equal(result, func(x.astype(np.float32)).astype(np.float16))
    out = np.full(x.shape, 7, np.float16)
    assert func(x, out=out) is out
    np.testing.assert_array_equal(out, result)
    # byte-swapped float16 too, native result
    swapped = x.byteswap().view(x.dtype.newbyteorder())
    result_swapped = func(swapped)
    assert result_swapped.dtype == np.float16 and result_swapped.dtype.isnative
    np.testing.assert_array_equal(result_swapped, result)


# docs/api.rst, section Dtypes: "Integer and bool inputs are computed and returned as float64."
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64,
                                   np.uint64, np.bool_])
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_integer_and_bool_inputs(func, dtype, rng):
    x = rng.integers(0, 2 if dtype is np.bool_ else 100, size=(3, 17)).astype(dtype)
    result = func(x)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, func(x.astype(np.float64)))
    out = np.full(x.shape, 7.0)
    assert func(x, out=out) is out
    np.testing.assert_array_equal(out, result)


# docs/api.rst, section Dtypes:
# "byte-swapped arrays are accepted; the result is always native byte order."
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_byteswapped_input(func, dtype, rng):
    x = rng.standard_normal((3, 40)).astype(dtype)
    swapped = x.byteswap().view(x.dtype.newbyteorder())
    assert not swapped.dtype.isnative and np.array_equal(swapped, x)
    result = func(swapped, axis=0)
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    np.testing.assert_array_equal(result, func(x, axis=0))


# --------------------------------------------------------------------------
# array-likes, shapes (docs/api.rst, sections Dtypes and Axes)
# --------------------------------------------------------------------------

class _HasArray:
    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.a, dtype=dtype)


# docs/api.rst, section Dtypes: "Array-likes (lists, scalars, 0-d arrays, anything `np.asarray`
# takes) ... are accepted"
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
@pytest.mark.parametrize("like", ["nested list", "tuple", "__array__", "mixed int/float list"])
def test_array_likes(func, like):
    data = [[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]
    obj = {"nested list": data,
           "tuple": tuple(map(tuple, data)),
           "__array__": _HasArray(np.array(data)),
           "mixed int/float list": [[1, 2.0, 3], [0.5, -1, 4]]}[like]
    result = func(obj)
    assert isinstance(result, np.ndarray) and result.dtype == np.float64
    np.testing.assert_array_equal(result, func(np.array(data)))


# docs/api.rst, section Axes: "A 0-d input is a one-element softmax (result 1.0, log 0.0)."
@pytest.mark.parametrize("value", [3.5, -1e300, 0, True, np.float32(2.5), np.array(7.0),
                                   np.array(-2, np.int16), np.float16(1.0)])
def test_zero_dim(value):
    dtype = np.asarray(value).dtype
    expected_dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)
    s, logp = fs.softmax(value), fs.log_softmax(value)
    for result, want in ((s, 1.0), (logp, 0.0)):
        assert isinstance(result, np.ndarray) and result.shape == ()
        assert result.dtype == expected_dtype
        assert result == want
    # over None and the one (virtual) axis likewise
    assert fs.softmax(value, axis=None) == 1.0 and fs.log_softmax(value, axis=0) == 0.0


# docs/api.rst, section Axes:
# "The result has the shape of `x`."  /  "An empty axis gives an empty result."
@pytest.mark.parametrize("shape, axis", [((0,), -1), ((0, 5), -1), ((0, 5), 0), ((4, 0), -1),
                                         ((4, 0), 0), ((4, 0), None), ((2, 0, 3), (0, 1)),
                                         ((2, 0, 3), 2)])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [np.float16, np.int32],
                         ids=DTYPE_IDS + ["float16", "int32"])
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_empty(func, dtype, shape, axis):
    x = np.zeros(shape, dtype)
    result = func(x, axis=axis)
    assert result.shape == shape and result.size == 0
    assert result.dtype == (np.float64 if dtype is np.int32 else dtype)
    out = np.empty(shape, result.dtype)
    assert func(x, axis=axis, out=out) is out


# docs/api.rst, section Axes: "a tuple of ints (softmax over the joint elements of those axes, as
# `scipy.special.softmax` does), or `None` (over the whole array)"
@pytest.mark.parametrize("axis", [(0,), (0, 2), (2, 0), (1, 2), (0, 1, 2), None, -2, 1])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_axis_tuple_and_none_as_scipy(dtype, axis, threads, rng):
    special = pytest.importorskip("scipy.special")
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    high = np.float64 if dtype == np.float32 else np.longdouble
    s = fs.softmax(x, axis=axis)
    assert s.shape == x.shape
    # scipy evaluated in higher precision is an oracle like ours
    check(s, special.softmax(x.astype(high), axis=axis), fs.softmax, dtype)
    # and log_softmax is log(softmax) over the same joint elements
    check(fs.log_softmax(x, axis=axis), special.log_softmax(x.astype(high), axis=axis),
          fs.log_softmax, dtype)


@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_axis_none_is_softmax_of_the_flattened_array(func, rng):
    x = rng.standard_normal((3, 4, 5))
    np.testing.assert_array_equal(func(x, axis=None), func(x.ravel()).reshape(x.shape))
    # the order of a tuple's axes does not matter; all axes is the same as None
    np.testing.assert_array_equal(func(x, axis=(2, 0, 1)), func(x, axis=None))
    np.testing.assert_array_equal(func(x, axis=(2, 0)), func(x, axis=(0, -1)))


# docs/api.rst, section Forward: "`fs.softmax(x, axis=-1, *, out=None)`"
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_signature(func, rng):
    x = rng.standard_normal((4, 6))
    # axis defaults to -1 and may be given by position or by name
    np.testing.assert_array_equal(func(x), func(x, -1))
    np.testing.assert_array_equal(func(x), func(x, axis=1))
    np.testing.assert_array_equal(func(x, 0), func(x.T).T)
    np.testing.assert_array_equal(func(x=x, axis=0), func(x, 0))
    # out is keyword-only
    with pytest.raises(TypeError):
        func(x, -1, np.empty_like(x))


# docs/api.rst, section Axes:
# "An out-of-range or repeated axis raises `numpy.exceptions.AxisError`"
@pytest.mark.parametrize("axis", [2, -3, (0, 0), (1, -1), (0, 2)])
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_bad_axis_is_axis_error(func, axis):
    with pytest.raises(AxisError):
        func(np.zeros((2, 3)), axis=axis)
