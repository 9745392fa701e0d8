"""kaldi-compress: make Kaldi nnet3 acoustic models smaller and faster, in Kaldi format."""
import os

# Before anything can load torch: idle OpenMP threads sleep (see compute/threads.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .nnet3 import Model, Nnet, read_model, write_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Model", "Nnet", "read_model", "write_model", "__version__"]
