"""Helper the table tests share: a Kaldi archive with its scp index, as a recipe has."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kaldi_compress.io.tables import kaldi_io


def write_ark_scp(ark: Path, mats: dict[str, np.ndarray]) -> Path:
    """``ark`` (binary, ``key <matrix>`` in order) and beside it ``ark.scp`` with each
    matrix's byte offset (``key ARK:OFFSET``); returns the scp's path."""
    scp = ark.with_suffix(".scp")
    with open(ark, "wb") as f, open(scp, "w") as index:
        for key, mat in mats.items():
            f.write(f"{key} ".encode())
            index.write(f"{key} {ark}:{f.tell()}\n")
            kaldi_io.write_mat(f, mat)
    return scp
