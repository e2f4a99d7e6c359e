"""The public functions as the tests see them: one entry each, and their
error budgets.

`FUNCTIONS` maps each public function's name to a `Function`:

- ``fast`` and ``ref``: the fastsoftmax callable and its plain-NumPy
  reference in :mod:`fastsoftmax.reference` (the same signature);
- ``args``: the names of its array arguments, as error messages spell them;
- ``axes``: ``"any"`` (an int, a tuple of ints or None: the forward
  functions and the derivatives) or ``"int"`` (a single int: the loss;
  docs/api.rst, section Axes);
- ``has_out``: whether it takes ``out=``;
- ``from_logits(x, other, axis)``: its array arguments made from logits x
  (and a second array ``other``, for v, g or target weights), as a forward
  pass would cache them;
- ``check(result, inputs, axis)``: the result against the reference
  evaluated in higher precision, within the function's budget below;
- ``cases``, ``variants``, ``simd_cases``: what the generic equivalence grid
  (test_equivalence.py) runs it on: (shape, axis, layouts) triples, input
  dtypes (and, for the loss, target kinds and reductions), and the smaller
  grid run on every SIMD path.

A new public function needs one entry here; the grid, the bad-input tables
(test_errors.py), the thread, fork and memory tests (test_concurrency.py,
test_memory.py) and the edge cases (test_edges.py) then run it.
"""

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import fastsoftmax as fs
from fastsoftmax import reference as ref

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
FLOAT_DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
EPS = {dt: np.finfo(dt).eps for dt in (F16, F32, F64)}


# --------------------------------------------------------------------------
# The oracle and the ulp check
# --------------------------------------------------------------------------

def oracle_dtype(dtype):
    """Higher precision to compute expected values in."""
    return np.float64 if np.dtype(dtype) == np.float32 else np.longdouble


def oracle(func, *arrays, **kwargs):
    """The reference function evaluated in higher precision (float64 for
    float32 data, long double for float64 data)."""
    dtype = np.result_type(*arrays)
    high = [np.asarray(a, dtype=oracle_dtype(dtype)) for a in arrays]
    return func(*high, **kwargs)


def representable(expected, dtype):
    """The oracle with values beyond the dtype's range replaced by the
    infinity they round to (e.g. log_softmax([max, -max])[1] = -2 max)."""
    expected = np.asarray(expected)
    with np.errstate(over="ignore", invalid="ignore"):
        overflow = np.isinf(expected.astype(dtype)) & np.isfinite(expected)
    return np.where(overflow, np.copysign(np.inf, expected), expected)


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
# Error budgets
# --------------------------------------------------------------------------
# Units: eps * max(|exact|, floor), eps the machine epsilon of the dtype the
# function computes in, u = eps/2 its rounding unit.  The oracle is the
# reference in higher precision (above); its own error is counted where it
# matters.
#
# Sums.  Every sum over a row -- sum exp(x_j - m), <s, v>, sum(g),
# sum t_j (x_j - m) -- runs in FS_LANES = 16 double lanes (lane l takes
# terms l, l + 16, ...), added pairwise at the end (fastsoftmax/_vmath.hpp):
#   float32 data (and float16, computed in float32): plain double lanes.  A
#     lane of m = ceil(n/16) terms and the 4 levels of the pairwise end err
#     by at most (m + 4) 2^-53 of the sum of the terms' magnitudes: for
#     n <= 10^4 below 2^-43 = 2^-20 eps32, nothing in float32 ulps; for a
#     row of 10^7, n 2^-53 at most (test_edges.py's row sums).
#   float64 data: Kahan-compensated lanes, added by a compensated pairwise
#     end (TwoSum at each level, the errors gathered and added once).
#     Taking the carry off each new term rounds once (u of that term); each
#     lane addition's error goes into the carry, the end keeps every error
#     and rounds once more (u of the sum): <= u sum|t| + u |S| <= 2u sum|t|
#     = 1 eps of the terms' magnitudes, whatever n (to first order).  Below:
#     "a compensated sum, 1".  The sums of exp(x - max) (terms in [0, 1])
#     start each lane at 1 and keep every addition's error exactly
#     (Fast2Sum), so they are exact to first order, and their rounding
#     error is handed on with them: "an exact sum, 0".
#
# softmax and log_softmax.  Per row, m = max, y_j = exp(x_j - m) with the
# difference x_j - m taken exactly (TwoSum) and the polynomial exp within
# 1.2 ulp, T = sum(y_j) as above, then
#   softmax:      s_j = y_j * (1/T), the product rounded once to the dtype
#                 (1/T as an unevaluated hi + lo pair, fused multiply-add;
#                 the SSE2 build, without FMA, rounds 1/T and the product);
#   log_softmax:  l_j = (x_j - m) - log(T), in double, rounded once.
# softmax, float32: own exp 1.2 + T's error (T is a positively weighted sum
#   of the y_j, so its relative error is at most the largest of theirs, 1.2;
#   the double lanes add nothing) + the final rounding 0.5 = 2.9 -> 3.
#   floor = tiny: a subnormal result is rounded to the subnormal grid
#   (spacing eps * tiny) by the exp and again by the scaling, at most
#   1 eps * tiny in all.
# softmax, float64, a row computed whole: own exp 1.2 + T (1.2 from the
#   terms + an exact sum, 0) + the final rounding 0.5 = 2.9, with FMA: 1/T
#   is formed as hi + lo from T and its rounding error.  Without FMA (the
#   SSE2 build) T and 1/T are rounded (0.5 each): 3.9.  The budget: 4.5.
#   Not covered by this count: one long row split across threads (softmax_row_split)
#   scales each chunk's terms by its rounded exp(m_c - m), 1.2 (the chunk
#   of the max has exactly 1), and adds the rescaled chunk sums rounded
#   (about 1 more): up to about 5 to first order; measured at most 1.94
#   ulp (FMA) and 2.78 (SSE2) by benchmarks/accuracy.py (large-n, 2 threads).
# log_softmax, float32 (floor = 1: near 0 the error is absolute, eps-sized,
#   ~ eps * |log T|'s error, not relative to a tiny |l_j|): log(T) inherits
#   T's relative error as an absolute one, <= 1.2 eps; x_j - m and the
#   subtraction are exact or negligible in double; final rounding 0.5 ->
#   1.7 -> 2.
# log_softmax, float64 (floor = 1): x_j - m rounded 0.5 (|x_j - m| <= |l_j|)
#   + log T's error 2.2 (the exps' 1.2, and where T < 2 the log1p path's
#   compensated sum of the tail, 1) + log rounded 0.5 (log T <= |l_j|) +
#   the subtraction rounded 0.5 = 3.7 -> 4.
#
# The derivatives.  A relative bound alone would be wrong for the products:
# y_j = s_j v_j - s_j <s, v> is a difference of two terms and can be far
# smaller than either (v_j close to <s, v>).  Its rounding errors are
# proportional to the *terms*, not to y_j, so the floor is a multiple of
# the terms, computed in high precision (`jvp_terms` and friends below):
#   softmax_jvp/vjp:  terms_j = s_j * (|v_j| + sum_k |s_k v_k|)
#   log_softmax_vjp:  terms_j = |g_j| + exp(logp_j) * sum_k |g_k|
# Since |y_j| <= terms_j, a floor of the full terms makes the bound `ulps`
# ulp of the terms everywhere; a floor of a small fraction of them keeps it
# relative to |y_j| except where y_j is tiny next to its terms.
# softmax_jvp/vjp, float32 data: the kernel forms everything in double --
#   s_k v_k is exact in double (24 + 24 bits), the dot in double lanes errs
#   by at most (n/16 + 4) eps64/2 of sum|s_k v_k|, the update s_j * (v_j -
#   dot) adds 2 eps64 -- and rounds once to float32: 0.5 ulp.  The float64
#   oracle (J @ v, J formed with 1 rounding per entry) errs by at most
#   (n + 4) eps64 * terms.  For n <= 1000 all double-precision error is
#   below 1300 * 2^-52 * terms = 2^-18.6 eps32 * terms, so
#     |err| <= 0.5 eps32 |y| + 2^-18.6 eps32 terms <= 1 eps32 max(|y|, 2^-16 terms):
#   1 ulp with a floor of 2^-16 terms -- in effect "correctly rounded
#   result, within a factor 2", and a float32-accumulated dot would fail it.
# softmax_jvp/vjp, float64 data (and mixed float32/float64): all in double.
#   the update: v_j - dot and the product with s_j round once each: 1 ulp of |y|;
#   the products s_k v_k round: 0.5 ulp of sum|s v|  -> times s_j: <= 0.5 terms;
#   the dot is rounded to double before the subtraction: 0.5 eps s_j|dot| <= 0.5 terms;
#   the long-double oracle: n eps_ld <= 1000 * 2^-63 < 0.5 eps64 of terms;
#   the compensated sum itself: 1 ulp of sum|s v| (at most 1 ulp of terms).
#   Total 1 |y| + 3.5 terms <= 4 ulp of max(|y|, terms) = of terms.
#   (Measured over the grid's cases on every SIMD path: at most 2.0 ulp;
#   float32 0.49, log_softmax_vjp 0.67 / 1.3, softmax_jacobian 0.75.)
# log_softmax_vjp computes exp(logp_j) with the kernels' own polynomial exp
#   in the data's precision (float32 for float32 data): within 1 ulp (the
#   truncation error is below 0.1 ulp and Horner rounding adds the rest;
#   0.86 ulp measured over 2e6 arguments in [-30, 0] on every SIMD path).
#   float32: 1 ulp of exp(logp_j) * |sum g| <= 1 eps32 terms, plus the
#   final rounding, 0.5 ulp of |y| (the double-precision parts are
#   negligible): 1.5 ulp of max(|y|, terms).
#   float64: exp 1 + the product p_j * gsum 0.5 + gsum's own rounding 0.5 +
#   the subtraction 0.5 ulp of |y| + the compensated sum of g, 1: 3.5,
#   so 4 ulp of max(|y|, terms).
# softmax_jacobian: the kernel's J_ij = -s_i s_j is one rounding (0.5 ulp),
#   the diagonal s_i (1 - s_i) two (<= 1 ulp): no cancellation, 1 ulp of
#   |J_ij|.  But the oracle forms diag(s) - s sᵀ, and on the diagonal s_i -
#   s_i² cancels when s_i is close to 1 (e.g. s_i = 1 - 1e-6: the result is
#   1e6 times smaller than its terms).  Its error is relative to terms_ij =
#   s_i (δ_ij + s_j): <= eps_ld terms = 2^-11 eps64 terms for float64 data
#   (eps64 = 2^-29 eps32 for float32).  So
#     |err| <= 1 eps |J| + 2^-11 eps terms <= 1.5 eps max(|J|, 2^-10 terms):
#   1.5 ulp with a floor of 2^-10 terms (the extra 0.5 ulp is the oracle's).
#
# softmax_cross_entropy.  Per row, with m = max(x), S = sum exp(x - m) and
# T = sum(t):
#     loss = T log S - sum_j t_j (x_j - m)         (index c: log S - (x_c - m))
#     grad = exp(x - m) * (T scale / S) - t scale   (scale = 1/rows for "mean")
# exp(x - m) is the kernels' polynomial exp in the computation precision:
# within 1 ulp (truncation < 0.1 ulp plus Horner rounding; 0.86 ulp measured).
# Loss.  For targets >= 0 every term has the same sign (log S >= 0 and
#   x_j - m <= 0), so there is no cancellation; still, the errors are
#   relative to the terms, M = |T| (1 + log S) + sum_j |t_j| |x_j - m| (the
#   "1" is for the exp error, which errs log S by up to 1 eps absolute),
#   the floor (`loss_terms`).
#   float32 (and float16 logits): S has <= 1 eps32 relative error (exp), so
#   log S is off by <= 1 eps32; all else is double and negligible, then one
#   rounding to float32: <= 0.5 |loss| + 1 M  ->  1.5 ulp of max(|loss|, M).
#   The reductions sum the rows' double losses and round once: the same
#   1.5 ulp of the summed (mean: averaged) floor.
#   float64: exp 1 + S's compensated sum 1 + log 0.5 + x - m 0.5 + the
#   weighted products 0.5 + their compensated sum 1 + the final subtraction
#   0.5 of |loss|: 5 <= 6 ulp of max(|loss|, M) per row; np.sum/np.mean over
#   the rows add their own (pairwise) rounding of positive numbers, < 1 ulp
#   for these few rows: 7 ulp for the reductions.
# Gradient, floor G_j = scale (p_j |T| + |t_j|) (its two terms, `grad_terms`).
#   float32: exp(x_j - m) 1 ulp + S 1 ulp (the exp errors, averaged) + for
#   index targets the softmax term is first rounded to float32 and then the
#   1 subtracted (0.5 ulp of p_j scale) + the final rounding (0.5 of |grad|;
#   everything else is double): 3 ulp of max(|grad|, G).
#   float64: exp 1 + S (1 + its compensated sum 1) + T's compensated sum 1 +
#   four roundings forming T scale / S and the products (2) + the index
#   target's intermediate rounding 0.5 + the final subtraction 0.5:
#   7 <= 8 ulp of max(|grad|, G).
#   float16 results: the float32 computation errs by <= 3 eps32 = 2^-11.4
#   eps16 of G, then one rounding to float16, 0.5 ulp:
#   <= 1 eps16 max(|grad|, 2^-8 G); below float16's smallest normal the
#   rounding is absolute (half of 2^-24), hence the floor of that normal.
#   (Measured over the grid's cases on every SIMD path: loss 0.44 / 1.5 ulp,
#   reduced loss 0.44 / 1.3, gradient 1.1 / 2.8 (float32 / float64),
#   float16 0.5.)

# (function name, dtype) -> (ulps, floor)
BOUNDS = {
    ("softmax", np.float32): (3, np.finfo(np.float32).tiny),
    ("softmax", np.float64): (4.5, np.finfo(np.float64).tiny),
    ("log_softmax", np.float32): (2, 1.0),
    ("log_softmax", np.float64): (4, 1.0),
}
# derivative name -> {dtype: (ulps, floor as a multiple of the terms)}
DERIVATIVE_BOUNDS = {
    "softmax_jvp": {F32: (1, 2.0 ** -16), F64: (4, 1.0)},
    "softmax_vjp": {F32: (1, 2.0 ** -16), F64: (4, 1.0)},
    "log_softmax_vjp": {F32: (1.5, 1.0), F64: (4, 1.0)},
    "softmax_jacobian": {F32: (1.5, 2.0 ** -10), F64: (1.5, 2.0 ** -10)},
}
# logsumexp: S = sum b exp(x - m) is summed in double (float data) or
#   compensated (double), so its relative error is the exps' (<= 1 eps,
#   weighted average) plus a few eps64 or eps**2; log S then errs by <= 1 eps
#   absolute where S >= 2 (log S >= log 2: <= 1.45 ulp of it), and below 2
#   log1p(S - 1) with S - 1 summed directly keeps the error relative to
#   log S; m + log S adds 0.5 ulp of the result (float32 data: the sum is
#   rounded once from double).  So within 2 ulp of max(|result|, |m|).
#   (Measured by benchmarks/accuracy.py on every SIMD path: at most 1.0
#   (float32) and 1.75 (float64, SSE2) such units.)
LOGSUMEXP_ULPS = 2
LOSS_ULPS = {F32: 1.5, F64: 6}
REDUCED_LOSS_ULPS = {F32: 1.5, F64: 7}
GRAD_ULPS = {F32: 3, F64: 8, F16: 1}


def check(actual, expected, func, dtype, factor=1):
    """assert_ulp_close with the forward budget (times `factor`) for `func`
    (softmax or log_softmax) on `dtype` data."""
    ulps, floor = BOUNDS[(func.__name__, np.dtype(dtype).type)]
    assert_ulp_close(actual, expected, np.dtype(dtype).type, factor * ulps, floor=floor)


def jvp_terms(s, v, axis):
    return s * (np.abs(v) + np.sum(np.abs(s * v), axis=axis, keepdims=True))


def log_vjp_terms(logp, g, axis):
    return np.abs(g) + np.exp(logp) * np.sum(np.abs(g), axis=axis, keepdims=True)


def reduced_axes(axis, ndim):
    """`axis` (int, tuple or None) as the sorted tuple of axes in [0, ndim)."""
    axes = range(ndim) if axis is None else axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(int(a) % ndim for a in axes))


def joined_rows(a, axis):
    """`a` (at least 1-d) with the reduced axes moved last, in their order,
    and joined into one: the layout of the Jacobian's rows (docs/api.rst,
    section Derivatives)."""
    axes = reduced_axes(axis, a.ndim)
    k = len(axes)
    moved = np.moveaxis(a, axes, tuple(range(a.ndim - k, a.ndim)))
    return moved.reshape(moved.shape[:a.ndim - k] + (math.prod(a.shape[i] for i in axes),))


def jacobian_terms(s, axis):
    rows = joined_rows(s, axis)
    return rows[..., :, None] * (np.eye(rows.shape[-1]) + rows[..., None, :])


DERIVATIVE_TERMS = {"softmax_jvp": jvp_terms, "softmax_vjp": jvp_terms,
                    "log_softmax_vjp": log_vjp_terms, "softmax_jacobian": jacobian_terms}


def derivative_floor(name, inputs, axis, dtype, scale):
    """`scale` times the terms of `name` at `inputs` (in high precision),
    in the result's shape."""
    high = [np.atleast_1d(np.asarray(a, oracle_dtype(dtype))) for a in inputs]
    terms = DERIVATIVE_TERMS[name](*high, axis=axis)  # the Jacobian's: batch + (n, n)
    if name != "softmax_jacobian":
        terms = terms.reshape(np.shape(inputs[0]))  # 0-d stays 0-d
    return scale * terms


def check_derivative(name, result, inputs, axis, grid=0.0):
    """The derivative `name` against the oracle within its budget; `grid`
    raises the floor to at least that (the subnormal steps of an edge case)."""
    dtype = result.dtype
    ulps, scale = DERIVATIVE_BOUNDS[name][dtype]
    floor = np.maximum(derivative_floor(name, inputs, axis, dtype, scale), grid)
    expected = representable(oracle(getattr(ref, name), *inputs, axis=axis), dtype)
    assert_ulp_close(result, expected, dtype, ulps, floor)


# cross-entropy: dtypes, the oracle, and the budgets above

def result_dtype(dtype):
    """The forward result dtype (docs/api.rst, section Dtypes: integer and
    bool become float64)."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else F64


def compute_dtype(dtype):
    return F32 if np.dtype(dtype).itemsize <= 4 else F64


def high_dtype(dtype):
    """Precision of the expected values: float64 for float32 computations,
    long double for float64 ones."""
    return np.float64 if compute_dtype(dtype) == F32 else np.longdouble


def rows_of(logits, target, axis, dtype):
    """(x, t) in `dtype` with the class axis last; t one-hot for indices."""
    x = np.moveaxis(np.atleast_1d(np.asarray(logits, dtype)), axis, -1)
    if np.asarray(target).dtype.kind in "iu":
        t = np.zeros(x.shape, dtype)
        np.put_along_axis(t, np.asarray(target)[..., None], 1, axis=-1)
    else:
        t = np.moveaxis(np.atleast_1d(np.asarray(target, dtype)), axis, -1)
    return x, t


def oracle_xent(logits, target, axis, reduction, hp, **options):
    """The reference in high precision (index targets stay integers)."""
    logits = np.asarray(logits).astype(hp)
    if np.asarray(target).dtype.kind == "f":
        target = np.asarray(target).astype(hp)
    return ref.softmax_cross_entropy(logits, target, axis, reduction=reduction,
                                     return_grad=True, **options)


# The cross-entropy's options in the grid's "-options" variants
# (docs/api.rst, section Fused loss): uneven class weights, the padding
# index -100 on every third row of an index target, label smoothing 0.1.
IGNORED = -100


def loss_options(n, kind):
    """The options of an "-options" variant for n classes."""
    options = {"weight": 0.25 + (np.arange(n) % 4) / 2, "label_smoothing": 0.1}
    if kind == "index":
        options["ignore_index"] = IGNORED
    return options


def options_target(t, target, options):
    """The target the options make of t (rows_of's, classes last), and
    the denominator of "mean" (torch.nn.functional.cross_entropy's)."""
    n, e = t.shape[-1], options.get("label_smoothing", 0.0)
    uniform = e / n if n else 0.0
    w = options.get("weight", np.ones(n)).astype(t.dtype)
    if np.asarray(target).dtype.kind in "iu":
        kept = np.asarray(target) != options.get("ignore_index", IGNORED)
        class_weight = np.where(kept, w[np.where(kept, target, 0)], 0)
        t = (1 - e) * class_weight[..., None] * t + uniform * w * kept[..., None]
        return t, class_weight.sum()
    return ((1 - e) * t + uniform) * w, float(np.prod(t.shape[:-1]))


def loss_terms(x, t):
    """M per row (see above), x and t in high precision with classes last."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = x.max(-1, keepdims=True)
        log_s = np.log(np.exp(x - m).sum(-1))
        tsum = np.abs(t.sum(-1))
        return tsum * (1 + log_s) + np.where(t == 0, 0, np.abs(t) * np.abs(x - m)).sum(-1)


def grad_terms(x, t, scale):
    p = ref.softmax(x, axis=-1)
    return scale * (p * np.abs(t.sum(-1, keepdims=True)) + np.abs(t))


def assert_loss_close(loss, expected, x, t, reduction, compute, grid=0.0):
    terms = np.maximum(loss_terms(x, t), grid)
    if reduction == "none":
        assert_ulp_close(loss, expected, compute, LOSS_ULPS[compute], terms)
    else:
        floor = terms.sum() if reduction == "sum" else terms.mean() if terms.size else 1.0
        assert_ulp_close(loss, expected, compute, REDUCED_LOSS_ULPS[compute], floor=floor)


def assert_grad_close(grad, expected, x, t, axis, scale, grid=0.0):
    """grad (any shape, classes along axis) vs expected (same layout)."""
    terms = np.moveaxis(grad_terms(x, t, scale), -1, axis % grad.ndim) if grad.ndim else \
        grad_terms(x, t, scale).reshape(())
    dtype = grad.dtype
    if dtype == F16:
        floor = np.maximum(2.0 ** -8 * terms, np.finfo(np.float16).tiny)
    else:
        floor = np.maximum(terms, grid)
    assert_ulp_close(grad, expected, dtype, GRAD_ULPS[dtype], floor)


# --------------------------------------------------------------------------
# Inputs made from logits
# --------------------------------------------------------------------------
# The derivatives take what the forward pass caches: s = softmax(x) and
# logp = log_softmax(x), here correctly rounded to the dtype (the oracle
# rounded once), so that they are exactly what a perfect forward would give.

def quiet():
    return np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")


def probs(x, axis=-1):
    with quiet():
        return np.asarray(oracle(ref.softmax, x, axis=axis)).astype(x.dtype)


def logprobs(x, axis=-1):
    with quiet():
        return representable(oracle(ref.log_softmax, x, axis=axis), x.dtype).astype(x.dtype)


def logits(rng, shape, dtype=np.float64):
    """Spread 3: probabilities from ~1 down to ~1e-7 in the same row."""
    return np.asarray(3.0 * rng.standard_normal(shape)).astype(dtype)


def probability_target(x, weights):
    """Probability-target weights |weights| (rows need not sum to 1), none
    on a masked logit, which would make the loss +inf."""
    target = np.abs(weights)
    target[np.isneginf(x)] = 0
    return target


# --------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------

def _case(shape, axis, layouts):
    return (tuple(shape), axis, tuple(layouts))


@dataclass(frozen=True)
class Function:
    name: str
    args: tuple                     # the array arguments, as messages name them
    axes: str                       # "any" (int, tuple, None) or "int"
    from_logits: Callable           # (x, other, axis) -> the array arguments
    check: Callable                 # (results, inputs, axis, variant) -> None
    variants: dict                  # id -> what make_inputs and run take
    cases: list = field(default_factory=list)       # (shape, axis, layouts)
    simd_cases: list = field(default_factory=list)  # (shape, axis)
    simd_variants: tuple = ("float32", "float64")   # the variants run on every path
    has_out: bool = True

    @property
    def fast(self):
        return getattr(fs, self.name)

    @property
    def ref(self):
        return getattr(ref, self.name)

    def result_shape(self, shape, axis=-1):
        if self.name == "softmax_jacobian":
            rows = joined_rows(np.empty(shape or (1,)), axis).shape
            return rows + (rows[-1],)
        if self.name == "logsumexp":
            return joined_rows(np.empty(shape or (1,)), axis).shape[:-1]
        return tuple(shape)

    def make_inputs(self, rng, shape, axis, variant):
        """Array arguments of `shape` for the grid: logits of spread 3 made
        into this function's inputs in the variant's dtypes; for the loss,
        class indices or probabilities; for a WHERE variant, a mask last
        (random_mask), with NaN and inf in x where it is False."""
        if self.name == "softmax_cross_entropy":
            return _cross_entropy_inputs(rng, shape, axis, variant)
        dtypes = [d for d in variant if d is not WHERE]
        x = logits(rng, shape, dtypes[0])
        other = rng.standard_normal(shape).astype(dtypes[-1])
        if self.name == "logsumexp" and len(dtypes) > 1:  # with scale factors b >= 0
            inputs = [np.asarray(x), np.abs(other)]
        else:
            inputs = [np.asarray(a) for a in self.from_logits(x, other, axis)]
        if WHERE in variant:
            mask = random_mask(rng, shape)
            inputs[0] = np.where(mask, inputs[0], rng.choice([np.nan, np.inf, -np.inf, 1e30],
                                                              shape)).astype(dtypes[0])
            inputs.append(mask)
        return inputs

    def run(self, inputs, axis=-1, variant=None, **kwargs):
        """The results as a tuple of arrays; for the loss (loss, grad) with
        the variant's reduction ("none" by default)."""
        if self.name == "softmax_cross_entropy":
            reduction = variant[2] if variant else "none"
            kwargs.update(_options_of(variant, inputs[0], axis))
            return tuple(fs.softmax_cross_entropy(*inputs, axis, reduction=reduction,
                                                  return_grad=True, **kwargs))
        if variant is not None and WHERE in variant:
            *inputs, kwargs["where"] = inputs
        if self.name == "logsumexp" and len(inputs) > 1:  # b is keyword-only
            return tuple(fs.logsumexp(inputs[0], axis, b=inputs[1], return_sign=True, **kwargs))
        return (self.fast(*inputs, axis=axis, **kwargs),)


# A variant's marker (in its tuple of dtypes): the call passes where=, a
# mask that make_inputs adds as the last input.
WHERE = "where"


def random_mask(rng, shape):
    """A bool mask that broadcasts to `shape`: each axis kept or made 1 at
    random (so that masks repeat along some axes, e.g. (n,) or (B, 1, 1,
    n) against x's shape), about a quarter False, and whole rows of the
    last axis False now and then (empty rows)."""
    mask_shape = tuple(d if rng.random() < 0.6 else 1 for d in shape)
    mask = rng.random(mask_shape) < 0.75
    if mask.ndim and mask.shape[-1] > 1:
        mask[rng.random(mask_shape[:-1]) < 0.2] = False
    return mask


def split_where(inputs, variant):
    """(the array arguments, the mask or None) of a grid variant's inputs."""
    if variant is not None and WHERE in variant:
        return list(inputs[:-1]), inputs[-1]
    return list(inputs), None


def _forward_check(name):
    def run(results, inputs, axis, variant=None):
        (result,), ((x,), mask) = results, split_where(inputs, variant)
        assert type(result) is np.ndarray
        assert result.shape == x.shape
        assert result.dtype == np.dtype(x.dtype.type) and result.dtype.isnative
        expected = representable(oracle(getattr(ref, name), x, axis=axis, where=mask),
                                 result.dtype)
        check(result, expected, getattr(fs, name), result.dtype)
    return run


def _logsumexp_check(results, inputs, axis, variant=None):
    """The result (and with b its sign) against the oracle, within
    LOGSUMEXP_ULPS of the larger of the result and the row's max."""
    arrays, mask = split_where(inputs, variant)
    result, x = np.asarray(results[0]), arrays[0]
    b = arrays[1] if len(arrays) > 1 else np.ones_like(x)
    dtype = np.result_type(*arrays)
    assert result.dtype == dtype and result.shape == FUNCTIONS["logsumexp"].result_shape(
        x.shape, axis)
    expected, sign = oracle(
        lambda x, b: ref.logsumexp(x, axis, b=b, return_sign=True, where=mask), x, b)
    high = np.atleast_1d(np.asarray(x, oracle_dtype(dtype)))
    used = np.atleast_1d(b) != 0
    if mask is not None:
        used = used & np.broadcast_to(mask, x.shape).reshape(used.shape)
    row_max = np.max(np.where(used, high, -np.inf), axis=reduced_axes(axis, high.ndim),
                     initial=-np.inf).reshape(result.shape)
    assert_ulp_close(result, representable(expected, dtype), dtype.type, LOGSUMEXP_ULPS,
                     floor=np.abs(row_max))
    if len(results) > 1:
        np.testing.assert_array_equal(results[1], sign.astype(dtype))


def _derivative_check(name):
    def run(results, inputs, axis, variant=None):
        (result,) = results
        assert isinstance(result, np.ndarray)
        assert result.dtype == np.result_type(*inputs)
        expected = oracle(getattr(ref, name), *inputs, axis=axis)
        assert result.shape == expected.shape
        assert np.isfinite(expected).all()
        check_derivative(name, result, inputs, axis)
    return run


def _cross_entropy_check(results, inputs, axis, variant=None):
    """Loss and gradient against the oracle; the loss alone is the same,
    and is a NumPy scalar of the computation dtype for "mean"/"sum", an
    array of the batch shape for "none" (docs/api.rst, section Fused loss)."""
    reduction = variant[2] if variant else "none"
    loss, grad = results
    x_in, target = inputs
    res = result_dtype(x_in.dtype) if target.dtype.kind in "iu" else \
        np.result_type(result_dtype(x_in.dtype), result_dtype(target.dtype))
    compute, hp = compute_dtype(res), high_dtype(res)
    options = _options_of(variant, x_in, axis)
    expected_loss, expected_grad = oracle_xent(x_in, target, axis, reduction, hp, **options)
    x, t = rows_of(np.asarray(x_in), np.where(target == IGNORED, 0, target), axis, hp)
    rows = int(np.prod(x.shape[:-1]))
    if options:
        t, rows = options_target(t, np.asarray(target), options)
    np.testing.assert_array_equal(
        fs.softmax_cross_entropy(x_in, target, axis, reduction=reduction, **options), loss)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == x.shape[:-1]
    else:
        assert isinstance(loss, np.generic)
    assert loss.dtype == compute
    assert_loss_close(loss, expected_loss, x, t, reduction, compute)
    assert isinstance(grad, np.ndarray)
    assert grad.shape == x_in.shape and grad.dtype == res
    scale = 1.0 / rows if reduction == "mean" and rows else 1.0
    assert_grad_close(grad, expected_grad, x, t, axis, scale)


def _options_of(variant, x, axis):
    """The loss options of a variant (none but for "-options" ones)."""
    if not variant or len(variant) < 4:
        return {}
    shape = np.shape(x) or (1,)
    return loss_options(shape[axis], variant[0])


# (logits dtype, probability-target dtype) by name
CROSS_ENTROPY_DTYPES = {
    "float32": (np.float32, np.float32),
    "float64": (np.float64, np.float64),
    "float16": (np.float16, np.float16),
    "int": (np.int64, np.float64),
    "mixed": (np.float32, np.float64),  # probability targets only
}


def _cross_entropy_inputs(rng, shape, axis, variant):
    """Logits of the variant's dtype and a target: class indices (int64,
    the batch shape) or probabilities (uniform [0, 1) entries, rows that
    need not sum to 1)."""
    kind, dtypes = variant[:2]
    logits_dtype, target_dtype = CROSS_ENTROPY_DTYPES[dtypes]
    x = cross_entropy_logits(rng, shape, logits_dtype)
    target = target_for(rng, shape, axis, kind, target_dtype)
    if len(variant) > 3 and kind == "index" and target.ndim:  # every third row ignored
        target.reshape(-1)[::3] = IGNORED
    return [x, target]


def cross_entropy_logits(rng, shape, dtype):
    """Logits of spread 3; integers in [-5, 5] for an integer dtype."""
    if np.dtype(dtype).kind == "i":
        return np.asarray(rng.integers(-5, 6, shape), dtype)
    return logits(rng, shape, dtype)


def target_for(rng, shape, axis, kind, dtype=np.float64):
    """Class indices (int64, the batch shape) or probabilities (rows that
    need not sum to 1: uniform [0, 1) entries, about n/2 per row)."""
    full = shape if shape else (1,)
    n = full[axis]
    batch = tuple(d for i, d in enumerate(full) if i != axis % len(full)) if shape else ()
    if kind == "index":
        return np.asarray(rng.integers(0, n, batch), np.int64)
    return np.asarray(rng.random(shape)).astype(dtype)


# What the grid runs.  Forward: shapes x axes (0-d, empty, n = 1, odd
# sizes, tuples, None) on every layout, and every row length around the
# SIMD widths (vector tails) on the layouts that reach the kernels
# differently: as they are (C), copied (F), with a negative row stride.
FORWARD_LAYOUTS = ("C", "F", "transposed", "strided", "row-strided", "padded", "reversed",
                   "rows-reversed", "readonly", "broadcast", "byteswapped")
ROW_LENGTH_LAYOUTS = ("C", "F", "rows-reversed")
_FORWARD_SHAPE_AXES = [
    ((), [-1, 0, None]),                                   # 0-d: one-element softmax
    ((7,), [0, -1, None, (0,)]),
    ((5, 9), [0, 1, -1, -2, None, (0, 1), (1, 0)]),
    ((3, 4, 6), [0, 1, 2, -1, -2, -3, None, (0, 2), (2, 0), (1, 2), (0, 1, 2)]),
    ((2, 3, 4, 5), [0, 1, 2, 3, -1, -2, -3, -4, None, (0, 2), (3, 1), (1, 2, 3)]),
    ((0, 5), [0, -1, None, (0, 1)]),                       # empty batch
    ((4, 0), [0, -1, None, (1, 0)]),                       # empty axis
    ((6, 1), [-1, 0]),                                     # n = 1
    ((2, 1000), [-1, 0, None]),
    ((2, 4097), [-1, None]),
]
FORWARD_CASES = (
    [_case(shape, axis, FORWARD_LAYOUTS) for shape, axes in _FORWARD_SHAPE_AXES
     for axis in axes]
    + [_case((3, n), -1, ROW_LENGTH_LAYOUTS) for n in range(1, 34)]
    # short rows in several tiles of rows (_vmath.hpp, softmax_short_rows)
    + [_case((300, n), -1, ROW_LENGTH_LAYOUTS) for n in (10, 37)])
# per SIMD path: all the short row lengths (vector tails), a long row,
# multi-axis and empty cases (layouts and threads are handled the same way
# on every path; what differs per path is the vectorised C)
FORWARD_SIMD_CASES = ([((), None)] + [((3, n), -1) for n in range(1, 34)]
                      + [((5, 9), 0), ((5, 9), (0, 1)), ((3, 4, 6), 1), ((3, 4, 6), None),
                         ((2, 4097), -1), ((0, 5), -1), ((4, 0), -1)])

# Derivatives: every int axis of shapes from 0-d (a one-element softmax)
# and n = 1 to 1000, empty batches and axes, on layouts that copy or not.
DERIVATIVE_LAYOUTS = ("C", "F", "last-axis-outer", "strided-reversed", "readonly")
_DERIVATIVE_SHAPES = [(), (1,), (7,), (33,), (1000,), (0,), (5, 7), (0, 7), (7, 0), (6, 1),
                      (3, 33), (3, 4, 7), (2, 3, 1, 5)]
DERIVATIVE_CASES = [
    _case(shape, axis, DERIVATIVE_LAYOUTS) for shape in _DERIVATIVE_SHAPES
    for axis in range(-max(len(shape), 1), max(len(shape), 1))  # 0-d counts as 1-d
] + [
    # axis tuples and None: one softmax over the joint elements
    _case(shape, axis, DERIVATIVE_LAYOUTS) for shape, axis in [
        ((), None), ((7,), None), ((7,), (0,)), ((5, 7), None), ((5, 7), (0, 1)),
        ((5, 7), (1, 0)), ((3, 4, 7), (0, 2)), ((3, 4, 7), (2, 1)), ((2, 3, 1, 5), (1, 3)),
        ((0, 7), None), ((7, 0), (0, 1)), ((2, 3, 4), ())]
]
# lengths around the vector widths and the 16 lanes of the sums
DERIVATIVE_SIMD_CASES = [((129,), 0), ((5, 7), -1), ((3, 4, 33), 1), ((2, 1000), -1),
                         ((257, 3), 0)]
# docs/api.rst, section Dtypes: "mixed float32/float64 computes in float64"
PRODUCT_VARIANTS = {"float32": (np.float32, np.float32), "float64": (np.float64, np.float64),
                    "mixed": (np.float32, np.float64)}

# The loss: its own shapes (many rows, classes along axis 0), every target
# kind, dtype and reduction.
CROSS_ENTROPY_CASES = [_case(shape, axis, ("C",)) for shape, axis in [
    ((), 0),             # 0-d logits: one row of one class
    ((7,), -1), ((7,), 0),
    ((3, 4, 5), -1), ((3, 4, 5), 1), ((3, 4, 5), -3),
    ((0, 5), -1),        # empty batch
    ((2, 0, 5), -1),     # empty batch, 3-d
    ((5, 33), -1),
    ((2, 1000), -1),
    ((1000,), -1),       # one row: split across the threads (the threads fixture)
    ((40, 3), 0),        # many rows, classes along axis 0
]]
REDUCTIONS = ["mean", "sum", "none"]
CROSS_ENTROPY_VARIANTS = {
    f"{kind}-{dtypes}-{reduction}": (kind, dtypes, reduction)
    for kind in ("index", "prob") for dtypes in CROSS_ENTROPY_DTYPES
    for reduction in REDUCTIONS if not (kind == "index" and dtypes == "mixed")}
# with weight, ignore_index (index targets) and label_smoothing (loss_options)
CROSS_ENTROPY_VARIANTS.update({
    f"{kind}-{dtypes}-{reduction}-options": (kind, dtypes, reduction, "options")
    for kind in ("index", "prob") for dtypes in ("float32", "float64")
    for reduction in REDUCTIONS})


def _cross_entropy_from_logits(x, other, axis):
    return [x, probability_target(x, other)]


FUNCTIONS = {f.name: f for f in [
    # docs/api.rst, section Forward: "exp(x - max) / sum(exp(x - max)) along axis"
    # (and section Masks: where=)
    Function("softmax", ("x",), "any", lambda x, other, axis: [x], _forward_check("softmax"),
             {"float32": (np.float32,), "float64": (np.float64,),
              "where-float32": (np.float32, WHERE)}, FORWARD_CASES,
             FORWARD_SIMD_CASES, ("float32", "float64", "where-float32")),
    # docs/api.rst, section Forward: "x - max - log(sum(exp(x - max))) along axis"
    Function("log_softmax", ("x",), "any", lambda x, other, axis: [x],
             _forward_check("log_softmax"),
             {"float32": (np.float32,), "float64": (np.float64,),
              "where-float64": (np.float64, WHERE)}, FORWARD_CASES,
             FORWARD_SIMD_CASES, ("float32", "float64", "where-float64")),
    # docs/api.rst, section logsumexp: "max + log(sum(b * exp(x - max)))"
    # along axis; the "b-" variants pass b >= 0 (make_inputs; a negative b:
    # tests/test_logsumexp.py)
    Function("logsumexp", ("x",), "any", lambda x, other, axis: [x], _logsumexp_check,
             {"float32": (np.float32,), "float64": (np.float64,),
              "b-float32": (np.float32, np.float32), "b-mixed": (np.float32, np.float64),
              "where-float32": (np.float32, WHERE),
              "where-b-float64": (np.float64, np.float64, WHERE)},
             FORWARD_CASES, FORWARD_SIMD_CASES,
             ("float32", "float64", "b-float32", "where-float32")),
    # docs/api.rst, section Derivatives: "J[..., i, j] = s_i (δ_ij − s_j)"
    Function("softmax_jacobian", ("s",), "any", lambda x, other, axis: [probs(x, axis)],
             _derivative_check("softmax_jacobian"),
             {"float32": (np.float32,), "float64": (np.float64,)}, DERIVATIVE_CASES,
             DERIVATIVE_SIMD_CASES),
    # docs/api.rst, section Derivatives: "s * (v - sum(s * v, axis, keepdims=True))"
    Function("softmax_jvp", ("s", "v"), "any", lambda x, v, axis: [probs(x, axis), v],
             _derivative_check("softmax_jvp"), PRODUCT_VARIANTS, DERIVATIVE_CASES,
             DERIVATIVE_SIMD_CASES),
    # docs/api.rst, section Derivatives: softmax_vjp is "the same product"
    Function("softmax_vjp", ("s", "g"), "any", lambda x, g, axis: [probs(x, axis), g],
             _derivative_check("softmax_vjp"), PRODUCT_VARIANTS, DERIVATIVE_CASES,
             DERIVATIVE_SIMD_CASES),
    # docs/api.rst, section Derivatives: "g - exp(logp) * sum(g, axis, keepdims=True)"
    Function("log_softmax_vjp", ("logp", "g"), "any",
             lambda x, g, axis: [logprobs(x, axis), g], _derivative_check("log_softmax_vjp"),
             PRODUCT_VARIANTS, DERIVATIVE_CASES, DERIVATIVE_SIMD_CASES),
    # docs/api.rst, section Fused loss: "Loss per row: -sum(target * log_softmax(logits))."
    Function("softmax_cross_entropy", ("logits", "target"), "int", _cross_entropy_from_logits,
             _cross_entropy_check, CROSS_ENTROPY_VARIANTS, CROSS_ENTROPY_CASES,
             [((6, 129), -1)], ("index-float64-none", "prob-float64-none"), has_out=False),
]}

ANY_AXIS_NAMES = [name for name, f in FUNCTIONS.items() if f.axes == "any"]
FORWARD_NAMES = ["softmax", "log_softmax"]
DERIVATIVE_NAMES = ["softmax_jacobian", "softmax_jvp", "softmax_vjp", "log_softmax_vjp"]
PRODUCT_NAMES = ["softmax_jvp", "softmax_vjp", "log_softmax_vjp"]
SINGLE_AXIS_NAMES = [name for name, f in FUNCTIONS.items() if f.axes == "int"]
WITH_OUT_NAMES = [name for name, f in FUNCTIONS.items() if f.has_out]
# those whose result has the shape of their inputs (out=x is possible)
SAME_SHAPE_NAMES = [name for name in WITH_OUT_NAMES
                    if FUNCTIONS[name].result_shape((2, 3)) == (2, 3)]

# the (fast, reference) pairs of the forward functions, for parametrize
FORWARD = [(fs.softmax, ref.softmax), (fs.log_softmax, ref.log_softmax)]
FORWARD_IDS = ["softmax", "log_softmax"]


def call(name, inputs, axis=-1, **kwargs):
    """FUNCTIONS[name].run: the results as a tuple of arrays (for the loss,
    reduction="none" and the gradient)."""
    return FUNCTIONS[name].run(inputs, axis, **kwargs)
