"""The ``info`` and ``copy`` commands on the real Korean model."""
import json
import subprocess
import sys

import pytest

from kaldi_compress import read_model

KO_PREPARED_PARAMS = 3_422_064 - 269_112


def run_cli(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kaldi_compress", *map(str, args)],
                          input=stdin, capture_output=True)


def test_info_json(ko_mdl):
    proc = run_cli("info", "--json", ko_mdl)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["num_parameters"], info["left_context"], info["right_context"]) == (3_422_064, 34, 34)
    assert (info["input_dim"], info["ivector_dim"], info["num_pdfs"]) == (40, 100, 2616)
    comps = {c["name"]: c for c in info["components"]}
    assert len(comps) == 103
    assert comps["tdnnf6.linear"] == {"name": "tdnnf6.linear", "type": "TdnnComponent",
                                      "input_dim": 768, "output_dim": 64,
                                      "num_parameters": 98_304}
    assert comps["lda"]["num_parameters"] == 0  # FixedAffine is not updatable
    assert sum(c["num_parameters"] for c in comps.values()) == info["num_parameters"]


def test_info_text_from_stdin_text_model(ko_kaldi_text, golden):
    proc = run_cli("info", "-", stdin=ko_kaldi_text.read_bytes())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    kaldi = (golden / "ko_am_info.txt").read_text().splitlines()
    assert lines[:116] == kaldi[:116]
    assert lines[116] == "# 103 components"


def test_copy_binary_text_raw_and_stdout(ko_mdl, ko_kaldi_text, tmp_path):
    original = ko_mdl.read_bytes()
    proc = run_cli("copy", ko_mdl, "-")
    assert proc.returncode == 0 and proc.stdout == original
    text = tmp_path / "final.txt.mdl"
    assert run_cli("copy", "--binary=false", ko_mdl, text).returncode == 0
    assert text.read_bytes().startswith(b"<TransitionModel> \n<Topology> \n")
    raw = tmp_path / "final.raw"
    assert run_cli("copy", "--raw", ko_mdl, raw).returncode == 0
    model = read_model(str(raw))
    assert not model.is_am and model.nnet.num_parameters == 3_422_064
    assert raw.read_bytes().startswith(b"\0B<Nnet3> \n")
    # text -> binary: a loadable model whose parameters are the 7-digit text values
    back = tmp_path / "back.mdl"
    assert run_cli("copy", ko_kaldi_text, back).returncode == 0
    assert len(back.read_bytes()) == len(original)


def test_copy_prepare_for_test_drops_xent_branch(ko_mdl, tmp_path):
    out = tmp_path / "prepared.mdl"
    proc = run_cli("copy", "--prepare-for-test=true", ko_mdl, out)
    assert proc.returncode == 0, proc.stderr
    model = read_model(str(out))
    assert model.nnet.num_parameters == KO_PREPARED_PARAMS
    assert model.nnet.output_names() == ["output"]
    assert not any("xent" in c for c in model.nnet.components)
    ctx = model.nnet.compute_context()
    assert (ctx.left, ctx.right) == (34, 34)
    bn = model.nnet.components["tdnn1.batchnorm"]
    assert bn["<TestMode>"] is True
    assert model.nnet.components["tdnn1.dropout"].get("<TestMode>") is True


@pytest.mark.parametrize("args,msg", [
    (["copy", "--binary=maybe", "a", "b"], "expected true or false"),
    (["info"], "the following arguments are required"),
    (["copy", "/nonexistent/final.mdl", "out.mdl"], "cannot read"),
])
def test_bad_options_and_paths(args, msg, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kaldi_compress", *args], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and msg in proc.stderr
    assert list(tmp_path.iterdir()) == []
