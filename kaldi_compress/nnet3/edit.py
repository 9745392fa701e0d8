"""Whole-network edits in the spirit of Kaldi's ``--edits`` directives."""
from __future__ import annotations

from .components import (BatchNormComponent, DropoutComponent, GeneralDropoutComponent,
                         SpecAugmentTimeMaskComponent)
from .nnet import Nnet


def set_test_mode(nnet: Nnet) -> None:
    """Kaldi SetBatchnormTestMode(true) + SetDropoutTestMode(true)."""
    for comp in nnet.components.values():
        if isinstance(comp, (BatchNormComponent, DropoutComponent)):
            comp.set("<TestMode>", True)
        elif isinstance(comp, (GeneralDropoutComponent, SpecAugmentTimeMaskComponent)):
            comp.set("<TestMode>", True)


def prepare_for_test(nnet: Nnet) -> tuple[list[str], list[str]]:
    """Keep only the ``output`` output: Kaldi's ``remove-output-nodes`` for every other
    output, then ``remove-orphans``; and set test mode as Kaldi's
    ``--prepare-for-test`` does.  Layers are not collapsed, so they stay available
    for compression.  Returns the removed (nodes, components)."""
    removed_outputs = [n for n in nnet.output_names() if n != "output"]
    if "output" not in nnet.output_names():
        from ..errors import GraphError
        raise GraphError("the network has no output node named 'output'")
    nnet.nodes = [n for n in nnet.nodes if n.name not in removed_outputs]
    nodes, comps = nnet.remove_orphans()
    set_test_mode(nnet)
    return removed_outputs + nodes, comps
