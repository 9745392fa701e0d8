"""The torch forward pass against Kaldi's own ``nnet3-compute`` outputs."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from kaldi_compress import cli
from kaldi_compress.cli import compute as compute_cmd
from kaldi_compress.compute.chunking import ComputeOptions, SimpleComputer
from kaldi_compress.compute.forward import NnetForward
from kaldi_compress.compute.layers import Tdnn
from kaldi_compress.compute.layers import base as layers_base
from kaldi_compress.compute.plan import Geometry
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.io.tables import kaldi_io, read_matrix_dict
from kaldi_compress.nnet3 import read_model


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    """max |y - ref| over the matrix, relative to max |ref| (absolute below 1)."""
    assert y.shape == ref.shape
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1.0))


# (model, features, output, i-vectors, nnet3-compute options, effective frames-per-chunk)
RANDOM_NETS = [
    ("m1_tdnnf", "feats_dim20", "m1_tdnnf.output_fsf3", "ivectors_m1",
     dict(frame_subsampling_factor=3, online_ivector_period=10), 51),
    ("m1_tdnnf", "feats_dim20", "m1_tdnnf.output_fsf1", "ivectors_m1",
     dict(frame_subsampling_factor=1, online_ivector_period=10), 50),
    ("m2_simple", "feats_dim24", "m2_simple.output", None, {}, 50),
    ("m3_lstm", "feats_dim16", "m3_lstm.output", None,
     dict(frames_per_chunk=40, extra_left_context=12, extra_left_context_initial=0), 40),
    ("m4_conv_stats", "feats_dim40", "m4_conv_stats.output", None, {}, 51),
]


@pytest.mark.parametrize("name,feats,out,ivecs,opts,chunk", RANDOM_NETS,
                         ids=[f"{r[0]}-{r[2].split('.')[-1]}" for r in RANDOM_NETS])
def test_random_nets_match_nnet3_compute(golden, name, feats, out, ivecs, opts, chunk):
    d = golden / "nnets"
    computer = SimpleComputer(read_model(str(d / f"{name}.raw")).nnet, ComputeOptions(**opts))
    assert computer.frames_per_chunk == chunk          # as Kaldi's log says
    F = read_matrix_dict(f"ark:{d / feats}.ark.txt")
    I = read_matrix_dict(f"ark:{d / ivecs}.ark.txt") if ivecs else {}
    ref = read_matrix_dict(f"ark:{d / out}.ark.txt")
    assert list(ref) == list(F)
    for key in F:
        assert rel_err(computer.compute(F[key], I.get(key)), ref[key]) < 1e-4, key


def test_lstm_chunks_use_extra_left_context_after_the_first(golden):
    nnet = read_model(str(golden / "nnets" / "m3_lstm.raw")).nnet
    c = SimpleComputer(nnet, ComputeOptions(frames_per_chunk=40, extra_left_context=12,
                                            extra_left_context_initial=0))
    chunks = c.chunks(101)
    assert [(k.first_output, k.num_outputs, k.left, k.right) for k in chunks] == [
        (0, 40, 0, 0), (40, 40, 12, 0), (80, 21, 12, 0)]


@pytest.fixture(scope="module")
def ko_kaldi(golden):
    d = golden / "ko_features"
    with gzip.open(d / "output.ark.txt.gz") as f:
        out = dict(kaldi_io.read_mat_ark(f))
    with gzip.open(d / "output_fsf1_wav_001.ark.txt.gz") as f:
        out1 = dict(kaldi_io.read_mat_ark(f))
    return (read_matrix_dict(f"ark:{d / 'mfcc.ark.txt'}"),
            read_matrix_dict(f"ark:{d / 'ivectors.ark.txt'}"), out, out1)


@pytest.fixture(scope="module")
def ko_nnet(ko_mdl):
    return read_model(str(ko_mdl)).nnet


def test_korean_chain_output_matches_nnet3_compute(ko_nnet, ko_kaldi):
    feats, ivectors, ref, _ = ko_kaldi
    c = SimpleComputer(ko_nnet, ComputeOptions(frame_subsampling_factor=3, frames_per_chunk=50,
                                               online_ivector_period=10))
    assert c.frames_per_chunk == 51
    outs = c.compute_many([(feats[k], ivectors[k]) for k in feats])
    assert [len(y) for y in outs] == [-(-len(feats[k]) // 3) for k in feats]
    for key, y in zip(feats, outs):
        assert rel_err(y, ref[key]) < 1e-4, key
        assert (y.argmax(1) == ref[key].argmax(1)).all()


def test_korean_fsf1_output_matches_nnet3_compute(ko_nnet, ko_kaldi):
    feats, ivectors, _, ref = ko_kaldi
    c = SimpleComputer(ko_nnet, ComputeOptions(online_ivector_period=10))
    y = c.compute(feats["wav_001"], ivectors["wav_001"])
    assert y.shape == (513, 2616)
    assert rel_err(y, ref["wav_001"]) < 1e-4


def test_shortcuts_change_only_the_evaluation_order(ko_nnet, ko_kaldi, golden, monkeypatch):
    """The first two linear layers per utterance frame (InputPrefix), in-place
    elementwise layers, last chunks padded to the full chunk and oneDNN products give
    the layer-by-layer values (an observer turns them all off)."""
    feats, ivectors, _, _ = ko_kaldi
    c = SimpleComputer(ko_nnet, ComputeOptions(frame_subsampling_factor=3,
                                               online_ivector_period=10))
    assert c.prefix is not None and c.prefix.node == "tdnn1.affine"
    assert c.prefix.offsets.tolist() == [-1, 0, 1]
    assert c.forward.graph.fixed_window
    utts = [(feats[k], ivectors[k]) for k in feats]
    assert len({-(-len(f) // 3) % 17 for f, _ in utts} - {0}) > 1   # short last chunks
    fast = c.compute_many(utts)
    assert layers_base._ONEDNN is not None       # probed at the first large product
    assert [g.num_outputs for g, given in c.forward._plans] == [17, 17]   # one shape
    seen = []
    c.forward.observer = lambda node, *_: seen.append(node)
    monkeypatch.setattr(layers_base, "_ONEDNN", None)
    plain = c.compute_many(utts)
    assert layers_base._ONEDNN is None          # with an observer, never asked for oneDNN
    assert "lda" in seen and "tdnn1.affine" in seen
    assert {g.num_outputs for g, _ in c.forward._plans} > {17}   # their own shapes
    for y, ref in zip(fast, plain):
        assert rel_err(y, ref) < 1e-5
    m1 = read_model(str(golden / "nnets" / "m1_tdnnf.raw")).nnet
    assert SimpleComputer(m1).prefix is not None
    # a first layer that also appends a Const keeps layer-by-layer evaluation
    m2 = read_model(str(golden / "nnets" / "m2_simple.raw")).nnet
    assert SimpleComputer(m2).prefix is None
    # IfDefined recurrence; statistics over the frames a chunk has: chunk shapes kept
    for name in ("m3_lstm", "m4_conv_stats"):
        net = read_model(str(golden / "nnets" / f"{name}.raw")).nnet
        assert not NnetForward(net).graph.fixed_window


@pytest.mark.parametrize("name", ["m1_tdnnf", "m4_conv_stats"])
def test_node_order_changes_neither_context_nor_outputs(golden, name):
    """Nodes listed only after earlier nodes (in order) are analysed in one pass; in any
    other order, passes repeat until nothing changes: the same context and outputs."""
    d = golden / "nnets"
    dim = 20 if name == "m1_tdnnf" else 40
    feats = read_matrix_dict(f"ark:{d / f'feats_dim{dim}.ark.txt'}")
    ivecs = read_matrix_dict(f"ark:{d / 'ivectors_m1.ark.txt'}") if name == "m1_tdnnf" else None
    nets = [read_model(str(d / f"{name}.raw")).nnet for _ in range(2)]
    shuffled = nets[1]
    inputs = [n for n in shuffled.nodes if n.kind == "input-node"]
    shuffled.nodes = inputs + [n for n in reversed(shuffled.nodes) if n.kind != "input-node"]
    assert nets[0].in_order() and not shuffled.in_order()
    assert nets[0].compute_context() == shuffled.compute_context()
    opts = dict(frame_subsampling_factor=3, online_ivector_period=10) if ivecs else {}
    outs = [SimpleComputer(n, ComputeOptions(**opts)).compute_many(
        [(feats[k], ivecs[k] if ivecs else None) for k in feats]) for n in nets]
    assert NnetForward(nets[0]).graph.in_order and not NnetForward(shuffled).graph.in_order
    for a, b in zip(*outs):
        assert rel_err(a, b) < 1e-6


def test_tdnn_taps_are_input_rows_whether_or_not_it_projects_first(ko_nnet):
    """Calibration reads a Tdnn's spliced input through ``Tdnn.tap_rows``: the same
    rows for a layer that projects first (narrow output) and one that splices."""
    fwd = NnetForward(ko_nnet)
    t_in = np.arange(-5, 40, 3)
    t_out = t_in[1:-1]
    for name, project in (("tdnnf8.linear", True), ("tdnnf8.affine", False)):
        layer = fwd.layer_of(name)
        index = layer.index(t_out, t_in, None)
        assert index[1] is project
        rows = Tdnn.tap_rows(index)
        assert np.array_equal(t_in[rows.numpy()], t_out[:, None] + layer.offsets[None, :])


def test_cli_compute_writes_kaldi_tables(golden, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "compute", compute_cmd)
    d = golden / "nnets"
    out = tmp_path / "out.txt"
    rc = cli.main(["compute", "--frames-per-chunk=40", "--extra-left-context=12",
                   "--extra-left-context-initial=0", str(d / "m3_lstm.raw"),
                   f"ark:{d / 'feats_dim16.ark.txt'}", f"ark,t:{out}"])
    assert rc == 0
    got, ref = read_matrix_dict(f"ark:{out}"), read_matrix_dict(f"ark:{d / 'm3_lstm.output.ark.txt'}")
    assert list(got) == list(ref)
    assert all(rel_err(got[k], ref[k]) < 1e-5 for k in ref)
    # binary output and --apply-exp
    rc = cli.main(["compute", "--frames-per-chunk=40", "--extra-left-context=12",
                   "--extra-left-context-initial=0", "--apply-exp", str(d / "m3_lstm.raw"),
                   f"ark:{d / 'feats_dim16.ark.txt'}", f"ark:{tmp_path / 'exp.ark'}"])
    assert rc == 0
    exp = read_matrix_dict(f"ark:{tmp_path / 'exp.ark'}")
    assert all(rel_err(exp[k], np.exp(ref[k])) < 1e-5 for k in ref)


def test_cli_compute_errors_are_one_line_and_write_nothing(golden, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.setitem(cli.COMMANDS, "compute", compute_cmd)
    d = golden / "nnets"
    out = tmp_path / "out.ark"
    rc = cli.main(["compute", str(d / "m1_tdnnf.raw"), f"ark:{d / 'feats_dim20.ark.txt'}",
                   f"ark:{out}"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "i-vectors" in err
    assert not out.exists() and not list(tmp_path.iterdir())
    rc = cli.main(["compute", str(d / "m2_simple.raw"), f"ark:{d / 'feats_dim16.ark.txt'}",
                   f"ark:{out}"])
    err = capsys.readouterr().err
    assert rc == 1 and "dimension 24" in err and not out.exists()


def test_write_back_stores_trained_values(golden):
    model = read_model(str(golden / "nnets" / "m2_simple.raw"))
    fwd = NnetForward(model.nnet)
    layer = fwd.layer_of("final")
    dtype = model.nnet.components["final"]["<LinearParams>"].dtype
    with torch.no_grad():
        layer.weight += 0.5
    fwd.write_back()
    stored = model.nnet.components["final"]["<LinearParams>"]
    assert stored.dtype == dtype
    np.testing.assert_array_equal(stored, layer.weight.numpy())
    assert all(p.requires_grad is False for p in fwd.parameters())
    # a new forward pass sees the written values
    geom = Geometry(-3, 7, 1, 1, False)
    x = torch.randn(2, 7, 24)
    with torch.no_grad():
        np.testing.assert_allclose(NnetForward(model.nnet)(x, None, geom), fwd(x, None, geom),
                                   rtol=1e-6, atol=1e-6)


def test_output_without_enough_context_is_an_error(golden):
    fwd = NnetForward(read_model(str(golden / "nnets" / "m2_simple.raw")).nnet)
    with pytest.raises(KaldiCompressError, match="not computable"):
        fwd(torch.zeros(1, 3, 24), None, Geometry(0, 3, 3, 1, False))


@pytest.mark.parametrize("name,dim,geom", [
    ("m1_tdnnf", 20, Geometry(-2, 55, 17, 3, True)),
    ("m3_lstm", 16, Geometry(-12, 52, 40, 1, False)),
])
def test_gradients_reach_every_parameter(golden, name, dim, geom):
    """A later fine-tuning step can train the network through the same forward pass."""
    fwd = NnetForward(read_model(str(golden / "nnets" / f"{name}.raw")).nnet)
    for p in fwd.parameters():
        p.requires_grad_(True)
    ivec = torch.randn(2, 8) if geom.ivector else None
    fwd(torch.randn(2, geom.num_inputs, dim), ivec, geom).square().sum().backward()
    grads = [p.grad for p in fwd.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_unsupported_component_is_a_one_line_error():
    from kaldi_compress.compute.layers import make_layer
    from kaldi_compress.nnet3.components import UnknownComponent
    with pytest.raises(KaldiCompressError, match="does not support FooComponent"):
        make_layer(UnknownComponent("FooComponent", b"", True))


def test_stop_after_sees_the_same_values_and_computes_no_further(ko_nnet, ko_kaldi):
    """``stop_after``: an observer gets exactly what a full pass shows it up to those
    nodes, nothing after them, and no output is computed."""
    feats, ivectors, _, _ = ko_kaldi
    utts = [(feats[k], ivectors[k]) for k in sorted(feats)][:2]
    runs = {}
    for stop in (frozenset(), frozenset({"tdnnf3.linear", "tdnnf2.linear"})):
        c = SimpleComputer(ko_nnet, ComputeOptions(frame_subsampling_factor=3,
                                                   online_ivector_period=10))
        seen = []
        c.forward.observer = lambda node, x_in, x, index: seen.append((node, x.clone()))
        c.forward.stop_after = stop
        runs[stop] = seen
        c.compute_many(utts)
    full, short = runs.values()
    nodes = [n for n, _ in short]
    assert nodes[-1] == "tdnnf3.linear" and "tdnnf3.affine" not in nodes
    assert "output" in [n for n, _ in full]
    kept = [(n, x) for n, x in full if n in set(nodes)]
    assert len(kept) == len(short)
    for (n1, x1), (n2, x2) in zip(kept, short):
        assert n1 == n2 and torch.equal(x1, x2)
