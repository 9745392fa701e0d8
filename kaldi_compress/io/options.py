"""Kaldi option files (``--config=`` style): one ``--name=value`` per line, ``#`` comments.

A bare ``--name`` means ``--name=true``.  Names use dashes; values stay strings
until a consumer converts them with :func:`get_bool`, :func:`get_int`, :func:`get_float`.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import KaldiCompressError


def read_options(path: str | Path) -> dict[str, str]:
    """The options of a Kaldi config file, in order."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise KaldiCompressError(f"{path}: cannot read config: {e}") from None
    out: dict[str, str] = {}
    for num, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not line.startswith("--"):
            raise KaldiCompressError(f"{path}:{num}: expected --name=value, got {raw.strip()!r}")
        name, sep, value = line[2:].partition("=")
        out[name.strip().replace("_", "-")] = value.strip() if sep else "true"
    return out


def get_bool(opts: dict[str, str], name: str, default: bool) -> bool:
    if name not in opts:
        return default
    v = opts[name].lower()
    if v in ("true", "t", "1", "yes"):
        return True
    if v in ("false", "f", "0", "no"):
        return False
    raise KaldiCompressError(f"option --{name}: expected true or false, got {opts[name]!r}")


def get_int(opts: dict[str, str], name: str, default: int) -> int:
    try:
        return int(opts[name]) if name in opts else default
    except ValueError:
        raise KaldiCompressError(f"option --{name}: expected an integer, got {opts[name]!r}") from None


def get_float(opts: dict[str, str], name: str, default: float) -> float:
    try:
        return float(opts[name]) if name in opts else default
    except ValueError:
        raise KaldiCompressError(f"option --{name}: expected a number, got {opts[name]!r}") from None


def reject_unknown(opts: dict[str, str], known: set[str], where: str) -> None:
    """One-line error naming the first option that ``where`` does not understand."""
    unknown = [k for k in opts if k not in known]
    if unknown:
        raise KaldiCompressError(f"{where}: unsupported option --{unknown[0]}")
