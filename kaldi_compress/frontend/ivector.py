"""Online i-vectors, as Kaldi's ``ivector-extract-online2`` (one utterance per speaker).

For MFCC frames x_t (t < T) and period P, row i of the output is the i-vector
estimated from frames 0 .. P*i, for i < ceil(T / P):

- posteriors: online CMVN of x (mean over the last ``cmn-window`` frames, topped
  up with up to ``global-frames`` frames' worth of the global CMVN stats), splice
  +-context frames (edge frames repeated), LDA; the diagonal UBM's top
  ``num-gselect`` Gaussians above ``min-post`` (relative to the best), pruned and
  renormalised, times ``posterior-scale``;
- statistics: the same splice + LDA without CMVN; for weights gamma_tg,
  linear = s * prior_offset * e_0 + sum_tg gamma_tg M_g' Sigma_g^-1 y_t and
  quadratic = s * I + sum_tg gamma_tg M_g' Sigma_g^-1 M_g, where the prior scale
  s = max(N, max-count) / max-count (s = 1 when max-count is 0), N = sum gamma;
- the i-vector solves quadratic * w = linear by at most ``num-cg-iters`` steps of
  Kaldi's conjugate gradient, warm-started from the previous i-vector; the
  output is w with prior_offset subtracted from w_0.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import KaldiCompressError
from ..io.options import get_bool, get_float, get_int, read_options, reject_unknown
from .ivector_models import DiagGmm, IvectorExtractor, read_kaldi_matrix


@dataclass
class OnlineIvectorConfig:
    """The files and options of Kaldi's OnlineIvectorExtractionConfig."""
    lda_matrix: Path
    global_cmvn_stats: Path
    splice_config: Path
    cmvn_config: Path | None
    diag_ubm: Path
    ivector_extractor: Path
    num_gselect: int = 5
    min_post: float = 0.025
    posterior_scale: float = 0.1
    max_count: float = 0.0
    num_cg_iters: int = 15
    ivector_period: int = 10
    online_cmvn_iextractor: bool = False

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> "OnlineIvectorConfig":
        """A Vosk model directory's ``ivector/`` files with Vosk's settings (max-count 100)."""
        d = Path(model_dir) / "ivector"
        return cls(d / "final.mat", d / "global_cmvn.stats", d / "splice.conf",
                   d / "online_cmvn.conf", d / "final.dubm", d / "final.ie", max_count=100.0)

    @classmethod
    def from_options(cls, opts: dict[str, str], base: str | Path = ".") -> "OnlineIvectorConfig":
        """From Kaldi option names (e.g. an ivector_extractor.conf); relative file
        names are resolved against ``base``."""
        known = {"lda-matrix", "global-cmvn-stats", "splice-config", "cmvn-config", "diag-ubm",
                 "ivector-extractor", "num-gselect", "min-post", "posterior-scale",
                 "max-count", "num-cg-iters", "ivector-period", "online-cmvn-iextractor",
                 "max-remembered-frames", "use-most-recent-ivector",
                 "greedy-ivector-extractor"}
        reject_unknown(opts, known, "i-vector extractor config")
        if get_bool(opts, "greedy-ivector-extractor", False):
            raise KaldiCompressError("--greedy-ivector-extractor=true is not supported")
        files = {}
        for name in ("lda-matrix", "global-cmvn-stats", "splice-config", "diag-ubm",
                     "ivector-extractor"):
            if name not in opts:
                raise KaldiCompressError(f"i-vector extractor config: --{name} must be set")
            files[name] = Path(base) / opts[name]
        return cls(files["lda-matrix"], files["global-cmvn-stats"], files["splice-config"],
                   Path(base) / opts["cmvn-config"] if "cmvn-config" in opts else None,
                   files["diag-ubm"], files["ivector-extractor"],
                   num_gselect=get_int(opts, "num-gselect", 5),
                   min_post=get_float(opts, "min-post", 0.025),
                   posterior_scale=get_float(opts, "posterior-scale", 0.1),
                   max_count=get_float(opts, "max-count", 0.0),
                   num_cg_iters=get_int(opts, "num-cg-iters", 15),
                   ivector_period=get_int(opts, "ivector-period", 10),
                   online_cmvn_iextractor=get_bool(opts, "online-cmvn-iextractor", False))


def linear_cgd(A: np.ndarray, b: np.ndarray, x: np.ndarray, max_iters: int) -> np.ndarray:
    """Kaldi's LinearCgd: conjugate gradient for A x = b from the initial x, with
    alpha = -p.r / p.Ap, the residual recomputed whenever its squared norm moved by
    more than a factor 1e4, and an exact solve if the residual ended up worse."""
    x = x.copy()
    p = b - A @ x
    r = -p
    r_cur = r_initial = r_recompute = float(r @ r)
    for k in range(len(b) + 5):
        if k == max_iters:
            break
        Ap = A @ p
        alpha = -float(p @ r) / float(p @ Ap)
        x += alpha * p
        r += alpha * Ap
        r_next = float(r @ r)
        if r_next < 1e-4 * r_recompute or r_next > 1e4 * r_recompute:
            r = A @ x - b
            r_next = r_recompute = float(r @ r)
        if r_next <= np.finfo(np.float64).tiny:
            break
        p = (r_next / r_cur) * p - r
        r_cur = r_next
    if r_cur > r_initial and r_cur > r_initial + 1e-10 * float(b @ b):
        x = np.linalg.solve(A, b)
    return x


def select_posteriors(loglikes: np.ndarray, num_gselect: int, min_post: float) -> np.ndarray:
    """Kaldi's VectorToPosteriorEntry for every row, as (T, G) dense posteriors: the
    best ``num_gselect`` Gaussians within log(min_post) of the best; then, from the
    least likely, those below min_post times the total are dropped; renormalised."""
    t, g = loglikes.shape
    k = min(num_gselect, g)
    top = np.argpartition(-loglikes, k - 1, axis=1)[:, :k] if k < g else \
        np.tile(np.arange(g), (t, 1))
    top_ll = np.take_along_axis(loglikes, top, 1)
    order = np.argsort(-top_ll, axis=1, kind="stable")
    top, top_ll = np.take_along_axis(top, order, 1), np.take_along_axis(top_ll, order, 1)
    best = top_ll[:, :1]
    post = np.exp(top_ll - best)
    if min_post > 0:
        post[top_ll <= best + np.log(min_post)] = 0.0
    total = post.sum(1)
    cutoff = min_post * total
    active = np.ones(t, dtype=bool)
    for j in range(k - 1, 0, -1):
        drop = active & (post[:, j] > 0) & (post[:, j] < cutoff)
        active &= drop | (post[:, j] == 0)
        total -= np.where(drop, post[:, j], 0.0)
        post[drop, j] = 0.0
    out = np.zeros((t, g))
    np.put_along_axis(out, top, post / total[:, None], 1)
    return out


class OnlineIvectorExtractor:
    """Computes :class:`OnlineIvectorConfig`'s i-vectors for MFCC matrices."""

    def __init__(self, config: OnlineIvectorConfig):
        self.cfg = config
        self.lda = read_kaldi_matrix(config.lda_matrix)
        self.global_stats = read_kaldi_matrix(config.global_cmvn_stats)
        splice = read_options(config.splice_config)
        reject_unknown(splice, {"left-context", "right-context"}, "splice config")
        self.left = get_int(splice, "left-context", 4)
        self.right = get_int(splice, "right-context", 4)
        cmvn = read_options(config.cmvn_config) if config.cmvn_config else {}
        reject_unknown(cmvn, {"cmn-window", "speaker-frames", "global-frames", "normalize-mean",
                              "normalize-variance", "modulus", "ring-buffer-size", "skip-dims"},
                       "online CMVN config")
        if get_bool(cmvn, "normalize-variance", False) or cmvn.get("skip-dims"):
            raise KaldiCompressError("online CMVN: only mean normalization is supported")
        self.cmn_window = get_int(cmvn, "cmn-window", 600)
        self.global_frames = get_int(cmvn, "global-frames", 200)
        self.normalize_mean = get_bool(cmvn, "normalize-mean", True)
        self.ubm = DiagGmm.read(config.diag_ubm)
        ie = IvectorExtractor.read(config.ivector_extractor)
        self.prior_offset = ie.prior_offset
        self.sigma_inv_m = np.einsum("gde,gei->gdi", ie.sigma_inv, ie.M)          # G, D, I
        self.quad = np.einsum("gdi,gdj->gij", ie.M, self.sigma_inv_m)            # G, I, I
        dim = self.global_stats.shape[1] - 1
        spliced = dim * (self.left + 1 + self.right)
        if self.global_stats.shape[0] != 2 or self.lda.shape[1] not in (spliced, spliced + 1) \
                or self.lda.shape[0] != self.ubm.means_invvars.shape[1] \
                or self.lda.shape[0] != ie.M.shape[1]:
            raise KaldiCompressError("i-vector extractor files have inconsistent dimensions")
        self.feat_dim = dim

    @property
    def ivector_dim(self) -> int:
        return self.quad.shape[1]

    def _cmvn(self, x: np.ndarray) -> np.ndarray:
        if not self.normalize_mean:
            return x
        t = np.arange(len(x))
        csum = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
        lo = np.maximum(0, t - self.cmn_window + 1)
        total = csum[t + 1] - csum[lo]
        count = (t + 1 - lo).astype(np.float64)
        g_count = self.global_stats[0, -1]
        extra = np.minimum(self.cmn_window - count, self.global_frames)
        extra = np.where(count < self.cmn_window, extra, 0.0)
        total += (extra / g_count)[:, None] * self.global_stats[0, :-1]
        return x - total / (count + extra)[:, None]

    def _lda(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        idx = np.clip(np.arange(n)[:, None] + np.arange(-self.left, self.right + 1), 0, n - 1)
        spliced = x[idx].reshape(n, -1)
        a = self.lda
        out = spliced @ a[:, :spliced.shape[1]].T
        return out + a[:, -1] if a.shape[1] > spliced.shape[1] else out

    def extract(self, feats: np.ndarray) -> np.ndarray:
        """Online i-vectors of one utterance: (ceil(T / period), ivector_dim) float32."""
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.feat_dim or len(x) == 0:
            raise KaldiCompressError(f"i-vector extraction expects a non-empty matrix of "
                                     f"{self.feat_dim}-dim features")
        cfg = self.cfg
        period = cfg.ivector_period
        n = -(-len(x) // period)
        used = (n - 1) * period + 1                      # frames 0 .. period * (n - 1)
        normalized = self._lda(self._cmvn(x))[:used]
        stats_feats = normalized if cfg.online_cmvn_iextractor else self._lda(x)[:used]
        min_post = min(cfg.min_post, 0.99)
        gamma = select_posteriors(self.ubm.log_likelihoods(normalized), cfg.num_gselect,
                                  min_post) * cfg.posterior_scale
        block = -(-np.arange(used) // period)            # frame 0 -> 0, 1..P -> 1, ...
        g_sum = np.zeros((n, gamma.shape[1]))
        np.add.at(g_sum, block, gamma)
        x_sum = np.zeros((n, gamma.shape[1], stats_feats.shape[1]))
        for b in range(n):
            sel = block == b
            x_sum[b] = gamma[sel].T @ stats_feats[sel]
        dim = self.ivector_dim
        linear = np.cumsum(x_sum.reshape(n, -1) @ self.sigma_inv_m.reshape(-1, dim), axis=0)
        quads = np.cumsum(g_sum @ self.quad.reshape(len(self.quad), -1), axis=0)
        counts = np.cumsum(g_sum.sum(1))
        scale = np.maximum(counts, cfg.max_count) / cfg.max_count if cfg.max_count > 0 \
            else np.ones(n)
        out = np.zeros((n, dim), dtype=np.float32)
        w = np.zeros(dim)
        w[0] = self.prior_offset
        eye = np.eye(dim)
        for i in range(n):
            if counts[i] > 0:
                quad = scale[i] * eye + quads[i].reshape(dim, dim)
                lin = linear[i].copy()
                lin[0] += scale[i] * self.prior_offset
                if w[0] == 0.0:
                    w[0] = self.prior_offset
                w = linear_cgd(quad, lin, w, cfg.num_cg_iters)
            else:
                w = np.zeros(dim)
                w[0] = self.prior_offset
            out[i] = w
            out[i, 0] -= self.prior_offset
        return out
