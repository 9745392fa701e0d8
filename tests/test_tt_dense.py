"""TT layers trained through their cores: chains found in written models, cores read back
exactly, the dense forward equal to the chain's (values and gradients), written back."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kaldi_compress.compress.tt import TTShape, tt_svd, tt_to_matrix
from kaldi_compress.compress.tt_chain import find_chains
from kaldi_compress.compress.tt_compress import TtOptions, tt_compress
from kaldi_compress.compress.tt_kaldi import TTLayer, chain_steps, write_layer
from kaldi_compress.compute.forward import NnetForward
from kaldi_compress.finetune.chunks import Chunker
from kaldi_compress.finetune.data import Utterance
from kaldi_compress.finetune.train import trainable_parameters
from kaldi_compress.finetune.tt_dense import DenseTTForward
from kaldi_compress.nnet3 import read_model
from kaldi_compress.nnet3.edit import prepare_for_test
from models import reread


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, "blas"):
        yield


SHAPES = [TTShape((24, 32), (8, 8)), TTShape((8, 8, 12), (4, 4, 4)),
          TTShape((4, 4, 6, 8), (2, 2, 4, 4))]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_torch_tt_matrix_is_numpy_tt_matrix(shape):
    w = np.random.default_rng(1).standard_normal((shape.rows, shape.cols))
    cores = tt_svd(w, shape, 5).cores
    got = tt_to_matrix([torch.tensor(g.copy()) for g in cores], torch.einsum).numpy()
    np.testing.assert_allclose(got, tt_to_matrix(cores), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cores_are_read_back_from_the_written_chain(prepared, shape):
    """Whatever the shape and contraction order, the chain's blocks give back the cores."""
    nnet = prepared.nnet
    rng = np.random.default_rng(2)
    comp = nnet.components[nnet.node("prefinal-chain.affine").component]   # 64 -> 768
    cores = [rng.standard_normal((r0, m, k, r1)).astype(np.float32)
             for r0, m, k, r1 in zip((1, 3, 2, 4), shape.out_modes, shape.in_modes,
                                     (3, 2, 4, 5)[:shape.d - 1] + (1,))]
    layer = TTLayer(chain_steps(cores), shape.rows, None, comp.updatable_config())
    nodes = write_layer(nnet, "prefinal-chain.affine", layer, [0])
    chains = find_chains(nnet)
    assert [c.nodes for c in chains] == [[x for x in nodes if ".tt" in x and "bias" not in x]]
    got = chains[0].cores(nnet)
    assert [g.shape for g in got] == [g.shape for g in cores]
    assert all(np.array_equal(a, b) for a, b in zip(got, cores))


def test_no_chain_in_an_uncompressed_model(prepared):
    assert find_chains(prepared.nnet) == []


# --- the dense forward equals the chain's ----------------------------------------------

def chunks_for(teacher, student, utts: int = 1, frames: int = 400, dims=(40, 100)):
    rng = np.random.default_rng(3)
    us = [Utterance(f"u{i}", rng.standard_normal((frames, dims[0])).astype(np.float32),
                    rng.standard_normal((-(-frames // 10), dims[1])).astype(np.float32))
          for i in range(utts)]
    return Chunker(teacher, student, 3, 51, (0,), 10).cut(us)


def compare(student, chunks, n: int = 4):
    """Outputs and trainable-parameter gradients of the chain and the dense forward."""
    feats, ivecs = chunks.inputs(torch.arange(n))
    out = []
    for cls in (NnetForward, DenseTTForward):
        f = cls(student)
        params = trainable_parameters(f)
        for p in params.values():
            p.requires_grad_(True)
        y = f(feats, ivecs, chunks.geometry)
        (y ** 2).sum().backward()
        out.append((y.detach(), {k: p.grad for k, p in params.items()}))
    return out


def assert_same(chain, dense, grads_rtol=1e-4):
    (ya, ga), (yb, gb) = chain, dense
    scale = float(ya.abs().max())
    assert float((ya - yb).abs().max()) <= 1e-5 * scale
    assert ga.keys() == gb.keys()
    for k in ga:
        s = float(ga[k].abs().max())
        assert float((ga[k] - gb[k]).abs().max()) <= grads_rtol * max(s, 1e-30), k


@pytest.fixture(scope="module")
def korean_tt(ko_bytes):
    """The prepared Korean model with every layer a TT (2 and 3 cores, padded output)."""
    from kaldi_compress.nnet3 import parse_model
    model = parse_model(bytearray(ko_bytes), "final.mdl")
    prepare_for_test(model.nnet)
    teacher = model.nnet.copy()
    reports = tt_compress(model.nnet, TtOptions(tt_rank=12))
    assert sum(r.method == "tt" for r in reports) == 33          # every layer but lda
    return teacher, reread(model).nnet


def test_dense_forward_equals_chain_on_the_korean_model(korean_tt):
    teacher, student = korean_tt
    chains = find_chains(student)
    assert len(chains) == 33 and {len(c.core_shapes) for c in chains} == {2, 3}
    assert any(c.out_dim > 2616 for c in chains)             # output.affine, padded
    dense = DenseTTForward(student)
    assert len(dense.dense) == len(chains)
    assert_same(*compare(student, chunks_for(teacher, student)))


def test_dense_forward_equals_chain_on_a_generated_model(golden):
    """Kaldi's randomly initialised TDNN-F (m1_tdnnf), output layer randomised, every
    layer a TT at rank 4."""
    model = read_model(str(golden / "nnets" / "m1_tdnnf.raw"))
    prepare_for_test(model.nnet)
    comp = model.nnet.components["output.affine"]
    comp.set("<LinearParams>", np.random.default_rng(0).normal(0, 0.5, comp["<LinearParams>"].shape))
    teacher = model.nnet.copy()
    tt_compress(model.nnet, TtOptions(tt_rank=4, tt_cores=(2,)))
    student = reread(model).nnet
    assert find_chains(student)
    chunks = chunks_for(teacher, student, dims=(20, 8))
    assert_same(*compare(student, chunks))


def test_trained_cores_are_written_back_as_the_chain(korean_tt):
    """After a change of the parameters (as a step makes), the written chain computes
    what the dense forward computed."""
    teacher, student = korean_tt
    student = student.copy()
    dense = DenseTTForward(student)
    params = trainable_parameters(dense)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for k, p in params.items():
            p.add_(0.01 * p.abs().mean() * torch.randn(p.shape, generator=g))
    chunks = chunks_for(teacher, student)
    feats, ivecs = chunks.inputs(torch.arange(4))
    with torch.no_grad():
        want = dense(feats, ivecs, chunks.geometry)
        dense.write_back()
        got = NnetForward(student)(feats, ivecs, chunks.geometry)
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
    assert len(find_chains(student)) == len(dense.dense)
