"""Bootstrap intervals of WER (compute-wer-bootci): statistics, modes, the CLI."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kaldi_compress import cli
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.evaluate import bootstrap
from kaldi_compress.evaluate.bootstrap import (bootstrap_interval, difference_interval,
                                               improvement_probability, utterance_errors)
from kaldi_compress.evaluate.scoring import korean_normalize
from kaldi_compress.io.tables import read_transcripts

KALDI_COMPRESS = [sys.executable, "-m", "kaldi_compress"]
NUM = r"-?\d+\.\d\d"
SIGNED = r"[+-]\d+\.\d\d"


def interval_re(name: str, label: str = "%WER") -> str:
    """A line as compute-wer-bootci prints it: ``std::fixed``, precision 2."""
    return rf"{name}: {label} ({NUM}) 95% Conf Interval \[ ({NUM}), ({NUM}) \]"


IMPROVE_RE = r"Probability of Set2 improving Set1: (\d+\.\d\d)"


def delta_re(label: str = "%WER") -> str:
    return (rf"Set2 - Set1: {label} ({SIGNED}) 95% Conf Interval \[ ({SIGNED}), ({SIGNED}) \] "
            r"\(paired, percentiles\)")


def synthetic(n: int, seed: int, p: float = 0.15, lengths: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(errors, lengths) of n utterances whose error rate varies between utterances."""
    rng = np.random.default_rng(seed)
    if lengths is None:
        lengths = rng.poisson(12, n) + 1
    errors = rng.binomial(lengths, rng.beta(2, 2 * (1 - p) / p, n))
    return errors.astype(np.int64), lengths.astype(np.int64)


def delta_method_half_width(errors: np.ndarray, lengths: np.ndarray) -> float:
    """1.96 * sd of the resampled ratio sum e*/sum n*, linearised: r_i = e_i - W n_i,
    Var(W*) ~ sum r_i^2 / (sum n_i)^2."""
    w = errors.sum() / lengths.sum()
    return 1.96 * np.sqrt(((errors - w * lengths) ** 2).sum()) / lengths.sum()


# --- the statistics --------------------------------------------------------------------

def test_identical_sets_have_a_zero_difference_and_never_improve():
    errors, lengths = synthetic(300, seed=1)
    rng = np.random.default_rng(0)
    assert difference_interval(errors, errors.copy(), lengths, 2000, rng) == (0.0, 0.0, 0.0)
    # Kaldi counts a replicate only if set 2 has strictly fewer errors: ties are no gain
    assert improvement_probability(errors, errors.copy(), 2000, rng) == 0.0


def test_mean_converges_to_the_corpus_rate():
    # Equal lengths make sum n* constant, so E[W*] is exactly the corpus rate W and the
    # Monte Carlo mean of B replicates is off by sd(W*)/sqrt(B) (allow 4 of those).
    errors, lengths = synthetic(400, seed=2, lengths=np.full(400, 10))
    replications = 20000
    mean, half = bootstrap_interval(errors, lengths, replications, np.random.default_rng(3))
    corpus = errors.sum() / lengths.sum()
    assert half > 0
    assert abs(mean - corpus) <= 4 * (half / 1.96) / np.sqrt(replications)


def test_half_width_matches_the_delta_method_for_many_utterances():
    errors, lengths = synthetic(3000, seed=4)
    _, half = bootstrap_interval(errors, lengths, 10000, np.random.default_rng(5))
    # sampling error of a std from 10000 replicates ~0.7%; linearisation error O(1/n)
    assert half == pytest.approx(delta_method_half_width(errors, lengths), rel=0.04)


def test_paired_difference_matches_the_delta_method_and_beats_unpaired():
    errors1, lengths = synthetic(3000, seed=6)
    rng = np.random.default_rng(7)
    errors2 = errors1 + rng.binomial(lengths, 0.02)            # set 2: a little worse
    mean, lo, hi = difference_interval(errors1, errors2, lengths, 10000, rng)
    corpus_delta = (errors2.sum() - errors1.sum()) / lengths.sum()
    half = delta_method_half_width(errors2 - errors1, lengths)
    assert mean == pytest.approx(corpus_delta, abs=0.1 * half)
    assert lo == pytest.approx(corpus_delta - half, abs=0.1 * half)
    assert hi == pytest.approx(corpus_delta + half, abs=0.1 * half)
    assert 0 < lo < hi
    # pairing cancels the shared difficulty of the utterances
    _, half1 = bootstrap_interval(errors1, lengths, 2000, rng)
    _, half2 = bootstrap_interval(errors2, lengths, 2000, rng)
    assert hi - lo < 0.6 * np.hypot(half1, half2)
    assert improvement_probability(errors1, errors2, 2000, rng) == 0.0
    assert improvement_probability(errors2, errors1, 2000, rng) == 1.0


def test_one_utterance_has_zero_width():
    errors, lengths = np.array([3]), np.array([7])
    rng = np.random.default_rng(0)
    assert bootstrap_interval(errors, lengths, 1000, rng) == (3 / 7, 0.0)
    assert difference_interval(errors, np.array([1]), lengths, 1000, rng) == (-2 / 7,) * 3
    assert improvement_probability(errors, np.array([1]), 1000, rng) == 1.0


def test_batches_bound_the_draws_and_do_not_change_the_answer(monkeypatch):
    errors, lengths = synthetic(50, seed=8)
    whole = bootstrap_interval(errors, lengths, 1000, np.random.default_rng(9))
    sizes = []

    class Recording:
        def __init__(self, seed: int):
            self.rng = np.random.default_rng(seed)

        def integers(self, low, high, size):
            sizes.append(size)
            return self.rng.integers(low, high, size=size)

    monkeypatch.setattr(bootstrap, "_MAX_DRAWS", 50 * 64)
    batched = bootstrap_interval(errors, lengths, 1000, Recording(9))
    assert [s[0] for s in sizes] == [64] * 15 + [40]
    assert max(s[0] * s[1] for s in sizes) <= 50 * 64
    # an even number of draws per batch keeps numpy's stream unchanged
    assert batched == pytest.approx(whole, rel=1e-12)


def test_bad_arguments():
    with pytest.raises(KaldiCompressError, match="at least 1"):
        bootstrap_interval(np.array([1]), np.array([2]), 0, np.random.default_rng())
    with pytest.raises(KaldiCompressError, match="no utterances"):
        improvement_probability(np.array([], int), np.array([], int), 10,
                                np.random.default_rng())


# --- utterances and modes --------------------------------------------------------------

REFS = {"u1": "a b c d", "u2": "e f", "u3": "g h i"}
HYP1 = {"u1": "a b x d", "u2": "e f", "u9": "not in the references"}
HYP2 = {"u1": "a b c d", "u3": "g i"}


def test_modes_as_compute_wer_bootci():
    errors, lengths = utterance_errors(REFS, [HYP1], mode="present")
    assert errors.tolist() == [[1, 0]] and lengths.tolist() == [4, 2]
    errors, lengths = utterance_errors(REFS, [HYP1], mode="all")
    assert errors.tolist() == [[1, 0, 3]] and lengths.tolist() == [4, 2, 3]
    # two sets: present keeps only what both have, all scores what either lacks as empty
    errors, lengths = utterance_errors(REFS, [HYP1, HYP2], mode="present")
    assert errors.tolist() == [[1], [0]] and lengths.tolist() == [4]
    errors, lengths = utterance_errors(REFS, [HYP1, HYP2], mode="all")
    assert errors.tolist() == [[1, 0, 3], [0, 2, 1]] and lengths.tolist() == [4, 2, 3]
    with pytest.raises(KaldiCompressError, match="utterance u2 has no hypothesis in set 2"):
        utterance_errors(REFS, [HYP1, HYP2])                    # strict, Kaldi's default
    with pytest.raises(KaldiCompressError, match="expected present, all or strict"):
        utterance_errors(REFS, [HYP1], mode="some")


def test_units_and_normalisation():
    refs, hyps = {"k": "원래 가족이 더 힘든 법이에요"}, {"k": "원래 가족 이 더 힘든 법 이에요."}
    errors, lengths = utterance_errors(refs, [hyps], "char", korean_normalize)
    assert errors.tolist() == [[0]] and lengths.tolist() == [12]
    errors, lengths = utterance_errors(refs, [hyps], "word")
    assert errors.tolist() == [[4]] and lengths.tolist() == [5]
    with pytest.raises(KaldiCompressError, match="no words"):
        utterance_errors({"u1": "", "u2": " "}, [{"u1": "a"}], mode="all")


# --- the wer-bootci command ------------------------------------------------------------

def run_bootci(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["wer-bootci", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def write_text(path: Path, table: dict[str, str]) -> str:
    path.write_text("".join(f"{u} {t}\n" for u, t in table.items()), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path) -> tuple[str, str, str]:
    return (write_text(tmp_path / "ref", REFS), write_text(tmp_path / "hyp", HYP1),
            write_text(tmp_path / "hyp2", HYP2))


def test_command_prints_compute_wer_bootci_lines(files, capsys):
    ref, hyp, _ = files
    rc, out, err = run_bootci(capsys, "--mode=present", ref, hyp)
    assert (rc, err) == (0, "")
    [line] = out.splitlines()
    mean, lo, hi = map(float, re.fullmatch(interval_re("Set1"), line).groups())
    assert lo <= mean <= hi and hi - mean == pytest.approx(mean - lo, abs=0.011)
    rc, out, _ = run_bootci(capsys, "--cer", "--mode=present", ref, hyp)
    assert re.fullmatch(interval_re("Set1", "%CER"), out.splitlines()[0])


def test_command_with_two_sets_adds_the_paired_difference(files, capsys):
    ref, hyp, hyp2 = files
    rc, out, _ = run_bootci(capsys, "--mode=all", "--nbootstrap=4000", "--seed=3",
                            ref, hyp, hyp2)
    assert rc == 0
    set1, set2, improve, delta = out.splitlines()
    m1 = float(re.fullmatch(interval_re("Set1"), set1).group(1))
    m2 = float(re.fullmatch(interval_re("Set2"), set2).group(1))
    assert 0 <= float(re.fullmatch(IMPROVE_RE, improve).group(1)) <= 100
    d, lo, hi = map(float, re.fullmatch(delta_re(), delta).groups())
    assert lo <= d <= hi and d == pytest.approx(m2 - m1, abs=1.5)
    rc, again, _ = run_bootci(capsys, "--mode=all", "--replications=4000", "--seed=3",
                              ref, hyp, hyp2)
    assert again == out                                          # the seed fixes the output


def test_command_identical_sets(files, capsys):
    ref, hyp, _ = files
    rc, out, _ = run_bootci(capsys, "--mode=present", ref, hyp, hyp)
    assert rc == 0
    set1, set2, improve, delta = out.splitlines()
    assert re.fullmatch(interval_re("Set1"), set1) and re.fullmatch(interval_re("Set2"), set2)
    assert improve == "Probability of Set2 improving Set1: 0.00"
    assert delta == ("Set2 - Set1: %WER +0.00 95% Conf Interval [ +0.00, +0.00 ] "
                     "(paired, percentiles)")


def test_command_input_errors_are_one_line(files, tmp_path, capsys):
    ref, hyp, hyp2 = files
    empty = write_text(tmp_path / "empty", {})
    other = write_text(tmp_path / "other", {"u8": "a"})
    absent = str(tmp_path / "absent")
    for args, message in [
            ((ref, absent), f"{absent}: cannot read"),
            ((empty, hyp), f"{empty}: no utterances"),
            (("--mode=present", ref, other), f"{other}: none of the 3 utterances of {ref}"),
            (("--mode=present", ref, hyp, other),
             f"{hyp} and {other}: none of the 3 utterances of {ref} has a hypothesis in both"),
            ((ref, hyp), "utterance u3 has no hypothesis in set 1 (mode strict"),
            (("--nbootstrap=0", ref, hyp), "--replications (--nbootstrap) 0: expected at least"),
            (("-", "-"), "only one of REF, HYP and HYP2")]:
        rc, out, err = run_bootci(capsys, *args)
        assert rc == 1 and out == ""
        assert err.startswith(f"kaldi-compress: error: {message}")
        assert len(err.splitlines()) == 1


def test_command_reads_one_input_from_stdin(files, monkeypatch, capsys):
    ref, hyp, _ = files
    rc, from_file, _ = run_bootci(capsys, "--mode=present", ref, hyp)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(Path(hyp).read_bytes())))
    rc, from_stdin, _ = run_bootci(capsys, "--mode=present", ref, "-")
    assert rc == 0 and from_stdin == from_file


def test_installed_command_exit_status(files):
    ref, hyp, _ = files
    proc = subprocess.run([*KALDI_COMPRESS, "wer-bootci", "--mode=present", ref, hyp],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and re.fullmatch(interval_re("Set1") + "\n", proc.stdout)
    proc = subprocess.run([*KALDI_COMPRESS, "wer-bootci", ref, hyp], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no hypothesis" in proc.stderr


def test_real_korean_references_against_themselves(ko_wide_dev, tmp_path, capsys):
    text = str(ko_wide_dev / "text")
    rc, out, _ = run_bootci(capsys, "--cer", "--normalize=korean", text, text)
    assert rc == 0 and out == "Set1: %CER 0.00 95% Conf Interval [ 0.00, 0.00 ]\n"
    # set 2 drops each utterance's first character: one deletion per utterance, always worse
    clipped = write_text(tmp_path / "clipped",
                         {u: t[1:] for u, t in read_transcripts(text).items()})
    rc, out, _ = run_bootci(capsys, "--cer", "--normalize=korean", text, text, clipped)
    set1, _, improve, delta = out.splitlines()
    assert set1 == "Set1: %CER 0.00 95% Conf Interval [ 0.00, 0.00 ]"
    assert improve == "Probability of Set2 improving Set1: 0.00"
    d, lo, hi = map(float, re.fullmatch(delta_re("%CER"), delta).groups())
    assert 0 < lo < d < hi
