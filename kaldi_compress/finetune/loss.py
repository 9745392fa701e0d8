"""Distillation losses between the student's outputs s_t and the teacher's y_t.

Chain outputs are log-likelihood-like scores that the decoder adds to its path
costs with acoustic scale 1.  Every path takes exactly one pdf per frame, so a
per-frame constant changes nothing: only s_t up to a shift matters, i.e. the
distribution softmax(s_t).  Per frame t (D pdfs, temperature T):

- ``kl``:  T^2 KL(softmax(y_t / T) || softmax(s_t / T)) -- weighs the pdfs in
  proportion to the teacher's probability, i.e. the ones that compete in the beam;
- ``mse``: (1/D) sum_j (c(s_t)_j - c(y_t)_j)^2 with c(x) = x - mean_j x_j, the
  shift-free squared error, equal weight on all pdfs.

The loss is the mean over the output frames that lie inside their utterance
(``mask``) of ``kl_weight * kl + mse_weight * mse``.
"""
from __future__ import annotations

import torch

from .options import LossOptions


def frame_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0
             ) -> torch.Tensor:
    """T^2 KL(softmax(y/T) || softmax(s/T)) per frame (last axis: pdfs)."""
    log_q = torch.log_softmax(student / temperature, dim=-1)
    log_p = torch.log_softmax(teacher / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1) * temperature ** 2


def frame_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over pdfs of the squared difference of the per-frame-centred outputs."""
    d = student - teacher
    return (d - d.mean(-1, keepdim=True)).pow(2).mean(-1)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                 opts: LossOptions = LossOptions()) -> torch.Tensor:
    """The mean loss over the masked-in frames of (B, num_outputs, D) outputs."""
    per_frame = student.new_zeros(student.shape[:-1])
    if opts.kl_weight:
        per_frame = per_frame + opts.kl_weight * frame_kl(student, teacher, opts.temperature)
    if opts.mse_weight:
        per_frame = per_frame + opts.mse_weight * frame_mse(student, teacher)
    m = mask.to(per_frame.dtype)
    return (per_frame * m).sum() / m.sum().clamp_min(1.0)
