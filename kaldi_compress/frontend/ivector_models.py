"""Readers for the Kaldi objects of an online i-vector extractor.

- a matrix file (``final.mat``, ``global_cmvn.stats``): binary ``\\0B`` + FM/DM,
  or text ``[ ... ]``;
- DiagGmm (``final.dubm``): ``<DiagGMM> [<GCONSTS> FV] <WEIGHTS> FV
  <MEANS_INVVARS> FM <INV_VARS> FM </DiagGMM>`` (gconsts are recomputed, as Kaldi does);
- IvectorExtractor (``final.ie``, binary): ``<IvectorExtractor> <w> M <w_vec> V
  <M> int32 n, n matrices M_i (feat x ivector) <SigmaInv> n packed symmetric
  matrices (FP/DP + int32 size + lower triangle row by row) <IvectorOffset> double
  </IvectorExtractor>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import KaldiCompressError, KaldiFormatError
from ..io.binary import BinaryReader
from ..io.files import read_input
from ..io.text import TextReader


def _reader(path: str | Path):
    buf = read_input(str(path))
    if buf[:2] == b"\0B":
        return BinaryReader(buf, str(path), 2)
    return TextReader(buf, str(path), 0)


def _end(r) -> None:
    r.skip_ws()
    if not r.at_end():
        raise r.error("end of file")


def read_kaldi_matrix(path: str | Path) -> np.ndarray:
    """A Kaldi matrix file (binary or text), as float64."""
    r = _reader(path)
    try:
        m = np.array(r.read_matrix("matrix"), dtype=np.float64)
        _end(r)
    except KaldiFormatError as e:
        raise KaldiCompressError(str(e)) from None
    return m


@dataclass
class DiagGmm:
    """Diagonal-covariance GMM: log p(x, g) = gconst_g + mi_g . x - 0.5 iv_g . x^2."""
    weights: np.ndarray        # (G,)
    means_invvars: np.ndarray  # (G, D)
    inv_vars: np.ndarray       # (G, D)

    @property
    def gconsts(self) -> np.ndarray:
        """log w - D/2 log 2pi + 1/2 sum(log iv - mi^2 / iv), as Kaldi's ComputeGconsts."""
        d = self.inv_vars.shape[1]
        with np.errstate(divide="ignore"):
            logw = np.log(self.weights)
        return (logw - 0.5 * d * np.log(2 * np.pi)
                + 0.5 * (np.log(self.inv_vars) - self.means_invvars ** 2 / self.inv_vars).sum(1))

    def log_likelihoods(self, x: np.ndarray) -> np.ndarray:
        """(T, G) per-Gaussian log-likelihoods of frames x (T, D)."""
        x = np.asarray(x, dtype=np.float64)
        return self.gconsts + x @ self.means_invvars.T - 0.5 * (x * x) @ self.inv_vars.T

    @classmethod
    def read(cls, path: str | Path) -> "DiagGmm":
        r = _reader(path)
        try:
            tok = r.read_token("<DiagGMM>")
            if tok not in ("<DiagGMM>", "<DiagGMMBegin>"):
                raise r.error("<DiagGMM>", repr(tok))
            tok = r.read_token("<GCONSTS> or <WEIGHTS>")
            if tok == "<GCONSTS>":
                r.read_vector("gconsts")
                tok = r.read_token("<WEIGHTS>")
            if tok != "<WEIGHTS>":
                raise r.error("<WEIGHTS>", repr(tok))
            weights = np.array(r.read_vector("weights"), dtype=np.float64)
            r.expect_token("<MEANS_INVVARS>")
            mi = np.array(r.read_matrix("means_invvars"), dtype=np.float64)
            r.expect_token("<INV_VARS>")
            iv = np.array(r.read_matrix("inv_vars"), dtype=np.float64)
            tok = r.read_token("</DiagGMM>")
            if tok not in ("</DiagGMM>", "<DiagGMMEnd>"):
                raise r.error("</DiagGMM>", repr(tok))
            _end(r)
        except KaldiFormatError as e:
            raise KaldiCompressError(str(e)) from None
        if mi.shape != iv.shape or mi.shape[0] != len(weights):
            raise KaldiCompressError(f"{path}: inconsistent DiagGmm dimensions")
        return cls(weights, mi, iv)


def _read_packed(r: BinaryReader, what: str) -> np.ndarray:
    """A binary packed symmetric matrix, as a full (n, n) float64 array."""
    start = r.pos
    tok = r.read_token(f"{what} (FP or DP)")
    if tok not in ("FP", "DP"):
        raise r.error(f"{what} (FP or DP)", repr(tok), at=start)
    n = r.read_int(f"{what} size")
    dtype = np.dtype("<f4" if tok == "FP" else "<f8")
    count = n * (n + 1) // 2
    if n < 0 or r.pos + count * dtype.itemsize > len(r.buf):
        raise r.error(f"{what}: {count} values", "end of file")
    tri = np.frombuffer(r.buf, dtype=dtype, count=count, offset=r.pos).astype(np.float64)
    r.pos += count * dtype.itemsize
    full = np.zeros((n, n))
    full[np.tril_indices(n)] = tri
    return full + np.tril(full, -1).T


@dataclass
class IvectorExtractor:
    """The parts of Kaldi's IvectorExtractor used for online extraction."""
    M: np.ndarray           # (G, D, I) projection matrices
    sigma_inv: np.ndarray   # (G, D, D) inverse covariances
    prior_offset: float

    @property
    def ivector_dim(self) -> int:
        return self.M.shape[2]

    @classmethod
    def read(cls, path: str | Path) -> "IvectorExtractor":
        r = _reader(path)
        if not r.binary:
            raise KaldiCompressError(f"{path}: only binary i-vector extractors are supported")
        try:
            r.expect_token("<IvectorExtractor>")
            r.expect_token("<w>")
            w = r.read_matrix("w")
            if w.size:
                raise KaldiCompressError(f"{path}: i-vector-dependent weights are not supported")
            r.expect_token("<w_vec>")
            r.read_vector("w_vec")
            r.expect_token("<M>")
            n = r.read_int("number of Gaussians")
            if not 0 < n < 1 << 20:
                raise r.error("a positive number of Gaussians", str(n))
            M = np.stack([np.array(r.read_matrix("M"), dtype=np.float64) for _ in range(n)])
            r.expect_token("<SigmaInv>")
            sigma_inv = np.stack([_read_packed(r, "SigmaInv") for _ in range(n)])
            r.expect_token("<IvectorOffset>")
            offset = float(r.read_float("IvectorOffset"))
            r.expect_token("</IvectorExtractor>")
            _end(r)
        except KaldiFormatError as e:
            raise KaldiCompressError(str(e)) from None
        if sigma_inv.shape[1] != M.shape[1]:
            raise KaldiCompressError(f"{path}: inconsistent IvectorExtractor dimensions")
        return cls(M, sigma_inv, offset)
