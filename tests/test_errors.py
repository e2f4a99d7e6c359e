"""Bad arguments to every public function raise a specific exception whose
message names the argument and the bad value, before anything is written
(docs/api.rst, section Errors; the table in docs/errors.rst lists the messages).

Each error test fills `out` (or, in place, the input itself) with a
sentinel and checks it is untouched after the error.  The tables below run
every case through every function it applies to.  An `out` that overlaps an
input in part is no error: the result is that of a separate `out`.
"""

import copy
import re
from pathlib import Path

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _backend

from _registry import (ANY_AXIS_NAMES, FUNCTIONS, PRODUCT_NAMES, SAME_SHAPE_NAMES,
                       SINGLE_AXIS_NAMES, WITH_OUT_NAMES)

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

SENTINEL = -12345.0


def sentinel_out(shape=(2, 3), dtype=np.float64, order="C"):
    return np.full(shape, SENTINEL, dtype=dtype, order=order)


def assert_untouched(*arrays):
    for a in arrays:
        assert (np.asarray(a) == SENTINEL).all(), "written to before the error was raised"


# --------------------------------------------------------------------------
# The functions and their array arguments
# --------------------------------------------------------------------------

# _registry.FUNCTIONS: each function's .fast, .args (the names of its array
# arguments, as the messages spell them) and .has_out

def inputs_for(name, shape=(2, 3), dtype=np.float64):
    """Valid array arguments of `name` for data of `shape`, filled with the
    sentinel (no function checks the values); class indices for the loss."""
    if name == "softmax_cross_entropy":
        batch = shape[:-1] if shape else ()
        return [np.full(shape, SENTINEL, dtype), np.zeros(batch, np.int64)]
    return [np.full(shape, SENTINEL, dtype) for _ in FUNCTIONS[name].args]


def result_shape(name, shape=(2, 3)):
    return FUNCTIONS[name].result_shape(shape)


def out_kwargs(name, shape=(2, 3), dtype=np.float64):
    if not FUNCTIONS[name].has_out:
        return {}
    return {"out": sentinel_out(result_shape(name, shape), dtype)}


ARG_SLOTS = [pytest.param(name, slot, id=f"{name}-{arg}")
             for name, call in FUNCTIONS.items() for slot, arg in enumerate(call.args)]


# --------------------------------------------------------------------------
# Unsupported array arguments: wrong dtypes, masked arrays, ragged lists
# --------------------------------------------------------------------------

def _bad_inputs():
    cases = []
    for dtype in [np.complex64, np.complex128, np.clongdouble, np.longdouble, object,
                  "U3", "S3", "datetime64[s]", "timedelta64[s]"]:
        dt = np.dtype(dtype)
        if dt.kind == "f" and dt.itemsize <= 8:  # long double is double here
            continue
        data = np.zeros((2, 3), dtype=dt) if dt.kind not in "US" else np.full((2, 3), "ab", dt)
        cases.append(pytest.param(data, str(dt), id=str(dt)))
    cases.append(pytest.param([["a", "b", "c"], ["d", "e", "f"]], "<U1", id="list of strings"))
    cases.append(pytest.param("abc", "<U3", id="str"))
    cases.append(pytest.param(None, "object", id="None"))
    cases.append(pytest.param([[1.0, None, 2.0], [0.0, 0.0, 0.0]], "object",
                              id="list with None"))
    cases.append(pytest.param([[10 ** 400, 0.0, 0.0]] * 2, "object", id="huge int"))
    return cases


# docs/api.rst, section Dtypes:
# "Complex, object, string inputs raise `TypeError` with a message that
# names the dtype."  (The derivatives and the loss follow the forward rules.)
@pytest.mark.parametrize("bad, dtype_name", _bad_inputs())
@pytest.mark.parametrize("name, slot", ARG_SLOTS)
def test_unsupported_dtype(name, slot, bad, dtype_name):
    call = FUNCTIONS[name]
    shape = np.shape(bad)
    inputs = inputs_for(name, shape)
    if name == "softmax_cross_entropy" and slot == 1:
        inputs[0] = np.full(shape, SENTINEL)  # the probability-target shape
    inputs[slot] = bad
    kwargs = out_kwargs(name, shape)
    message = rf"\b{call.args[slot]} has dtype {re.escape(dtype_name)}(?!\w)"
    with pytest.raises(TypeError, match=message):
        call.fast(*inputs, **kwargs)
    assert_untouched(*kwargs.values(), *(a for i, a in enumerate(inputs) if i != slot
                                        and a.dtype.kind == "f"))
    with pytest.raises(TypeError, match=message):  # the fast paths too: no out
        call.fast(*inputs)


@pytest.mark.parametrize("name, slot", ARG_SLOTS)
def test_masked_array(name, slot):
    call = FUNCTIONS[name]
    inputs = inputs_for(name)
    inputs[slot] = np.ma.masked_array(inputs[slot], mask=np.ones(inputs[slot].shape, bool))
    kwargs = out_kwargs(name)
    with pytest.raises(TypeError, match=rf"\b{call.args[slot]} is a masked array"):
        call.fast(*inputs, **kwargs)
    assert_untouched(*kwargs.values())


@pytest.mark.parametrize("name, slot", ARG_SLOTS)
def test_ragged_list(name, slot):
    # NumPy's own message says what is wrong, but not which argument
    call = FUNCTIONS[name]
    inputs = inputs_for(name)
    inputs[slot] = [[0.0, 1.0, 2.0], [0.0]] if inputs[slot].ndim == 2 else [[0], [1, 2]]
    kwargs = out_kwargs(name)
    with pytest.raises(ValueError, match=rf"^{call.args[slot]} cannot be converted to an "
                                         rf"array: .*inhomogeneous"):
        call.fast(*inputs, **kwargs)
    assert_untouched(*kwargs.values())


def test_bool_class_target():
    # docs/api.rst, section Fused loss:
    # "target of an integer dtype is class indices ...; of a floating
    # dtype it is probabilities": bool is neither
    for target in [np.zeros(2, bool), np.zeros((2, 3), bool)]:
        with pytest.raises(TypeError, match=r"\btarget has dtype bool\b"):
            fs.softmax_cross_entropy(np.zeros((2, 3)), target)


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------

def _wrong_shapes(shape):
    return {"reversed": shape[::-1], "extra axis": shape + (1,), "flat": (int(np.prod(shape)),),
            "0-d": (), "longer": shape[:-1] + (shape[-1] + 1,)}


# docs/api.rst, section out=: "A wrong shape or dtype, or a read-only `out`, raises
# `ValueError`/`TypeError` before anything is written."
@pytest.mark.parametrize("x_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, kind", [
    (name, kind) for name in WITH_OUT_NAMES for kind, shape in _wrong_shapes(
        result_shape(name)).items() if shape != result_shape(name)])  # (reversed (2,))
def test_out_wrong_shape(name, x_dtype, kind):
    want = result_shape(name)
    out_shape = _wrong_shapes(want)[kind]
    out = sentinel_out(out_shape, x_dtype)
    message = re.escape(f"out has shape {out_shape}, but the result has shape {want}")
    with pytest.raises(ValueError, match=message):
        FUNCTIONS[name].fast(*inputs_for(name, dtype=x_dtype), out=out)
    assert_untouched(out)


WRONG_OUT_DTYPES = [
    ((np.float64,), np.float32, np.float64),
    ((np.float32,), np.float64, np.float32),
    ((np.float16,), np.float32, np.float16),   # the result of float16 input is float16
    ((np.int64,), np.int64, np.float64),       # ... of integer input float64
    ((np.int32,), np.float32, np.float64),
    ((np.bool_,), np.float32, np.float64),
    ((np.float64,), np.complex128, np.float64),
    ((np.float64,), np.longdouble, np.float64),
    ((np.float32, np.float64), np.float32, np.float64),  # mixed computes in float64
]


@pytest.mark.parametrize("name, x_dtypes, out_dtype, result", [
    pytest.param(name, x_dtypes, out_dtype, result,
                 id=f"{name}-{'-'.join(np.dtype(d).name for d in x_dtypes)}-"
                    f"out-{np.dtype(out_dtype).name}")
    for name in WITH_OUT_NAMES for x_dtypes, out_dtype, result in WRONG_OUT_DTYPES
    if len(x_dtypes) <= len(FUNCTIONS[name].args)  # mixed: only with two arrays
])
def test_out_wrong_dtype(name, x_dtypes, out_dtype, result):
    dtypes = (x_dtypes * 2)[:len(FUNCTIONS[name].args)] if len(x_dtypes) == 1 else x_dtypes
    inputs = [a.astype(dt) for a, dt in zip(inputs_for(name), dtypes)]
    out = sentinel_out(result_shape(name), out_dtype)
    message = (re.escape(f"out has dtype {np.dtype(out_dtype).str} ({np.dtype(out_dtype)}), "
                         f"but the result has dtype {np.dtype(result)}"))
    with pytest.raises(TypeError, match=message):
        FUNCTIONS[name].fast(*inputs, out=out)
    assert_untouched(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", WITH_OUT_NAMES)
def test_out_byteswapped(name, dtype):
    # docs/api.rst, section Dtypes: "the result is always native byte order", so a non-native out
    # has the wrong dtype
    swapped = np.dtype(dtype).newbyteorder()
    out = sentinel_out(result_shape(name), swapped)
    with pytest.raises(TypeError, match=re.escape(f"out has dtype {swapped.str}")):
        FUNCTIONS[name].fast(*inputs_for(name, dtype=dtype), out=out)
    assert_untouched(out)


@pytest.mark.parametrize("name, kind", [
    (name, kind) for name in WITH_OUT_NAMES for kind in ("flag", "broadcast", "in place")
    if not (kind == "in place" and name not in SAME_SHAPE_NAMES)  # no same-shape input
])
def test_out_read_only(name, kind):
    inputs = inputs_for(name)
    if kind == "flag":
        out = sentinel_out(result_shape(name))
        out.flags.writeable = False
    elif kind == "broadcast":  # a zero-stride view is read-only too
        out = np.broadcast_to(sentinel_out((1,) + result_shape(name)[1:]), result_shape(name))
    else:  # out=x on a read-only x
        inputs[0].flags.writeable = False
        out = inputs[0]
    with pytest.raises(ValueError, match=r"^out is read-only"):
        FUNCTIONS[name].fast(*inputs, out=out)
    assert_untouched(out)


@pytest.mark.parametrize("out", [[[0.0] * 3] * 2, (0.0, 0.0, 0.0), 0.0, "out"],
                         ids=["list", "tuple", "float", "str"])
@pytest.mark.parametrize("name", WITH_OUT_NAMES)
def test_out_not_ndarray(name, out):
    before = copy.deepcopy(out)
    shape = np.shape(out)
    with pytest.raises(TypeError,
                       match=rf"^out must be a numpy\.ndarray, got {type(out).__name__}$"):
        FUNCTIONS[name].fast(*inputs_for(name, shape), out=out)
    assert out == before


@pytest.mark.parametrize("name", WITH_OUT_NAMES)
def test_out_masked_array(name):
    # a masked out would keep its mask over the written data: rejected as
    # a masked input is
    data = sentinel_out(result_shape(name))
    out = np.ma.masked_array(data, mask=np.zeros(data.shape, bool))
    with pytest.raises(TypeError, match=r"^out is a masked array"):
        FUNCTIONS[name].fast(*inputs_for(name), out=out)
    assert_untouched(data)


# --------------------------------------------------------------------------
# out= overlapping an input partially: the result is that of a separate out
# --------------------------------------------------------------------------

# (input view, out view) of one (41, 44) buffer that overlap without being
# the same array, by name; the views are (20, 20)
OVERLAPS = {
    # the same rows, shifted by one column
    "shifted columns": (lambda b: b[:20, :20], lambda b: b[:20, 1:21]),
    # the next row
    "shifted rows": (lambda b: b[:20, :20], lambda b: b[1:21, :20]),
    # the same memory, rows in the opposite order
    "reversed": (lambda b: b[:20, :20], lambda b: b[:20, :20][::-1]),
    # the same memory, transposed
    "transposed": (lambda b: b[:20, :20], lambda b: b[:20, :20].T),
    # C-contiguous both, out starting in the middle of the input's second row
    "flat offset": (lambda b: b.reshape(-1)[:400].reshape(20, 20),
                    lambda b: b.reshape(-1)[22:422].reshape(20, 20)),
}


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("overlap", list(OVERLAPS))
@pytest.mark.parametrize("name", SAME_SHAPE_NAMES)
def test_out_partially_overlapping_an_input(name, overlap, dtype, axis, rng):
    # out overlaps one input (for the products: each in turn) without being
    # it.  20 columns: axis=0 of a C-contiguous input takes the column kernel.
    n_args = len(FUNCTIONS[name].args)
    in_view, out_view = OVERLAPS[overlap]
    for slot in range(n_args):
        buffer = rng.random((41, 44)).astype(dtype)
        inputs = [rng.random((20, 20)).astype(dtype) for _ in range(n_args)]
        inputs[slot] = in_view(buffer)
        expected = FUNCTIONS[name].fast(*inputs, axis=axis)  # before anything is written
        out = out_view(buffer)
        assert np.may_share_memory(out, inputs[slot])
        assert FUNCTIONS[name].fast(*inputs, axis=axis, out=out) is out
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("s_start, out_start", [(0, 0), (0, 5), (30, 0), (20, 25)])
def test_jacobian_out_overlapping_its_input(s_start, out_start, rng):
    buffer = rng.random(100)
    s = buffer[s_start:s_start + 12].reshape(4, 3)
    out = buffer[out_start:out_start + 36].reshape(4, 3, 3)
    expected = fs.softmax_jacobian(s)
    assert np.may_share_memory(out, s)
    assert fs.softmax_jacobian(s, out=out) is out
    np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------
# axis
# --------------------------------------------------------------------------

# docs/api.rst, section Axes: "An out-of-range or repeated axis raises
# `numpy.exceptions.AxisError` (a `ValueError` and `IndexError`, as NumPy does)."
@pytest.mark.parametrize("shape, axis, bad", [
    ((2, 3), 2, 2), ((2, 3), -3, -3), ((2, 3), 100, 100), ((2, 3), (0, 2), 2),
    ((2, 3), (-3,), -3), ((5,), 1, 1), ((), 1, 1), ((), -2, -2),
    ((2, 3), np.int64(7), 7),
])
@pytest.mark.parametrize("name", ANY_AXIS_NAMES)
def test_any_axis_out_of_range(name, shape, axis, bad):
    inputs = inputs_for(name, shape)
    out = sentinel_out(shape)
    with pytest.raises(AxisError, match=rf"^axis {bad} is out of bounds") as info:
        FUNCTIONS[name].fast(*inputs, axis=axis, out=out)
    assert isinstance(info.value, ValueError) and isinstance(info.value, IndexError)
    assert_untouched(out)
    with pytest.raises(AxisError):  # in place: the input itself is out
        FUNCTIONS[name].fast(*inputs, axis=axis, out=inputs[0])
    assert_untouched(*inputs)


@pytest.mark.parametrize("shape, axis", [
    ((2, 3), (0, 0)), ((2, 3), (1, -1)), ((2, 3, 4), (0, 2, -1)), ((), (0, 0)),
    ((2, 3), (np.int32(0), 0)),
])
@pytest.mark.parametrize("name", ANY_AXIS_NAMES)
def test_any_axis_repeated(name, shape, axis):
    inputs = inputs_for(name, shape)
    out = sentinel_out(shape)
    with pytest.raises(AxisError, match=re.escape(f"repeated axis in axis={axis!r}")) as info:
        FUNCTIONS[name].fast(*inputs, axis=axis, out=out)
    assert isinstance(info.value, ValueError) and isinstance(info.value, IndexError)
    assert_untouched(out)
    with pytest.raises(AxisError):
        FUNCTIONS[name].fast(*inputs, axis=axis, out=inputs[0])
    assert_untouched(*inputs)


@pytest.mark.parametrize("axis", [2, -3, 100, -100, np.int64(2)], ids=repr)
@pytest.mark.parametrize("name", SINGLE_AXIS_NAMES)
def test_single_axis_out_of_range(name, axis):
    inputs = inputs_for(name)
    kwargs = out_kwargs(name)
    with pytest.raises(AxisError, match=rf"^axis {int(axis)} is out of bounds for array "
                                        rf"of dimension 2") as info:
        FUNCTIONS[name].fast(*inputs, axis=axis, **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, IndexError)
    assert_untouched(*kwargs.values(), inputs[0])


NOT_AN_INT = [1.5, 1.0, "0", True, np.True_, np.float64(0), np.float32(1), [0], [0, 1],
              1 + 0j, np.array([1])]


# docs/api.rst, section Axes: "`axis`: an int (negative allowed), a tuple of ints, or `None`"
@pytest.mark.parametrize("axis", NOT_AN_INT + [(0, 1.0), (0, "1"), (True,)], ids=repr)
@pytest.mark.parametrize("name", ANY_AXIS_NAMES)
def test_any_axis_not_an_int(name, axis):
    inputs = inputs_for(name)
    out = sentinel_out()
    message = rf"^axis must be an int, a tuple of ints or None, got {re.escape(repr(axis))}$"
    with pytest.raises(TypeError, match=message):
        FUNCTIONS[name].fast(*inputs, axis=axis, out=out)
    assert_untouched(out, *inputs)


# docs/api.rst, section Fused loss: the loss takes a single int (class) axis.
@pytest.mark.parametrize("axis", NOT_AN_INT + [(0,), (0, 1), (), None], ids=repr)
@pytest.mark.parametrize("name", SINGLE_AXIS_NAMES)
def test_single_axis_not_an_int(name, axis):
    inputs = inputs_for(name)
    kwargs = out_kwargs(name)
    message = rf"^{name} takes a single int axis, got axis={re.escape(repr(axis))}$"
    with pytest.raises(TypeError, match=message):
        FUNCTIONS[name].fast(*inputs, axis=axis, **kwargs)
    assert_untouched(*kwargs.values(), inputs[0])


@pytest.mark.parametrize("axis", [np.int64(-1), np.uint8(1), np.int32(0)], ids=repr)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_numpy_integer_axis_is_accepted(name, axis, rng):
    inputs = [rng.random((2, 3))] * len(FUNCTIONS[name].args)
    if name == "softmax_cross_entropy":
        inputs[1] = rng.random((2, 3))  # probabilities: no index shape to match
    np.testing.assert_array_equal(FUNCTIONS[name].fast(*inputs, axis=axis),
                                  FUNCTIONS[name].fast(*inputs, axis=int(axis)))


def test_numpy_integers_in_an_axis_tuple_are_accepted():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(fs.softmax(x, axis=(np.int32(0), 1)),
                                  fs.softmax(x, axis=(0, 1)))


@pytest.mark.parametrize("name", WITH_OUT_NAMES)
def test_axis_checked_before_out(name):
    # both wrong: nothing is written either way
    out = sentinel_out((3, 3))
    with pytest.raises((AxisError, ValueError)):
        FUNCTIONS[name].fast(*inputs_for(name), axis=5, out=out)
    assert_untouched(out)


# --------------------------------------------------------------------------
# Derivatives: s and v/g of different shapes
# --------------------------------------------------------------------------

# docs/api.rst, section Derivatives:
# "`s` and `v`/`g` must have the same shape (no broadcasting), else
# `ValueError` naming both shapes."
@pytest.mark.parametrize("other", [(3, 2), (2, 3, 1), (1, 3), (2, 1), (6,), (), (2, 4)],
                         ids=str)
@pytest.mark.parametrize("slot", [0, 1], ids=["first", "second"])
@pytest.mark.parametrize("name", PRODUCT_NAMES)
def test_products_shape_mismatch(name, slot, other):
    a_name, b_name = FUNCTIONS[name].args
    shapes = [(2, 3), (2, 3)]
    shapes[slot] = other
    a, b = np.full(shapes[0], SENTINEL), np.full(shapes[1], SENTINEL)
    out = sentinel_out(shapes[0])
    message = re.escape(f"{a_name} and {b_name} must have the same shape, got "
                        f"{a_name}.shape={shapes[0]} and {b_name}.shape={shapes[1]}")
    with pytest.raises(ValueError, match=message):
        FUNCTIONS[name].fast(a, b, out=out)
    assert_untouched(out, a, b)
    with pytest.raises(ValueError, match=message):  # in place
        FUNCTIONS[name].fast(a, b, out=a)
    assert_untouched(a, b)


# --------------------------------------------------------------------------
# Cross-entropy: target shape and class indices
# --------------------------------------------------------------------------

# docs/api.rst, section Fused loss:
# "`target` of an integer dtype is class indices with the shape of
# `logits` without `axis`; of a floating dtype it is probabilities with the
# shape of `logits` ... Any other shape raises `ValueError` naming both shapes."
@pytest.mark.parametrize("logits_shape, axis, target_shape", [
    ((2, 3), -1, (3,)), ((2, 3), -1, (2, 1)), ((2, 3), -1, (1,)), ((2, 3), -1, ()),
    ((2, 3), -1, (2, 3)), ((2, 3), 0, (2,)), ((3, 4, 5), -1, (3, 5)), ((), 0, (1,)),
])
def test_index_target_wrong_shape(logits_shape, axis, target_shape):
    batch = tuple(d for i, d in enumerate(logits_shape) if i != axis % len(logits_shape)) \
        if logits_shape else ()
    message = (re.escape(f"logits.shape={logits_shape}, so target.shape should be {batch}, "
                         f"got {target_shape}"))
    with pytest.raises(ValueError, match=message):
        fs.softmax_cross_entropy(np.zeros(logits_shape), np.zeros(target_shape, np.int64),
                                 axis=axis)


@pytest.mark.parametrize("target_shape, hint", [
    ((3, 2), False), ((2, 3, 1), False), ((1, 3), False), ((2, 4), False), ((), False),
    ((2,), True),  # the index shape: perhaps meant as indices
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_probability_target_wrong_shape(dtype, target_shape, hint):
    message = re.escape(f"logits.shape=(2, 3), target.shape={target_shape}")
    if hint:
        message += re.escape(" (for class indices use an integer dtype)")
    with pytest.raises(ValueError, match=message + "$"):
        fs.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(target_shape, dtype))


# docs/api.rst, section Errors:
# "A class index out of range raises `IndexError` naming the bad value
# and row."  "Negative indices are out of range (no wrap-around)."
INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


@pytest.mark.parametrize("logits, axis, target, bad, row", [
    (np.zeros((2, 3)), -1, np.array([0, 3]), 3, 1),                   # fast path
    (np.zeros((2, 3)), -1, np.array([-1, 0]), -1, 0),
    (np.zeros((2, 3)), -1, np.array([0, 2 ** 62]), 2 ** 62, 1),
    (np.zeros((2, 3)), -1, np.array([INT64_MIN, 0]), INT64_MIN, 0),
    (np.zeros((2, 3)), -1, np.array([0, INT64_MAX]), INT64_MAX, 1),
    (np.zeros((2, 3)), -1, np.array([0, 2 ** 64 - 1], np.uint64), 2 ** 64 - 1, 1),
    (np.zeros((2, 3)), -1, np.array([-128, 0], np.int8), -128, 0),
    (np.zeros((2, 3)), -1, np.array([0, 255], np.uint8), 255, 1),
    (np.zeros((2, 3)), -1, [5, 0], 5, 0),                             # a list
    (np.zeros((2, 3), np.float16), -1, np.array([0, 7]), 7, 1),       # general path
    (np.zeros((3, 2)), 0, np.array([0, 3]), 3, 1),                    # classes on axis 0
    (np.zeros((2, 2, 3)), -1, np.array([[0, 1], [3, 0]]), 3, (1, 0)),  # a batch grid
    (np.zeros((2, 2, 3)), -1, np.array([[0, 5], [-1, 0]]), 5, (0, 1)),  # the first, C order
    (np.zeros((2, 0)), -1, np.array([0, 0]), 0, 0),                   # no classes at all
    (np.zeros(3), 0, np.array(3), 3, 0),                              # one row
], ids=lambda v: None if isinstance(v, (np.ndarray, list)) else repr(v))
def test_index_out_of_range(logits, axis, target, bad, row):
    n = logits.shape[axis]
    message = (re.escape(f"target index {bad} is out of range for {n} classes "
                         f"(at row {row}); indices must lie in [0, {n})"))
    for reduction in ("mean", "none"):
        for return_grad in (False, True):
            with pytest.raises(IndexError, match=message):
                fs.softmax_cross_entropy(logits, target, axis, reduction=reduction,
                                         return_grad=return_grad)


# The range check lives in the loss kernel itself, and the kernels check the
# shapes they are given, so not even a direct call can read outside a row or
# an array: the loss kernel reports the first bad row and computes nothing.
@pytest.mark.parametrize("keep_losses", [True, False])
@pytest.mark.parametrize("index, bad_row", [([0, 3, -1], 1), ([-1, 0, 0], 0), ([0, 1, 2], -1)])
def test_loss_kernel_checks_indices_before_computing(simd_path, index, bad_row, keep_losses):
    logits = np.zeros((3, 3))
    loss, grad = np.full(3, 7.0), np.full((3, 3), 7.0)
    total, row = _backend.kernels.cross_entropy_rows(
        logits, None, np.array(index, np.int64), loss if keep_losses else None, grad, 1.0, 1)
    assert row == bad_row
    if bad_row >= 0:
        assert np.isnan(total)
        assert (loss == 7.0).all() and (grad == 7.0).all()
    else:
        assert total == pytest.approx(3 * np.log(3))
        assert (grad != 7.0).all()
        if keep_losses:
            np.testing.assert_allclose(loss, np.log(3))


@pytest.mark.parametrize("call, message", [
    (lambda k: k.softmax_rows(np.zeros((3, 4)), np.zeros((2, 4)), 1, False),
     "out: shape (2, 4), the kernel needs (3, 4)"),
    (lambda k: k.softmax_rows(np.zeros((3, 4)), np.zeros((3, 5)), 1, True),
     "out: shape (3, 5), the kernel needs (3, 4)"),
    (lambda k: k.softmax_cols(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)), 1, False),
     "out: shape (2, 3, 5), the kernel needs (2, 3, 4)"),
    (lambda k: k.product_rows(np.zeros((3, 4)), np.zeros((3, 3)), np.zeros((3, 4)), 1, False),
     "b: shape (3, 3), the kernel needs (3, 4)"),
    (lambda k: k.product_rows(np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((4, 4)), 1, True),
     "out: shape (4, 4), the kernel needs (3, 4)"),
    (lambda k: k.softmax_jacobian_rows(np.zeros((3, 4)), np.zeros((3, 4, 3)), 1),
     "out: shape (3, 4, 3), the kernel needs (3, 4, 4)"),
    (lambda k: k.cross_entropy_rows(np.zeros((3, 4)), None, np.zeros(2, np.int64), None, None,
                                    1.0, 1),
     "index: shape (2,), the kernel needs (3,)"),
    (lambda k: k.cross_entropy_rows(np.zeros((3, 4)), np.zeros((3, 3)), None, None, None, 1.0, 1),
     "target: shape (3, 3), the kernel needs (3, 4)"),
    (lambda k: k.cross_entropy_rows(np.zeros((3, 4)), None, np.zeros(3, np.int64),
                                    np.zeros(4), None, 1.0, 1),
     "loss: shape (4,), the kernel needs (3,)"),
    (lambda k: k.cross_entropy_rows(np.zeros((3, 4)), None, np.zeros(3, np.int64), None,
                                    np.zeros((3, 5)), 1.0, 1),
     "grad: shape (3, 5), the kernel needs (3, 4)"),
])
def test_kernels_refuse_mismatched_shapes(simd_path, call, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        call(_backend.kernels)


# docs/api.rst, section Errors: "Any other string raises `ValueError` listing the valid ones."
@pytest.mark.parametrize("reduction", ["avg", "Mean", "MEAN", "", " mean", "sum ", "elementwise",
                                       None, 0, True, ["mean"], np.array(["mean", "sum"])],
                         ids=repr)
def test_bad_reduction(reduction):
    message = (rf"^reduction must be one of 'mean', 'sum', 'none'; "
               rf"got {re.escape(repr(reduction))}$")
    with pytest.raises(ValueError, match=message):
        fs.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction=reduction)


# --------------------------------------------------------------------------
# set_num_threads
# --------------------------------------------------------------------------

@pytest.fixture
def restore_threads():
    before = fs.get_num_threads()
    yield before
    fs.set_num_threads(None)


# docs/api.rst, section Errors: "`n < 1` raises `ValueError`."
@pytest.mark.parametrize("n", [0, -1, -100, np.int64(0), np.int8(-1), -2 ** 70], ids=repr)
def test_set_num_threads_below_one(n, restore_threads):
    with pytest.raises(ValueError,
                       match=rf"^n must be >= 1 \(or None for the default\), got {int(n)}$"):
        fs.set_num_threads(n)
    assert fs.get_num_threads() == restore_threads  # unchanged


@pytest.mark.parametrize("n", [1.5, 2.0, "2", True, False, [2], np.float64(2), 2 + 0j,
                               np.array([2])], ids=repr)
def test_set_num_threads_not_an_int(n, restore_threads):
    with pytest.raises(TypeError,
                       match=rf"^n must be an int >= 1 or None, got {re.escape(repr(n))}$"):
        fs.set_num_threads(n)
    assert fs.get_num_threads() == restore_threads  # unchanged


@pytest.mark.parametrize("n", [2 ** 31, 2 ** 70, np.uint64(2 ** 64 - 1)], ids=repr)
def test_set_num_threads_too_large(n, restore_threads):
    with pytest.raises(ValueError, match=rf"\bn\b.*{int(n)}"):
        fs.set_num_threads(n)
    assert fs.get_num_threads() == restore_threads  # unchanged


# --------------------------------------------------------------------------
# The table of docs/errors.rst shows the real messages
# --------------------------------------------------------------------------

ERRORS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "errors.rst"
EXCEPTIONS = {"TypeError": TypeError, "ValueError": ValueError, "IndexError": IndexError,
              "AxisError": AxisError}


def _documented_errors():
    """(exception, call, message) of each row of the page's table, whose
    last two cells are ``exception`` and ``call`` then ``message``."""
    text = ERRORS_PAGE.read_text(encoding="utf-8")
    table = text.split(".. list-table::", 1)[1]
    table = table[:re.search(r"\n\n(?=\S)", table).start()]  # up to the next paragraph
    cases = []
    for row in re.split(r"\n   \* - ", table)[2:]:  # [0]: the options, [1]: the header
        cells = re.split(r"\n     - ", row)
        exception = re.fullmatch(r"``(\w+)``", cells[2].strip()).group(1)
        call, message = re.findall(r"``(.+?)``", cells[3])
        cases.append((exception, call, message))
    return cases


@pytest.mark.skipif(not ERRORS_PAGE.exists(), reason="no docs folder next to the tests")
def test_documented_messages_are_the_real_ones(restore_threads):
    cases = _documented_errors()
    assert len(cases) >= 25  # the table was found and parsed
    for exception, call, message in cases:
        if "longdouble" in call and str(np.dtype(np.longdouble)) != "float128":
            continue  # the example's message names this platform's long double
        namespace = {"np": np, "fs": fs, "x": np.zeros((2, 3)), "s": np.full((2, 3), 1 / 3)}
        with pytest.raises(EXCEPTIONS[exception]) as info:
            eval(call, namespace)
        assert type(info.value) is EXCEPTIONS[exception], call
        if message.endswith("..."):  # NumPy's own text follows
            assert str(info.value).startswith(message[:-3]), call
        else:
            assert str(info.value) == message, call
