"""The demo's checks: every function against fastsoftmax.reference, in ulp,
and derivatives against finite differences; and `ulp_errors`, the one
measure of error in ulp (also of ``benchmarks/accuracy.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax.testing import DEFAULT_RTOL, check_grad, check_vjp

Shape = tuple[int, ...]


# --------------------------------------------------------------------------
# Errors in ulp
# --------------------------------------------------------------------------

def ulp_errors(actual: ArrayLike, exact: ArrayLike, dtype: np.dtype[Any],
               scale: ArrayLike | None = None, *, binade: bool = True,
               floor: float | None = None) -> NDArray[np.float64]:
    """``|actual - exact| / ulp(scale)``, elementwise, flattened.

    Parameters
    ----------
    actual : array_like
        The results, in `dtype`.
    exact : array_like
        The exact values, in a higher precision than `dtype`; the error is
        computed in its dtype.
    dtype : numpy.dtype
        The dtype whose ulp is the unit (float32 or float64).
    scale : array_like, optional
        Whose ulp: `exact` by default.  A difference of nearly equal terms
        can only be as accurate as the terms are large, so for derivatives
        the caller may pass the size of the terms.
    binade : bool
        True: ``ulp(e) = 2**(floor(log2 |e|) - p + 1)``, the spacing of the
        floats at `e` (p the precision).  False: ``eps * |e|``, which is up
        to twice that at the top of a binade.
    floor : float, optional
        ``|e|`` is taken at least this large (default: the smallest normal
        number, so that below it the unit is the spacing of the subnormal
        numbers, ``eps * tiny``).  A zero unit allows no error.

    Returns
    -------
    ndarray of float64
        One error per element.  A NaN or infinity counts 0 where it matches
        the exact value, else inf.
    """
    info = np.finfo(dtype)
    want = np.asarray(exact).ravel()
    got = np.asarray(actual).astype(want.dtype).ravel()
    size = np.abs(want if scale is None else np.asarray(scale, dtype=want.dtype).ravel())
    with np.errstate(all="ignore"):
        size = np.maximum(size, info.tiny if floor is None else floor)
        if binade:  # |e| = m 2**k with m in [0.5, 1): the floats' spacing is eps 2**(k-1)
            size = np.where(size > 0, np.ldexp(np.ones_like(size), np.frexp(size)[1] - 1), 0)
        unit = info.eps * size
        diff = np.abs(got - want)
        err = np.where((unit == 0) & (diff == 0), 0.0, diff / unit)
    special = ~np.isfinite(want) | ~np.isfinite(got)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    err[special] = np.where(same[special], 0.0, np.inf)
    return np.asarray(err, dtype=np.float64)


# --------------------------------------------------------------------------
# Correctness: fastsoftmax against fastsoftmax.reference
# --------------------------------------------------------------------------

# (shape, axis) pairs every function is checked on: the last axis, and a
# middle axis (the data is not contiguous along it).
CASES = [((32, 300), -1), ((6, 33, 5), 1)]

MATH_FUNCTIONS = ("softmax", "log_softmax", "softmax_jacobian", "softmax_jvp",
                  "softmax_vjp", "log_softmax_vjp", "softmax_cross_entropy")

# Largest accepted error, in units of the dtype's machine epsilon times the
# exact value (ulp_errors with binade=False).  docs/api.rst, section Accuracy,
# promises "a few ulp" for the forward functions.
ULP_LIMIT = 8


def exact_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype the reference computes the 'exact' value in: float64 for
    float32 data, long double for float64 data (where the platform has one)."""
    return np.dtype(np.float64) if dtype == np.float32 else np.dtype(np.longdouble)


def _max_error(got: ArrayLike, exact: ArrayLike, dtype: np.dtype[Any],
               scale: ArrayLike | None = None) -> float:
    """max |got - exact| / (eps(dtype) * scale), in long double.

    The scale is |exact| by default: the relative error docs/api.rst,
    section Accuracy, bounds for the forward functions.
    """
    exact = np.asarray(exact, dtype=np.longdouble)
    return float(np.max(ulp_errors(got, exact, dtype, scale, binade=False)))


def _check_one(name: str, shape: Shape, axis: int, dtype: np.dtype[Any],
               rng: np.random.Generator) -> float:
    """Error in ulp of fs.<name> against reference.<name> on random data."""
    hi = exact_dtype(dtype)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    ours, exact = getattr(fs, name), getattr(ref, name)

    def total(a: NDArray[Any]) -> Any:
        return np.sum(a, axis=axis, keepdims=True)

    if name in ("softmax", "log_softmax"):
        return _max_error(ours(x, axis), exact(x.astype(hi), axis), dtype)
    if name == "softmax_jacobian":  # s_i (δ_ij - s_j): no cancellation to speak of
        s = fs.softmax(x, axis)
        return _max_error(ours(s, axis), exact(s.astype(hi), axis), dtype)
    # The derivatives are differences of terms (e.g. g_i - <s, g>): their
    # error is taken relative to the size of the terms.
    if name in ("softmax_jvp", "softmax_vjp"):  # s_i (g_i - <s, g>)
        s = fs.softmax(x, axis)
        s_hi, g_hi = s.astype(hi), g.astype(hi)
        terms = s_hi * (np.abs(g_hi) + total(np.abs(s_hi * g_hi)))
        return _max_error(ours(s, g, axis), exact(s_hi, g_hi, axis), dtype, terms)
    if name == "log_softmax_vjp":  # g_i - exp(logp_i) sum(g)
        logp = fs.log_softmax(x, axis)
        logp_hi, g_hi = logp.astype(hi), g.astype(hi)
        terms = np.abs(g_hi) + np.exp(logp_hi) * total(np.abs(g_hi))
        return _max_error(ours(logp, g, axis), exact(logp_hi, g_hi, axis), dtype, terms)
    # softmax_cross_entropy: class indices on the last axis, probabilities
    # elsewhere.  The error is the worse of the per-row losses (relative) and
    # the gradient s_i sum(t) - t_i (relative to its terms).
    if axis == -1:
        target = rng.integers(0, shape[axis], shape[:-1])
        target_hi = target
        onehot = np.zeros(shape, hi)
        np.put_along_axis(onehot, target[..., None], 1, axis=-1)
    else:
        target = fs.softmax(g, axis)
        target_hi = onehot = target.astype(hi)
    loss, grad = ours(x, target, axis, reduction="none", return_grad=True)
    loss_x, grad_x = exact(x.astype(hi), target_hi, axis, reduction="none", return_grad=True)
    terms = ref.softmax(x.astype(hi), axis) * total(onehot) + onehot
    return max(_max_error(loss, loss_x, dtype), _max_error(grad, grad_x, dtype, terms))


def correctness_rows(seed: int = 0) -> list[list[str]]:
    """One row per (function, dtype, shape, axis): error in ulp, PASS/FAIL."""
    rng = np.random.default_rng(seed)
    rows = []
    for name in MATH_FUNCTIONS:
        for dtype in (np.float32, np.float64):
            for shape, axis in CASES:
                err = _check_one(name, shape, axis, np.dtype(dtype), rng)
                ok = err <= ULP_LIMIT
                rows.append([name, np.dtype(dtype).name, str(shape), str(axis),
                             f"{err:.2f}", "PASS" if ok else "FAIL"])
    return rows


# --------------------------------------------------------------------------
# Gradient checks against central finite differences
# --------------------------------------------------------------------------

def _fd_error(check: Callable[..., float], *args: Any) -> float:
    """The error check_vjp/check_grad measure, without raising: rtol=inf
    accepts any finite error; a NaN still raises, and is reported as NaN."""
    try:
        return check(*args, rtol=np.inf)
    except AssertionError:
        return float("nan")


def gradcheck_rows(seed: int = 0) -> list[list[str]]:
    """Max relative error of candidate derivatives against finite differences.

    The first row is the classic mistake (the Jacobian's diagonal only); it
    is expected to fail.
    """
    rng = np.random.default_rng(seed)
    x = 2 * rng.standard_normal((4, 6))
    g = rng.standard_normal((4, 6))
    labels = rng.integers(0, 6, 4)
    probs = fs.softmax(rng.standard_normal((4, 6)))

    def naive_delta(x: NDArray[Any], g: NDArray[Any]) -> Any:
        # d softmax as if each s_i depended on x_i only
        s = fs.softmax(x)
        return g * s * (1 - s)

    checks: list[tuple[Any, ...]] = [
        ("naive delta g*s*(1-s)", False,
         check_vjp, fs.softmax, naive_delta, x, g),
        ("fs.softmax_vjp", True,
         check_vjp, fs.softmax, lambda x, g: fs.softmax_vjp(fs.softmax(x), g), x, g),
        ("fs.log_softmax_vjp", True,
         check_vjp, fs.log_softmax,
         lambda x, g: fs.log_softmax_vjp(fs.log_softmax(x), g), x, g),
        ("softmax_cross_entropy grad (indices, mean)", True,
         check_grad, lambda x: fs.softmax_cross_entropy(x, labels),
         lambda x: fs.softmax_cross_entropy(x, labels, return_grad=True)[1], x),
        ("softmax_cross_entropy grad (probs, sum)", True,
         check_grad, lambda x: fs.softmax_cross_entropy(x, probs, reduction="sum"),
         lambda x: fs.softmax_cross_entropy(x, probs, reduction="sum",
                                            return_grad=True)[1], x),
    ]
    rows = []
    for label, should_pass, check, *args in checks:
        err = _fd_error(check, *args)
        passed = err <= DEFAULT_RTOL
        rows.append([label, f"{err:.1e}", "PASS" if passed else "FAIL",
                     "as expected" if passed == should_pass else "UNEXPECTED"])
    return rows
