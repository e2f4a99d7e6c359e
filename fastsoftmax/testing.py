"""Finite-difference gradient checks for hand-written derivatives.

If your backward pass for softmax "almost" works (say it is 1% off), these
functions tell you so, and where: they compare your derivative with central
differences computed in float64.

Functions
---------
numerical_jacobian
    The full Jacobian ``d f(x)_i / d x_j`` of any array function.
check_vjp
    Check a vector-Jacobian product ``g J`` (what backprop computes).
check_grad
    Check the gradient of a scalar function.

This module imports nothing but NumPy and the standard library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["numerical_jacobian", "check_vjp", "check_grad"]

# A correct float64 derivative typically agrees with central differences to
# about 1e-9 or better (the difference has ~1e-10 of truncation and rounding
# error); a 1% mistake shows up as an error near 1e-2. 1e-6 sits between the
# two with three orders of magnitude of margin on each side.
DEFAULT_RTOL = 1e-6


def numerical_jacobian(f: Callable[[NDArray[np.float64]], ArrayLike], x: ArrayLike,
                       eps: float | None = None) -> NDArray[np.float64]:
    """Jacobian of `f` at `x` by central differences, in float64.

    Parameters
    ----------
    f : callable
        Maps an array the shape of `x` to an array (or scalar).
    x : array_like
        The point; any shape.
    eps : float, optional
        Absolute step. By default each element ``x_j`` gets the step
        ``cbrt(machine eps) * max(1, |x_j|)``.

    Returns
    -------
    ndarray
        Shape ``f(x).shape + x.shape``: ``jac[i..., j...] = d f_i / d x_j``.
        Sum it against any axis you like, e.g. to get a product along one
        axis of a batched function.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.testing import numerical_jacobian
    >>> jac = numerical_jacobian(lambda x: x ** 2, np.array([1.0, 3.0]))
    >>> np.round(jac, 6)
    array([[2., 0.],
           [0., 6.]])
    """
    x = np.array(x, dtype=np.float64)  # a copy: we perturb it below
    f0 = np.asarray(f(x.copy()), dtype=np.float64)
    jac = np.empty(f0.shape + x.shape)
    for j in np.ndindex(x.shape):
        # Central differences err by ~h**2 (truncation) plus ~eps/h (rounding
        # in f); h = cbrt(eps) balances the two, about 6e-6 in float64, and
        # scaling by |x_j| keeps the step relative for large x_j.
        h = eps if eps is not None else np.cbrt(np.finfo(np.float64).eps) * max(1.0, abs(x[j]))
        x_plus, x_minus = x.copy(), x.copy()
        x_plus[j] += h
        x_minus[j] -= h
        # Divide by the step actually taken: x + h is rounded.
        df = np.asarray(f(x_plus), dtype=np.float64) - np.asarray(f(x_minus), dtype=np.float64)
        jac[(...,) + j] = df / (x_plus[j] - x_minus[j])
    return jac


def _compare(claimed: NDArray[np.float64], numerical: NDArray[np.float64], rtol: float | None,
             what: str) -> float:
    """Max error of `claimed` against `numerical`; raise if above `rtol`.

    The error is ``max|claimed - numerical| / max(max|numerical|, 1)``:
    relative to the largest numerical entry, but absolute once that is below
    1. Finite differences carry an absolute noise of ~1e-10, so an exactly
    zero (or tiny) derivative could not be checked relatively. If your
    derivatives are all much smaller than 1, scale `f` up before checking.
    """
    rtol = DEFAULT_RTOL if rtol is None else rtol
    if claimed.shape != numerical.shape:
        raise AssertionError(
            f"{what} returned shape {claimed.shape}, expected {numerical.shape}"
        )
    if claimed.size == 0:
        return 0.0
    diff = np.abs(claimed - numerical)
    diff[np.isnan(diff)] = np.inf  # a NaN anywhere fails the check
    scale = max(float(np.max(np.abs(numerical))), 1.0)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    error = float(diff[worst]) / scale
    if not error <= rtol:
        raise AssertionError(
            f"{what} does not match finite differences: error {error:.3g} > "
            f"rtol {rtol:g}; worst at index {tuple(int(i) for i in worst)}: "
            f"claimed {float(claimed[worst])!r}, numerical {float(numerical[worst])!r}"
        )
    return error


# The end of check_vjp's and check_grad's parameters, their result and
# their failure, written once; "{shared sections}" marks the place.
_SHARED_SECTIONS = """\
    rtol : float, optional
        Largest accepted error (default 1e-6; see `DEFAULT_RTOL`).
    eps : float, optional
        Finite-difference step (see `numerical_jacobian`).

    Returns
    -------
    float
        ``max|claimed - numerical| / max(max|numerical|, 1)``.

    Raises
    ------
    AssertionError
        If the error exceeds `rtol`, naming the worst index, the claimed and
        the numerical value.
"""

_Check = TypeVar("_Check", bound=Callable[..., float])


def _with_shared_sections(check: _Check) -> _Check:
    """Complete the docstring of `check` (there is none under ``python -OO``)."""
    if check.__doc__:
        check.__doc__ = check.__doc__.replace("    {shared sections}\n", _SHARED_SECTIONS)
    return check


@_with_shared_sections
def check_vjp(f: Callable[[NDArray[np.float64]], ArrayLike],
              vjp: Callable[[NDArray[np.float64], NDArray[np.float64]], ArrayLike],
              x: ArrayLike, g: ArrayLike, *, rtol: float | None = None,
              eps: float | None = None) -> float:
    """Check a vector-Jacobian product against finite differences.

    Parameters
    ----------
    f : callable
        The function, ``f(x) -> array``.
    vjp : callable
        The claimed VJP, ``vjp(x, g) -> g J`` at `x`, the shape of `x`.
    x : array_like
        The point.
    g : array_like
        The upstream gradient, the shape of ``f(x)``.
    {shared sections}

    Examples
    --------
    The softmax VJP is ``s * (g - <s, g>)``; the element-wise formula
    ``g * s * (1 - s)`` (the diagonal of the Jacobian only) is a classic
    mistake, and it is caught:

    >>> import numpy as np
    >>> from fastsoftmax.testing import check_vjp
    >>> def softmax(x):
    ...     e = np.exp(x - x.max())
    ...     return e / e.sum()
    >>> def good_vjp(x, g):
    ...     s = softmax(x)
    ...     return s * (g - (s * g).sum())
    >>> def elementwise_vjp(x, g):
    ...     s = softmax(x)
    ...     return g * s * (1 - s)
    >>> x, g = np.array([0.5, -1.0, 2.0, 0.1]), np.array([1.0, 0.3, -0.7, 2.0])
    >>> check_vjp(softmax, good_vjp, x, g) < 1e-8
    True
    >>> check_vjp(softmax, elementwise_vjp, x, g)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    AssertionError: vjp does not match finite differences: error ... > rtol 1e-06; worst at index ...

    A derivative that is off by 1% fails too:

    >>> check_vjp(softmax, lambda x, g: 1.01 * good_vjp(x, g), x, g)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    AssertionError: vjp does not match finite differences: error 0.00... > rtol 1e-06; ...
    """
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    jac = numerical_jacobian(f, x, eps)
    out_shape = jac.shape[: jac.ndim - x.ndim]
    if g.shape != out_shape:
        raise ValueError(f"g has shape {g.shape}, f(x) has shape {out_shape}")
    numerical = np.tensordot(g, jac, axes=g.ndim)
    claimed = np.asarray(vjp(x.copy(), g.copy()), dtype=np.float64)
    return _compare(claimed, numerical, rtol, "vjp")


@_with_shared_sections
def check_grad(f: Callable[[NDArray[np.float64]], ArrayLike],
               grad: Callable[[NDArray[np.float64]], ArrayLike], x: ArrayLike, *,
               rtol: float | None = None, eps: float | None = None) -> float:
    """Check the gradient of a scalar function against finite differences.

    Parameters
    ----------
    f : callable
        The function, ``f(x) -> scalar``.
    grad : callable
        The claimed gradient, ``grad(x)``, the shape of `x`.
    x : array_like
        The point.
    {shared sections}

    Examples
    --------
    The gradient of ``logsumexp`` is softmax:

    >>> import numpy as np
    >>> from fastsoftmax.testing import check_grad
    >>> def logsumexp(x):
    ...     return x.max() + np.log(np.exp(x - x.max()).sum())
    >>> def softmax(x):
    ...     e = np.exp(x - x.max())
    ...     return e / e.sum()
    >>> check_grad(logsumexp, softmax, np.array([[1.0, 2.0], [0.0, -3.0]])) < 1e-8
    True
    """
    x = np.asarray(x, dtype=np.float64)
    numerical = numerical_jacobian(f, x, eps)
    if numerical.shape != x.shape:
        raise ValueError(
            f"f must return a scalar, got shape {numerical.shape[: numerical.ndim - x.ndim]}"
        )
    claimed = np.asarray(grad(x.copy()), dtype=np.float64)
    return _compare(claimed, numerical, rtol, "grad")
