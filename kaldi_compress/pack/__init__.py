"""Packs: weight sharing (a k-means codebook per weight matrix) and entropy-coded
indices (zstandard) in a checksummed ``.kcz`` file, for shipping Kaldi models;
``unpack`` gives back a Kaldi model whose weights are the codebook values.

* :mod:`.codebook` -- the clustering: codebook and indices of one matrix;
* :mod:`.skeleton` -- which matrices are weights; the model's bytes without them;
* :mod:`.container` -- the ``.kcz`` header, checksum and bounded reads;
* :mod:`.rounding` -- data-aware rounding onto a codebook (error fed forward, GPTQ);
* :mod:`.packing` -- ``pack_model`` / ``unpack_model``;
* :mod:`.report` -- the per-layer table and the gzip/xz peers.
"""
from .packing import pack_model, quantized_model, unpack_model
from .report import LayerRow, PackReport

__all__ = ["LayerRow", "PackReport", "pack_model", "quantized_model", "unpack_model"]
