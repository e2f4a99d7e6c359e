"""The public math functions: validate, normalise, dispatch.

This is the one place that deals with Python objects.  Every function here
checks all of its arguments before anything is written, brings the data to
the layout the kernels take -- a (rows, n) array with contiguous rows and the
reduced axes last, in float32 or float64 -- calls one kernel, and puts the
result back in the caller's shape, dtype and ``out``.
"""

from __future__ import annotations

import math
import operator
import sys
from math import prod
from typing import Any, Callable, Generic, Literal, SupportsIndex, TypeVar, Union, cast, overload

import numpy as np
from numpy.exceptions import AxisError
from numpy.typing import ArrayLike, NDArray

from . import _backend

# The public math functions, listed once: fastsoftmax and fastsoftmax.dask
# import this tuple (`from ._api import __all__`, which type checkers
# follow) and add their own names to it.  (fastsoftmax.reference keeps its
# own list: it imports nothing but NumPy.)
__all__: tuple[str, ...] = (
    "softmax", "log_softmax", "logsumexp", "softmax_jacobian", "softmax_jvp", "softmax_vjp",
    "log_softmax_vjp", "softmax_cross_entropy")

_F16, _F32, _F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
_KERNEL_DTYPES = (_F32, _F64)  # native byte order: '>f8' != '<f8'
_I64 = np.dtype(np.int64)
_F32_MAX = float(np.finfo(np.float32).max)
_REDUCTIONS = ("mean", "sum", "none")

# Types of the signatures.  A float16/32/64 array keeps its dtype (the
# overloads say so); any other array-like gives some floating dtype.
_FloatT = TypeVar("_FloatT", np.float16, np.float32, np.float64)
_FloatArray = NDArray[np.floating[Any]]
_Axis = Union[SupportsIndex, tuple[SupportsIndex, ...], None]
_Reduction = Literal["mean", "sum", "none"]
_CrossEntropyResult = Union[np.floating[Any], _FloatArray,
                            tuple[Union[np.floating[Any], _FloatArray], _FloatArray]]
_ArrayT = TypeVar("_ArrayT")  # a NumPy array here, or a dask one for fastsoftmax.dask


# --------------------------------------------------------------------------
# Validation: a call's arguments, checked in one place
# --------------------------------------------------------------------------

def _is_bfloat16(dt: np.dtype[Any]) -> bool:
    """Whether dt is ml_dtypes.bfloat16 (recognised without importing
    ml_dtypes, an optional dependency)."""
    # (the kind first: dtype.name costs ~2 us, a small call's whole budget)
    return dt.kind == "V" and dt.name == "bfloat16" and dt.type.__module__.startswith("ml_dtypes")


def _result_dtype(arr: Any, name: str) -> np.dtype[Any]:
    """The result dtype for an input array, NumPy or dask (docs/api.rst,
    section Dtypes)."""
    dt: np.dtype[Any] = arr.dtype
    if dt.kind == "f" and dt.itemsize <= 8:
        return np.dtype(dt.type)  # native byte order
    if dt.kind in "biu":
        return _F64
    if _is_bfloat16(dt):
        return np.dtype(dt.type)
    if dt.type.__module__.startswith("ml_dtypes"):
        raise TypeError(f"{name} has dtype {dt}, which fastsoftmax does not support: of "
                        f"ml_dtypes' types only bfloat16 is computed (in float32)")
    if dt.kind == "f":
        raise TypeError(f"{name} has dtype {dt} (long double), which the kernels do not "
                        f"compute in; convert it with .astype(numpy.float64)")
    raise TypeError(f"{name} has dtype {dt}, which fastsoftmax does not support: "
                    f"use a real floating-point array (float16/32/64; integer and "
                    f"bool arrays are converted to float64)")


def _compute_dtype(result_dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype the kernels compute in: float16 and bfloat16 are computed
    in float32."""
    return _F32 if result_dtype.itemsize <= 4 else _F64


def _half_format(dtype: np.dtype[Any]) -> bool | None:
    """For the dtypes the half kernels read and write themselves: whether it
    is bfloat16 (False: float16).  None for any other dtype."""
    if dtype == _F16:
        return False
    return True if _is_bfloat16(dtype) else None


def _as_array(x: ArrayLike, name: str) -> NDArray[Any]:
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array, whose mask fastsoftmax would not see: "
                        f"pass its data and where=~mask, or write masked entries as -inf")
    try:
        arr = np.asarray(x)
    except ValueError as exc:  # e.g. a ragged list: NumPy's message names no argument
        raise ValueError(f"{name} cannot be converted to an array: {exc}") from exc
    # Data not aligned to the item size (np.frombuffer at an odd offset, packed
    # records, arrays received over a network) are copied: a C load of a
    # misaligned float is undefined behaviour, even where x86 allows it.
    return arr if arr.flags.aligned else arr.copy()


def _axes(axis: _Axis, ndim: int) -> tuple[int, ...]:
    """axis (int, tuple of ints or None) as a sorted tuple of axes in [0, ndim)."""
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, in short
        return (axis % ndim,)
    items = tuple(range(ndim)) if axis is None else axis
    if not isinstance(items, tuple):
        items = (items,)
    result = []
    for a in items:
        if isinstance(a, (bool, np.bool_)):
            raise TypeError(f"axis must be an int, a tuple of ints or None, got {axis!r}")
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(
                f"axis must be an int, a tuple of ints or None, got {axis!r}") from None
        if not -ndim <= a < ndim:
            raise AxisError(a, ndim)
        result.append(a % ndim)
    if len(set(result)) != len(result):
        raise AxisError(f"repeated axis in axis={axis!r}")
    return tuple(sorted(result))


def _single_axis(axis: _Axis, ndim: int, func: str) -> tuple[int, ...]:
    """The loss takes one int axis (its class axis)."""
    # (checked here, not left to _axes, whose message offers tuples and None)
    message = f"{func} takes a single int axis, got axis={axis!r}"
    if axis is None or isinstance(axis, (tuple, bool, np.bool_)):
        raise TypeError(message)
    try:
        operator.index(axis)
    except TypeError:
        raise TypeError(message) from None
    return _axes(axis, ndim)


def _broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape a and b broadcast to, or None if they do not."""
    try:
        return np.broadcast_shapes(a, b)
    except ValueError:
        return None


def _check_out(out: object, shape: tuple[int, ...],
               dtype: np.dtype[Any]) -> NDArray[Any] | None:
    """`out`, or the error for a wrong one, before anything is computed or written."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if isinstance(out, np.ma.MaskedArray):  # its mask would hide the result
        raise TypeError("out is a masked array; pass a plain ndarray (out.data)")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, but the result has shape {shape}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype.str} ({out.dtype}), but the result "
                        f"has dtype {dtype} (native byte order)")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def _check_reduction(reduction: object) -> None:
    """The loss's `reduction` (of the functions here, of fastsoftmax.dask and
    of the nn layer)."""
    # (the str check first: `in` would compare an array elementwise)
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, _REDUCTIONS))}; "
                         f"got {reduction!r}")


# What a call is, for its checks: which axes it takes and what its
# arguments and its result are.
#   forward   one input, any axes; the result has its shape
#   product   two inputs of one shape, whose dtypes combine; any axes
#   jacobian  one input, any axes; the result is batch + (n, n), n the
#             number of joint elements of the axes
#   loss      logits and a target (class indices or probabilities); one axis
#   reduce    one input and optional scale factors that broadcast to it, any
#             axes; the result has the shape of the axes not reduced (or,
#             with keepdims, the input's shape with 1 for them)
_Kind = Literal["forward", "product", "jacobian", "loss", "reduce"]


class _Call(Generic[_ArrayT]):
    """A call's arguments, checked: what the computation needs of them.

    `arrays` are the inputs as given, converted to arrays (NumPy, or dask
    for fastsoftmax.dask) and at least 1-d, not yet in the compute dtype;
    `shape` is the first input's own shape, `axes` the reduced axes of the
    arrays, `result_shape` and `result_dtype` the result's (for the loss:
    its gradient's), and `out` the checked output array or None.  For the
    loss, `is_index` says whether the target holds class indices;
    `batch_shape` is the arrays' shape without the reduced axes.  `mask`
    is the checked `where=` (a bool array that broadcasts to the first
    input, as given: not expanded), or None.
    """

    __slots__ = ("arrays", "shape", "axes", "result_shape", "result_dtype", "compute_dtype",
                 "out", "is_index", "batch_shape", "mask")

    def __init__(self, arrays: list[_ArrayT], shape: tuple[int, ...], axes: tuple[int, ...],
                 result_shape: tuple[int, ...], result_dtype: np.dtype[Any],
                 out: NDArray[Any] | None, is_index: bool, batch_shape: tuple[int, ...],
                 mask: _ArrayT | None = None) -> None:
        self.arrays, self.shape, self.axes = arrays, shape, axes
        self.result_shape, self.result_dtype = result_shape, result_dtype
        self.compute_dtype = _compute_dtype(result_dtype)
        self.out, self.is_index, self.batch_shape = out, is_index, batch_shape
        self.mask = mask

    def rows(self, arr: NDArray[Any]) -> NDArray[Any]:
        """(rows, n) array of `arr` (of the inputs' shape) in the compute
        dtype, reduced axes last: a view when possible."""
        return _input_rows(arr.astype(self.compute_dtype, copy=False), self.axes)


def _check_where(where: object, convert: Callable[[Any, str], _ArrayT],
                 shape: tuple[int, ...]) -> _ArrayT | None:
    """`where=` as a bool array that broadcasts to `shape` (x's), or the
    error for it; None stays None."""
    if where is None:
        return None
    mask: Any = convert(where, "where")
    if mask.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array (True: included), got dtype "
                        f"{mask.dtype}")
    if _broadcast_shape(mask.shape, shape) != shape:
        raise ValueError(f"where must broadcast to the shape of x, got "
                         f"where.shape={mask.shape} and x.shape={shape}")
    return cast(_ArrayT, mask)


def _prepare(convert: Callable[[Any, str], _ArrayT], func: str, kind: _Kind,
             args: tuple[Any, ...], names: tuple[str, ...], axis: _Axis,
             out: object = None, keepdims: bool = False, where: object = None,
             ) -> _Call[_ArrayT]:
    """Check a call's arguments, in the order that gives the documented
    error for each mistake, and return what the computation needs of them.

    `convert` turns an argument into an array, or raises the error for it:
    `_as_array` here; fastsoftmax.dask passes its own, which keeps dask
    arrays (whose dtypes and shapes are all that is checked).
    """
    arrays: list[Any] = [convert(args[0], names[0])]
    if len(args) > 1:
        arrays.append(convert(args[1], names[1]))
    first = arrays[0]
    result_dtype = _result_dtype(first, names[0])
    if kind == "product":
        second = arrays[1]
        result_dtype = np.result_type(result_dtype, _result_dtype(second, names[1]))
        if first.shape != second.shape:
            raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got "
                             f"{names[0]}.shape={first.shape} and "
                             f"{names[1]}.shape={second.shape}")
    if kind == "reduce" and len(arrays) > 1:  # logsumexp's b
        second = arrays[1]
        result_dtype = np.result_type(result_dtype, _result_dtype(second, names[1]))
        if _broadcast_shape(second.shape, first.shape) != first.shape:
            raise ValueError(f"{names[1]} must broadcast to the shape of {names[0]}, got "
                             f"{names[1]}.shape={second.shape} and "
                             f"{names[0]}.shape={first.shape}")
    shape: tuple[int, ...] = first.shape
    mask = _check_where(where, convert, shape)
    if first.ndim == 0:  # a 0-d input is a one-element softmax
        data = 1 if kind == "loss" else len(arrays)  # (a target keeps its shape)
        arrays[:data] = [a.reshape(1) for a in arrays[:data]]
        first = arrays[0]
    nd_shape: tuple[int, ...] = first.shape
    result_shape, is_index = shape, False
    axes = _single_axis(axis, len(nd_shape), func) if kind == "loss" else \
        _axes(axis, len(nd_shape))
    batch_shape = tuple(d for i, d in enumerate(nd_shape) if i not in axes)
    if kind == "jacobian":
        n = prod(nd_shape[a] for a in axes)
        result_shape = batch_shape + (n, n)
    elif kind == "reduce":
        result_shape = tuple(1 if i in axes else d for i, d in enumerate(shape)) if keepdims \
            else batch_shape
    elif kind == "loss":
        is_index, result_dtype = _target_kind(arrays[1], shape, batch_shape, axes[0],
                                              result_dtype)
    checked_out = _check_out(out, result_shape, result_dtype)
    return _Call(arrays, shape, axes, result_shape, result_dtype, checked_out, is_index,
                 batch_shape, mask)


# --------------------------------------------------------------------------
# Layout: the arrays the kernels take, and where they write
# --------------------------------------------------------------------------

def _moved(arr: NDArray[Any], axes: tuple[int, ...]) -> NDArray[Any]:
    """arr with `axes` moved to the end, in order (a view)."""
    k = len(axes)
    last = tuple(range(arr.ndim - k, arr.ndim))
    return arr if axes == last else np.moveaxis(arr, axes, last)


def _split(shape: tuple[int, ...], k: int) -> tuple[int, int]:
    """(rows, n) for a shape whose last k axes are reduced."""
    return prod(shape[:len(shape) - k]), prod(shape[len(shape) - k:])


def _reshaped_view(arr: NDArray[Any], shape: tuple[int, ...]) -> NDArray[Any] | None:
    """arr reshaped to `shape` as a view, or None if that needs a copy."""
    try:
        return arr.reshape(shape, copy=False)
    except TypeError:  # NumPy < 2.1 has no copy=
        view = arr.reshape(shape)
        return view if not arr.size or np.may_share_memory(view, arr) else None
    except ValueError:  # a copy would be needed
        return None


def _rows_view(moved: NDArray[Any], k: int) -> NDArray[Any] | None:
    """(rows, n) view of `moved` (its last k axes joined), or None if that
    needs a copy or the rows are not contiguous.  The row stride is free."""
    rows, n = _split(moved.shape, k)
    view = _reshaped_view(moved, (rows, n))
    if view is None or (n > 1 and view.strides[1] != view.itemsize):
        return None
    return view


def _mask_rows(mask: NDArray[np.bool_], shape: tuple[int, ...], axes: tuple[int, ...],
               unit_stride: bool) -> tuple[NDArray[np.bool_], NDArray[np.int64], int]:
    """A mask's rows as the kernels read them, without expanding it to
    `shape` (x's): the mask (broadcast to `shape`, a view with zero strides
    where it repeats), the byte offset of each row from its data pointer,
    in the order of x's rows, and the stride of the entries in a row.

    The reduced axes must join into one stride; where they do not (a mask
    that repeats along some of several reduced axes), or where
    `unit_stride` asks for a stride of 1 (or 0: a row switch) and it is
    not, the mask is copied in x's layout, one byte per element.
    """
    k = len(axes)
    moved = _moved(np.broadcast_to(mask, shape), axes)
    batch, n = moved.shape[:moved.ndim - k], _split(moved.shape, k)[1]
    joined = _reshaped_view(moved, batch + (n,))
    if joined is None or (unit_stride and n > 1 and joined.strides[-1] not in (0, 1)):
        joined = np.ascontiguousarray(moved).reshape(batch + (n,))
    offsets = np.zeros((), np.int64)
    for length, stride in zip(batch, joined.strides[:-1]):
        offsets = np.add.outer(offsets, np.arange(length, dtype=np.int64) * stride)
    # (the stride of a row of one entry, or of no rows, is never used)
    return joined, offsets.reshape(-1), joined.strides[-1] if n > 1 and joined.size else 1


def _input_rows(arr: NDArray[Any], axes: tuple[int, ...]) -> NDArray[Any]:
    """(rows, n) array of `arr` for the kernels: a view when possible."""
    moved = _moved(arr, axes)
    view = _rows_view(moved, len(axes))
    if view is None:
        view = np.ascontiguousarray(moved).reshape(_split(moved.shape, len(axes)))
    return view


def _cast_result(buffer: NDArray[Any], dtype: np.dtype[Any]) -> NDArray[Any]:
    """The computed buffer in the result dtype.  A float16 result beyond
    float16's range is +-inf, as the kernels' own results are: without
    NumPy's overflow warning (errstate only where a cast happens: ~1 us)."""
    if buffer.dtype == dtype:
        return buffer
    with np.errstate(over="ignore"):
        return buffer.astype(dtype)


def _copy_result(out: NDArray[Any], buffer: NDArray[Any]) -> None:
    """Copy (and cast, as _cast_result does) a computed buffer into out."""
    if out.dtype == buffer.dtype:
        np.copyto(out, buffer)
    else:
        with np.errstate(over="ignore"):
            np.copyto(out, buffer, casting="same_kind")


def _partial_overlap(view: NDArray[Any], other: NDArray[Any]) -> bool:
    """Whether `view` shares memory with `other` without being exactly it
    (same memory, same layout): the kernels may write over an input row
    only once they have read it."""
    if not np.may_share_memory(view, other):
        return False
    same = (view.__array_interface__["data"][0] == other.__array_interface__["data"][0]
            and view.strides == other.strides and view.shape == other.shape)
    return not same


class _Output:
    """Where a kernel writes a call's result, and the result it returns.

    The kernel writes into `out` itself when it can take a view of it (and
    no cast is needed) and that view does not partially overlap one of its
    inputs; otherwise into a fresh buffer, which is copied (and cast, for
    float16) into `out`, or cast and returned.  `shape` is the result's
    shape with a 0-d input as 1-d.  The kernel's view is either (rows, n)
    with the call's axes last, any row stride (the row kernels), or
    `kernel_shape`, of a C-contiguous array (the column kernel's
    (outer, n, inner), the Jacobian's (rows, n, n)).

    Without `out` the buffer is allocated at once: a Jacobian, n times its
    input, is made before any copy of the input, so that a request too big
    fails on the result, naming its size.
    """

    def __init__(self, call: _Call[NDArray[Any]], shape: tuple[int, ...],
                 kernel_shape: tuple[int, ...] | None = None,
                 dtype: np.dtype[Any] | None = None) -> None:
        self.call, self.shape, self.kernel_shape = call, shape, kernel_shape
        # what the kernel writes: the compute dtype, or the result's for the
        # half kernels
        self.dtype = call.compute_dtype if dtype is None else dtype
        out = call.out
        # `out` in `shape` (a view: only a 0-d out differs)
        self.out = out if out is None or out.shape == shape else out.reshape(shape)
        self.rows: NDArray[Any] | None = None  # what the kernel writes
        self.direct = False
        if out is None:
            self._allocate()

    def _allocate(self) -> NDArray[Any]:
        dtype = self.dtype
        if self.kernel_shape is not None:
            self.rows = np.empty(self.kernel_shape, dtype)
            self.result = self.rows.reshape(self.shape)
            return self.rows
        # In the moved layout (reduced axes last), so that its rows are
        # contiguous; the result is its view in `shape`.
        shape, axes = self.shape, self.call.axes
        k, ndim = len(axes), len(shape)
        trailing = tuple(range(ndim - k, ndim))
        moved_shape = tuple(shape[i] for i in range(ndim) if i not in axes) + \
            tuple(shape[i] for i in axes)
        buffer = np.empty(moved_shape, dtype)
        self.rows = buffer.reshape(_split(moved_shape, k))
        self.result = buffer if axes == trailing else np.moveaxis(buffer, trailing, axes)
        return self.rows

    def _view(self, out: NDArray[Any]) -> NDArray[Any] | None:
        """The kernel's view of `out`, or None where its layout allows none."""
        if self.kernel_shape is not None:
            return out.reshape(self.kernel_shape) if out.flags.c_contiguous else None
        axes = self.call.axes
        return _rows_view(_moved(out, axes), len(axes))

    def target(self, *inputs: NDArray[Any]) -> NDArray[Any]:
        """The array the kernel writes, given the arrays it reads."""
        if self.rows is not None:  # the buffer, allocated up front
            return self.rows
        out, call = self.out, self.call
        assert out is not None
        if call.result_dtype == self.dtype and out.flags.aligned:
            view = self._view(out)
            # writing straight into out is safe unless it overlaps an input
            # without being exactly that input
            if view is not None and not any(_partial_overlap(view, a) for a in inputs):
                self.rows, self.direct = view, True
                return view
        return self._allocate()

    def finish(self) -> NDArray[Any]:
        """The call's result: `out`, or the buffer in the result dtype and shape."""
        call = self.call
        if call.out is None:
            return _cast_result(self.result, call.result_dtype).reshape(call.result_shape)
        if not self.direct:
            assert self.out is not None
            _copy_result(self.out, self.result)
        return call.out


# --------------------------------------------------------------------------
# The common call
# --------------------------------------------------------------------------
# C-contiguous float32/float64 ndarrays reduced along their last axis go to
# the kernels as they are; the kernel module checks that (is_plain,
# softmax_plain, product_plain), in C, because in Python the check would
# cost more than a small call's arithmetic.

def _as_2d(x: NDArray[Any]) -> NDArray[Any]:
    """(rows, n) view of a C-contiguous array reduced along its last axis."""
    return x if x.ndim == 2 else x.reshape(-1, x.shape[-1])


# A C-contiguous array reduced along one middle axis goes to the column
# kernel (no transposed copy) when its rows are at least this long: shorter
# ones would fill too few vector lanes, and their transposed copy is cheap.
_COLS_MIN_INNER = 16


def _takes_cols(arr: NDArray[Any], axes: tuple[int, ...]) -> bool:
    return (len(axes) == 1 and axes[0] != arr.ndim - 1 and arr.flags.c_contiguous
            and prod(arr.shape[axes[0] + 1:]) >= _COLS_MIN_INNER)


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------

def _forward_cols(call: _Call[NDArray[Any]], arr: NDArray[Any], take_log: bool,
                  bfloat16: bool | None = None) -> NDArray[Any]:
    """The column kernel on a C-contiguous `arr` reduced along one middle
    axis (_takes_cols), seen as (outer, n, inner); float16 / bfloat16 (as
    `bfloat16` says) as their bits."""
    axis = call.axes[0]
    cols = (prod(arr.shape[:axis]), arr.shape[axis], prod(arr.shape[axis + 1:]))
    x_cols = arr.reshape(cols)
    if bfloat16 is None:
        output = _Output(call, arr.shape, cols)
        _backend.kernels.softmax_cols(x_cols, output.target(x_cols),
                                      _backend.get_num_threads(), take_log)
    else:
        output = _Output(call, arr.shape, cols, dtype=call.result_dtype)
        _backend.kernels.softmax_cols(x_cols.view(np.uint16),
                                      output.target(x_cols).view(np.uint16),
                                      _backend.get_num_threads(), take_log, bfloat16)
    return output.finish()


def _forward(x: ArrayLike, axis: _Axis, where: ArrayLike | None, out: NDArray[Any] | None,
             take_log: bool) -> NDArray[Any]:
    if where is None:
        # the common call, checked and computed in C (None: not that call)
        y = _backend.kernels.softmax_plain(x, axis, out, take_log, _backend.get_num_threads())
        if y is not None:
            return y
    func = "log_softmax" if take_log else "softmax"
    call = _prepare(_as_array, func, "forward", (x,), ("x",), axis, out, where=where)
    axes = call.axes
    bfloat16 = _half_format(call.result_dtype)
    if bfloat16 is not None:
        # float16 / bfloat16 rows (or columns) read and written by the
        # kernels: no float32 copies (a byte-swapped input is made native
        # first)
        arr = call.arrays[0].astype(call.result_dtype, copy=False)
        if call.mask is None and _takes_cols(arr, axes):
            return _forward_cols(call, arr, take_log, bfloat16)
        x_rows = _input_rows(arr, axes)
        output = _Output(call, arr.shape, dtype=call.result_dtype)
        x_bits, y_bits = x_rows.view(np.uint16), output.target(x_rows).view(np.uint16)
        if call.mask is None:
            _backend.kernels.half_softmax_rows(x_bits, y_bits, _backend.get_num_threads(),
                                               take_log, bfloat16)
        else:
            mask, mask_rows, mask_stride = _mask_rows(call.mask, arr.shape, axes, False)
            _backend.kernels.softmax_masked_rows(x_bits, mask, mask_rows, mask_stride, y_bits,
                                                 _backend.get_num_threads(), take_log,
                                                 bfloat16)
        return output.finish()
    arr = call.arrays[0].astype(call.compute_dtype, copy=False)
    if call.mask is not None:
        # (the column kernel takes no mask: a middle axis goes through a
        # transposed copy of x)
        mask, mask_rows, mask_stride = _mask_rows(call.mask, arr.shape, axes, False)
        x_rows = _input_rows(arr, axes)
        output = _Output(call, arr.shape)
        _backend.kernels.softmax_masked_rows(x_rows, mask, mask_rows, mask_stride,
                                             output.target(x_rows), _backend.get_num_threads(),
                                             take_log)
        return output.finish()
    if _takes_cols(arr, axes):
        return _forward_cols(call, arr, take_log)
    x_rows = _input_rows(arr, axes)
    output = _Output(call, arr.shape)
    _backend.kernels.softmax_rows(x_rows, output.target(x_rows), _backend.get_num_threads(),
                                  take_log)
    return output.finish()


@overload
def softmax(x: NDArray[_FloatT], axis: _Axis = -1, *, where: ArrayLike | None = None,
            out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def softmax(x: ArrayLike, axis: _Axis = -1, *, where: ArrayLike | None = None,
            out: NDArray[Any] | None = None) -> _FloatArray: ...
def softmax(x: ArrayLike, axis: _Axis = -1, *, where: ArrayLike | None = None,
            out: NDArray[Any] | None = None) -> NDArray[Any]:
    """Softmax, ``exp(x - max) / sum(exp(x - max))``, along `axis`.

    Parameters
    ----------
    x : array_like
        Input values (logits).  float32 and float64 are computed natively;
        float16 is computed in float32 and returned as float16; integer and
        bool inputs are computed and returned as float64.
    axis : int, tuple of ints or None, optional
        The axis (default the last), axes (softmax over their joint
        elements, as in `scipy.special.softmax`) or None (the whole array).
    where : array_like of bool, optional
        Which entries take part, broadcastable to `x` (a ``(n,)`` mask, a
        ``(batch, 1)`` row switch, an attention mask ``(B, 1, 1, n)`` for
        scores ``(B, H, Q, n)``).  The result is exactly 0 where it is
        False, and the other entries are normalised among themselves; `x`
        there is not used.  A row with no True entry is all 0.  The mask
        is read as it is, never expanded to `x`'s size.
    out : ndarray, optional
        Array of the result's shape and dtype to write into (any strides,
        ``out=x`` allowed).  It is returned.

    Returns
    -------
    ndarray
        Probabilities with the shape of `x`, summing to 1 along `axis`.

    Raises
    ------
    TypeError
        For complex, object, string or long double input, an `out` of the
        wrong dtype, or a `where` that is not boolean.
    ValueError
        For an `out` of the wrong shape, a read-only `out`, or a `where`
        that does not broadcast to `x` (both shapes are named).
    numpy.exceptions.AxisError
        For an out-of-range or repeated axis.

    Notes
    -----
    Stable for any finite input.  A ``-inf`` entry gets probability exactly
    0 (a mask written into the data; ``where=`` needs no copy).  A row that
    is all ``-inf``, or holds a NaN or ``+inf``, is NaN in every entry;
    other rows are unaffected.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> fs.softmax(np.array([1.0, 2.0, 3.0]))
    array([0.09003057, 0.24472847, 0.66524096])
    >>> fs.softmax([[0.0, -np.inf], [1000.0, 0.0]])
    array([[1., 0.],
           [1., 0.]])
    >>> fs.softmax(np.array([[1.0, 2.0, np.nan], [4.0, 5.0, 6.0]]),
    ...            where=np.array([True, True, False]))
    array([[0.26894142, 0.73105858, 0.        ],
           [0.26894142, 0.73105858, 0.        ]])
    """
    return _forward(x, axis, where, out, take_log=False)


@overload
def log_softmax(x: NDArray[_FloatT], axis: _Axis = -1, *, where: ArrayLike | None = None,
                out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def log_softmax(x: ArrayLike, axis: _Axis = -1, *, where: ArrayLike | None = None,
                out: NDArray[Any] | None = None) -> _FloatArray: ...
def log_softmax(x: ArrayLike, axis: _Axis = -1, *, where: ArrayLike | None = None,
                out: NDArray[Any] | None = None) -> NDArray[Any]:
    """Log of the softmax, ``x - max - log(sum(exp(x - max)))``, along `axis`.

    More accurate than ``log(softmax(x))``: probabilities that underflow
    to 0 still have a finite log.  Parameters, dtypes, errors and special
    values as for :func:`softmax` (a ``-inf`` entry gives ``-inf``).

    Parameters
    ----------
    x : array_like
        Input values (logits).
    axis : int, tuple of ints or None, optional
        Axis or axes to normalise over; None for the whole array.
    where : array_like of bool, optional
        Which entries take part, broadcastable to `x`, as for
        :func:`softmax`: ``-inf`` where it is False (and in every entry
        of a row with no True entry).
    out : ndarray, optional
        Array of the result's shape and dtype to write into.

    Returns
    -------
    ndarray
        Log-probabilities with the shape of `x`.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> fs.log_softmax(np.array([0.0, 0.0]))
    array([-0.69314718, -0.69314718])
    >>> fs.log_softmax(np.array([1000.0, 0.0]))
    array([    0., -1000.])
    >>> fs.log_softmax(np.array([0.0, 0.0, 5.0]), where=[True, True, False])
    array([-0.69314718, -0.69314718,        -inf])
    """
    return _forward(x, axis, where, out, take_log=True)


_Reduced = Union[np.floating[Any], _FloatArray]  # a NumPy scalar when 0-d


@overload
def logsumexp(x: ArrayLike, axis: _Axis = -1, *, b: ArrayLike | None = None,
              keepdims: bool = False, return_sign: Literal[False] = False,
              where: ArrayLike | None = None, out: NDArray[Any] | None = None) -> _Reduced: ...
@overload
def logsumexp(x: ArrayLike, axis: _Axis = -1, *, b: ArrayLike | None = None,
              keepdims: bool = False, return_sign: Literal[True],
              where: ArrayLike | None = None,
              out: NDArray[Any] | None = None) -> tuple[_Reduced, _Reduced]: ...
def logsumexp(x: ArrayLike, axis: _Axis = -1, *, b: ArrayLike | None = None,
              keepdims: bool = False, return_sign: bool = False,
              where: ArrayLike | None = None,
              out: NDArray[Any] | None = None) -> _Reduced | tuple[_Reduced, _Reduced]:
    """``log(sum(b * exp(x)))`` along `axis`, as ``max + log(sum(b * exp(x - max)))``.

    The semantics of `scipy.special.logsumexp`, but reduced along the last
    axis by default, in one pass for the max and one for the sum, on the
    threads.

    Parameters
    ----------
    x : array_like
        Input values.  Dtypes as for :func:`softmax`.
    axis : int, tuple of ints or None, optional
        The axis (default the last), axes or None (all) to reduce.
    b : array_like, optional
        Scale factors, broadcastable to `x`.  Entries where `b` is 0 are
        left out (their `x` is not used); negative factors need
        `return_sign` for a negative sum, which is NaN otherwise.  float32
        `x` with float64 (or integer) `b` computes in float64.
    keepdims : bool, optional
        Keep the reduced axes, with length 1.
    return_sign : bool, optional
        Also return the sign of the sum: 1, -1, or 0 for a sum of 0.
    where : array_like of bool, optional
        Which entries take part, broadcastable to `x`: those where it is
        False contribute nothing (neither their `x` nor their `b` is
        used); a row with no True entry gives ``-inf``.  Read as it is,
        not expanded to `x`'s size (unless it repeats along some of
        several reduced axes, or its entries along a row are not 1 byte
        apart, as in a transposed mask: then copied in `x`'s layout, one
        byte per element).
    out : ndarray, optional
        Array of the result's shape and dtype to write the result into.

    Returns
    -------
    ndarray or NumPy scalar, or a pair of them
        The result, with `x`'s shape without the reduced axes (a NumPy
        scalar when that is 0-d and no `out` is given); with `return_sign`,
        ``(result, sign)``.

    Raises
    ------
    ValueError
        For a `b` or `where` that does not broadcast to `x` (both shapes
        named), or an `out` of the wrong shape.
    TypeError, numpy.exceptions.AxisError
        As for :func:`softmax` (a `where` that is not boolean included).

    Notes
    -----
    A row of only ``-inf`` (or with no nonzero `b`, or an empty axis) gives
    ``-inf``; a ``+inf`` entry ``+inf`` (a negative sum there: NaN without
    `return_sign`); a NaN NaN.  Infinite or NaN factors in `b` follow IEEE
    arithmetic, as in SciPy (``inf - inf`` is NaN).  Accurate to 2 ulp of
    the larger of the result and the max: near ``S = 1`` the sum is taken
    as ``1 + (S - 1)`` without cancellation.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> fs.logsumexp(np.array([[0.0, 0.0], [1000.0, 1000.0]]))
    array([6.93147181e-01, 1.00069315e+03])
    >>> fs.logsumexp(np.array([1.0, 2.0]), b=np.array([1.0, -1.0]), return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    >>> fs.logsumexp(np.array([[0.0, 0.0, np.inf], [1.0, 2.0, 3.0]]),
    ...              where=np.array([True, True, False]))
    array([0.69314718, 2.31326169])
    """
    if b is None and where is None and out is None and not (keepdims or return_sign):
        # the common call, checked and computed in C (None: not that call)
        value = _backend.kernels.logsumexp_plain(x, axis, _backend.get_num_threads())
        if value is not None:
            return value
    args, names = ((x,), ("x",)) if b is None else ((x, b), ("x", "b"))
    call = _prepare(_as_array, "logsumexp", "reduce", args, names, axis, out,
                    keepdims=bool(keepdims), where=where)
    x_arr = call.arrays[0]
    bfloat16 = _half_format(call.result_dtype)
    if bfloat16 is not None:
        # float16 / bfloat16 rows (and factors b) read by the kernel itself
        half_arr = x_arr.astype(call.result_dtype, copy=False)
        half_rows = _input_rows(half_arr, call.axes)
        half_b = None if b is None else _input_rows(np.broadcast_to(
            call.arrays[1].astype(call.result_dtype, copy=False), x_arr.shape), call.axes)
        half_result = np.empty(half_rows.shape[0], _F32)
        half_sign = np.empty_like(half_result) if return_sign else None
        half_mask = (None, None, 1) if call.mask is None else \
            _mask_rows(call.mask, half_arr.shape, call.axes, True)
        _backend.kernels.half_logsumexp_rows(
            half_rows.view(np.uint16), None if half_b is None else half_b.view(np.uint16),
            half_result, half_sign, _backend.get_num_threads(), bfloat16, *half_mask)
        value = _reduced_result(call, half_result, call.out)
        if half_sign is None:
            return value
        return value, _reduced_result(call, half_sign, None)
    x_rows = call.rows(x_arr)
    mask, mask_rows, mask_stride = None, None, 1
    b_full = None if b is None else np.broadcast_to(call.arrays[1], x_arr.shape)
    if call.mask is not None and b_full is not None:
        # b is given in x's size anyway: the mask zeroes its excluded factors
        b_full = np.where(np.broadcast_to(call.mask, x_arr.shape), b_full, 0)
    elif call.mask is not None:  # the mask's bytes are the weights
        mask, mask_rows, mask_stride = _mask_rows(call.mask, x_arr.shape, call.axes, True)
    b_rows = None if b_full is None else call.rows(b_full)
    result = np.empty(x_rows.shape[0], call.compute_dtype)
    sign = np.empty_like(result) if return_sign else None
    _backend.kernels.logsumexp_rows(x_rows, b_rows, result, sign, _backend.get_num_threads(),
                                    mask, mask_rows, mask_stride)
    value = _reduced_result(call, result, call.out)
    if sign is None:
        return value
    return value, _reduced_result(call, sign, None)


def _reduced_result(call: _Call[NDArray[Any]], values: NDArray[Any],
                    out: NDArray[Any] | None) -> _Reduced:
    """A reduction's computed values in the result's shape and dtype: in
    `out` if given, else a new array, or a NumPy scalar when 0-d."""
    values = _cast_result(values.reshape(call.result_shape), call.result_dtype)
    if out is not None:
        _copy_result(out, values)
        return out
    return values[()] if values.ndim == 0 else values


# --------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------

def _product(log_vjp: bool, func: str, a: ArrayLike, b: ArrayLike, axis: _Axis,
             out: NDArray[Any] | None, names: tuple[str, str]) -> NDArray[Any]:
    """Shared body of softmax_jvp, softmax_vjp and log_softmax_vjp."""
    # the common call, checked and computed in C (None: not that call)
    y = _backend.kernels.product_plain(a, b, axis, out, _backend.get_num_threads(), log_vjp)
    if y is not None:
        return y
    call = _prepare(_as_array, func, "product", (a, b), names, axis, out)
    bfloat16 = _half_format(call.result_dtype)
    if bfloat16 is not None:  # float16 / bfloat16 read and written by the kernel
        a_rows, b_rows = (_input_rows(arr.astype(call.result_dtype, copy=False), call.axes)
                          for arr in call.arrays)
        output = _Output(call, call.arrays[0].shape, dtype=call.result_dtype)
        _backend.kernels.half_product_rows(
            a_rows.view(np.uint16), b_rows.view(np.uint16),
            output.target(a_rows, b_rows).view(np.uint16), _backend.get_num_threads(),
            log_vjp, bfloat16)
        return output.finish()
    a_rows, b_rows = call.rows(call.arrays[0]), call.rows(call.arrays[1])
    output = _Output(call, call.arrays[0].shape)
    _backend.kernels.product_rows(a_rows, b_rows, output.target(a_rows, b_rows),
                                  _backend.get_num_threads(), log_vjp)
    return output.finish()


@overload
def softmax_jvp(s: NDArray[_FloatT], v: NDArray[_FloatT], axis: _Axis = -1, *,
                out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def softmax_jvp(s: ArrayLike, v: ArrayLike, axis: _Axis = -1, *,
                out: NDArray[Any] | None = None) -> _FloatArray: ...
def softmax_jvp(s: ArrayLike, v: ArrayLike, axis: _Axis = -1, *,
                out: NDArray[Any] | None = None) -> NDArray[Any]:
    """Jacobian-vector product of softmax: ``s * (v - sum(s * v, axis))``.

    For one row the softmax Jacobian is ``J = diag(s) - s sᵀ``; this
    returns ``J @ v`` in O(n) per row without forming ``J``.

    Parameters
    ----------
    s : array_like
        Softmax output along `axis` (as returned by :func:`softmax`).
    v : array_like
        Tangent vectors, the same shape as `s`.
    axis : int, tuple of ints or None, optional
        The softmax axis (default the last), axes (one softmax over their
        joint elements) or None (the whole array), as given to
        :func:`softmax`.
    out : ndarray, optional
        Array of the result's shape and dtype; may be `s` or `v`.

    Returns
    -------
    ndarray
        ``J v`` per row, with the shape of `s`.  Mixed float32/float64
        inputs compute in float64; otherwise the dtype rules of
        :func:`softmax` apply.

    Raises
    ------
    ValueError
        If `s` and `v` differ in shape (both shapes are named).

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> s = fs.softmax(np.array([1.0, 2.0, 3.0]))
    >>> v = np.array([1.0, 0.0, 0.0])
    >>> np.allclose(fs.softmax_jvp(s, v), (np.diag(s) - np.outer(s, s)) @ v)
    True
    """
    return _product(False, "softmax_jvp", s, v, axis, out, ("s", "v"))


@overload
def softmax_vjp(s: NDArray[_FloatT], g: NDArray[_FloatT], axis: _Axis = -1, *,
                out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def softmax_vjp(s: ArrayLike, g: ArrayLike, axis: _Axis = -1, *,
                out: NDArray[Any] | None = None) -> _FloatArray: ...
def softmax_vjp(s: ArrayLike, g: ArrayLike, axis: _Axis = -1, *,
                out: NDArray[Any] | None = None) -> NDArray[Any]:
    """Vector-Jacobian product of softmax, the backward pass: ``s * (g - sum(s * g, axis))``.

    The softmax Jacobian is symmetric, so this equals :func:`softmax_jvp`;
    it is the name backprop code looks for.  Given the upstream gradient
    `g` = dL/ds, it returns dL/dx.

    Parameters
    ----------
    s : array_like
        Softmax output along `axis`.
    g : array_like
        Upstream gradient, the same shape as `s`.
    axis : int, tuple of ints or None, optional
        The softmax axis (default the last), axes (one softmax over their
        joint elements) or None (the whole array), as given to
        :func:`softmax`.
    out : ndarray, optional
        Array of the result's shape and dtype; may be `s` or `g`.

    Returns
    -------
    ndarray
        ``gᵀ J`` per row, with the shape of `s`.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> s = fs.softmax(np.array([[1.0, 2.0, 3.0]]))
    >>> g = np.array([[0.5, -1.0, 2.0]])
    >>> np.allclose(fs.softmax_vjp(s, g), s * (g - (s * g).sum(-1, keepdims=True)))
    True
    """
    return _product(False, "softmax_vjp", s, g, axis, out, ("s", "g"))


@overload
def log_softmax_vjp(logp: NDArray[_FloatT], g: NDArray[_FloatT], axis: _Axis = -1, *,
                    out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def log_softmax_vjp(logp: ArrayLike, g: ArrayLike, axis: _Axis = -1, *,
                    out: NDArray[Any] | None = None) -> _FloatArray: ...
def log_softmax_vjp(logp: ArrayLike, g: ArrayLike, axis: _Axis = -1, *,
                    out: NDArray[Any] | None = None) -> NDArray[Any]:
    """Vector-Jacobian product of log_softmax: ``g - exp(logp) * sum(g, axis)``.

    Parameters
    ----------
    logp : array_like
        log_softmax output along `axis`.
    g : array_like
        Upstream gradient, the same shape as `logp`.
    axis : int, tuple of ints or None, optional
        The softmax axis (default the last), axes (one softmax over their
        joint elements) or None (the whole array), as given to
        :func:`softmax`.
    out : ndarray, optional
        Array of the result's shape and dtype; may be `logp` or `g`.

    Returns
    -------
    ndarray
        dL/dx with the shape of `logp`.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> logp = fs.log_softmax(np.array([1.0, 2.0, 3.0]))
    >>> g = np.array([-1.0, 0.0, 0.0])    # d(-logp[0]) / d logp
    >>> fs.log_softmax_vjp(logp, g)        # softmax minus one-hot
    array([-0.90996943,  0.24472847,  0.66524096])
    """
    return _product(True, "log_softmax_vjp", logp, g, axis, out,
                    ("logp", "g"))


@overload
def softmax_jacobian(s: NDArray[_FloatT], axis: _Axis = -1, *,
                     out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def softmax_jacobian(s: ArrayLike, axis: _Axis = -1, *,
                     out: NDArray[Any] | None = None) -> _FloatArray: ...
def softmax_jacobian(s: ArrayLike, axis: _Axis = -1, *,
                     out: NDArray[Any] | None = None) -> NDArray[Any]:
    """The full softmax Jacobian ``J[..., i, j] = s_i (δ_ij - s_j)`` per row.

    Needed only when the matrix itself is wanted; backprop needs
    :func:`softmax_vjp`, which is O(n) per row instead of O(n²).

    Parameters
    ----------
    s : array_like
        Softmax output along `axis`.
    axis : int, tuple of ints or None, optional
        The softmax axis (default the last), axes (one softmax over their
        joint elements) or None (the whole array), as given to
        :func:`softmax`.
    out : ndarray, optional
        Array of the result's shape and dtype to write into.

    Returns
    -------
    ndarray
        Shape ``batch + (n, n)``: `batch` the shape of the axes not
        reduced, in order, and n the number of joint elements of the
        reduced ones, ordered as ``s.reshape`` in C order orders them once
        they are moved last (in their order in `s`).  Each matrix is
        symmetric with rows summing to 0.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> fs.softmax_jacobian(np.array([0.5, 0.5]))
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    >>> s = fs.softmax(np.zeros((3, 2, 2)), axis=(1, 2))   # 3 softmaxes of 4
    >>> fs.softmax_jacobian(s, axis=(1, 2)).shape
    (3, 4, 4)
    """
    if out is None and _backend.kernels.is_plain(s, axis):
        n = s.shape[-1]
        _check_jacobian_size(s.shape + (n,), s.dtype)
        jac = np.empty(s.shape + (n,), s.dtype)
        _backend.kernels.softmax_jacobian_rows(_as_2d(s), jac.reshape(-1, n, n),
                                               _backend.get_num_threads())
        return jac
    call = _prepare(_as_array, "softmax_jacobian", "jacobian", (s,), ("s",), axis, out)
    bfloat16 = _half_format(call.result_dtype)
    if out is None:
        _check_jacobian_size(call.result_shape,
                             call.compute_dtype if bfloat16 is None else call.result_dtype)
    n = call.result_shape[-1]
    if bfloat16 is not None:  # float16 / bfloat16 read and written by the kernel
        output = _Output(call, call.result_shape, (prod(call.batch_shape), n, n),
                         dtype=call.result_dtype)
        s_rows = _input_rows(call.arrays[0].astype(call.result_dtype, copy=False), call.axes)
        _backend.kernels.half_jacobian_rows(s_rows.view(np.uint16),
                                            output.target(s_rows).view(np.uint16),
                                            _backend.get_num_threads(), bfloat16)
        return output.finish()
    # (made before the input's copy, if it needs one: see _Output)
    output = _Output(call, call.result_shape, (prod(call.batch_shape), n, n))
    s_rows = call.rows(call.arrays[0])
    _backend.kernels.softmax_jacobian_rows(s_rows, output.target(s_rows),
                                           _backend.get_num_threads())
    return output.finish()


# --------------------------------------------------------------------------
# Fused loss
# --------------------------------------------------------------------------

def _check_jacobian_size(shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    """A MemoryError naming the size of a Jacobian too big to even index
    (NumPy's own "array is too big" names none)."""
    nbytes = prod(shape) * dtype.itemsize
    if nbytes > sys.maxsize:
        raise MemoryError(f"softmax_jacobian: the result, shape {shape} of {dtype}, would "
                          f"need {nbytes} bytes ({nbytes / 2**60:.3g} EiB)")


def _target_kind(target: Any, logits_shape: tuple[int, ...], batch_shape: tuple[int, ...],
                 axis: int, logits_result: np.dtype[Any]) -> tuple[bool, np.dtype[Any]]:
    """(whether `target`, a NumPy or dask array, holds class indices; the
    gradient's dtype), or the error naming what is wrong with it."""
    if target.dtype.kind in "iu":
        if target.shape != batch_shape:
            raise ValueError(
                f"class-index target must have the shape of logits without axis "
                f"{axis}: logits.shape={logits_shape}, so target.shape should be "
                f"{batch_shape}, got {target.shape}")
        return True, logits_result
    if target.dtype.kind == "f" or _is_bfloat16(target.dtype):
        if target.shape != logits_shape:
            hint = (" (for class indices use an integer dtype)"
                    if target.shape == batch_shape else "")
            raise ValueError(f"probability target must have the shape of logits: "
                             f"logits.shape={logits_shape}, target.shape={target.shape}{hint}")
        t_result = _result_dtype(target, "target")
        return False, (logits_result if t_result == logits_result
                       else np.result_type(logits_result, t_result))
    raise TypeError(f"target has dtype {target.dtype}: use an integer dtype for class "
                    f"indices or a floating dtype for probabilities")


def _class_indices(target: NDArray[Any], n: int) -> NDArray[np.int64]:
    """Class indices as a flat, contiguous int64 array (the kernel checks
    that they lie in [0, n))."""
    flat = target if target.ndim == 1 else target.reshape(-1)
    if flat.dtype == _I64 and (flags := flat.flags).c_contiguous and flags.aligned:
        return flat
    if flat.dtype == np.uint64 and flat.size and flat.max() > np.iinfo(np.int64).max:
        return np.where(flat < n, flat, -1).astype(np.int64)  # keep huge ones out of range
    return np.require(flat, np.int64, ["C_CONTIGUOUS", "ALIGNED"])


def _index_error(value: object, n: int, where: object) -> IndexError:
    """The error for class index `value`, outside [0, n), at row `where`
    (an int, or a tuple for a batch of more than one axis)."""
    return IndexError(f"target index {value} is out of range for {n} classes "
                      f"(at row {where}); indices must lie in [0, {n})")


class _LossOptions:
    """softmax_cross_entropy's weight, ignore_index and label_smoothing,
    checked (PyTorch's meanings: docs/api.rst, section Fused loss).
    `weight` is None or n finite weights >= 0 (float64)."""

    __slots__ = ("weight", "ignore_index", "smoothing")

    def __init__(self, weight: NDArray[np.float64] | None, ignore_index: int | None,
                 smoothing: float) -> None:
        self.weight, self.ignore_index, self.smoothing = weight, ignore_index, smoothing


def _loss_options(weight: ArrayLike | None, ignore_index: object, label_smoothing: object,
                  n: int, is_index: bool) -> _LossOptions | None:
    """The checked options, or None for the defaults; the error naming a
    bad one."""
    if weight is None and ignore_index is None and (
            type(label_smoothing) in (int, float) and label_smoothing == 0):
        return None
    checked_weight = None
    if weight is not None:
        w = _as_array(weight, "weight")
        if w.dtype.kind not in "biuf":
            raise TypeError(f"weight has dtype {w.dtype}: use real numbers, one per class")
        if w.shape != (n,):
            raise ValueError(f"weight must hold one weight per class, shape ({n},), "
                             f"got shape {w.shape}")
        checked_weight = w.astype(np.float64)
        if not (np.isfinite(checked_weight).all() and (checked_weight >= 0).all()):
            bad = checked_weight[~(np.isfinite(checked_weight) & (checked_weight >= 0))][0]
            raise ValueError(f"weight must be finite and >= 0, got an entry {bad}")
    index: int | None = None
    if ignore_index is not None:
        if isinstance(ignore_index, (bool, np.bool_)):
            raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
        try:
            index = operator.index(ignore_index)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"ignore_index must be an int, got {ignore_index!r}") from None
        if not -2 ** 63 <= index < 2 ** 63:
            raise ValueError(f"ignore_index must lie in the int64 range, got {index}")
        if not is_index:
            raise ValueError("ignore_index applies to class-index targets only; this target "
                             "holds probabilities (give excluded rows a target of zeros)")
    if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(
            label_smoothing, (int, float, np.integer, np.floating)):
        raise TypeError(f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    smoothing = float(label_smoothing)
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {smoothing}")
    return _LossOptions(checked_weight, index, smoothing)


def _class_weights(index: NDArray[Any], n: int, weight: NDArray[np.float64] | None,
                   ignore_index: int | None) -> NDArray[np.float64]:
    """What each index target's row weighs, and counts for in "mean":
    weight[c] (1 without weights); 0 for an ignored row, and for an index
    outside [0, n) (an error the loss kernel reports)."""
    kept = (index >= 0) & (index < n)
    if ignore_index is not None:
        kept &= index != ignore_index
    if weight is None or not n:
        return kept.astype(np.float64)
    counts: NDArray[np.float64] = np.where(kept, weight[np.where(kept, index, 0)], 0.0)
    return counts


_TargetOptions = tuple[NDArray[Any], float, float]


def _loss_target(options: _LossOptions, probs: NDArray[Any] | None,
                 index: NDArray[np.int64] | None, rows: int, n: int,
                 compute_dtype: np.dtype[Any]
                 ) -> tuple[NDArray[Any] | None, NDArray[np.float64] | None, float,
                            _TargetOptions | None]:
    """What the kernel takes for a target with options: (target rows, the
    weights of the class indices, the denominator of "mean", the options
    of probability rows).

    Row i's target is a = (1 - e) w[c] onehot(c) + (e / n) w for a class
    index c (e the smoothing, w the weights or 1; 0 for an ignored row),
    or ((1 - e) t + e / n) w for probabilities t, which the kernel forms as
    it reads t: the options (w, 1 - e, e / n), w in the compute dtype.
    "mean" divides by the summed weights w[c] of the rows not ignored, or
    by the row count for probabilities, as
    torch.nn.functional.cross_entropy does.
    """
    e, w = options.smoothing, options.weight
    uniform = e / n if n else 0.0  # (rows of no classes: nothing to smooth)
    if index is None:
        assert probs is not None
        if e == 0 and w is None:
            return probs, None, float(rows), None
        row_weight = np.ones(n, compute_dtype) if w is None else w.astype(compute_dtype)
        return probs, None, float(rows), (row_weight, 1 - e, uniform)
    class_weight = _class_weights(index, n, w, options.ignore_index)
    smoothing_row = None
    if e > 0:  # the same row for every row: a stride of 0
        row = np.full(n, uniform) if w is None else uniform * w
        smoothing_row = np.broadcast_to(row.astype(compute_dtype), (rows, n))
    return smoothing_row, (1 - e) * class_weight, float(class_weight.sum()), None


def _cross_entropy_rows(x_rows: NDArray[Any], probs: NDArray[Any] | None,
                        target: NDArray[Any] | None, batch_shape: tuple[int, ...],
                        reduction: str, grad: NDArray[Any] | None,
                        compute_dtype: np.dtype[Any], options: _LossOptions | None = None,
                        bfloat16: bool | None = None) -> np.floating[Any] | _FloatArray:
    """Run the loss kernel on (rows, n) logits, with probabilities `probs`
    or class indices `target` (and the options, if any); the loss reduced,
    with the gradient written into the (rows, n) array `grad` if one is
    given.  IndexError for a class index out of range (and not ignored),
    raised before anything is computed (the kernel checks first).
    For float16 (bfloat16 if `bfloat16`) logits, x_rows, grad and a
    probability target are in that format, read by the half kernel."""
    rows, n = x_rows.shape
    index = None if target is None else _class_indices(target, n)
    index_weight, ignore, denominator, target_options = None, None, float(rows), None
    if options is not None:
        ignore = options.ignore_index
        probs, index_weight, denominator, target_options = _loss_target(
            options, probs, index, rows, n, compute_dtype)
    # The kernel writes no loss for a row of no classes: it is a sum of
    # nothing, 0.  Row losses are only kept for reduction="none".
    losses = None
    if reduction == "none":
        losses = np.empty(rows, np.float64) if n else np.zeros(rows, np.float64)
    scale = 1.0
    if reduction == "mean":
        scale = 1.0 / denominator if denominator else math.nan
    if bfloat16 is None:
        total, bad_row = _backend.kernels.cross_entropy_rows(
            x_rows, probs, index, losses, grad, scale, _backend.get_num_threads(),
            index_weight, ignore, target_options)
    else:
        total, bad_row = _backend.kernels.half_cross_entropy_rows(
            x_rows.view(np.uint16),
            probs.view(np.uint16) if probs is not None and probs.itemsize == 2 else probs,
            index, losses, None if grad is None else grad.view(np.uint16), scale,
            _backend.get_num_threads(), index_weight, ignore, bfloat16, target_options)
    if bad_row >= 0:
        assert target is not None
        where = (tuple(int(i) for i in np.unravel_index(bad_row, batch_shape))
                 if len(batch_shape) > 1 else bad_row)
        raise _index_error(target.reshape(-1)[bad_row], n, where)
    # A float32 loss beyond the range is inf, as the kernels' own results
    # are, without the cast's overflow warning (and without np.errstate,
    # ~1 us, on the scalar path).
    if losses is not None:
        return _cast_result(losses.reshape(batch_shape), compute_dtype)
    value = total * scale  # (NaN for the mean of no rows, or of no weight)
    if compute_dtype != _F64 and abs(value) > _F32_MAX:
        value = math.copysign(math.inf, value)
    loss: np.floating[Any] = compute_dtype.type(value)
    return loss


# The result's structure follows `reduction` and `return_grad`: a scalar
# or one loss per row, alone or with the gradient.
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: Literal["mean", "sum"] = "mean",
                          return_grad: Literal[False] = False,
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0,
                          ) -> np.floating[Any]: ...
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: Literal["none"],
                          return_grad: Literal[False] = False,
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0,
                          ) -> _FloatArray: ...
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: Literal["mean", "sum"] = "mean",
                          return_grad: Literal[True],
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0,
                          ) -> tuple[np.floating[Any], _FloatArray]: ...
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: Literal["none"],
                          return_grad: Literal[True],
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0,
                          ) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean", return_grad: bool = False,
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0,
                          ) -> _CrossEntropyResult: ...
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean", return_grad: bool = False,
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0,
                          ) -> _CrossEntropyResult:
    """Cross-entropy of softmax(logits) against `target`, with its gradient in one pass.

    Parameters
    ----------
    logits : array_like
        Unnormalised log-probabilities.
    target : array_like
        Either class indices (an integer dtype, the shape of `logits`
        without `axis`) or probabilities (a floating dtype, the shape of
        `logits`; rows need not sum to 1).
    axis : int, optional
        The class axis (default the last).
    reduction : {"mean", "sum", "none"}, optional
        Mean over rows (default), sum, or one loss per row.
    return_grad : bool, optional
        Also return ``dlogits``, the gradient of the (reduced) loss.
    weight : array_like, optional
        One weight per class (n finite values >= 0), as in
        `torch.nn.functional.cross_entropy`: an index target's row weighs
        ``weight[c]``, and "mean" divides by the summed weights of the rows
        not ignored; a probability target is multiplied by it
        class-wise, and "mean" divides by the row count.
    ignore_index : int, optional
        Class-index targets only: rows whose index is this value (which
        may lie outside ``[0, n)``, e.g. -100) add 0 to the loss, get a
        gradient of 0 and do not count for "mean".
    label_smoothing : float, optional
        In ``[0, 1]``: the target is mixed with the uniform distribution,
        ``(1 - label_smoothing) * target + label_smoothing / n``.

    Returns
    -------
    loss : numpy scalar or ndarray
        ``-sum(target * log_softmax(logits))`` per row, reduced.  A NumPy
        scalar of the computation dtype (float32 for float16/float32
        logits, float64 otherwise) for "mean"/"sum"; an array of the batch
        shape for "none".  "mean" over an empty batch is NaN, "sum" is 0.
    dlogits : ndarray
        Only with ``return_grad=True``: ``softmax(logits) * sum(target) -
        target`` per row (``s - y`` for one-hot or index targets), divided
        by the number of rows for "mean"; the shape of `logits`, in the
        result dtype of :func:`softmax`.

    Raises
    ------
    ValueError
        For a target of the wrong shape (both shapes are named), an
        unknown `reduction`, a `weight` of the wrong length or with a
        negative (or non-finite) entry, `ignore_index` with probability
        targets, or a `label_smoothing` outside ``[0, 1]``.
    IndexError
        For a class index outside ``[0, n)``, naming the value and the row.
    TypeError
        For unsupported dtypes (including a bool target).

    Notes
    -----
    A zero target weight on a ``-inf`` logit contributes 0 (the limit of
    ``0 log 0``), not NaN.  Negative class indices are out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> loss, grad = fs.softmax_cross_entropy(logits, np.array([0, 1]), return_grad=True)
    >>> float(np.round(loss, 6))
    0.31854
    >>> np.allclose(grad, (fs.softmax(logits) - np.eye(3)[[0, 1]]) / 2)
    True

    PyTorch's options: class weights, a padding index, label smoothing.

    >>> loss = fs.softmax_cross_entropy(logits, np.array([0, -100]), ignore_index=-100,
    ...                                 weight=np.array([2.0, 1.0, 1.0]), label_smoothing=0.1)
    >>> float(np.round(loss, 6))
    0.451462
    """
    _check_reduction(reduction)
    plain_options = (weight is None and ignore_index is None
                     and type(label_smoothing) in (int, float) and label_smoothing == 0)
    if (plain_options and _backend.kernels.is_plain(logits, axis)
            and type(target) is np.ndarray
            and target.dtype.kind in "iu" and target.shape == logits.shape[:-1]):
        # C-contiguous float logits, class indices, the last axis
        x_rows = _as_2d(logits)
        grad = np.empty(x_rows.shape, x_rows.dtype) if return_grad else None
        loss = _cross_entropy_rows(x_rows, None, target, target.shape, reduction, grad,
                                   logits.dtype)
        if grad is None:
            return loss
        return loss, (grad if logits.ndim == 2 else grad.reshape(logits.shape))
    call = _prepare(_as_array, "softmax_cross_entropy", "loss", (logits, target),
                    ("logits", "target"), axis)
    x, t = call.arrays
    options = _loss_options(weight, ignore_index, label_smoothing, x.shape[call.axes[0]],
                            call.is_index)
    # float16 / bfloat16 logits (and probabilities) read, and the gradient
    # written, by the half kernel
    bfloat16 = _half_format(call.result_dtype)
    if bfloat16 is not None:
        half = call.result_dtype
        x_rows = _input_rows(x.astype(half, copy=False), call.axes)
        probs = None if call.is_index else _input_rows(t.reshape(x.shape).astype(half,
                                                                                copy=False),
                                                       call.axes)
        output = _Output(call, x.shape, dtype=half) if return_grad else None
    else:
        bfloat16 = None
        x_rows = call.rows(x)
        probs = None if call.is_index else call.rows(t.reshape(x.shape))
        output = _Output(call, x.shape) if return_grad else None
    loss = _cross_entropy_rows(x_rows, probs, t if call.is_index else None, call.batch_shape,
                               reduction, None if output is None else output.target(),
                               call.compute_dtype, options, bfloat16)
    return loss if output is None else (loss, output.finish())
