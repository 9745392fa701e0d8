"""Calibration from Kaldi tables (``--calibration-feats``, ``--calibration-ivectors``): what a
Kaldi recipe has (feats.scp, ivector_online.scp) instead of wav dirs and a Vosk model dir.
The same features through either door give the same calibration and the same model bytes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kaldi_compress.compress.calibrate import load_calibration, load_calibration_tables
from kaldi_compress.compress.prune import PruneOptions, prune_compress
from kaldi_compress.frontend.model_dir import ModelDirFrontEnd
from kaldi_compress.nnet3 import read_model, write_model
from arks import write_ark_scp

N_WAVS = 6


@pytest.fixture(scope="module")
def wav_dir(ko_wide_train, tmp_path_factory) -> Path:
    """Six utterances of ko_wide_train (links), sorted as calibration lists them."""
    d = tmp_path_factory.mktemp("wavs")
    for w in sorted(ko_wide_train.glob("*.wav"))[::140][:N_WAVS]:
        (d / w.name).symlink_to(w)
    return d


@pytest.fixture(scope="module")
def tables(wav_dir, ko_model_dir, tmp_path_factory) -> dict:
    """Their features and online i-vectors, as the model dir's front end computes them
    (no dither), written as Kaldi archives with scp indexes: a recipe's data dir."""
    d = tmp_path_factory.mktemp("tables")
    front = ModelDirFrontEnd(ko_model_dir, 0.0)
    feats = {w.stem: front.features(w) for w in sorted(wav_dir.glob("*.wav"))}
    for name, which in (("feats", 0), ("ivectors", 1)):
        write_ark_scp(d / f"{name}.ark", {key: pair[which] for key, pair in feats.items()})
    return {"dir": d, "period": front.ivector_period, "fsf": front.frame_subsampling_factor}


def table_calibration(tables, kind: str = "scp", **kw):
    d = tables["dir"]
    return load_calibration_tables(f"{kind}:{d / 'feats'}.{kind}", f"scp:{d / 'ivectors.scp'}",
                                   tables["period"],
                                   frame_subsampling_factor=tables["fsf"], **kw)


def same_calibration(a, b) -> None:
    assert a.compute_options == b.compute_options
    assert len(a.utterances) == len(b.utterances)
    for (fa, ia), (fb, ib) in zip(a.utterances, b.utterances):
        assert np.array_equal(fa, fb) and np.array_equal(ia, ib)


@pytest.mark.parametrize("max_utts", [3, 0])
def test_an_scp_table_spreads_as_the_wav_dir_does(wav_dir, ko_model_dir, tables, max_utts):
    """From scp: the lines i n / max_utts, the wavs list_audio picks: identical inputs."""
    same_calibration(table_calibration(tables, max_utts=max_utts),
                     load_calibration(ko_model_dir, [wav_dir], max_utts=max_utts, progress=False))


def test_an_archive_gives_its_first_utterances(wav_dir, ko_model_dir, tables):
    """From ark: (read in order) the first max_utts, also through a pipe left unread."""
    first_two = load_calibration(ko_model_dir, [wav_dir], max_utts=0, progress=False)
    first_two.utterances = first_two.utterances[:2]
    same_calibration(table_calibration(tables, "ark", max_utts=2), first_two)
    piped = load_calibration_tables(f"ark:cat {tables['dir'] / 'feats.ark'} |",
                                    f"ark:{tables['dir'] / 'ivectors.ark'}", tables["period"],
                                    max_utts=2, frame_subsampling_factor=tables["fsf"])
    same_calibration(piped, first_two)


def test_utterances_without_ivectors_are_skipped_with_a_warning(tables, tmp_path):
    d = tables["dir"]
    lines = (d / "ivectors.scp").read_text().splitlines()
    (tmp_path / "iv.scp").write_text("\n".join(lines[1:]) + "\n")
    missing = lines[0].split()[0]
    with pytest.warns(UserWarning, match=f"1 utterances have no online i-vector.*{missing}"):
        cal = load_calibration_tables(f"scp:{d / 'feats.scp'}", f"scp:{tmp_path / 'iv.scp'}",
                                      tables["period"], max_utts=0)
    assert len(cal.utterances) == N_WAVS - 1


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kaldi_compress", *map(str, args)],
                          capture_output=True, text=True)


def test_prune_from_tables_writes_the_bytes_of_prune_from_wavs(prepared, wav_dir, ko_model_dir,
                                                               tables, tmp_path):
    """``prune --calibration-feats ...`` (a recipe's tables) equals the library's pruning
    calibrated on the same utterances' wavs, byte for byte."""
    src, out, want = tmp_path / "prepared.mdl", tmp_path / "tables.mdl", tmp_path / "wavs.mdl"
    write_model(prepared, str(src))
    d = tables["dir"]
    proc = run_cli("prune", "--keep-fraction=0.5", "--components=prefinal-chain.*",
                   f"--calibration-feats=scp:{d / 'feats.scp'}",
                   f"--calibration-ivectors=scp:{d / 'ivectors.scp'}",
                   f"--online-ivector-period={tables['period']}",
                   f"--frame-subsampling-factor={tables['fsf']}", "--max-utts=3", src, out)
    assert proc.returncode == 0, proc.stderr
    model = read_model(str(src))
    prune_compress(model.nnet, PruneOptions(
        keep_fraction=0.5, components="prefinal-chain.*",
        calibration=load_calibration(ko_model_dir, [wav_dir], max_utts=3, progress=False)))
    write_model(model, str(want))
    assert out.read_bytes() == want.read_bytes()
    assert read_model(str(out)).nnet.num_parameters < prepared.nnet.num_parameters


@pytest.mark.parametrize("args,msg", [
    (["--calibration-feats=scp:{d}/feats.scp", "--calibration-data={d}"],
     "give --calibration-data (with --model-dir) or --calibration-feats, not both"),
    (["--calibration-feats=scp:{d}/feats.scp", "--model-dir={d}"],
     "give --calibration-data (with --model-dir) or --calibration-feats, not both"),
    (["--calibration-feats=scp:{d}/feats.scp", "--calibration-ivectors=scp:{d}/ivectors.scp"],
     "--calibration-ivectors needs --online-ivector-period > 0"),
    (["--calibration-data={d}", "--model-dir={d}", "--online-ivector-period=10"],
     "--online-ivector-period needs --calibration-feats"),
    (["--calibration-feats=scp:{d}/nothing.scp"], "nothing.scp"),
    (["--calibration-feats=feats.scp"], "bad rspecifier 'feats.scp'"),
    ([], "compress needs calibration audio: --calibration-data DIR with --model-dir DIR, or "
         "--calibration-feats RSPEC"),
])
def test_bad_table_options_fail_in_one_line(args, msg, ko_mdl, tables, tmp_path):
    out = tmp_path / "o.mdl"
    proc = run_cli("compress", "--param-ratio=0.9",
                   *[a.format(d=tables["dir"]) for a in args], ko_mdl, out)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert msg in proc.stderr
    assert not out.exists()
