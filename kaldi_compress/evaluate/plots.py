"""Error rate against model size, with the Pareto front of the compressed systems.

Systems of one series (a method at several ratios, say) are joined by a line in size
order; the others are single points.  A system is on the Pareto front when no other
system has at most as many parameters and a strictly lower error (or fewer parameters
and the same error): for each error level it is the smallest model reaching it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import KaldiCompressError


@dataclass(frozen=True)
class Point:
    """One system: its size and how well it recognises."""
    name: str
    num_parameters: int
    error: float                 # WER or CER, percent
    size_bytes: int | None = None
    rtf: float | None = None     # decoding time / audio duration
    series: str = ""             # joined by a line with the points of the same series


AXES = {"parameters": ("parameters (millions)", lambda p: p.num_parameters),
        "bytes": ("file size (MB)", lambda p: p.size_bytes)}


def pareto_front(points: Sequence[Point], x: str = "parameters") -> list[Point]:
    """The non-dominated points, by increasing ``x`` (parameters or file bytes) and
    decreasing error."""
    size = AXES[x][1]
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (size(p), p.error)):
        if not front or p.error < front[-1].error:
            front.append(p)
    return front


def series_lines(points: Sequence[Point], x: str = "parameters") -> dict[str, list[Point]]:
    """Each named series' points by increasing ``x``, series in order of first appearance."""
    size = AXES[x][1]
    out: dict[str, list[Point]] = {}
    for p in points:
        if p.series:
            out.setdefault(p.series, []).append(p)
    return {k: sorted(v, key=size) for k, v in out.items()}


def wer_vs_params_plot(points: Sequence[Point], out_png: str | Path,
                       metric: str = "WER", x: str = "parameters") -> Path:
    """Write a PNG: error (%) against parameters (millions) or, ``x="bytes"``, file size
    (MB), each series joined by a line (dashed if its name says "distill"), the Pareto
    front marked; single points are named."""
    if not points:
        raise KaldiCompressError(f"{out_png}: no systems to plot")
    if x not in AXES or (x == "bytes" and any(p.size_bytes is None for p in points)):
        raise KaldiCompressError(f"{out_png}: cannot plot against {x!r}: every system needs "
                                 f"one of {', '.join(AXES)} (file sizes known)")
    label, size = AXES[x]
    try:
        from matplotlib.figure import Figure   # renders with Agg; no pyplot, no global state
    except ImportError:
        raise KaldiCompressError("plotting needs matplotlib (pip install matplotlib)") from None

    front = pareto_front(points, x)
    lines = series_lines(points, x)
    single = [p for p in points if not p.series]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    colors: dict[str, str] = {}
    for name, pts in lines.items():
        family = name.split(" ")[0]
        color = colors.setdefault(family, f"C{len(colors)}")
        ax.plot([size(p) / 1e6 for p in pts], [p.error for p in pts], marker="o",
                color=color, linestyle="--" if "distill" in name else "-", label=name,
                zorder=2)
    if single:
        ax.scatter([size(p) / 1e6 for p in single], [p.error for p in single],
                   color="tab:gray", label="systems", zorder=2)
    ax.step([size(p) / 1e6 for p in front], [p.error for p in front],
            where="post", color="tab:red", alpha=0.35, linewidth=6, label="Pareto front",
            zorder=1)
    for p in single:
        ax.annotate(p.name, (size(p) / 1e6, p.error), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(label)
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out_png)
    try:
        fig.savefig(out, format="png", dpi=120)
    except OSError as e:
        raise KaldiCompressError(f"{out_png}: cannot write: {e.strerror or e}") from None
    return out
