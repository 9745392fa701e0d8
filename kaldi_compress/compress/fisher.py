"""How much each hidden value matters to the output: the diagonal Fisher information.

The output z_t of frame t defines a distribution p_t = softmax(z_t) over the pdfs (the
one distillation matches, :mod:`..finetune.loss`).  A small error e in the values y of a
node changes sum_t KL(p_t || p~_t) by (1/2) e^T F e to second order, with

    F = sum_t E_{s ~ p_t}[g_t(s) g_t(s)^T],   g_t(s) = d log p_t(s) / d y,

the Fisher information of the outputs about y.  Its diagonal F_ii prices an error in
y_i by what it does to the output through every layer above (a BatchNorm's scale, a
ReLU that is mostly off, how much the layers above read y_i), where 1 / std(y_i) prices
it by the spread of y_i alone.  A least-squares or low-rank fit with row weights
sqrt(F_ii) minimises sum_i F_ii E[e_i^2], the diagonal of that KL: Fisher-weighted SVD
(Hsu et al. 2022, "Language model compression with weighted low-rank factorization").

Estimated on calibration audio with one pdf s_t drawn from p_t per output frame
(unbiased for F; the generator is seeded, so a fit is reproducible), summing g_i^2 over
every row of y that the chunks compute, per output frame.
"""
from __future__ import annotations

import numpy as np
import torch

from ..nnet3 import Nnet


def fisher_diagonal(nnet: Nnet, calibration, nodes: set[str], seed: int = 0
                    ) -> dict[str, np.ndarray]:
    """diag(F) / (output frames) for each of ``nodes`` that the output depends on."""
    from ..compute.chunking import ComputeOptions, SimpleComputer
    computer = SimpleComputer(nnet, ComputeOptions(**vars(calibration.compute_options)))
    seen: list[tuple[str, torch.Tensor]] = []

    def keep(node: str, layer_input: torch.Tensor, output: torch.Tensor, index=None) -> None:
        if node in nodes and output.requires_grad:
            seen.append((node, output))

    computer.forward.observer = keep
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, torch.Tensor] = {}
    frames = 0
    with torch.enable_grad():
        for feats, ivectors in calibration.utterances:
            utt = [computer.check(feats, ivectors)]
            groups: dict = {}
            for c in computer.chunks(len(utt[0][0])):
                groups.setdefault(computer.geometry(c, ivectors is not None), []).append((0, c))
            for geom, batch in groups.items():
                x = computer.chunk_inputs(utt, batch, geom).requires_grad_(True)
                ivec = computer.chunk_ivectors(utt, batch).requires_grad_(True) \
                    if geom.ivector else None
                seen.clear()
                z = computer.forward(x, ivec, geom)
                logp = torch.log_softmax(z.reshape(-1, z.shape[-1]).to(torch.float64), dim=-1)
                s = torch.multinomial(logp.detach().exp(), 1, generator=gen)
                grads = torch.autograd.grad(logp.gather(1, s).sum(), [y for _, y in seen],
                                            allow_unused=True)
                for (node, _), g in zip(seen, grads):
                    if g is not None:
                        g = g.reshape(-1, g.shape[-1]).to(torch.float64)
                        sums[node] = sums.get(node, 0) + (g * g).sum(0)
                frames += logp.shape[0]
    return {node: (v / max(frames, 1)).numpy() for node, v in sums.items()}
