"""The feature front end of a Vosk-style model directory, Kaldi-exact: MFCC as
``compute-mfcc-feats`` (with Kaldi's own dither random numbers), online i-vectors as
``ivector-extract-online2``, and :class:`ModelDirFrontEnd` that runs both from the
directory's ``conf/`` and ``ivector/``."""
from .ivector import OnlineIvectorConfig, OnlineIvectorExtractor
from .mfcc import MfccConfig, compute_mfcc, read_wav, wav_mfcc
from .model_dir import ModelDirFrontEnd

__all__ = ["MfccConfig", "ModelDirFrontEnd", "OnlineIvectorConfig", "OnlineIvectorExtractor",
           "compute_mfcc", "read_wav", "wav_mfcc"]
