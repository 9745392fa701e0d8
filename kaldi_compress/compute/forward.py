"""The network's test-mode forward pass in torch, on batches of same-shaped chunks.

:class:`NnetForward` turns every component that the chosen output depends on into
a :mod:`.layers` module (its parameters are torch tensors copied from the
component's arrays), builds one :class:`.plan.Plan` per chunk geometry (cached)
and runs it on a batch of chunks: feats (B, T_in, input_dim) and, if the network
has an 'ivector' input, one i-vector per chunk (B, ivector_dim).  The result is
the output node at the chunk's output frames, (B, num_outputs, output_dim).

Parameters of updatable components are ``torch.nn.Parameter`` (created with
``requires_grad=False``; set it to train): the pass is differentiable, recurrent
parts included.  :meth:`NnetForward.write_back` stores the (possibly trained)
values back into the Kaldi components, so the network can be written with
:func:`kaldi_compress.nnet3.write_model`.
"""
from __future__ import annotations

import torch

from ..errors import KaldiCompressError
from ..nnet3 import Nnet
from .layers import Layer, gather_rows, make_layer
from .plan import Geometry, Graph, GraphNode, Part, Plan, PlanBuilder


def _needed_nodes(nnet: Nnet, output: str) -> set[str]:
    by_name = {n.name: n for n in nnet.nodes}
    seen: set[str] = set()
    stack = [output]
    while stack:
        name = stack.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        stack.extend(by_name[name].inputs())
    return seen


class NnetForward(torch.nn.Module):
    """Kaldi nnet3 forward pass (test mode) of node ``output``."""

    def __init__(self, nnet: Nnet, output: str = "output"):
        super().__init__()
        if output not in nnet.output_names():
            raise KaldiCompressError(f"the network has no output node named {output!r}")
        self.nnet = nnet
        self.output_name = output
        dims = nnet.node_dims()
        used = _needed_nodes(nnet, output)
        self.layers = torch.nn.ModuleList()
        layer_ids: dict[str, int] = {}
        nodes: list[GraphNode] = []
        for n in nnet.nodes:
            if n.name not in used:
                continue
            node = GraphNode(n.name, n.kind, dims.get(n.name) or 0, n.descriptor)
            if n.kind == "component-node":
                if n.component not in layer_ids:
                    layer_ids[n.component] = len(self.layers)
                    self.layers.append(make_layer(nnet.components[n.component]))
                node.layer_id = layer_ids[n.component]
                node.layer = self.layers[node.layer_id]
            elif n.kind == "dim-range-node":
                node.source = n.input_node
                node.columns = (n.dim_offset, n.dim_offset + n.dim)
            nodes.append(node)
        self.graph = Graph(nodes, output, nnet.modulus())
        self.input_dim = dims.get("input") if "input" in used else None
        self.ivector_dim = dims.get("ivector") if "ivector" in used else None
        self.output_dim = dims[output]
        self._plans: dict[Geometry, Plan] = {}
        # Called as observer(node, layer input, node output, step index) after every
        # step, e.g. to collect activation statistics; None for plain evaluation.
        self.observer = None

    def plan(self, geometry: Geometry) -> Plan:
        """The (cached) plan of a chunk geometry."""
        plan = self._plans.get(geometry)
        if plan is None:
            plan = self._plans[geometry] = PlanBuilder(self.graph, geometry).build()
        return plan

    def forward(self, feats: torch.Tensor, ivectors: torch.Tensor | None,
                geometry: Geometry) -> torch.Tensor:
        """Outputs (B, num_outputs, output_dim) of a batch of chunks of one geometry."""
        plan = self.plan(geometry)
        batch = feats.shape[0]
        if feats.shape[1] != geometry.num_inputs:
            raise KaldiCompressError(f"chunk has {feats.shape[1]} input frames, "
                                     f"geometry says {geometry.num_inputs}")
        values: dict[str, torch.Tensor] = {}
        if self.input_dim is not None:
            if feats.shape[2] != self.input_dim:
                raise KaldiCompressError(f"the network expects input features of dimension "
                                         f"{self.input_dim}, got {feats.shape[2]}")
            values["input"] = feats.index_select(1, plan.input_rows)
        if plan.uses_ivector:
            if ivectors is None or ivectors.shape[-1] != self.ivector_dim:
                got = "none" if ivectors is None else f"dimension {ivectors.shape[-1]}"
                raise KaldiCompressError(f"the network expects i-vectors of dimension "
                                         f"{self.ivector_dim}, got {got}")
            values["ivector"] = ivectors.reshape(batch, 1, -1)
        for name, (num, dim) in plan.buffers.items():
            values[name] = feats.new_zeros(batch, num, dim)
        for step, free in zip(plan.steps, plan.free_after):
            x = self._eval_parts(step.parts, values, batch)
            x_in = x
            if step.layer_id is not None:
                x = self.layers[step.layer_id](x, step.index)
            if self.observer is not None:
                self.observer(step.node, x_in, x, step.index)
            if step.rows is None:
                values[step.node] = x
            else:
                values[step.node].index_copy_(1, step.rows, x)
            for name in free:
                values.pop(name, None)
        return values[plan.output]

    @staticmethod
    def _eval_parts(parts: list[Part], values: dict[str, torch.Tensor],
                    batch: int) -> torch.Tensor:
        out = []
        for part in parts:
            acc = None
            for term in sorted(part.terms, key=lambda t: t.scale != 1.0):
                src = values[term.source]
                if term.columns is not None:
                    src = src[..., term.columns[0]:term.columns[1]]
                g = src[:, term.rows] if isinstance(term.rows, slice) else gather_rows(src, term.rows)
                if acc is None:
                    acc = g if term.scale == 1.0 else g * term.scale
                else:
                    acc = acc.add(g, alpha=term.scale)
            if part.const is not None:
                c = part.const
                acc = c.expand(batch, -1, -1) if acc is None else acc + c
            out.append(acc)
        return out[0] if len(out) == 1 else torch.cat(out, dim=-1)

    def layer_of(self, component: str) -> Layer:
        """The layer computing the named component."""
        for layer in self.layers:
            if layer.comp is self.nnet.components.get(component):
                return layer
        raise KeyError(f"no layer for component {component!r}")

    def write_back(self) -> None:
        """Store every layer's current parameter values in its Kaldi component."""
        for layer in self.layers:
            layer.write_back()

