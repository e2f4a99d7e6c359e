"""Type annotations: the package passes ``mypy --strict``, and so does user code.

mypy comes with the test extra; without it these tests skip, unless
FASTSOFTMAX_EXPECT_MYPY=1 is set, which makes a missing mypy a failure (CI
sets it, so that the check cannot silently stop running).

mypy checks the package that ``import fastsoftmax`` found (the installed
one in CI), together with tests/typing_usage.py, user code whose
``assert_type`` calls pin the types the public functions promise.
"""

import importlib.util
import inspect
import os
import re
import shutil
from pathlib import Path

import pytest

import fastsoftmax
from fastsoftmax import _backend

PACKAGE_DIR = Path(fastsoftmax.__file__).resolve().parent
USAGE_FILE = Path(__file__).resolve().parent / "typing_usage.py"

# The modules checked, listed so that a new module joins the check on
# purpose.  The modules they import (such as the generated _build_config.py)
# are checked as well.
MODULES = ["__init__.py", "__main__.py", "_api.py", "_backend.py", "reference.py", "testing.py",
           "nn.py", "_bench.py", "_checks.py", "_ops.py", "_placement.py", "_report.py",
           "_timing.py", "_peers.py"]
if importlib.util.find_spec("dask") is not None:  # an optional dependency
    MODULES.append("dask.py")

# strict, plus: PyTorch (an optional column of the bench, used untyped there)
# is not analysed, which saves about 10 s when it is installed.
MYPY_CONFIG = """\
[mypy]
strict = True
show_absolute_path = True
cache_dir = {cache_dir}

[mypy-torch.*]
follow_imports = skip
"""


def _mypy_api():
    try:
        from mypy import api
    except ImportError:
        if os.environ.get("FASTSOFTMAX_EXPECT_MYPY") == "1":
            pytest.fail("FASTSOFTMAX_EXPECT_MYPY=1, but mypy is not installed")
        pytest.skip("mypy is not installed (FASTSOFTMAX_EXPECT_MYPY=1 makes this a failure)")
    return api


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory):
    """{path: [error lines]} from one mypy --strict run over the package
    modules and the usage file (one run: loading NumPy's stubs is most of
    the time).  A fresh cache: a stale one can hide errors."""
    api = _mypy_api()
    folder = tmp_path_factory.mktemp("mypy")
    config = folder / "mypy.ini"
    config.write_text(MYPY_CONFIG.format(cache_dir=folder / "cache"))
    # A copy of the package's Python files: given files inside site-packages,
    # mypy would take site-packages itself for a source folder, and its other
    # modules (typing_extensions) for user modules shadowing the library.
    package = folder / "src" / "fastsoftmax"
    package.mkdir(parents=True)
    for source in [*PACKAGE_DIR.glob("*.py"), PACKAGE_DIR / "py.typed"]:
        shutil.copy(source, package)
    files = [str(package / name) for name in MODULES] + [str(USAGE_FILE)]
    stdout, stderr, status = api.run(["--config-file", str(config), *files])
    # 0: no errors, 1: errors (listed in stdout); anything else is a crash
    # or a bad command line.
    assert status in (0, 1) and not stderr, f"mypy failed to run ({status}):\n{stderr}{stdout}"
    errors = {}
    for line in stdout.splitlines():
        match = re.match(r"(.+?):\d+:(\d+:)? error:", line)
        if match:
            errors.setdefault(Path(match[1]).resolve(), []).append(line)
    assert bool(errors) == (status == 1), stdout
    return errors


def test_package_passes_mypy_strict(mypy_errors):
    found = [line for path, lines in mypy_errors.items() if path != USAGE_FILE
             for line in lines]
    assert not found, "mypy --strict errors in the package:\n" + "\n".join(found)


def test_usage_passes_mypy_strict(mypy_errors):
    """The asserted types hold, and each expected error is reported."""
    found = mypy_errors.get(USAGE_FILE, [])
    assert not found, "mypy --strict errors in typing_usage.py:\n" + "\n".join(found)


def test_usage_runs():
    """The usage file is real code: its run-time checks pass too."""
    pytest.importorskip("typing_extensions")  # for assert_type; mypy depends on it
    import typing_usage

    try:
        typing_usage.main()
    finally:
        fastsoftmax.set_num_threads(None)


def test_package_is_marked_typed():
    """PEP 561: without py.typed, mypy ignores the package's annotations
    (and reports it as untyped) in user code."""
    assert (PACKAGE_DIR / "py.typed").is_file(), f"no py.typed in {PACKAGE_DIR}"


def _protocol_members():
    protocol = _backend.KernelModule
    functions = {name: value for name, value in vars(protocol).items()
                 if not name.startswith("_") and inspect.isfunction(value)}
    attributes = set(protocol.__annotations__) - {"__file__"}
    return functions, attributes


@pytest.mark.parametrize("path", _backend.supported_paths())
def test_kernel_protocol_matches_the_compiled_modules(path):
    """The type checker cannot see the compiled modules; KernelModule
    describes them.  Here it is compared with each module: the same public
    names, the same parameters (names, order, which have defaults)."""
    module = _backend.load(path)
    functions, attributes = _protocol_members()
    public = {name for name in dir(module) if not name.startswith("_")}
    assert public == set(functions) | attributes
    for name in attributes:
        assert isinstance(getattr(module, name), int), name
    for name, declared in functions.items():
        expected = list(inspect.signature(declared).parameters.values())[1:]  # no self
        actual = list(inspect.signature(getattr(module, name)).parameters.values())
        assert [(p.name, p.kind, p.default is p.empty) for p in actual] == \
               [(p.name, p.kind, p.default is p.empty) for p in expected], name
