"""pytest-benchmark suite: each kernel with its output at several offsets
from its input, modulo a page (fastsoftmax/_placement.py explains why).

Run with ``pytest benchmarks/test_placement.py --benchmark-only``.  Each
(op, dtype, shape) is one benchmark group whose members are the offsets, in
bytes, and the default call that allocates its output: a placement-proof
kernel shows the same time for all of them.  ``fastsoftmax bench
--placement`` prints the same comparison as a table of spreads.
"""

import pytest

from fastsoftmax._placement import OFFSETS, OPS, default_call, inputs_for, placed_call, shapes

CASES = [(op, shape) for op in OPS for shape in shapes(op)]


@pytest.mark.benchmark(min_rounds=5, max_time=0.5)
@pytest.mark.parametrize("offset", [*OFFSETS, "default"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op,shape", CASES,
                         ids=[f"{op}-{'x'.join(map(str, shape))}" for op, shape in CASES])
def test_placement(benchmark, op, shape, dtype, offset):
    a = inputs_for(op, shape, dtype)
    func = default_call(op, a) if offset == "default" else placed_call(op, a, offset)
    benchmark.group = f"placement-{op}-{dtype}-{shape}"
    func()  # warm-up: first-touch page faults, thread pool start
    benchmark(func)
