"""Fuzzing every public function with arbitrary arrays (docs/reliability.rst).

Hypothesis turns random bytes into arrays: a dtype (float16/32/64 in either
byte order, integers, bool, and the unsupported complex and long double), a
shape of up to 3 axes of up to 6, a layout (any strides, zero and negative
ones included, laid over one buffer with np.ndarray; views that are flipped
or transposed; now and then a buffer misaligned by one byte), and values:
the raw bytes themselves (NaNs, infinities, subnormals, huge and tiny
numbers), or moderate numbers with NaN/inf/subnormal/extreme values written
over some of them.  Axes, ``out`` arrays, class-index and probability
targets and reductions are drawn the same way, valid or not.

Every call must then either raise the exception the arguments call for
(TypeError, ValueError, IndexError, AxisError: the checks below predict
which) or return a result of the right shape and dtype that

- for C-contiguous inputs, is bit-identical to the same call on a native,
  aligned copy in the computation dtype (byte order, alignment and the
  float16 / integer conversions change nothing; other layouts may take
  another kernel, e.g. the column kernel, and differ by rounding), and
- matches the plain-NumPy reference evaluated in higher precision: softmax
  and log_softmax within the error budget of tests/_registry.py, NaN and
  infinities included; the derivatives and the loss on every row whose
  inputs and intermediate terms are finite, within the forward error bound
  of their sums.

Two bugs it found (NaNs with a payload, misaligned arrays) have regression
tests of their own at the end of this file.

Never a crash.  CI runs the bounded, derandomized "ci" profile (see
conftest.py).  Longer runs::

    pytest tests/test_fuzz.py --hypothesis-profile=thorough        # 5000 examples each
    FASTSOFTMAX_FUZZ_SECONDS=600 pytest tests/test_fuzz.py -k for_a_while
"""

import math
import os
import time

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from numpy.exceptions import AxisError

import fastsoftmax as fs
from fastsoftmax import _backend
from fastsoftmax import reference as ref

from _registry import (assert_ulp_close, check, joined_rows, oracle, oracle_dtype, reduced_axes,
                       representable)

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)

# Inputs: the supported dtypes, byte-swapped ones, and two that must be refused.
# (Repeats weight the draw: mostly float32/64, one in ~12 refused.)
FLOAT_DTYPES = ["<f4", "<f8", "<f4", "<f8", "<f2", ">f4", ">f8"]
INPUT_DTYPES = FLOAT_DTYPES * 2 + ["<i4", "<i8", "|u1", ">i2", "|b1", "<c8", "g"]


def fuzz(body, *strategies, **overrides):
    """body(*drawn) as a Hypothesis test, under the loaded profile (CI's
    or --hypothesis-profile's) changed by `overrides`.  An example makes a
    dozen calls and a high-precision reference, and draws a few kB: a
    little slow and large for Hypothesis's health checks, not a problem."""
    return settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    **overrides)(given(*strategies)(body))


# --------------------------------------------------------------------------
# arrays from bytes
# --------------------------------------------------------------------------

def is_unsupported(dtype):
    return dtype.kind == "c" or dtype.char == "g"


# NaNs with a payload: R's NA_real_ (payload 1954) and the float32 NaN with
# payload 1.  NumPy's np.nan, like the NaNs arithmetic makes, has payload 0.
R_NA = np.array([0x7FF00000000007A2], np.uint64).view(np.float64)[0]
F32_NAN_PAYLOAD_1 = np.array([0x7FC00001], np.uint32).view(np.float32)[0]


def specials(dtype):
    """Values written over some entries: NaNs, infinities (-inf is a mask),
    subnormals, the extremes of the dtype, zero."""
    info = np.finfo(dtype)
    payload_nan = {8: R_NA, 4: F32_NAN_PAYLOAD_1}.get(dtype.itemsize, np.nan)
    return [np.nan, payload_nan, np.inf, -np.inf, -np.inf, info.smallest_subnormal,
            -info.smallest_subnormal, info.max, -info.max, info.tiny, 0.0]


@st.composite
def arrays(draw, dtypes=INPUT_DTYPES, shape=None, reshape=True):
    """An array (read-only) of a drawn dtype, shape, layout and values.

    `shape` fixes the shape; otherwise it is drawn, and so may be a
    transposition of the laid-out array (`reshape`).
    """
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(0, 6), max_size=3)))
    itemsize = dtype.itemsize

    # Layout: element steps per axis (C order, or any of -3..3, 0 included).
    if draw(st.booleans()):
        steps = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
    else:
        steps = [draw(st.integers(-3, 3)) for _ in shape]
    empty = 0 in shape
    count = 0 if empty else 1 + sum(abs(s) * (d - 1) for s, d in zip(steps, shape))
    start = 0 if empty else sum(-s * (d - 1) for s, d in zip(steps, shape) if s < 0)
    misalign = draw(st.sampled_from([0] * 7 + [1]))  # one byte off, now and then

    # Values: the buffer's raw bytes, or moderate numbers (quarter steps in
    # [-32, 32)) with special values written over some of them.
    raw = draw(st.binary(min_size=count * itemsize, max_size=count * itemsize))
    flat = np.frombuffer(raw, dtype=dtype).copy()
    if dtype.kind == "b":
        flat = np.frombuffer(raw, np.uint8)[:count] % 2 == 1
    elif dtype.kind == "f" and dtype.char != "g" and count and draw(st.booleans()):
        flat = (np.frombuffer(raw, np.int8)[:count] / 4.0).astype(dtype)
        for _ in range(draw(st.integers(0, 3))):
            where = draw(st.integers(0, count - 1))
            flat[where] = draw(st.sampled_from(specials(dtype)))
    buffer = np.zeros(count * itemsize + misalign + 1, np.uint8)
    buffer[misalign:misalign + count * itemsize] = np.frombuffer(flat.tobytes(), np.uint8)
    x = np.ndarray(shape, dtype, buffer=buffer, offset=misalign + start * itemsize,
                   strides=tuple(s * itemsize for s in steps))

    # A view: flipped along an axis (negative strides) or transposed.
    if x.ndim and draw(st.booleans()):
        x = np.flip(x, draw(st.integers(0, x.ndim - 1)))
    if reshape and x.ndim > 1 and draw(st.booleans()):
        x = x.T
    x.flags.writeable = False
    note(f"array {x.dtype.str} shape={x.shape} strides={x.strides} "
         f"aligned={x.flags.aligned}")
    return x


def result_dtype(dtype):
    """docs/api.rst, section Dtypes: float16/32/64 stay (native order), other
    numbers -> float64."""
    return np.dtype(dtype.type) if dtype.kind == "f" else F64


def compute_dtype(dtype):
    return F32 if dtype.itemsize <= 4 else F64


def canonical(x, dtype):
    """A C-contiguous, native copy in `dtype`: the layout the kernels take
    as is (np.ascontiguousarray would make a 0-d array 1-d)."""
    return np.array(x, dtype=dtype, order="C")


@st.composite
def out_arrays(draw, shape, dtype):
    """None, or an `out` for a result of `shape` and `dtype`: a fresh array
    in some layout (C, transposed, flipped, every other element), or one of
    the wrong shape or dtype, or a read-only one."""
    kind = draw(st.sampled_from(["none"] * 4 + ["C", "transposed", "flipped", "strided"] * 2
                                + ["wrong shape", "wrong dtype", "read-only"]))
    if kind == "none":
        return None
    if kind == "wrong shape":
        shape = shape + (1,)
    if kind == "wrong dtype":
        dtype = F32 if dtype == F64 else F64
    if kind == "transposed":
        return np.empty(shape[::-1], dtype).T
    if kind == "flipped" and shape:
        return np.flip(np.empty(shape, dtype), -1)
    if kind == "strided" and shape:
        return np.empty(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]
    out = np.empty(shape, dtype)
    if kind == "read-only":
        out.flags.writeable = False
    return out


def out_errors(out, shape, dtype):
    """The exceptions a wrong `out` calls for."""
    if out is None:
        return set()
    errors = set()
    if out.shape != shape or not out.flags.writeable:
        errors.add(ValueError)
    if out.dtype != dtype:
        errors.add(TypeError)
    return errors


def rarely(draw):
    """True about one time in eight (Hypothesis would favour the ends of
    st.integers)."""
    return draw(st.sampled_from([False] * 7 + [True]))


def int_axis(draw, ndim):
    """An int axis, out of range now and then."""
    ndim = max(ndim, 1)
    if rarely(draw):
        return draw(st.sampled_from([-ndim - 1, ndim, ndim + 5]))
    return draw(st.integers(-ndim, ndim - 1))


def axes_for(draw, ndim):
    """An axis argument: None, an int, or a tuple of ints (in or out of
    range, repeated or not)."""
    kind = draw(st.sampled_from(["int", "int", "none", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return int_axis(draw, ndim)
    return tuple(int_axis(draw, ndim) for _ in range(draw(st.integers(0, max(ndim, 1)))))


def axis_error(axis, ndim):
    """AxisError for an int or tuple axis out of range or repeated; None if valid."""
    ndim = max(ndim, 1)
    items = () if axis is None else axis if isinstance(axis, tuple) else (axis,)
    if any(not -ndim <= a < ndim for a in items):
        return AxisError
    if len({a % ndim for a in items}) != len(items):
        return AxisError
    return None


def call(func, *args, errors, **kwargs):
    """func(*args, **kwargs) that must raise one of `errors` if there are
    any, and return normally if not.  Returns the result, or None."""
    if errors:
        with pytest.raises(tuple(errors)) as info:
            func(*args, **kwargs)
        event(f"raised {type(info.value).__name__}")  # --hypothesis-show-statistics
        return None
    event("returned")
    return func(*args, **kwargs)


# NaNs, infinities and overflow are the inputs here, not accidents: NumPy's
# warnings about them (in the reference, the casts) say nothing.
quiet = np.errstate(all="ignore")


def aligned(*arrays):
    return all(a.flags.aligned for a in arrays if isinstance(a, np.ndarray))


def same_path(*arrays):
    """True if the canonical copies take the kernels' path that these
    arrays take: C-contiguous ones (whatever their byte order, alignment or
    dtype).  Other layouts may take another kernel (e.g. the column kernel
    for a non-last axis), whose results may differ by rounding."""
    return all(a.flags.c_contiguous for a in arrays)


def assert_identical(got, want):
    """Same dtype, shape and bits (NaNs in the same places)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype)
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), \
        f"differs from the same call on a native, aligned copy:\n{got}\n{want}"


def in_result_dtype(rdt, expected, bound):
    """(expected, bound) for a result returned in `rdt`: for float16, the
    values beyond its range become the infinity they round to, and the
    bound grows by the final rounding (half an ulp, or half the subnormal
    spacing)."""
    if rdt != F16:
        return expected, bound
    info = np.finfo(F16)
    rounding = 0.5 * info.eps * np.abs(expected) + info.smallest_subnormal
    return representable(expected, F16), bound + rounding


def assert_within(actual, expected, bound, rows):
    """|actual - expected| <= bound wherever the row mask `rows` (broadcast)
    is true."""
    actual = np.asarray(actual).astype(expected.dtype)
    rows = np.broadcast_to(rows, expected.shape)
    event(f"rows compared: {'all' if rows.all() else 'some' if rows.any() else 'none'}")
    with np.errstate(invalid="ignore"):  # inf - inf where equal, or in rows not compared
        err = np.where(rows & (actual != expected), np.abs(actual - expected), 0)
    excess = ~(err <= np.where(rows, bound, np.inf))  # a NaN error is an excess
    assert not excess.any(), (f"error {err[excess].max()!r} beyond the bound "
                              f"{np.asarray(bound)[excess].max()!r}")


# --------------------------------------------------------------------------
# softmax and log_softmax
# --------------------------------------------------------------------------

@st.composite
def forward_cases(draw):
    x = draw(arrays())
    axis = axes_for(draw, x.ndim)
    out = None
    if not is_unsupported(x.dtype):
        out = draw(out_arrays(x.shape, result_dtype(x.dtype)))
    return x, axis, out


@quiet
def check_forward(case, name):
    x, axis, out = case
    func, reference = getattr(fs, name), getattr(ref, name)
    errors = set()
    if is_unsupported(x.dtype):
        errors.add(TypeError)
    elif axis_error(axis, x.ndim):
        errors.add(AxisError)
    else:
        errors |= out_errors(out, x.shape, result_dtype(x.dtype))
    result = call(func, x, axis, out=out, errors=errors)
    if errors:
        return

    rdt, cdt = result_dtype(x.dtype), compute_dtype(result_dtype(x.dtype))
    assert result.shape == x.shape and result.dtype == rdt
    if out is not None:
        assert result is out
    if same_path(x):
        assert_identical(result, func(canonical(x, cdt), axis).astype(rdt))

    # The contract holds for every input, NaN and infinities included: the
    # error budget of tests/_registry.py, and the same NaN/inf pattern.
    with np.errstate(all="ignore"):
        expected = oracle(reference, canonical(x, cdt), axis=axis)
    if rdt == cdt:
        check(result, representable(expected, cdt), func, cdt)
    else:  # float16: the float32 budget (~2**-12 of a float16 ulp) + the final rounding
        floor = 1.0 if name == "log_softmax" else np.finfo(F16).tiny
        assert_ulp_close(result, representable(expected, F16), np.float16, 1, floor=floor)


FORWARD_STRATEGIES = (forward_cases(), st.sampled_from(["softmax", "log_softmax"]))
test_fuzz_forward = fuzz(check_forward, *FORWARD_STRATEGIES)


# --------------------------------------------------------------------------
# the derivatives
# --------------------------------------------------------------------------

def class_axis(draw, ndim):
    """Mostly a single int axis (in range or not); a tuple or None, which
    the loss refuses, now and then."""
    if rarely(draw):
        return draw(st.sampled_from([None, (0,)]))
    return int_axis(draw, ndim)


def single_axis_errors(axis, ndim):
    if axis is None or isinstance(axis, tuple):
        return {TypeError}
    return {AxisError} if axis_error(axis, ndim) else set()


def any_axis_errors(axis, ndim):
    return {AxisError} if axis_error(axis, ndim) else set()


@st.composite
def derivative_cases(draw):
    a = draw(arrays())
    shape = a.shape + (1,) if rarely(draw) else a.shape  # a mismatch, now and then
    b = draw(arrays(shape=shape, reshape=False))
    axis = axes_for(draw, a.ndim)
    out = None
    if not (is_unsupported(a.dtype) or is_unsupported(b.dtype)):
        rdt = np.result_type(result_dtype(a.dtype), result_dtype(b.dtype))
        out = draw(out_arrays(a.shape, rdt))
    return a, b, axis, out


def finite_rows(*arrays, axis):
    """Rows (keepdims) where every array is finite."""
    ok = True
    for a in arrays:
        ok = ok & np.isfinite(a).all(axis=axis, keepdims=True)
    return ok


@quiet
def check_products(case, name):
    a, b, axis, out = case
    func = getattr(fs, name)
    errors = set()
    if is_unsupported(a.dtype) or is_unsupported(b.dtype):
        errors.add(TypeError)
    else:
        rdt = np.result_type(result_dtype(a.dtype), result_dtype(b.dtype))
        if a.shape != b.shape:
            errors.add(ValueError)
        errors |= any_axis_errors(axis, a.ndim) | out_errors(out, a.shape, rdt)
    result = call(func, a, b, axis, out=out, errors=errors)
    if errors:
        return

    cdt = compute_dtype(rdt)
    assert result.shape == a.shape and result.dtype == rdt
    if out is not None:
        assert result is out
    a_c, b_c = canonical(a, cdt), canonical(b, cdt)
    if same_path(a, b):
        assert_identical(result, func(a_c, b_c, axis).astype(rdt))

    # Against the reference in higher precision, on rows whose inputs and
    # terms are finite, with a margin below overflow.  The bound is 4 ulp
    # of the terms (tests/_registry.py derives it).  Near underflow
    # each rounding errs by up to half the subnormal spacing `tiny` instead:
    # the n products of the dot, then the difference, then the product with
    # a_j (or p_j) that scales the dot's error: (n + 2) tiny (1 + |a_j|).
    high = oracle_dtype(cdt)
    shape = a_c.shape or (1,)
    a_h, b_h = a_c.reshape(shape).astype(high), b_c.reshape(shape).astype(high)
    eps, tiny = np.finfo(cdt).eps, np.finfo(cdt).smallest_subnormal
    axes = reduced_axes(axis, len(shape))
    n = math.prod(shape[i] for i in axes)
    with np.errstate(all="ignore"):
        if name == "log_softmax_vjp":
            p = np.exp(a_h)
            expected = b_h - p * b_h.sum(axes, keepdims=True)
            terms = np.abs(b_h) + p * np.abs(b_h).sum(axes, keepdims=True)
            scale = p
            exp_in_data_precision = np.exp(a_c.reshape(shape))  # may overflow earlier
        else:
            expected = a_h * (b_h - (a_h * b_h).sum(axes, keepdims=True))
            terms = np.abs(a_h) * (np.abs(b_h) + np.abs(a_h * b_h).sum(axes, keepdims=True))
            scale = np.abs(a_h)
            exp_in_data_precision = a_h
        safe = (terms < np.finfo(cdt).max / (4 * n + 4)).all(axes, keepdims=True)
        rows = finite_rows(a_h, b_h, terms, exp_in_data_precision, axis=axes) & safe
        bound = 4 * eps * terms + (n + 2) * tiny * (1 + scale)
        expected, bound = in_result_dtype(rdt, expected, bound)
    assert_within(result.reshape(shape), expected, bound, rows)


PRODUCT_STRATEGIES = (derivative_cases(),
                      st.sampled_from(["softmax_jvp", "softmax_vjp", "log_softmax_vjp"]))
test_fuzz_products = fuzz(check_products, *PRODUCT_STRATEGIES)


def jacobian_shape(s, axis):
    rows = joined_rows(np.empty(s.shape or (1,)), axis).shape
    return rows + (rows[-1],)


@st.composite
def jacobian_cases(draw):
    s = draw(arrays())
    axis = axes_for(draw, s.ndim)
    out = None
    if not is_unsupported(s.dtype) and not any_axis_errors(axis, s.ndim):
        out = draw(out_arrays(jacobian_shape(s, axis), result_dtype(s.dtype)))
    return s, axis, out


@quiet
def check_jacobian(case):
    s, axis, out = case
    errors = set()
    if is_unsupported(s.dtype):
        errors.add(TypeError)
    else:
        errors |= any_axis_errors(axis, s.ndim)
        if not errors:
            errors |= out_errors(out, jacobian_shape(s, axis), result_dtype(s.dtype))
    result = call(fs.softmax_jacobian, s, axis, out=out, errors=errors)
    if errors:
        return

    rdt, cdt = result_dtype(s.dtype), compute_dtype(result_dtype(s.dtype))
    assert result.shape == jacobian_shape(s, axis) and result.dtype == rdt
    if out is not None:
        assert result is out
    s_c = canonical(s, cdt)
    if same_path(s):
        assert_identical(result, fs.softmax_jacobian(s_c, axis).astype(rdt))

    # J_ij = s_i (δ_ij - s_j): one or two roundings, relative to the terms
    # s_i (δ_ij + |s_j|) (tests/_registry.py: 1.5 ulp of them), or
    # half the subnormal spacing each near underflow.
    high = oracle_dtype(cdt)
    row = joined_rows(s_c.reshape(s_c.shape or (1,)), axis).astype(high)
    with np.errstate(all="ignore"):
        eye = np.eye(row.shape[-1], dtype=high)
        expected = row[..., :, None] * (eye - row[..., None, :])
        terms = np.abs(row[..., :, None]) * (eye + np.abs(row[..., None, :]))
        rows = (np.isfinite(terms) & (terms < np.finfo(cdt).max)).all((-2, -1), keepdims=True)
        bound = 2 * np.finfo(cdt).eps * terms + 2 * np.finfo(cdt).smallest_subnormal
        expected, bound = in_result_dtype(rdt, expected, bound)
    assert_within(result, expected, bound, rows)


test_fuzz_jacobian = fuzz(check_jacobian, jacobian_cases())


# --------------------------------------------------------------------------
# the fused loss
# --------------------------------------------------------------------------

@st.composite
def cross_entropy_cases(draw):
    x = draw(arrays())
    axis = class_axis(draw, x.ndim)
    ndim = max(x.ndim, 1)
    if isinstance(axis, int) and -ndim <= axis < ndim:
        batch = np.moveaxis(np.empty(x.shape or (1,)), axis, -1).shape[:-1]
        n = (x.shape or (1,))[axis]
    else:
        batch, n = x.shape[:-1], (x.shape or (1,))[-1]
    kind = draw(st.sampled_from(["index"] * 4 + ["probs"] * 4 + ["bool", "wrong shape"]))
    if kind == "index":
        values = st.integers(-1, n) if rarely(draw) else st.integers(0, max(n - 1, 0))
        target = np.array(draw(st.lists(values, min_size=int(np.prod(batch)),
                                        max_size=int(np.prod(batch)))), dtype=np.int64)
        target = target.reshape(batch).astype(draw(st.sampled_from(["<i8", "<i4", "|u1", ">i2"])))
    elif kind == "probs":
        target = draw(arrays(dtypes=FLOAT_DTYPES, shape=x.shape, reshape=False))
    elif kind == "bool":
        target = np.zeros(x.shape, bool)
    else:
        target = np.zeros(x.shape + (2,), np.float64)
    reduction = draw(st.sampled_from(["mean", "sum", "none"] * 3 + ["max"]))
    return x, target, axis, reduction, draw(st.booleans())


@quiet
def check_cross_entropy(case):
    x, target, axis, reduction, return_grad = case
    errors = set()
    if reduction not in ("mean", "sum", "none"):
        errors.add(ValueError)
    if is_unsupported(x.dtype) or target.dtype.kind not in "iuf":
        errors.add(TypeError)
    errors |= single_axis_errors(axis, x.ndim)
    is_index = target.dtype.kind in "iu"
    if not (errors & {TypeError, AxisError}):
        moved = np.moveaxis(np.empty(x.shape or (1,)), axis, -1).shape
        batch, n = moved[:-1], moved[-1]
        if target.shape != (batch if is_index else x.shape):
            errors.add(ValueError)
        elif is_index and ((target < 0) | (target >= n)).any():
            errors.add(IndexError)
    result = call(fs.softmax_cross_entropy, x, target, axis, reduction=reduction,
                  return_grad=return_grad, errors=errors)
    if errors:
        return

    rdt = result_dtype(x.dtype)
    grad_dtype = rdt if is_index else np.result_type(rdt, result_dtype(target.dtype))
    cdt = compute_dtype(grad_dtype)
    loss, grad = result if return_grad else (result, None)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == batch and loss.dtype == cdt
    else:
        assert isinstance(loss, np.generic) and loss.dtype == cdt
    if return_grad:
        assert grad.shape == x.shape and grad.dtype == grad_dtype
    x_c = canonical(x, cdt)
    t_c = canonical(target, np.int64 if is_index else cdt)
    if same_path(x, target):
        plain = fs.softmax_cross_entropy(x_c, t_c, axis, reduction=reduction,
                                         return_grad=return_grad)
        plain_loss, plain_grad = plain if return_grad else (plain, None)
        assert_identical(loss, plain_loss)
        if return_grad:
            assert_identical(grad, plain_grad.astype(grad_dtype))

    # Against the reference in higher precision, row by row.
    high = oracle_dtype(cdt)
    logits = np.moveaxis(x_c.reshape(x_c.shape or (1,)), axis, -1).astype(high)
    if is_index:
        t = (np.arange(n) == t_c.reshape(batch + (1,))).astype(high)
    else:
        t = np.moveaxis(t_c.reshape(t_c.shape or (1,)), axis, -1).astype(high)
    eps, tiny = np.finfo(cdt).eps, np.finfo(cdt).smallest_subnormal
    with np.errstate(all="ignore"):
        m = logits.max(-1, keepdims=True, initial=-np.inf)  # n may be 0
        log_total = np.log(np.exp(logits - m).sum(-1, keepdims=True))
        shifted = np.where(t == 0, 0, logits - m)  # a zero weight on -inf counts 0
        expected_loss = -(t * (shifted - log_total)).sum(-1)
        total_t = t.sum(-1, keepdims=True)
        probs = np.exp(logits - m - log_total)
        expected_grad = probs * total_t - t
        # The loss sums t_k (x_k - m) and T log S: (n + 4) ulp of its terms.
        # The gradient s_j T - t_j: 5 roundings of its terms, or half the
        # subnormal spacing each near underflow (the exp, the scaling).
        loss_terms = (np.abs(t) * (1 + np.abs(log_total) + np.abs(shifted))).sum(-1)
        grad_terms = probs * np.abs(total_t) + np.abs(t)
        finite_x = np.isfinite(logits) | (logits == -np.inf)  # -inf is a mask
        rows = (finite_x.all(-1) & np.isfinite(t).all(-1) & np.isfinite(m[..., 0])
                & np.isfinite(expected_loss) & (loss_terms < np.finfo(cdt).max / (n + 4))
                & np.isfinite(grad_terms).all(-1))
        loss_bound = (n + 4) * eps * loss_terms + 2 * tiny
        grad_bound = 5 * eps * grad_terms + 4 * tiny * (1 + np.abs(total_t))
        if reduction != "none":
            # the compensated sum of the row losses adds about one rounding
            expected_loss, loss_bound = expected_loss.sum(), loss_bound.sum() + eps * np.abs(expected_loss).sum()
            rows = rows.all()
            if reduction == "mean":
                count = max(int(np.prod(batch)), 1)
                expected_loss, loss_bound = expected_loss / count, loss_bound / count
        if return_grad and reduction == "mean":
            count = max(int(np.prod(batch)), 1)
            expected_grad, grad_bound = expected_grad / count, grad_bound / count
    if not (reduction == "mean" and not np.prod(batch)):  # NaN by definition
        assert_within(loss, np.asarray(expected_loss), loss_bound, rows)
    if return_grad:
        grad_rows = np.moveaxis(grad.reshape(x.shape or (1,)), axis, -1)
        with np.errstate(all="ignore"):
            expected_grad, grad_bound = in_result_dtype(grad_dtype, expected_grad, grad_bound)
        assert_within(grad_rows, expected_grad, grad_bound, rows[..., None])


test_fuzz_cross_entropy = fuzz(check_cross_entropy, cross_entropy_cases())


# --------------------------------------------------------------------------
# findings
# --------------------------------------------------------------------------

# Found by the fuzz: the exp of x - max added an integer to the bits of a NaN
# with a payload (R's NA, for one) and so made a number of it.
@pytest.mark.parametrize("nan", [R_NA, -R_NA, F32_NAN_PAYLOAD_1], ids=["R NA", "-R NA", "f32"])
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=["softmax", "log_softmax"])
def test_any_nan_makes_its_row_nan(func, nan):
    # docs/api.rst, section Special values:
    # "a row ... that holds a NaN ... yields NaN in every entry of that row"
    x = np.array([[0.0, 1.0, nan], [0.0, 1.0, 2.0]], dtype=np.asarray(nan).dtype)
    assert np.isnan(x[0, 2])
    result = func(x)
    assert np.isnan(result[0]).all(), result[0]
    assert np.isfinite(result[1]).all()
    loss = fs.softmax_cross_entropy(x[:1], np.array([0]))
    assert np.isnan(loss), loss


class AlignmentSpy:
    """Stands in for the kernel module: every kernel call first checks
    that its arrays are aligned (and fails before the call if not, so that
    a sanitized build never sees the misaligned loads).  The entries of the
    common call check the arrays themselves: they may get misaligned ones,
    and must then turn the call down."""

    CHECKING_ENTRIES = ("is_plain", "softmax_plain", "product_plain", "logsumexp_plain")

    def __init__(self, kernels):
        self.kernels, self.calls = kernels, 0

    def __getattr__(self, name):
        attr = getattr(self.kernels, name)
        if not callable(attr):
            return attr

        def checked(*args):
            arrays = [a for a in args if isinstance(a, np.ndarray)]
            if name in self.CHECKING_ENTRIES:
                result = attr(*args)
                assert aligned(*arrays) or result is None or result is False, (
                    f"{name} takes a misaligned array")
                self.calls += result is not None and result is not False
                return result
            assert aligned(*arrays), f"{name} gets a misaligned array"
            self.calls += bool(arrays)  # a call on data, not omp_max_threads()
            return attr(*args)
        return checked


# Found by the fuzz under UBSan: misaligned arrays (NumPy allows them; dask
# workers receive them) reached the kernels, whose loads of them are
# undefined behaviour in C.  The Python layer copies them now.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_get_aligned_arrays_only(dtype):
    itemsize = np.dtype(dtype).itemsize
    buffer = np.zeros(3 * 8 * itemsize + 1, np.uint8)
    x = np.ndarray((3, 8), dtype, buffer=buffer, offset=1)  # one byte off
    x[...] = np.arange(24).reshape(3, 8) / 7
    assert not x.flags.aligned
    spy = AlignmentSpy(_backend.kernels)
    index_buffer = np.zeros(3 * 8 + 1, np.uint8)
    index = np.ndarray((3,), np.int64, buffer=index_buffer, offset=1)  # class 0, one byte off
    with _backend.use(spy):
        fs.softmax(x)
        fs.log_softmax(x, axis=0)
        fs.softmax_vjp(x, x)
        fs.softmax_jacobian(x)
        fs.softmax_cross_entropy(x, np.zeros(3, np.int64), return_grad=True)
        fs.softmax_cross_entropy(x, x)
        fs.softmax(x.copy(), out=np.ndarray((3, 8), dtype, buffer=buffer, offset=1))
        fs.softmax_cross_entropy(x.copy(), index)
    assert spy.calls >= 8  # each of the 8 calls reached a kernel


# The products' fast path (C-contiguous inputs of one dtype) checked that
# the first input was aligned, not the second (found by .ci/sanitizers in a
# dask worker).
@pytest.mark.parametrize("func", [fs.softmax_jvp, fs.softmax_vjp, fs.log_softmax_vjp])
def test_products_with_one_misaligned_input(func):
    buffer = np.zeros(3 * 8 * 8 + 1, np.uint8)
    v = np.ndarray((3, 8), np.float64, buffer=buffer, offset=1)  # one byte off
    v[...] = 0.5
    s = np.full((3, 8), 0.125)
    spy = AlignmentSpy(_backend.kernels)
    with _backend.use(spy):
        func(s, v)
    assert spy.calls >= 1


# --------------------------------------------------------------------------
# a long, time-bounded run
# --------------------------------------------------------------------------

FUZZ_SECONDS = float(os.environ.get("FASTSOFTMAX_FUZZ_SECONDS") or 0)
TARGETS = [(check_forward, FORWARD_STRATEGIES), (check_products, PRODUCT_STRATEGIES),
           (check_jacobian, (jacobian_cases(),)), (check_cross_entropy, (cross_entropy_cases(),))]


@pytest.mark.skipif(not FUZZ_SECONDS, reason="set FASTSOFTMAX_FUZZ_SECONDS for a long run")
def test_fuzz_for_a_while():
    """Every target, 500 fresh random examples at a time, until the time is up."""
    deadline = time.monotonic() + FUZZ_SECONDS
    rounds = 0
    while time.monotonic() < deadline:
        for body, strategies in TARGETS:
            fuzz(body, *strategies, max_examples=500, derandomize=False, database=None)()
        rounds += 1
    print(f"fuzzed for {FUZZ_SECONDS:.0f} s: {rounds} rounds of 500 examples per target")
