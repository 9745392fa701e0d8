"""Distillation fine-tuning: a compressed student learns the original teacher's outputs
on unlabeled audio, in Kaldi's test-mode forward pass, and is written back as Kaldi.

The entry point is :func:`finetune` with a :class:`FinetuneJob` (what
``kaldi-compress finetune`` runs).  Names load lazily, so importing the options
does not load torch.
"""
from importlib import import_module

_WHERE = {
    "FinetuneJob": "distill", "FinetuneResult": "distill", "finetune": "distill",
    "default_train_options": "distill",
    "LossOptions": "options", "TrainOptions": "options",
    "ChunkSet": "chunks", "Chunker": "chunks", "make_chunks": "chunks",
    "network_outputs": "chunks", "ChunkStream": "stream", "World": "parallel",
    "resolve_device": "device",
    "Corpus": "data", "Utterance": "data", "table_corpus": "data", "wav_corpus": "data",
    "Perturbation": "augment",
    "distill_loss": "loss",
    "EpochStats": "train", "Trainer": "train", "lr_factor": "train",
    "trainable_parameters": "train", "QuantizeAware": "qat",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)
