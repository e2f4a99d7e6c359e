"""softmax_jacobian, softmax_jvp, softmax_vjp and log_softmax_vjp (docs/api.rst,
section Derivatives).

test_equivalence.py compares every derivative with the plain-NumPy
reference evaluated in higher precision, over dtypes x shapes x axes x
layouts x threads, within the budgets derived in _registry.py.  Here:
finite differences, identities, dtype rules, ``out=`` and errors.
"""

import tracemalloc

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax.testing import check_vjp, numerical_jacobian

from _helpers import laid_out
from _registry import (DERIVATIVE_BOUNDS, EPS, F32, F64, FUNCTIONS, PRODUCT_NAMES,
                       PRODUCT_VARIANTS, assert_ulp_close, jvp_terms, logits, oracle_dtype)

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

DERIVATIVES = [FUNCTIONS[name] for name in DERIVATIVE_BOUNDS]
PRODUCTS = [FUNCTIONS[name] for name in PRODUCT_NAMES]


def make_inputs(deriv, rng, shape=(4, 6), axis=-1, dtype=np.float64):
    """The derivative's inputs (s or logp of logits of spread 3, and v or g)."""
    return deriv.make_inputs(rng, shape, axis, (dtype, dtype))


# --------------------------------------------------------------------------
# Finite differences (float64)
# --------------------------------------------------------------------------
# Central differences agree with a correct float64 derivative to ~1e-10
# (fastsoftmax.testing.DEFAULT_RTOL explains the budget); 1e-8 is two
# orders above that noise and five below a 1 % mistake on these O(0.1)
# derivatives.  check_vjp itself raises above its default 1e-6.
FD_TOL = 1e-8
FD_CASES = [((7,), -1), ((7,), 0), ((4, 3, 5), 1), ((3, 6), 0), ((2, 3, 4), -1)]


# docs/api.rst, section Derivatives: "fs.softmax_vjp(s, g, ...) | the same
# product (J is symmetric); the name backprop code looks for" and
# "fs.log_softmax_vjp(logp, g, axis=-1, *, out=None) | g - exp(logp) * sum(g,
# axis, keepdims=True)"
@pytest.mark.parametrize("shape, axis", FD_CASES)
@pytest.mark.parametrize("forward, vjp", [(fs.softmax, fs.softmax_vjp),
                                          (fs.log_softmax, fs.log_softmax_vjp)],
                         ids=["softmax_vjp", "log_softmax_vjp"])
def test_vjp_is_the_vjp_of_its_forward_function(forward, vjp, shape, axis, rng):
    x, g = logits(rng, shape), rng.standard_normal(shape)
    err = check_vjp(lambda x: forward(x, axis), lambda x, g: vjp(forward(x, axis), g, axis),
                    x, g)
    assert err < FD_TOL


@pytest.mark.parametrize("shape, axis", FD_CASES)
def test_softmax_jvp_is_the_jvp_of_softmax(shape, axis, rng):
    # docs/api.rst, section Derivatives: "J v = s * (v - <s, v>)"
    x, v = logits(rng, shape), rng.standard_normal(shape)
    jac = numerical_jacobian(lambda x: fs.softmax(x, axis), x)  # f.shape + x.shape
    numerical = np.tensordot(jac, v, axes=x.ndim)
    np.testing.assert_allclose(fs.softmax_jvp(fs.softmax(x, axis), v, axis), numerical,
                               rtol=0, atol=FD_TOL)


def test_softmax_jacobian_vs_finite_differences_1d(rng):
    # docs/api.rst, section Derivatives: "For one row the Jacobian is J = diag(s) - s sᵀ"
    x = logits(rng, (6,))
    numerical = numerical_jacobian(fs.softmax, x)
    np.testing.assert_allclose(fs.softmax_jacobian(fs.softmax(x)), numerical,
                               rtol=0, atol=FD_TOL)


def test_softmax_jacobian_vs_finite_differences_batched_non_last_axis(rng):
    # docs/api.rst, section Derivatives:
    # "shape batch + (n, n): s with axis moved last, plus one more n"
    x = logits(rng, (3, 5, 2))  # softmax along axis 1: batch (3, 2), n = 5
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
    s = ref.softmax(logits(rng, shape).astype(dtype), axis)
    jac = fs.softmax_jacobian(s, axis)
    # -s_i * s_j and -s_j * s_i are the same rounded product: exactly symmetric
    np.testing.assert_array_equal(jac, np.swapaxes(jac, -1, -2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((9,), -1), ((4, 6, 3), 1), ((5, 33), -1)])
def test_jacobian_rows_sum_to_zero(dtype, shape, axis, rng):
    # docs/api.rst, section Derivatives:
    # "J[..., i, j] = s_i (δ_ij − s_j)": row i sums to s_i (1 - sum(s)),
    # which is 0 for a probability vector.
    s = ref.softmax(logits(rng, shape).astype(dtype), axis)
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
    s = ref.softmax(logits(rng, shape).astype(dtype), axis)
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
    s = fs.softmax(logits(rng, shape).astype(dtype), axis)
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


@pytest.mark.parametrize("dtypes", PRODUCT_VARIANTS.values(), ids=list(PRODUCT_VARIANTS))
@pytest.mark.parametrize("shape, axis", [((9,), -1), ((4, 6, 3), 1), ((5, 33), 0),
                                         ((3, 1000), -1)])
def test_jvp_equals_vjp_exactly(dtypes, shape, axis, threads, rng):
    # docs/api.rst, section Derivatives:
    # "the Jacobian-vector product and the vector-Jacobian product are the same"
    # docs/api.rst, section Derivatives: "fs.softmax_vjp ... | the same product (J is symmetric)"
    s, v = FUNCTIONS["softmax_jvp"].make_inputs(rng, shape, axis, dtypes)
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
    s = ref.softmax(logits(rng, shape), axis)
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
    s = fs.softmax(logits(rng, (4, 5))) if deriv.name != "log_softmax_vjp" else \
        fs.log_softmax(logits(rng, (4, 5)))
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

OUT_CASES = [((4, 6), -1), ((4, 6), 0), ((3, 4, 5), 1)]


@pytest.mark.parametrize("deriv", DERIVATIVES, ids=lambda d: d.name)
def test_out_is_returned(deriv, rng):
    # (forward rules) "With out= the function returns out itself."
    inputs = make_inputs(deriv, rng)
    expected = deriv.fast(*inputs)
    out = np.full(expected.shape, -7.25)
    assert deriv.fast(*inputs, out=out) is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("which", [0, 1], ids=["out=first", "out=second"])
@pytest.mark.parametrize("layout", ["C", "F", "strided-reversed"])
@pytest.mark.parametrize("shape, axis", OUT_CASES)
@pytest.mark.parametrize("deriv", PRODUCTS, ids=lambda d: d.name)
def test_out_may_be_either_input(deriv, shape, axis, layout, which, threads, rng):
    # docs/api.rst, section out=: "`out` may be the same array as either input."
    inputs = [laid_out(a, layout) for a in make_inputs(deriv, rng, shape, axis)]
    expected = deriv.fast(*inputs, axis=axis)
    target = inputs[which]
    assert deriv.fast(*inputs, axis=axis, out=target) is target
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("deriv", PRODUCTS, ids=lambda d: d.name)
def test_out_overlapping_an_input_in_another_layout(deriv, rng):
    # NumPy semantics: the inputs are read as they were before the call,
    # even when out is a reversed view of one of them.
    s, v = make_inputs(deriv, rng, (3, 8))
    expected = deriv.fast(s, v)
    deriv.fast(s, v, out=v[:, ::-1])
    np.testing.assert_array_equal(v[:, ::-1], expected)


OUT_LAYOUTS = ["C", "F", "strided-reversed", "last-axis-outer"]


@pytest.mark.parametrize("out_layout", OUT_LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape, axis", OUT_CASES)
@pytest.mark.parametrize("deriv", DERIVATIVES, ids=lambda d: d.name)
def test_out_any_strides(deriv, shape, axis, dtype, out_layout, threads, rng):
    # (forward rules) "`out`: an ndarray of the result's shape and dtype; any strides."
    inputs = deriv.make_inputs(rng, shape, axis, (dtype, dtype))
    expected = deriv.fast(*inputs, axis=axis)
    out = laid_out(np.empty(expected.shape, expected.dtype), out_layout)
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
@pytest.mark.parametrize("deriv", DERIVATIVES, ids=lambda d: d.name)
def test_bad_out_is_rejected_before_writing(deriv, kind, error, rng):
    # (forward rules) "A wrong shape or dtype, or a read-only out, raises
    # ValueError/TypeError before anything is written."
    inputs = make_inputs(deriv, rng)
    bad_out = _bad_out(kind, deriv.fast(*inputs).shape)
    sentinel = bad_out.copy()
    with pytest.raises(error):
        deriv.fast(*inputs, out=bad_out)
    np.testing.assert_array_equal(bad_out, sentinel)


@pytest.mark.parametrize("deriv", PRODUCTS, ids=lambda d: d.name)
def test_bad_arguments_with_valid_out_write_nothing(deriv, rng):
    # (forward rules) errors are raised "before anything is written"
    a, b = make_inputs(deriv, rng)
    out = np.full((4, 6), -7.25)
    with pytest.raises(ValueError):
        deriv.fast(a, b[:, :5], out=out)
    with pytest.raises(AxisError):
        deriv.fast(a, b, axis=2, out=out)
    with pytest.raises(AxisError):
        deriv.fast(a, b, axis=(0, 0), out=out)
    with pytest.raises(TypeError):
        deriv.fast(a, b, axis=(0, 1.0), out=out)
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


@pytest.mark.parametrize("axis, joint", [((1, 2), (1, 2)), ((2, 1), (1, 2)), ((0, 2), (0, 2)),
                                         (None, (0, 1, 2)), ((-1,), (2,))], ids=repr)
@pytest.mark.parametrize("deriv", DERIVATIVES, ids=lambda d: d.name)
def test_axes_are_one_softmax_over_their_joint_elements(deriv, axis, joint, rng):
    # docs/api.rst, section Derivatives: axis "an int, a tuple of ints or
    # None ... one softmax over the joint elements of the axes"; the
    # Jacobian's n elements "ordered as reshape in C order orders them once
    # they are moved last, in their order in s".  The same call on the
    # array with those axes moved last and joined by hand, along -1:
    inputs = make_inputs(deriv, rng, (3, 4, 5), axis)
    k = len(joint)
    moved = [np.moveaxis(a, joint, tuple(range(3 - k, 3))) for a in inputs]
    rows = [m.reshape(m.shape[:3 - k] + (-1,)) for m in moved]
    by_hand = deriv.fast(*rows, axis=-1)
    result = deriv.fast(*inputs, axis=axis)
    if deriv.name != "softmax_jacobian":  # back to the inputs' layout
        by_hand = np.moveaxis(by_hand.reshape(moved[0].shape), tuple(range(3 - k, 3)), joint)
    assert result.shape == by_hand.shape
    np.testing.assert_array_equal(result, by_hand)


@pytest.mark.parametrize("axis", [2, -3, 100])
@pytest.mark.parametrize("deriv", DERIVATIVES, ids=lambda d: d.name)
def test_out_of_range_axis(deriv, axis, rng):
    # (forward rules) "An out-of-range ... axis raises numpy.exceptions.AxisError"
    inputs = make_inputs(deriv, rng, (3, 4))
    with pytest.raises(AxisError):
        deriv.fast(*inputs, axis=axis)


@pytest.mark.parametrize("axis", [np.int64(0), np.int32(-2)])
@pytest.mark.parametrize("deriv", DERIVATIVES, ids=lambda d: d.name)
def test_numpy_integer_axis(deriv, axis, rng):
    # "a single int": NumPy integers are ints too
    inputs = make_inputs(deriv, rng, (3, 4), 0)
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
