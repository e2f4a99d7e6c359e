"""The build (compiled kernels, OpenMP, SIMD paths, show_config) and threads
(docs/api.rst, sections Threads and Build)."""

import concurrent.futures
import importlib.machinery
import io
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _backend, _build_config
from fastsoftmax._simd_paths import PATHS

from _helpers import DTYPE_IDS, FLOAT_DTYPES, FORWARD, FORWARD_IDS, check, oracle

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the widths the paths are built for (None: the machine's own, "native")
SIMD_WIDTH_BITS = {name: path.width_bits for name, path in PATHS.items()
                   if path.width_bits is not None}
IS_X86 = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686"}
MSVC = _build_config.COMPILER.startswith("MSVC")


def openmp():
    return _backend.kernels.openmp_enabled()


def all_kernel_modules():
    return [_backend.load(path) for path in _backend.supported_paths()]


def run_python(code, tmp_path, **env_changes):
    """Run `code` in a fresh interpreter outside the repository (so that
    `python -c` cannot pick up the source folder), with this process's
    environment (PYTHONPATH made absolute) changed by `env_changes` (None
    removes a variable)."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def run_ok(code, tmp_path, **env_changes):
    """run_python that must succeed and import this same fastsoftmax; returns
    the printed lines (without the final line, the module path)."""
    code = code + "\nimport fastsoftmax; print(fastsoftmax.__file__)"
    proc = run_python(code, tmp_path, **env_changes)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert os.path.realpath(lines[-1]) == os.path.realpath(fs.__file__)
    return lines[:-1]


@pytest.fixture
def restore_threads():
    yield
    for kernels in all_kernel_modules():
        kernels.set_thresholds()
    fs.set_num_threads(None)


# --------------------------------------------------------------------------
# what is imported
# --------------------------------------------------------------------------

# docs/api.rst, section Build: "The compiled core is Cython"
def test_kernels_are_the_compiled_extension():
    package_dir = os.path.dirname(os.path.realpath(fs.__file__))
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for kernels in [_backend.kernels] + all_kernel_modules():
        assert kernels.__file__.endswith(suffixes), kernels.__file__
        assert os.path.dirname(os.path.realpath(kernels.__file__)) == package_dir
    assert _backend.SIMD_PATH in _backend.supported_paths()


@pytest.mark.skipif(os.environ.get("FASTSOFTMAX_EXPECT_INSTALLED") != "1",
                    reason="FASTSOFTMAX_EXPECT_INSTALLED=1 is set where the tests must "
                           "run against an installed package (CI)")
def test_installed_package_is_imported():
    package_dir = os.path.dirname(os.path.realpath(fs.__file__))
    parts = package_dir.split(os.sep)
    assert "site-packages" in parts or "dist-packages" in parts, package_dir
    # not the source folder of this checkout (a virtual environment inside
    # the checkout is fine: its site-packages is not the source)
    relative = os.path.relpath(package_dir, os.path.realpath(REPO_ROOT))
    outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
    assert outside or "site-packages" in relative.split(os.sep), package_dir
    assert package_dir != os.path.join(os.path.realpath(REPO_ROOT), "fastsoftmax")


# --------------------------------------------------------------------------
# OpenMP
# --------------------------------------------------------------------------

# docs/api.rst, section Build: "It builds with OpenMP where the compiler has it and without it
# (serially) where it does not"
def test_openmp_build_decision_is_what_was_compiled(restore_threads):
    compiled = _backend.kernels.openmp_enabled()
    assert _build_config.OPENMP == compiled
    for kernels in all_kernel_modules():  # every SIMD variant alike
        assert kernels.openmp_enabled() == compiled

    expect = os.environ.get("FASTSOFTMAX_EXPECT_OPENMP")
    assert expect in (None, "", "0", "1"), f"FASTSOFTMAX_EXPECT_OPENMP={expect!r}"
    if expect == "1":
        assert compiled, f"OpenMP expected but off: {_build_config.OPENMP_REASON}"
    elif expect == "0":
        assert not compiled, "a serial build was expected"

    for kernels in all_kernel_modules():
        if compiled:
            # threads really start: a parallel region asked for 2 gets 2
            assert kernels.parallel_team_size(2) == 2
            assert kernels.parallel_team_size(1) == 1
        else:
            assert kernels.parallel_team_size(2) == 1
    if not compiled:
        # docs/api.rst, section Build: "A build without OpenMP reports 1."
        assert fs.get_num_threads() == 1
        fs.set_num_threads(4)
        assert fs.get_num_threads() == 1


# --------------------------------------------------------------------------
# show_config
# --------------------------------------------------------------------------

def _config_value(text, key):
    match = re.search(rf"^\s*{key}\s*:\s*(.*)$", text, re.MULTILINE)
    assert match, f"show_config does not print {key}:\n{text}"
    return match.group(1).strip()


# docs/api.rst, section Build: "`fs.show_config()` prints the version, the compiler flags, whether
# OpenMP is on, the thread count and the SIMD width the kernels were built for."
def test_show_config(capsys, restore_threads):
    fs.show_config()
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"fastsoftmax {fs.__version__}"
    assert _config_value(text, "compiler") == _build_config.COMPILER
    flags = _config_value(text, "compile_flags").split()
    assert flags == list(_build_config.VARIANT_FLAGS[_backend.SIMD_PATH])
    assert ("-fopenmp" in flags) == openmp()
    assert _config_value(text, "openmp") == str(openmp())
    assert int(_config_value(text, "num_threads")) == fs.get_num_threads()
    assert _config_value(text, "simd_path") == _backend.SIMD_PATH
    width = int(_config_value(text, "simd_width_bits"))
    assert width == 8 * _backend.kernels.simd_width_bytes()
    if _backend.SIMD_PATH in SIMD_WIDTH_BITS:
        assert width == SIMD_WIDTH_BITS[_backend.SIMD_PATH]

    # file= and the live thread count
    fs.set_num_threads(1)
    buffer = io.StringIO()
    assert fs.show_config(file=buffer) is None
    assert capsys.readouterr().out == ""
    assert int(_config_value(buffer.getvalue(), "num_threads")) == 1


# --------------------------------------------------------------------------
# SIMD paths
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_every_simd_path_matches_reference(func, reference, dtype, simd_path, rng):
    assert _backend.kernels.__name__ == f"fastsoftmax._kernels_{simd_path}"
    if simd_path in SIMD_WIDTH_BITS:
        assert 8 * _backend.kernels.simd_width_bytes() == SIMD_WIDTH_BITS[simd_path]
    for shape in [(5, 1), (7, 15), (3, 33), (4, 1000), (70_001,)]:
        x = (3 * rng.standard_normal(shape)).astype(dtype)
        check(func(x), oracle(reference, x), func, dtype)


def test_fma_build_fact(simd_path):
    # has_fma() decides whether the float64 2-ulp test runs: it must be true
    # where the path's flags give FMA (GCC and clang say so; MSVC does not)
    # and false on the x86 baseline (SSE2), so that the test cannot skip
    # everywhere unnoticed.
    kernels = _backend.kernels
    if IS_X86 and not MSVC and simd_path != "native":
        assert kernels.has_fma() == ("fma" in PATHS[simd_path].features)


def _float_rows_calls(x):
    """The calls whose rows (and columns, along axis 0) run the hot loops
    written per instruction set, with their results."""
    labels = np.argmax(np.nan_to_num(x, nan=0.0, neginf=-1.0), axis=-1)
    loss, grad = fs.softmax_cross_entropy(x, labels, return_grad=True)
    in_place = [x.copy(), x.copy()]
    fs.softmax(in_place[0], out=in_place[0])
    fs.log_softmax(in_place[1], out=in_place[1])
    return [fs.softmax(x), fs.log_softmax(x), fs.logsumexp(x, axis=-1), loss, grad,
            fs.softmax(x, axis=0), fs.log_softmax(x, axis=0), *in_place]


def _special_rows(dtype, n, rng, rows=43):
    """Rows of n elements that try every special case of the row loops:
    exp underflowing, -inf, NaN, +inf, huge logits, rows far from 0."""
    underflow = {np.float32: -110.0, np.float64: -760.0}[dtype]
    x = (3 * rng.standard_normal((rows, n))).astype(dtype)
    x[1] *= -underflow / 3                # terms far below the subnormals
    x[2] += 1e5                           # rows far from 0
    x[3] = rng.uniform(underflow, 0, n)   # exp near the underflow threshold
    x[4, ::3] = -np.inf
    x[5, n // 2] = np.nan
    x[6] = -np.inf
    x[7, -1] = np.inf
    x[8] = 1e-30 * rng.standard_normal(n)
    x[9] = 88.0                           # all equal
    return x


def _assert_same_bits(have, want):
    """The same bits, zeros' signs too; NaN where NaN, whatever its sign:
    which NaN operand an FMA passes on is each compilation's choice (double
    columns of a middle axis gave NaN in the AVX2 build, -NaN in the
    AVX-512 build; docs/api.rst leaves a NaN's sign unspecified)."""
    bits = {4: np.uint32, 8: np.uint64}[have.dtype.itemsize]
    np.testing.assert_array_equal(np.isnan(have), np.isnan(want))
    np.testing.assert_array_equal(np.where(np.isnan(have), 0, have).view(bits),
                                  np.where(np.isnan(want), 0, want).view(bits))


@pytest.mark.skipif(not {"avx512", "avx2"} <= set(_backend.supported_paths()),
                    reason="needs a CPU with AVX-512 and AVX2")
@pytest.mark.parametrize("n", [1, 5, 10, 16, 17, 23, 32, 33, 37, 40, 47, 100, 1000, 4099])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avx512_rows_are_those_of_avx2(n, dtype, rng):
    # The AVX-512 build computes float rows with intrinsics (vscalefps,
    # masked tails, the short rows' tile transposed in registers, the
    # column kernel 16 columns a vector), and the short rows' tile of
    # double rows too (8 a vector); the AVX2 build uses the portable
    # templates: the same arithmetic, so the same bits, also where exp
    # underflows, for -inf, NaN, huge logits and rows shifted far from 0.
    # 43 rows: the short rows' tile transposes blocks of 16 (8) and the rest.
    # (test_short_rows_tile_is_row_alone checks the double rows skipped here.)
    if dtype == np.float64 and 16 <= n < 40:
        pytest.skip("AVX-512 builds take these double rows into the short rows' "
                    "tile, the others into the row kernel (_vmath.hpp, short_rows)")
    x = _special_rows(dtype, n, rng)
    wide = np.zeros((43, n + 3), dtype)
    wide[:, 1:n + 1] = x
    for rows in (x, wide[:, 1:n + 1]):    # contiguous, and rows apart
        with _backend.use("avx2"):
            expected = _float_rows_calls(rows)
        with _backend.use("avx512"):
            got = _float_rows_calls(rows)
        for want, have in zip(expected, got):
            _assert_same_bits(have, want)


@pytest.mark.parametrize("n", range(1, 40))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_rows_tile_is_row_alone(n, dtype, simd_path, rng):
    # A call's short rows go through the tile (in AVX-512 intrinsics on that
    # path), but rows fewer than a vector holds are computed one by one,
    # short_row_alone, in the portable code: the same arithmetic in the same
    # order, so the same bits, on the rows of special values too.  (Where
    # the rule sends rows of n to the row kernel, both calls go there; the
    # order of the sums: test_forward.py, test_short_row_alone_sums_in_the_tiles_order.)
    x = _special_rows(dtype, n, rng)
    for func in (fs.softmax, fs.log_softmax):
        whole = func(x)
        for start in range(0, 43, 7):
            _assert_same_bits(func(x[start:start + 7]), whole[start:start + 7])



def test_default_path_is_the_best_supported():
    if os.environ.get(_backend.SIMD_ENV):
        pytest.skip(f"{_backend.SIMD_ENV} is set")
    assert _backend.SIMD_PATH == _backend.supported_paths()[0]
    assert "baseline" in _backend.supported_paths()


@pytest.mark.parametrize("path", _backend.supported_paths())
def test_simd_environment_variable_selects_the_path(path, tmp_path):
    lines = run_ok("import fastsoftmax as fs\nfs.show_config()", tmp_path,
                   FASTSOFTMAX_SIMD=path)
    text = "\n".join(lines)
    assert _config_value(text, "simd_path") == path
    assert _config_value(text, "kernel_module").endswith(
        tuple(f"_kernels_{path}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES))
    if path in SIMD_WIDTH_BITS:
        assert int(_config_value(text, "simd_width_bits")) == SIMD_WIDTH_BITS[path]


# The table of SIMD paths is the one place that names their flags and CPU
# features: the build used its flags, and the run-time probe knows its
# features.
def test_built_paths_have_the_flags_of_the_table():
    built = _backend.built_paths()
    assert "baseline" in built
    if IS_X86:
        assert {"avx2", "avx512"} <= set(built)
    for name in built:
        flags = _build_config.VARIANT_FLAGS[name]
        table = PATHS[name].msvc_flags if MSVC else PATHS[name].unix_flags
        assert table is not None and set(table) <= set(flags), (name, flags)


def test_cpu_probe_knows_every_feature_of_the_table():
    features = {f for path in PATHS.values() for f in path.features}
    assert features
    for kernels in all_kernel_modules():
        for feature in features:
            assert kernels.cpu_supports(feature) in (True, False)
        with pytest.raises(ValueError, match="unknown CPU feature 'sse9'"):
            kernels.cpu_supports("sse9")
    for path in _backend.supported_paths():
        assert all(_backend.kernels.cpu_supports(f) for f in PATHS[path].features)


def test_every_module_was_compiled_by_the_configured_compiler():
    # The config is written on every build; a build that reused objects
    # made by another compiler would still name the new one there.
    family = _build_config.COMPILER.lower()
    for kernels in all_kernel_modules():
        compiled = kernels.compiler().split()[0]   # "gcc" or "clang"
        assert compiled in family or (compiled == "gcc" and "g++" in family), \
            (kernels.__file__, kernels.compiler(), _build_config.COMPILER)


# A build made with a chosen compiler (CI builds with clang too) must really
# have used it: FASTSOFTMAX_EXPECT_COMPILER names the compiler family.
@pytest.mark.skipif(not os.environ.get("FASTSOFTMAX_EXPECT_COMPILER"),
                    reason="FASTSOFTMAX_EXPECT_COMPILER is set where a build must have "
                           "used a given compiler (CI's clang build)")
def test_build_used_the_expected_compiler():
    expected = os.environ["FASTSOFTMAX_EXPECT_COMPILER"].lower()
    for kernels in all_kernel_modules():
        assert kernels.compiler().lower().startswith(expected), \
            (kernels.__file__, kernels.compiler())


UNAVAILABLE_PATHS = ["nonsense", "sse9"] + [
    p for p in _backend.PATH_PREFERENCE if p not in _backend.supported_paths()]


@pytest.mark.parametrize("path", UNAVAILABLE_PATHS)
def test_unknown_simd_path_is_an_import_error(path, tmp_path):
    proc = run_python("import fastsoftmax", tmp_path, FASTSOFTMAX_SIMD=path)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and repr(path) in proc.stderr, proc.stderr


# --------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------

def default_threads(env):
    """What OpenMP uses by default: OMP_NUM_THREADS or the usable cores."""
    if not openmp():
        return 1
    if env.get("OMP_NUM_THREADS"):
        return int(env["OMP_NUM_THREADS"].split(",")[0])
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


# docs/api.rst, section Threads: "`fs.get_num_threads()` and `fs.set_num_threads(n)`; `n=None`
# restores the default"
def test_get_and_set_num_threads(restore_threads):
    default = fs.get_num_threads()
    assert default == default_threads(os.environ)
    fs.set_num_threads(1)
    assert fs.get_num_threads() == 1
    fs.set_num_threads(2)
    assert fs.get_num_threads() == (2 if openmp() else 1)
    fs.set_num_threads(np.int64(3))
    assert fs.get_num_threads() == (3 if openmp() else 1)
    fs.set_num_threads(None)
    assert fs.get_num_threads() == default


# docs/api.rst, section Threads:
# "the default (what OpenMP would use: `OMP_NUM_THREADS` or the cores
# this process may run on)"
@pytest.mark.parametrize("omp_num_threads", ["1", "2", None])
def test_default_threads_in_a_fresh_process(omp_num_threads, tmp_path):
    code = ("import fastsoftmax as fs\n"
            "print(fs.get_num_threads())\n"
            "fs.set_num_threads(2)\n"
            "print(fs.get_num_threads())\n"
            "fs.set_num_threads(None)\n"
            "print(fs.get_num_threads())")
    lines = run_ok(code, tmp_path, OMP_NUM_THREADS=omp_num_threads)
    env = {} if omp_num_threads is None else {"OMP_NUM_THREADS": omp_num_threads}
    default = default_threads(env)
    assert [int(v) for v in lines] == [default, 2 if openmp() else 1, default]


def _split_row_threshold_inputs(rng, dtype):
    return [rng.standard_normal((257, 300)).astype(dtype),   # many rows
            rng.standard_normal((1, 300)).astype(dtype),     # one short row
            rng.standard_normal((3, 5, 40)).astype(dtype)]


# docs/api.rst, section Threads:
# "Results are identical whatever the thread count when rows are split
# among threads"
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_rows_split_among_threads_are_bit_identical(func, dtype, restore_threads, rng):
    for kernels in all_kernel_modules():  # even small inputs take the parallel path
        kernels.set_thresholds(parallel_min=0)
    for x in _split_row_threshold_inputs(rng, dtype):
        results = []
        for n in (1, 2, 3, 4):
            fs.set_num_threads(n)
            results.append(func(x))
        for result in results[1:]:
            np.testing.assert_array_equal(result, results[0])


# docs/api.rst, section Threads: "a single row split across threads may differ by rounding only"
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_one_row_split_across_threads(func, reference, dtype, restore_threads, rng):
    # 200_003 >= SPLIT_ROW_MIN and 1 row < 2 threads: split with the defaults
    x = (3 * rng.standard_normal(200_003)).astype(dtype)
    expected = oracle(reference, x)
    results = {}
    for n in (1, 2, 3):
        fs.set_num_threads(n)
        results[n] = func(x)
        check(results[n], expected, func, dtype)
    # two results within the budget of the same exact value
    check(results[2], results[1], func, dtype, factor=2)
    check(results[3], results[1], func, dtype, factor=2)


# docs/api.rst, section Threads: "Inside `threadpoolctl.threadpool_limits(k)`, `get_num_threads()`
# reports the limit." and "`threadpoolctl.threadpool_limits(k)` limits the
# kernels as it limits NumPy's BLAS."
def test_threadpoolctl(restore_threads, rng):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = fs.get_num_threads()
    x = rng.standard_normal((300, 200))
    expected = fs.softmax(x)
    kernels = _backend.kernels
    with threadpoolctl.threadpool_limits(1):
        assert fs.get_num_threads() == 1
        # the team a kernel really gets (the prange's num_threads clause
        # would override OpenMP's limit if the kernels ignored it)
        assert kernels.parallel_team_size(fs.get_num_threads()) == 1
        np.testing.assert_array_equal(fs.softmax(x), expected)
    assert fs.get_num_threads() == before
    if openmp() and before > 1:
        assert kernels.parallel_team_size(fs.get_num_threads()) == before
    if openmp():
        # the kernels' OpenMP runtime is one threadpoolctl sees and limits
        apis = {info["user_api"] for info in threadpoolctl.threadpool_info()}
        assert "openmp" in apis
        with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
            assert fs.get_num_threads() == 1
        assert fs.get_num_threads() == before
        # a limit above a set_num_threads value does not raise it
        fs.set_num_threads(1)
        with threadpoolctl.threadpool_limits(2):
            assert fs.get_num_threads() == 1


# docs/api.rst, section Threads:
# "Every kernel releases the GIL: Python threads may call it concurrently."
@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax], ids=FORWARD_IDS)
def test_concurrent_python_threads(func, rng):
    inputs = []
    for i in range(8):
        dtype = FLOAT_DTYPES[i % 2]
        inputs.append((rng.standard_normal((64, 517)) * (i + 1)).astype(dtype))  # parallel rows
        inputs.append(rng.standard_normal(70_000 + i).astype(dtype))  # one split row
        inputs.append(rng.standard_normal((3, 33)).astype(dtype))  # serial
    serial = [func(x) for x in inputs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            concurrent_results = list(pool.map(func, inputs))
            for got, want in zip(concurrent_results, serial):
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)
