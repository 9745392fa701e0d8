"""Compression methods on one spine: select units, price options, budget, apply, report.

Modules:

* :mod:`.units` -- the compressible units of a network (structure only);
* :mod:`.spine` -- what every method shares: :class:`~.spine.CompressOptions`,
  :func:`~.spine.select_units`, :func:`~.spine.within_budget`, the one
  :class:`~.spine.LayerReport` and :func:`~.spine.format_report`;
* :mod:`.budget` -- one option per unit under a parameter budget (Lagrangian);
* :mod:`.lowrank` -- the math of (whitened) truncated SVD;
  :mod:`.rewrite` -- a unit's low-rank fit and the network rewritten at rank k;
* methods: :mod:`.svd` (SVD bottlenecks), :mod:`.kaldi_svd` (exactly Kaldi's
  apply-svd), :mod:`.tt_compress` (tensor-train layers; math in :mod:`.tt`, the Kaldi
  components in :mod:`.tt_kaldi`);
* data-aware: :mod:`.calibrate` (calibration utterances from wavs or Kaldi tables,
  activation statistics), :mod:`.sensitivity` (how a unit's error grows to the output).

How a method plugs in (what the next one, e.g. structured width pruning, writes):

1. one module with its math, one function per step with the formula in its
   docstring, and ``XOptions(CompressOptions)`` naming its per-layer rules in
   ``RULES`` (``check_rules`` checks their values);
2. a pricing function ``x_options(nnet, unit, ...) -> list[Option]``: for each choice
   its parameters (as Kaldi counts them) and damage on the budget's scale (relative
   squared error weights-only, as :func:`.svd.svd_options`), the choice itself in
   ``Option.tag``; a joint budget simply concatenates several methods' options;
3. ``x_compress(nnet, opts) -> list[LayerReport]``: ``select_units``, price,
   ``within_budget``, apply each chosen tag, one ``LayerReport`` per unit (fill the
   columns that apply; the table shows only those);
4. registration: a ``cli/x.py`` subcommand using :mod:`..cli.shared`
   (``add_compress_options``, ``common_options``, ``finish``) and its entry in
   ``cli.COMMANDS``.
"""
