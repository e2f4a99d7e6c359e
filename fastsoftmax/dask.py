"""The fastsoftmax functions over dask arrays: lazy, chunked, one kernel call per block.

Every function here has the signature and the semantics of the top-level
function of the same name (see :mod:`fastsoftmax`), takes
:class:`dask.array.Array` inputs (NumPy arrays and other array-likes are
wrapped with :func:`dask.array.asarray`) and returns dask arrays.  Nothing is
computed when a function is called: it checks what can be checked from the
shapes and dtypes, then builds a graph in which every block is handed to the
compiled kernel, the top-level function applied to that NumPy block.

Rules particular to dask:

* The softmax axis must lie in one chunk, since each row is normalised by
  one kernel call.  An input split along it is rechunked to one chunk there
  (the other axes keep their chunks), with a :class:`RechunkWarning`.
* There is no ``out=``: dask arrays are immutable.
* Errors that depend on the values, such as an out-of-range class index,
  are raised when the result is computed.
* Sizes must be known: an array with unknown chunk sizes (NaN in its shape,
  e.g. after boolean indexing) raises ``ValueError``; call its
  ``compute_chunk_sizes()`` first.

Importing this module needs dask (``pip install "fastsoftmax[dask]"``);
importing :mod:`fastsoftmax` itself never does.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Literal, SupportsIndex, Union, cast, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

try:
    import dask.array as da
    # (from where they are defined: older dask.array exports them in a way
    # that type checkers do not see)
    from dask.array.core import Array, PerformanceWarning
except ImportError as exc:  # dask is an optional dependency
    raise ImportError('fastsoftmax.dask needs dask with its array module: '
                      'pip install "fastsoftmax[dask]"') from exc

from . import _api
from ._api import __all__, _Reduction

__all__ += ("RechunkWarning",)  # the functions of fastsoftmax, and the warning

_Input = Union[Array, ArrayLike]


class RechunkWarning(UserWarning, PerformanceWarning):
    """An input was split along the softmax axis and has been rechunked.

    Each row must lie in one block, so such an input is rechunked to one
    chunk along that axis, which makes its blocks larger by the number of
    chunks it had there.  Rechunk the input yourself (for instance
    ``x.rechunk({-1: -1})``, choosing the other chunks so that a block
    stays a comfortable size) to avoid the warning, or silence it.  It is
    also a :class:`dask.array.PerformanceWarning`, so a filter on that
    category silences it as well.

    Examples
    --------
    >>> import warnings
    >>> import dask.array as da
    >>> import fastsoftmax.dask as fsd
    >>> x = da.zeros((4, 6), chunks=(2, 3))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     p = fsd.softmax(x)
    >>> [w.category.__name__ for w in caught]
    ['RechunkWarning']
    >>> p.chunks
    ((2, 2), (6,))
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", fsd.RechunkWarning)
    ...     p = fsd.softmax(x)       # silent
    """


# --------------------------------------------------------------------------
# Typed calls into dask
# --------------------------------------------------------------------------
# Most of dask.array carries no annotations, and mypy --strict rejects calls
# to unannotated functions.  These wrappers are the only places that call
# it, through an untyped view of the module (so they type-check whichever
# parts a given dask version annotates), and give their results a type.
_da: Any = da


def _map_blocks(func: Callable[..., Any], *arrays: Array, **kwargs: Any) -> Array:
    return cast(Array, _da.map_blocks(func, *arrays, **kwargs))


def _rechunk(x: Array, chunks: Any) -> Array:
    return cast(Array, _da.rechunk(x, chunks))


def _reshape(x: Array, shape: tuple[int, ...]) -> Array:
    return x if x.shape == shape else cast(Array, _da.reshape(x, shape))


# --------------------------------------------------------------------------
# Inputs: validation (eager, from shapes and dtypes) and chunking
# --------------------------------------------------------------------------

def _as_input(x: _Input, name: str) -> Array | NDArray[Any]:
    """A dask array as it is, anything else as a NumPy array (wrapped in
    dask later, once the softmax axes are known)."""
    if isinstance(x, Array):
        if isinstance(x._meta, np.ma.MaskedArray):
            raise TypeError(f"{name} is a masked dask array, whose mask fastsoftmax would "
                            f"not see: pass its data and where=~mask, or write masked "
                            f"entries as -inf")
        if any(math.isnan(size) for size in x.shape):
            raise ValueError(f"{name} has unknown chunk sizes (shape {x.shape}); call "
                             f"{name}.compute_chunk_sizes() first")
        return x
    return _api._as_array(x, name)


def _meta(ndim: int, dtype: np.dtype[Any]) -> NDArray[Any]:
    """An empty block of the result's type, so that dask need not call a
    kernel on made-up data to find it."""
    return np.empty((0,) * ndim, dtype)


def _to_dask(x: Array | NDArray[Any], axes: tuple[int, ...]) -> Array:
    """x as a dask array; a NumPy array is chunked with `axes` whole."""
    if isinstance(x, Array):
        return x
    chunks = tuple(-1 if i in axes else "auto" for i in range(x.ndim))
    return cast(Array, _da.asarray(x, chunks=chunks))


def _split_along(x: Array, axes: tuple[int, ...]) -> list[int]:
    return [a for a in axes if x.numblocks[a] > 1]


def _whole_along(x: Array, axes: tuple[int, ...], func: str, names: str,
                 split: list[int], stacklevel: int) -> Array:
    """x rechunked to one chunk along each of `axes`; warns if it was split
    along any of `split` (the axes where any of the inputs `names` is split).
    `stacklevel` counts the frames from here to the caller of the public
    function, so that the warning points at the user's line."""
    if split:
        where = ", ".join(f"axis {a}" for a in split)
        spec = "{" + ", ".join(f"{a}: -1" for a in split) + "}"
        warnings.warn(f"{func}: {names} is split into several chunks along {where}, "
                      f"which {func} normalises over; rechunking to one chunk there "
                      f"(larger blocks).  Rechunk it beforehand, e.g. .rechunk({spec}), "
                      f"or filter fastsoftmax.dask.RechunkWarning to silence this.",
                      RechunkWarning, stacklevel=stacklevel)
    if _split_along(x, axes):
        x = _rechunk(x, {a: -1 for a in axes})
    return x


def _whole(call: _api._Call[Array | NDArray[Any]], func: str, names: tuple[str, ...],
           stacklevel: int) -> list[Array]:
    """The inputs of a checked call as dask arrays, each one chunk along the
    call's axes, with one RechunkWarning if any of them was split there.
    `stacklevel` counts the frames from here to the user's call."""
    arrays = [_to_dask(a, call.axes) for a in call.arrays]
    split = sorted({a for d in arrays for a in _split_along(d, call.axes)})
    whole = []
    for d in arrays:  # (a loop: a comprehension is a frame of its own before Python 3.12)
        whole.append(_whole_along(d, call.axes, func, " or ".join(names), split,
                                  stacklevel + 1))
        split = []  # one warning for all
    return whole


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------

def _with_mask(call: _api._Call[Array | NDArray[Any]]) -> tuple[str, ...]:
    """Put a call's `where=` mask, broadcast to the first input's shape (a
    view for NumPy, lazy for dask: blocks of zero strides), last among its
    arrays; the names of the arrays."""
    if call.mask is None:
        return ()
    mask, shape = call.mask, call.arrays[0].shape
    call.arrays.append(cast(Array, _da.broadcast_to(mask, shape)) if isinstance(mask, Array)
                       else np.broadcast_to(mask, shape))
    return ("where",)


def _chunked_as_first(arrays: list[Array]) -> None:
    """The second and later arrays rechunked as the first (whole along the
    reduced axes already)."""
    for i in range(1, len(arrays)):
        if arrays[i].chunks != arrays[0].chunks:
            arrays[i] = _rechunk(arrays[i], arrays[0].chunks)


def _masked_block(*blocks: NDArray[Any], kernel: Callable[..., NDArray[Any]], masked: bool,
                  **kwargs: Any) -> Any:
    """kernel on one block of each input, the last one (if `masked`) passed
    as where=."""
    if masked:
        kwargs["where"] = blocks[-1]
        blocks = blocks[:-1]
    return kernel(*blocks, **kwargs)


def _forward(kernel: Callable[..., NDArray[Any]], x: _Input, axis: _api._Axis,
             where: _Input | None) -> Array:
    func = kernel.__name__
    call = _api._prepare(_as_input, func, "forward", (x,), ("x",), axis, where=where)
    names = ("x",) + _with_mask(call)
    arrays = _whole(call, func, names, 4)  # _whole <- _forward <- softmax <- caller
    _chunked_as_first(arrays)
    dtype = call.result_dtype
    result = _map_blocks(_masked_block, *arrays, kernel=kernel, masked=where is not None,
                         axis=call.axes, dtype=dtype, meta=_meta(arrays[0].ndim, dtype))
    return _reshape(result, call.shape)


def softmax(x: _Input, axis: _api._Axis = -1, *, where: _Input | None = None) -> Array:
    """Softmax along `axis` of a dask array, ``exp(x - max) / sum(exp(x - max))``, lazily.

    As :func:`fastsoftmax.softmax`, block by block.  The blocks must hold
    whole rows: an input split along `axis` is rechunked to one chunk there
    (the other axes keep their chunks), with a :class:`RechunkWarning`.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Input values (logits).  A NumPy array is wrapped in a dask array,
        whole along `axis`, automatically chunked along the other axes.
    axis : int, tuple of ints or None, optional
        Axis or axes to normalise over; None for the whole array (which is
        then one chunk).
    where : dask.array.Array or array_like of bool, optional
        Which entries take part, as for :func:`fastsoftmax.softmax`:
        broadcast to `x` lazily (no block is expanded) and chunked as `x`.

    Returns
    -------
    dask.array.Array
        Probabilities with the shape of `x`, not yet computed; its dtype
        follows the rules of :func:`fastsoftmax.softmax`.  There is no
        ``out=``: dask arrays are immutable.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As :func:`fastsoftmax.softmax`, at the call (from dtypes and shapes).

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fastsoftmax.dask as fsd
    >>> x = da.from_array(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), chunks=(1, 3))
    >>> p = fsd.softmax(x)                    # builds the graph only
    >>> p.chunks
    ((1, 1), (3,))
    >>> with dask.config.set(scheduler="synchronous"):
    ...     p.compute()
    array([[0.09003057, 0.24472847, 0.66524096],
           [0.33333333, 0.33333333, 0.33333333]])
    """
    return _forward(_api.softmax, x, axis, where)


def log_softmax(x: _Input, axis: _api._Axis = -1, *, where: _Input | None = None) -> Array:
    """Log of the softmax along `axis` of a dask array, lazily.

    As :func:`fastsoftmax.log_softmax`, block by block; chunking rules as
    for :func:`softmax`.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Input values (logits).
    axis : int, tuple of ints or None, optional
        Axis or axes to normalise over; None for the whole array.
    where : dask.array.Array or array_like of bool, optional
        Which entries take part, as for :func:`softmax`.

    Returns
    -------
    dask.array.Array
        Log-probabilities with the shape of `x`, not yet computed.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fastsoftmax.dask as fsd
    >>> x = da.from_array(np.array([[1.0, 2.0], [3.0, 2.0]]), chunks=(2, 1))
    >>> with dask.config.set(scheduler="synchronous"):   # columns: whole along axis 0
    ...     fsd.log_softmax(x, axis=0).compute()
    array([[-2.12692801, -0.69314718],
           [-0.12692801, -0.69314718]])
    """
    return _forward(_api.log_softmax, x, axis, where)


@overload
def logsumexp(x: _Input, axis: _api._Axis = -1, *, b: _Input | None = None,
              keepdims: bool = False, return_sign: Literal[False] = False,
              where: _Input | None = None) -> Array: ...
@overload
def logsumexp(x: _Input, axis: _api._Axis = -1, *, b: _Input | None = None,
              keepdims: bool = False, return_sign: Literal[True],
              where: _Input | None = None) -> tuple[Array, Array]: ...
def logsumexp(x: _Input, axis: _api._Axis = -1, *, b: _Input | None = None,
              keepdims: bool = False, return_sign: bool = False,
              where: _Input | None = None) -> Array | tuple[Array, Array]:
    """``log(sum(b * exp(x)))`` along `axis` of a dask array, lazily.

    As :func:`fastsoftmax.logsumexp`, block by block: the reduced axes are
    made whole (with a :class:`RechunkWarning` if an input was split along
    them), and `b` is broadcast to `x` and chunked as `x`.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Input values.
    axis : int, tuple of ints or None, optional
        The axis (default the last), axes or None (all) to reduce.
    b : dask.array.Array or array_like, optional
        Scale factors, broadcastable to `x`.
    keepdims : bool, optional
        Keep the reduced axes, with length 1.
    return_sign : bool, optional
        Also return the sign of the sum (both from one pass over each
        block).
    where : dask.array.Array or array_like of bool, optional
        Which entries take part, broadcastable to `x` (lazily, as `b`).

    Returns
    -------
    dask.array.Array, or a pair of them
        The result (and its sign), not yet computed; chunked as `x` along
        the axes not reduced.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fastsoftmax.dask as fsd
    >>> x = da.from_array(np.array([[0.0, 0.0], [1.0, 1.0]]), chunks=(1, 2))
    >>> with dask.config.set(scheduler="synchronous"):
    ...     fsd.logsumexp(x).compute()
    array([0.69314718, 1.69314718])
    """
    args: tuple[_Input, ...] = (x,) if b is None else (x, b)
    names: tuple[str, ...] = ("x",) if b is None else ("x", "b")
    call = _api._prepare(_as_input, "logsumexp", "reduce", args, names, axis,
                         keepdims=bool(keepdims), where=where)
    if b is not None:  # b as x's shape (a view for NumPy, lazy for dask)
        b_full = call.arrays[1]
        shape = call.arrays[0].shape
        call.arrays[1] = (cast(Array, _da.broadcast_to(b_full, shape)) if isinstance(b_full, Array)
                          else np.broadcast_to(b_full, shape))
    names += _with_mask(call)
    arrays = _whole(call, "logsumexp", names, 3)  # _whole <- here <- caller
    _chunked_as_first(arrays)
    dtype = call.result_dtype
    # each block reduced with keepdims (one chunk of 1 along each reduced
    # axis), with its sign stacked before it along a new first axis
    kept = tuple((1,) if i in call.axes else c for i, c in enumerate(arrays[0].chunks))
    blocks = _map_blocks(_masked_block, *arrays, kernel=_logsumexp_block,
                         masked=where is not None, axes=call.axes,
                         return_sign=bool(return_sign), new_axis=0, chunks=((2,),) + kept,
                         dtype=dtype, meta=_meta(arrays[0].ndim + 1, dtype))
    value = _reshape(blocks[1], call.result_shape)
    if not return_sign:
        return value
    return value, _reshape(blocks[0], call.result_shape)


def _logsumexp_block(x: NDArray[Any], b: NDArray[Any] | None = None, *,
                     axes: tuple[int, ...], return_sign: bool,
                     where: NDArray[Any] | None = None) -> NDArray[Any]:
    """One block of fsd.logsumexp: (sign, value) stacked, with keepdims (the
    sign is 0 where it was not asked for)."""
    if return_sign:
        value, sign = _api.logsumexp(x, axes, b=b, keepdims=True, return_sign=True,
                                     where=where)
        return np.stack([np.asarray(sign), np.asarray(value)])
    value = np.asarray(_api.logsumexp(x, axes, b=b, keepdims=True, where=where))
    return np.stack([np.zeros_like(value), value])


# --------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------

def _product(kernel: Callable[..., NDArray[Any]], a: _Input, b: _Input,
             axis: _api._Axis, names: tuple[str, str]) -> Array:
    """Shared body of softmax_jvp, softmax_vjp and log_softmax_vjp."""
    func = kernel.__name__
    call = _api._prepare(_as_input, func, "product", (a, b), names, axis)
    a_d, b_d = _whole(call, func, names, 4)  # _whole <- here <- softmax_jvp <- caller
    if b_d.chunks != a_d.chunks:  # the blocks are paired one to one
        b_d = _rechunk(b_d, a_d.chunks)
    dtype = call.result_dtype
    result = _map_blocks(kernel, a_d, b_d, axis=call.axes, dtype=dtype,
                         meta=_meta(a_d.ndim, dtype))
    return _reshape(result, call.shape)


def softmax_jvp(s: _Input, v: _Input, axis: _api._Axis = -1) -> Array:
    """Jacobian-vector product of softmax, ``s * (v - sum(s * v, axis))``, lazily.

    As :func:`fastsoftmax.softmax_jvp`, block by block.  Both inputs are
    made whole along `axis` (with a :class:`RechunkWarning` if either was
    split there), and `v` is rechunked to the chunks of `s` if they differ.

    Parameters
    ----------
    s : dask.array.Array or array_like
        Softmax output along `axis`.
    v : dask.array.Array or array_like
        Tangent vectors, the same shape as `s`.
    axis : int, tuple of ints or None, optional
        The softmax axis (default the last), axes, or None for all, as for
        :func:`softmax`.

    Returns
    -------
    dask.array.Array
        ``J v`` per row, with the shape of `s`, not yet computed.

    Raises
    ------
    ValueError
        If `s` and `v` differ in shape (both shapes are named), at the call.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> import fastsoftmax.dask as fsd
    >>> s = fs.softmax(np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]))
    >>> v = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    >>> jv = fsd.softmax_jvp(da.from_array(s, chunks=(1, 3)), v)
    >>> with dask.config.set(scheduler="synchronous"):
    ...     np.allclose(jv.compute(), fs.softmax_jvp(s, v))
    True
    """
    return _product(_api.softmax_jvp, s, v, axis, ("s", "v"))


def softmax_vjp(s: _Input, g: _Input, axis: _api._Axis = -1) -> Array:
    """Vector-Jacobian product of softmax, the backward pass, lazily.

    As :func:`fastsoftmax.softmax_vjp` (``s * (g - sum(s * g, axis))``),
    block by block; chunking rules as for :func:`softmax_jvp`.

    Parameters
    ----------
    s : dask.array.Array or array_like
        Softmax output along `axis`.
    g : dask.array.Array or array_like
        Upstream gradient, the same shape as `s`.
    axis : int, tuple of ints or None, optional
        The softmax axis (default the last), axes, or None for all, as for
        :func:`softmax`.

    Returns
    -------
    dask.array.Array
        dL/dx with the shape of `s`, not yet computed.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fastsoftmax as fs
    >>> import fastsoftmax.dask as fsd
    >>> s = fs.softmax(np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]))
    >>> g = np.array([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]])
    >>> dx = fsd.softmax_vjp(da.from_array(s, chunks=(1, 3)), da.from_array(g, chunks=(1, 3)))
    >>> with dask.config.set(scheduler="synchronous"):
    ...     np.allclose(dx.compute(), s * (g - (s * g).sum(-1, keepdims=True)))
    True
    """
    return _product(_api.softmax_vjp, s, g, axis, ("s", "g"))


def log_softmax_vjp(logp: _Input, g: _Input, axis: _api._Axis = -1) -> Array:
    """Vector-Jacobian product of log_softmax, ``g - exp(logp) * sum(g, axis)``, lazily.

    As :func:`fastsoftmax.log_softmax_vjp`, block by block; chunking rules
    as for :func:`softmax_jvp`.

    Parameters
    ----------
    logp : dask.array.Array or array_like
        log_softmax output along `axis`.
    g : dask.array.Array or array_like
        Upstream gradient, the same shape as `logp`.
    axis : int, tuple of ints or None, optional
        The softmax axis (default the last), axes, or None for all, as for
        :func:`softmax`.

    Returns
    -------
    dask.array.Array
        dL/dx with the shape of `logp`, not yet computed.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fastsoftmax.dask as fsd
    >>> logp = fsd.log_softmax(da.from_array(np.array([[1.0, 2.0, 3.0]])))
    >>> g = np.array([[-1.0, 0.0, 0.0]])          # d(-logp[0]) / d logp
    >>> with dask.config.set(scheduler="synchronous"):
    ...     fsd.log_softmax_vjp(logp, g).compute()  # softmax minus one-hot
    array([[-0.90996943,  0.24472847,  0.66524096]])
    """
    return _product(_api.log_softmax_vjp, logp, g, axis, ("logp", "g"))


def softmax_jacobian(s: _Input, axis: _api._Axis = -1) -> Array:
    """The full softmax Jacobian ``J[..., i, j] = s_i (δ_ij - s_j)`` per row, lazily.

    As :func:`fastsoftmax.softmax_jacobian`: the reduced axes are moved
    last and joined into n elements, and one more axis of length n is
    added.  Each output block holds the matrices
    of one input block, so it is n times the size of that block: choose
    the batch chunks with that in mind.

    Parameters
    ----------
    s : dask.array.Array or array_like
        Softmax output along `axis`.
    axis : int, tuple of ints or None, optional
        The softmax axis (default the last), axes, or None for all, as for
        :func:`softmax`.

    Returns
    -------
    dask.array.Array
        Shape ``batch + (n, n)``, not yet computed; chunked as `s` along
        the batch axes, one chunk along the two last axes.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fastsoftmax.dask as fsd
    >>> s = da.from_array(np.array([[0.5, 0.5], [1.0, 0.0]]), chunks=(1, 2))
    >>> jac = fsd.softmax_jacobian(s)
    >>> jac.shape, jac.chunks
    ((2, 2, 2), ((1, 1), (2,), (2,)))
    >>> with dask.config.set(scheduler="synchronous"):
    ...     jac.compute()[0]
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    call = _api._prepare(_as_input, "softmax_jacobian", "jacobian", (s,), ("s",), axis)
    (darr,) = _whole(call, "softmax_jacobian", ("s",), 3)  # _whole <- here <- caller
    dtype = call.result_dtype
    # a lazy transpose (the kernel takes blocks of any strides), the axes,
    # whole in every block, joined into one
    k = len(call.axes)
    moved = cast(Array, _da.moveaxis(darr, call.axes, tuple(range(darr.ndim - k, darr.ndim))))
    n = call.result_shape[-1]
    moved = _reshape(moved, moved.shape[:moved.ndim - k] + (n,))
    return _map_blocks(_api.softmax_jacobian, moved, axis=-1, new_axis=moved.ndim,
                       chunks=moved.chunks + ((n,),), dtype=dtype,
                       meta=_meta(moved.ndim + 1, dtype))


# --------------------------------------------------------------------------
# Fused loss
# --------------------------------------------------------------------------

def _check_indices(index: NDArray[Any], n: int, start: tuple[int, ...],
                   batch_ndim: int, ignore_index: int | None) -> None:
    """IndexError for a class index outside [0, n) (that is not
    ignore_index), naming its row in the whole array (`start`: where the
    block begins in the batch axes)."""
    bad = ((index < 0) | (index >= n)) & (index != ignore_index)
    if not bad.any():
        return
    k = int(np.argmax(bad.reshape(-1)))
    local = np.unravel_index(k, index.shape)
    row = tuple(int(s + i) for s, i in zip(start, local))
    where = row if batch_ndim > 1 else (row[0] if row else 0)
    raise _api._index_error(index.reshape(-1)[k], n, where)


def _cross_entropy_block(logits: NDArray[Any], target: NDArray[Any], *, axis: int,
                         is_index: bool, return_grad: bool, compute_dtype: np.dtype[Any],
                         options: dict[str, Any], block_info: dict[Any, Any]) -> Any:
    """Per-row losses of one block (with its unscaled gradient: a tuple)."""
    logits = logits.astype(compute_dtype, copy=False)
    if is_index:
        target = np.squeeze(target, axis)  # the length-1 axis that paired the blocks
        location = block_info[0]["array-location"]
        start = tuple(lo for d, (lo, _) in enumerate(location) if d != axis)
        _check_indices(target, logits.shape[axis], start, logits.ndim - 1,
                       options.get("ignore_index"))
    else:
        target = target.astype(compute_dtype, copy=False)
    return _api.softmax_cross_entropy(logits, target, axis, reduction="none",
                                      return_grad=return_grad, **options)


def _reciprocal(total: NDArray[Any]) -> NDArray[np.float64]:
    """1 / total, NaN for a total of 0 (the mean of nothing)."""
    with np.errstate(divide="ignore"):
        result: NDArray[np.float64] = np.where(total > 0, 1.0 / total, np.nan)
    return result


def _pick_loss(pair: tuple[NDArray[Any], NDArray[Any]]) -> NDArray[Any]:
    return pair[0]


def _pick_grad(pair: tuple[NDArray[Any], NDArray[Any]], *, scale: float,
               grad_dtype: np.dtype[Any]) -> NDArray[Any]:
    grad = pair[1] if scale == 1.0 else pair[1] * scale  # a new array: blocks are shared
    return grad.astype(grad_dtype, copy=False)


@overload
def softmax_cross_entropy(logits: _Input, target: _Input, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean",
                          return_grad: Literal[False] = False,
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0) -> Array: ...
@overload
def softmax_cross_entropy(logits: _Input, target: _Input, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean",
                          return_grad: Literal[True],
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0) -> tuple[Array, Array]: ...
@overload
def softmax_cross_entropy(logits: _Input, target: _Input, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean", return_grad: bool = False,
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0) -> Array | tuple[Array, Array]: ...
def softmax_cross_entropy(logits: _Input, target: _Input, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean", return_grad: bool = False,
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0) -> Array | tuple[Array, Array]:
    """Cross-entropy of softmax(logits) against `target` over a dask array, lazily.

    As :func:`fastsoftmax.softmax_cross_entropy`.  Each block gives the
    losses of its rows (and, with `return_grad`, their gradient) in one
    kernel pass; "sum" and "mean" then add the per-row losses of all blocks
    with dask (in float64), and "mean" divides by the total number of rows
    (the same 1/rows scales the gradient).

    Parameters
    ----------
    logits : dask.array.Array or array_like
        Unnormalised log-probabilities.  Split along `axis`, it is rechunked
        to one chunk there, with a :class:`RechunkWarning`.
    target : dask.array.Array or array_like
        Class indices (an integer dtype, the shape of `logits` without
        `axis`) or probabilities (a floating dtype, the shape of `logits`);
        rechunked to the chunks of `logits` if they differ.
    axis : int, optional
        The class axis (default the last).
    reduction : {"mean", "sum", "none"}, optional
        Mean over all rows (default), sum, or one loss per row.
    return_grad : bool, optional
        Also return ``dlogits``, the gradient of the (reduced) loss.
    weight, ignore_index, label_smoothing : optional
        As for :func:`fastsoftmax.softmax_cross_entropy` (`weight` a NumPy
        array-like); checked at the call.  "mean" with index targets then
        divides by the summed weights of the rows not ignored, added up
        over all blocks with dask.

    Returns
    -------
    loss : dask.array.Array
        A 0-d array of the computation dtype for "mean"/"sum" (``float(loss)``
        or ``loss.compute()`` gives the number); for "none", one loss per
        row, chunked as the batch axes of `logits`.
    dlogits : dask.array.Array
        Only with ``return_grad=True``: the shape and chunks of `logits`
        (after rechunking).  Computing `loss` and `dlogits` together
        (``dask.compute(loss, dlogits)``) runs each block's kernel once.

    Raises
    ------
    ValueError, TypeError, numpy.exceptions.AxisError
        As :func:`fastsoftmax.softmax_cross_entropy`, at the call (wrong
        target shape, unknown `reduction`, unsupported dtypes, bad `axis`).
    IndexError
        For a class index outside ``[0, n)``, naming the value and its row
        in the whole array, but only when the result is computed: the
        values are not known before.  When several blocks hold bad indices,
        which one is reported depends on the order the blocks run in.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fastsoftmax.dask as fsd
    >>> logits = da.from_array(np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]]), chunks=(1, 3))
    >>> target = da.from_array(np.array([0, 1]), chunks=1)
    >>> loss, grad = fsd.softmax_cross_entropy(logits, target, return_grad=True)
    >>> loss.shape, grad.chunks
    ((), ((1, 1), (3,)))
    >>> with dask.config.set(scheduler="synchronous"):
    ...     loss_value, grad_value = dask.compute(loss, grad)
    >>> float(np.round(loss_value, 6))
    0.31854
    """
    # The checks of the top-level function, from dtypes and shapes.
    _api._check_reduction(reduction)
    call = _api._prepare(_as_input, "softmax_cross_entropy", "loss", (logits, target),
                         ("logits", "target"), axis)
    x, t = call.arrays
    (axis_,), logits_shape, batch_shape = call.axes, call.shape, call.batch_shape
    is_index, grad_dtype, compute_dtype = call.is_index, call.result_dtype, call.compute_dtype
    checked = _api._loss_options(weight, ignore_index, label_smoothing, x.shape[axis_], is_index)
    options: dict[str, Any] = {} if checked is None else {
        "weight": checked.weight, "ignore_index": checked.ignore_index,
        "label_smoothing": checked.smoothing}

    # The blocks: logits whole along the axis; the target paired with them
    # block for block (index targets get a length-1 axis in its place).
    x_d = _to_dask(x, (axis_,))
    x_d = _whole_along(x_d, (axis_,), "softmax_cross_entropy", "logits",
                       _split_along(x_d, (axis_,)), 3)  # _whole_along <- here <- caller
    t_d = _to_dask(t.reshape(x.shape) if not is_index else t, (axis_,))
    if is_index:
        t_d = cast(Array, _da.expand_dims(t_d, axis_))
        t_chunks = x_d.chunks[:axis_] + ((1,),) + x_d.chunks[axis_ + 1:]
    else:
        t_chunks = x_d.chunks
    if t_d.chunks != t_chunks:
        t_d = _rechunk(t_d, t_chunks)

    per_block = _map_blocks(
        _cross_entropy_block, x_d, t_d, axis=axis_, is_index=is_index,
        return_grad=return_grad, compute_dtype=compute_dtype, options=options,
        # with return_grad each block is a (losses, grad) tuple, never
        # computed as such: the two results below take it apart
        # (blocks of the batch shape: the class axis is dropped)
        drop_axis=axis_, dtype=object if return_grad else compute_dtype,
        meta=_meta(x_d.ndim - 1, np.dtype(object) if return_grad else compute_dtype))
    losses = (_map_blocks(_pick_loss, per_block, dtype=compute_dtype,
                          meta=_meta(x_d.ndim - 1, compute_dtype))
              if return_grad else per_block)

    rows = math.prod(batch_shape)
    # "mean" divides by the rows, or with options for index targets by the
    # summed weights of those not ignored (known once computed)
    scale: Any = 1.0 if reduction != "mean" else (1.0 / rows if rows else math.nan)
    weighted_mean = reduction == "mean" and is_index and checked is not None
    if weighted_mean:
        counts = _map_blocks(_api._class_weights, _to_dask(t, (axis_,)), n=x.shape[axis_],
                             weight=options["weight"], ignore_index=options["ignore_index"],
                             dtype=np.float64, meta=_meta(t.ndim, np.dtype(np.float64)))
        scale = _map_blocks(_reciprocal, _da.sum(counts, dtype=np.float64),
                            dtype=np.float64, meta=_meta(0, np.dtype(np.float64)))
    if reduction == "none":
        loss = _reshape(losses, batch_shape)
    else:
        # float64 sum of the rows' losses, rounded once, as at the top level;
        # the mean of no rows is NaN, their sum 0
        total: Any = _da.sum(losses, dtype=np.float64)
        loss = cast(Array, (total * scale).astype(compute_dtype))
    if not return_grad:
        return loss
    # (with a weighted mean, the blocks' gradients stay in the computation
    # dtype until scaled: rounded once, as at the top level)
    block_dtype = compute_dtype if weighted_mean else grad_dtype
    dlogits = _map_blocks(_pick_grad, per_block, scale=1.0 if weighted_mean else scale,
                          grad_dtype=block_dtype, new_axis=axis_, chunks=x_d.chunks,
                          dtype=block_dtype, meta=_meta(x_d.ndim, block_dtype))
    if weighted_mean:  # (the ignored rows keep their gradient of 0, as at the top level)
        ignored = t_d == options["ignore_index"]
        scaled = (dlogits * scale).astype(compute_dtype)
        dlogits = cast(Array, _da.where(ignored, 0, scaled).astype(grad_dtype))
    return loss, _reshape(dlogits, logits_shape)
