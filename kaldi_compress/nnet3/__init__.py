"""Kaldi nnet3 objects: components, graph, network and model files."""
from .model import Model, parse_model, read_model, write_model
from .nnet import Context, Nnet
from .transition import TransitionModel

__all__ = ["Context", "Model", "Nnet", "TransitionModel", "parse_model", "read_model",
           "write_model"]
