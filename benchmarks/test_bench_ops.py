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

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax.__main__ import NAIVE

FORWARD_SHAPES = [(4096, 1024), (256, 32000), (16384, 64), (64, 128), (1, 4_000_000),
                  (1, 10)]
VJP_SHAPES = [(4096, 1024), (256, 32000)]
JACOBIAN_SHAPES = [(256, 256), (64, 1024)]
CROSS_ENTROPY_SHAPES = [(4096, 1024)]

CASES = ([("softmax", s) for s in FORWARD_SHAPES]
         + [("log_softmax", s) for s in FORWARD_SHAPES]
         + [("softmax_vjp", s) for s in VJP_SHAPES]
         + [("softmax_jacobian", s) for s in JACOBIAN_SHAPES]
         + [("softmax_cross_entropy", s) for s in CROSS_ENTROPY_SHAPES])

IMPLEMENTATIONS = ["fastsoftmax", "reference", "numpy", "scipy", "torch", "floor"]

# The reference's Jacobian products build each row's n x n Jacobian: for
# these shapes that is 4096 matrices of 1024^2, or 256 of 32000^2 (8 GB each).
REFERENCE_VJP_MAX_WORK = 10**8  # rows * n * n


# --------------------------------------------------------------------------
# One zero-argument callable per (op, implementation)
# --------------------------------------------------------------------------

def _fastsoftmax(op, a):
    if op == "softmax":
        return lambda: fs.softmax(a["x"])
    if op == "log_softmax":
        return lambda: fs.log_softmax(a["x"])
    if op == "softmax_vjp":
        return lambda: fs.softmax_vjp(a["s"], a["g"])
    if op == "softmax_jacobian":
        return lambda: fs.softmax_jacobian(a["s"])
    return lambda: fs.softmax_cross_entropy(a["x"], a["labels"], return_grad=True)


def _reference(op, a):
    if op == "softmax":
        return lambda: ref.softmax(a["x"])
    if op == "log_softmax":
        return lambda: ref.log_softmax(a["x"])
    if op == "softmax_vjp":
        rows, n = a["s"].shape
        if rows * n * n > REFERENCE_VJP_MAX_WORK:
            pytest.skip("the reference forms every row's n x n Jacobian: far too slow here")
        return lambda: ref.softmax_vjp(a["s"], a["g"])
    if op == "softmax_jacobian":
        return lambda: ref.softmax_jacobian(a["s"])
    return lambda: ref.softmax_cross_entropy(a["x"], a["labels"], return_grad=True)


def _numpy(op, a):
    # The NumPy expressions a user would write (shared with the main job's
    # tables); the Jacobian's is diag(s) - s sᵀ by broadcasting.
    naive = NAIVE[op]
    if op in ("softmax", "log_softmax"):
        return lambda: naive(a["x"])
    if op == "softmax_vjp":
        return lambda: naive(a["s"], a["g"])
    if op == "softmax_jacobian":
        return lambda: naive(a["s"])
    return lambda: naive(a["x"], a["labels"])


def _scipy(op, a):
    if op not in ("softmax", "log_softmax"):
        pytest.skip(f"scipy.special has no {op}")
    special = pytest.importorskip("scipy.special")
    func = getattr(special, op)
    return lambda: func(a["x"], axis=-1)


def _torch(op, a, torch):
    if op in ("softmax", "log_softmax"):
        func, x = getattr(torch, op), torch.from_numpy(a["x"])
        return lambda: func(x, dim=-1)
    if op == "softmax_vjp":  # softmax's own backward kernel
        s, g = torch.from_numpy(a["s"]), torch.from_numpy(a["g"])
        return lambda: torch._softmax_backward_data(g, s, -1, s.dtype)
    if op == "softmax_jacobian":
        # The Jacobian of softmax at logits log(s), whose softmax is s.
        jacobian = torch.func.vmap(torch.func.jacrev(lambda row: torch.softmax(row, -1)))
        logits = torch.from_numpy(np.log(a["s"]))
        return lambda: jacobian(logits)
    # cross-entropy: forward and backward, as training runs it
    x = torch.from_numpy(a["x"]).requires_grad_(True)
    labels = torch.from_numpy(a["labels"])
    F = torch.nn.functional

    def cross_entropy():
        loss = F.cross_entropy(x, labels)
        (grad,) = torch.autograd.grad(loss, x)
        return loss, grad
    return cross_entropy


def _floor(op, a):
    if op == "softmax_vjp":
        # A copy reads one array; np.add reads both inputs and writes the
        # output once, as the vjp must, and is as memory-bound as a copy.
        s, g = a["s"], a["g"]
        out = np.empty_like(s)
        return lambda: np.add(s, g, out=out)
    if op == "softmax_jacobian":  # read s, write rows * n * n
        s = a["s"]
        out = np.empty(s.shape + s.shape[-1:], s.dtype)
        return lambda: np.copyto(out, s[:, :, None])
    x = a["x"]  # forward and cross-entropy: read the logits, write as many values
    out = np.empty_like(x)
    return lambda: np.copyto(out, x)


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
    a = inputs(op, shape, dtype)
    if impl == "torch":
        func = _torch(op, a, request.getfixturevalue("torch"))
    else:
        func = {"fastsoftmax": _fastsoftmax, "reference": _reference, "numpy": _numpy,
                "scipy": _scipy, "floor": _floor}[impl](op, a)
    benchmark.group = f"{op}-{dtype}-{shape}"
    func()  # warm-up: thread pools, first-touch page faults, lazy imports
    benchmark(func)
