"""WER/CER scoring: alignment counts, compute-wer's output, Korean normalisation, the CLI."""
from __future__ import annotations

import io
import random

import pytest

from kaldi_compress import cli
from kaldi_compress.cli import wer
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.evaluate.scoring import align_counts, kaldi_percent, korean_normalize, score
from kaldi_compress.io.tables import read_transcripts


def run_wer(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """``kaldi-compress wer ...`` through the real entry point, with ``wer`` registered."""
    monkeypatch.setitem(cli.COMMANDS, "wer", wer)
    rc = cli.main(["wer", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def write_text(path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


# --- alignment -------------------------------------------------------------------------

def test_align_counts_known_cases():
    assert align_counts("a b c d".split(), "a x c d e".split()) == (1, 0, 1, 4)
    assert align_counts("a b c".split(), []) == (0, 3, 0, 3)
    assert align_counts([], "a b".split()) == (2, 0, 0, 0)
    assert align_counts("the cat sat".split(), "the cat sat".split()) == (0, 0, 0, 3)


def test_align_counts_properties_on_random_sequences():
    rng = random.Random(7)
    for _ in range(300):
        ref = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        hyp = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        ins, dels, subs, n = align_counts(ref, hyp)
        assert n == len(ref)
        assert ins - dels == len(hyp) - len(ref)          # every alignment balances lengths
        assert abs(len(hyp) - len(ref)) <= ins + dels + subs <= max(len(ref), len(hyp))
        r_ins, r_dels, r_subs, _ = align_counts(hyp, ref)  # the distance is symmetric
        assert r_ins + r_dels + r_subs == ins + dels + subs
        assert (ins + dels + subs == 0) == (ref == hyp)


# --- compute-wer's numbers and lines ---------------------------------------------------

def test_percent_rounds_through_float32_like_compute_wer():
    assert kaldi_percent(550, 8234) == "6.68"
    assert kaldi_percent(0, 5) == "0.00"
    # compute-wer stores the percentage in a float (BaseFloat) before printing it:
    # 100*1074/1541 = 69.69500.. in double, but its float32 is just below 69.695.
    assert f"{100.0 * 1074 / 1541:.2f}" == "69.70"
    assert kaldi_percent(1074, 1541) == "69.69"
    assert kaldi_percent(0, 0) == "nan"


def test_score_counts_and_compute_wer_lines():
    refs = {"u1": "the cat sat on the mat", "u2": "hello world", "u3": "good morning"}
    hyps = {"u1": "the cat sat on mat", "u2": "hello there world", "u3": "good morning",
            "extra": "ignored because it has no reference"}
    r = score(refs, hyps)
    assert (r.ins, r.dels, r.subs, r.n_ref) == (1, 1, 0, 10)
    assert (r.n_sent, r.sent_errors, r.missing) == (3, 2, ())
    assert r.errors == 2 and r.rate == pytest.approx(20.0)
    assert r.format() == ("%WER 20.00 [ 2 / 10, 1 ins, 1 del, 0 sub ]\n"
                          "%SER 66.67 [ 2 / 3 ]\n"
                          "Scored 3 sentences, 0 not present in hyp.\n")


def test_missing_hypotheses_are_not_scored_and_mark_partial():
    refs = {"u1": "a b c", "u2": "d e", "u3": "f"}
    r = score(refs, {"u2": "d x"})
    assert r.missing == ("u1", "u3")
    assert (r.n_sent, r.n_ref, r.subs) == (1, 2, 1)
    first, _, last = r.format().splitlines()
    assert first == "%WER 50.00 [ 1 / 2, 0 ins, 0 del, 1 sub ] [PARTIAL]"
    assert last == "Scored 1 sentences, 2 not present in hyp."


def test_cer_ignores_spacing_which_wer_counts():
    # The Korean model splits words into morphemes ("가족 이" for "가족이").
    refs, hyps = {"k": "원래 가족이 더 힘든 법이에요"}, {"k": "원래 가족 이 더 힘든 법 이에요"}
    w = score(refs, hyps, unit="word")
    c = score(refs, hyps, unit="char")
    assert w.errors > 0 and w.n_ref == 5
    assert c.errors == 0 and c.n_ref == len("원래가족이더힘든법이에요")
    assert c.format().startswith("%CER 0.00 [ 0 / 12, 0 ins, 0 del, 0 sub ]")


def test_unknown_unit_is_an_error():
    with pytest.raises(KaldiCompressError, match="expected 'word' or 'char'"):
        score({}, {}, unit="phone")


# --- Korean normalisation --------------------------------------------------------------

def test_korean_normalize_keeps_annotation_contents():
    # Tokens as they are in the Vosk Korean model's vocabulary.
    assert korean_normalize("[60] 분 (십) {만} [쩜] 오") == "60 분 십 만 쩜 오"
    assert korean_normalize("네, 고객님!  체크아웃 도와드릴게요.") == "네 고객님 체크아웃 도와드릴게요"
    assert korean_normalize("<UNK> 안녕 <SPOKEN_NOISE> !SIL") == "안녕"
    assert korean_normalize("ＡＢＣ 티비 Wi-Fi") == "abc 티비 wifi"


def test_korean_cer_of_vosk_style_output():
    refs = {"a": "죄송하지만 탑승 삼십분 전엔 취소가 불가합니다"}
    hyps = {"a": "죄송하지만 탑승 삼 (십) 분 전 엔 취소가 불가 합니다."}
    r = score(refs, hyps, unit="char", normalize=korean_normalize)
    assert r.errors == 0
    assert score(refs, hyps, unit="char").errors == 3   # "(", ")" and "." without it


def test_real_korean_references_score_zero_against_themselves(ko_wide_dev):
    refs = read_transcripts(str(ko_wide_dev / "text"))
    assert len(refs) == 60
    r = score(refs, refs, unit="char", normalize=korean_normalize)
    assert r.errors == 0 and r.n_sent == 60
    assert r.n_ref == sum(len("".join(korean_normalize(t).split())) for t in refs.values())
    # dropping each utterance's first character costs exactly one deletion per utterance
    clipped = {u: t[1:] for u, t in refs.items()}
    r = score(refs, clipped, unit="char", normalize=korean_normalize)
    assert (r.ins, r.dels, r.subs) == (0, 60, 0)


# --- the wer command -------------------------------------------------------------------

def test_wer_command_prints_compute_wer_output(tmp_path, monkeypatch, capsys):
    ref = write_text(tmp_path / "ref", ["4k0c0301 THE BOARD MET ON TUESDAY",
                                        "4k0c0302 PRICES ROSE", "4k0c0303 NO COMMENT"])
    hyp = write_text(tmp_path / "hyp", ["4k0c0301 THE BOARD MET TUESDAY",
                                        "4k0c0302 PRICES ROSE"])
    rc, out, err = run_wer(monkeypatch, capsys, ref, hyp)
    assert (rc, err) == (0, "")
    assert out == ("%WER 14.29 [ 1 / 7, 0 ins, 1 del, 0 sub ] [PARTIAL]\n"
                   "%SER 50.00 [ 1 / 2 ]\n"
                   "Scored 2 sentences, 1 not present in hyp.\n")


def test_wer_command_cer_and_korean_normalisation(tmp_path, monkeypatch, capsys):
    ref = write_text(tmp_path / "ref", ["emo_1\t원래 가족이 더 힘든 법이에요"])
    hyp = write_text(tmp_path / "hyp", ["emo_1 원래 가족 이 더 힘든 법 이에요."])
    rc, out, _ = run_wer(monkeypatch, capsys, "--cer", "--normalize=korean", ref, hyp)
    assert rc == 0 and out.splitlines()[0] == "%CER 0.00 [ 0 / 12, 0 ins, 0 del, 0 sub ]"
    rc, out, _ = run_wer(monkeypatch, capsys, "--cer=true", ref, hyp)
    assert rc == 0 and out.splitlines()[0] == "%CER 8.33 [ 1 / 12, 1 ins, 0 del, 0 sub ]"


@pytest.mark.parametrize("lines, message", [
    (["u1 a b", "u1 c"], "line 2: utterance u1 appears twice"),
    ([], "no utterances"),
])
def test_wer_command_bad_reference(tmp_path, monkeypatch, capsys, lines, message):
    ref = write_text(tmp_path / "ref", lines)
    hyp = write_text(tmp_path / "hyp", ["u1 a b"])
    rc, out, err = run_wer(monkeypatch, capsys, ref, hyp)
    assert rc == 1 and out == ""
    assert err.startswith(f"kaldi-compress: error: {ref}: {message}")
    assert len(err.splitlines()) == 1


def test_wer_command_input_errors_are_one_line(tmp_path, monkeypatch, capsys):
    ref = write_text(tmp_path / "ref", ["u1 a b"])
    bad = tmp_path / "latin1"
    bad.write_bytes(b"u1 caf\xe9\n")
    other = write_text(tmp_path / "other", ["u9 a b"])
    for args, message in [((ref, str(tmp_path / "absent")), f"{tmp_path / 'absent'}: cannot read"),
                          ((ref, str(bad)), f"{bad}: line 1: expected UTF-8 text"),
                          ((ref, other), f"{other}: none of the 1 utterances of {ref}")]:
        rc, out, err = run_wer(monkeypatch, capsys, *args)
        assert rc == 1 and out == ""
        assert err.startswith(f"kaldi-compress: error: {message}")
        assert len(err.splitlines()) == 1


def test_wer_command_reads_hypotheses_from_stdin(tmp_path, monkeypatch, capsys):
    ref = write_text(tmp_path / "ref", ["u1 a b c", "u2 d"])
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"u1 a c\nu2 d\n")))
    rc, out, _ = run_wer(monkeypatch, capsys, ref, "-")
    assert rc == 0 and out.splitlines()[0] == "%WER 25.00 [ 1 / 4, 0 ins, 1 del, 0 sub ]"
    rc, _, err = run_wer(monkeypatch, capsys, "-", "-")
    assert rc == 1 and "only one of REF and HYP" in err
