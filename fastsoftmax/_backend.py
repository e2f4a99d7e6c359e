"""The compiled kernel module in use, the thread setting, and the build facts.

The kernels are compiled once per instruction set (see setup.py).  At import
the best one the CPU supports is chosen; FASTSOFTMAX_SIMD=<path> forces one
(the tests use it to run every path the CPU supports).
"""

from __future__ import annotations

import contextlib
import operator
import os
import sys
from collections.abc import Iterator
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol, SupportsIndex, TextIO, cast

import numpy as np
from numpy.typing import NDArray

from . import _build_config
from ._simd_paths import PATHS

if TYPE_CHECKING:
    from typing_extensions import TypeGuard  # in typing from Python 3.10 on

# Best first (the order of the table).  "native" exists only in an opt-in
# FASTSOFTMAX_NATIVE=1 build, made for the machine that built it.
PATH_PREFERENCE = tuple(PATHS)
SIMD_ENV = "FASTSOFTMAX_SIMD"

# (rows, n) arrays as the kernels take them: float32 or float64, contiguous
# rows, any row stride.  The kernels check the layout, not the annotations.
_Rows = NDArray[np.floating[Any]]


class KernelModule(Protocol):
    """What every compiled kernel module (``_kernels_<path>``) provides.

    The modules are compiled from one source, _kernels.pxi, and loaded by
    name, so the type checker cannot see them: this spells out their
    interface once (tests/test_typing.py checks it against the modules).
    """

    __file__: str
    PARALLEL_MIN_ELEMENTS: int
    SPLIT_ROW_MIN: int

    def openmp_enabled(self) -> bool: ...
    def omp_max_threads(self) -> int: ...
    def omp_set_num_threads(self, n: int) -> None: ...
    def simd_width_bytes(self) -> int: ...
    def has_fma(self) -> bool: ...
    def compiler(self) -> str: ...
    def cpu_supports(self, feature: str) -> bool: ...
    def parallel_team_size(self, num_threads: int) -> int: ...
    def set_thresholds(self, parallel_min: int = ..., split_min: int = ...) -> None: ...

    # The common call: x (and b) C-contiguous, aligned, non-empty float32 or
    # float64 ndarrays of one dtype and shape, reduced along their last axis
    # (axis a Python int), and out None or such an array, writeable, each
    # input itself or sharing no memory with it.  softmax_plain and
    # product_plain compute it (into out or a new array) or return None.
    def is_plain(self, x: object, axis: object, out: object = None,
                 b: object = None) -> TypeGuard[_Rows]: ...
    def softmax_plain(self, x: object, axis: object, out: object, take_log: bool,
                      num_threads: int) -> _Rows | None: ...
    def product_plain(self, a: object, b: object, axis: object, out: object,
                      num_threads: int, log_vjp: bool) -> _Rows | None: ...
    # logsumexp along the last axis (a NumPy scalar for a 1-d x), or None
    def logsumexp_plain(self, x: object, axis: object,
                        num_threads: int) -> _Rows | np.floating[Any] | None: ...
    # softmax, or log_softmax if take_log, of every row
    def softmax_rows(self, x: _Rows, out: _Rows, num_threads: int, take_log: bool) -> None: ...
    # softmax_rows over the entries where a bool mask is True (0, or -inf
    # if take_log, elsewhere and in rows with none): row i's flags are
    # mask_rows[i] bytes from mask's data, mask_stride bytes apart
    # (rows of uint16: float16 numbers' bits, or bfloat16's if bfloat16)
    def softmax_masked_rows(self, x: _Rows | NDArray[np.uint16], mask: NDArray[np.bool_],
                            mask_rows: NDArray[np.int64], mask_stride: int,
                            out: _Rows | NDArray[np.uint16],
                            num_threads: int, take_log: bool,
                            bfloat16: bool = False) -> None: ...
    # softmax_rows for float16 (bfloat16 if bfloat16) rows given as their
    # uint16 bits, computed in float; out may be x
    def half_softmax_rows(self, x: NDArray[np.uint16], out: NDArray[np.uint16],
                          num_threads: int, take_log: bool, bfloat16: bool) -> None: ...
    # product_rows for float16 (bfloat16) rows (their uint16 bits); out may be a or b
    def half_product_rows(self, a: NDArray[np.uint16], b: NDArray[np.uint16],
                          out: NDArray[np.uint16], num_threads: int, log_vjp: bool,
                          bfloat16: bool) -> None: ...
    # cross_entropy_rows for float16 (bfloat16) logits and gradient (their
    # uint16 bits); target None, rows of that format, or float32 rows
    def half_cross_entropy_rows(self, logits: NDArray[np.uint16],
                                target: NDArray[np.uint16] | _Rows | None,
                                index: NDArray[np.int64] | None,
                                loss: NDArray[np.float64] | None,
                                grad: NDArray[np.uint16] | None, grad_scale: float,
                                num_threads: int,
                                index_weight: NDArray[np.float64] | None = None,
                                ignore_index: int | None = None,
                                bfloat16: bool = False,
                                target_options: tuple[NDArray[Any], float, float] | None
                                = None) -> tuple[float, int]: ...
    # softmax_jacobian_rows for float16 (bfloat16) rows (their uint16 bits)
    def half_jacobian_rows(self, s: NDArray[np.uint16], out: NDArray[np.uint16],
                           num_threads: int, bfloat16: bool) -> None: ...
    # logsumexp_rows for float16 (bfloat16) rows x and factors b (their
    # uint16 bits), into float32 out and sign; the mask may come with b
    def half_logsumexp_rows(self, x: NDArray[np.uint16], b: NDArray[np.uint16] | None,
                            out: NDArray[np.float32], sign: NDArray[np.float32] | None,
                            num_threads: int, bfloat16: bool,
                            mask: NDArray[np.bool_] | None = None,
                            mask_rows: NDArray[np.int64] | None = None,
                            mask_stride: int = 1) -> None: ...
    # the kernels' float16 (bfloat16) conversions: values = half, or, if
    # to_half, half = values rounded to nearest even (for the tests)
    def half_convert(self, half: NDArray[np.uint16], values: NDArray[np.float32],
                     to_half: bool, bfloat16: bool) -> None: ...
    # x, out: (outer, n, inner) arrays with a contiguous inner axis; along
    # axis 1 (uint16: float16 or, if bfloat16, bfloat16 bits)
    def softmax_cols(self, x: _Rows | NDArray[np.uint16], out: _Rows | NDArray[np.uint16],
                     num_threads: int, take_log: bool, bfloat16: bool = False) -> None: ...
    # per row: a * (b - <a, b>) (softmax_jvp, a = s), or if log_vjp
    # b - exp(a) * sum(b) (log_softmax_vjp, a = logp)
    def product_rows(self, a: _Rows, b: _Rows, out: _Rows, num_threads: int,
                     log_vjp: bool) -> None: ...
    # out[i] = log|sum(b[i] * exp(x[i]))| over the entries of nonzero b (b
    # None: all); sign[i] its sign (sign None: a negative sum is NaN).  Or
    # over the entries where a bool mask is True (rows as for
    # softmax_masked_rows; a mask_stride of 1, or 0: one flag per row)
    def logsumexp_rows(self, x: _Rows, b: _Rows | None, out: _Rows, sign: _Rows | None,
                       num_threads: int, mask: NDArray[np.bool_] | None = None,
                       mask_rows: NDArray[np.int64] | None = None,
                       mask_stride: int = 1) -> None: ...
    # out: a C-contiguous (rows, n, n) array, one Jacobian per row of s
    def softmax_jacobian_rows(self, s: _Rows, out: _Rows, num_threads: int) -> None: ...
    # (sum of the losses, -1), or (nan, i) when index[i] is the first out of
    # range; row i's target is target[i] + index_weight[i] * onehot(index[i])
    # (either may be None), none for an index equal to ignore_index; with
    # target_options (w, keep, uniform), target[i] is read as
    # (target[i] keep + uniform) w
    def cross_entropy_rows(self, logits: _Rows, target: _Rows | None,
                           index: NDArray[np.int64] | None, loss: NDArray[np.float64] | None,
                           grad: _Rows | None, grad_scale: float, num_threads: int,
                           index_weight: NDArray[np.float64] | None = None,
                           ignore_index: int | None = None,
                           target_options: tuple[NDArray[Any], float, float] | None = None,
                           ) -> tuple[float, int]: ...


_baseline = cast(KernelModule, import_module("fastsoftmax._kernels_baseline"))


def built_paths() -> list[str]:
    """The SIMD paths this build compiled, best first."""
    return [p for p in PATH_PREFERENCE if p in _build_config.VARIANT_FLAGS]


def supported_paths() -> list[str]:
    """The built SIMD paths this CPU can run, best first."""
    return [p for p in built_paths()
            if all(_baseline.cpu_supports(f) for f in PATHS[p].features)]


def load(path: str) -> KernelModule:
    """The kernel module of one SIMD path."""
    if path not in supported_paths():
        raise ImportError(
            f"fastsoftmax: SIMD path {path!r} is not available here; "
            f"this build and CPU support {supported_paths()}")
    return cast(KernelModule, import_module(f"fastsoftmax._kernels_{path}"))


SIMD_PATH = os.environ.get(SIMD_ENV) or supported_paths()[0]
kernels = load(SIMD_PATH)


@contextlib.contextmanager
def use(path: str | KernelModule) -> Iterator[KernelModule]:
    """Run the public functions on other kernels inside a ``with`` block,
    then go back to the module in use before, also when the block raises.

    `path` names a SIMD path (tests and the accuracy script compare the
    paths), or is a kernel module itself (tests wrap one to watch its
    calls).  Blocks nest: each restores what it replaced, so the swaps
    must only ever go through here.
    """
    global kernels
    previous = kernels
    kernels = load(path) if isinstance(path, str) else path
    try:
        yield kernels
    finally:
        kernels = previous


# The default thread count is OpenMP's, read once at import: OMP_NUM_THREADS
# or the number of cores this process may run on.
_DEFAULT_THREADS = kernels.omp_max_threads()
_requested_threads: int | None = None
_MAX_THREADS = 2**31 - 1


def _one_thread_after_fork() -> None:
    """In a child made by fork(): one thread.  GNU libgomp keeps a pool of
    worker threads per calling thread and has no fork handler; the child
    inherits the pool's bookkeeping but not its threads, so its first
    parallel region would wait for them forever (docs/reliability.rst).
    fs.set_num_threads(n) in the child undoes this, at that risk."""
    global _requested_threads
    _requested_threads = 1
    kernels.omp_set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread_after_fork)


def get_num_threads() -> int:
    """Number of threads the kernels use for large inputs.

    This is OpenMP's limit for the calling thread (``OMP_NUM_THREADS``, the
    available cores, or what ``threadpoolctl.threadpool_limits`` or
    :func:`set_num_threads` set), never more than :func:`set_num_threads`
    asked for.  A build without OpenMP reports 1.

    Examples
    --------
    >>> import fastsoftmax as fs
    >>> fs.get_num_threads() >= 1
    True
    """
    limit = kernels.omp_max_threads()
    if _requested_threads is None:
        return limit
    return min(limit, _requested_threads)


def set_num_threads(n: SupportsIndex | None) -> None:
    """Set the number of threads the kernels use; ``None`` restores the default.

    Parameters
    ----------
    n : int or None
        At least 1.  ``None`` goes back to OpenMP's default
        (``OMP_NUM_THREADS`` or the cores this process may run on).

    Raises
    ------
    ValueError
        If `n` is less than 1 or more than 2**31 - 1.
    TypeError
        If `n` is not an integer or None.

    Notes
    -----
    The setting applies to every Python thread (an OpenMP setting alone
    would apply to the calling thread only), capped in other threads by
    their OpenMP limit.  In a build without OpenMP it has no effect.

    Examples
    --------
    >>> import fastsoftmax as fs
    >>> fs.set_num_threads(1)
    >>> fs.get_num_threads()
    1
    >>> fs.set_num_threads(None)
    """
    global _requested_threads
    if n is None:
        _requested_threads = None
        kernels.omp_set_num_threads(_DEFAULT_THREADS)
        return
    if isinstance(n, bool):
        raise TypeError(f"n must be an int >= 1 or None, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int >= 1 or None, got {n!r}") from None
    if n < 1:
        raise ValueError(f"n must be >= 1 (or None for the default), got {n}")
    if n > _MAX_THREADS:  # OpenMP takes a C int
        raise ValueError(f"n must be at most {_MAX_THREADS}, got {n}")
    _requested_threads = n
    kernels.omp_set_num_threads(n)


def config() -> dict[str, Any]:
    """The facts show_config prints, as a dict."""
    from . import __version__
    return {
        "version": __version__,
        "compiler": _build_config.COMPILER,
        "compile_flags": list(_build_config.VARIANT_FLAGS[SIMD_PATH]),
        "debug_build": _build_config.DEBUG,
        "openmp": kernels.openmp_enabled(),
        "openmp_build_decision": _build_config.OPENMP_REASON,
        "num_threads": get_num_threads(),
        "simd_path": SIMD_PATH,
        "simd_width_bits": 8 * kernels.simd_width_bytes(),
        "simd_paths_supported": supported_paths(),
        "simd_paths_built": built_paths(),
        "kernel_module": kernels.__file__,
    }


def show_config(file: TextIO | None = None) -> None:
    """Print the version, build flags, OpenMP, threads and SIMD path.

    Parameters
    ----------
    file : file-like, optional
        Where to print; standard output by default.

    Examples
    --------
    >>> import fastsoftmax as fs
    >>> fs.show_config()  # doctest: +ELLIPSIS
    fastsoftmax ...
    """
    info = config()
    out = file or sys.stdout
    print(f"fastsoftmax {info['version']}", file=out)
    width = max(map(len, info))
    for key, value in info.items():
        if key != "version":
            if isinstance(value, list):
                value = " ".join(map(str, value))
            print(f"  {key:<{width}} : {value}", file=out)
