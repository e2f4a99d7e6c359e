"""Property-based tests: every math function against the reference on
arbitrary arrays (shapes up to 3-D, any axis, any memory layout, float16 to
float64 and integer dtypes, extreme values), and the identities that tie
the functions together.

The error budgets are those derived in _registry.py (BOUNDS,
DERIVATIVE_BOUNDS, LOSS_ULPS, GRAD_ULPS).  Run a long search with
``--hypothesis-profile=thorough``.
"""

import math

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import assume, example, given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs
from fastsoftmax import reference as ref

from _helpers import laid_out
from _registry import (BOUNDS, DERIVATIVE_BOUNDS, F16, F32, F64, FORWARD, FORWARD_IDS,
                       GRAD_ULPS, LOSS_ULPS, assert_grad_close, assert_loss_close,
                       assert_ulp_close, check, compute_dtype, derivative_floor, high_dtype,
                       jacobian_terms, loss_terms, options_target, oracle, oracle_dtype,
                       oracle_xent,
                       representable, rows_of)
from _registry import DERIVATIVE_NAMES, FUNCTIONS
from _registry import result_dtype as dtype_rule


DERIVATIVES = {name: FUNCTIONS[name] for name in DERIVATIVE_NAMES}


def normalized_axes(axis, ndim):
    ndim = max(ndim, 1)  # a 0-d input is a one-element row
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in axes))


def rows(a, axis):
    """`a` as (rows, n): the softmax axes joined and moved last."""
    a = np.asarray(a).reshape(a.shape or (1,))
    axes = normalized_axes(axis, a.ndim)
    moved = np.moveaxis(a, axes, range(a.ndim - len(axes), a.ndim))
    batch = math.prod(moved.shape[: a.ndim - len(axes)])
    return moved.reshape(batch, math.prod(moved.shape[a.ndim - len(axes):]))


def unmask_empty_rows(x, axis):
    """x with the rows that are all -inf set to 0: the derivatives and the
    loss are tested on real softmax outputs, and such a row has none (NaN)."""
    x = np.array(x, copy=True).reshape(x.shape or (1,))
    moved = np.moveaxis(x, axis, -1)
    moved[(moved == -np.inf).all(-1)] = 0
    return x


# --------------------------------------------------------------------------
# Error budgets for the dtypes the budgets above leave out
# --------------------------------------------------------------------------
# float16 data is computed in float32 and rounded once more to float16: 0.5
# ulp of float16, plus the float32 budget, which is small in float16 ulps
# (eps32 / eps16 = 2**-13).  Below float16's smallest normal number the
# rounding is absolute (half a subnormal step), hence a floor of at least
# float16's tiny.  Integer and bool data are computed as float64.

def _in_float16_ulps(ulps32):
    return 0.5 + ulps32 * np.finfo(np.float32).eps / np.finfo(np.float16).eps


def forward_budget(func, dtype):
    """(ulps, floor) for func's results on `dtype` data (see BOUNDS)."""
    dtype = np.dtype(dtype)
    if dtype == F16:
        ulps, floor = BOUNDS[(func.__name__, np.float32)]
        return _in_float16_ulps(ulps), max(floor, float(np.finfo(np.float16).tiny))
    return BOUNDS[(func.__name__, dtype.type if dtype.kind == "f" else np.float64)]


def derivative_budget(name, dtype):
    """(ulps, floor scale of the terms) of _registry.DERIVATIVE_BOUNDS, float16 included."""
    dtype = np.dtype(dtype)
    if dtype == F16:
        ulps, scale = DERIVATIVE_BOUNDS[name][F32]
        return _in_float16_ulps(ulps), scale
    return DERIVATIVE_BOUNDS[name][dtype]


def tiny(dtype):
    """The smallest normal number: below it a result's rounding is absolute
    (half a subnormal step), which a floor relative to the terms misses."""
    return float(np.finfo(dtype).tiny)


# --------------------------------------------------------------------------
# Strategies: values
# --------------------------------------------------------------------------

FLOATS = [np.float16, np.float32, np.float64]
INTEGERS = [np.int8, np.int32, np.int64, np.uint16, np.bool_]
WIDTH = {2: 16, 4: 32, 8: 64}


def elements(dtype, neg_inf=True, big=None):
    """Logits: typical ones, any magnitude (up to `big`, the dtype's max by
    default; subnormals included), the extremes and -inf (masks)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind in "iu":
        # cast to float64: exact up to 2**53, rounded beyond (and the
        # expected values are computed from the same float64 values)
        info = np.iinfo(dtype)
        return st.one_of(st.integers(max(-30, int(info.min)), 30),
                         st.integers(int(info.min), int(info.max)))
    width, info = WIDTH[dtype.itemsize], np.finfo(dtype)
    big = float(info.max) if big is None else big
    choices = [st.floats(-30, 30, width=width),                                  # typical
               st.floats(-big, big, width=width),                                # any magnitude
               st.sampled_from([big, -big, float(info.smallest_subnormal),      # extremes
                                -float(info.tiny), 0.0])]
    if neg_inf:
        choices.append(st.just(-np.inf))                                        # masks
    return st.one_of(*choices)


def vector_elements(dtype):
    """v or g: up to max/64 in magnitude, so that no sum of the n <= 7 terms
    a product forms, and no result, overflows (tested in test_edges.py)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return st.integers(-2 ** 31, 2 ** 31 - 1)
    width, info = WIDTH[dtype.itemsize], np.finfo(dtype)
    big = float(info.max) / 64
    return st.one_of(st.floats(-10, 10, width=width), st.floats(-big, big, width=width),
                     st.sampled_from([big, -big, float(info.smallest_subnormal), 0.0]))


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7)


@st.composite
def axes_for(draw, ndim):
    ndim = max(ndim, 1)
    return draw(st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1),
        st.lists(st.integers(-ndim, ndim - 1), min_size=1, max_size=ndim,
                 unique_by=lambda a: a % ndim).map(tuple),
    ))


def single_axis(ndim):
    ndim = max(ndim, 1)
    return st.integers(-ndim, ndim - 1)


# --------------------------------------------------------------------------
# Strategies: memory layouts
# --------------------------------------------------------------------------

# layouts of _helpers.laid_out; "broadcast" along an axis drawn here
LAYOUTS = ["C", "F", "transposed", "strided-reversed", "broadcast", "readonly"]


@st.composite
def any_layout(draw, a):
    """`a`, or an array of its shape and dtype in another memory layout:
    the same values, except "broadcast", which repeats index 0 of one axis
    with a zero stride (read-only, as NumPy makes it)."""
    layout = draw(st.sampled_from(LAYOUTS))
    note(f"layout {layout}")
    if a.ndim == 0:
        return laid_out(a, "C")
    if layout == "broadcast":
        axis = draw(st.integers(0, a.ndim - 1))
        note(f"broadcast along axis {axis}")
        return np.moveaxis(laid_out(np.moveaxis(a, axis, 0), "broadcast"), 0, axis)
    return laid_out(a, layout)


OUTS = [None, "C", "F", "strided-reversed", "in place"]


def make_out(kind, shape, dtype, inputs):
    """An `out` of the given kind (None: no out), filled with NaN; "in place"
    is the first input of the result's dtype and shape that can be written,
    or a C array if there is none."""
    if kind is None:
        return None
    if kind == "in place":
        for a in inputs:
            if a.dtype == dtype and a.shape == shape and a.flags.writeable:
                return a
        kind = "C"
    return laid_out(np.full(shape, np.nan, dtype), kind)


def assert_out_result(func, inputs, kwargs, out):
    """func(*inputs, out=out) is out and holds exactly what func returns
    without out (computed first: out may be an input)."""
    expected = func(*inputs, **kwargs)
    result = func(*inputs, **kwargs, out=out)
    assert result is out
    np.testing.assert_array_equal(result, expected)


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------

@st.composite
def logits_and_axis(draw, dtypes=(np.float32, np.float64), neg_inf=True):
    dtype = draw(st.sampled_from(dtypes))
    x = draw(hnp.arrays(dtype, shapes, elements=elements(dtype, neg_inf)))
    axis = draw(axes_for(x.ndim))
    note(f"dtype={np.dtype(dtype)}, shape={x.shape}, axis={axis}")
    return x, axis


# Found by the `thorough` profile (float64: one dominant logit, the rest
# equal; the float64 sum's rounding errors add up, see test_forward.py's
# test_accuracy_when_one_logit_dominates)
DOMINANT_12 = (np.array([[5.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]), None)
DOMINANT_SUM = (np.array([[14.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]), None)


# docs/api.rst, section Dtypes: "float32 and float64 are computed natively and keep their dtype.
# float16 is computed in float32 and returned as float16. Integer and bool
# inputs are computed and returned as float64."  "Array-likes ..., read-only,
# broadcast (zero-stride) ... arrays are accepted"
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
@given(data=logits_and_axis(dtypes=FLOATS + INTEGERS), layout=st.data())
@example(data=DOMINANT_12, layout=None)
def test_matches_reference(func, reference, data, layout):
    x, axis = data
    if layout is not None:
        x = layout.draw(any_layout(x))
    before = x.copy()
    with np.errstate(over="ignore"):  # float16 log_softmax may round to -inf
        result = func(x, axis=axis)
    result_dtype = x.dtype if x.dtype.kind == "f" else F64
    assert result.shape == x.shape and result.dtype == result_dtype
    exact = oracle(reference, x.astype(result_dtype), axis=axis)
    ulps, floor = forward_budget(func, x.dtype)
    assert_ulp_close(result, representable(exact, result_dtype), result_dtype.type, ulps,
                     floor=floor)
    np.testing.assert_array_equal(x, before)


# docs/api.rst, section out=: "`out`: an ndarray of the result's shape and dtype; any strides.
# `out=x` (in place) is allowed. ... With `out=` the function returns `out`
# itself."
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
@given(data=logits_and_axis(dtypes=FLOATS + [np.int32]), out_kind=st.sampled_from(OUTS[1:]),
       layout=st.data())
def test_out_of_any_layout(func, data, out_kind, layout):
    x, axis = data
    x = layout.draw(any_layout(x))
    dtype = x.dtype if x.dtype.kind == "f" else F64
    out = make_out(out_kind, x.shape, dtype, [x])
    note(f"out: {out_kind}, {'in place' if out is x else 'separate'}")
    with np.errstate(over="ignore"):  # float16 log_softmax may round to -inf
        assert_out_result(func, [x], {"axis": axis}, out)


# docs/api.rst, section Masks: where= excludes entries (0 / -inf there, the
# others normalised among themselves, x there never used), a mask that
# broadcasts by NumPy's rules, empty rows 0 / -inf
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@given(data=logits_and_axis(), layout=st.data(), masking=st.data())
def test_where_matches_reference(name, data, layout, masking):
    x, axis = data
    x = layout.draw(any_layout(x))
    # a mask of x's shape with some axes made 1 (broadcast), any layout
    keep = masking.draw(st.lists(st.booleans(), min_size=x.ndim, max_size=x.ndim))
    mask_shape = tuple(d if k else 1 for d, k in zip(x.shape, keep))
    mask = masking.draw(any_layout(masking.draw(hnp.arrays(np.bool_, mask_shape))))
    garbage = masking.draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))
    x = np.where(mask, x, garbage).astype(x.dtype)
    result = getattr(fs, name)(x, axis=axis, where=mask)
    expected = oracle(getattr(ref, name), x, axis=axis, where=mask)
    if name == "logsumexp":
        high = np.where(mask, x.astype(oracle_dtype(x.dtype)), -np.inf)
        row_max = np.max(rows(high, axis), axis=1, initial=-np.inf).reshape(np.shape(result))
        assert_ulp_close(result, representable(expected, x.dtype), x.dtype.type, 2,
                         floor=np.abs(row_max))
        return
    ulps, floor = forward_budget(getattr(fs, name), x.dtype)
    assert_ulp_close(result, representable(expected, x.dtype), x.dtype.type, ulps,
                     floor=floor)


@given(data=logits_and_axis())
@example(data=DOMINANT_SUM)
def test_rows_sum_to_one(data):
    # each entry within B ulp of the exact p_j, so a row within B eps of 1
    x, axis = data
    dtype = x.dtype.type
    s = rows(fs.softmax(x, axis=axis), axis)
    finite_row = (rows(x, axis) > -np.inf).any(axis=1)
    ulps, _ = BOUNDS[("softmax", dtype)]
    tol = (ulps + 0.5) * np.finfo(dtype).eps
    for row, ok in zip(s, finite_row):
        if ok:
            assert abs(math.fsum(row.astype(np.float64).tolist()) - 1) <= tol
        else:  # all -inf: NaN
            assert np.isnan(row).all()


@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
@given(dtype=st.sampled_from([np.float32, np.float64]),
       k=hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=7),
                    elements=st.integers(-1023, 1023)),
       c=st.integers(-(2 ** 16), 2 ** 16),
       data=st.data())
def test_shift_invariance(func, reference, dtype, k, c, data):
    # x = k/64 with |k| < 2**10 and |c| <= 2**16: x + c is exact in float32
    # (|x + c| < 2**17 on the grid 2**-6: 23 bits), so softmax(x + c) has
    # exactly the values of softmax(x)
    axis = data.draw(axes_for(k.ndim))
    x = (k / 64).astype(dtype)
    shifted = x + dtype(c)
    assert np.array_equal(shifted - dtype(c), x)
    check(func(shifted, axis=axis), oracle(reference, x, axis=axis), func, dtype)


@given(data=logits_and_axis())
def test_log_softmax_is_log_of_softmax(data):
    # where s is a normal number its relative error is <= B_s eps, so log(s)
    # is within B_s eps (absolutely) of the exact log p, as log_softmax is
    # within B_l eps max(|log p|, 1)
    x, axis = data
    dtype = x.dtype.type
    s = fs.softmax(x, axis=axis)
    logp = fs.log_softmax(x, axis=axis)
    assert np.array_equal(np.isnan(s), np.isnan(logp))
    assert (s[logp == -np.inf] == 0).all()  # (s may underflow where logp is finite)
    normal = s >= np.finfo(dtype).tiny
    high = np.float64 if dtype == np.float32 else np.longdouble
    log_s = np.log(s[normal].astype(high))
    lp = logp[normal].astype(high)
    eps = np.finfo(dtype).eps
    tol = (BOUNDS[("log_softmax", dtype)][0] * np.maximum(np.abs(lp), 1)
           + BOUNDS[("softmax", dtype)][0] + 1) * eps
    assert (np.abs(lp - log_s) <= tol).all()
    # -inf entries (masks) have probability exactly 0 in rows that are not NaN
    masked = (x == -np.inf) & ~np.isnan(s)
    assert (s[masked] == 0).all() and (logp[masked] == -np.inf).all()


# --------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------

# (dtype of s or logp, dtype of v or g).  docs/api.rst, section Dtypes: "Mixed float32/float64
# computes in float64; otherwise the forward dtype rules apply."
DERIVATIVE_DTYPES = [(F16, F16), (F32, F32), (F64, F64), (F32, F64), (F64, np.dtype(np.int32))]


@st.composite
def derivative_inputs(draw, name, dtypes=DERIVATIVE_DTYPES, big=None):
    """(inputs, axis) for derivative `name`: s = softmax(x) (logp =
    log_softmax(x) for log_softmax_vjp) of arbitrary logits x, rows of all
    -inf excepted, and v or g with arbitrary values."""
    first, second = draw(st.sampled_from(dtypes))
    x = draw(hnp.arrays(first, shapes, elements=elements(first, big=big)))
    axis = draw(single_axis(x.ndim))
    shape = x.shape
    x = unmask_empty_rows(x, axis).reshape(shape)
    forward = fs.log_softmax if name == "log_softmax_vjp" else fs.softmax
    with np.errstate(over="ignore"):  # float16 log_softmax may round to -inf
        s = forward(x, axis)
    note(f"dtypes {first}, {second}, shape={shape}, axis={axis}")
    if name == "softmax_jacobian":
        return [s], axis
    v = draw(hnp.arrays(second, shape, elements=vector_elements(second)))
    return [s, v], axis


def floor_of_terms(name, inputs, axis, result_dtype, scale):
    """`scale` times the terms of the budget (_registry.derivative_floor),
    at least the dtype's tiny."""
    return np.maximum(derivative_floor(name, inputs, axis, result_dtype, scale),
                      tiny(result_dtype))


# docs/api.rst, section Derivatives: the four functions (the formulas are the reference's),
# and "`out` may be the same array as either input"
@pytest.mark.parametrize("name", list(DERIVATIVES))
@given(data=st.data(), out_kind=st.sampled_from(OUTS))
def test_derivative_matches_reference(name, data, out_kind):
    inputs, axis = data.draw(derivative_inputs(name))
    inputs = [data.draw(any_layout(a)) for a in inputs]
    before = [a.copy() for a in inputs]
    func = DERIVATIVES[name].fast
    result = func(*inputs, axis=axis)
    result_dtype = np.result_type(*(a.dtype if a.dtype.kind == "f" else F64 for a in inputs))
    assert result.dtype == result_dtype
    expected = oracle(DERIVATIVES[name].ref, *(a.astype(result_dtype) for a in inputs),
                      axis=axis)
    assert result.shape == expected.shape
    ulps, scale = derivative_budget(name, result_dtype)
    floor = floor_of_terms(name, inputs, axis, result_dtype, scale)
    assert_ulp_close(result, expected, result_dtype.type, ulps, floor)
    for a, b in zip(inputs, before):  # inputs are never written
        np.testing.assert_array_equal(a, b)
    out = make_out(out_kind, result.shape, result_dtype, inputs)
    if out is not None:
        assert_out_result(func, inputs, {"axis": axis}, out)


# docs/api.rst, section Derivatives:
# "the Jacobian-vector product and the vector-Jacobian product are
# the same: J v = s * (v - <s, v>)"
@given(data=st.data())
def test_vjp_equals_jvp(data):
    (s, v), axis = data.draw(derivative_inputs("softmax_jvp"))
    s, v = data.draw(any_layout(s)), data.draw(any_layout(v))
    np.testing.assert_array_equal(fs.softmax_vjp(s, v, axis), fs.softmax_jvp(s, v, axis))


DTYPES_32_64 = [(F32, F32), (F64, F64), (F32, F64)]


# docs/api.rst, section Derivatives: "J = diag(s) - s sᵀ ... J v = s * (v - <s, v>)" and
# "fused: no Jacobian is formed" -- yet the same numbers.
@given(data=st.data())
def test_jacobian_times_v_is_jvp(data):
    (s, v), axis = data.draw(derivative_inputs("softmax_jvp", DTYPES_32_64))
    dtype = np.result_type(s, v)
    hp = oracle_dtype(dtype)
    jac = fs.softmax_jacobian(s.astype(dtype), axis).astype(hp)  # one rounding per entry
    v_rows = np.moveaxis(np.atleast_1d(v), axis, -1).astype(hp)
    jv = np.moveaxis(np.einsum("...ij,...j->...i", jac, v_rows), -1, axis).reshape(s.shape)
    # J's entries err by <= 1 ulp of max(|J_ij|, tiny) each (_registry.py:
    # no cancellation in the kernel's s_i (δ_ij - s_j)), so J @ v, summed in
    # high precision, is off by <= eps sum_j max(s_i (δ_ij + s_j), tiny) |v_j|;
    # the JVP by its DERIVATIVE_BOUNDS budget, at most `ulps` ulp of max(terms_i, tiny).
    eps = np.finfo(dtype).eps
    jac_terms = np.maximum(jacobian_terms(np.atleast_1d(s).astype(hp), axis), tiny(dtype))
    jac_err = np.moveaxis(np.einsum("...ij,...j->...i", jac_terms, np.abs(v_rows)), -1, axis)
    ulps, _ = derivative_budget("softmax_jvp", dtype)
    bound = eps * (jac_err.reshape(s.shape)
                   + ulps * floor_of_terms("softmax_jvp", [s, v], axis, dtype, 1.0))
    err = np.abs(fs.softmax_jvp(s, v, axis).astype(hp) - jv)
    assert (err <= bound).all(), f"max excess {np.max(err / bound)}"


# docs/api.rst, section Derivatives:
# "J v = s * (v - <s, v>)": its entries sum to <s, v> (1 - sum(s)),
# 0 for an exact probability vector: <1, J v> = 0.
@given(data=st.data())
def test_jvp_sums_to_zero(data):
    (s, v), axis = data.draw(derivative_inputs("softmax_jvp", DTYPES_32_64))
    dtype = np.result_type(s, v)
    hp = oracle_dtype(dtype)
    s_h, v_h = np.atleast_1d(s).astype(hp), np.atleast_1d(v).astype(hp)
    exact = (s_h * v_h).sum(axis) * (1 - s_h.sum(axis))
    total = np.atleast_1d(fs.softmax_jvp(s, v, axis)).astype(hp).sum(axis)
    # each entry within `ulps` ulp of max(terms_j, tiny) (DERIVATIVE_BOUNDS)
    ulps, _ = derivative_budget("softmax_jvp", dtype)
    floor = floor_of_terms("softmax_jvp", [s, v], axis, dtype, 1.0)
    bound = ulps * np.finfo(dtype).eps * np.atleast_1d(floor).sum(axis)
    assert (np.abs(total - exact) <= bound).all()


# The chain rule: log_softmax = log(softmax), so the VJP of log_softmax with
# g is the VJP of softmax with g / s.
@given(data=st.data())
def test_log_softmax_vjp_is_softmax_vjp_by_the_chain_rule(data):
    dtype = data.draw(st.sampled_from([F32, F64]))
    width = WIDTH[dtype.itemsize]
    x = data.draw(hnp.arrays(dtype, shapes, elements=st.floats(-20, 20, width=width)))
    axis = data.draw(single_axis(x.ndim))
    g = data.draw(hnp.arrays(dtype, x.shape, elements=st.floats(-1000, 1000, width=width)))
    x, g = np.atleast_1d(x), np.atleast_1d(g)  # (0-d: a row of one)
    s, logp = fs.softmax(x, axis), fs.log_softmax(x, axis)
    # |x| <= 20 and n <= 7: s >= e**-40 / 7, a normal number, and |g / s| < 1e21
    assert (s > 0).all()
    lhs = fs.log_softmax_vjp(logp, g, axis)
    rhs = fs.softmax_vjp(s, g / s, axis)
    # Budget (first order in eps, the data's), with q = exp(logp) and
    # T_j = max(|g_j| + max(s_j, q_j) sum|g|, tiny) (tiny: a subnormal
    # result's rounding is absolute):
    #   log_softmax_vjp: U_l eps T_j (DERIVATIVE_BOUNDS; its floor is T_j itself)
    #   softmax_vjp of w = g/s: U_s eps of its terms s_j (|w_j| + <s, |w|>) ~ T_j
    #   w rounded: s_j w_j = g_j (1 + 0.5 eps): 0.5 eps T_j
    #   s and q both approximate p: |s_j - q_j| <= (B_s + B_l max(|logp_j|, 1))
    #   eps p_j (BOUNDS: softmax relative, log_softmax absolute), times |sum g|
    hp = oracle_dtype(dtype)
    s_h, q_h, g_h = s.astype(hp), np.exp(logp.astype(hp)), g.astype(hp)
    p_h = np.maximum(s_h, q_h)
    t = np.maximum(np.abs(g_h) + p_h * np.abs(g_h).sum(axis, keepdims=True), tiny(dtype))
    u_l, _ = derivative_budget("log_softmax_vjp", dtype)
    u_s, _ = derivative_budget("softmax_vjp", dtype)
    b_s, b_l = BOUNDS[("softmax", dtype.type)][0], BOUNDS[("log_softmax", dtype.type)][0]
    eps = np.finfo(dtype).eps
    bound = eps * ((u_l + u_s + 0.5) * t + (b_s + b_l * np.maximum(np.abs(logp.astype(hp)), 1))
                   * p_h * np.abs(g_h.sum(axis, keepdims=True)))
    err = np.abs(lhs.astype(hp) - rhs.astype(hp))
    assert (err <= bound).all(), f"max excess {np.max(err / bound)}"


# --------------------------------------------------------------------------
# Cross-entropy
# --------------------------------------------------------------------------

def typical_logits(dtype):
    """|x| <= 30 and -inf (masks); integers |x| <= 30."""
    if np.dtype(dtype).kind in "iu":
        return st.integers(-30, 30)
    return st.one_of(st.floats(-30, 30, width=WIDTH[np.dtype(dtype).itemsize]),
                     st.just(-np.inf))


def weights(dtype, tiny_weights):
    """Probability-target entries: [0, 1] and 2.5 (rows need not sum to 1);
    without `tiny_weights`, 0 or at least float16's smallest normal number."""
    width = WIDTH[np.dtype(dtype).itemsize]
    low = 0.0 if tiny_weights else 2.0 ** -14
    return st.one_of(st.floats(low, 1, width=width), st.sampled_from([0.0, 2.5]))


@st.composite
def cross_entropy_inputs(draw, logits_dtypes, big=None, typical=False,
                         kinds=("index", "prob"), tiny_weights=True):
    """(logits, target, axis): class indices or probabilities of any float
    dtype; rows of all -inf logits excepted.  Logits as `elements` (up to
    `big`), or `typical_logits`."""
    dtype = draw(st.sampled_from(logits_dtypes))
    values = typical_logits(dtype) if typical else elements(dtype, big=big)
    logits = draw(hnp.arrays(dtype, shapes, elements=values))
    axis = draw(single_axis(logits.ndim))
    shape = logits.shape
    logits = unmask_empty_rows(logits, axis).reshape(shape)
    full = shape or (1,)
    n = full[axis]
    batch = tuple(d for i, d in enumerate(full) if i != axis % len(full)) if shape else ()
    if not n and math.prod(batch):  # no class to name
        kinds = [k for k in kinds if k != "index"]
    assume(kinds)
    kind = draw(st.sampled_from(kinds))
    if kind == "index":
        target = draw(hnp.arrays(np.int64, batch, elements=st.integers(0, max(n - 1, 0))))
    else:
        t_dtype = draw(st.sampled_from(FLOATS))
        target = draw(hnp.arrays(t_dtype, shape, elements=weights(t_dtype, tiny_weights)))
    note(f"logits {np.dtype(dtype)} {shape}, axis={axis}, {kind} target "
         f"{target.dtype} {target.shape}")
    return logits, target, axis


def _none_rows(logits, target, axis):
    """Rows of logits and of the one-hot or probability target, in high
    precision, and the dtypes of the result and of the computation."""
    result = dtype_rule(logits.dtype) if target.dtype.kind in "iu" else \
        np.result_type(dtype_rule(logits.dtype), dtype_rule(target.dtype))
    compute, hp = compute_dtype(result), high_dtype(result)
    x, t = rows_of(logits, target, axis, hp)
    return x, t, result, compute, hp


# docs/api.rst, section Fused loss: "Loss per row: -sum(target * log_softmax(logits))." and
# "With return_grad=True it returns (loss, dlogits) from one pass"
# (logits up to 30 in magnitude and no tiny weights: the budgets of
# _registry.py are relative to the terms, which a subnormal loss or
# gradient entry would not meet; the identities below take any values)
@given(data=cross_entropy_inputs(FLOATS + [np.int32], typical=True, tiny_weights=False),
       layouts=st.data(),
       reduction=st.sampled_from(["mean", "sum", "none"]))
@example(data=(np.zeros((3, 0)), np.zeros((3, 0)), -1), layouts=None, reduction="none")
def test_cross_entropy_matches_reference(data, layouts, reduction):
    logits, target, axis = data
    if layouts is not None:
        logits, target = layouts.draw(any_layout(logits)), layouts.draw(any_layout(target))
    loss, grad = fs.softmax_cross_entropy(logits, target, axis, reduction=reduction,
                                          return_grad=True)
    x, t, result, compute, hp = _none_rows(logits, target, axis)
    expected_loss, expected_grad = oracle_xent(logits, target, axis, reduction, hp)
    assert loss.dtype == compute and grad.dtype == result and grad.shape == logits.shape
    if x.shape[-1] == 0:
        # no classes: each row's loss is a sum of nothing, 0 ("mean" of no
        # rows NaN); the budgets' terms need a row maximum
        np.testing.assert_array_equal(loss, expected_loss)
        assert grad.size == 0
        return
    assert_loss_close(loss, expected_loss, x, t, reduction, compute)
    n_rows = math.prod(x.shape[:-1])
    scale = 1.0 / n_rows if reduction == "mean" and n_rows else 1.0
    assert_grad_close(grad, expected_grad, x, t, axis, scale)
    # the loss alone is the same
    np.testing.assert_array_equal(
        fs.softmax_cross_entropy(logits, target, axis, reduction=reduction), loss)


# docs/api.rst, section Fused loss: weight, ignore_index, label_smoothing
# (PyTorch's meanings: the reference's), on the same arbitrary inputs
@given(data=cross_entropy_inputs(FLOATS, typical=True, tiny_weights=False),
       reduction=st.sampled_from(["mean", "sum", "none"]), options=st.data())
def test_cross_entropy_options_match_reference(data, reduction, options):
    logits, target, axis = data
    n = (logits.shape or (1,))[axis]
    # (a smoothing e or a weight so small that e / n or the weight
    # underflows in the computation dtype is lost: the target is formed in
    # it, docs/api.rst)
    kwargs = {"label_smoothing": options.draw(st.just(0.0) | st.floats(2.0 ** -16, 1))}
    if options.draw(st.booleans()):
        kwargs["weight"] = options.draw(hnp.arrays(
            np.float64, (n,), elements=st.just(0.0) | st.floats(2.0 ** -16, 4)))
    if target.dtype.kind == "i" and options.draw(st.booleans()):
        ignored = options.draw(st.sampled_from([-100, 0]))
        kwargs["ignore_index"] = ignored
        flat = target.reshape(-1)
        flat[::2] = ignored
    loss, grad = fs.softmax_cross_entropy(logits, target, axis, reduction=reduction,
                                          return_grad=True, **kwargs)
    x, t, result, compute, hp = _none_rows(logits, np.where(target == -100, 0, target), axis)
    expected_loss, expected_grad = oracle_xent(logits, target, axis, reduction, hp, **kwargs)
    assert loss.dtype == compute and grad.dtype == result and grad.shape == logits.shape
    if x.shape[-1] == 0:
        np.testing.assert_array_equal(loss, expected_loss)
        return
    t, denominator = options_target(t, target, kwargs)
    assert_loss_close(loss, expected_loss, x, t, reduction, compute)
    scale = 1.0 / denominator if reduction == "mean" and denominator else 1.0
    assert_grad_close(grad, expected_grad, x, t, axis, scale)


# Identities on extreme logits, up to max/1024 in magnitude: beyond, the
# float64 compensated sums overflow (test_edges.py, KAHAN_OVERFLOW), and
# log_softmax itself rounds entries below -max to -inf.
def _extreme_ce_inputs(kinds):
    return st.one_of(*(cross_entropy_inputs([dtype], big=float(np.finfo(dtype).max) / 1024,
                                            kinds=kinds)
                       for dtype in (np.float32, np.float64)))


# docs/api.rst, section Fused loss: "dlogits = softmax(logits) * sum(target) - target per row (for
# one-hot or index targets: s - y)"
@given(data=_extreme_ce_inputs(["index"]))
def test_cross_entropy_grad_is_softmax_minus_one_hot(data):
    logits, target, axis = data
    _, grad = fs.softmax_cross_entropy(logits, target, axis, reduction="sum", return_grad=True)
    x, y, result, compute, hp = _none_rows(logits, target, axis)
    s = np.moveaxis(np.atleast_1d(fs.softmax(logits, axis)), axis, -1).astype(hp)
    g = np.moveaxis(np.atleast_1d(grad), axis, -1).astype(hp)
    # the fused gradient within GRAD_ULPS ulp of max(G, tiny), G = p + y;
    # softmax within B_s ulp of max(p, tiny) (p ~ s to first order)
    eps, tiny_ = np.finfo(result).eps, tiny(result)
    b_s = BOUNDS[("softmax", result.type)][0]
    bound = eps * (GRAD_ULPS[result] * np.maximum(s + y, tiny_) + b_s * np.maximum(s, tiny_))
    err = np.abs(g - (s - y))
    assert (err <= bound).all(), f"max excess {np.max(err / bound)}"


# docs/api.rst, section Fused loss: "Loss per row: -sum(target * log_softmax(logits))." and "A zero
# target weight on a `-inf` logit contributes 0"
@given(data=_extreme_ce_inputs(["index", "prob"]))
def test_cross_entropy_loss_is_minus_target_dot_log_softmax(data):
    logits, target, axis = data
    loss = fs.softmax_cross_entropy(logits, target, axis, reduction="none")
    x, t, result, compute, hp = _none_rows(logits, target, axis)
    if x.shape[-1] == 0:  # no classes: a sum of nothing
        assert (loss == 0).all()
        return
    logp = np.moveaxis(np.atleast_1d(fs.log_softmax(logits, axis)), axis, -1).astype(hp)
    with np.errstate(invalid="ignore"):
        expected = -np.where(t == 0, 0, t * logp).sum(-1)
    loss = np.atleast_1d(loss).astype(hp).reshape(expected.shape)
    infinite = ~np.isfinite(expected)
    np.testing.assert_array_equal(loss[infinite], expected[infinite])
    # the loss within LOSS_ULPS ulp of max(|loss|, M, tiny) (of the
    # computation dtype; tiny for tiny weights); each log-probability within B_l ulp of max(|logp|, 1) (of the
    # logits' result dtype)
    ls_dtype = dtype_rule(logits.dtype)
    b_l = BOUNDS[("log_softmax", ls_dtype.type)][0]
    with np.errstate(invalid="ignore"):
        m = loss_terms(x, t)
        ls_err = np.where(t == 0, 0, np.abs(t) * np.maximum(np.abs(logp), 1)).sum(-1)
    bound = (LOSS_ULPS[compute] * np.finfo(compute).eps
             * np.maximum(np.maximum(np.abs(expected), m), tiny(compute))
             + b_l * np.finfo(ls_dtype).eps * ls_err)
    with np.errstate(invalid="ignore"):  # inf - inf where infinite, checked above
        err = np.abs(loss - expected)
    assert (err[~infinite] <= bound[~infinite]).all(), \
        f"max excess {np.max(err[~infinite] / bound[~infinite])}"
