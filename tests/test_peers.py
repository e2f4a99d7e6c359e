"""The peers comparison's machinery (``fastsoftmax bench --peers``): the
worker protocol in a subprocess, and the table built from the answers.
No peer library is needed: the workers here run fastsoftmax and NumPy."""

import pytest

from fastsoftmax._checks import ULP_LIMIT
from fastsoftmax._peers import peer_table, run_worker

SPEC = {"threads": 1, "ops": ["softmax", "log_softmax"], "dtypes": ["float32", "float64"],
        "shapes": [[3, 7], [1, 10]], "repeat": 1, "target": None, "budget": None, "seed": 0}


@pytest.mark.parametrize("library", ["fastsoftmax", "numpy"])
def test_worker_round_trip(library):
    answer = run_worker({**SPEC, "library": library})
    assert answer["library"] == library and answer["missing"] is None
    got = {(c["op"], c["dtype"], tuple(c["shape"])) for c in answer["cases"]}
    assert got == {(op, dtype, tuple(shape)) for op in SPEC["ops"]
                   for dtype in SPEC["dtypes"] for shape in SPEC["shapes"]}
    for case in answer["cases"]:
        assert case["seconds"] > 0
        assert 0 <= case["ulp"] <= ULP_LIMIT, case


def test_failed_worker_is_reported_not_raised():
    answer = run_worker({**SPEC, "library": "no-such-library"})
    assert answer["missing"].startswith("worker failed") and answer["cases"] == []


def _case(seconds, ulp):
    return {"op": "softmax", "dtype": "float32", "shape": [2, 3], "seconds": seconds, "ulp": ulp}


def test_peer_table_names_the_fastest_peer():
    answers = [
        {"library": "fastsoftmax", "cases": [_case(1e-3, 0.5)]},
        {"library": "torch", "cases": [_case(4e-3, 2.0)]},
        {"library": "onnxruntime", "cases": [_case(None, None)]},  # no kernel
        {"library": "jax", "cases": [_case(2e-3, 1.0)]},
        {"library": "other", "cases": []},  # could not run
    ]
    headers, rows = peer_table("softmax", "float32", answers, [(2, 3)])
    row = dict(zip(headers, rows[0]))
    assert row["fastest peer"] == "jax" and row["ours/peer"] == "0.500x"
    assert row["onnxruntime ms"] == row["onnxruntime ulp"] == "n/a"
    assert row["other ms"] == row["other ulp"] == "-"
    assert row["fastsoftmax ms"] == "1.00" and row["torch ulp"] == "2.00"
