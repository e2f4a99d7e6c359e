"""softmax_jacobian, softmax_jvp, softmax_vjp and log_softmax_vjp (docs/api.rst,
section Derivatives).

One generic test compares every derivative with the plain-NumPy reference
evaluated in higher precision, over dtypes x shapes x axes x layouts x
threads; the ulp bounds are derived from the kernels' numerics next to the
registry below.  Then finite differences, identities, ``out=`` and errors.
"""

import tracemalloc
from collections import namedtuple

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax.testing import check_vjp, numerical_jacobian

from _helpers import assert_ulp_close, oracle, oracle_dtype

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
EPS = {F32: np.finfo(np.float32).eps, F64: np.finfo(np.float64).eps}


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

def _logits(rng, shape):
    # Spread 3: probabilities from ~1 down to ~1e-7 in the same row.
    return np.asarray(3.0 * rng.standard_normal(shape))


def _normal(rng, shape, dtype):
    return np.asarray(rng.standard_normal(shape)).astype(dtype)


def probs_and_vector(rng, shape, axis, dtypes):
    """s: a real softmax row (so a valid probability vector), v: normal."""
    s = ref.softmax(_logits(rng, shape).astype(dtypes[0]), axis)
    return s, _normal(rng, shape, dtypes[1])


def logprobs_and_vector(rng, shape, axis, dtypes):
    logp = ref.log_softmax(_logits(rng, shape).astype(dtypes[0]), axis)
    return logp, _normal(rng, shape, dtypes[1])


def probs_only(rng, shape, axis, dtypes):
    return (ref.softmax(_logits(rng, shape).astype(dtypes[0]), axis),)


# --------------------------------------------------------------------------
# Error bounds
# --------------------------------------------------------------------------
#
# Each bound is `ulps * eps * max(|expected|, floor)` per element (see
# _helpers.assert_ulp_close).  A relative bound alone would be wrong for the
# products: y_j = s_j v_j - s_j <s, v> is a difference of two terms and can
# be far smaller than either (v_j close to <s, v>).  Its rounding errors are
# proportional to the *terms*, not to y_j, so the floor is the magnitude of
# the terms, computed in high precision:
#
#   softmax_jvp/vjp:  terms_j = s_j * (|v_j| + sum_k |s_k v_k|)
#   log_softmax_vjp:  terms_j = |g_j| + exp(logp_j) * sum_k |g_k|
#
# Since |y_j| <= terms_j, a floor of the full terms makes the bound `ulps`
# ulp of the terms everywhere; a floor of a small fraction of them keeps it
# relative to |y_j| except where y_j is tiny next to its terms.
#
# softmax_jvp/vjp, float32 data: the kernel forms everything in double --
# s_k v_k is exact in double (24 + 24 bits), the blocked, Kahan-compensated
# dot errs by at most ~(FS_BLOCK + 4) eps64 of sum|s_k v_k|, the update
# s_j * (v_j - dot) adds 2 eps64 -- and rounds once to float32: 0.5 ulp.
# The float64 oracle (J @ v, J formed with 1 rounding per entry) errs by at
# most (n + 4) eps64 * terms.  For n <= 1000 all double-precision error is
# below 1300 * 2^-52 * terms = 2^-18.6 eps32 * terms, so
#     |err| <= 0.5 eps32 |y| + 2^-18.6 eps32 terms <= 1 eps32 max(|y|, 2^-16 terms):
# 1 ulp with a floor of 2^-16 terms -- in effect "correctly rounded result,
# within a factor 2", and a float32-accumulated dot would fail it.
#
# softmax_jvp/vjp, float64 data (and mixed float32/float64): all in double.
#   the update: v_j - dot and the product with s_j round once each: 1 ulp of |y|;
#   the products s_k v_k round: 0.5 ulp of sum|s v|  -> times s_j: <= 0.5 terms;
#   the dot is rounded to double before the subtraction: 0.5 eps s_j|dot| <= 0.5 terms;
#   the long-double oracle: n eps_ld <= 1000 * 2^-63 < 0.5 eps64 of terms;
#   the blocked sum itself: its lanes sum <= FS_BLOCK/lanes terms each and the
#   blocks are added with Kahan compensation; for random-sign terms the lane
#   partial sums stay far below sum|s v| (they grow like sqrt(k), not k),
#   which keeps this below 1 ulp of sum|s v| (at most 1 ulp of terms).
# Total 1 |y| + 2.5 terms (+ < 1) <= 4 ulp of max(|y|, terms) = of terms.
# (Measured over all the cases below on every SIMD path: at most 2.0 ulp;
# float32 0.49, log_softmax_vjp 0.67 / 1.3, softmax_jacobian 0.75.)
#
# log_softmax_vjp computes exp(logp_j) with the kernels' own polynomial exp
# in the data's precision (float32 for float32 data): within 1 ulp (the
# truncation error is below 0.1 ulp and Horner rounding adds the rest; 0.86
# ulp measured over 2e6 arguments in [-30, 0] on every SIMD path).
#   float32: 1 ulp of exp(logp_j) * |sum g| <= 1 eps32 terms, plus the final
#   rounding, 0.5 ulp of |y| (the double-precision parts are negligible):
#   1.5 ulp of max(|y|, terms).
#   float64: exp 1 + the product p_j * gsum 0.5 + gsum's own rounding 0.5 +
#   the subtraction 0.5 ulp of |y| + the blocked sum of g (< 1, as above):
#   <= 3.5, so 4 ulp of max(|y|, terms).
#
# softmax_jacobian: the kernel's J_ij = -s_i s_j is one rounding (0.5 ulp),
# the diagonal s_i (1 - s_i) two (<= 1 ulp): no cancellation, 1 ulp of |J_ij|.
# But the oracle forms diag(s) - s sᵀ, and on the diagonal s_i - s_i² cancels
# when s_i is close to 1 (e.g. s_i = 1 - 1e-6: the result is 1e6 times smaller
# than its terms).  Its error is relative to terms_ij = s_i (δ_ij + s_j):
# <= eps_ld terms = 2^-11 eps64 terms for float64 data (eps64 = 2^-29 eps32
# for float32).  So |err| <= 1 eps |J| + 2^-11 eps terms
#                        <= 1.5 eps max(|J|, 2^-10 terms):
# 1.5 ulp with a floor of 2^-10 terms (the extra 0.5 ulp is the oracle's).


def jvp_terms(s, v, axis):
    return s * (np.abs(v) + np.sum(np.abs(s * v), axis=axis, keepdims=True))


def log_vjp_terms(logp, g, axis):
    return np.abs(g) + np.exp(logp) * np.sum(np.abs(g), axis=axis, keepdims=True)


def jacobian_terms(s, axis):
    rows = np.moveaxis(s, axis, -1)
    return rows[..., :, None] * (np.eye(rows.shape[-1]) + rows[..., None, :])


Derivative = namedtuple("Derivative", "name fast ref make_inputs terms bounds")
# bounds: dtype -> (ulps, floor scale relative to the terms)

REGISTRY = [
    # docs/api.rst, section Derivatives: "fs.softmax_jvp(s, v, axis=-1, *, out=None) | shape of s:
    #          s * (v - sum(s * v, axis, keepdims=True))"
    Derivative("softmax_jvp", fs.softmax_jvp, ref.softmax_jvp, probs_and_vector,
               jvp_terms, {F32: (1, 2.0 ** -16), F64: (4, 1.0)}),
    # docs/api.rst, section Derivatives:
    # "fs.softmax_vjp(s, g, axis=-1, *, out=None) | the same product"
    Derivative("softmax_vjp", fs.softmax_vjp, ref.softmax_vjp, probs_and_vector,
               jvp_terms, {F32: (1, 2.0 ** -16), F64: (4, 1.0)}),
    # docs/api.rst, section Derivatives: "fs.log_softmax_vjp(logp, g, axis=-1, *, out=None) |
    #          g - exp(logp) * sum(g, axis, keepdims=True)"
    Derivative("log_softmax_vjp", fs.log_softmax_vjp, ref.log_softmax_vjp,
               logprobs_and_vector, log_vjp_terms, {F32: (1.5, 1.0), F64: (4, 1.0)}),
    # docs/api.rst, section Derivatives: "J[..., i, j] = s_i (δ_ij − s_j)"
    Derivative("softmax_jacobian", fs.softmax_jacobian, ref.softmax_jacobian, probs_only,
               jacobian_terms, {F32: (1.5, 2.0 ** -10), F64: (1.5, 2.0 ** -10)}),
]
PRODUCTS = [d for d in REGISTRY if d.name != "softmax_jacobian"]

# docs/api.rst, section Dtypes: "Mixed float32/float64 computes in float64"
DTYPE_SPECS = {
    "float32": (np.float32, np.float32),
    "float64": (np.float64, np.float64),
    "mixed": (np.float32, np.float64),
}


def _arity(deriv):
    return 1 if deriv.name == "softmax_jacobian" else 2


FUNC_DTYPES = [
    pytest.param(d, spec[:_arity(d)], id=f"{d.name}-{name}")
    for d in REGISTRY for name, spec in DTYPE_SPECS.items()
    if not (name == "mixed" and _arity(d) == 1)
]

SHAPES = [
    (),            # 0-d: a one-element softmax
    (1,),          # n = 1
    (7,), (33,), (1000,),
    (0,),          # empty axis
    (5, 7),
    (0, 7),        # empty batch (axis -1), empty axis (axis 0)
    (7, 0),        # empty axis (axis -1), empty batch (axis 0)
    (6, 1),        # n = 1 with a batch (axis -1)
    (3, 33),
    (3, 4, 7),
    (2, 3, 1, 5),
]
SHAPE_AXES = [
    pytest.param(shape, axis, id=f"{shape}-axis{axis}")
    for shape in SHAPES
    for axis in range(-max(len(shape), 1), max(len(shape), 1))  # 0-d counts as 1-d
]


# --------------------------------------------------------------------------
# Layouts: the same values in differently strided arrays
# --------------------------------------------------------------------------

def _c(a):
    return np.ascontiguousarray(a)


def _fortran(a):
    return np.asfortranarray(a)


def _transposed(a):
    """A view with the first axis of a C array moved last."""
    if a.ndim < 2:
        return a.copy()
    base = np.ascontiguousarray(np.moveaxis(a, -1, 0))
    return np.moveaxis(base, 0, -1)


def _strided(a):
    """Every other element, and the last axis reversed (negative stride)."""
    if a.ndim == 0:
        return a.copy()
    base = np.zeros([2 * d + 1 for d in a.shape], a.dtype)
    view = base[(slice(1, None, 2),) * (a.ndim - 1) + (slice(-2, None, -2),)]
    view[...] = a
    return view


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


LAYOUTS = {"C": _c, "F": _fortran, "transposed": _transposed, "strided": _strided,
           "readonly": _readonly}


# --------------------------------------------------------------------------
# The check against the reference
# --------------------------------------------------------------------------

def assert_matches_reference(deriv, inputs, axis):
    before = [a.copy() for a in inputs]
    result = deriv.fast(*inputs, axis=axis)
    dtype = np.result_type(*inputs)
    expected = oracle(deriv.ref, *inputs, axis=axis)

    assert isinstance(result, np.ndarray)
    assert result.dtype == dtype
    assert result.shape == expected.shape
    ulps, floor_scale = deriv.bounds[dtype]
    assert np.isfinite(expected).all()
    high = [np.atleast_1d(np.asarray(a, oracle_dtype(dtype))) for a in inputs]
    floor = floor_scale * deriv.terms(*high, axis=axis).reshape(expected.shape)
    assert_ulp_close(result, expected, dtype, ulps, floor)
    for a, b in zip(inputs, before):  # inputs are never written
        np.testing.assert_array_equal(a, b)


# docs/api.rst, section Derivatives:
# "Let s = fs.softmax(x, axis) and n = x.shape[axis]. For one row the
#          Jacobian is J = diag(s) - s sᵀ" (the reference forms exactly that)
# docs/api.rst, section Derivatives: "J v = s * (v - <s, v>)"
# docs/api.rst, section Dtypes: "Mixed float32/float64 computes in float64"
# (and the four table rows quoted at REGISTRY)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, axis", SHAPE_AXES)
@pytest.mark.parametrize("deriv, dtypes", FUNC_DTYPES)
def test_matches_reference(deriv, dtypes, shape, axis, layout, threads, rng):
    inputs = [LAYOUTS[layout](a) for a in deriv.make_inputs(rng, shape, axis, dtypes)]
    assert_matches_reference(deriv, inputs, axis)


@pytest.mark.parametrize("shape, axis", [((129,), 0), ((5, 7), -1), ((3, 4, 33), 1),
                                         ((2, 1000), -1), ((257, 3), 0)])
@pytest.mark.parametrize("deriv, dtypes", [p for p in FUNC_DTYPES if "mixed" not in p.id])
def test_matches_reference_every_simd_path(deriv, dtypes, shape, axis, simd_path, rng):
    # Lengths around the vector width and FS_BLOCK (128) exercise the SIMD
    # remainder loops and the block boundaries of each instruction set.
    inputs = deriv.make_inputs(rng, shape, axis, dtypes)
    assert_matches_reference(deriv, inputs, axis)


# --------------------------------------------------------------------------
# Finite differences (float64)
# --------------------------------------------------------------------------
# Central differences agree with a correct float64 derivative to ~1e-10
# (fastsoftmax.testing.DEFAULT_RTOL explains the budget); 1e-8 is two
# orders above that noise and five below a 1 % mistake on these O(0.1)
# derivatives.  check_vjp itself raises above its default 1e-6.
FD_TOL = 1e-8
FD_CASES = [((7,), -1), ((7,), 0), ((4, 3, 5), 1), ((3, 6), 0), ((2, 3, 4), -1)]


@pytest.mark.parametrize("shape, axis", FD_CASES)
def test_softmax_vjp_is_the_vjp_of_softmax(shape, axis, rng):
    # docs/api.rst, section Derivatives:
    # "fs.softmax_vjp(s, g, ...) | the same product (J is symmetric);
    #          the name backprop code looks for"
    x, g = _logits(rng, shape), rng.standard_normal(shape)
    err = check_vjp(lambda x: fs.softmax(x, axis),
                    lambda x, g: fs.softmax_vjp(fs.softmax(x, axis), g, axis), x, g)
    assert err < FD_TOL


@pytest.mark.parametrize("shape, axis", FD_CASES)
def test_log_softmax_vjp_is_the_vjp_of_log_softmax(shape, axis, rng):
    # docs/api.rst, section Derivatives: "fs.log_softmax_vjp(logp, g, axis=-1, *, out=None) |
    #          g - exp(logp) * sum(g, axis, keepdims=True)"
    x, g = _logits(rng, shape), rng.standard_normal(shape)
    err = check_vjp(lambda x: fs.log_softmax(x, axis),
                    lambda x, g: fs.log_softmax_vjp(fs.log_softmax(x, axis), g, axis), x, g)
    assert err < FD_TOL


@pytest.mark.parametrize("shape, axis", FD_CASES)
def test_softmax_jvp_is_the_jvp_of_softmax(shape, axis, rng):
    # docs/api.rst, section Derivatives: "J v = s * (v - <s, v>)"
    x, v = _logits(rng, shape), rng.standard_normal(shape)
    jac = numerical_jacobian(lambda x: fs.softmax(x, axis), x)  # f.shape + x.shape
    numerical = np.tensordot(jac, v, axes=x.ndim)
    np.testing.assert_allclose(fs.softmax_jvp(fs.softmax(x, axis), v, axis), numerical,
                               rtol=0, atol=FD_TOL)


def test_softmax_jacobian_vs_finite_differences_1d(rng):
    # docs/api.rst, section Derivatives: "For one row the Jacobian is J = diag(s) - s sᵀ"
    x = _logits(rng, (6,))
    numerical = numerical_jacobian(fs.softmax, x)
    np.testing.assert_allclose(fs.softmax_jacobian(fs.softmax(x)), numerical,
                               rtol=0, atol=FD_TOL)


def test_softmax_jacobian_vs_finite_differences_batched_non_last_axis(rng):
    # docs/api.rst, section Derivatives:
    # "shape batch + (n, n): s with axis moved last, plus one more n"
    x = _logits(rng, (3, 5, 2))  # softmax along axis 1: batch (3, 2), n = 5
    numerical = numerical_jacobian(lambda x: fs.softmax(x, axis=1), x)  # (3,5,2,3,5,2)
    jac = fs.softmax_jacobian(fs.softmax(x, axis=1), axis=1)
    assert jac.shape == (3, 2, 5, 5)
    for a in range(3):
        for c in range(2):
            np.testing.assert_allclose(jac[a, c], numerical[a, :, c, a, :, c],
                                       rtol=0, atol=FD_TOL)
    # and the rows do not see each other: the cross-row blocks are zero
    assert np.abs(numerical[0, :, 0, 1, :, 0]).max() < FD_TOL


# --------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((9,), -1), ((4, 6, 3), 1), ((5, 2), 0)])
def test_jacobian_is_symmetric(dtype, shape, axis, rng):
    # docs/api.rst, section Derivatives: "J = diag(s) - s sᵀ (symmetric)"
    s = ref.softmax(_logits(rng, shape).astype(dtype), axis)
    jac = fs.softmax_jacobian(s, axis)
    # -s_i * s_j and -s_j * s_i are the same rounded product: exactly symmetric
    np.testing.assert_array_equal(jac, np.swapaxes(jac, -1, -2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((9,), -1), ((4, 6, 3), 1), ((5, 33), -1)])
def test_jacobian_rows_sum_to_zero(dtype, shape, axis, rng):
    # docs/api.rst, section Derivatives:
    # "J[..., i, j] = s_i (δ_ij − s_j)": row i sums to s_i (1 - sum(s)),
    # which is 0 for a probability vector.
    s = ref.softmax(_logits(rng, shape).astype(dtype), axis)
    jac = fs.softmax_jacobian(s, axis)
    hp = oracle_dtype(dtype)
    s_rows = np.moveaxis(s, axis, -1).astype(hp)
    row_sums = jac.astype(hp).sum(-1)  # summed in high precision
    exact = s_rows * (1 - s_rows.sum(-1, keepdims=True))  # 0 up to the rounding of s
    # every entry carries at most 1 ulp (see the bounds above), so the sum of
    # the rounded entries is off by at most eps * sum_j |J_ij|
    bound = EPS[np.dtype(dtype)] * np.abs(jac.astype(hp)).sum(-1)
    assert (np.abs(row_sums - exact) <= bound).all()
    # and in absolute terms: a few ulp of s_i (the rows of s sum to 1 within ulps)
    assert (np.abs(row_sums) <= 8 * EPS[np.dtype(dtype)] * s_rows).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jacobian_rows_sum_exactly_to_zero_for_exact_probabilities(dtype):
    # docs/api.rst, section Derivatives: "J[..., i, j] = s_i (δ_ij − s_j)"; with binary fractions
    # every entry is exact, so the rows sum to exactly 0.
    s = np.array([0.25, 0.25, 0.5], dtype)
    jac = fs.softmax_jacobian(s)
    expected = np.array([[3, -1, -2], [-1, 3, -2], [-2, -2, 4]], dtype) / 16
    np.testing.assert_array_equal(jac, expected)
    np.testing.assert_array_equal(jac.sum(-1), 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((9,), -1), ((4, 6, 3), 1), ((3, 4, 5), 0),
                                         ((2, 3, 33), -1)])
def test_jacobian_times_v_is_jvp(dtype, shape, axis, rng):
    # docs/api.rst, section Derivatives: "the Jacobian-vector product ...: J v = s * (v - <s, v>)"
    # docs/api.rst, section Derivatives: "fused: no Jacobian is formed" -- yet the same numbers.
    s = ref.softmax(_logits(rng, shape).astype(dtype), axis)
    v = rng.standard_normal(shape).astype(dtype)
    hp = oracle_dtype(dtype)
    jac = fs.softmax_jacobian(s, axis).astype(hp)
    jv = np.einsum("...ij,...j->...i", jac, np.moveaxis(v, axis, -1).astype(hp))
    jv = np.moveaxis(jv, -1, axis)
    # J's entries carry <= 1 ulp each, so J @ v (summed in high precision) is
    # off by <= 1 ulp of terms; the JVP by its bound above (1 for float32 with
    # a tiny floor, 4 for float64): together 2 resp. 5 ulp of max(|y|, terms).
    terms = jvp_terms(s.astype(hp), v.astype(hp), axis)
    ulps = {F32: 2, F64: 5}[np.dtype(dtype)]
    assert_ulp_close(fs.softmax_jvp(s, v, axis), jv, dtype, ulps, terms)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((9,), -1), ((4, 1000), -1), ((6, 5, 4), 1)])
def test_jvp_of_ones_is_zero(dtype, shape, axis, rng):
    # docs/api.rst, section Derivatives: "J v = s * (v - <s, v>)": v = 1 gives s * (1 - sum(s)) = 0
    # (softmax is invariant to adding a constant to every logit).
    dtype = np.dtype(dtype)
    s = fs.softmax(_logits(rng, shape).astype(dtype), axis)
    result = fs.softmax_jvp(s, np.ones(shape, dtype), axis)
    hp = oracle_dtype(dtype)
    defect = np.abs(1 - s.astype(hp).sum(axis, keepdims=True))  # sum(s) is 1 within ulps
    # The exact value is s_j * (1 - sum(s)); the JVP's bound above applies with
    # terms_j = s_j (1 + sum(s)) ~= 2 s_j: float32 is within 1 ulp of the exact
    # value (|y| <= s * defect), float64 within 4 ulp of 2 s_j.
    ulps = {F32: 1, F64: 8}[dtype]
    bound = s.astype(hp) * (defect * (1 + EPS[dtype]) + ulps * EPS[dtype])
    assert (np.abs(result.astype(hp)) <= bound).all()
    assert np.abs(result).max() <= 16 * EPS[dtype]  # "== 0 within ulps"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jvp_of_ones_is_exactly_zero_for_exact_probabilities(dtype):
    # docs/api.rst, section Derivatives: "J v = s * (v - <s, v>)", with <s, 1> = 1 exactly here
    s = np.array([[0.125, 0.375, 0.5], [0.5, 0.25, 0.25]], dtype)
    np.testing.assert_array_equal(fs.softmax_jvp(s, np.ones_like(s)), 0)


@pytest.mark.parametrize("dtypes", DTYPE_SPECS.values(), ids=list(DTYPE_SPECS))
@pytest.mark.parametrize("shape, axis", [((9,), -1), ((4, 6, 3), 1), ((5, 33), 0),
                                         ((3, 1000), -1)])
def test_jvp_equals_vjp_exactly(dtypes, shape, axis, threads, rng):
    # docs/api.rst, section Derivatives:
    # "the Jacobian-vector product and the vector-Jacobian product are the same"
    # docs/api.rst, section Derivatives: "fs.softmax_vjp ... | the same product (J is symmetric)"
    s, v = probs_and_vector(rng, shape, axis, dtypes)
    np.testing.assert_array_equal(fs.softmax_vjp(s, v, axis), fs.softmax_jvp(s, v, axis))


@pytest.mark.parametrize("shape, axis, expected_shape", [
    ((2, 5, 3), 1, (2, 3, 5, 5)),
    ((4, 2, 3), 0, (2, 3, 4, 4)),
    ((4, 2, 3), -3, (2, 3, 4, 4)),
    ((2, 3, 4), -1, (2, 3, 4, 4)),
    ((6,), 0, (6, 6)),
    ((), 0, (1, 1)),
    ((0, 3), 0, (3, 0, 0)),
    ((0, 3), 1, (0, 3, 3)),
])
def test_jacobian_shape_moves_axis_last(shape, axis, expected_shape, rng):
    # docs/api.rst, section Derivatives:
    # "shape batch + (n, n): s with axis moved last, plus one more n"
    # docs/api.rst, section Derivatives: "J[..., i, j] = s_i (δ_ij − s_j)"
    s = ref.softmax(_logits(rng, shape), axis)
    jac = fs.softmax_jacobian(s, axis)
    assert jac.shape == expected_shape
    rows = np.moveaxis(np.atleast_1d(s), axis, -1)
    n = rows.shape[-1]
    expected = rows[..., :, None] * (np.eye(n) - rows[..., None, :])
    assert_ulp_close(jac, expected, np.float64, 1)


def test_jvp_forms_no_jacobian():
    # docs/api.rst, section Derivatives:
    # "fused: no Jacobian is formed" -- a 2e6-long row would need a
    # 32 TB Jacobian; the fused product needs memory of the order of the row.
    n = 2_000_000
    s = np.full(n, 1.0 / n)
    v = np.linspace(-1.0, 1.0, n)
    tracemalloc.start()
    try:
        result = fs.softmax_jvp(s, v)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * s.nbytes  # the result is 1 x s.nbytes
    np.testing.assert_allclose(result, s * (v - np.dot(s, v)), rtol=0, atol=1e-20)


# --------------------------------------------------------------------------
# dtype rules
# --------------------------------------------------------------------------

@pytest.mark.parametrize("deriv", PRODUCTS, ids=lambda d: d.name)
@pytest.mark.parametrize("dtypes, result", [
    ((np.float32, np.float64), np.float64),
    ((np.float64, np.float32), np.float64),
    ((np.float16, np.float16), np.float16),
    ((np.float16, np.float32), np.float32),
    ((np.float16, np.float64), np.float64),
    ((np.int64, np.int64), np.float64),
    ((np.int32, np.float32), np.float64),
    ((np.bool_, np.float64), np.float64),
])
def test_dtype_rules(deriv, dtypes, result, rng):
    # docs/api.rst, section Dtypes: "Mixed float32/float64 computes in float64; otherwise the
    #          forward dtype rules apply."
    s = fs.softmax(_logits(rng, (4, 5))) if deriv.name != "log_softmax_vjp" else \
        fs.log_softmax(_logits(rng, (4, 5)))
    v = rng.standard_normal((4, 5))
    a = s.astype(dtypes[0]) if np.dtype(dtypes[0]).kind == "f" else \
        rng.integers(0, 2, (4, 5)).astype(dtypes[0])
    b = (3 * v).astype(dtypes[1])
    out = deriv.fast(a, b)
    assert out.dtype == result
    # computed in the computation dtype (float32 for float16, float64 for the
    # rest) and then rounded: the same numbers as converting first
    compute = np.float32 if np.dtype(result).itemsize <= 4 else np.float64
    expected = deriv.fast(a.astype(compute), b.astype(compute)).astype(result)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype, result", [(np.float16, np.float16), (np.int64, np.float64),
                                           (np.float32, np.float32), (np.bool_, np.float64)])
def test_jacobian_dtype_rules(dtype, result):
    # docs/api.rst, section Dtypes: "otherwise the forward dtype rules apply"
    s = np.array([0.25, 0.75]) if np.dtype(dtype).kind == "f" else np.array([1, 0])
    jac = fs.softmax_jacobian(s.astype(dtype))
    assert jac.dtype == result
    s_c = s.astype(np.float32 if np.dtype(result).itemsize <= 4 else np.float64)
    np.testing.assert_array_equal(jac, fs.softmax_jacobian(s_c).astype(result))


def test_array_likes_are_accepted():
    # (forward rules: lists and scalars are taken as np.asarray takes them)
    np.testing.assert_allclose(fs.softmax_jvp([0.5, 0.5], [1.0, 0.0]), [0.25, -0.25])
    np.testing.assert_array_equal(fs.softmax_jvp(1.0, 3.0), 0.0)
    np.testing.assert_array_equal(fs.softmax_jacobian(1.0), [[0.0]])


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------

def _product_inputs(deriv, rng, shape=(4, 6), axis=-1, dtype=np.float64):
    return deriv.make_inputs(rng, shape, axis, (dtype, dtype))


OUT_CASES = [((4, 6), -1), ((4, 6), 0), ((3, 4, 5), 1)]


@pytest.mark.parametrize("deriv", REGISTRY, ids=lambda d: d.name)
def test_out_is_returned(deriv, rng):
    # (forward rules) "With out= the function returns out itself."
    inputs = deriv.make_inputs(rng, (4, 6), -1, (np.float64, np.float64))
    expected = deriv.fast(*inputs)
    out = np.full(expected.shape, -7.25)
    assert deriv.fast(*inputs, out=out) is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("which", [0, 1], ids=["out=first", "out=second"])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("shape, axis", OUT_CASES)
@pytest.mark.parametrize("deriv", PRODUCTS, ids=lambda d: d.name)
def test_out_may_be_either_input(deriv, shape, axis, layout, which, threads, rng):
    # docs/api.rst, section out=: "`out` may be the same array as either input."
    inputs = [LAYOUTS[layout](a) for a in deriv.make_inputs(rng, shape, axis,
                                                            (np.float64, np.float64))]
    expected = deriv.fast(*inputs, axis=axis)
    target = inputs[which]
    assert deriv.fast(*inputs, axis=axis, out=target) is target
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("deriv", PRODUCTS, ids=lambda d: d.name)
def test_out_overlapping_an_input_in_another_layout(deriv, rng):
    # NumPy semantics: the inputs are read as they were before the call,
    # even when out is a reversed view of one of them.
    s, v = deriv.make_inputs(rng, (3, 8), -1, (np.float64, np.float64))
    expected = deriv.fast(s, v)
    deriv.fast(s, v, out=v[:, ::-1])
    np.testing.assert_array_equal(v[:, ::-1], expected)


OUT_LAYOUTS = {
    "C": lambda shape, dt: np.empty(shape, dt),
    "F": lambda shape, dt: np.empty(shape, dt, order="F"),
    "strided": lambda shape, dt: _strided(np.empty(shape, dt)),
    "transposed": lambda shape, dt: _transposed(np.empty(shape, dt)),
}


@pytest.mark.parametrize("out_layout", OUT_LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape, axis", OUT_CASES)
@pytest.mark.parametrize("deriv", REGISTRY, ids=lambda d: d.name)
def test_out_any_strides(deriv, shape, axis, dtype, out_layout, threads, rng):
    # (forward rules) "`out`: an ndarray of the result's shape and dtype; any strides."
    inputs = deriv.make_inputs(rng, shape, axis, (dtype, dtype))
    expected = deriv.fast(*inputs, axis=axis)
    out = OUT_LAYOUTS[out_layout](expected.shape, expected.dtype)
    out[...] = -7.25
    assert deriv.fast(*inputs, axis=axis, out=out) is out
    np.testing.assert_array_equal(out, expected)


def _bad_out(kind, shape):
    """An out that is wrong in one way, filled with a sentinel."""
    if kind == "shape":
        return np.full(shape[::-1] + (1,), -7.25)
    if kind == "shape+1":
        return np.full(shape[:-1] + (shape[-1] + 1,), -7.25)
    if kind == "dtype":
        return np.full(shape, -7.25, np.float32)
    if kind == "byteswapped":
        return np.full(shape, -7.25, np.dtype(np.float64).newbyteorder())
    if kind == "readonly":
        out = np.full(shape, -7.25)
        out.flags.writeable = False
        return out
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, error", [("shape", ValueError), ("shape+1", ValueError),
                                         ("dtype", TypeError), ("byteswapped", TypeError),
                                         ("readonly", ValueError)])
@pytest.mark.parametrize("deriv", REGISTRY, ids=lambda d: d.name)
def test_bad_out_is_rejected_before_writing(deriv, kind, error, rng):
    # (forward rules) "A wrong shape or dtype, or a read-only out, raises
    # ValueError/TypeError before anything is written."
    inputs = deriv.make_inputs(rng, (4, 6), -1, (np.float64, np.float64))
    bad_out = _bad_out(kind, deriv.fast(*inputs).shape)
    sentinel = bad_out.copy()
    with pytest.raises(error):
        deriv.fast(*inputs, out=bad_out)
    np.testing.assert_array_equal(bad_out, sentinel)


@pytest.mark.parametrize("deriv", PRODUCTS, ids=lambda d: d.name)
def test_bad_arguments_with_valid_out_write_nothing(deriv, rng):
    # (forward rules) errors are raised "before anything is written"
    a, b = deriv.make_inputs(rng, (4, 6), -1, (np.float64, np.float64))
    out = np.full((4, 6), -7.25)
    with pytest.raises(ValueError):
        deriv.fast(a, b[:, :5], out=out)
    with pytest.raises(AxisError):
        deriv.fast(a, b, axis=2, out=out)
    with pytest.raises(TypeError):
        deriv.fast(a, b, axis=(0, 1), out=out)
    with pytest.raises(TypeError):
        deriv.fast(a, b.astype(complex), out=out)
    np.testing.assert_array_equal(out, -7.25)


def test_jacobian_out_not_an_ndarray_is_rejected():
    with pytest.raises(TypeError):
        fs.softmax_jacobian(np.array([0.5, 0.5]), out=[[0.0, 0.0], [0.0, 0.0]])


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shape_a, shape_b", [
    ((3, 4), (3, 5)),
    ((3, 4), (1, 4)),  # broadcastable, still rejected: no broadcasting
    ((4,), (3, 4)),
    ((), (1,)),
])
@pytest.mark.parametrize("deriv", PRODUCTS, ids=lambda d: d.name)
def test_shape_mismatch_names_both_shapes(deriv, shape_a, shape_b):
    # docs/api.rst, section Derivatives:
    # "`s` and `v`/`g` must have the same shape (no broadcasting),
    #          else `ValueError` naming both shapes."
    with pytest.raises(ValueError) as excinfo:
        deriv.fast(np.full(shape_a, 0.5), np.ones(shape_b))
    message = str(excinfo.value)
    assert str(shape_a) in message and str(shape_b) in message


@pytest.mark.parametrize("axis", [(0,), (0, 1), None, ()])
@pytest.mark.parametrize("deriv", REGISTRY, ids=lambda d: d.name)
def test_axis_must_be_a_single_int(deriv, axis, rng):
    # docs/api.rst, section Derivatives: the derivatives take a single int axis.
    inputs = deriv.make_inputs(rng, (3, 4), -1, (np.float64, np.float64))
    with pytest.raises(TypeError):
        deriv.fast(*inputs, axis=axis)


@pytest.mark.parametrize("axis", [2, -3, 100])
@pytest.mark.parametrize("deriv", REGISTRY, ids=lambda d: d.name)
def test_out_of_range_axis(deriv, axis, rng):
    # (forward rules) "An out-of-range ... axis raises numpy.exceptions.AxisError"
    inputs = deriv.make_inputs(rng, (3, 4), -1, (np.float64, np.float64))
    with pytest.raises(AxisError):
        deriv.fast(*inputs, axis=axis)


@pytest.mark.parametrize("axis", [np.int64(0), np.int32(-2)])
@pytest.mark.parametrize("deriv", REGISTRY, ids=lambda d: d.name)
def test_numpy_integer_axis(deriv, axis, rng):
    # "a single int": NumPy integers are ints too
    inputs = deriv.make_inputs(rng, (3, 4), 0, (np.float64, np.float64))
    np.testing.assert_array_equal(deriv.fast(*inputs, axis=axis),
                                  deriv.fast(*inputs, axis=int(axis)))


BAD_ARRAYS = [
    pytest.param(np.full((2, 3), 0.5 + 0j), "complex128", id="complex"),
    pytest.param(np.full((2, 3), 0.5, dtype=object), "object", id="object"),
    pytest.param(np.full((2, 3), "a"), "<U1", id="str"),
]


@pytest.mark.parametrize("bad, dtype_name", BAD_ARRAYS)
@pytest.mark.parametrize("position", [0, 1])
@pytest.mark.parametrize("deriv", PRODUCTS, ids=lambda d: d.name)
def test_bad_dtypes(deriv, position, bad, dtype_name):
    # docs/api.rst, section Dtypes: "otherwise the forward dtype rules apply" -- "Complex, object,
    # string inputs raise TypeError with a message that names the dtype."
    args = [np.full((2, 3), 0.5), np.ones((2, 3))]
    args[position] = bad
    with pytest.raises(TypeError, match=dtype_name.lstrip("<")):
        deriv.fast(*args)


@pytest.mark.parametrize("bad, dtype_name", BAD_ARRAYS)
def test_jacobian_bad_dtypes(bad, dtype_name):
    with pytest.raises(TypeError, match=dtype_name.lstrip("<")):
        fs.softmax_jacobian(bad)
