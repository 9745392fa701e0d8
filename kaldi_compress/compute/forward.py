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
        # the used nodes keep the network's order, so they are in order when it is
        self.graph = Graph(nodes, output, nnet.modulus(), nnet.in_order())
        self.input_dim = dims.get("input") if "input" in used else None
        self.ivector_dim = dims.get("ivector") if "ivector" in used else None
        self.output_dim = dims[output]
        self._plans: dict[tuple[Geometry, frozenset[str]], Plan] = {}
        # Called as observer(node, layer input, node output, step index) after every
        # step, e.g. to collect activation statistics; None for plain evaluation.
        self.observer = None
        # Node names: stop once they are computed (for an observer that needs no more);
        # forward then returns None.
        self.stop_after: frozenset[str] = frozenset()

    def plan(self, geometry: Geometry, given: frozenset[str] = frozenset()) -> Plan:
        """The (cached) plan of a chunk geometry, when the nodes ``given`` are supplied."""
        plan = self._plans.get((geometry, given))
        if plan is None:
            plan = (self.plan(geometry).starting_from(given) if given
                    else PlanBuilder(self.graph, geometry).build())
            self._plans[(geometry, given)] = plan
        return plan

    def forward(self, feats: torch.Tensor | None, ivectors: torch.Tensor | None,
                geometry: Geometry, given: dict[str, torch.Tensor] | None = None
                ) -> torch.Tensor:
        """Outputs (B, num_outputs, output_dim) of a batch of chunks of one geometry
        (None once the nodes ``stop_after`` are computed, if the plan computes them).

        ``given`` supplies node values, (B, len(plan.times[node]), dim), which are then
        not computed (and may be overwritten); ``feats`` may be None when no remaining
        step reads the input.
        """
        given = given or {}
        plan = self.plan(geometry, frozenset(given))
        values: dict[str, torch.Tensor] = dict(given)
        if plan.uses_input and self.input_dim is not None:
            if feats is None:
                raise KaldiCompressError("the network needs its input features")
            if feats.shape[1] != geometry.num_inputs:
                raise KaldiCompressError(f"chunk has {feats.shape[1]} input frames, "
                                         f"geometry says {geometry.num_inputs}")
            if feats.shape[2] != self.input_dim:
                raise KaldiCompressError(f"the network expects input features of dimension "
                                         f"{self.input_dim}, got {feats.shape[2]}")
            values["input"] = feats.index_select(1, plan.input_rows)
        batch = next(iter(values.values())).shape[0] if values else ivectors.shape[0]
        if plan.uses_ivector:
            if ivectors is None or ivectors.shape[-1] != self.ivector_dim:
                got = "none" if ivectors is None else f"dimension {ivectors.shape[-1]}"
                raise KaldiCompressError(f"the network expects i-vectors of dimension "
                                         f"{self.ivector_dim}, got {got}")
            values["ivector"] = ivectors.reshape(batch, 1, -1)
        for name, (num, dim) in plan.buffers.items():
            values[name] = torch.zeros(batch, num, dim)
        # without autograd or an observer, a layer may overwrite an input nobody else reads
        reuse = self.observer is None and not torch.is_grad_enabled()
        last = max((i for i, st in enumerate(plan.steps) if st.node in self.stop_after),
                   default=None) if self.stop_after else None
        for i, (step, free) in enumerate(zip(plan.steps, plan.free_after)):
            x, owned = self._eval_parts(step.parts, values, batch, free if reuse else ())
            x_in = x
            if step.layer_id is not None:
                layer = self.layers[step.layer_id]
                if reuse and owned:
                    x = layer.forward_inplace(x, step.index)
                else:
                    x = layer(x, step.index)
            if self.observer is not None:
                self.observer(step.node, x_in, x, step.index)
            if i == last:
                return None
            if step.rows is None:
                values[step.node] = x
            else:
                values[step.node].index_copy_(1, step.rows, x)
            for name in free:
                values.pop(name, None)
        return values[plan.output]

    @staticmethod
    def _eval_parts(parts: list[Part], values: dict[str, torch.Tensor], batch: int,
                    free: list[str] | tuple = ()) -> tuple[torch.Tensor, bool]:
        """The step's input (its parts concatenated), and whether it may be overwritten.

        It may when it is a new tensor, or a view of a node in ``free`` (no later step
        reads it) whose storage no other live value shares and no other term reads.
        """
        read = [t.source for p in parts for t in p.terms]

        def exclusive(name: str) -> bool:
            if name not in free or name in ("input", "ivector") or read.count(name) > 1:
                return False
            ptr = values[name].untyped_storage().data_ptr()
            return all(v.untyped_storage().data_ptr() != ptr
                       or (other in free and other not in read)
                       for other, v in values.items() if other != name)

        out = []
        for part in parts:
            acc, owned = None, False
            for term in sorted(part.terms, key=lambda t: t.scale != 1.0):
                src = values[term.source]
                if term.columns is not None:
                    src = src[..., term.columns[0]:term.columns[1]]
                if isinstance(term.rows, slice):
                    g, mine = src[:, term.rows], exclusive(term.source)
                else:
                    g, mine = gather_rows(src, term.rows), True
                if acc is None:
                    if term.scale == 1.0:
                        acc, owned = g, mine
                    else:
                        acc, owned = (g.mul_(term.scale) if mine else g * term.scale), True
                elif owned:
                    acc.add_(g, alpha=term.scale)
                else:
                    acc, owned = acc.add(g, alpha=term.scale), True
            if part.const is not None:
                if acc is None:
                    acc, owned = part.const.expand(batch, -1, -1), False
                elif owned:
                    acc.add_(part.const)
                else:
                    acc, owned = acc + part.const, True
            out.append((acc, owned))
        if len(out) > 1:
            return torch.cat([acc for acc, _ in out], dim=-1), True
        return out[0]

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

