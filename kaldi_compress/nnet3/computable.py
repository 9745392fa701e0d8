"""Where nodes are computable: the one fixpoint every time analysis runs.

Kaldi's ComputationGraphBuilder decides, for each node and frame, whether it can be
computed: an input frame exists; a component node's descriptor is computable at every
frame the component needs (``Component.computable``); a dim-range node where its
source is; an output node where its descriptor is (``Descriptor.computable``).  With
recurrences a node can depend on itself at other frames, so the rule is applied
until nothing changes.  Both the network's context (:meth:`.Nnet.compute_context`)
and a chunk's plan (:mod:`kaldi_compress.compute.plan`) use this module.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .components import Component
from .descriptors import Descriptor


class Availability:
    """Per node, whether it is computable at each frame lo .. lo + n - 1 (false outside);
    calling it answers for any array of times."""

    def __init__(self, names, lo: int, n: int):
        self.lo, self.n = lo, n
        self.window = np.arange(lo, lo + n, dtype=np.int64)
        self.rows = {name: np.zeros(n, dtype=bool) for name in names}

    def __call__(self, name: str, t: np.ndarray) -> np.ndarray:
        idx = t - self.lo
        ok = (idx >= 0) & (idx < self.n)
        out = np.zeros(t.shape, dtype=bool)
        out[ok] = self.rows[name][idx[ok]]
        return out

    def provide(self, name: str, start: int, stop: int) -> None:
        """Node ``name`` (an input) exists at frames start .. stop - 1."""
        self.rows[name][max(start - self.lo, 0):max(stop - self.lo, 0)] = True

    def settle(self, rules: list[tuple[str, Callable[[np.ndarray], np.ndarray]]],
               passes: int) -> bool:
        """Apply ``rows[name] = rule(window)`` in order, pass after pass, until nothing
        changes (True) or ``passes`` passes are done (False)."""
        for _ in range(passes):
            changed = False
            for name, rule in rules:
                new = rule(self.window)
                if not np.array_equal(new, self.rows[name]):
                    self.rows[name] = new
                    changed = True
            if not changed:
                return True
        return False


def node_rule(kind: str, descriptor: Descriptor | None, component: Component | None,
              source: str | None, avail: Availability) -> Callable[[np.ndarray], np.ndarray]:
    """Where a (non-input) node is computable at times t, given ``avail``."""
    if kind == "dim-range-node":
        return lambda t: avail(source, t)
    if kind == "component-node":
        return lambda t: component.computable(t, lambda u: descriptor.computable(u, avail))
    return lambda t: descriptor.computable(t, avail)
