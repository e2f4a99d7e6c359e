"""``fastsoftmax bench --peers``: softmax and log_softmax against the other
CPU libraries, each library timed in a process of its own.

Why a process per library: ONNX Runtime's and XLA's thread pools keep
spinning for a while after each call, and OpenMP's (fastsoftmax's,
PyTorch's) may too.  In one process the idle pools of the libraries not
being timed take cores from the one that is; on two cores that halves
everyone's speed.  So the parent (`peers_bench`) runs, one after the other,
a worker per library::

    python -m fastsoftmax._peers --worker '{"library": "jax", ...}'

The worker (`worker`) restricts itself to as many cores as threads, sets
its library's thread count, times every case with `median_times` on the
inputs of `make_inputs` (same seed, so the same data in every worker), and
measures each result's largest error in ulp against the oracle there, so
that no large array crosses the pipe.  It writes one JSON object to
standard output; anything else the libraries print goes to standard error.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax._bench import FULL, QUICK, import_torch
from fastsoftmax._checks import exact_dtype, ulp_errors
from fastsoftmax._ops import IMPLEMENTATIONS, OWN_PROCESS, Shape, implementation, make_inputs
from fastsoftmax._report import number, print_table
from fastsoftmax._timing import median_times

# fastsoftmax first: the ratios are its time over the fastest peer's.
LIBRARIES = ("fastsoftmax", "torch", "onnxruntime", "jax")
PEERS = LIBRARIES[1:]
COMPARED_OPS = ("softmax", "log_softmax")
DTYPES = ("float32", "float64")

# Tiny rows (call overhead), rows of 10-128 (classifier heads, attention),
# 16-40 and 2000-5000 (odd lengths between the vector widths and the
# caches), vocabularies (32000, 50257) and one huge row.
SHAPES: tuple[Shape, ...] = (
    (1, 10), (64, 128), (8192, 10), (16384, 16), (8192, 37), (16384, 64), (6144, 128),
    (4096, 1024), (1024, 2000), (512, 5000), (256, 32000), (128, 50257), (1, 4_000_000))
QUICK_SHAPES: tuple[Shape, ...] = ((1, 10), (64, 128), (512, 37), (64, 2000))

SEED = 0


# --------------------------------------------------------------------------
# The worker: one library, in its own process
# --------------------------------------------------------------------------

def _restrict_cores(threads: int) -> None:
    """Run on the first `threads` of the cores this process may use.

    XLA has no thread-count setting: it sizes its pool by the cores the
    process may run on.  Every worker is restricted alike, so that all run
    on the same cores.  (Not on platforms without CPU affinity.)
    """
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if threads < len(cores):
            os.sched_setaffinity(0, cores[:threads])


def import_library(name: str, threads: int) -> tuple[Any, str]:
    """`name`'s module set up to run on `threads` threads, and its version.

    Returns
    -------
    module, str
        The module for `implementation` (None for those of fastsoftmax
        itself and NumPy), and the version with the thread setting; or
        None and the reason it cannot run (e.g. "not installed").
    """
    if name == "torch":
        torch = import_torch(threads)
        if torch is None:
            return None, "not installed"
        return torch, f"{torch.__version__} ({torch.get_num_threads()} thread(s))"
    if name == "onnxruntime":
        # imported by name, so that mypy does not analyse these large optional
        # peers: they are used untyped (Any), as PyTorch is
        try:
            ort = importlib.import_module("onnxruntime")
        except ImportError:
            return None, "not installed"
        try:  # onnx builds the one-node model
            onnx = importlib.import_module("onnx")
        except ImportError:
            return None, "needs onnx to build its model: not installed"
        return ort, (f"{ort.__version__}, onnx {onnx.__version__} "
                     f"({threads} intra-op thread(s))")
    if name == "jax":
        # before the import: no probing for accelerators
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        try:
            jax = importlib.import_module("jax")
        except ImportError:
            return None, "not installed"
        jax.config.update("jax_enable_x64", True)  # float64 stays float64
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count())
        return jax, f"{jax.__version__} (XLA pool sized by CPU affinity: {cores} core(s))"
    if name == "fastsoftmax":
        return None, f"{fs.__version__} ({threads} thread(s))"
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown library {name!r}: not one of {LIBRARIES} "
                         f"or of the op table's {IMPLEMENTATIONS}")
    return None, f"numpy {np.__version__}"  # the op table's NumPy implementations


def max_ulp(op: str, x: NDArray[Any], result: Any) -> float:
    """Largest error in ulp of `result`, `op` of `x`, against the oracle:
    the reference in float64 for float32 data, long double for float64."""
    exact = getattr(ref, op)(x.astype(exact_dtype(x.dtype)))
    return float(np.max(ulp_errors(np.asarray(result), exact, x.dtype)))


def worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Time and check one library on every case of `spec`.

    Parameters
    ----------
    spec : mapping
        ``library`` (a name of `LIBRARIES`, or of the op table's
        implementations), ``threads``, ``ops``, ``dtypes``, ``shapes``,
        ``repeat``, ``target``, ``budget`` (as for `median_times`), ``seed``.

    Returns
    -------
    dict
        ``library``, ``version``, ``missing`` (why it cannot run, or None)
        and ``cases``: per (op, dtype, shape) its ``seconds`` and ``ulp``,
        both None where the library has no kernel for the dtype.
    """
    name, threads = spec["library"], int(spec["threads"])
    _restrict_cores(threads)
    fs.set_num_threads(threads)  # also the onnxruntime sessions' thread count
    module, version = import_library(name, threads)
    out: dict[str, Any] = {"library": name, "version": version, "missing": None, "cases": []}
    if module is None and name in ("torch", *OWN_PROCESS):
        out["missing"] = version
        return out
    torch, peers = (module, None) if name == "torch" else (None, {name: module})
    for op in spec["ops"]:
        for dtype in spec["dtypes"]:
            for shape in map(tuple, spec["shapes"]):
                a = make_inputs(op, shape, dtype, spec["seed"])
                call = implementation(op, name, a, torch, peers)
                case: dict[str, Any] = {"op": op, "dtype": dtype, "shape": list(shape),
                                        "seconds": None, "ulp": None}
                if call is not None:
                    case["seconds"] = median_times([call], spec["repeat"], spec["target"],
                                                   spec["budget"])[0]
                    case["ulp"] = max_ulp(op, a["x"], call())
                out["cases"].append(case)
    return out


def _worker_main(argv: Sequence[str]) -> int:
    """``--worker SPEC``: print `worker`'s answer as JSON on standard output."""
    if len(argv) != 2 or argv[0] != "--worker":
        print("usage: python -m fastsoftmax._peers --worker SPEC_JSON", file=sys.stderr)
        return 2
    # Keep the real standard output for the answer; whatever else is written
    # there, by Python or by the libraries' C code, goes to standard error.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    json.dump(worker(json.loads(argv[1])), answer)
    answer.close()
    return 0


def run_worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    """`worker` on `spec` in a fresh Python process, with the same
    fastsoftmax as this one; a failed worker is reported as missing."""
    # run from the folder holding this fastsoftmax, which `-m` puts first on
    # the path: not a source checkout in the current folder
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fs.__file__)))
    done = subprocess.run([sys.executable, "-m", "fastsoftmax._peers", "--worker",
                           json.dumps(spec)],
                          cwd=package_parent, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return {"library": spec["library"], "version": "", "cases": [],
                "missing": f"worker failed with exit status {done.returncode}"}
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


# --------------------------------------------------------------------------
# The parent: a worker per library, one table per (op, dtype)
# --------------------------------------------------------------------------

def peer_table(op: str, dtype: str, answers: Sequence[Mapping[str, Any]],
               shapes: Sequence[Shape]) -> tuple[list[str], list[list[str]]]:
    """Per shape: each library's time and error, the fastest peer, and
    fastsoftmax's time over the fastest peer's.

    Returns
    -------
    headers, rows : lists of str
        Times in ms; "n/a" where a library has no kernel for `dtype`, "-"
        where it cannot run at all.
    """
    found = {(answer["library"], case["op"], case["dtype"], tuple(case["shape"])): case
             for answer in answers for case in answer["cases"]}
    names = [answer["library"] for answer in answers]
    peers = [name for name in names if name != "fastsoftmax"]
    headers = (["shape"] + [f"{name} ms" for name in names] + ["fastest peer", "ours/peer"]
               + [f"{name} ulp" for name in names])
    rows = []
    for shape in shapes:
        cases = {name: found.get((name, op, dtype, shape)) for name in names}
        seconds = {name: case["seconds"] for name, case in cases.items()
                   if case and case["seconds"] is not None}

        def cell(name: str, key: str, scale: float) -> str:
            case = cases[name]
            if case is None:
                return "-"
            return "n/a" if case[key] is None else number(case[key] * scale, 3)

        timed_peers = [name for name in peers if name in seconds]
        fastest = min(timed_peers, key=seconds.__getitem__) if timed_peers else None
        ours = seconds.get("fastsoftmax")
        ratio = ("-" if fastest is None or ours is None
                 else f"{number(ours / seconds[fastest], 3)}x")
        rows.append([str(shape)] + [cell(name, "seconds", 1e3) for name in names]
                    + [fastest or "-", ratio] + [cell(name, "ulp", 1) for name in names])
    return headers, rows


def peers_bench(quick: bool = False, repeat: int | None = None,
                threads: int | None = None) -> int:
    """The peers comparison: a worker per library, then a table per
    (op, dtype); returns the exit status, 0.

    Parameters
    ----------
    quick : bool
        A few small shapes and repeats: a smoke test.
    repeat : int, optional
        Measurements per case, at most.
    threads : int, optional
        Every library's thread count; default ``fs.get_num_threads()``.
    """
    sizes = QUICK if quick else FULL
    shapes = QUICK_SHAPES if quick else SHAPES
    threads = threads or fs.get_num_threads()
    spec = {"threads": threads, "ops": COMPARED_OPS, "dtypes": DTYPES, "shapes": shapes,
            "repeat": repeat or sizes.repeat, "target": sizes.target,
            "budget": sizes.budget, "seed": SEED}
    answers = []
    for name in LIBRARIES:
        print(f"timing {name} in a process of its own ...", file=sys.stderr, flush=True)
        answers.append(run_worker({**spec, "library": name}))
    if quick:
        print("QUICK RUN (--quick): small shapes, few repeats. A smoke test, not a measurement.\n")
    print(f"Every library in a process of its own, on {threads} thread(s) and as many cores, "
          f"on the same inputs (seed {SEED}):")
    for answer in answers:
        print(f"  {answer['library']}: {answer['missing'] or answer['version']}")
    print("""Median ms per call; ulp: the largest error against the oracle (the reference
in float64 for float32 data, in long double for float64), ulp_errors' unit.
ours/peer = fastsoftmax time / the fastest peer's: below 1x fastsoftmax is faster.
n/a: the library has no kernel for the dtype; -: it cannot run here.""")
    for op in COMPARED_OPS:
        for dtype in DTYPES:
            headers, rows = peer_table(op, dtype, answers, shapes)
            print_table(headers, rows, title=f"{op} {dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
