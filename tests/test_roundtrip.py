"""Exact reading and writing, judged against the real Korean model and Kaldi's own files."""
import hashlib

import numpy as np
import pytest

from kaldi_compress import read_model
from kaldi_compress.cli.info import format_info, model_info
from kaldi_compress.nnet3 import parse_model

from kaldi_text import text_differences

KO_SHA256 = "de1a0b3beaad1f266b18d9af624a8d2451ac32e500a575cec9826d415ecfd0b4"
GOLDEN_NETS = ["m1_tdnnf", "m2_simple", "m3_lstm", "m4_conv_stats"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def ko(ko_mdl):
    return read_model(str(ko_mdl))


def assert_same_parameters(a, b, rtol):
    """Every component field equal (arrays within ``rtol`` of the largest entry)."""
    assert list(a.nnet.components) == list(b.nnet.components)
    assert [n.config_line() for n in a.nnet.nodes] == [n.config_line() for n in b.nnet.nodes]
    for name, ca in a.nnet.components.items():
        cb = b.nnet.components[name]
        assert type(ca) is type(cb)
        assert [t for t, _ in ca.fields] == [t for t, _ in cb.fields], name
        for (tok, va), (_, vb) in zip(ca.fields, cb.fields):
            if isinstance(va, np.ndarray):
                assert va.shape == vb.shape, (name, tok)
                scale = max(float(np.abs(va).max()) if va.size else 0.0, 1e-30)
                assert np.allclose(va, vb, rtol=rtol, atol=rtol * scale), (name, tok)
            elif isinstance(va, np.floating):
                assert np.isclose(va, vb, rtol=rtol), (name, tok)
            elif not hasattr(va, "fields"):
                assert va == vb, (name, tok)


def test_korean_binary_copy_is_byte_identical(ko, ko_mdl):
    original = ko_mdl.read_bytes()
    assert sha(original) == KO_SHA256
    assert ko.to_bytes(binary=True) == original


def test_korean_structure_matches_nnet3_am_info(ko):
    assert ko.nnet.num_parameters == 3_422_064
    ctx = ko.nnet.compute_context()
    assert (ctx.left, ctx.right) == (34, 34)
    assert len(ko.nnet.components) == 103
    assert ko.transition_model.num_pdfs == 2616
    assert len(ko.transition_model.tuples) == 5943
    assert not ko.transition_model.is_hmm


def test_korean_text_equals_kaldi_text(ko, ko_kaldi_text):
    ours = ko.to_bytes(binary=False)
    assert text_differences(ours, ko_kaldi_text.read_bytes()) == []


def test_korean_kaldi_text_parses_to_same_model(ko, ko_kaldi_text):
    from_text = read_model(str(ko_kaldi_text))
    assert_same_parameters(ko, from_text, rtol=1e-6)
    assert np.array_equal(from_text.transition_model.tuples, ko.transition_model.tuples)
    # our own text form of the Kaldi text model is Kaldi's text, token for token
    assert text_differences(from_text.to_bytes(binary=False), ko_kaldi_text.read_bytes(),
                            max_units=0) == []


def test_korean_info_matches_nnet3_am_info(ko, golden):
    kaldi = (golden / "ko_am_info.txt").read_text().splitlines()
    ours = format_info(model_info(ko)).splitlines()
    n_header = kaldi.index("# Nnet info follows.") + 5 + len(ko.nnet.nodes)
    assert ours[:n_header] == kaldi[:n_header]


@pytest.mark.parametrize("name", GOLDEN_NETS)
def test_golden_nnet_binary_round_trip(golden, name):
    raw = (golden / "nnets" / f"{name}.raw").read_bytes()
    model = parse_model(bytearray(raw), name)
    assert model.to_bytes(binary=True) == raw


@pytest.mark.parametrize("name", GOLDEN_NETS)
def test_golden_nnet_text_matches_kaldi(golden, name):
    model = read_model(str(golden / "nnets" / f"{name}.raw"))
    kaldi_text = (golden / "nnets" / f"{name}.txt").read_bytes()
    assert text_differences(model.to_bytes(binary=False), kaldi_text) == []
    from_text = read_model(str(golden / "nnets" / f"{name}.txt"))
    assert from_text.to_bytes(binary=False) == kaldi_text
    assert_same_parameters(model, from_text, rtol=1e-6)


@pytest.mark.parametrize("name", GOLDEN_NETS)
def test_golden_nnet_info_matches_nnet3_info(golden, name):
    model = read_model(str(golden / "nnets" / f"{name}.raw"))
    kaldi = [line for line in (golden / "nnets" / f"{name}.info.txt").read_text().splitlines()
             if not line.startswith("component name=")]
    ours = format_info(model_info(model)).splitlines()[:len(kaldi)]
    assert ours == kaldi


def test_roundtrip_record_of_kaldi(golden):
    """Kaldi's own binary copy changes statistics bits; ours never does."""
    for line in (golden / "nnets" / "roundtrip.txt").read_text().splitlines():
        fields = dict(kv.split("=") for kv in line.split()[1:])
        name = line.split()[0]
        raw = (golden / "nnets" / name).read_bytes()
        assert sha(raw) == fields["sha256"]
        assert sha(parse_model(bytearray(raw), name).to_bytes()) == fields["sha256"]


def test_triples_transition_model(golden):
    hmm = golden / "transition_hmm"
    binary = (hmm / "hmm_triples.mdl").read_bytes()
    text = (hmm / "hmm_triples.txt.mdl").read_bytes()
    model = parse_model(bytearray(binary), "hmm_triples.mdl")
    assert model.transition_model.is_hmm
    assert model.priors.size == 0
    assert model.to_bytes(binary=True) == binary
    assert model.to_bytes(binary=False) == text
    from_text = parse_model(bytearray(text), "hmm_triples.txt.mdl")
    assert from_text.to_bytes(binary=False) == text
    assert from_text.transition_model.phones == model.transition_model.phones
    assert from_text.transition_model.phone2idx == model.transition_model.phone2idx
