"""The network's first two linear layers, computed once per utterance frame.

A chain TDNN starts with ``N1 = Affine1(Append(Offset(input, k_1), ..., ReplaceIndex(ivector,
t, 0)))`` (Kaldi's 'lda') read only by ``N2 = Affine2(N1)``.  Both are linear, so

    N2(t) = sum_k M_k x(t + k) + V iv + c,   [M_k1 .. M_kK] = W2 W1_x,  V = W2 W1_iv,
                                              c = W2 b1 + b2.

With nnet3-compute's chunks (50 frames plus the context on both sides, ~2.3 times as
many frames as the utterance) each frame's input part is the same in every chunk
that holds it, so it is computed once per utterance frame, frames beyond the ends
repeating the first/last frame as chunks do; a chunk then adds V iv + c for its own
i-vector.  This is only an evaluation order: the values equal the layer-by-layer ones
up to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..nnet3.descriptors import Append, Descriptor, NodeRef, Offset, ReplaceIndex
from .forward import NnetForward
from .layers.affine import Affine
from .layers.base import linear


def _input_parts(desc: Descriptor) -> list[tuple[str, int]] | None:
    """Append parts as ('input', k) / ('ivector', 0), or None if another descriptor."""
    parts = []
    for src in desc.srcs if isinstance(desc, Append) else (desc,):
        if isinstance(src, NodeRef) and src.name == "input":
            parts.append(("input", 0))
        elif isinstance(src, Offset) and src.x == 0 and src.src == NodeRef("input"):
            parts.append(("input", src.t))
        elif (isinstance(src, ReplaceIndex) and src.variable == "t" and src.value == 0
              and src.src == NodeRef("ivector")):
            parts.append(("ivector", 0))
        else:
            return None
    return parts if [p for p, _ in parts].count("ivector") <= 1 else None


@dataclass
class InputPrefix:
    """N2 as a function of the input frames and the chunk's i-vector."""
    node: str                        # N2: the node whose values this gives
    offsets: np.ndarray              # k_1..k_K
    weight: torch.Tensor             # [M_k1 .. M_kK], (out, K * input dim)
    ivector_weight: torch.Tensor | None
    bias: torch.Tensor

    @classmethod
    def find(cls, forward: NnetForward) -> "InputPrefix | None":
        """The prefix of a network that starts as described above, else None."""
        graph, readers = forward.graph, forward.nnet.consumers()
        first = readers.get("input", [])
        if len(first) != 1 or first[0].name not in graph.by_name:
            return None
        n1 = graph.by_name[first[0].name]
        second = readers[n1.name]
        if (n1.kind != "component-node" or type(n1.layer) is not Affine or len(second) != 1
                or second[0].name not in graph.by_name):
            return None
        n2 = graph.by_name[second[0].name]
        parts = _input_parts(n1.descriptor)
        if (parts is None or n2.kind != "component-node" or type(n2.layer) is not Affine
                or n2.descriptor != NodeRef(n1.name)):
            return None
        w1 = n1.layer.weight.detach().double()
        w2 = n2.layer.weight.detach().double()
        dims = [graph.dim(name) for name, _ in parts]
        cols = np.cumsum([0] + dims)
        x_cols = [torch.arange(a, b) for (name, _), a, b in zip(parts, cols, cols[1:])
                  if name == "input"]
        iv_cols = [torch.arange(a, b) for (name, _), a, b in zip(parts, cols, cols[1:])
                   if name == "ivector"]
        bias = torch.zeros(w2.shape[0], dtype=torch.float64)
        if n1.layer.bias is not None:
            bias += w2 @ n1.layer.bias.detach().double()
        if n2.layer.bias is not None:
            bias += n2.layer.bias.detach().double()
        return cls(n2.name, np.array([k for name, k in parts if name == "input"]),
                   (w2 @ w1[:, torch.cat(x_cols)]).float(),
                   (w2 @ w1[:, iv_cols[0]]).float() if iv_cols else None, bias.float())

    def frames(self, utterances: list[np.ndarray], spans: list[tuple[int, int]]
               ) -> torch.Tensor:
        """sum_k M_k x_u(clip(t + k)) for t in [a_u, b_u) of every utterance u, stacked:
        (sum of b_u - a_u, out)."""
        index, first = [], 0
        for feats, (a, b) in zip(utterances, spans):
            t = np.arange(a, b)[:, None] + self.offsets[None, :]
            index.append(first + np.clip(t, 0, len(feats) - 1))
            first += len(feats)
        rows = torch.from_numpy(np.concatenate(index))               # (T, K)
        x = torch.from_numpy(np.concatenate(utterances)).index_select(0, rows.ravel())
        return linear(x.view(len(rows), -1), self.weight)

    def chunk_bias(self, ivectors: torch.Tensor | None) -> torch.Tensor:
        """V iv + c per chunk: (B, out), or (1, out) without i-vectors."""
        if self.ivector_weight is None or ivectors is None:
            return self.bias[None]
        return linear(ivectors, self.ivector_weight, self.bias)
