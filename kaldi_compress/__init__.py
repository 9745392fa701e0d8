"""kaldi-compress: make Kaldi nnet3 acoustic models smaller and faster, in Kaldi format."""
from .nnet3 import Model, Nnet, read_model, write_model

__version__ = "0.1.0"
__all__ = ["Model", "Nnet", "read_model", "write_model", "__version__"]
