"""Build the fastsoftmax Cython extensions.

The kernel source (fastsoftmax/_kernels.pxi, C++ through Cython, with the
templates of fastsoftmax/_vmath.hpp) is compiled once per instruction set
(the table in fastsoftmax/_simd_paths.py) into its own module;
fastsoftmax._backend picks the best one the CPU supports at import time, so
a default build runs on any x86-64 CPU.

Flags are chosen by compiler type: GCC-like compilers (gcc, clang) get
-O3, -fopenmp and -m flags, MSVC /O2, /openmp and /arch:.  With clang,
OpenMP needs LLVM's runtime (Debian: libomp-dev).

OpenMP is decided here, at build time, by compiling, linking and *running* a
tiny OpenMP program with the compiler the extensions will use.  If that
works, the kernels are built with OpenMP; if not, they are built serial (a
build never fails for lack of OpenMP) unless FASTSOFTMAX_REQUIRE_OPENMP=1.

Environment variables:
  FASTSOFTMAX_NO_OPENMP=1       build serial kernels, skip the probe
  FASTSOFTMAX_REQUIRE_OPENMP=1  fail the build if the OpenMP probe fails
  FASTSOFTMAX_DEBUG=1           Cython bounds/initialisation checks on, -O0 -g
  FASTSOFTMAX_NATIVE=1          also build a "native" variant (-march=native)
  FASTSOFTMAX_SANITIZE=<list>   build with -fsanitize=<list> (e.g. address,undefined),
                                every finding fatal; see .ci/sanitizers for running it
  CC, CXX                       the compilers (the C++ sources are compiled with CXX;
                                for clang set both: CC=clang CXX=clang++)
"""

import os
import platform
import runpy
import subprocess
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PACKAGE = "fastsoftmax"

# C++, as the kernels: compiled and linked the way they are.
OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main()
{
    int team = 0;
    #pragma omp parallel num_threads(2)
    {
        #pragma omp atomic
        team += 1;
    }
    printf("%d\n", team);
    return team == 2 ? 0 : 1;
}
"""


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_flag("FASTSOFTMAX_DEBUG")
SANITIZE = os.environ.get("FASTSOFTMAX_SANITIZE", "").strip()
IS_X86 = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686"}
# The package cannot be imported before it is built: its table is read by path.
SIMD_PATHS = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         PACKAGE, "_simd_paths.py"))


class Flags:
    """The flags of one compiler type; nothing GCC-only reaches MSVC."""

    def __init__(self, compiler_type):
        self.msvc = compiler_type == "msvc"
        if self.msvc:
            # MSVC's default /fp:precise neither reassociates nor contracts.
            self.optimise = ["/Od", "/Zi"] if DEBUG else ["/O2"]
            self.std = ["/std:c++17"]
            self.openmp_compile, self.openmp_link = ["/openmp"], []
            self.simd = []   # no "omp simd" without /fp:fast in its loops
            if SANITIZE:
                sys.exit("fastsoftmax: FASTSOFTMAX_SANITIZE needs gcc or clang")
            self.sanitize = []
        else:
            # No -ffast-math (nor -ffinite-math-only): they would break the
            # -inf masking and NaN propagation that the library promises.
            # -fno-trapping-math only tells the compiler that no
            # floating-point trap handler is installed, which lets it turn the
            # branch-free selects of the exp into vector blends; results (NaN,
            # inf, rounding) are unchanged.
            self.optimise = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math"]
            # GNU mode, not ISO: -std=c++17 would also switch floating-point
            # contraction off, and change the rounding of the AVX2 builds.
            self.std = ["-std=gnu++17"]
            self.openmp_compile = self.openmp_link = ["-fopenmp"]
            # -fopenmp-simd honours the "omp simd" pragmas of _vmath.hpp
            # without the OpenMP runtime, so the serial build vectorises its
            # reductions too (probed: a compiler may lack it).
            self.simd = ["-fopenmp-simd"]
            # Sanitizers: the same flags compile and link.  -g and the frame
            # pointer give reports with file:line; no recovery, so a finding
            # fails the run.
            self.sanitize = ([f"-fsanitize={SANITIZE}", f"-fno-sanitize-recover={SANITIZE}",
                              "-fno-omit-frame-pointer", "-g"] if SANITIZE else [])
        self.variants = SIMD_PATHS["build_flags"](IS_X86, self.msvc,
                                                  env_flag("FASTSOFTMAX_NATIVE"))

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
}


def compiler_description(compiler):
    """First line of the C++ compiler's --version, e.g. 'g++ (Debian 12.2.0) 12.2.0'."""
    if compiler.compiler_type == "msvc":
        return "MSVC (cl.exe)"   # cl has no --version
    # (setuptools before 72 compiles C++ sources with the C compiler command)
    exe = (getattr(compiler, "compiler_so_cxx", None) or getattr(compiler, "compiler_so", None)
           or ["c++"])
    try:
        out = subprocess.run([exe[0], "--version"], capture_output=True, text=True,
                             timeout=30).stdout
        return out.splitlines()[0].strip() if out else exe[0]
    except (OSError, subprocess.SubprocessError):
        return exe[0]


def try_compile(compiler, source, extra_compile=(), extra_link=(), run=False):
    """Compile as C++ (and link and run, if asked) `source`; True if it all worked."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([src], output_dir=tmp,
                                       extra_postargs=list(extra_compile))
            if not run:
                return True
            exe = os.path.join(tmp, "probe")
            compiler.link_executable(objects, exe, extra_postargs=list(extra_link),
                                     target_lang="c++")
            return subprocess.run([exe], capture_output=True, timeout=60).returncode == 0
        except Exception:  # compile/link errors come in several types
            return False


class BuildExt(build_ext):
    """build_ext that probes OpenMP and the ISA flags with the real compiler."""

    def build_extensions(self):
        compiler = self.compiler
        flags = Flags(compiler.compiler_type)
        # the paths this compiler cannot build (MSVC: native) are left out
        self.extensions = [ext for ext in self.extensions
                           if ext.name.rsplit("_", 1)[-1] in flags.variants]
        empty = "int main() { return 0; }\n"
        openmp, reason = self.decide_openmp(compiler, flags)
        omp_compile = flags.openmp_compile if openmp else []
        omp_link = flags.openmp_link if openmp else []
        simd_flags = flags.simd if flags.simd and try_compile(compiler, empty, flags.simd) else []
        std = flags.std if try_compile(compiler, empty, flags.std) else []
        variants = {}
        for ext in self.extensions:
            variant = ext.name.rsplit("_", 1)[-1]
            isa = flags.variants[variant]
            if isa and not try_compile(compiler, empty, isa):
                print(f"fastsoftmax: compiler rejects {isa}; variant {variant} is "
                      "built without them", file=sys.stderr)
                isa = []
            ext.extra_compile_args = (flags.optimise + std + simd_flags + isa + omp_compile
                                      + flags.sanitize)
            ext.extra_link_args = omp_link + flags.sanitize
            variants[variant] = ext.extra_compile_args
        self.write_build_config(openmp, reason, compiler_description(compiler), variants)
        super().build_extensions()

    def decide_openmp(self, compiler, flags):
        if env_flag("FASTSOFTMAX_NO_OPENMP"):
            return False, "disabled by FASTSOFTMAX_NO_OPENMP"
        if try_compile(compiler, OPENMP_PROBE, flags.openmp_compile, flags.openmp_link,
                       run=True):
            return True, "OpenMP probe compiled, linked and ran with 2 threads"
        message = ("the OpenMP probe failed to compile, link or run with "
                   + " ".join(flags.openmp_compile))
        if env_flag("FASTSOFTMAX_REQUIRE_OPENMP"):
            sys.exit(f"fastsoftmax: {message}, and FASTSOFTMAX_REQUIRE_OPENMP is set")
        print(f"fastsoftmax: WARNING: {message}; building serial kernels",
              file=sys.stderr)
        return False, message

    def copy_extensions_to_source(self):
        # In-place and editable builds: the config goes along with the modules.
        super().copy_extensions_to_source()
        self.copy_file(self.config_written, os.path.join(PACKAGE, "_build_config.py"))

    def write_build_config(self, openmp, reason, compiler, variants):
        # Next to the compiled modules, so that wheels carry it.
        target = os.path.dirname(self.get_ext_fullpath(f"{PACKAGE}._kernels_baseline"))
        os.makedirs(target, exist_ok=True)
        self.config_written = os.path.join(target, "_build_config.py")
        with open(self.config_written, "w") as f:
            f.write(textwrap.dedent(f'''\
                """Facts recorded by setup.py when the extensions were built."""
                OPENMP = {openmp!r}
                OPENMP_REASON = {reason!r}
                COMPILER = {compiler!r}
                VARIANT_FLAGS = {variants!r}
                DEBUG = {DEBUG!r}
                '''))


# Every path this machine could build; build_extensions drops those that
# its compiler cannot (the compiler type is known only there).
extensions = [
    Extension(f"{PACKAGE}._kernels_{variant}",
              [f"{PACKAGE}/_kernels_{variant}.pyx"],
              depends=[f"{PACKAGE}/_kernels.pxi", f"{PACKAGE}/_vmath.hpp",
                       f"{PACKAGE}/_simd_paths.py"],
              # the NumPy C API: the kernels read a plain call's arrays directly
              include_dirs=[PACKAGE, numpy.get_include()],
              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION")],
              language="c++")
    for variant in SIMD_PATHS["build_flags"](IS_X86, False, env_flag("FASTSOFTMAX_NATIVE"))
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES),
    cmdclass={"build_ext": BuildExt},
)
