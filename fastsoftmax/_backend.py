"""The compiled kernel module in use, the thread setting, and the build facts.

The kernels are compiled once per instruction set (see setup.py).  At import
the best one the CPU supports is chosen; FASTSOFTMAX_SIMD=<path> forces one
(the tests use it to run every path the CPU supports).
"""

import operator
import os
import sys
from importlib import import_module

from . import _build_config

# Best first.  "native" exists only in an opt-in FASTSOFTMAX_NATIVE=1 build,
# made for the machine that built it.
PATH_PREFERENCE = ("native", "avx512", "avx2", "baseline")
# CPU features each path's compiler flags assume.
PATH_FEATURES = {
    "native": (),
    "avx512": ("avx512f", "avx512dq", "avx512bw", "avx512vl", "avx2", "fma"),
    "avx2": ("avx2", "fma"),
    "baseline": (),
}
SIMD_ENV = "FASTSOFTMAX_SIMD"

_baseline = import_module("fastsoftmax._kernels_baseline")


def built_paths():
    """The SIMD paths this build compiled, best first."""
    return [p for p in PATH_PREFERENCE if p in _build_config.VARIANT_FLAGS]


def supported_paths():
    """The built SIMD paths this CPU can run, best first."""
    return [p for p in built_paths()
            if all(_baseline.cpu_supports(f) for f in PATH_FEATURES[p])]


def load(path):
    """The kernel module of one SIMD path."""
    if path not in supported_paths():
        raise ImportError(
            f"fastsoftmax: SIMD path {path!r} is not available here; "
            f"this build and CPU support {supported_paths()}")
    return import_module(f"fastsoftmax._kernels_{path}")


SIMD_PATH = os.environ.get(SIMD_ENV) or supported_paths()[0]
kernels = load(SIMD_PATH)

# The default thread count is OpenMP's, read once at import: OMP_NUM_THREADS
# or the number of cores this process may run on.
_DEFAULT_THREADS = kernels.omp_max_threads()
_requested_threads = None


def get_num_threads():
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


def set_num_threads(n):
    """Set the number of threads the kernels use; ``None`` restores the default.

    Parameters
    ----------
    n : int or None
        At least 1.  ``None`` goes back to OpenMP's default
        (``OMP_NUM_THREADS`` or the cores this process may run on).

    Raises
    ------
    ValueError
        If `n` is less than 1.
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
    _requested_threads = n
    kernels.omp_set_num_threads(n)


def config():
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


def show_config(file=None):
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
