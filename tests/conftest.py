"""Shared fixtures: threads, SIMD paths, the high-precision oracle, ulp checks."""

import os
import sys

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _backend

# Only this folder (for _helpers.py), never the repository root: the tests
# must import the installed, compiled fastsoftmax, not the source folder.
sys.path.insert(0, os.path.dirname(__file__))

try:
    from hypothesis import settings

    # CI runs a bounded, reproducible search; `--hypothesis-profile=thorough`
    # runs a long one locally.
    settings.register_profile("ci", max_examples=60, derandomize=True, deadline=None)
    settings.register_profile("thorough", max_examples=5000, deadline=None)
    settings.load_profile("ci")
except ImportError:  # hypothesis is a test extra; its tests skip without it
    pass


def pytest_configure(config):
    # registered here, not in pyproject.toml, so the tests copied beside an
    # installed wheel know the mark too
    config.addinivalue_line(
        "markers", "large: one row of 10**7 elements (about 0.1 s each); "
                   "-m 'not large' skips them")


_DEFAULT_KERNELS = _backend.kernels


@pytest.fixture(autouse=True)
def kernels_restored():
    """Every test leaves the default kernel module in place: one left
    swapped would make later tests (and dask workers, which load the
    default) compute on another SIMD path without saying so."""
    yield
    assert _backend.kernels is _DEFAULT_KERNELS, \
        f"the test left _backend.kernels = {_backend.kernels!r}"


@pytest.fixture(params=_backend.supported_paths(), ids=lambda p: f"simd-{p}")
def simd_path(request):
    """Run the test on every SIMD kernel module this CPU supports."""
    with _backend.use(request.param):
        yield request.param


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    """1 thread, or 2 threads with the small-input thresholds lowered so that
    even the small test arrays take the parallel (and the split-row) paths."""
    modules = [_backend.load(p) for p in _backend.supported_paths()]
    fs.set_num_threads(request.param)
    if request.param > 1:
        for kernels in modules:
            kernels.set_thresholds(parallel_min=0, split_min=64)
    yield request.param
    for kernels in modules:
        kernels.set_thresholds()
    fs.set_num_threads(None)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
