"""Shared inputs for the benchmarks.

Inputs are made once per (op, shape, dtype) and cached, so that every
implementation in a benchmark group times the same arrays and no time is
spent making them again.  pytest runs the implementations of one group one
after the other (``impl`` is the fastest-varying parameter), so a small
cache suffices and keeps memory low.
"""

import functools

import numpy as np
import pytest

import fastsoftmax as fs


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "ratio_check: the fast speed-ratio check CI runs (test_ratio_check.py)")


@functools.lru_cache(maxsize=4)
def make_inputs(op, shape, dtype):
    """The arguments of `op` on random data: a dict of arrays.

    x: logits; s: softmax(x); g: an upstream gradient; labels: class
    indices for the cross-entropy.  Only what `op` needs is made.
    """
    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    x = rng.standard_normal(shape, dtype=dtype)
    if op in ("softmax", "log_softmax"):
        return {"x": x}
    if op == "softmax_vjp":
        return {"s": fs.softmax(x), "g": rng.standard_normal(shape, dtype=dtype)}
    if op == "softmax_jacobian":
        return {"s": fs.softmax(x)}
    if op == "softmax_cross_entropy":
        return {"x": x, "labels": rng.integers(0, shape[-1], shape[:-1])}
    raise ValueError(f"unknown op {op!r}")


@pytest.fixture
def inputs():
    """make_inputs(op, shape, dtype), cached across tests."""
    return make_inputs


@pytest.fixture(scope="session")
def torch():
    """PyTorch on as many threads as fastsoftmax, or skip the test."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(fs.get_num_threads())
    return torch
