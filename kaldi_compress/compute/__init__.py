"""Kaldi-exact forward computation: the nnet3 forward pass in torch and nnet3-compute's
chunking.  The features it consumes come from :mod:`kaldi_compress.frontend`."""
from .chunking import ComputeOptions, SimpleComputer
from .fidelity import Fidelity, compare_networks, compare_outputs, fidelity, fidelity_tables
from .forward import NnetForward

__all__ = ["ComputeOptions", "Fidelity", "NnetForward", "SimpleComputer", "compare_networks",
           "compare_outputs", "fidelity", "fidelity_tables"]
