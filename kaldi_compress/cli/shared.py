"""Option blocks and steps that several subcommands share."""
from __future__ import annotations

import json
import sys

from ..errors import KaldiCompressError
from ..io.files import same_file, write_output
from ..nnet3 import Model, read_model, write_model


def add_model_io(p) -> None:
    """IN and OUT model arguments (``-`` for stdin/stdout)."""
    p.add_argument("input", help="input model (- for stdin)")
    p.add_argument("output", help="output model (- for stdout)")


def add_binary(p, kaldi_bool) -> None:
    p.add_argument("--binary", type=kaldi_bool, default=True, metavar="BOOL",
                   help="write binary (default true); --binary=false writes text")


def add_num_threads(p) -> None:
    p.add_argument("--num-threads", type=int, default=0, metavar="N",
                   help="torch CPU threads (default: one per core)")


def add_front_end(p, required: bool = False, what: str = "features") -> None:
    """``--model-dir`` (a Vosk-style dir with conf/ and ivector/) and ``--dither``."""
    p.add_argument("--model-dir", required=required, metavar="DIR",
                   help=f"Vosk-style model directory (conf/mfcc.conf, ivector/) for {what}")
    p.add_argument("--dither", type=float, default=None, metavar="F",
                   help="MFCC dither (default: conf/mfcc.conf's, else Kaldi's 1; 0 for "
                   "deterministic features)")


def add_chunking(p, frames_per_chunk: int, from_model_dir: bool) -> None:
    """nnet3-compute's chunk options: ``--frame-subsampling-factor`` (default 1, or with
    ``from_model_dir`` conf/model.conf's value) and ``--frames-per-chunk``."""
    p.add_argument("--frame-subsampling-factor", type=int, default=0 if from_model_dir else 1,
                   metavar="N", help="output every N-th frame (3 for chain models); default "
                   + ("conf/model.conf's value with --model-dir, else 1" if from_model_dir
                      else "1"))
    p.add_argument("--frames-per-chunk", type=int, default=frames_per_chunk, metavar="N",
                   help=f"input frames per chunk (default {frames_per_chunk}; raised to a "
                   "multiple of the subsampling factor and the network's modulus)")


def add_calibration(p, required: bool, what: str, shrinkage: bool = True) -> None:
    """The calibration audio: ``--calibration-data`` (repeatable) with ``--model-dir`` for
    its features, or Kaldi tables (``--calibration-feats``, ``--calibration-ivectors``,
    ``--online-ivector-period``, ``--frame-subsampling-factor``); ``--max-utts`` (and
    ``--shrinkage`` for the commands that fit layers to the statistics).  ``required``:
    the command cannot run without them (checked by :func:`calibration`)."""
    need = "; this or --calibration-feats is required" if required else ""
    p.set_defaults(calibration_required=required)
    p.add_argument("--calibration-data", metavar="DIR", action="append", default=[],
                   help=f"{what}: a dir of 16 kHz wavs (unlabeled, from the target domain; "
                   f"not the audio you score on); repeatable; needs --model-dir{need}")
    p.add_argument("--model-dir", metavar="DIR",
                   help="Vosk-style model dir (conf/, ivector/) for features of "
                   "--calibration-data")
    p.add_argument("--calibration-feats", metavar="RSPEC",
                   help="instead of --calibration-data, as nnet3-compute reads them: a Kaldi "
                   "feature table, e.g. scp:data/train_hires/feats.scp or 'ark:apply-cmvn-online "
                   "... |' (from scp: lines spread evenly over the table, from ark: the first)")
    p.add_argument("--calibration-ivectors", default="", metavar="RSPEC",
                   help="with --calibration-feats: online i-vectors as matrices, e.g. "
                   "scp:exp/nnet3/ivectors_train_hires/ivector_online.scp")
    p.add_argument("--online-ivector-period", type=int, default=0, metavar="N",
                   help="frames per row of --calibration-ivectors (the ivector_period file)")
    p.add_argument("--frame-subsampling-factor", type=int, default=1, metavar="N",
                   help="with --calibration-feats: output every N-th frame, as decoding does "
                   "(3 for chain models; default 1; --model-dir's conf gives it otherwise)")
    p.add_argument("--max-utts", type=int, default=120, metavar="N",
                   help="calibration utterances to use in all (default 120; 0: all)")
    if not shrinkage:
        return
    p.add_argument("--shrinkage", type=float, default=0.0, metavar="A",
                   help="fit on the calibration statistics plus isotropic noise of A times "
                   "their mean variance: a ridge against directions the audio barely spans "
                   "(default 0)")


def add_width_options(p, kaldi_bool) -> None:
    """``--refit``, ``--min-width`` and ``--closed-loop`` of width pruning
    (:class:`..compress.prune.WidthOptions`)."""
    p.add_argument("--refit", type=kaldi_bool, default=True, metavar="BOOL",
                   help="pruning: refit the layers reading a pruned space by least squares "
                   "(default true; false: removed units are replaced by their means)")
    p.add_argument("--min-width", type=int, default=8, metavar="N",
                   help="pruning: never prune a space below N units (default 8)")
    p.add_argument("--closed-loop", type=kaldi_bool, default=True, metavar="BOOL",
                   help="refit each layer on the inputs of the compressed layers below it, "
                   "to reproduce the original network's values (default true)")


def width_options(args) -> dict:
    return {"refit": args.refit, "min_width": args.min_width, "closed_loop": args.closed_loop}


def calibration(args):
    """The calibration utterances (a compress.calibrate.Calibration), or None."""
    tables = [f"--{o}" for o, given in (
        ("calibration-ivectors", args.calibration_ivectors),
        ("online-ivector-period", args.online_ivector_period),
        ("frame-subsampling-factor", args.frame_subsampling_factor != 1)) if given]
    shrinkage = getattr(args, "shrinkage", 0.0)
    if args.calibration_feats:
        if args.calibration_data or args.model_dir:
            raise KaldiCompressError("give --calibration-data (with --model-dir) or "
                                     "--calibration-feats, not both")
        from ..compress.calibrate import load_calibration_tables
        return load_calibration_tables(
            args.calibration_feats, args.calibration_ivectors, args.online_ivector_period,
            max_utts=args.max_utts, frame_subsampling_factor=args.frame_subsampling_factor,
            shrinkage=shrinkage)
    if tables:
        raise KaldiCompressError(f"{tables[0]} needs --calibration-feats")
    if not args.calibration_data:
        if args.calibration_required:
            raise KaldiCompressError(f"{args.command} needs calibration audio: "
                                     "--calibration-data DIR with --model-dir DIR, or "
                                     "--calibration-feats RSPEC")
        return None
    if not args.model_dir:
        raise KaldiCompressError("--calibration-data needs --model-dir")
    from ..compress.calibrate import load_calibration
    return load_calibration(args.model_dir, args.calibration_data, max_utts=args.max_utts,
                            shrinkage=shrinkage)


def compress_model(args, opts, method) -> tuple[Model, int, object]:
    """The steps of every compression command before writing: refuse to overwrite IN,
    check ``opts``, read IN, load the calibration audio (data-aware methods), and run
    ``method(nnet, opts)``; returns the model, its parameters before, and the result."""
    refuse_overwrite(args)
    opts.check()
    model = read_model(args.input)
    before = model.nnet.num_parameters
    if hasattr(opts, "calibration"):
        opts.calibration = calibration(args)
    return model, before, method(model.nnet, opts)


def refuse_overwrite(args) -> None:
    """Never write over the input model."""
    if same_file(args.input, args.output):
        raise KaldiCompressError(f"{args.output}: refusing to overwrite the input")


def add_compress_options(p, kaldi_bool, shrinkage_help: str | None = None) -> None:
    """What every compression method takes (:class:`..compress.spine.CompressOptions`;
    ``--shrinkage-threshold`` only for methods with per-layer rules that use it), the
    output's format and the ``--report`` file; then IN and OUT."""
    p.add_argument("--components", default="*", metavar="GLOB",
                   help="component-name pattern (* wildcard); default *")
    p.add_argument("--param-ratio", type=float, metavar="R",
                   help="global budget: R times the input's parameter count (as info reports)")
    p.add_argument("--target-params", type=int, metavar="N", help="global budget in parameters")
    if shrinkage_help:
        p.add_argument("--shrinkage-threshold", type=float, default=1.0, metavar="S",
                       help=shrinkage_help)
    add_binary(p, kaldi_bool)
    p.add_argument("--report", metavar="FILE", help="also write the per-layer table as JSON")
    add_model_io(p)


def common_options(args) -> dict:
    """The :class:`..compress.spine.CompressOptions` fields, from the parsed arguments."""
    return {"components": args.components, "param_ratio": args.param_ratio,
            "target_params": args.target_params,
            "shrinkage_threshold": getattr(args, "shrinkage_threshold", 1.0),
            "progress": sys.stderr.isatty()}


def finish(args, model: Model, before: int, reports) -> None:
    """Print the parameter totals, write the model and (with --report) the JSON table."""
    from ..compress.spine import format_report, report_dict
    if reports is not None:
        print(format_report(reports), file=sys.stderr, end="")
    after = model.nnet.num_parameters
    print(f"kaldi-compress: parameters {before} -> {after} ({after / before:.4f}x)",
          file=sys.stderr)
    write_model(model, args.output, binary=args.binary)
    if args.report and reports is not None:
        write_output(args.report, [json.dumps(report_dict(before, after, reports),
                                              indent=1).encode()])


def add_scoring_options(p, kaldi_bool) -> None:
    """``--cer`` and ``--normalize``, for the commands that score text (wer, wer-bootci)."""
    from ..evaluate.scoring import NORMALIZERS
    p.add_argument("--cer", type=kaldi_bool, default=False, metavar="BOOL",
                   help="score characters with spaces removed (%%CER), the Korean convention")
    p.add_argument("--normalize", choices=sorted(NORMALIZERS), default="none",
                   help="text normalisation applied to references and hypotheses (default "
                   "none); korean: drop punctuation and annotation brackets, noise tokens, "
                   "lowercase")
