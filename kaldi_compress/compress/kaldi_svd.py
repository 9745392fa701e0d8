"""Kaldi's own ``apply-svd`` edit (nnet-utils.cc SvdApplier), reproduced exactly.

For each component whose name matches the pattern, in component order:
- skip (with a warning) unless it is an AffineComponent or NaturalGradientAffineComponent;
- skip if in <= d or out <= d, where d is the bottleneck dim -- which the energy
  rule overwrites with each decomposed layer's rank, so a layer's check uses the
  previous layer's rank (Kaldi keeps it in a member variable);
- W = U diag(s) V^T; with an energy threshold E, d = smallest k with
  sum_{i<k} s_i^2 >= E sum s_i^2;
- skip if d (in + out) / (in out) > shrinkage threshold;
- otherwise ``<name>_a`` = LinearComponent(diag(sqrt s_d) V_d^T) and ``<name>_b`` =
  NaturalGradientAffineComponent(U_d diag(sqrt s_d), bias), both with the original's
  learning rate, learning-rate factor, l2, is-gradient and max-change; the node
  N becomes N_a, N_b and every reference to N reads N_b.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from ..nnet3.components import AffineComponent, LinearComponent, NaturalGradientAffineComponent
from ..nnet3.components.base import match_glob
from .lowrank import spectrum


@dataclass
class KaldiSvdRecord:
    component: str
    input_dim: int
    output_dim: int
    rank: int | None          # None: skipped
    energy_before: float = 0.0
    energy_after: float = 0.0
    shrinkage: float = 0.0
    note: str = ""


def apply_svd_kaldi(nnet: Nnet, pattern: str = "*", bottleneck_dim: int = -1,
                    energy_threshold: float = -1.0,
                    shrinkage_threshold: float = 1.0) -> list[KaldiSvdRecord]:
    """Kaldi's ``apply-svd name=<pattern> bottleneck-dim=.. energy-threshold=..
    shrinkage-threshold=..``; edits ``nnet`` in place and returns what it did."""
    if bottleneck_dim <= 0 and energy_threshold <= 0:
        raise KaldiCompressError("apply-svd needs bottleneck-dim > 0 or energy-threshold > 0")
    if not energy_threshold < 1:
        raise KaldiCompressError("energy-threshold must be below 1")
    records: list[KaldiSvdRecord] = []
    decomposed: list[tuple[str, object, object]] = []
    dim = bottleneck_dim
    for name in list(nnet.components):
        comp = nnet.components[name]
        if not match_glob(pattern, name):
            continue
        if not isinstance(comp, AffineComponent):
            records.append(KaldiSvdRecord(name, comp.input_dim, comp.output_dim, None,
                                          note="not an AffineComponent"))
            continue
        inp, out = comp.input_dim, comp.output_dim
        if inp <= dim or out <= dim:
            records.append(KaldiSvdRecord(name, inp, out, None,
                                          note=f"dimension {inp} -> {out} vs rank {dim}"))
            continue
        spec = spectrum(comp.linear_params)
        if energy_threshold > 0:
            dim = spec.rank_for_energy(energy_threshold)
        total = float(spec.energy.sum())
        kept = float(spec.energy[:dim].sum())
        shrink = dim * (inp + out) / (inp * out)
        rec = KaldiSvdRecord(name, inp, out, dim, total, kept, shrink)
        records.append(rec)
        if shrink > shrinkage_threshold:
            rec.rank, rec.note = None, f"shrinkage ratio {shrink:.4g} above threshold"
            continue
        a, b = spec.factors(dim)
        upd = comp.updatable_config()
        decomposed.append((name, LinearComponent.create(a, upd),
                           NaturalGradientAffineComponent.create(b, comp.bias_params, upd)))
    _modify_topology(nnet, decomposed)
    return records


def _modify_topology(nnet: Nnet, decomposed) -> None:
    """Kaldi's ModifyTopology + RemoveOrphan*: split nodes, append C_a/C_b pairs."""
    from ..nnet3.descriptors import NodeRef
    from ..nnet3.graph import Node
    if not decomposed:
        return
    parts = {name: (a, b) for name, a, b in decomposed}
    for name, _, _ in decomposed:
        for suffix in ("_a", "_b"):
            if name + suffix in nnet.components:
                raise KaldiCompressError(f"the network already has a component named "
                                         f"{name + suffix}")
    split = {n.name: n for n in nnet.nodes
             if n.kind == "component-node" and n.component in parts}
    nnet.rename_references({name: name + "_b" for name in split})
    new_nodes = []
    for n in nnet.nodes:
        if n.name in split:
            comp = n.component
            new_nodes.append(Node("component-node", n.name + "_a", component=comp + "_a",
                                  descriptor=n.descriptor))
            new_nodes.append(Node("component-node", n.name + "_b", component=comp + "_b",
                                  descriptor=NodeRef(n.name + "_a")))
        else:
            new_nodes.append(n)
    nnet.nodes = new_nodes
    for name in parts:
        del nnet.components[name]
    for name, (a, b) in parts.items():
        nnet.components[name + "_a"] = a
        nnet.components[name + "_b"] = b
    nnet.remove_orphans()
