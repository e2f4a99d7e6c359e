"""Shared inputs for the benchmarks.

Inputs are made once per (op, shape, dtype) and cached, so that every
implementation in a benchmark group times the same arrays and no time is
spent making them again.  pytest runs the implementations of one group one
after the other (``impl`` is the fastest-varying parameter), so a small
cache suffices and keeps memory low.
"""

import functools

import pytest

import fastsoftmax as fs
from fastsoftmax._ops import make_inputs


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "ratio_check: the fast speed-ratio check CI runs (test_ratio_check.py)")


@pytest.fixture
def inputs():
    """make_inputs(op, shape, dtype) of fastsoftmax._ops, cached across tests."""
    return _cached_inputs


_cached_inputs = functools.lru_cache(maxsize=4)(make_inputs)


@pytest.fixture(scope="session")
def torch():
    """PyTorch on as many threads as fastsoftmax, or skip the test."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(fs.get_num_threads())
    return torch
