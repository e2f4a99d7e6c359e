"""pytest-benchmark suite: every op, dtype and shape against the alternatives.

Run with ``pytest benchmarks/ --benchmark-only`` (see benchmarks/README.md).
Each (op, dtype, shape) is one benchmark group; its members are the
implementations side by side:

fastsoftmax  the compiled kernels (allocating the result, as users call them)
reference    fastsoftmax.reference, the plain NumPy ground truth
numpy        the expression a NumPy user would write
scipy        scipy.special.softmax / log_softmax (forward only)
torch        PyTorch on the same memory (torch.from_numpy), same thread count
floor        NumPy moving the same bytes into a preallocated array: reading
             the inputs, writing the output; nothing can be much faster (but
             it runs on one thread, so threaded kernels may beat it)

An implementation that does not exist for an op, or is not installed, is
skipped with the reason.
"""

import pytest

from fastsoftmax._ops import IMPLEMENTATIONS, OPS, implementation

FORWARD_SHAPES = [(4096, 1024), (256, 32000), (16384, 64), (64, 128), (1, 4_000_000),
                  (1, 10)]
VJP_SHAPES = [(4096, 1024), (256, 32000)]
JACOBIAN_SHAPES = [(256, 256), (64, 1024)]
CROSS_ENTROPY_SHAPES = [(4096, 1024)]

CASES = ([("softmax", s) for s in FORWARD_SHAPES]
         + [("log_softmax", s) for s in FORWARD_SHAPES]
         + [("logsumexp", s) for s in FORWARD_SHAPES]
         + [("softmax_where", s) for s in FORWARD_SHAPES]
         + [("softmax_vjp", s) for s in VJP_SHAPES]
         + [("softmax_jacobian", s) for s in JACOBIAN_SHAPES]
         + [("softmax_cross_entropy", s) for s in CROSS_ENTROPY_SHAPES]
         + [("softmax_cross_entropy_options", s) for s in CROSS_ENTROPY_SHAPES])

# The reference's Jacobian products build each row's n x n Jacobian: for
# these shapes that is 4096 matrices of 1024^2, or 256 of 32000^2 (8 GB each).
REFERENCE_VJP_MAX_WORK = 10**8  # rows * n * n


def _call(request, op, impl, a):
    """The implementation's zero-argument call (fastsoftmax._ops), or skip
    the test where it cannot run here, with the reason."""
    if impl == "reference" and op == "softmax_vjp":
        rows, n = a["s"].shape
        if rows * n * n > REFERENCE_VJP_MAX_WORK:
            pytest.skip("the reference forms every row's n x n Jacobian: far too slow here")
    if impl == "scipy":
        if not OPS[op].scipy:
            pytest.skip(f"scipy.special has no {op}")
        pytest.importorskip("scipy.special")
    torch = request.getfixturevalue("torch") if impl == "torch" else None
    return implementation(op, impl, a, torch)


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------

def _shape_id(shape):
    return "x".join(map(str, shape))


# impl is the first (fastest-varying) parameter: a group's members run one
# after the other, on the same cached inputs.
@pytest.mark.benchmark(min_rounds=5, max_time=0.5)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op,shape", CASES,
                         ids=[f"{op}-{_shape_id(shape)}" for op, shape in CASES])
def test_op(benchmark, request, inputs, op, shape, dtype, impl):
    func = _call(request, op, impl, inputs(op, shape, dtype))
    benchmark.group = f"{op}-{dtype}-{shape}"
    func()  # warm-up: thread pools, first-touch page faults, lazy imports
    benchmark(func)
