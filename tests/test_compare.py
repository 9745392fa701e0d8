"""compare_wer.sh-style tables from Kaldi model directories (fixtures in fixtures/wsj)."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from kaldi_compress import cli, read_model
from kaldi_compress.cli import compare as compare_cli
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.evaluate.compare import (WSJ_DECODES, format_table, parse_wer_line,
                                             points_table, read_system, wsj_table)
from kaldi_compress.evaluate.plots import Point, pareto_front, series_lines, wer_vs_params_plot
from kaldi_compress.evaluate.scoring import kaldi_percent

CHAIN = Path(__file__).parent / "fixtures" / "wsj" / "exp" / "chain"
BASE, SVD = CHAIN / "tdnn1i_sp", CHAIN / "tdnn1i_svd_sp"

# local/chain/tuning/run_tdnn_1i.sh's results, which the baseline fixture reproduces.
TDNN1I = {"decode_tgpr_dev93": 6.90, "decode_tg_dev93": 6.73, "decode_bd_tgpr_dev93": 4.91,
          "decode_bd_tgpr_dev93_fg": 4.44, "decode_tgpr_eval92": 4.77, "decode_tg_eval92": 4.36,
          "decode_bd_tgpr_eval92": 2.85, "decode_bd_tgpr_eval92_fg": 2.36}


def run_compare(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """``kaldi-compress compare ...`` through the real entry point, with it registered."""
    monkeypatch.setitem(cli.COMMANDS, "compare", compare_cli)
    rc = cli.main(["compare", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def with_models(tmp_path, ko_mdl) -> tuple[Path, Path]:
    """Copies of both fixture systems, each with a real final.mdl."""
    out = []
    for src in (BASE, SVD):
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        shutil.copy(ko_mdl, dst / "final.mdl")
        out.append(dst)
    return out[0], out[1]


# --- parsing ---------------------------------------------------------------------------

def test_parse_best_wer_line():
    w = parse_wer_line("%WER 4.98 [ 278 / 5580, 31 ins, 22 del, 225 sub ] [PARTIAL] "
                       "exp/chain/x/decode_tgpr_eval92/wer_12_0.5", "best_wer")
    assert (w.wer, w.errors, w.n_ref, w.ins, w.dels, w.subs) == (4.98, 278, 5580, 31, 22, 225)
    assert w.partial and (w.lmwt, w.wip) == (12, 0.5)
    w = parse_wer_line("%WER 6.68 [ 550 / 8234, 64 ins, 87 del, 399 sub ]", "d/wer_10_0.0")
    assert not w.partial and (w.source, w.lmwt, w.wip) == ("d/wer_10_0.0", 10, 0.0)


@pytest.mark.parametrize("line", ["%WER 6.68 [ 550 / 8234 ]", "WER 6.68", "",
                                  "%WER six [ 550 / 8234, 64 ins, 87 del, 399 sub ]"])
def test_parse_bad_wer_line_names_the_file(line):
    with pytest.raises(KaldiCompressError, match=r"^some/best_wer: "):
        parse_wer_line(line, "some/best_wer")


def test_every_fixture_score_is_consistent_with_its_counts():
    files = [p for p in CHAIN.rglob("*") if p.name == "best_wer" or p.name.startswith("wer_")]
    assert len(files) >= 20
    for p in files:
        line = next(ln for ln in p.read_text().splitlines() if ln.startswith("%WER"))
        w = parse_wer_line(line, p)
        assert w.errors == w.ins + w.dels + w.subs, p
        assert f"{w.wer:.2f}" == kaldi_percent(w.errors, w.n_ref), p


# --- reading systems -------------------------------------------------------------------

def test_baseline_reads_all_eight_decodes_and_progress_log():
    s = read_system(BASE)
    assert s.name == "tdnn1i_sp"
    assert {k: w.wer for k, w in s.wer.items()} == TDNN1I
    assert [name for _, name in WSJ_DECODES] == list(TDNN1I)
    best = s.wer["decode_tgpr_eval92"]
    assert (best.lmwt, best.wip) == (10, 1.0)   # from the wer_10_1.0 that best_wer names
    assert s.num_parameters == 8349232          # log/progress.1.log (no final.mdl)
    assert s.size_bytes is None and s.rtf == {}


def test_without_best_wer_the_lowest_wer_file_wins_first_on_ties():
    w = read_system(SVD).wer["decode_bd_tgpr_dev93"]
    # wer_11_0.0 and wer_10_1.0 both give 4.93: best_wer.sh keeps the first, and
    # score_kaldi_wer.sh lists penalty 0.0 before 1.0.
    assert (w.wer, w.lmwt, w.wip, w.ins) == (4.93, 11, 0.0, 50)
    assert Path(w.source).name == "wer_11_0.0"


def test_rtf_is_total_time_over_total_audio_of_the_decode_logs():
    rtf = read_system(SVD).rtf
    assert list(rtf) == ["decode_tgpr_dev93"]
    # "Time taken E s: real-time factor ... is R" in decode.1.log and decode.2.log;
    # each job decoded E / R seconds of audio.
    jobs = [(1.60832, 0.0712906), (1.86593, 0.0689551)]
    expected = sum(e for e, _ in jobs) / sum(e / r for e, r in jobs)
    assert rtf["decode_tgpr_dev93"] == pytest.approx(expected, rel=1e-9)
    assert 0.0689551 < rtf["decode_tgpr_dev93"] < 0.0712906


def test_final_mdl_gives_parameters_and_size(with_models, ko_mdl):
    s = read_system(with_models[0])
    assert s.num_parameters == read_model(str(ko_mdl)).nnet.num_parameters != 8349232
    assert s.size_bytes == ko_mdl.stat().st_size


def test_missing_directory_is_one_line_error(monkeypatch, capsys, tmp_path):
    with pytest.raises(KaldiCompressError, match="no such model directory"):
        read_system(tmp_path / "absent")
    rc, out, err = run_compare(monkeypatch, capsys, str(BASE), str(tmp_path / "absent"))
    assert (rc, out) == (1, "")
    assert err == f"kaldi-compress: error: {tmp_path / 'absent'}: no such model directory\n"


def test_malformed_scoring_files_are_reported(tmp_path):
    decode = tmp_path / "sys" / "decode_tgpr_dev93"
    (decode / "scoring_kaldi").mkdir(parents=True)
    best = decode / "scoring_kaldi" / "best_wer"
    best.write_text("")
    with pytest.raises(KaldiCompressError, match=re.escape(f"{best}: expected one")):
        read_system(tmp_path / "sys")
    best.unlink()
    wer = decode / "wer_10_0.0"
    wer.write_text("compute-wer --text --mode=present ark:test_filt.txt ark,p:- \n"
                   "ERROR (compute-wer[5.5]:main():compute-wer.cc:83) No hypothesis\n")
    with pytest.raises(KaldiCompressError, match=re.escape(f"{wer}: no '%WER")):
        read_system(tmp_path / "sys")


# --- tables ----------------------------------------------------------------------------

def test_plain_table_has_compare_wer_rows_and_columns(monkeypatch, capsys):
    rc, out, err = run_compare(monkeypatch, capsys, str(BASE), str(SVD))
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"# kaldi-compress compare {BASE} {SVD}"
    assert lines[1].split() == ["#", "System", "tdnn1i_sp", "tdnn1i_svd_sp"]
    rows = {line[:27].strip(): line[27:].split() for line in lines[2:]}
    assert [label for label in rows if label.startswith("#WER")] == [l for l, _ in WSJ_DECODES]
    assert rows["#WER dev93 (tgpr)"] == ["6.90", "7.12"]
    assert rows["#WER dev93 (big-dict,tgpr)"] == ["4.91", "4.93"]
    assert rows["#WER eval92 (tgpr)"] == ["4.77", "4.98*"]      # partial score marked
    assert rows["#WER eval92 (tg)"] == ["4.36"]                  # the other cell is empty
    assert rows["# Num-params"] == ["8349232"]
    assert rows["#RTF dev93 (tgpr)"] == ["0.0700"]
    assert "# Model size (bytes)" not in rows                    # no system has final.mdl
    assert lines[-1].startswith("# * [PARTIAL]")
    # right-aligned columns: every value ends at its column's end
    header = lines[1]
    ends = [header.index(name) + len(name) for name in ("tdnn1i_sp", "tdnn1i_svd_sp")]
    assert lines[2][:ends[0]].endswith("6.90") and lines[2][:ends[1]].endswith("7.12")
    assert lines[2 + 1][:ends[0]].endswith("6.73") and len(lines[3]) == ends[0]


def test_csv_markdown_and_json(monkeypatch, capsys):
    rc, out, _ = run_compare(monkeypatch, capsys, "--format=csv", str(BASE), str(SVD))
    table = list(csv.reader(io.StringIO(out)))
    assert rc == 0 and table[0] == ["System", "tdnn1i_sp", "tdnn1i_svd_sp"]
    assert ["WER dev93 (big-dict,fg)", "4.44", ""] in table
    rc, out, _ = run_compare(monkeypatch, capsys, "--format=markdown", str(BASE), str(SVD))
    assert rc == 0 and out.splitlines()[:3] == [
        "| System | tdnn1i_sp | tdnn1i_svd_sp |", "|---|---:|---:|",
        "| WER dev93 (tgpr) | 6.90 | 7.12 |"]
    rc, out, _ = run_compare(monkeypatch, capsys, "--format=json", str(BASE), str(SVD))
    base, svd = json.loads(out)
    assert rc == 0 and base["num_parameters"] == 8349232
    assert {k: v["wer"] for k, v in base["wer"].items()} == TDNN1I
    assert svd["wer"]["decode_tgpr_eval92"]["partial"] is True
    assert svd["wer"]["decode_tgpr_eval92"]["n_ref"] == 5580


def test_model_sizes_and_plot(with_models, monkeypatch, capsys, tmp_path):
    png = tmp_path / "wer.png"
    rc, out, err = run_compare(monkeypatch, capsys, f"--plot={png}", *map(str, with_models))
    assert (rc, err) == (0, "")
    size = str(with_models[0].joinpath("final.mdl").stat().st_size)
    assert "# Model size (bytes)" in out and out.count(size) == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_needs_parameter_counts(monkeypatch, capsys, tmp_path):
    rc, _, err = run_compare(monkeypatch, capsys, f"--plot={tmp_path / 'p.png'}",
                             str(BASE), str(SVD))
    assert rc == 1 and "nothing to plot" in err and not (tmp_path / "p.png").exists()


# --- points, Pareto front and the plot -------------------------------------------------

POINTS = [Point("base", 8_349_232, 6.90, 33_500_000, 0.071),
          Point("svd50", 4_300_000, 7.12, 17_400_000, 0.052),
          Point("tt30", 5_100_000, 7.40),
          Point("svd25", 2_200_000, 8.95, 9_000_000, 0.041),
          Point("svd50-b", 4_300_000, 7.30)]


def dominates(a: Point, b: Point) -> bool:
    return (a.num_parameters <= b.num_parameters and a.error <= b.error
            and (a.num_parameters, a.error) != (b.num_parameters, b.error))


def test_pareto_front():
    front = pareto_front(POINTS)
    assert [p.name for p in front] == ["svd25", "svd50", "base"]
    for p in front:
        assert not any(dominates(q, p) for q in POINTS)
    for p in set(POINTS) - set(front):
        assert any(dominates(q, p) for q in front)


def test_pareto_front_by_file_size():
    """Packs share a model's parameters and differ in bytes: the front by file size."""
    packs = [Point("float", 3_000_000, 26.3, 13_000_000), Point("pack-8", 3_000_000, 26.7,
             3_500_000), Point("pack-4", 3_000_000, 26.8, 1_900_000),
             Point("qat-pack-4", 1_500_000, 24.3, 1_100_000)]
    assert [p.name for p in pareto_front(packs, "bytes")] == ["qat-pack-4"]
    assert [p.name for p in pareto_front(packs[:3], "bytes")] == ["pack-4", "pack-8", "float"]
    assert [p.name for p in pareto_front(packs[:3])] == ["float"]


def test_points_table_and_plot(tmp_path):
    text = format_table(points_table(POINTS, metric="CER"), "plain")
    rows = {line[:20].strip(): line[20:].split() for line in text.splitlines()}
    assert rows["#CER"] == ["6.90", "7.12", "7.40", "8.95", "7.30"]
    assert rows["# RTF"] == ["0.0710", "0.0520", "0.0410"]
    out = wer_vs_params_plot(POINTS, tmp_path / "cer.png", metric="CER")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(KaldiCompressError, match="cannot write"):
        wer_vs_params_plot(POINTS, tmp_path / "no" / "such" / "dir.png")
    with pytest.raises(KaldiCompressError, match="no systems"):
        wer_vs_params_plot([], tmp_path / "empty.png")
    sized = [p for p in POINTS if p.size_bytes]
    out = wer_vs_params_plot(sized, tmp_path / "size.png", metric="CER", x="bytes")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(KaldiCompressError, match="file sizes known"):
        wer_vs_params_plot(POINTS, tmp_path / "unsized.png", x="bytes")


def test_wsj_table_omits_rows_without_data():
    table = wsj_table([read_system(SVD)])
    labels = [label for label, _ in table.rows]
    assert labels == ["#WER dev93 (tgpr)", "#WER dev93 (big-dict,tgpr)", "#WER eval92 (tgpr)",
                      "#RTF dev93 (tgpr)"]


def test_series_are_joined_in_size_order(tmp_path):
    pts = [Point("a-0.5", 50, 9.0, series="a"), Point("base", 100, 7.0),
           Point("a-0.3", 30, 12.0, series="a"), Point("a-0.3-ft", 30, 8.0, series="a + distill"),
           Point("a-0.8", 80, 7.5, series="a")]
    lines = series_lines(pts)
    assert list(lines) == ["a", "a + distill"]
    assert [p.name for p in lines["a"]] == ["a-0.3", "a-0.5", "a-0.8"]
    assert wer_vs_params_plot(pts, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
