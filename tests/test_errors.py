"""Bad arguments raise a specific exception with a useful message, before
anything is written (API.md, Forward and Threads)."""

import copy
import re

import numpy as np
import pytest

import fastsoftmax as fs

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

FORWARD_FUNCS = [fs.softmax, fs.log_softmax]
FUNC_IDS = ["softmax", "log_softmax"]
SENTINEL = -12345.0


def sentinel_out(shape=(2, 3), dtype=np.float64, order="C"):
    return np.full(shape, SENTINEL, dtype=dtype, order=order)


def assert_untouched(*arrays):
    for a in arrays:
        assert (np.asarray(a) == SENTINEL).all(), "written to before the error was raised"


# --------------------------------------------------------------------------
# unsupported inputs
# --------------------------------------------------------------------------

def _bad_inputs():
    cases = []
    for dtype in [np.complex64, np.complex128, np.clongdouble, np.longdouble, object,
                  "U3", "S3", "datetime64[s]", "timedelta64[s]"]:
        dt = np.dtype(dtype)
        if dt.kind == "f" and dt.itemsize <= 8:  # long double is double here
            continue
        data = np.zeros((2, 3), dtype=dt) if dt.kind not in "US" else np.full((2, 3), "ab", dt)
        cases.append(pytest.param(data, re.escape(str(dt)), id=str(dt)))
    cases.append(pytest.param([["a", "b", "c"], ["d", "e", "f"]], re.escape("<U1"),
                              id="list of strings"))
    cases.append(pytest.param(None, "object", id="None"))
    cases.append(pytest.param([[1.0, None, 2.0], [0.0, 0.0, 0.0]], "object",
                              id="list with None"))
    return cases


# API.md: "Complex, object, string inputs raise `TypeError` with a message that
# names the dtype."
@pytest.mark.parametrize("x, dtype_name", _bad_inputs())
@pytest.mark.parametrize("func", FORWARD_FUNCS, ids=FUNC_IDS)
def test_unsupported_dtype(func, x, dtype_name):
    shape = np.shape(x) if x is not None else ()
    out = sentinel_out(shape)
    with pytest.raises(TypeError, match=dtype_name):
        func(x, out=out)
    assert_untouched(out)
    with pytest.raises(TypeError, match=dtype_name):
        func(x)


@pytest.mark.parametrize("func", FORWARD_FUNCS, ids=FUNC_IDS)
def test_masked_array(func):
    x = np.ma.masked_array(np.zeros((2, 3)), mask=[[0, 1, 0], [0, 0, 0]])
    out = sentinel_out()
    with pytest.raises(TypeError, match="masked array"):
        func(x, out=out)
    assert_untouched(out)


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------

# API.md: "A wrong shape or dtype, or a read-only `out`, raises
# `ValueError`/`TypeError` before anything is written."
@pytest.mark.parametrize("x_dtype, out_shape, out_dtype", [
    (np.float64, (3, 2), np.float64),
    (np.float64, (2, 3, 1), np.float64),
    (np.float64, (6,), np.float64),
    (np.float64, (), np.float64),
    (np.float32, (2, 4), np.float32),
])
@pytest.mark.parametrize("func", FORWARD_FUNCS, ids=FUNC_IDS)
def test_out_wrong_shape(func, x_dtype, out_shape, out_dtype):
    x = np.zeros((2, 3), x_dtype)
    out = sentinel_out(out_shape, out_dtype)
    with pytest.raises(ValueError, match=r"out has shape .*result has shape"):
        func(x, out=out)
    assert_untouched(out)


@pytest.mark.parametrize("x_dtype, out_dtype", [
    (np.float64, np.float32),
    (np.float32, np.float64),
    (np.float16, np.float32),   # the result of float16 input is float16
    (np.int64, np.int64),       # ... of integer input float64
    (np.int32, np.float32),
    (np.float64, np.complex128),
    (np.float64, np.longdouble),
])
@pytest.mark.parametrize("func", FORWARD_FUNCS, ids=FUNC_IDS)
def test_out_wrong_dtype(func, x_dtype, out_dtype):
    x = np.zeros((2, 3), x_dtype)
    out = sentinel_out((2, 3), out_dtype)
    with pytest.raises(TypeError, match=r"out has dtype .*result has dtype"):
        func(x, out=out)
    assert_untouched(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("func", FORWARD_FUNCS, ids=FUNC_IDS)
def test_out_byteswapped(func, dtype):
    # API.md: "the result is always native byte order", so a non-native out
    # has the wrong dtype
    x = np.zeros((2, 3), dtype)
    out = sentinel_out((2, 3), np.dtype(dtype).newbyteorder())
    with pytest.raises(TypeError, match=r"out has dtype"):
        func(x, out=out)
    assert_untouched(out)


@pytest.mark.parametrize("func", FORWARD_FUNCS, ids=FUNC_IDS)
def test_out_read_only(func):
    x = np.zeros((2, 3))
    out = sentinel_out()
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        func(x, out=out)
    assert_untouched(out)
    # a broadcast view is read-only too
    out = np.broadcast_to(sentinel_out((1, 3)), (2, 3))
    with pytest.raises(ValueError, match="read-only"):
        func(x, out=out)
    assert_untouched(out)


@pytest.mark.parametrize("out", [[[0.0] * 3] * 2, (0.0, 0.0, 0.0), 0.0, "out"],
                         ids=["list", "tuple", "float", "str"])
@pytest.mark.parametrize("func", FORWARD_FUNCS, ids=FUNC_IDS)
def test_out_not_ndarray(func, out):
    before = copy.deepcopy(out)
    with pytest.raises(TypeError, match=r"out must be a numpy\.ndarray"):
        func(np.zeros(np.shape(out)), out=out)
    assert out == before


# --------------------------------------------------------------------------
# axis
# --------------------------------------------------------------------------

# API.md: "An out-of-range or repeated axis raises
# `numpy.exceptions.AxisError` (a `ValueError` and `IndexError`, as NumPy does)."
OUT_OF_RANGE, REPEATED = "out of bounds", "repeated"


@pytest.mark.parametrize("shape, axis, message", [
    ((2, 3), 2, OUT_OF_RANGE), ((2, 3), -3, OUT_OF_RANGE), ((2, 3), 100, OUT_OF_RANGE),
    ((2, 3), (0, 2), OUT_OF_RANGE), ((2, 3), (-3,), OUT_OF_RANGE), ((5,), 1, OUT_OF_RANGE),
    ((), 1, OUT_OF_RANGE), ((), -2, OUT_OF_RANGE),
    ((2, 3), (0, 0), REPEATED), ((2, 3), (1, -1), REPEATED),
    ((2, 3, 4), (0, 2, -1), REPEATED), ((), (0, 0), REPEATED),
])
@pytest.mark.parametrize("func", FORWARD_FUNCS, ids=FUNC_IDS)
def test_bad_axis(func, shape, axis, message):
    x = np.full(shape, SENTINEL)
    out = sentinel_out(shape)
    with pytest.raises(AxisError, match=message) as info:
        func(x, axis=axis, out=out)
    assert isinstance(info.value, ValueError) and isinstance(info.value, IndexError)
    assert_untouched(out)
    # in place: x itself is out
    with pytest.raises(AxisError):
        func(x, axis=axis, out=x)
    assert_untouched(x)


@pytest.mark.parametrize("axis", [1.5, 1.0, "0", True, np.True_, [0], [0, 1], (0, 1.0),
                                  (0, "1"), np.float64(0)],
                         ids=repr)
@pytest.mark.parametrize("func", FORWARD_FUNCS, ids=FUNC_IDS)
def test_non_integer_axis(func, axis):
    out = sentinel_out()
    with pytest.raises(TypeError, match="axis must be an int, a tuple of ints or None"):
        func(np.zeros((2, 3)), axis=axis, out=out)
    assert_untouched(out)


@pytest.mark.parametrize("axis", [np.int64(-1), np.uint8(1), (np.int32(0), 1)], ids=repr)
def test_numpy_integer_axis_is_accepted(axis):
    x = np.arange(6.0).reshape(2, 3)
    plain = tuple(int(a) for a in axis) if isinstance(axis, tuple) else int(axis)
    np.testing.assert_array_equal(fs.softmax(x, axis=axis), fs.softmax(x, axis=plain))


@pytest.mark.parametrize("func", FORWARD_FUNCS, ids=FUNC_IDS)
def test_axis_checked_before_out(func):
    # both wrong: nothing is written either way
    out = sentinel_out((3, 3))
    with pytest.raises((AxisError, ValueError)):
        func(np.zeros((2, 3)), axis=5, out=out)
    assert_untouched(out)


def test_derivatives_take_a_single_int_axis():
    # API.md: "`axis` here is a single int (tuples and `None` may be added later)."
    s = np.full((2, 3), 1 / 3)
    out = sentinel_out()
    for axis in [(0, 1), None]:
        with pytest.raises(TypeError, match="single int axis"):
            fs.softmax_jvp(s, np.ones_like(s), axis=axis, out=out)
        assert_untouched(out)


# --------------------------------------------------------------------------
# set_num_threads
# --------------------------------------------------------------------------

@pytest.fixture
def restore_threads():
    before = fs.get_num_threads()
    yield before
    fs.set_num_threads(None)


# API.md: "`n < 1` raises `ValueError`."
@pytest.mark.parametrize("n", [0, -1, -100, np.int64(0)], ids=repr)
def test_set_num_threads_below_one(n, restore_threads):
    with pytest.raises(ValueError, match=r"n must be >= 1"):
        fs.set_num_threads(n)
    assert fs.get_num_threads() == restore_threads  # unchanged


@pytest.mark.parametrize("n", [1.5, 2.0, "2", True, False, [2], np.float64(2)], ids=repr)
def test_set_num_threads_not_an_int(n, restore_threads):
    with pytest.raises(TypeError, match=r"n must be an int >= 1 or None"):
        fs.set_num_threads(n)
    assert fs.get_num_threads() == restore_threads  # unchanged
