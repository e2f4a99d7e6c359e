"""Reports of the command line and the benchmark scripts: plain-text tables,
numbers, line plots."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *,
                 widths: Sequence[int] | None = None, align: str | None = None,
                 sep: str = "  ", rule: str | None = "columns") -> list[str]:
    """The lines of an aligned plain-text table.

    Parameters
    ----------
    headers : sequence of str
    rows : sequence of sequences of str
    widths : sequence of int, optional
        Each column's width (a longer cell overflows it); by default its
        widest cell.
    align : str, optional
        One character per column: ``"<"`` left, ``">"`` right.  By default
        numbers (and "-", "nan", "inf") right, text left, cell by cell.
    sep : str
        Between columns.
    rule : {"columns", "line", None}
        Under the headers: a rule per column, one across the whole header
        line, or none.

    Returns
    -------
    list of str
        The header line, the rule (if any), a line per row; no trailing
        spaces.
    """
    if widths is None:
        widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

    def numeric(cell: str) -> bool:
        return cell[:1].isdigit() or cell[:1] in "-." or cell in ("nan", "inf")

    def line(cells: Sequence[str]) -> str:
        sides = align or ["" for _ in cells]
        return sep.join(cell.rjust(width) if side == ">" or (not side and numeric(cell))
                        else cell.ljust(width)
                        for cell, width, side in zip(cells, widths, sides)).rstrip()

    head = line(headers)
    rules = {"columns": [sep.join("-" * width for width in widths)], "line": ["-" * len(head)],
             None: []}[rule]
    return [head, *rules, *(line(row) for row in rows)]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                title: str | None = None) -> None:
    """Print an aligned table (see `format_table`) after a blank line and
    its title, then flush: the tables of a long run show as they come."""
    if title:
        print(f"\n{title}")
    print("\n".join(format_table(headers, rows)))
    sys.stdout.flush()


def number(value: float, digits: int = 4) -> str:
    """`digits` significant digits (more left of the point), no exponent."""
    if not math.isfinite(value) or value <= 0:
        return f"{value:g}"
    decimals = min(6, max(0, digits - 1 - math.floor(math.log10(value))))
    return f"{value:.{decimals}f}"


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as "0.153x", or "-" where either is missing."""
    return "-" if a is None or b is None else f"{number(a / b, digits=3)}x"


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or None where
    matplotlib is not installed (it is optional)."""
    try:
        import matplotlib  # type: ignore[import, unused-ignore]
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import, unused-ignore]
    return plt


def line_plot(path: str, x: Sequence[float], series: Mapping[str, Sequence[float]], *,
              title: str, xlabel: str, ylabel: str, labels: Mapping[str, str] | None = None,
              dashed: str = "floor", logx: bool = False, ideal: bool = False) -> None:
    """Write a line plot to `path`: one line per series.

    Parameters
    ----------
    path : str
    x : sequence of float
    series : mapping
        ``{name: y values}``.
    title, xlabel, ylabel : str
    labels : mapping, optional
        Legend text per series name (default: the name).
    dashed : str
        The series drawn dashed (a bound rather than a contender).
    logx : bool
        A base-2 logarithmic x axis.
    ideal : bool
        Also draw ``y = x``, dotted.
    """
    plt = pyplot()
    labels = labels or {}
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, ys in series.items():
        ax.plot(x, ys, marker="o", label=labels.get(name, name),
                linestyle="--" if name == dashed else "-")
    if ideal:
        ax.plot(x, x, color="gray", linestyle=":", label="ideal (linear)")
    if logx:
        ax.set_xscale("log", base=2)
    else:
        ax.set_xticks(x)
    ax.set_ylim(bottom=0)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
