"""The SIMD paths: the instruction sets the kernels are compiled for.

The one table of them.  setup.py reads it for each variant's compiler flags
(it loads this file by path: the package cannot be imported before it is
built), fastsoftmax._backend for the CPU features to check at import, and
the tests for both.  No imports from the package, for the same reason.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple


class SimdPath(NamedTuple):
    # compiler flags of GCC-like compilers (gcc, clang)
    unix_flags: Tuple[str, ...]
    # MSVC's flags; None: MSVC cannot build this path
    msvc_flags: Optional[Tuple[str, ...]]
    # CPU features (names for the kernels' cpu_supports) the flags assume
    features: Tuple[str, ...]
    # vector register width the build reports, None where it depends on the CPU
    width_bits: Optional[int]
    # built on x86 only; the other paths everywhere
    x86_only: bool


# Best first.  "native" is built only on request (FASTSOFTMAX_NATIVE=1), for
# the machine that built it.  "baseline" uses what every CPU of the
# architecture has (SSE2 on x86-64).
PATHS = {
    "native": SimdPath(("-march=native",), None, (), None, False),
    "avx512": SimdPath(("-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"),
                       ("/arch:AVX512",),
                       ("avx512f", "avx512dq", "avx512bw", "avx512vl", "avx2", "fma"), 512, True),
    "avx2": SimdPath(("-mavx2", "-mfma"), ("/arch:AVX2",), ("avx2", "fma"), 256, True),
    "baseline": SimdPath((), (), (), 128, False),
}


def build_flags(is_x86: bool, msvc: bool, native: bool) -> dict[str, list[str]]:
    """The paths to build on this machine and compiler, with their ISA flags."""
    chosen = {}
    for name, path in PATHS.items():
        flags = path.msvc_flags if msvc else path.unix_flags
        if flags is None or (path.x86_only and not is_x86) or (name == "native" and not native):
            continue
        chosen[name] = list(flags)
    return chosen
