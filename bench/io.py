"""Read/write speed and memory of the Korean model against Kaldi's nnet3-am-copy.

Kaldi's figures (shared/data/kaldi_golden/README.md section 6, same machine kind,
median of 5 whole-process runs): ``nnet3-am-copy final.mdl out.mdl`` 0.058 s,
``nnet3-am-copy --binary=false`` 0.85 s.  Ours are in-process (median of 5), so
the comparison leaves Python's start-up out; target: within 2x of Kaldi.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

from kaldi_compress import read_model, write_model
from kaldi_compress.evaluate.vosk_decode import vosk_korean_model_dir
from timing import median_time

KALDI = {"binary copy": 0.058, "binary -> text copy": 0.85}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(vosk_korean_model_dir() / "am" / "final.mdl"))
    args = ap.parse_args()
    path = args.model
    size = Path(path).stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        out_bin, out_txt = f"{tmp}/copy.mdl", f"{tmp}/copy.txt.mdl"
        model = read_model(path)
        write_model(model, out_txt, binary=False)
        rows = [
            ("binary read", median_time(lambda: read_model(path)), None),
            ("binary write", median_time(lambda: write_model(model, out_bin)), None),
            ("binary copy", median_time(lambda: write_model(read_model(path), out_bin)),
             KALDI["binary copy"]),
            ("text write", median_time(lambda: write_model(model, out_txt, binary=False)), None),
            ("binary -> text copy",
             median_time(lambda: write_model(read_model(path), out_txt, binary=False)),
             KALDI["binary -> text copy"]),
            ("text read", median_time(lambda: read_model(out_txt), repeats=3), None),
            ("CLI binary copy*", median_time(lambda: subprocess.run(
                [sys.executable, "-m", "kaldi_compress", "copy", path, out_bin], check=True)),
             KALDI["binary copy"]),
            ("CLI binary -> text*", median_time(lambda: subprocess.run(
                [sys.executable, "-m", "kaldi_compress", "copy", "--binary=false", path, out_txt],
                check=True)), KALDI["binary -> text copy"]),
        ]
        tracemalloc.start()
        read_model(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"model: {path} ({size:,} bytes)")
    print(f"{'operation':<22}{'ours (s)':>10}{'Kaldi (s)':>11}{'ours/Kaldi':>12}")
    for name, ours, kaldi in rows:
        k = f"{kaldi:.3f}" if kaldi else "-"
        ratio = f"{ours / kaldi:.2f}x" if kaldi else "-"
        print(f"{name:<22}{ours:>10.3f}{k:>11}{ratio:>12}")
    print("* whole process, like Kaldi's figures: includes Python and numpy start-up")
    print(f"peak memory allocated while reading: {peak:,} bytes "
          f"({peak / size:.2f}x the file: the file buffer, parameters are views into it)")


if __name__ == "__main__":
    main()
