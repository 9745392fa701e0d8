"""Comparing our text models with Kaldi's, token by token."""
from __future__ import annotations

import math

# Kaldi stores these as sums and divides on write, so its own text differs from the
# stored floats in the last digit; no other token may differ.
STATS_FIELDS = {b"<ValueAvg>", b"<DerivAvg>", b"<OderivRms>", b"<StatsMean>", b"<StatsVar>"}


def last_digit_units(x: bytes, y: bytes) -> float:
    """|x - y| in units of the 7th significant digit of the larger."""
    fx, fy = float(x), float(y)
    big = max(abs(fx), abs(fy))
    if big == 0:
        return 0.0
    return abs(fx - fy) / 10 ** (math.floor(math.log10(big)) - 6)


def text_differences(ours: bytes, kaldi: bytes, max_units: float = 2.0) -> list[str]:
    """Problems found comparing two Kaldi text models; [] when equivalent.

    Tokens must match one for one, except statistics values that may differ by at
    most ``max_units`` in the last (7th) significant digit.
    """
    a, b = ours.split(), kaldi.split()
    if len(a) != len(b):
        return [f"token counts differ: {len(a)} vs {len(b)}"]
    problems = []
    field = None
    for i, (x, y) in enumerate(zip(a, b)):
        if x.startswith(b"<"):
            field = x
        if x == y:
            continue
        if field in STATS_FIELDS and last_digit_units(x, y) <= max_units + 1e-6:
            continue
        problems.append(f"token {i} after {field!r}: {x!r} vs {y!r}")
        if len(problems) > 10:
            break
    return problems
