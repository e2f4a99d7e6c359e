"""Plain NumPy reference implementation of fastsoftmax's math functions.

This module is the ground truth the tests compare the compiled kernels
against. It follows the contract of docs/api.rst with the same signatures, and is
written to be obviously right rather than fast: every function is a direct
transcription of its formula, the Jacobian products even build the Jacobian
matrix row by row.

Dtype rules (docs/api.rst, section Dtypes): float32 and float64 are
computed natively, float16 is computed in float32 and returned as float16,
integer and bool inputs become float64; complex, object, string (and any
other) dtypes raise ``TypeError``.

Reference-only extension: ``numpy.longdouble`` inputs are also accepted and
computed natively in long double, so tests can use this module as a
higher-precision oracle for float64 results.

This module imports nothing but NumPy and the standard library.
"""

from __future__ import annotations

import operator
from math import prod
from typing import Any, Literal, SupportsIndex, Union, overload

import numpy as np
from numpy.exceptions import AxisError
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax_jacobian",
    "softmax_jvp",
    "softmax_vjp",
    "log_softmax_vjp",
    "softmax_cross_entropy",
]

_REDUCTIONS = ("mean", "sum", "none")

# Types of the signatures (those of fastsoftmax, less its dtype overloads).
_FloatArray = NDArray[np.floating[Any]]
_Axis = Union[SupportsIndex, tuple[SupportsIndex, ...], None]
_Reduction = Literal["mean", "sum", "none"]
_Loss = Union[np.floating[Any], _FloatArray]  # a scalar, or one loss per row


def _quiet() -> np.errstate:
    """Silence float warnings where they are expected, not errors.

    Overflow in ``x - max`` (e.g. -max - max) correctly rounds to -inf, and
    the NaN rows are produced on purpose.
    """
    return np.errstate(invalid="ignore", divide="ignore", over="ignore")


# --------------------------------------------------------------------------
# helpers: dtypes, axes, out=
# --------------------------------------------------------------------------

def _result_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The result dtype for an input of ``dtype`` (docs/api.rst, section Dtypes)."""
    if dtype.kind == "f":  # float16, float32, float64, longdouble
        return np.dtype(dtype.type)  # native byte order
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(
        f"unsupported dtype {dtype}: expected a real floating, integer or bool dtype"
    )


def _compute_dtype(result_dtype: np.dtype[Any]) -> np.dtype[Any]:
    """float16 is computed in float32; every other dtype natively."""
    return np.dtype(np.float32) if result_dtype == np.float16 else result_dtype


def _as_rows(x: NDArray[Any]) -> NDArray[Any]:
    """A 0-d input is a one-element row: view it as shape (1,)."""
    return x.reshape(1) if x.ndim == 0 else x


def _normalize_axes(axis: _Axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (int, tuple of ints or None) as a tuple of axes in [0, ndim)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if not isinstance(axis, tuple) else axis
    result = []
    for a in axes:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise AxisError(a, ndim)
        a %= ndim
        if a in result:
            raise AxisError(f"repeated axis {a} in {axis!r}")
        result.append(a)
    return tuple(result)


def _single_axis(axis: SupportsIndex, ndim: int) -> int:
    """``axis`` as one int in [0, ndim): the loss's class axis."""
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be a single int here, got {axis!r}") from None
    if not -ndim <= axis < ndim:
        raise AxisError(axis, ndim)
    return axis % ndim


def _joined(a: NDArray[Any], axes: tuple[int, ...]) -> NDArray[Any]:
    """``a`` with ``axes`` moved last (in their order in ``a``) and joined
    into one: shape ``batch + (n,)``."""
    axes = tuple(sorted(axes))
    last = tuple(range(a.ndim - len(axes), a.ndim))
    moved = np.moveaxis(a, axes, last)
    return moved.reshape(moved.shape[:a.ndim - len(axes)] + (prod(a.shape[i] for i in axes),))


def _unjoined(rows: NDArray[Any], shape: tuple[int, ...], axes: tuple[int, ...]) -> NDArray[Any]:
    """The inverse of ``_joined`` for an array of ``shape``."""
    axes = tuple(sorted(axes))
    last = tuple(range(len(shape) - len(axes), len(shape)))
    moved_shape = tuple(d for i, d in enumerate(shape) if i not in axes) + \
        tuple(shape[i] for i in axes)
    return np.moveaxis(rows.reshape(moved_shape), last, axes)


def _finish(result: NDArray[Any], out: object) -> NDArray[Any]:
    """Return ``result``, or check ``out`` fully, then copy it there."""
    if out is None:
        return result
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != result.shape:
        raise ValueError(f"out has shape {out.shape}, the result has shape {result.shape}")
    if out.dtype != result.dtype:
        raise TypeError(f"out has dtype {out.dtype}, the result has dtype {result.dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    out[...] = result
    return out


def _prepare_pair(a: ArrayLike, b: ArrayLike, axis: _Axis, names: tuple[str, str],
                  ) -> tuple[NDArray[Any], NDArray[Any], tuple[int, ...], np.dtype[Any],
                             tuple[int, ...]]:
    """Check and convert the two inputs of a Jacobian product.

    Returns both as arrays (at least 1-d) in the computation dtype, the
    normalized axes, the result dtype and the original shape.
    """
    a, b = np.asarray(a), np.asarray(b)
    shape = a.shape
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, "
            f"got {a.shape} and {b.shape}"
        )
    # Mixed float32/float64 computes in float64: promote the result dtypes.
    rdt = np.result_type(_result_dtype(a.dtype), _result_dtype(b.dtype))
    cdt = _compute_dtype(rdt)
    a, b = _as_rows(a).astype(cdt), _as_rows(b).astype(cdt)
    return a, b, _normalize_axes(axis, a.ndim), rdt, shape


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------

def _shift_by_max(x: NDArray[Any],
                  axes: tuple[int, ...]) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Return ``x - max(x)`` over ``axes`` and the mask of the NaN rows.

    A row is NaN in every entry when it holds a NaN or +inf, or when all its
    entries are -inf (there is no finite maximum to shift by). Those rows are
    shifted by 0 instead, and the caller overwrites them with NaN; -inf
    entries in any other row give ``-inf - max = -inf``, so probability 0.
    """
    nan_row = np.any(np.isnan(x) | (x == np.inf), axis=axes, keepdims=True)
    nan_row |= np.all(x == -np.inf, axis=axes, keepdims=True)
    row_max = np.where(nan_row, 0, np.max(x, axis=axes, keepdims=True))
    return x - row_max, nan_row


def _log_total(shifted: NDArray[Any], exps: NDArray[Any], axes: tuple[int, ...]) -> NDArray[Any]:
    """log(sum(exps)), accurate also when the sum is close to 1.

    The entries at the max (``shifted == 0``) contribute exactly 1 each, so
    ``sum - 1`` is the sum of the others plus (their count - 1), computed
    without cancellation, and ``log(sum) = log1p(sum - 1)``.  A plain
    ``log(sum)`` would have an absolute error of about eps, which is huge
    relative to log-probabilities close to 0.
    """
    at_max = shifted == 0
    others = np.sum(np.where(at_max, 0, exps), axis=axes, keepdims=True)
    log_total: NDArray[Any] = np.log1p(others + (np.sum(at_max, axis=axes, keepdims=True) - 1))
    return log_total


def _mask(where: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """``where`` (None: all True) broadcast to ``shape``, checked."""
    if where is None:
        return np.ones(shape, bool)
    mask = np.asarray(where)
    if mask.dtype != bool:
        raise TypeError(f"where must be boolean, got dtype {mask.dtype}")
    if np.broadcast_shapes(mask.shape, shape) != shape:
        raise ValueError(f"where of shape {mask.shape} does not broadcast to x's shape {shape}")
    return np.broadcast_to(mask, shape)


def _forward(x: ArrayLike, axis: _Axis, where: ArrayLike | None, out: NDArray[Any] | None,
             log: bool) -> _FloatArray:
    x = np.asarray(x)
    shape, rdt = x.shape, _result_dtype(x.dtype)
    mask = _as_rows(_mask(where, shape))
    x = _as_rows(x).astype(_compute_dtype(rdt))
    axes = _normalize_axes(axis, x.ndim)
    if x.size == 0:  # empty batch or empty axis: nothing to compute
        return _finish(np.empty(shape, dtype=rdt), out)
    with _quiet():
        # where=: the excluded entries are -inf (probability 0); a row with
        # none included is empty: 0, or -inf for the log
        x = np.where(mask, x, -np.inf)
        shifted, nan_row = _shift_by_max(x, axes)
        exps = np.exp(shifted)
        total = np.sum(exps, axis=axes, keepdims=True)
        result = shifted - _log_total(shifted, exps, axes) if log else exps / total
        result = np.where(nan_row, np.nan, result)
        empty_row = ~np.any(mask, axis=axes, keepdims=True)
        result = np.where(empty_row, -np.inf if log else 0.0, result)
        result = result.astype(rdt).reshape(shape)
    return _finish(result, out)


def softmax(x: ArrayLike, axis: _Axis = -1, *, where: ArrayLike | None = None,
            out: NDArray[Any] | None = None) -> _FloatArray:
    """Softmax ``exp(x - max) / sum(exp(x - max))`` along ``axis``.

    Parameters
    ----------
    x : array_like
        Input values.
    axis : int, tuple of ints or None, optional
        Axis or axes the softmax is taken over (jointly); None means all.
    where : array_like of bool, optional
        Entries taken part (broadcastable to `x`); the others give 0
        (log: -inf), as does every entry of a row with none.
    out : ndarray, optional
        Array of the result's shape and dtype to write the result into.

    Returns
    -------
    ndarray
        Probabilities, the shape of `x`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import reference as ref
    >>> np.round(ref.softmax([1.0, 2.0, 3.0]), 4)
    array([0.09  , 0.2447, 0.6652])
    >>> ref.softmax([0.0, -np.inf])
    array([1., 0.])
    """
    return _forward(x, axis, where, out, log=False)


def log_softmax(x: ArrayLike, axis: _Axis = -1, *, where: ArrayLike | None = None,
                out: NDArray[Any] | None = None) -> _FloatArray:
    """Log-softmax ``x - max - log(sum(exp(x - max)))`` along ``axis``.

    Parameters
    ----------
    x : array_like
        Input values.
    axis : int, tuple of ints or None, optional
        Axis or axes the softmax is taken over (jointly); None means all.
    where : array_like of bool, optional
        Entries taken part (broadcastable to `x`); the others give 0
        (log: -inf), as does every entry of a row with none.
    out : ndarray, optional
        Array of the result's shape and dtype to write the result into.

    Returns
    -------
    ndarray
        Log-probabilities, the shape of `x`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import reference as ref
    >>> np.round(ref.log_softmax([1.0, 2.0, 3.0]), 4)
    array([-2.4076, -1.4076, -0.4076])
    >>> ref.log_softmax([[1000.0, 1000.0], [np.nan, 0.0]])
    array([[-0.69314718, -0.69314718],
           [        nan,         nan]])
    """
    return _forward(x, axis, where, out, log=True)


def logsumexp(x: ArrayLike, axis: _Axis = -1, *, b: ArrayLike | None = None,
              keepdims: bool = False, return_sign: bool = False,
              where: ArrayLike | None = None, out: NDArray[Any] | None = None) -> Any:
    """``log(sum(b * exp(x)))`` along ``axis``, as ``scipy.special.logsumexp``.

    Parameters
    ----------
    x : array_like
        Input values.
    axis : int, tuple of ints or None, optional
        Axis or axes to reduce (default the last); None for all.
    b : array_like, optional
        Scale factors, broadcastable to `x`; entries where `b` is 0 are
        left out.
    keepdims : bool, optional
        Keep the reduced axes, with length 1.
    return_sign : bool, optional
        Also return the sign of the sum; without it a negative sum is NaN.
    where : array_like of bool, optional
        Entries taken part (broadcastable to `x`); the others contribute
        nothing, as a factor of 0 in `b` does.
    out : ndarray, optional
        Array of the result's shape and dtype to write the result into.

    Returns
    -------
    ndarray or (ndarray, ndarray)
        The result (and its sign).

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import reference as ref
    >>> float(ref.logsumexp(np.array([0.0, 0.0])))
    0.6931471805599453
    """
    x = np.asarray(x)
    shape, rdt = x.shape, _result_dtype(x.dtype)
    w = np.ones(shape, rdt) if b is None else np.asarray(b)
    rdt = np.result_type(rdt, _result_dtype(w.dtype))
    if np.broadcast_shapes(w.shape, shape) != shape:
        raise ValueError(f"b of shape {w.shape} does not broadcast to x's shape {shape}")
    cdt = _compute_dtype(rdt)
    mask = _as_rows(_mask(where, shape))
    x = _as_rows(x).astype(cdt)
    w = _as_rows(np.broadcast_to(w, shape)).astype(cdt)
    axes = _normalize_axes(axis, x.ndim)
    with _quiet():
        w = np.where(mask, w, 0)  # where=: excluded entries weigh nothing
        used = w != 0
        nan_row = np.any(used & np.isnan(x), axis=axes, keepdims=True)
        xu = np.where(used, x, -np.inf)
        m = np.max(xu, axis=axes, keepdims=True, initial=-np.inf)
        shift = np.where(np.isfinite(m), m, 0)
        terms = np.where(used, w * np.exp(xu - shift), 0)
        total = np.sum(terms, axis=axes, keepdims=True)
        # a row whose max is +inf, in IEEE arithmetic: w * inf at the +inf
        # entries, inf * 0 = NaN for an infinite weight elsewhere
        at_inf = np.sum(np.where(used, np.where(x == np.inf, w * np.inf, w - w), 0),
                        axis=axes, keepdims=True)
        total = np.where(m == np.inf, at_inf, total)
        total = np.where(nan_row, np.nan, total)
        # near S = 1, log1p of S - 1 summed without cancellation (as _log_total)
        at_max = used & (xu == m)
        near_one = (total > 0.5) & (total < 2) & np.isfinite(m)
        minus_one = np.sum(np.where(at_max, 0, terms), axis=axes, keepdims=True) + (
            np.sum(np.where(at_max, w, 0), axis=axes, keepdims=True) - 1)
        log_abs = np.where(near_one, np.log1p(minus_one), np.log(np.abs(total)))
        result = shift + log_abs
        sign = np.sign(total)
        if not return_sign:
            result = np.where(total < 0, np.nan, result)
        if not keepdims:
            result, sign = np.squeeze(result, axes), np.squeeze(sign, axes)
        result_shape = tuple(1 if i in axes else d for i, d in enumerate(shape)) if keepdims \
            else tuple(d for i, d in enumerate(shape) if i not in axes)
        result = _finish(result.astype(rdt).reshape(result_shape), out)
        sign = sign.astype(rdt).reshape(result_shape)
    if out is None and result.ndim == 0:  # NumPy scalars, as fastsoftmax's and SciPy's
        result, sign = result[()], sign[()]
    return (result, sign) if return_sign else result


# --------------------------------------------------------------------------
# derivatives, from the softmax output s
# --------------------------------------------------------------------------

def _row_jacobian(s_row: NDArray[Any]) -> NDArray[Any]:
    """The Jacobian of softmax for one row: ``diag(s) - s sᵀ``."""
    return np.diag(s_row) - np.outer(s_row, s_row)


def softmax_jacobian(s: ArrayLike, axis: _Axis = -1, *,
                     out: NDArray[Any] | None = None) -> _FloatArray:
    """Full Jacobian of softmax, ``J[..., i, j] = s_i (δ_ij - s_j)``.

    Parameters
    ----------
    s : array_like
        Softmax output along `axis`.
    axis : int, tuple of ints or None, optional
        The axis or axes `s` was normalized over; None for all.
    out : ndarray, optional
        Array of the result's shape and dtype to write the result into.

    Returns
    -------
    ndarray
        Shape ``batch + (n, n)``: `s` with the axes moved last (in their
        order in `s`) and joined into n elements, plus one more ``n``.

    Examples
    --------
    >>> from fastsoftmax import reference as ref
    >>> ref.softmax_jacobian([0.5, 0.5])
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    s = np.asarray(s)
    rdt = _result_dtype(s.dtype)
    s = _as_rows(s).astype(_compute_dtype(rdt))
    rows = _joined(s, _normalize_axes(axis, s.ndim))
    n = rows.shape[-1]
    jac = np.empty(rows.shape + (n,), dtype=rows.dtype)
    for idx in np.ndindex(rows.shape[:-1]):
        jac[idx] = _row_jacobian(rows[idx])
    with _quiet():
        return _finish(jac.astype(rdt), out)


def _jacobian_product(s: ArrayLike, v: ArrayLike, axis: _Axis, out: NDArray[Any] | None,
                      names: tuple[str, str], vector_on_left: bool) -> _FloatArray:
    """``J @ v`` (or ``v @ J``) per row, with J built explicitly."""
    s, v, axes, rdt, shape = _prepare_pair(s, v, axis, names)
    s_rows, v_rows = _joined(s, axes), _joined(v, axes)
    result = np.empty_like(s_rows)
    for idx in np.ndindex(s_rows.shape[:-1]):
        jac = _row_jacobian(s_rows[idx])
        result[idx] = v_rows[idx] @ jac if vector_on_left else jac @ v_rows[idx]
    result = _unjoined(result, s.shape, axes).reshape(shape)
    with _quiet():
        return _finish(result.astype(rdt), out)


def softmax_jvp(s: ArrayLike, v: ArrayLike, axis: _Axis = -1, *,
                out: NDArray[Any] | None = None) -> _FloatArray:
    """Jacobian-vector product ``J v`` of softmax, per row along `axis`.

    Equal to ``s * (v - sum(s * v, axis, keepdims=True))``; here it is
    computed the long way, by forming each row's Jacobian.

    Parameters
    ----------
    s : array_like
        Softmax output along `axis`.
    v : array_like
        Tangent vectors, the shape of `s`.
    axis : int, tuple of ints or None, optional
        The axis or axes `s` was normalized over; None for all.
    out : ndarray, optional
        Array of the result's shape and dtype to write the result into.

    Returns
    -------
    ndarray
        The shape of `s`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import reference as ref
    >>> s, v = ref.softmax([1.0, 2.0, 3.0]), np.array([1.0, 0.0, -1.0])
    >>> np.allclose(ref.softmax_jvp(s, v), s * (v - (s * v).sum()))
    True
    """
    return _jacobian_product(s, v, axis, out, ("s", "v"), vector_on_left=False)


def softmax_vjp(s: ArrayLike, g: ArrayLike, axis: _Axis = -1, *,
                out: NDArray[Any] | None = None) -> _FloatArray:
    """Vector-Jacobian product ``g J`` of softmax, per row along `axis`.

    J is symmetric, so this equals `softmax_jvp`; it is computed separately
    (``g @ J`` per row) so that the two check each other.

    Parameters
    ----------
    s : array_like
        Softmax output along `axis`.
    g : array_like
        Upstream gradient, the shape of `s`.
    axis : int, tuple of ints or None, optional
        The axis or axes `s` was normalized over; None for all.
    out : ndarray, optional
        Array of the result's shape and dtype to write the result into.

    Returns
    -------
    ndarray
        Gradient with respect to the softmax input, the shape of `s`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import reference as ref
    >>> s, g = ref.softmax([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 1.0])
    >>> np.round(ref.softmax_vjp(s, g), 4)
    array([-0.0599, -0.1628,  0.2227])
    """
    return _jacobian_product(s, g, axis, out, ("s", "g"), vector_on_left=True)


def log_softmax_vjp(logp: ArrayLike, g: ArrayLike, axis: _Axis = -1, *,
                    out: NDArray[Any] | None = None) -> _FloatArray:
    """Vector-Jacobian product of log-softmax, from its output `logp`.

    Parameters
    ----------
    logp : array_like
        Log-softmax output along `axis`.
    g : array_like
        Upstream gradient, the shape of `logp`.
    axis : int, tuple of ints or None, optional
        The axis or axes `logp` was normalized over; None for all.
    out : ndarray, optional
        Array of the result's shape and dtype to write the result into.

    Returns
    -------
    ndarray
        ``g - exp(logp) * sum(g, axis, keepdims=True)``, the shape of `logp`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import reference as ref
    >>> logp = ref.log_softmax([1.0, 2.0, 3.0])
    >>> np.round(ref.log_softmax_vjp(logp, [0.0, 0.0, 1.0]), 4)
    array([-0.09  , -0.2447,  0.3348])
    """
    # y_i = x_i - log(sum_k exp(x_k)), so dy_i/dx_j = δ_ij - s_j: the
    # Jacobian (row i = output, column j = input) is J = I - 1 sᵀ, which is
    # not symmetric. The VJP is gᵀJ: (gᵀJ)_j = g_j - s_j * sum_i g_i.
    logp, g, axes, rdt, shape = _prepare_pair(logp, g, axis, ("logp", "g"))
    with _quiet():
        result = g - np.exp(logp) * np.sum(g, axis=axes, keepdims=True)
        return _finish(result.reshape(shape).astype(rdt), out)


# --------------------------------------------------------------------------
# fused loss
# --------------------------------------------------------------------------

@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean", return_grad: Literal[False] = False,
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0) -> _Loss: ...
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean", return_grad: Literal[True],
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0) -> tuple[_Loss, _FloatArray]: ...
@overload
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean", return_grad: bool = False,
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0) -> _Loss | tuple[_Loss, _FloatArray]: ...
def softmax_cross_entropy(logits: ArrayLike, target: ArrayLike, axis: SupportsIndex = -1, *,
                          reduction: _Reduction = "mean", return_grad: bool = False,
                          weight: ArrayLike | None = None, ignore_index: int | None = None,
                          label_smoothing: float = 0.0) -> _Loss | tuple[_Loss, _FloatArray]:
    """Cross-entropy ``-sum(target * log_softmax(logits))`` per row.

    Parameters
    ----------
    logits : array_like
        Unnormalized scores; classes along `axis`.
    target : array_like
        Integer dtype: class indices, the shape of `logits` without `axis`.
        Floating dtype: probabilities (rows need not sum to 1), the shape
        of `logits`.
    axis : int, optional
        The class axis.
    reduction : {"mean", "sum", "none"}, optional
        Mean or sum over rows (a NumPy scalar; the mean of no rows is NaN),
        or one loss per row (an array of the batch shape).
    return_grad : bool, optional
        Also return the gradient with respect to `logits`.
    weight : array_like, optional
        Class weights (n of them, >= 0), as PyTorch's.
    ignore_index : int, optional
        Index targets only: rows with this index count for nothing.
    label_smoothing : float, optional
        In [0, 1]: the target becomes ``(1 - e) * target + e / n``.

    Returns
    -------
    loss : scalar or ndarray
        In the computation dtype (float32 for float16/float32 inputs).
    dlogits : ndarray
        Only with ``return_grad=True``: ``softmax(logits) * sum(a) - a``
        per row for the target ``a`` as the options make it, divided for
        "mean" by the row count (by the summed class weights of the index
        targets not ignored); the shape of `logits` and its forward result
        dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import reference as ref
    >>> logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    >>> loss, grad = ref.softmax_cross_entropy(logits, [0, 2], return_grad=True)
    >>> round(float(loss), 4)
    0.6342
    >>> np.round(grad, 4)
    array([[-0.0781,  0.0571,  0.021 ],
           [ 0.1667,  0.1667, -0.3333]])
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    logits, target = np.asarray(logits), np.asarray(target)
    shape, rdt = logits.shape, _result_dtype(logits.dtype)
    x = _as_rows(logits)
    axis = _single_axis(axis, x.ndim)
    x = np.moveaxis(x, axis, -1)  # one row per class vector
    batch, n = x.shape[:-1], x.shape[-1]

    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    if w.shape != (n,) or not (w >= 0).all():
        raise ValueError(f"weight must be {n} weights >= 0, got {w}")
    e = label_smoothing
    if target.dtype.kind in "iu":  # class indices
        if target.shape != batch:
            raise ValueError(
                f"class-index target has shape {target.shape}, logits have shape "
                f"{shape}: expected {batch} (logits without axis {axis})"
            )
        kept = np.ones(batch, bool) if ignore_index is None else target != ignore_index
        bad = ((target < 0) | (target >= n)) & kept
        if np.any(bad):
            row = tuple(int(i) for i in np.argwhere(bad)[0])
            raise IndexError(
                f"class index {target[row]} out of range [0, {n}) at row "
                f"{row[0] if len(row) == 1 else row}"
            )
        cdt = _compute_dtype(rdt)
        # PyTorch's target: (1 - e) w[c] onehot(c) + (e / n) w per kept row
        t = np.zeros(batch + (n,))
        for row in np.ndindex(batch):
            if kept[row]:
                t[row + (target[row],)] = (1 - e) * w[target[row]]
                t[row] += e / n * w
        denominator = float(sum(w[target[row]] for row in np.ndindex(batch) if kept[row]))
    elif target.dtype.kind == "f":  # probabilities
        if target.shape != shape:
            raise ValueError(
                f"probability target has shape {target.shape}, logits have shape "
                f"{shape}: expected the same shape"
            )
        if ignore_index is not None:
            raise ValueError("ignore_index applies to class-index targets only")
        rdt = np.result_type(rdt, _result_dtype(target.dtype))
        cdt = _compute_dtype(rdt)
        t = np.moveaxis(_as_rows(target), axis, -1)
        if e or weight is not None:  # (1 - e) t + e / n, class-weighted
            t = ((1 - e) * t.astype(np.float64) + (e / n if n else 0)) * w
        kept = np.ones(batch, bool)
        denominator = float(np.prod(batch))
    else:
        raise TypeError(
            f"target has dtype {target.dtype}: expected an integer dtype (class "
            "indices) or a floating dtype (probabilities)"
        )

    x = x.astype(cdt)
    t = t.astype(cdt)  # (in the computation dtype, as the kernels take it)
    logp = log_softmax(x, axis=-1)
    with _quiet():
        # 0 * log 0 is 0 in the limit: a zero weight on a -inf logit adds 0.
        terms = np.where((t == 0) & (logp == -np.inf), 0, t * logp)
        loss = np.asarray(-np.sum(terms, axis=-1), dtype=cdt)
    # "mean": over the rows (the summed weights of the kept index targets);
    # NaN for none
    scale = np.nan if denominator == 0 else 1 / denominator
    if reduction == "mean":
        loss = cdt.type(np.sum(loss) * scale)
    elif reduction == "sum":
        loss = cdt.type(np.sum(loss))
    if not return_grad:
        return loss

    with _quiet():
        grad = softmax(x, axis=-1) * np.sum(t, axis=-1, keepdims=True) - t
        if reduction == "mean":
            grad = np.where(kept[..., None], grad * scale, 0)  # ignored rows: 0
        grad = np.moveaxis(grad, -1, axis).reshape(shape).astype(rdt)
    return loss, grad
