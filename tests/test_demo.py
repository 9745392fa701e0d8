"""The demo's bookkeeping (recipes/demo.py), without decoding: which systems run, how the
audio is split into tuning and scoring parts, and that they never meet."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from kaldi_compress.errors import KaldiCompressError

REPO = Path(__file__).resolve().parents[1]


def load_demo():
    spec = importlib.util.spec_from_file_location("demo", REPO / "recipes" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo"] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


demo = load_demo()


def speech_dir(path: Path, n: int) -> Path:
    """``n`` empty-but-named wavs and a transcript file (the split reads names only)."""
    path.mkdir(parents=True)
    for i in range(n):
        (path / f"utt{i:02d}.wav").write_bytes(b"")
    (path / "text").write_text("".join(f"utt{i:02d} 말 {i}\n" for i in range(n)),
                               encoding="utf-8")
    return path


def args(**kw) -> argparse.Namespace:
    base = dict(data=None, calibration=[], agreement_only=False, valid_utts=30,
                finetune_utts=150)
    return argparse.Namespace(**{**base, **kw})


def resolved(d: Path) -> set[Path]:
    return {w.resolve() for w in d.glob("*.wav")}


def test_default_and_full_systems():
    default = demo.default_systems()
    assert [s.name for s in default] == [
        "prepared", "kaldi-apply-svd-e0.9", "prune-0.8", "compress-0.6", "compress-0.5",
        "compress-0.5-finetuned", "tt-0.75"]
    assert [s.name for s in default if not s.decode] == ["compress-0.5"]   # only the student
    tuned = next(s for s in default if s.name == "compress-0.5-finetuned")
    assert tuned.options == {"student": "compress-0.5", "max_minutes": 3}

    full = demo.default_systems(full=True)
    names = [s.name for s in full]
    assert set(s.name for s in default) <= set(names)
    for r in demo.CURVE:                     # the curve: every method at every ratio
        for method in ("svd", "prune", "compress"):
            assert f"{method}-{r}" in names
            assert f"{method}-{r}-finetuned" in names
    for name in ("svd-weights-0.75", "prepared-finetuned", "svd-0.3-finetuned",
                 "prune-0.3-finetuned", "tt-only-0.75-finetuned", "tt-0.5", "tt-only-0.9"):
        assert name in names
    assert demo.CURVE[0] == 0.9 and demo.CURVE[-1] == 0.2
    assert all(s.decode for s in full if s.name != "compress-0.5-qat4")
    assert all(s.options["max_minutes"] == 30 for s in full if s.method == "finetune")
    assert {s.options["student"] for s in full if "student" in s.options} <= set(names)
    packs = {s.name: s.options for s in full if s.method == "pack"}
    assert packs == {"pack-8": {"student": "prepared", "bits": 8},
                     "pack-4": {"student": "prepared", "bits": 4},
                     "compress-0.5-qat4-pack4": {"student": "compress-0.5-qat4", "bits": 4}}
    qat = next(s for s in full if s.name == "compress-0.5-qat4")
    assert qat.options["pack_bits"] == 4 and not qat.decode
    assert len(names) == len(set(names)) and names[0] == "prepared"


def test_select_systems_builds_students_without_decoding_them():
    chosen = demo.select_systems(demo.default_systems(), "compress-0.5-finetuned")
    assert [(s.name, s.decode) for s in chosen] == [
        ("prepared", True), ("compress-0.5", False), ("compress-0.5-finetuned", True)]
    with pytest.raises(SystemExit):
        demo.select_systems(demo.default_systems(), "svd-0.9")     # only with --full
    chosen = demo.select_systems(demo.default_systems(full=True), "compress-0.5-qat4-pack4")
    assert [(s.name, s.decode) for s in chosen] == [       # students of students are built
        ("prepared", True), ("compress-0.5", False), ("compress-0.5-qat4", False),
        ("compress-0.5-qat4-pack4", True)]


def test_split_is_deterministic_and_disjoint(tmp_path):
    data = speech_dir(tmp_path / "speech", 12)
    one = demo.data_sets(args(data=str(data)), tmp_path / "out1")
    two = demo.data_sets(args(data=str(data)), tmp_path / "out2")
    again = demo.data_sets(args(data=str(data)), tmp_path / "out1")   # a resumed run
    assert [sorted(p.name for p in d.glob("*.wav")) for d in (one.scored_on, *one.tuning)] \
        == [sorted(p.name for p in d.glob("*.wav")) for d in (two.scored_on, *two.tuning)]
    assert again.scored_on == one.scored_on and resolved(again.fit) == resolved(one.fit)
    scored, tuning = resolved(one.scored_on), resolved(one.tuning[0])
    assert len(scored) == len(tuning) == 6
    assert not scored & tuning and scored | tuning == resolved(data)
    assert set(one.refs) == {p.stem for p in one.scored_on.glob("*.wav")}
    # the tuning parts: validation apart from what calibration and fine-tuning train on
    assert not resolved(one.valid) & resolved(one.fit)
    assert resolved(one.finetune) <= resolved(one.fit)
    assert resolved(one.valid) | resolved(one.fit) == tuning
    assert "split" in one.note


def test_tuning_dirs_are_used_whole_and_must_not_meet_the_scored_dir(tmp_path):
    data = speech_dir(tmp_path / "dev", 4)
    train = speech_dir(tmp_path / "train", 40)
    sets = demo.data_sets(args(data=str(data), calibration=[str(train)], valid_utts=5,
                               finetune_utts=10), tmp_path / "out")
    assert sets.scored_on == data and sets.tuning == [train]
    assert len(resolved(sets.valid)) == 5 and len(resolved(sets.finetune)) == 10
    with pytest.raises(KaldiCompressError, match="never be scored on audio it was tuned on"):
        demo.data_sets(args(data=str(data), calibration=[str(train), str(data)]),
                       tmp_path / "out2")


def test_overlap_check_compares_resolved_paths(tmp_path):
    scored = speech_dir(tmp_path / "dev", 3)
    other = tmp_path / "linked"
    other.mkdir()
    (other / "renamed.wav").symlink_to(scored / "utt01.wav")
    with pytest.raises(KaldiCompressError, match="renamed.wav"):
        demo.check_held_out([other], scored)
    demo.check_held_out([speech_dir(tmp_path / "train", 3)], scored)
    demo.check_held_out([], scored)


def test_read_by_and_tuned_on(tmp_path):
    data = speech_dir(tmp_path / "speech", 20)
    sets = demo.data_sets(args(data=str(data)), tmp_path / "out")
    systems = {s.name: s for s in demo.default_systems()}
    for name in ("prepared", "kaldi-apply-svd-e0.9", "tt-0.75"):
        assert sets.tuned_on(sets.read_by(systems[name])) == []
    assert sets.read_by(systems["compress-0.6"]) == [sets.fit]
    read = sets.read_by(systems["compress-0.5-finetuned"], systems["compress-0.5"])
    assert set(read) == {sets.finetune, sets.valid, sets.fit}
    assert sets.tuned_on(read) == [str(sets.tuning[0])]


def test_results_table_shows_tuned_on_and_scored_on():
    rows = [{"name": "prepared", "num_parameters": 100, "param_ratio": 1.0, "size_bytes": 1e6,
             "tuned_on": [], "cer": 26.0, "agreement_cer": 0.0, "rtf": 0.4,
             "build_seconds": 0},
            {"name": "compress-0.6", "num_parameters": 60, "param_ratio": 0.6,
             "size_bytes": 6e5, "tuned_on": ["/data/ko_wide_train"], "cer": 27.5,
             "agreement_cer": 12.0, "rtf": 0.4, "build_seconds": 90,
             "delta_cer_ci": [-0.25, 3.5]}]
    table = demo.results_table(rows, True, Path("/data/ko_wide_dev"))
    lines = table.splitlines()
    assert "Scored on `/data/ko_wide_dev`" in lines[0]
    head = [c.strip() for c in lines[2].strip("|").split("|")]
    assert "tuned on" in head
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:]]
    col = head.index("tuned on")
    assert [c[col] for c in cells] == ["-", "ko_wide_train"]
    assert cells[1][head.index("ΔCER")] == "+1.50"
    assert [c[head.index("ΔCER 95% CI")] for c in cells] == ["", "[-0.25, +3.50]"]


def test_delta_interval_is_paired():
    refs = {f"u{i}": "가나다라마바사" for i in range(30)}
    base = {u: "가나다라마바" for u in refs}             # one deletion each
    assert demo.delta_interval(refs, base, dict(base)) == [0.0, 0.0]
    worse = dict(base, u0="가")                          # five more errors in one utterance
    lo, hi = demo.delta_interval(refs, base, worse)
    assert 0.0 <= lo <= 100 * 5 / 210 <= hi


def test_output_dir_keeps_its_sets_and_settings(tmp_path):
    data = speech_dir(tmp_path / "speech", 10)
    out = tmp_path / "out"
    sets = demo.data_sets(args(data=str(data)), out)
    settings = {"full": False, "calibration_utts": 20, "finetune_utts": 150}
    demo.check_same_sets(out, sets, settings)
    demo.check_same_sets(out, sets, settings)
    assert json.loads((out / "sets.json").read_text())["scored_on"] == str(sets.scored_on)
    other = speech_dir(tmp_path / "other", 10)
    with pytest.raises(SystemExit):
        demo.check_same_sets(out, demo.data_sets(args(data=str(other)), out), settings)
    with pytest.raises(SystemExit):          # the models were calibrated on 20 utterances
        demo.check_same_sets(out, sets, {**settings, "calibration_utts": 120})


def test_results_include_systems_of_earlier_invocations(tmp_path):
    """A curve run in pieces (--systems subsets) is reported whole, in the run's order:
    systems built and decoded earlier in OUT join this invocation's rows; a system only
    built (a student) or not run at all does not."""
    data = speech_dir(tmp_path / "speech", 10)
    sets = demo.data_sets(args(data=str(data)), tmp_path / "out")
    refs = sets.refs
    models, decodes = tmp_path / "models", tmp_path / "decode"
    models.mkdir()
    decodes.mkdir()
    base_hyps = dict(refs)
    worse = {u: t[:-1] for u, t in refs.items()}     # one deletion per utterance

    def earlier(name: str, hyps: dict | None, layers: dict | None = None) -> None:
        info = {"name": name, "num_parameters": 50, "size_bytes": 1e5, "tuned_on": [],
                "build_seconds": 1, **({"layers": layers} if layers else {})}
        (models / f"{name}.json").write_text(json.dumps(info))
        if hyps is not None:
            (decodes / f"{name}.json").write_text(json.dumps({"hyps": hyps, "rtf": 0.5}))

    earlier("prune-0.8", worse)
    earlier("compress-0.5", None, layers={"tt": 0, "svd": 3, "kept": 1})    # built only
    earlier("compress-0.5-finetuned", base_hyps)
    run = demo.default_systems()
    now = [{"name": "prepared", "num_parameters": 100}, {"name": "tt-0.75", "num_parameters": 70}]
    rows = demo.with_earlier_rows(now, run, models, decodes, sets, base_hyps)
    assert [r["name"] for r in rows] == ["prepared", "prune-0.8", "compress-0.5-finetuned",
                                         "tt-0.75"]
    assert rows[0] is now[0] and rows[-1] is now[1]
    prune = rows[1]
    assert prune["agreement_cer"] > 0 and prune["cer"] == prune["agreement_cer"]
    assert prune["delta_cer_ci"][0] > 0
    assert rows[2]["cer"] == 0 and rows[2]["layers"] == {"tt": 0, "svd": 3, "kept": 1}


def test_plot_series_follow_the_method():
    assert demo.series_of("compress-0.3-finetuned") == "compress + distillation"
    assert demo.series_of("svd-0.9") == "svd" and demo.series_of("prune-0.2") == "prune"
    for single in ("prepared", "svd-weights-0.75", "kaldi-apply-svd-e0.9", "tt-0.75",
                   "prepared-finetuned", "compress-0.5-qat4-pack4"):
        assert demo.series_of(single) == "", single
