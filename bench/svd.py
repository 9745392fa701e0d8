"""SVD compression speed, and Vosk decoding speed of compressed models.

1. Compressing every layer of the prepared Korean model (weights-only) against the
   bare LAPACK SVDs (numpy gesdd) of the same matrices.  Target: within 1.5x.
2. Kaldi-compatible apply-svd, whole runs (read, SVD, write) against Kaldi's own
   ``nnet3-am-copy --edits='apply-svd ...'`` (kaldi_golden README section 6:
   0.125 s for bottleneck-dim=32, 0.090 s for energy-threshold=0.9).
3. With ``--decode``: Vosk real-time factor of compressed models against the
   original on ko_wide_dev (target at ratio 0.5: at most 0.75x the baseline RTF).
Timings are medians of repeated runs, one BLAS thread (set before numpy loads).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse   # noqa: E402
import subprocess   # noqa: E402
import sys   # noqa: E402
import tempfile   # noqa: E402
from pathlib import Path   # noqa: E402

import numpy as np   # noqa: E402

from kaldi_compress import read_model   # noqa: E402
from kaldi_compress.compress.units import find_units, unit_matrix   # noqa: E402
from kaldi_compress.compress.svd import SvdOptions, svd_compress   # noqa: E402
from kaldi_compress.evaluate.vosk_decode import vosk_korean_model_dir   # noqa: E402
from kaldi_compress.nnet3 import parse_model   # noqa: E402
from kaldi_compress.nnet3.edit import prepare_for_test   # noqa: E402
from timing import median_time   # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def prepared(raw: bytes):
    m = parse_model(bytearray(raw), "final.mdl")
    prepare_for_test(m.nnet)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--decode", action="store_true", help="also measure Vosk RTF (minutes)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ko_wide_dev"))
    ap.add_argument("--model", action="append", default=[], metavar="NAME=MDL",
                    help="with --decode: also time this model (e.g. one from recipes/demo.py)")
    args = ap.parse_args()
    extra = [tuple(m.split("=", 1)) for m in args.model]
    if any(len(m) != 2 for m in extra):
        ap.error("--model takes NAME=MDL")
    mdl = vosk_korean_model_dir() / "am" / "final.mdl"
    raw = mdl.read_bytes()
    base = prepared(raw)
    mats = [unit_matrix(base.nnet, u).astype(np.float64) for u in find_units(base.nnet)]
    t_lapack = median_time(lambda: [np.linalg.svd(w, full_matrices=False) for w in mats], args.repeats)
    models = [prepared(raw) for _ in range(args.repeats)]
    it = iter(models)
    t_ours = median_time(lambda: svd_compress(next(it).nnet, SvdOptions(param_ratio=0.5)), args.repeats)
    print(f"{'operation':<62}{'ours (s)':>10}{'reference (s)':>15}{'ratio':>8}")
    print(f"{'svd --param-ratio=0.5, all ' + str(len(mats)) + ' layers (in-process)':<62}"
          f"{t_ours:>10.3f}{t_lapack:>15.3f}{t_ours / t_lapack:>7.2f}x   (reference: bare gesdd)")
    from kaldi_compress.compress.kaldi_svd import apply_svd_kaldi
    with tempfile.TemporaryDirectory() as tmp:
        for label, kw, kaldi in [("apply-svd bottleneck-dim=32: read, SVD, write (in-process)",
                                  dict(bottleneck_dim=32, shrinkage_threshold=0.99), 0.125),
                                 ("apply-svd energy-threshold=0.9: read, SVD, write (in-process)",
                                  dict(energy_threshold=0.9, shrinkage_threshold=0.8), 0.090)]:
            def job():
                m = read_model(str(mdl))
                apply_svd_kaldi(m.nnet, "*", **kw)
                Path(f"{tmp}/out.mdl").write_bytes(m.to_bytes())
            t = median_time(job, args.repeats)
            print(f"{label:<62}{t:>10.3f}{kaldi:>15.3f}{t / kaldi:>7.2f}x   (reference: Kaldi)")
        for label, opts, kaldi in [
                ("kaldi-compress svd --kaldi-compatible b=32 (process)",
                 ["--bottleneck-dim=32", "--shrinkage-threshold=0.99"], 0.125),
                ("kaldi-compress svd --kaldi-compatible e=0.9 (process)",
                 ["--energy-threshold=0.9", "--shrinkage-threshold=0.8"], 0.090)]:
            cmd = [sys.executable, "-m", "kaldi_compress", "svd", "--kaldi-compatible", *opts,
                   str(mdl), f"{tmp}/out.mdl"]
            t = median_time(lambda: subprocess.run(cmd, check=True, capture_output=True), args.repeats)
            print(f"{label:<62}{t:>10.3f}{kaldi:>15.3f}{t / kaldi:>7.2f}x   (reference: Kaldi)")
        if args.decode:
            decode_speed(raw, Path(args.data), Path(tmp), extra)


# the narrowest search Kaldi's decoder accepts (it requires max-active > 1)
NARROW_SEARCH = "--min-active=1\n--max-active=2\n--beam=1\n--lattice-beam=0.5\n"


def decode_speed(raw: bytes, data: Path, tmp: Path, extra: list[tuple[str, str]]) -> None:
    """Vosk RTF with the model's own search settings, and with the search narrowed to
    two active tokens (``--max-active=2``, Kaldi's minimum): what remains is the front
    end and the network, so the second column shows how much of decoding the acoustic
    model is."""
    from kaldi_compress import write_model
    from kaldi_compress.evaluate.vosk_decode import decode, list_wavs, model_dir_with_am
    wavs = list_wavs(data)
    md = vosk_korean_model_dir()
    models = []
    for name, ratio in [("prepared", None), ("svd 0.5 (weights only)", 0.5)]:
        m = prepared(raw)
        if ratio:
            svd_compress(m.nnet, SvdOptions(param_ratio=ratio))
        path = tmp / f"{name.replace(' ', '_')}.mdl"
        write_model(m, str(path))
        models.append((name, path, m.nnet.num_parameters))
    models += [(name, Path(mdl), read_model(mdl).nnet.num_parameters) for name, mdl in extra]
    rows = []
    for i, (name, path, params) in enumerate(models):
        full = model_dir_with_am(md, path, tmp / f"v{i}")
        narrow = model_dir_with_am(md, path, tmp / f"n{i}")
        with open(narrow / "conf" / "model.conf", "a") as f:
            f.write(NARROW_SEARCH)
        rows.append((name, params, decode(full, wavs, jobs=1).rtf,
                     decode(narrow, wavs, jobs=1).rtf))
    print(f"\n{'Vosk decoding (1 process)':<26}{'parameters':>12}{'RTF':>8}{'vs base':>9}"
          f"{'RTF, max-active=2':>19}{'vs base':>9}")
    for name, params, rtf, rtf_n in rows:
        print(f"{name:<26}{params:>12,}{rtf:>8.3f}{rtf / rows[0][2]:>8.2f}x"
              f"{rtf_n:>19.3f}{rtf_n / rows[0][3]:>8.2f}x")


if __name__ == "__main__":
    main()
