"""Kaldi-exact forward computation: the nnet3 forward pass in torch, nnet3-compute's
chunking, and the MFCC / online i-vector front end of a Vosk-style model."""
from .chunking import ComputeOptions, SimpleComputer
from .fidelity import Fidelity, compare_outputs, fidelity
from .forward import NnetForward
from .frontend import MfccConfig, compute_mfcc, read_wav, wav_mfcc
from .ivector import OnlineIvectorConfig, OnlineIvectorExtractor
from .pipeline import ModelDirFrontEnd

__all__ = ["ComputeOptions", "Fidelity", "MfccConfig", "ModelDirFrontEnd", "NnetForward",
           "OnlineIvectorConfig", "OnlineIvectorExtractor", "SimpleComputer", "compare_outputs",
           "compute_mfcc", "fidelity", "read_wav", "wav_mfcc"]
