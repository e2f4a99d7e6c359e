"""The op table of the benchmarks: every op timed, its inputs and its
implementations.

One table serves ``fastsoftmax bench``, the demo's speed table, the
pytest-benchmark suite (``benchmarks/test_bench_ops.py``) and the CI ratio
check (``benchmarks/test_ratio_check.py``), so that they all time the same
calls on the same inputs.

The implementations, by name (`IMPLEMENTATIONS`):

fastsoftmax  the compiled kernels, allocating the result as a normal call does
reference    fastsoftmax.reference, the plain NumPy ground truth
numpy        the NumPy expression a user would write (several passes, temporaries)
scipy        scipy.special (the forward ops only)
torch        PyTorch on the same memory (torch.from_numpy), where installed
floor        NumPy moving the bytes the op must move (read the inputs, write
             the output) into a preallocated array, on one thread

and, for softmax and log_softmax only, the peers timed in a process of their
own (`OWN_PROCESS`; see fastsoftmax._peers), where installed:

onnxruntime  one Softmax / LogSoftmax node (opset 13, axis -1), built with
             onnx.helper, run by an InferenceSession on fs.get_num_threads()
             intra-op threads
jax          jax.jit(jax.nn.softmax) / jax.nn.log_softmax on the CPU, the
             input put on the device once, the result waited for
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
from numpy.typing import DTypeLike, NDArray

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax._timing import Timed

# scipy is optional: it may be missing, or come without type stubs; the
# ignores on its imports allow for both.
try:
    import scipy  # type: ignore[import, unused-ignore]
    import scipy.special as sps  # type: ignore[import, unused-ignore]
except ImportError:  # its column is left out
    scipy = sps = None  # type: ignore[assignment, unused-ignore]

Shape = tuple[int, ...]
Inputs = dict[str, NDArray[Any]]   # an op's arguments by name (see make_inputs)
FloatType = Union[type[np.float32], type[np.float64]]

IMPLEMENTATIONS = ("fastsoftmax", "reference", "numpy", "scipy", "torch", "floor")

# Peers whose idle thread pools keep spinning after a call and take the cores
# from whatever else the process times: they run only in a process of their
# own (fastsoftmax._peers), never beside the IMPLEMENTATIONS.
OWN_PROCESS = ("onnxruntime", "jax")


# --------------------------------------------------------------------------
# The NumPy expressions a user would write.  (NumPy's type stubs give a
# reduction with keepdims=True the type Any, so these return Any.)
# --------------------------------------------------------------------------

def naive_softmax(x: NDArray[Any]) -> Any:
    """``exp(x - max) / sum(exp(x - max))`` along the last axis."""
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def naive_log_softmax(x: NDArray[Any]) -> Any:
    """``x - max - log(sum(exp(x - max)))`` along the last axis."""
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def naive_logsumexp(x: NDArray[Any]) -> Any:
    """``max + log(sum(exp(x - max)))`` along the last axis."""
    m = x.max(-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]


def minus_inf_copy_softmax(x: NDArray[Any], where: NDArray[Any]) -> Any:
    """A mask without where=: -inf written into a copy of x, then
    fastsoftmax's softmax (the copy and the pass that where= saves)."""
    return fs.softmax(np.where(where, x, x.dtype.type(-np.inf)))


def naive_softmax_vjp(s: NDArray[Any], g: NDArray[Any]) -> Any:
    """``s * (g - <s, g>)`` along the last axis."""
    return s * (g - (s * g).sum(-1, keepdims=True))


def naive_softmax_jacobian(s: NDArray[Any]) -> Any:
    """``diag(s) - s sᵀ`` for every row of a 2-d `s`, by broadcasting."""
    n = s.shape[-1]
    return s[:, :, None] * np.eye(n, dtype=s.dtype) - s[:, :, None] * s[:, None, :]


def naive_cross_entropy(x: NDArray[Any], labels: NDArray[Any]) -> tuple[Any, NDArray[Any]]:
    """Mean loss and its gradient ``(s - onehot) / rows``, for class indices."""
    rows = np.arange(len(x))
    shifted = x - x.max(-1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(-1)
    loss = np.mean(np.log(total) - shifted[rows, labels])
    grad = e / total[:, None]
    grad[rows, labels] -= 1
    grad /= len(x)
    return loss, grad


# the options of the "softmax_cross_entropy_options" op
LOSS_OPTIONS = {"ignore_index": -100, "label_smoothing": 0.1}


def naive_cross_entropy_options(x: NDArray[Any], labels: NDArray[Any],
                                weight: NDArray[Any]) -> tuple[Any, NDArray[Any]]:
    """Mean loss and gradient with class weights and label smoothing
    (LOSS_OPTIONS; no label is the ignored one), as PyTorch defines them."""
    rows, n, e = np.arange(len(x)), x.shape[-1], LOSS_OPTIONS["label_smoothing"]
    shifted = x - x.max(-1, keepdims=True)
    p = np.exp(shifted)
    total = p.sum(-1, keepdims=True)
    p /= total
    target = np.broadcast_to(e / n * weight, x.shape).copy()
    target[rows, labels] += (1 - e) * weight[labels]
    denominator = weight[labels].sum()
    loss = -(target * (shifted - np.log(total))).sum() / denominator
    return loss, (p * target.sum(-1, keepdims=True) - target) / denominator


# --------------------------------------------------------------------------
# PyTorch (on the same memory: torch.from_numpy, no copies) and the floor
# --------------------------------------------------------------------------

def _torch_forward(name: str) -> Callable[[Any, Inputs], Timed]:
    def make(torch: Any, a: Inputs) -> Timed:
        func, x = getattr(torch, name), torch.from_numpy(a["x"])
        return lambda: func(x, dim=-1)
    return make


def _torch_logsumexp(torch: Any, a: Inputs) -> Timed:
    x = torch.from_numpy(a["x"])
    return lambda: torch.logsumexp(x, dim=-1)


def _torch_masked_softmax(torch: Any, a: Inputs) -> Timed:
    # the usual way: masked_fill with -inf, then softmax
    x, drop = torch.from_numpy(a["x"]), torch.from_numpy(~a["where"])
    return lambda: torch.softmax(x.masked_fill(drop, -np.inf), dim=-1)


def _torch_vjp(torch: Any, a: Inputs) -> Timed:
    # softmax's own backward kernel:
    # _softmax_backward_data(grad_output, output, dim, input_dtype)
    s, g = torch.from_numpy(a["s"]), torch.from_numpy(a["g"])
    return lambda: torch._softmax_backward_data(g, s, -1, s.dtype)


def _torch_jacobian(torch: Any, a: Inputs) -> Timed:
    # at logits log(s), whose softmax is s
    jacobian = torch.func.vmap(torch.func.jacrev(lambda v: torch.softmax(v, -1)))
    logits = torch.from_numpy(np.log(a["s"]))
    return lambda: jacobian(logits)


def _torch_cross_entropy(torch: Any, a: Inputs) -> Timed:
    # forward and backward, as training runs it (with LOSS_OPTIONS and the
    # class weights if the inputs have them)
    x = torch.from_numpy(a["x"]).requires_grad_(True)
    labels = torch.from_numpy(a["labels"])
    cross_entropy = torch.nn.functional.cross_entropy
    options = {} if "weight" not in a else {"weight": torch.from_numpy(a["weight"]),
                                            **LOSS_OPTIONS}

    def forward_backward() -> tuple[Any, Any]:
        loss = cross_entropy(x, labels, **options)
        (grad,) = torch.autograd.grad(loss, x)
        return loss, grad
    return forward_backward


# --------------------------------------------------------------------------
# ONNX Runtime and JAX: each is given its module, set up by fastsoftmax._peers
# --------------------------------------------------------------------------

# The oldest ONNX IR version with opset 13, so that an onnxruntime older than
# the onnx package that builds the model still loads it.
_ONNX_IR_VERSION = 7


def _onnxruntime_forward(op_type: str) -> Callable[[Any, Inputs], Timed | None]:
    def make(ort: Any, a: Inputs) -> Timed | None:
        helper = importlib.import_module("onnx.helper")  # by name: untyped, as Any
        x = a["x"]
        elem = helper.np_dtype_to_tensor_dtype(x.dtype)
        graph = helper.make_graph(
            [helper.make_node(op_type, ["x"], ["y"], axis=-1)], op_type,
            [helper.make_tensor_value_info("x", elem, x.shape)],
            [helper.make_tensor_value_info("y", elem, x.shape)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  ir_version=_ONNX_IR_VERSION)
        options = ort.SessionOptions()
        options.intra_op_num_threads = fs.get_num_threads()  # as many as ours
        options.inter_op_num_threads = 1  # one node: nothing runs beside it
        try:
            session = ort.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
        except ort.capi.onnxruntime_pybind11_state.NotImplemented:
            return None  # no CPU kernel for this dtype
        run, feed = session.run, {"x": x}
        return lambda: run(["y"], feed)[0]
    return make


def _jax_forward(name: str) -> Callable[[Any, Inputs], Timed | None]:
    def make(jax: Any, a: Inputs) -> Timed | None:
        # on the device once, as a JAX program keeps its arrays
        x = jax.device_put(a["x"])
        if x.dtype != a["x"].dtype:
            return None  # float64 without jax_enable_x64 would be float32
        func = jax.jit(getattr(jax.nn, name))
        return lambda: func(x).block_until_ready()
    return make


def _floor_copy(a: Inputs) -> Timed:
    # forward and cross-entropy: read the logits, write as many values
    x = a["x"]
    out = np.empty_like(x)
    return lambda: np.copyto(out, x)


def _floor_reduce(a: Inputs) -> Timed:
    # a reduction reads the logits once and writes one value per row
    x = a["x"]
    out = np.empty(x.shape[:-1], x.dtype)
    return lambda: np.add.reduce(x, axis=-1, out=out)


def _floor_vjp(a: Inputs) -> Timed:
    # a copy reads one array; np.add reads both inputs and writes the output
    # once, as the vjp must, and is as memory-bound as a copy
    s, g = a["s"], a["g"]
    out = np.empty_like(s)
    return lambda: np.add(s, g, out=out)


def _floor_jacobian(a: Inputs) -> Timed:
    # read s, write rows * n * n values
    s = a["s"]
    out = np.empty(s.shape + s.shape[-1:], s.dtype)
    return lambda: np.copyto(out, s[:, :, None])


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    """One op as the benchmarks time it.

    Attributes
    ----------
    args : tuple of str
        Its inputs, in call order, by their names in `make_inputs`.
    naive : callable
        The NumPy expression a user would write, called with `args`.
    torch : callable
        ``torch(module, inputs) -> call``: PyTorch's way to compute it.
    floor : callable
        ``floor(inputs) -> call``: NumPy moving the bytes the op moves.
    scipy : bool
        Whether ``scipy.special`` has it (as ``scipy.special.<name>``).
    kwargs : mapping
        Keyword arguments of fastsoftmax's and the reference's call.
    note : str
        What the columns time, where the name does not say it (for titles).
    peers : mapping
        ``{name: make(module, inputs) -> call or None}`` for the `OWN_PROCESS`
        peers that have the op; None where they have no kernel for the
        inputs' dtype.
    function : str
        The function of fastsoftmax and of the reference that computes it
        (default: the op's own name).
    keywords : tuple of str
        Those of `args` that the function takes by keyword.
    """

    args: tuple[str, ...]
    naive: Callable[..., object]
    torch: Callable[[Any, Inputs], Timed]
    floor: Callable[[Inputs], Timed]
    scipy: bool = False
    kwargs: Mapping[str, object] = field(default_factory=dict)
    note: str = ""
    peers: Mapping[str, Callable[[Any, Inputs], Timed | None]] = field(default_factory=dict)
    function: str = ""
    keywords: tuple[str, ...] = ()


OPS: dict[str, Op] = {
    "softmax": Op(("x",), naive_softmax, _torch_forward("softmax"), _floor_copy, scipy=True,
                  peers={"onnxruntime": _onnxruntime_forward("Softmax"),
                         "jax": _jax_forward("softmax")}),
    "log_softmax": Op(("x",), naive_log_softmax, _torch_forward("log_softmax"), _floor_copy,
                      scipy=True, peers={"onnxruntime": _onnxruntime_forward("LogSoftmax"),
                                         "jax": _jax_forward("log_softmax")}),
    "logsumexp": Op(("x",), naive_logsumexp, _torch_logsumexp, _floor_reduce, scipy=True,
                    note="numpy: m + log(sum(exp(x - m))); torch: torch.logsumexp; "
                         "floor: np.add.reduce(x, axis=-1, out=...)"),
    "softmax_where": Op(
        ("x", "where"), minus_inf_copy_softmax, _torch_masked_softmax, _floor_copy,
        function="softmax", keywords=("where",),
        note="where= a (n,) mask, 3/4 True; numpy: fs.softmax(np.where(where, x, -inf)); "
             "torch: softmax(x.masked_fill(~where, -inf))"),
    "softmax_vjp": Op(
        ("s", "g"), naive_softmax_vjp, _torch_vjp, _floor_vjp,
        note="numpy: s * (g - (s * g).sum(-1)); torch: _softmax_backward_data; "
             "floor: np.add(s, g, out=dx)"),
    "softmax_jacobian": Op(
        ("s",), naive_softmax_jacobian, _torch_jacobian, _floor_jacobian,
        note="(rows, n) -> (rows, n, n); numpy: diag(s) - s s^T by broadcasting; "
             "torch: vmap(jacrev(softmax)); floor: np.copyto(J, s[:, :, None])"),
    "softmax_cross_entropy": Op(
        ("x", "labels"), naive_cross_entropy, _torch_cross_entropy, _floor_copy,
        kwargs={"return_grad": True},
        note="class indices, return_grad=True; torch: F.cross_entropy forward + autograd "
             "backward"),
    "softmax_cross_entropy_options": Op(
        ("x", "labels", "weight"), naive_cross_entropy_options, _torch_cross_entropy,
        _floor_copy, function="softmax_cross_entropy", keywords=("weight",),
        kwargs={"return_grad": True, **LOSS_OPTIONS},
        note="class indices, class weights, ignore_index=-100 (none ignored), "
             "label_smoothing=0.1, return_grad=True; torch: the same options"),
}

def make_inputs(op: str, shape: Shape, dtype: DTypeLike = np.float32, seed: int = 0) -> Inputs:
    """The inputs of `op` on random data.

    Parameters
    ----------
    op : str
        A key of `OPS`.
    shape : tuple of int
        The shape of the logits; 2-d for the Jacobian and the cross-entropy.
    dtype : float32 or float64
    seed : int

    Returns
    -------
    dict
        The arrays `op` takes, among x (logits), s = softmax(x), g (an
        upstream gradient), labels (class indices along the last axis),
        where (a mask of the last axis, about 3/4 True) and weight (class
        weights in [0.5, 1.5)).
    """
    float_type: FloatType = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=float_type)
    made: Inputs = {}
    for name in OPS[op].args:  # in this order: the draws from rng must not move
        if name == "x":
            made[name] = x
        elif name == "s":
            made[name] = fs.softmax(x)
        elif name == "g":
            made[name] = rng.standard_normal(shape, dtype=float_type)
        elif name == "where":
            made[name] = rng.random(shape[-1]) < 0.75
        elif name == "weight":
            made[name] = (0.5 + rng.random(shape[-1])).astype(float_type)
        else:
            made[name] = rng.integers(0, shape[-1], shape[:-1])
    return made


def scipy_version() -> str | None:
    """SciPy's version, or None where it is not installed."""
    return None if scipy is None else str(scipy.__version__)


def available(op: str, names: Iterable[str], torch: Any = None,
              peers: Mapping[str, Any] | None = None) -> list[str]:
    """Those of `names` that can run `op` here, in their order.

    SciPy needs the module and the op; PyTorch needs its module, `torch`;
    an `OWN_PROCESS` peer needs the op and its module in `peers`.
    """
    present = {"scipy": sps is not None and OPS[op].scipy, "torch": torch is not None}
    present.update((peer, peer in (peers or {}) and peer in OPS[op].peers)
                   for peer in OWN_PROCESS)
    return [name for name in names if present.get(name, True)]


def implementation(op: str, name: str, a: Inputs, torch: Any = None,
                   peers: Mapping[str, Any] | None = None) -> Timed | None:
    """A zero-argument call of `op` by implementation `name` on inputs `a`.

    Parameters
    ----------
    op : str
        A key of `OPS`.
    name : str
        One of `IMPLEMENTATIONS` or `OWN_PROCESS`.
    a : dict
        ``make_inputs(op, ...)``.
    torch : module, optional
        PyTorch, for ``name="torch"``.
    peers : mapping, optional
        ``{name: module}`` of the `OWN_PROCESS` peers, set up as
        ``fastsoftmax._peers.import_library`` does.

    Returns
    -------
    callable or None
        None where `name` cannot run `op` here (see `available`), or has no
        kernel for the inputs' dtype.
    """
    spec = OPS[op]
    args = tuple(a[arg] for arg in spec.args if arg not in spec.keywords)
    if name not in available(op, [name], torch, peers):
        return None
    if name in OWN_PROCESS:
        assert peers is not None  # available() checked it
        return spec.peers[name](peers[name], a)
    if name in ("fastsoftmax", "reference"):
        func = getattr(fs if name == "fastsoftmax" else ref, spec.function or op)
        kwargs = {**spec.kwargs, **{arg: a[arg] for arg in spec.keywords}}
        return lambda: func(*args, **kwargs)
    if name == "numpy":
        naive, every_arg = spec.naive, tuple(a[arg] for arg in spec.args)
        return lambda: naive(*every_arg)
    if name == "scipy":
        special, x = getattr(sps, op), a["x"]
        return lambda: special(x, axis=-1)
    if name == "torch":
        return spec.torch(torch, a)
    if name == "floor":
        return spec.floor(a)
    raise ValueError(f"unknown implementation {name!r}; expected one of "
                     f"{IMPLEMENTATIONS + OWN_PROCESS}")


def implementations(op: str, a: Inputs, names: Sequence[str],
                    torch: Any = None) -> dict[str, Timed]:
    """``{name: call}`` for those of `names` that can run `op` here."""
    calls = {name: implementation(op, name, a, torch) for name in names}
    return {name: call for name, call in calls.items() if call is not None}
