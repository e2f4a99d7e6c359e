"""Property-based tests: softmax and log_softmax against the reference on
arbitrary arrays (shapes up to 3-D, any axis), and their identities."""

import math

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import example, given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs

from _helpers import BOUNDS, FORWARD, FORWARD_IDS, check, oracle

def representable(expected, dtype):
    """Values beyond the dtype's range replaced by the infinity they round
    to (log_softmax([max, -max]) has the entry -2 max)."""
    expected = np.asarray(expected)
    with np.errstate(over="ignore"):
        overflow = np.isinf(expected.astype(dtype)) & np.isfinite(expected)
    return np.where(overflow, np.copysign(np.inf, expected), expected)


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


# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------

dtypes = st.sampled_from([np.float32, np.float64])


def elements(dtype, neg_inf=True):
    width = 32 if dtype == np.float32 else 64
    big = float(np.finfo(dtype).max)
    choices = [st.floats(-30, 30, width=width),                    # typical logits
               st.floats(-big, big, width=width),                  # any magnitude
               st.sampled_from([big, -big, 1e30, -1e30, 0.0])]     # extremes
    if neg_inf:
        choices.append(st.just(-np.inf))                           # masks
    return st.one_of(*choices)


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


@st.composite
def logits_and_axis(draw, neg_inf=True):
    dtype = draw(dtypes)
    x = draw(hnp.arrays(dtype, shapes, elements=elements(dtype, neg_inf)))
    axis = draw(axes_for(x.ndim))
    note(f"dtype={np.dtype(dtype)}, shape={x.shape}, axis={axis}")
    return x, axis


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------

# Found by the `thorough` profile (float64: one dominant logit, the rest
# equal; the float64 sum's rounding errors add up, see test_forward.py's
# test_accuracy_when_one_logit_dominates)
DOMINANT_12 = (np.array([[5.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]), None)
DOMINANT_SUM = (np.array([[14.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]), None)


@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
@given(data=logits_and_axis())
@example(data=DOMINANT_12)
def test_matches_reference(func, reference, data):
    x, axis = data
    dtype = x.dtype.type
    before = x.copy()
    result = func(x, axis=axis)
    assert result.shape == x.shape and result.dtype == x.dtype
    check(result, representable(oracle(reference, x, axis=axis), dtype), func, dtype)
    np.testing.assert_array_equal(x, before)


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
@given(dtype=dtypes,
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
