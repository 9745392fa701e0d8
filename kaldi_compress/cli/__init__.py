"""The ``kaldi-compress`` command: Kaldi-style options, one subcommand per job.

Errors in the input end in one line on stderr and exit status 1; nothing is written.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import KaldiCompressError
from . import (compare, compress, compute, copy, fidelity, finetune, info, pack, prune, svd, tt,
               wer, wer_bootci)

COMMANDS = {"info": info, "copy": copy, "svd": svd, "tt": tt, "prune": prune,
            "compress": compress, "compute": compute,
            "fidelity": fidelity, "finetune": finetune, "wer": wer, "wer-bootci": wer_bootci,
            "compare": compare,
            "pack": pack, "unpack": pack.UNPACK}


def kaldi_bool(value: str) -> bool:
    """Kaldi's bool option values: true/false (also 1/0, yes/no)."""
    v = value.lower()
    if v in ("true", "t", "1", "yes"):
        return True
    if v in ("false", "f", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _expand_bool_flags(argv: list[str], bool_options: set[str]) -> list[str]:
    """Kaldi lets ``--raw`` stand for ``--raw=true``; argparse needs the value."""
    out = []
    for a in argv:
        if a == "--":
            out.extend(argv[len(out):])
            break
        out.append(a + "=true" if a in bool_options else a)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaldi-compress",
        description="Make Kaldi nnet3 models smaller and faster, keeping Kaldi's format.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, mod in COMMANDS.items():
        mod.add_parser(sub, kaldi_bool)
    return parser


def bool_options(parser: argparse.ArgumentParser) -> set[str]:
    out = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in action.choices.values():
                out |= bool_options(p)
        elif action.type is kaldi_bool:
            out.update(action.option_strings)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_expand_bool_flags(argv, bool_options(parser)))

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"kaldi-compress: warning: {message}", file=sys.stderr)

    warnings.showwarning = show_warning
    try:
        return COMMANDS[args.command].run(args) or 0
    except KaldiCompressError as e:
        print(f"kaldi-compress: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kaldi-compress: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
