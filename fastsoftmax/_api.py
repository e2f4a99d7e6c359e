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
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, TypeVar, Union, overload

import numpy as np
from numpy.exceptions import AxisError
from numpy.typing import ArrayLike, NDArray

from . import _backend

if TYPE_CHECKING:
    from typing_extensions import TypeGuard  # in typing from Python 3.10 on

__all__ = [
    "softmax",
    "log_softmax",
    "softmax_jacobian",
    "softmax_jvp",
    "softmax_vjp",
    "log_softmax_vjp",
    "softmax_cross_entropy",
]

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


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------

def _result_dtype(arr: NDArray[Any], name: str) -> np.dtype[Any]:
    """The result dtype for an input array (API.md's dtype rules)."""
    dt = arr.dtype
    if dt.kind == "f" and dt.itemsize <= 8:
        return np.dtype(dt.type)  # native byte order
    if dt.kind in "biu":
        return _F64
    if dt.kind == "f":
        raise TypeError(f"{name} has dtype {dt} (long double), which the kernels do not "
                        f"compute in; convert it with .astype(numpy.float64)")
    raise TypeError(f"{name} has dtype {dt}, which fastsoftmax does not support: "
                    f"use a real floating-point array (float16/32/64; integer and "
                    f"bool arrays are converted to float64)")


def _compute_dtype(result_dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype the kernels compute in: float16 goes through float32."""
    return _F32 if result_dtype.itemsize <= 4 else _F64


def _as_array(x: ArrayLike, name: str) -> NDArray[Any]:
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; fastsoftmax ignores no mask: "
                        f"write masked entries as -inf instead")
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
    """The derivatives take one int axis."""
    # (checked here, not left to _axes, whose message offers tuples and None)
    message = f"{func} takes a single int axis, got axis={axis!r}"
    if axis is None or isinstance(axis, (tuple, bool, np.bool_)):
        raise TypeError(message)
    try:
        operator.index(axis)
    except TypeError:
        raise TypeError(message) from None
    return _axes(axis, ndim)


def _check_out(out: object, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    """Reject a wrong `out` before anything is computed or written."""
    if out is None:
        return
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


# --------------------------------------------------------------------------
# Layout: (rows, n) views for the kernels
# --------------------------------------------------------------------------

def _moved(arr: NDArray[Any], axes: tuple[int, ...]) -> NDArray[Any]:
    """arr with `axes` moved to the end, in order (a view)."""
    k = len(axes)
    last = tuple(range(arr.ndim - k, arr.ndim))
    return arr if axes == last else np.moveaxis(arr, axes, last)


def _split(shape: tuple[int, ...], k: int) -> tuple[int, int]:
    """(rows, n) for a shape whose last k axes are reduced."""
    return prod(shape[:len(shape) - k]), prod(shape[len(shape) - k:])


def _rows_view(moved: NDArray[Any], k: int) -> NDArray[Any] | None:
    """(rows, n) view of `moved` (its last k axes joined), or None if that
    needs a copy or the rows are not contiguous.  The row stride is free."""
    rows, n = _split(moved.shape, k)
    try:
        view = moved.reshape(rows, n, copy=False)
    except TypeError:  # NumPy < 2.1 has no copy=
        view = moved.reshape(rows, n)
        if moved.size and not np.may_share_memory(view, moved):
            return None
    except ValueError:  # a copy would be needed
        return None
    if n > 1 and view.strides[1] != view.itemsize:
        return None
    return view


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


class _Output:
    """Where a kernel writes: `out` itself when its layout allows, else a
    fresh buffer that is copied (and cast, for float16) into `out`."""

    def __init__(self, shape: tuple[int, ...], axes: tuple[int, ...],
                 result_dtype: np.dtype[Any], compute_dtype: np.dtype[Any],
                 out: NDArray[Any] | None, inputs: list[NDArray[Any]]) -> None:
        self.out = out
        self.result: NDArray[Any] | None = None
        self.result_dtype = result_dtype
        if out is not None and result_dtype == compute_dtype and out.flags.aligned:
            rows = _rows_view(_moved(out, axes), len(axes))
            # writing straight into out is safe unless it overlaps an input
            # without being exactly that input (same memory, same layout)
            if rows is not None and not any(_partial_overlap(rows, a) for a in inputs):
                self.rows = rows
                self.result = out
                return
        # A fresh buffer in the moved layout (reduced axes last), so that
        # its rows are contiguous; the result is its view in `shape`.
        k, ndim = len(axes), len(shape)
        trailing = tuple(range(ndim - k, ndim))
        moved_shape = tuple(shape[i] for i in range(ndim) if i not in axes) + \
            tuple(shape[i] for i in axes)
        buffer = np.empty(moved_shape, compute_dtype)
        self.rows = buffer.reshape(_split(moved_shape, k))
        self.buffer = buffer if axes == trailing else np.moveaxis(buffer, trailing, axes)

    def finish(self) -> NDArray[Any]:
        if self.result is not None:
            return self.result
        if self.out is not None:
            _copy_result(self.out, self.buffer)
            return self.out
        if self.buffer.dtype != self.result_dtype:
            return _cast_result(self.buffer, self.result_dtype)
        return self.buffer


def _partial_overlap(rows: NDArray[Any], other: NDArray[Any]) -> bool:
    if not np.may_share_memory(rows, other):
        return False
    same = (rows.__array_interface__["data"][0] == other.__array_interface__["data"][0]
            and rows.strides == other.strides and rows.shape == other.shape)
    return not same


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------

def _is_plain_rows(x: object, axis: object) -> TypeGuard[_FloatArray]:
    """True for the common case the kernels take as is: a C-contiguous,
    non-empty float32/float64 ndarray, reduced along its last axis."""
    return (type(x) is np.ndarray and type(axis) is int and x.ndim >= 1
            and (axis == -1 or axis == x.ndim - 1) and x.dtype in _KERNEL_DTYPES
            and x.flags.c_contiguous and x.flags.aligned and x.size > 0)


def _as_2d(x: NDArray[Any]) -> NDArray[Any]:
    """(rows, n) view of a C-contiguous array reduced along its last axis."""
    return x if x.ndim == 2 else x.reshape(-1, x.shape[-1])


def _is_plain_out(out: object, x: _FloatArray, *others: NDArray[Any]) -> TypeGuard[_FloatArray]:
    """True when `out` can take the kernel's result for plain-rows inputs
    (`x` and `others` alike) as is: a writeable C-contiguous ndarray like
    `x` that is each input itself or shares no memory with it."""
    return (type(out) is np.ndarray and out.dtype == x.dtype and out.shape == x.shape
            and out.flags.c_contiguous and out.flags.writeable and out.flags.aligned
            and all(out is a or not np.may_share_memory(out, a) for a in (x, *others)))


# A C-contiguous array reduced along one middle axis goes to the column
# kernel (no transposed copy) when its rows are at least this long: shorter
# ones would fill too few vector lanes, and their transposed copy is cheap.
_COLS_MIN_INNER = 16


def _takes_cols(arr: NDArray[Any], axes: tuple[int, ...]) -> bool:
    return (len(axes) == 1 and axes[0] != arr.ndim - 1 and arr.flags.c_contiguous
            and prod(arr.shape[axes[0] + 1:]) >= _COLS_MIN_INNER)


def _cols_view(a: NDArray[Any], axis: int) -> NDArray[Any]:
    """(outer, n, inner) view of a C-contiguous array, reduced along axis 1."""
    return a.reshape(prod(a.shape[:axis]), a.shape[axis], prod(a.shape[axis + 1:]))


def _forward_cols(arr: NDArray[Any], axis: int, out: NDArray[Any] | None,
                  shape: tuple[int, ...], result_dtype: np.dtype[Any],
                  take_log: bool) -> NDArray[Any]:
    """softmax/log_softmax of a C-contiguous array along a non-last axis."""
    direct = (out is not None and out.dtype == arr.dtype and out.flags.c_contiguous
              and out.flags.aligned and not _partial_overlap(out.reshape(arr.shape), arr))
    result = out.reshape(arr.shape) if out is not None and direct else np.empty(arr.shape, arr.dtype)
    _backend.kernels.softmax_cols(_cols_view(arr, axis), _cols_view(result, axis),
                                  _backend.get_num_threads(), take_log)
    if out is not None:
        if not direct:
            _copy_result(out, result.reshape(shape))
        return out
    return _cast_result(result, result_dtype).reshape(shape)


def _forward(x: ArrayLike, axis: _Axis, out: NDArray[Any] | None,
             take_log: bool) -> NDArray[Any]:
    if _is_plain_rows(x, axis) and (out is None or _is_plain_out(out, x)):
        # Fast path: skips the general normalisation below (~5 us of
        # Python), which would find nothing to do.
        y = np.empty_like(x) if out is None else out
        _backend.kernels.softmax_rows(_as_2d(x), _as_2d(y), _backend.get_num_threads(), take_log)
        return y
    arr = _as_array(x, "x")
    result_dtype = _result_dtype(arr, "x")
    compute_dtype = _compute_dtype(result_dtype)
    shape = arr.shape
    if arr.ndim == 0:  # a 0-d input is a one-element softmax
        arr = arr.reshape(1)
    axes = _axes(axis, arr.ndim)
    _check_out(out, shape, result_dtype)

    arr = arr.astype(compute_dtype, copy=False)
    if _takes_cols(arr, axes):
        return _forward_cols(arr, axes[0], out, shape, result_dtype,
                             take_log)
    x_rows = _input_rows(arr, axes)
    out_nd = None if out is None else out.reshape(arr.shape)
    target = _Output(arr.shape, axes, result_dtype, compute_dtype, out_nd, [x_rows])
    _backend.kernels.softmax_rows(x_rows, target.rows, _backend.get_num_threads(), take_log)
    result = target.finish()
    return out if out is not None else result.reshape(shape)


@overload
def softmax(x: NDArray[_FloatT], axis: _Axis = -1, *,
            out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def softmax(x: ArrayLike, axis: _Axis = -1, *,
            out: NDArray[Any] | None = None) -> _FloatArray: ...
def softmax(x: ArrayLike, axis: _Axis = -1, *,
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
        For complex, object, string or long double input, or an `out` of
        the wrong dtype.
    ValueError
        For an `out` of the wrong shape, or a read-only `out`.
    numpy.exceptions.AxisError
        For an out-of-range or repeated axis.

    Notes
    -----
    Stable for any finite input.  A ``-inf`` entry gets probability exactly
    0 (this is how masks are written).  A row that is all ``-inf``, or holds
    a NaN or ``+inf``, is NaN in every entry; other rows are unaffected.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> fs.softmax(np.array([1.0, 2.0, 3.0]))
    array([0.09003057, 0.24472847, 0.66524096])
    >>> fs.softmax([[0.0, -np.inf], [1000.0, 0.0]])
    array([[1., 0.],
           [1., 0.]])
    """
    return _forward(x, axis, out, take_log=False)


@overload
def log_softmax(x: NDArray[_FloatT], axis: _Axis = -1, *,
                out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def log_softmax(x: ArrayLike, axis: _Axis = -1, *,
                out: NDArray[Any] | None = None) -> _FloatArray: ...
def log_softmax(x: ArrayLike, axis: _Axis = -1, *,
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
    """
    return _forward(x, axis, out, take_log=True)


# --------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------

def _pair(a: ArrayLike, b: ArrayLike, axis: SupportsIndex, names: tuple[str, str],
          func: str) -> tuple[NDArray[Any], NDArray[Any], np.dtype[Any]]:
    """Validate two same-shape inputs; both as arrays in the common dtype."""
    a_arr, b_arr = _as_array(a, names[0]), _as_array(b, names[1])
    result_dtype = np.result_type(_result_dtype(a_arr, names[0]),
                                  _result_dtype(b_arr, names[1]))
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got "
                         f"{names[0]}.shape={a_arr.shape} and {names[1]}.shape={b_arr.shape}")
    return a_arr, b_arr, result_dtype


def _product(log_vjp: bool, func: str, a: ArrayLike, b: ArrayLike, axis: SupportsIndex,
             out: NDArray[Any] | None, names: tuple[str, str]) -> NDArray[Any]:
    """Shared body of softmax_jvp, softmax_vjp and log_softmax_vjp."""
    if (_is_plain_rows(a, axis) and type(b) is np.ndarray
            and b.dtype == a.dtype and b.shape == a.shape and b.flags.c_contiguous
            and b.flags.aligned and (out is None or _is_plain_out(out, a, b))):
        y = np.empty_like(a) if out is None else out
        _backend.kernels.product_rows(_as_2d(a), _as_2d(b), _as_2d(y),
                                      _backend.get_num_threads(), log_vjp)
        return y
    a_arr, b_arr, result_dtype = _pair(a, b, axis, names, func)
    compute_dtype = _compute_dtype(result_dtype)
    shape = a_arr.shape
    if a_arr.ndim == 0:
        a_arr, b_arr = a_arr.reshape(1), b_arr.reshape(1)
    axes = _single_axis(axis, a_arr.ndim, func)
    _check_out(out, shape, result_dtype)

    a_rows = _input_rows(a_arr.astype(compute_dtype, copy=False), axes)
    b_rows = _input_rows(b_arr.astype(compute_dtype, copy=False), axes)
    out_nd = None if out is None else out.reshape(a_arr.shape)
    target = _Output(a_arr.shape, axes, result_dtype, compute_dtype, out_nd,
                     [a_rows, b_rows])
    _backend.kernels.product_rows(a_rows, b_rows, target.rows, _backend.get_num_threads(),
                                  log_vjp)
    result = target.finish()
    return out if out is not None else result.reshape(shape)


@overload
def softmax_jvp(s: NDArray[_FloatT], v: NDArray[_FloatT], axis: SupportsIndex = -1, *,
                out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def softmax_jvp(s: ArrayLike, v: ArrayLike, axis: SupportsIndex = -1, *,
                out: NDArray[Any] | None = None) -> _FloatArray: ...
def softmax_jvp(s: ArrayLike, v: ArrayLike, axis: SupportsIndex = -1, *,
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
    axis : int, optional
        The softmax axis (default the last).
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
def softmax_vjp(s: NDArray[_FloatT], g: NDArray[_FloatT], axis: SupportsIndex = -1, *,
                out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def softmax_vjp(s: ArrayLike, g: ArrayLike, axis: SupportsIndex = -1, *,
                out: NDArray[Any] | None = None) -> _FloatArray: ...
def softmax_vjp(s: ArrayLike, g: ArrayLike, axis: SupportsIndex = -1, *,
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
    axis : int, optional
        The softmax axis (default the last).
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
def log_softmax_vjp(logp: NDArray[_FloatT], g: NDArray[_FloatT], axis: SupportsIndex = -1, *,
                    out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def log_softmax_vjp(logp: ArrayLike, g: ArrayLike, axis: SupportsIndex = -1, *,
                    out: NDArray[Any] | None = None) -> _FloatArray: ...
def log_softmax_vjp(logp: ArrayLike, g: ArrayLike, axis: SupportsIndex = -1, *,
                    out: NDArray[Any] | None = None) -> NDArray[Any]:
    """Vector-Jacobian product of log_softmax: ``g - exp(logp) * sum(g, axis)``.

    Parameters
    ----------
    logp : array_like
        log_softmax output along `axis`.
    g : array_like
        Upstream gradient, the same shape as `logp`.
    axis : int, optional
        The softmax axis (default the last).
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
def softmax_jacobian(s: NDArray[_FloatT], axis: SupportsIndex = -1, *,
                     out: NDArray[_FloatT] | None = None) -> NDArray[_FloatT]: ...
@overload
def softmax_jacobian(s: ArrayLike, axis: SupportsIndex = -1, *,
                     out: NDArray[Any] | None = None) -> _FloatArray: ...
def softmax_jacobian(s: ArrayLike, axis: SupportsIndex = -1, *,
                     out: NDArray[Any] | None = None) -> NDArray[Any]:
    """The full softmax Jacobian ``J[..., i, j] = s_i (δ_ij - s_j)`` per row.

    Needed only when the matrix itself is wanted; backprop needs
    :func:`softmax_vjp`, which is O(n) per row instead of O(n²).

    Parameters
    ----------
    s : array_like
        Softmax output along `axis`.
    axis : int, optional
        The softmax axis (default the last).
    out : ndarray, optional
        Array of the result's shape and dtype to write into.

    Returns
    -------
    ndarray
        Shape ``batch + (n, n)``: `s` with `axis` moved last, plus one more
        axis of length n.  Each matrix is symmetric with rows summing to 0.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> fs.softmax_jacobian(np.array([0.5, 0.5]))
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    if out is None and _is_plain_rows(s, axis):  # fast path, as in _forward
        n = s.shape[-1]
        _check_jacobian_size(s.shape + (n,), s.dtype)
        jac = np.empty(s.shape + (n,), s.dtype)
        _backend.kernels.softmax_jacobian_rows(_as_2d(s), jac.reshape(-1, n, n),
                                               _backend.get_num_threads())
        return jac
    arr = _as_array(s, "s")
    result_dtype = _result_dtype(arr, "s")
    compute_dtype = _compute_dtype(result_dtype)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    (axis_,) = _single_axis(axis, arr.ndim, "softmax_jacobian")
    moved = np.moveaxis(arr, axis_, -1)
    n = moved.shape[-1]
    shape = moved.shape + (n,)
    _check_out(out, shape, result_dtype)
    rows = prod(moved.shape[:-1])
    buffer = None
    if out is None:
        # the result (n times the input) before any copy of the input: a
        # request too big fails on the result, naming its size
        _check_jacobian_size(shape, compute_dtype)
        buffer = np.empty((rows, n, n), compute_dtype)

    s_rows = _input_rows(moved.astype(compute_dtype, copy=False), (moved.ndim - 1,))
    if (out is not None and result_dtype == compute_dtype and out.flags.c_contiguous
            and out.flags.aligned and not np.may_share_memory(out, s_rows)):
        _backend.kernels.softmax_jacobian_rows(s_rows, out.reshape(rows, n, n),
                                               _backend.get_num_threads())
        return out
    if buffer is None:
        buffer = np.empty((rows, n, n), compute_dtype)
    _backend.kernels.softmax_jacobian_rows(s_rows, buffer, _backend.get_num_threads())
    buffer = buffer.reshape(shape)
    if out is not None:
        _copy_result(out, buffer)
        return out
    return _cast_result(buffer, result_dtype)


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
    if target.dtype.kind == "f":
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
    if flat.dtype == _I64 and flat.flags.c_contiguous and flat.flags.aligned:
        return flat
    if flat.dtype == np.uint64 and flat.size and flat.max() > np.iinfo(np.int64).max:
        return np.where(flat < n, flat, -1).astype(np.int64)  # keep huge ones out of range
    return np.require(flat, np.int64, ["C_CONTIGUOUS", "ALIGNED"])


def _index_error(value: object, n: int, where: object) -> IndexError:
    """The error for class index `value`, outside [0, n), at row `where`
    (an int, or a tuple for a batch of more than one axis)."""
    return IndexError(f"target index {value} is out of range for {n} classes "
                      f"(at row {where}); indices must lie in [0, {n})")


def _cross_entropy_rows(x_rows: NDArray[Any], probs: NDArray[Any] | None,
                        target: NDArray[Any] | None, batch_shape: tuple[int, ...],
                        reduction: str, return_grad: bool, compute_dtype: np.dtype[Any],
                        ) -> tuple[np.floating[Any] | _FloatArray, _FloatArray | None]:
    """Run the loss kernel on (rows, n) logits, with probabilities `probs`
    or class indices `target`; (loss reduced, grad rows or None).
    IndexError for a class index out of range, raised before anything is
    computed (the kernel checks first)."""
    rows, n = x_rows.shape
    index = None if target is None else _class_indices(target, n)
    # The kernel writes no loss for a row of no classes: it is a sum of
    # nothing, 0.  Row losses are only kept for reduction="none".
    losses = None
    if reduction == "none":
        losses = np.empty(rows, np.float64) if n else np.zeros(rows, np.float64)
    grad = np.empty((rows, n), compute_dtype) if return_grad else None
    scale = 1.0 / rows if (reduction == "mean" and rows) else 1.0
    total, bad_row = _backend.kernels.cross_entropy_rows(x_rows, probs, index, losses, grad,
                                                         scale, _backend.get_num_threads())
    if bad_row >= 0:
        assert target is not None
        where = (tuple(int(i) for i in np.unravel_index(bad_row, batch_shape))
                 if len(batch_shape) > 1 else bad_row)
        raise _index_error(target.reshape(-1)[bad_row], n, where)
    # A float32 loss beyond the range is inf, as the kernels' own results
    # are, without the cast's overflow warning (and without np.errstate,
    # ~1 us, on the scalar path).
    if losses is not None:
        loss = _cast_result(losses.reshape(batch_shape), compute_dtype)
    else:
        value = total * scale if rows else (np.nan if reduction == "mean" else 0.0)
        if compute_dtype != _F64 and abs(value) > _F32_MAX:
            value = math.copysign(math.inf, value)
        loss = compute_dtype.type(value)
    return loss, grad


# The result's structure follows `reduction` and `return_grad`: a scalar
# or one loss per row, alone or with the gradient.
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: Literal["mean", "sum"] = "mean",
                          return_grad: Literal[False] = False) -> np.floating[Any]: ...
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: Literal["none"],
                          return_grad: Literal[False] = False) -> _FloatArray: ...
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: Literal["mean", "sum"] = "mean",
                          return_grad: Literal[True]) -> tuple[np.floating[Any], _FloatArray]: ...
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: Literal["none"],
                          return_grad: Literal[True]) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean", return_grad: bool = False,
                          ) -> _CrossEntropyResult: ...
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean", return_grad: bool = False,
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
        For a target of the wrong shape (both shapes are named) or an
        unknown `reduction`.
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
    """
    # (the str check first: `in` would compare an array elementwise)
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, _REDUCTIONS))}; "
                         f"got {reduction!r}")
    if (_is_plain_rows(logits, axis) and type(target) is np.ndarray
            and target.dtype.kind in "iu" and target.shape == logits.shape[:-1]):
        # Fast path (C-contiguous float logits, class indices, last axis):
        # the general normalisation below would find nothing to do.
        loss, grad = _cross_entropy_rows(_as_2d(logits), None, target, target.shape,
                                         reduction, return_grad, logits.dtype)
        if grad is None:
            return loss
        return loss, (grad if logits.ndim == 2 else grad.reshape(logits.shape))
    x = _as_array(logits, "logits")
    t = _as_array(target, "target")
    x_result = _result_dtype(x, "logits")
    logits_shape = x.shape
    if x.ndim == 0:
        x = x.reshape(1)
    (axis_,) = _single_axis(axis, x.ndim, "softmax_cross_entropy")
    moved = _moved(x, (axis_,))
    batch_shape, n = moved.shape[:-1], moved.shape[-1]
    is_index, grad_dtype = _target_kind(t, logits_shape, batch_shape, axis_, x_result)
    compute_dtype = _compute_dtype(grad_dtype)

    x_rows = _input_rows(moved.astype(compute_dtype, copy=False), (moved.ndim - 1,))
    probs = None
    if not is_index:
        probs = _input_rows(t.reshape(x.shape).astype(compute_dtype, copy=False), (axis_,))

    loss, grad = _cross_entropy_rows(x_rows, probs, t if is_index else None, batch_shape,
                                     reduction, return_grad, compute_dtype)
    if grad is None:  # return_grad=False
        return loss
    dlogits = np.moveaxis(grad.reshape(batch_shape + (n,)), -1, axis_)
    return loss, _cast_result(dlogits, grad_dtype).reshape(logits_shape)
