"""Training a TT layer through its cores: one dense product per frame, not the chain.

A ``tt`` layer is written as a chain of Permute and RepeatedAffine components
(:mod:`..compress.tt_kaldi`) computing the affine map

    y = chain(x) = W x + c,   W = TT(G_1, ..., G_d),   c = chain(0),

W the TT-matrix of the cores G_k that the RepeatedAffine blocks hold (permuted;
:mod:`..compress.tt_chain` finds where) and c what the blocks' biases add.  Run per frame,
the chain is 2d-1 small products and permutations, slow to train through.  Here, once per
forward pass (one training step), each chain's W is rebuilt from its cores,
W[i, j] = G_1[:, i_1, j_1, :] ... G_d[:, i_d, j_d, :] (:func:`..compress.tt.tt_to_matrix`
with torch's einsum: autograd reaches the blocks), c by running the chain on one zero
frame, and every frame takes one dense product W x + c.  The parameters trained are still the chain's blocks and biases, so the
student is written back with its TT structure, the cores updated.
"""
from __future__ import annotations

import numpy as np
import torch

from ..compress.tt import tt_to_matrix
from ..compress.tt_chain import TTChain, find_chains
from ..compute.forward import NnetForward
from ..compute.layers import Layer, make_layer
from ..compute.layers.base import linear
from ..nnet3 import Nnet
from ..nnet3.components import LinearComponent
from ..nnet3.graph import Node


class DenseTT(Layer):
    """A TT chain computed as y = W x + c, with W and c rebuilt by :meth:`rebuild`."""

    def __init__(self, comp, chain: TTChain, links: list[Layer]):
        super().__init__(comp)
        self.chain = chain
        self.links = tuple(links)        # the chain's layers (their parameters are trained)
        for k, g in enumerate(chain.gathers):
            self.register_buffer(f"gather{k}", torch.as_tensor(g, dtype=torch.long))
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def cores(self) -> list[torch.Tensor]:
        """G_k = block_k.flat[gather_k], differentiable in the blocks."""
        return [self.links[p].weight.reshape(-1)[getattr(self, f"gather{k}")].reshape(s)
                for k, (p, s) in enumerate(zip(self.chain.core_steps, self.chain.core_shapes))]

    def rebuild(self) -> None:
        """W := TT(G_1..G_d) and c := chain(0) from the current parameters."""
        self.weight = tt_to_matrix(self.cores(), torch.einsum)
        x = self.weight.new_zeros(1, 1, self.chain.in_dim)
        for link in self.links:
            x = link(x)
        self.bias = x.reshape(-1)

    def forward(self, x, index=None):
        return linear(x, self.weight, self.bias)


def dense_network(nnet: Nnet, chains: list[TTChain]) -> tuple[Nnet, dict[str, TTChain]]:
    """A copy of ``nnet`` (components shared) in which each chain is one node, named as its
    last node and reading what its first node read, computing a placeholder linear
    component of the chain's dims; and the placeholder components' names -> chains."""
    if not chains:
        return nnet, {}
    nodes, comps, placeholders = list(nnet.nodes), dict(nnet.components), {}
    for ch in chains:
        name = f"{ch.components[-1]}.dense"
        comps[name] = LinearComponent.create(np.zeros((ch.out_dim, ch.in_dim), np.float32))
        placeholders[name] = ch
        fused = Node("component-node", ch.nodes[-1], component=name, descriptor=ch.descriptor)
        nodes = [fused if n.name == ch.nodes[-1] else n for n in nodes
                 if n.name not in ch.nodes[:-1]]
    return Nnet(nodes, comps), placeholders


class DenseTTForward(NnetForward):
    """The test-mode forward pass of ``nnet`` with every TT layer computed densely from
    its cores (see the module docstring); otherwise :class:`NnetForward` itself.
    ``nnet`` is the network trained and written back."""

    def __init__(self, nnet: Nnet, output: str = "output"):
        fused, placeholders = dense_network(nnet, find_chains(nnet))
        super().__init__(fused, output)
        self.nnet = nnet
        self.dense: list[DenseTT] = []
        for i, layer in enumerate(list(self.layers)):
            chain = placeholders.get(_name_of(fused, layer.comp))
            if chain is None:
                continue
            links = [make_layer(nnet.components[c]) for c in chain.components]
            dense = DenseTT(layer.comp, chain, links)
            self.layers[i] = dense
            self.layers.extend(links)
            for node in self.graph.nodes:
                if node.layer_id == i:
                    node.layer = dense
            self.dense.append(dense)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        for d in self.dense:
            d.rebuild()
        return super().forward(*args, **kwargs)


def _name_of(nnet: Nnet, comp) -> str | None:
    return next((k for k, c in nnet.components.items() if c is comp), None)
