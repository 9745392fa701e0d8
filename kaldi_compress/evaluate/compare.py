"""Compare Kaldi model directories as ``local/chain/compare_wer.sh`` (egs/wsj/s5) does.

For each system directory and each of the eight WSJ decodes (dev93/eval92 x tgpr, tg,
bd_tgpr, bd_tgpr + fg rescoring) the WER is read from ``decode_X/scoring_kaldi/best_wer``
(one ``%WER ... <path>/wer_<LMWT>_<WIP>`` line, as utils/best_wer.sh prints it); without
that file, the lowest ``%WER`` among ``decode_X/wer_<LMWT>_<WIP>`` (compute-wer's output)
is taken, first in scoring order on ties, as best_wer.sh does.

The other rows:

* ``# Num-params``: ``num_parameters`` of ``DIR/final.mdl`` read with kaldi-compress, or
  else the ``num-parameters`` line of ``DIR/log/progress.1.log`` (what compare_wer.sh uses);
* ``# Model size (bytes)``: the size of ``DIR/final.mdl``;
* ``#RTF <decode>``: the real-time factor of a first-pass decode, from the
  ``Time taken Es: real-time factor ... is R`` lines that nnet3-latgen-faster writes to
  ``decode_X/log/decode.<job>.log``.  Over the jobs it is ``sum(E) / sum(E / R)``, the
  decoding time divided by the audio duration (Kaldi assumes 100 frames per second).

A row no system has data for is left out; a missing value is an empty cell.  A WER
marked ``*`` is ``[PARTIAL]``: some utterances had no hypothesis (compute-wer
--mode=present leaves them out), so it is not comparable with a complete score.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import KaldiCompressError
from ..nnet3 import read_model
from .plots import Point

# (row label, decode directory) in compare_wer.sh's order.
WSJ_DECODES: tuple[tuple[str, str], ...] = tuple(
    (f"#WER {test} ({label})", f"decode_{name}")
    for test in ("dev93", "eval92")
    for label, name in (("tgpr", f"tgpr_{test}"), ("tg", f"tg_{test}"),
                        ("big-dict,tgpr", f"bd_tgpr_{test}"),
                        ("big-dict,fg", f"bd_tgpr_{test}_fg")))

FORMATS = ("plain", "markdown", "csv", "json")

_WER_LINE = re.compile(
    r"%WER\s+(?P<wer>[-+\w.]+)\s+\[\s*(?P<errors>\d+)\s*/\s*(?P<n_ref>\d+)\s*,\s*"
    r"(?P<ins>\d+)\s+ins\s*,\s*(?P<dels>\d+)\s+del\s*,\s*(?P<subs>\d+)\s+sub\s*\]"
    r"(?P<partial>\s*\[PARTIAL\])?\s*(?P<rest>.*)$")
_WER_FILE = re.compile(r"wer_(?P<lmwt>\d+)_(?P<wip>\d+(?:\.\d+)?)$")
_RTF_LINE = re.compile(r"Time taken (?P<elapsed>\S+)s: real-time factor assuming 100 "
                       r"(?:feature )?frames/sec is (?P<rtf>\S+)")
_NUM_PARAMS = re.compile(r"num-parameters:?\s+(\d+)")
_WER_EXPECTED = "'%WER x.xx [ errors / words, I ins, D del, S sub ]'"


@dataclass(frozen=True)
class WerResult:
    """One ``%WER`` line: compute-wer's counts and the scoring file it came from."""
    wer: float               # percent; Kaldi prints it with two decimals
    errors: int
    n_ref: int
    ins: int
    dels: int
    subs: int
    partial: bool            # some utterances had no hypothesis
    source: str              # the wer_<LMWT>_<WIP> file
    lmwt: int | None
    wip: float | None


def parse_wer_line(line: str, path: str | Path) -> WerResult:
    """Parse ``%WER 6.68 [ 550 / 8234, 64 ins, 87 del, 399 sub ] [PARTIAL] <file>``.

    The trailing file (best_wer.sh appends it) is optional; ``path`` names the file the
    line came from, for errors and as the source when the line names none.
    """
    m = _WER_LINE.match(line.strip())
    if m is None:
        raise KaldiCompressError(f"{path}: expected {_WER_EXPECTED}, got {line.strip()!r}")
    try:
        wer = float(m["wer"])
    except ValueError:
        raise KaldiCompressError(f"{path}: {m['wer']!r} is not a WER percentage") from None
    source = m["rest"] or str(path)
    f = _WER_FILE.search(source)
    return WerResult(wer, int(m["errors"]), int(m["n_ref"]), int(m["ins"]),
                     int(m["dels"]), int(m["subs"]), bool(m["partial"]), source,
                     int(f["lmwt"]) if f else None, float(f["wip"]) if f else None)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise KaldiCompressError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise KaldiCompressError(f"{path}: expected UTF-8 text") from None


def read_best_wer(path: Path) -> WerResult:
    """``scoring_kaldi/best_wer``: exactly one ``%WER`` line naming the best wer_* file."""
    lines = [ln for ln in _read_text(path).splitlines() if ln.strip()]
    if len(lines) != 1:
        raise KaldiCompressError(f"{path}: expected one {_WER_EXPECTED} line as "
                                 f"utils/best_wer.sh prints, got {len(lines)} lines")
    return parse_wer_line(lines[0], path)


def read_wer_file(path: Path) -> WerResult:
    """A ``wer_<LMWT>_<WIP>`` file: compute-wer's command line, then its ``%WER`` line."""
    for line in _read_text(path).splitlines():
        if line.startswith("%WER"):
            return parse_wer_line(line, path)
    raise KaldiCompressError(f"{path}: no {_WER_EXPECTED} line (compute-wer's output)")


def best_of_wer_files(decode_dir: Path) -> WerResult | None:
    """The lowest WER among ``decode_dir/wer_<LMWT>_<WIP>``, earliest (WIP, LMWT) on ties."""
    files = [(float(m["wip"]), int(m["lmwt"]), p) for p in decode_dir.glob("wer_*")
             if (m := _WER_FILE.fullmatch(p.name))]
    best = None
    for _, _, p in sorted(files):
        r = read_wer_file(p)
        if best is None or r.wer < best.wer:
            best = r
    return best


def decode_wer(decode_dir: Path) -> WerResult | None:
    """A decode directory's best WER (None when it has not been scored)."""
    best_wer = decode_dir / "scoring_kaldi" / "best_wer"
    if best_wer.is_file():
        return read_best_wer(best_wer)
    return best_of_wer_files(decode_dir) if decode_dir.is_dir() else None


def decode_rtf(decode_dir: Path) -> float | None:
    """Real-time factor of all jobs of a decode, from nnet3-latgen-faster's logs."""
    elapsed = audio = 0.0
    for log in sorted(decode_dir.glob("log/decode.*.log")):
        for m in _RTF_LINE.finditer(_read_text(log)):
            try:
                e, r = float(m["elapsed"]), float(m["rtf"])
            except ValueError:
                raise KaldiCompressError(f"{log}: expected numbers in {m[0]!r}") from None
            if e > 0 and r > 0:
                elapsed, audio = elapsed + e, audio + e / r
    return elapsed / audio if audio > 0 else None


def num_parameters(system_dir: Path) -> int | None:
    """Parameters of ``final.mdl``, else the ``num-parameters`` of ``log/progress.1.log``."""
    mdl = system_dir / "final.mdl"
    if mdl.is_file():
        return read_model(str(mdl)).nnet.num_parameters
    progress = system_dir / "log" / "progress.1.log"
    if progress.is_file():
        m = _NUM_PARAMS.search(_read_text(progress))
        return int(m[1]) if m else None
    return None


@dataclass
class System:
    """What compare reads from one model directory."""
    name: str
    path: str
    num_parameters: int | None
    size_bytes: int | None
    wer: dict[str, WerResult] = field(default_factory=dict)    # decode dir name -> WER
    rtf: dict[str, float] = field(default_factory=dict)        # decode dir name -> RTF


def read_system(path: str | Path) -> System:
    """Read a Kaldi model directory (e.g. exp/chain/tdnn1i_sp)."""
    d = Path(path)
    if not d.is_dir():
        raise KaldiCompressError(f"{path}: no such model directory")
    mdl = d / "final.mdl"
    system = System(d.name or d.resolve().name, str(path), num_parameters(d),
                    mdl.stat().st_size if mdl.is_file() else None)
    for _, name in WSJ_DECODES:
        if (w := decode_wer(d / name)) is not None:
            system.wer[name] = w
        if (r := decode_rtf(d / name)) is not None:
            system.rtf[name] = r
    return system


@dataclass
class Table:
    """Rows of cells, one column per system; ``None`` is an empty cell."""
    columns: list[str]
    rows: list[tuple[str, list[str | None]]]
    title: str = ""
    notes: list[str] = field(default_factory=list)     # footnotes, plain and markdown only


def _row(label: str, cells: list[str | None]) -> list[tuple[str, list[str | None]]]:
    return [(label, cells)] if any(c is not None for c in cells) else []


def _opt(value, fmt: str) -> str | None:
    return None if value is None else format(value, fmt)


def _wer_cell(w: WerResult | None) -> str | None:
    """Two decimals as compute-wer prints; ``*`` marks a [PARTIAL] score."""
    return None if w is None else f"{w.wer:.2f}" + ("*" if w.partial else "")


def wsj_table(systems: Sequence[System], title: str = "") -> Table:
    """compare_wer.sh's WER rows, then parameters, model size and real-time factors."""
    rows: list[tuple[str, list[str | None]]] = []
    for label, name in WSJ_DECODES:
        rows += _row(label, [_wer_cell(s.wer.get(name)) for s in systems])
    rows += _row("# Num-params", [_opt(s.num_parameters, "d") for s in systems])
    rows += _row("# Model size (bytes)", [_opt(s.size_bytes, "d") for s in systems])
    for label, name in WSJ_DECODES:
        rows += _row(label.replace("#WER", "#RTF"),
                     [_opt(s.rtf.get(name), ".4f") for s in systems])
    partial = any(w.partial for s in systems for w in s.wer.values())
    notes = ["* [PARTIAL]: some test utterances had no hypothesis and were not scored"]
    return Table([s.name for s in systems], rows, title, notes if partial else [])


def points_table(points: Sequence[Point], metric: str = "WER") -> Table:
    """The same table for points measured elsewhere (e.g. decoding with Vosk)."""
    rows = _row(f"#{metric}", [f"{p.error:.2f}" for p in points])
    rows += _row("# Num-params", [_opt(p.num_parameters, "d") for p in points])
    rows += _row("# Model size (bytes)", [_opt(p.size_bytes, "d") for p in points])
    rows += _row("# RTF", [_opt(p.rtf, ".4f") for p in points])
    return Table([p.name for p in points], rows)


def format_table(table: Table, fmt: str) -> str:
    """``plain`` (compare_wer.sh's layout), ``markdown`` or ``csv``."""
    def label(s: str) -> str:
        return s.lstrip("#").strip()
    if fmt == "plain":
        cells = [c for _, row in table.rows for c in row if c is not None]
        width = max([10] + [len(c) + 1 for c in cells + table.columns])
        lw = max(len(r[0]) for r in table.rows + [("# System", [])])
        lines = [table.title] if table.title else []
        for name, row in [("# System", table.columns)] + table.rows:
            lines.append((name.ljust(lw) + "".join(f"{c or '':>{width}}" for c in row))
                         .rstrip())
        return "\n".join(lines + ["# " + n for n in table.notes]) + "\n"
    if fmt == "markdown":
        lines = ["| System | " + " | ".join(table.columns) + " |",
                 "|---|" + "---:|" * len(table.columns)]
        lines += [f"| {label(name)} | " + " | ".join(c or "" for c in row) + " |"
                  for name, row in table.rows]
        notes = [n.replace("*", "\\*", 1) for n in table.notes]
        return "\n".join(lines + ["", *notes] if notes else lines) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["System"] + table.columns)
        w.writerows([label(name)] + [c or "" for c in row] for name, row in table.rows)
        return out.getvalue()
    raise KaldiCompressError(f"unknown table format {fmt!r}: expected plain, markdown or csv")


def systems_json(systems: Sequence[System]) -> str:
    """Everything read, as JSON: per system, per decode the full compute-wer counts."""
    return json.dumps([asdict(s) for s in systems], indent=1) + "\n"


def points_from_systems(systems: Sequence[System]) -> tuple[list[Point], str]:
    """Points for a WER-vs-parameters plot, from the first decode every system has."""
    for label, name in WSJ_DECODES:
        if all(name in s.wer and s.num_parameters is not None for s in systems):
            return ([Point(s.name, s.num_parameters, s.wer[name].wer, s.size_bytes,
                           s.rtf.get(name)) for s in systems], label.lstrip("#"))
    raise KaldiCompressError("no decode has a WER and a parameter count for every system: "
                             "nothing to plot")
