"""Distillation fine-tuning: a compressed student learns the original teacher's outputs
on unlabeled audio, in Kaldi's test-mode forward pass, and is written back as Kaldi."""
from .chunks import ChunkSet, make_chunks, network_outputs
from .data import Corpus, Utterance, table_corpus, wav_corpus
from .loss import LossOptions, distill_loss
from .train import EpochStats, Trainer, TrainOptions, lr_factor, trainable_parameters

__all__ = ["ChunkSet", "Corpus", "EpochStats", "LossOptions", "TrainOptions", "Trainer",
           "Utterance", "distill_loss", "lr_factor", "make_chunks", "network_outputs",
           "table_corpus", "trainable_parameters", "wav_corpus"]
