"""``fastsoftmax`` (or ``python -m fastsoftmax`` outside the source folder):
what this build is, whether it is right, how fast it is.

    python -m fastsoftmax                 # the demo (default): config, correctness,
                                          # gradient checks, a float32 speed table
    python -m fastsoftmax bench           # every op, float32 and float64, against
                                          # NumPy, SciPy, PyTorch (if installed) and
                                          # the memory floor; (1, 10) call overhead;
                                          # 1 thread vs all threads
    python -m fastsoftmax bench --plot DIR    # also DIR/throughput.png and
                                              # DIR/threads.png (needs matplotlib)
    python -m fastsoftmax bench --quick   # small shapes, few repeats: a smoke test
    python -m fastsoftmax bench --placement   # only: speed against where the output
                                              # lies relative to the input
    python -m fastsoftmax bench --peers   # only: softmax and log_softmax against
                                          # PyTorch, ONNX Runtime and JAX, each
                                          # library in a process of its own

The demo exits with status 1 if any correctness or gradient check fails.
The bench prints its tables on stdout and its progress on stderr, so that
``python -m fastsoftmax bench > bench.txt`` keeps the tables only.
For careful, saved benchmarks use ``pytest benchmarks/ --benchmark-only``.

The work is done elsewhere: the checks in ``_checks.py``, the bench in
``_bench.py`` (over the op table of ``_ops.py``, timed by ``_timing.py``),
the tables and plots in ``_report.py``, the placement table in
``_placement.py``, the peers comparison in ``_peers.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

import fastsoftmax as fs
from fastsoftmax._bench import FULL, QUICK, bench, op_cases, speed_table
from fastsoftmax._checks import ULP_LIMIT, correctness_rows, gradcheck_rows
from fastsoftmax._ops import available
from fastsoftmax._peers import peers_bench
from fastsoftmax._placement import placement_table
from fastsoftmax._report import print_table, pyplot
from fastsoftmax.testing import DEFAULT_RTOL

DEMO_SHAPES = [(4096, 1024), (256, 32000), (16384, 64), (64, 128)]


def demo() -> int:
    """Config, correctness and gradient checks, a softmax speed table;
    returns the exit status: 1 if a check failed."""
    fs.show_config()

    rows = correctness_rows()
    print_table(["function", "dtype", "shape", "axis", "max err (ulp)", "result"], rows,
                title=f"Correctness vs fastsoftmax.reference (exact: float64 for float32, "
                      f"long double for float64; limit {ULP_LIMIT} ulp)")
    failed = sum(row[-1] != "PASS" for row in rows)

    grad_rows = gradcheck_rows()
    print_table(["derivative", "max rel err", "result", "expected?"], grad_rows,
                title=f"Gradient check vs central finite differences (float64, "
                      f"pass: error <= {DEFAULT_RTOL:g})")
    failed += sum(row[-1] != "as expected" for row in grad_rows)

    threads = fs.get_num_threads()
    columns = available("softmax", ("fastsoftmax", "numpy", "scipy"))
    speed_ups = [(f"{c}/ours", c, "fastsoftmax") for c in columns[1:]]
    headers, rows = speed_table(op_cases("softmax", DEMO_SHAPES, np.float32, columns),
                                columns, speed_ups, repeat=7)
    print_table(headers, rows, title=f"softmax float32, median time per call "
                                     f"(fastsoftmax on {threads} thread(s))")
    if failed:
        print(f"\n{failed} check(s) FAILED")
        return 1
    print("\nAll checks passed.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="fastsoftmax",
        description="Show the build, check correctness and gradients, time the kernels.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="config, correctness, gradient checks, speed (default)")
    bench_parser = sub.add_parser(
        "bench", help="every op against NumPy, SciPy, PyTorch and the memory floor")
    bench_parser.add_argument("--repeat", type=int, default=None,
                              help=f"measurements per case, at most (default {FULL.repeat}; "
                                   f"{QUICK.repeat} with --quick)")
    bench_parser.add_argument("--quick", action="store_true",
                              help="small shapes, few repeats: a smoke test (seconds)")
    bench_parser.add_argument("--plot", metavar="DIR",
                              help="also write DIR/throughput.png and DIR/threads.png "
                                   "(needs matplotlib: pip install \".[plot]\")")
    bench_parser.add_argument("--placement", action="store_true",
                              help="only the placement table: each kernel with its output "
                                   "at several offsets from its input, 1 and all threads")
    bench_parser.add_argument("--peers", action="store_true",
                              help="only softmax and log_softmax against PyTorch, ONNX "
                                   "Runtime and JAX, each library timed in a process of "
                                   "its own, with its error in ulp")
    args = parser.parse_args(argv)
    if args.command == "bench":
        if args.plot is not None and pyplot() is None:
            parser.error("--plot needs matplotlib (pip install \".[plot]\")")
        if args.repeat is not None and args.repeat < 1:
            parser.error("--repeat must be at least 1")
        if args.peers and args.placement:
            parser.error("--peers and --placement are separate runs: give one")
        if args.plot is not None and (args.peers or args.placement):
            parser.error("--plot goes with the full bench, not with --peers or --placement")
        if args.peers:
            return peers_bench(args.quick, args.repeat)
        sizes = QUICK if args.quick else FULL
        if args.placement:
            threads = tuple(sorted({1, fs.get_num_threads()}))
            placement_table(threads, args.repeat or sizes.repeat, args.quick)
            return 0
        return bench(sizes, args.repeat, args.plot)
    return demo()


if __name__ == "__main__":
    sys.exit(main())
