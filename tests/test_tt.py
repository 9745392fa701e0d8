"""Tensor-train layers: TT-SVD as the theory says, Kaldi components computing exactly the
TT product, the real model reproduced at full rank, budgets, errors, and Vosk decoding."""
import json

import numpy as np
import pytest

from kaldi_compress import cli
from kaldi_compress.cli import tt as tt_cli
from kaldi_compress.compress.tt import (TTShape, candidate_shapes, to_tt_tensor, tt_svd,
                                        tt_svd_many)
from kaldi_compress.compress.spine import format_report
from kaldi_compress.compress.tt_compress import TtOptions, tt_compress
from kaldi_compress.compress.tt_kaldi import (TTLayer, apply_steps, chain_nodes, chain_steps,
                                              spliced)
from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.nnet3 import parse_model
from kaldi_compress.nnet3.components import (PerElementOffsetComponent, PermuteComponent,
                                             RepeatedAffineComponent)
from kaldi_compress.nnet3.descriptors import NodeRef
from models import reread
from kaldi_compress.nnet3.graph import Node



@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Small SVDs: one BLAS thread, as the tt command runs them."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, "blas"):
        yield

SHAPES = [TTShape((24, 32), (8, 8)), TTShape((8, 8, 12), (4, 4, 4)),
          TTShape((4, 4, 6, 8), (2, 2, 4, 4))]


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------
# TT-SVD

@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_full_rank_tt_svd_is_exact(shape):
    w = np.random.default_rng(0).standard_normal((shape.rows, shape.cols))
    tt = tt_svd(w, shape)
    assert tt.ranks == shape.full_ranks()
    assert rel(tt.to_matrix(), w) < 1e-12
    assert [g.shape for g in tt.cores] == [
        (tt.ranks[k], shape.out_modes[k], shape.in_modes[k], tt.ranks[k + 1])
        for k in range(shape.d)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_error_obeys_tt_svd_bound(shape):
    """||W - TT||_F <= sqrt(sum of the s_i^2 discarded over the unfoldings); with
    left-orthogonal cores it is an equality up to rounding."""
    rng = np.random.default_rng(1)
    # a decaying spectrum in every unfolding, as trained layers roughly have
    w = tt_svd(rng.standard_normal((shape.rows, shape.cols)), shape, 6).to_matrix() \
        + 0.05 * rng.standard_normal((shape.rows, shape.cols))
    for r in (1, 3, 8):
        tt = tt_svd(w, shape, max_rank=r)
        err = np.linalg.norm(w - tt.to_matrix())
        assert max(tt.ranks) <= r
        assert err <= tt.error_bound * (1 + 1e-9) + 1e-12
        assert err == pytest.approx(tt.error_bound, rel=1e-6)
    for eps in (0.05, 0.2, 0.6):
        tt = tt_svd(w, shape, eps=eps)
        assert rel(tt.to_matrix(), w) <= eps
        # each unfolding was cut at delta = eps/sqrt(d-1) ||W||
        delta2 = eps ** 2 / (shape.d - 1) * np.vdot(w, w)
        assert all(lost <= delta2 * (1 + 1e-9) for lost in tt.discarded)


def test_unfolding_spectra_are_discarded_energy():
    """d = 2: the discarded energy at rank r is the tail of the one unfolding's spectrum."""
    shape = SHAPES[0]
    w = np.random.default_rng(2).standard_normal((shape.rows, shape.cols))
    s = np.linalg.svd(to_tt_tensor(w, shape).reshape(shape.modes), compute_uv=False)
    for tt, r in zip(tt_svd_many(w, shape, [1, 10, 50]), [1, 10, 50]):
        assert tt.discarded[0] == pytest.approx(float((s[r:] ** 2).sum()), rel=1e-9)


def test_same_error_as_tensorly():
    tl_tt = pytest.importorskip("tensorly.decomposition")
    import tensorly as tl
    rng = np.random.default_rng(3)
    for shape in SHAPES:
        w = rng.standard_normal((shape.rows, shape.cols))
        for r in (2, 7):
            ours = tt_svd(w, shape, max_rank=r)
            theirs = tl_tt.tensor_train_matrix(w.reshape(shape.out_modes + shape.in_modes),
                                               [1] + [r] * (shape.d - 1) + [1])
            dense = tl.tt_matrix_to_tensor(theirs).reshape(w.shape)
            assert ours.ranks == tuple(f.shape[0] for f in theirs) + (1,)
            assert np.linalg.norm(w - ours.to_matrix()) == pytest.approx(
                np.linalg.norm(w - dense), rel=1e-9)


def test_shapes_factor_or_pad_the_dims():
    for rows, cols in [(768, 64), (768, 1536), (64, 1536), (768, 220)]:
        cands = candidate_shapes(rows, cols)
        assert cands and all(s.rows == rows == p and s.cols == cols for s, p in cands)
        assert {s.d for s, _ in cands} == {2, 3}
    # 2616 = 2^3 x 3 x 109 is padded a little to dims that factor evenly
    cands = candidate_shapes(2616, 64)
    assert all(s.cols == 64 and 2616 < p == s.rows <= 2616 * 1.05 for s, p in cands)
    assert all(max(s.out_modes) < 109 for s, _ in cands)


# ---------------------------------------------------------------------------
# The Kaldi chain, evaluated component by component in numpy

def run_written(nnet, names, x):
    """Apply the written nodes ``names`` to rows x, one Kaldi component at a time."""
    for name in names:
        node = nnet.node(name)
        if node.kind == "dim-range-node":
            x = x[:, node.dim_offset:node.dim_offset + node.dim]
            continue
        c = nnet.components[node.component]
        if isinstance(c, PermuteComponent):           # out[i] = in[column_map[i]]
            x = x[:, c.column_map]
        elif isinstance(c, RepeatedAffineComponent):  # same block on each contiguous piece
            blocks = x.reshape(len(x), c.num_repeats, -1)
            x = (blocks @ c.linear_params.T.astype(np.float64)
                 + c.bias_params.astype(np.float64)).reshape(len(x), -1)
        elif isinstance(c, PerElementOffsetComponent):
            x = x + c["<Offsets>"].astype(np.float64)
        else:
            raise AssertionError(f"unexpected component {c.type} in a TT chain")
    return x


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_chain_steps_compute_the_tt_product(shape):
    rng = np.random.default_rng(4)
    tt = tt_svd(rng.standard_normal((shape.rows, shape.cols)), shape, max_rank=5)
    x = rng.standard_normal((7, shape.cols))
    y = apply_steps(chain_steps(tt.cores), x)
    assert rel(y, x @ tt.to_matrix().T) < 1e-12


@pytest.mark.parametrize("layer,shape", [
    ("prefinal-chain.affine", "24x32,8x8"),      # affine, bias, the doc's shape
    ("tdnnf2.affine", "12x8x8,2x8x8"),           # TdnnComponent, offsets (-1, 0), bias
    ("tdnnf3.linear", "4x4x4,8x12x16"),          # TdnnComponent without bias
    ("output.affine", "14x14x14,4x4x4"),         # 2616 rows padded to 2744, trimmed
])
def test_written_components_reproduce_the_layer_at_full_rank(prepared, layer, shape):
    nnet = prepared.nnet
    comp = nnet.components[layer]
    w, b = comp.linear_params.astype(np.float64), comp.get("<BiasParams>")
    before_desc = nnet.node(layer).descriptor
    opts = TtOptions(components=layer, tt_eps=0.0, tt_shape=TTShape.parse(shape),
                     shrinkage_threshold=1e9)
    report, = tt_compress(nnet, opts)
    assert report.method == "tt" and report.weight_error < 1e-6
    written = reread(prepared).nnet
    names = [n.name for n in written.nodes if n.name.startswith(layer + ".tt")]
    first = written.node(names[0])
    offsets = comp.time_offsets if hasattr(comp, "time_offsets") else [0]
    assert first.descriptor == spliced(before_desc, offsets)
    # every former reader of the layer now reads the chain's last node
    assert not any(layer in n.inputs() for n in written.nodes)
    assert any(names[-1] in n.inputs() for n in written.nodes)
    x = np.random.default_rng(5).standard_normal((9, w.shape[1]))
    y = run_written(written, names, x)
    dense = x @ w.T + (b.astype(np.float64) if b is not None and b.size else 0.0)
    assert y.shape == dense.shape
    assert rel(y, dense) < 1e-6
    # cores as written are the TT-SVD cores (float32): the chain equals their product
    assert report.params_after == sum(
        written.components[written.node(n).component].num_parameters for n in names
        if written.node(n).kind == "component-node")


def test_parameters_counted_as_kaldi_counts_them(prepared):
    nnet = prepared.nnet
    before = nnet.num_parameters
    reports = tt_compress(nnet, TtOptions(components="tdnnf[23].*", tt_rank=12))
    assert [r.method for r in reports] == ["tt"] * 4
    after = reread(prepared).nnet
    assert after.num_parameters == before - sum(r.params_before for r in reports) \
        + sum(r.params_after for r in reports)
    for name, c in after.components.items():
        if ".tt" not in name:
            continue
        if isinstance(c, RepeatedAffineComponent):   # its block and its (shared) bias
            assert c.num_parameters == c.linear_params.size + c.bias_params.size
            assert c.is_updatable and c.learning_rate > 0
        elif isinstance(c, PermuteComponent):
            assert not c.is_updatable
        else:
            assert isinstance(c, PerElementOffsetComponent) and c.is_updatable


def test_full_rank_model_matches_original_in_our_forward(ko_bytes, ko_model_dir, ko_wide_dev):
    """Kaldi-exact torch forward (nnet3-compute chunking) of the whole network."""
    from kaldi_compress.compute import ComputeOptions, SimpleComputer, compare_outputs
    from kaldi_compress.frontend import ModelDirFrontEnd
    base = parse_model(bytearray(ko_bytes), "final.mdl")
    other = parse_model(bytearray(ko_bytes), "final.mdl")
    for layer, shape in [("prefinal-chain.affine", "24x32,8x8"), ("tdnnf7.affine", "32x24,4x32")]:
        tt_compress(other.nnet, TtOptions(components=layer, tt_eps=0.0,
                                          tt_shape=TTShape.parse(shape), shrinkage_threshold=1e9))
    other = reread(other)
    front = ModelDirFrontEnd(ko_model_dir, dither=0.0)
    utts = [front.features(w) for w in sorted(ko_wide_dev.glob("*.wav"))[:3]]
    outs = [SimpleComputer(m.nnet, ComputeOptions(
        frame_subsampling_factor=front.frame_subsampling_factor,
        online_ivector_period=front.ivector_period)).compute_many(utts) for m in (base, other)]
    fid = compare_outputs(*outs)
    assert fid.agreement == 100.0
    assert max(rel(o, b) for b, o in zip(*outs)) < 1e-5


# ---------------------------------------------------------------------------
# Budgets: TT, SVD or nothing, per unit

def kron_layer(nnet, name, out_modes, in_modes):
    """Make ``name``'s W a Kronecker product: TT rank 1 for that shape, full matrix rank."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((out_modes[0], in_modes[0]))
    b = rng.standard_normal((out_modes[1], in_modes[1]))
    comp = nnet.components[name]
    comp.set("<LinearParams>", (np.kron(a, b) * 0.05).astype(np.float32))


FOUR_UNITS = "tdnn[1f][.234]*"        # tdnn1.affine and the TDNN-F units 2..4


def test_budget_picks_tt_where_tt_wins(prepared):
    nnet = prepared.nnet
    kron_layer(nnet, "tdnn1.affine", (32, 24), (11, 20))
    budget = nnet.num_parameters - 400000
    reports = tt_compress(nnet, TtOptions(components=FOUR_UNITS, target_params=budget))
    assert [r.name.split(" ")[0] for r in reports] == \
        ["tdnn1.affine", "tdnnf2.linear", "tdnnf3.linear", "tdnnf4.linear"]
    assert nnet.num_parameters <= budget
    tdnn1 = reports[0]
    assert tdnn1.method == "tt" and tdnn1.weight_error < 1e-5
    assert tdnn1.params_after < tdnn1.params_before / 20
    assert tdnn1.svd_rank == 220            # SVD would need full rank for that error
    assert {r.method for r in reports[1:]} == {"svd"}
    assert "tdnn1.affine" in format_report(reports)
    assert reread(prepared).nnet.num_parameters == nnet.num_parameters


def test_budget_without_svd_uses_only_tt(prepared):
    nnet = prepared.nnet
    budget = nnet.num_parameters - 150000
    reports = tt_compress(nnet, TtOptions(components=FOUR_UNITS, target_params=budget,
                                          allow_svd=False))
    assert {r.method for r in reports} <= {"tt", "kept"} and "tt" in {r.method for r in reports}
    assert nnet.num_parameters <= budget
    assert reread(prepared).nnet.num_parameters == nnet.num_parameters


def test_impossible_budget_changes_nothing(prepared):
    before = prepared.to_bytes()
    with pytest.raises(KaldiCompressError, match="cannot reach 1000 parameters"):
        tt_compress(prepared.nnet, TtOptions(components=FOUR_UNITS, target_params=1000))
    assert prepared.to_bytes() == before


# ---------------------------------------------------------------------------
# The command line: one-line errors

def run_cli(monkeypatch, argv):
    monkeypatch.setitem(cli.COMMANDS, "tt", tt_cli)
    return cli.main(["tt", *argv])


@pytest.mark.parametrize("args,message", [
    (["--tt-rank=4", "--tt-eps=0.1"], "give exactly one of --tt-rank"),
    (["--tt-rank=0"], "--tt-rank must be positive"),
    (["--tt-eps=1.5"], "--tt-eps must be in [0, 1)"),
    (["--tt-rank=4", "--tt-shape=24x32x2,8x8"], "need as many output as input modes"),
    (["--tt-rank=4", "--tt-shape=24x32,8by8"], "expected m1xm2..,n1xn2.."),
    (["--tt-rank=4", "--components=prefinal-chain.affine", "--tt-shape=24x32,8x16"],
     "is 768x128 but prefinal-chain.affine is 768x64"),
    (["--tt-rank=4", "--components=prefinal-chain.affine", "--tt-shape=20x32,8x8"],
     "is 640x64 but prefinal-chain.affine is 768x64"),
    (["--tt-rank=4", "--components=nothing*"], "matches no component"),
    (["--tt-rank=4", "--components=lda"], "no trainable affine-like layer"),
    (["--tt-rank=4", "--tt-cores=1"], "--tt-cores must list"),
    (["--target-params=10", "--components=tdnnf2.*"], "cannot reach 10 parameters"),
])
def test_errors_are_one_line(monkeypatch, capsys, ko_mdl, tmp_path, args, message):
    out = tmp_path / "out.mdl"
    assert run_cli(monkeypatch, [*args, str(ko_mdl), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kaldi-compress: error: ")
    assert message in err
    assert not out.exists()


def test_cli_writes_model_and_report(monkeypatch, capsys, ko_mdl, tmp_path):
    out, rep = tmp_path / "out.mdl", tmp_path / "report.json"
    argv = ["--tt-rank=8", "--components=tdnnf4.affine", f"--report={rep}", str(ko_mdl), str(out)]
    assert run_cli(monkeypatch, argv) == 0
    err = capsys.readouterr().err
    assert "tdnnf4.affine" in err and "SVD rank@err" in err
    doc = json.loads(rep.read_text())
    model = parse_model(bytearray(out.read_bytes()), "out.mdl")
    assert doc["params_after"] == model.nnet.num_parameters < doc["params_before"]
    assert doc["layers"][0]["method"] == "tt"
    assert max(int(r) for r in doc["layers"][0]["tt_ranks"].split("-")) == 8


# ---------------------------------------------------------------------------
# Vosk (Kaldi's looped decoder) is the judge

def exact_identity_tt(nnet, layer):
    """Put the identity, written as a TT chain (cores I_8 and I_{n/8}: exact in floats),
    in front of ``layer``: the network's function and its floating-point results are
    unchanged, only its structure grows by Permute/RepeatedAffine nodes."""
    node = nnet.node(layer)
    comp = nnet.components[node.component]
    dim, inner = comp.input_dim, comp.input_dim // 8
    cores = [np.eye(8).reshape(1, 8, 8, 1), np.eye(inner).reshape(1, inner, inner, 1)]
    chain = TTLayer(chain_steps(cores), dim, None, comp.updatable_config())
    nodes = chain_nodes(nnet, layer + ".id", layer + ".id", node.descriptor, chain)
    i = nnet.node_index(layer)
    nnet.nodes[i:i + 1] = nodes + [Node("component-node", layer, component=node.component,
                                        descriptor=NodeRef(nodes[-1].name))]
    nnet.check()


@pytest.mark.slow
def test_vosk_decodes_full_rank_tt_as_the_original(ko_bytes, ko_model_dir, ko_wide_dev,
                                                   golden, tmp_path):
    from kaldi_compress.evaluate.scoring import korean_normalize, score
    from kaldi_compress.evaluate.vosk_decode import decode, list_wavs, model_dir_with_am
    wavs = list_wavs(ko_wide_dev)

    def hyps(model, tag):
        path = tmp_path / f"{tag}.mdl"
        path.write_bytes(model.to_bytes())
        return decode(model_dir_with_am(ko_model_dir, path, tmp_path / tag), wavs,
                      jobs=2).hyps

    original = hyps(parse_model(bytearray(ko_bytes), "final.mdl"), "original")
    assert len(original) == 60 and sum(bool(h) for h in original.values()) >= 55
    # 1. Exact arithmetic: Permute + RepeatedAffine nodes change nothing Vosk decodes.
    exact = parse_model(bytearray(ko_bytes), "final.mdl")
    exact_identity_tt(exact.nnet, "prefinal-chain.affine")
    assert hyps(reread(exact), "exact") == original
    # 2. A real layer at full TT rank: the same up to float rounding.  Its rounding is a
    # re-association of the layer's sums, which flips only decisions that are exact ties
    # (a one-ulp change of this layer's weights flips one of these 60 too).
    full = parse_model(bytearray(ko_bytes), "final.mdl")
    tt_compress(full.nnet, TtOptions(components="prefinal-chain.affine", tt_eps=0.0,
                                     tt_shape=TTShape.parse("24x32,8x8"),
                                     shrinkage_threshold=1e9))
    got = hyps(reread(full), "full")
    differing = [u for u in original if got[u] != original[u]]
    agreement = score(original, got, unit="char", normalize=korean_normalize)
    assert len(differing) <= 3 and agreement.rate < 1.0, differing
