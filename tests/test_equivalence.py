"""Every public function against its plain-NumPy reference evaluated in
higher precision (docs/api.rst, sections Forward, Derivatives, Fused loss,
Accuracy, Reference).

One grid runs every entry of the registry (_registry.FUNCTIONS): its
variants (input dtypes; for the loss also target kinds and reductions) x its
cases (0-d, empty, n = 1 and odd sizes, and every axis form it takes: ints
for all, tuples and None for the forward functions) x memory layouts
(_helpers.laid_out) x 1 and 2 threads, each result within the function's
error budget (derived in _registry.py).  A smaller grid runs on every SIMD
path the CPU supports.  The properties particular to one function are in
its own test file.
"""

import numpy as np
import pytest

from _helpers import laid_out
from _registry import FUNCTIONS


def _id(shape, axis):
    sid = "x".join(map(str, shape)) or "0d"
    aid = "None" if axis is None else str(axis).replace(" ", "")
    return f"{sid}-axis{aid}"


GRID = [pytest.param(name, variant, shape, axis, layout,
                     id=f"{name}-{variant}-{_id(shape, axis)}-{layout}")
        for name, f in FUNCTIONS.items() for variant in f.variants
        for shape, axis, layouts in f.cases for layout in layouts]

SIMD_GRID = [pytest.param(name, variant, shape, axis, id=f"{name}-{variant}-{_id(shape, axis)}")
             for name, f in FUNCTIONS.items() for variant in f.simd_variants
             for shape, axis in f.simd_cases]


def run_and_compare(name, variant, shape, axis, layout, rng):
    f = FUNCTIONS[name]
    spec = f.variants[variant]
    inputs = [laid_out(a, layout) for a in f.make_inputs(rng, shape, axis, spec)]
    before = [a.copy() for a in inputs]
    results = f.run(inputs, axis, spec)
    f.check(results, inputs, axis, spec)
    for a, b in zip(inputs, before):  # inputs are never written
        np.testing.assert_array_equal(a, b)


# docs/api.rst, section Forward: "exp(x - max) / sum(exp(x - max))" along
# axis; section Axes: an int, a tuple of ints or None for the forward
# functions, a single int for the others; section Dtypes: "Byte-swapped
# input is accepted"; section Derivatives: each function's formula (the
# reference's); section Fused loss: "Loss per row: -sum(target *
# log_softmax(logits))", (loss, dlogits) with return_grad=True.
@pytest.mark.parametrize("name, variant, shape, axis, layout", GRID)
def test_matches_reference(name, variant, shape, axis, layout, threads, rng):
    run_and_compare(name, variant, shape, axis, layout, rng)


# Layouts and threads are handled the same way on every path (the Python
# layer and the Cython row loops); what differs per path is the vectorised
# C, so the per-path grid sweeps row lengths and reductions, C order, one
# thread.
@pytest.mark.parametrize("name, variant, shape, axis", SIMD_GRID)
def test_every_simd_path_matches_reference(name, variant, shape, axis, simd_path, rng):
    run_and_compare(name, variant, shape, axis, "C", rng)
