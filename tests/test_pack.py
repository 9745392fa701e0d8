"""Packs: codebooks and indices round trip, unpack restores every non-weight field
exactly and the same bytes every time, sizes on the Korean model, bad packs fail in
one line with no output, and Vosk decodes an unpacked model."""
from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from kaldi_compress.errors import KaldiCompressError
from kaldi_compress.nnet3 import parse_model
from kaldi_compress.nnet3.edit import prepare_for_test
from kaldi_compress.pack import pack_model, quantized_model, unpack_model
from kaldi_compress.pack.codebook import quantize
from kaldi_compress.pack.container import HEADER, Writer, seal
from kaldi_compress.pack.skeleton import byte_planes, from_byte_planes, weight_matrices


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kaldi_compress", *map(str, args)],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def model(ko_bytes):
    """The Korean model prepared for test (as ``copy --prepare-for-test`` writes it)."""
    m = parse_model(bytearray(ko_bytes), "final.mdl")
    prepare_for_test(m.nnet)
    return parse_model(bytearray(m.to_bytes()), "prepared.mdl")


@pytest.fixture(scope="module")
def packs(model):
    """bits -> (pack bytes, report), without the gzip/xz peers."""
    return {bits: pack_model(model, bits, peers=False) for bits in (8, 4)}


# --- codebooks -------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_codebook_and_indices_round_trip(bits):
    rng = np.random.default_rng(bits)
    w = (rng.laplace(size=(300, 70)) * 0.05).astype(np.float32)
    q = quantize(w, bits)
    assert q.indices.shape == w.shape and q.indices.dtype == np.uint8
    assert 1 <= q.codebook.size <= 2 ** bits and q.codebook.dtype == np.float32
    assert np.all(np.diff(q.codebook) > 0) and q.indices.max() < q.codebook.size
    v = q.values()
    assert np.array_equal(v, q.codebook[q.indices])
    # every weight takes its nearest codebook value
    dist = np.abs(w[..., None].astype(np.float64) - q.codebook.astype(np.float64))
    assert np.allclose(np.abs(w - v), dist.min(axis=-1), rtol=0, atol=1e-7)
    again = quantize(w, bits)
    assert np.array_equal(again.codebook, q.codebook) and np.array_equal(again.indices,
                                                                          q.indices)


def test_few_distinct_values_are_kept_exactly():
    w = np.array([[0.5, -0.25, 0.5], [3.0, -0.25, 0.125]], np.float32)
    q = quantize(w, 2)
    assert np.array_equal(q.values(), w) and q.codebook.size == 4


def test_pruning_makes_small_weights_exactly_zero():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(200, 50)).astype(np.float32)
    q = quantize(w, 4, prune_threshold=0.5)
    v = q.values()
    small = np.abs(w) < 0.5
    assert np.all(v[small] == 0) and q.pruned == small.sum()
    assert 0.0 in q.codebook and q.codebook.size <= 16
    assert np.all(v[~small] != 0)               # the others share the 15 other values


def test_byte_planes_invert():
    for n in (0, 1, 5, 4096, 4097):
        data = bytes(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8))
        assert from_byte_planes(byte_planes(data)) == data


# --- the Korean model ------------------------------------------------------------------

def test_weights_are_the_trained_matrices(model):
    names = {name for name, _, _ in weight_matrices(model.nnet)}
    assert "lda" not in names                    # a fixed transform: stored exactly
    assert {"tdnn1.affine", "tdnnf2.linear", "prefinal-l", "output.affine"} <= names
    assert len(names) == 33


@pytest.mark.parametrize("bits,max_ratio,max_error", [(8, 0.27, 0.02), (4, 0.15, 0.13)])
def test_sizes_and_errors(model, packs, bits, max_ratio, max_error):
    data, report = packs[bits]
    size = len(model.to_bytes())
    assert report.total_before == size and report.total_after == len(data)
    assert len(data) <= max_ratio * size, len(data) / size
    assert all(r.codebook <= 2 ** bits for r in report.layers)
    assert max(r.rel_error for r in report.layers) < max_error
    table = report.format_table()
    assert "output.affine" in table and "total (.kcz)" in table


@pytest.mark.parametrize("bits", [8, 4])
def test_unpack_restores_everything_but_the_weights(model, packs, bits):
    data, _ = packs[bits]
    out = unpack_model(data, "m.kcz")
    assert out == unpack_model(bytearray(data), "m.kcz")      # the same bytes every time
    assert out == quantized_model(model, bits).to_bytes()
    unpacked = parse_model(bytearray(out), "unpacked.mdl")
    for name, token, w in weight_matrices(model.nnet):
        comp = unpacked.nnet.components[name]
        q = comp[token]
        assert q.shape == w.shape and len(np.unique(q)) <= 2 ** bits
        comp.set(token, w)                        # original weights back ...
    assert unpacked.to_bytes() == model.to_bytes()     # ... give the original file


def test_packing_is_deterministic(model, packs):
    assert pack_model(model, 4, peers=False)[0] == packs[4][0]


# --- bad packs ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pack_file(tmp_path_factory, packs):
    path = tmp_path_factory.mktemp("packs") / "m4.kcz"
    path.write_bytes(packs[4][0])
    return path


def damaged(data: bytes, how: str) -> bytes:
    b = bytearray(data)
    if how == "truncated":
        return bytes(b[:len(b) // 2])
    if how == "short header":
        return bytes(b[:20])
    if how == "magic":
        b[1:4] = b"XYZ"
    elif how == "version":
        b[8:12] = struct.pack("<I", 2)
    elif how == "checksum":
        b[30] ^= 0xFF
    elif how == "payload":
        b[len(b) // 3] ^= 0x10
    elif how == "trailing":
        b += b"\0"
    return bytes(b)


@pytest.mark.parametrize("how,msg", [
    ("truncated", "byte 16: expected a payload of"), ("short header", "byte 0: expected a 56"),
    ("magic", "byte 0: expected the magic bytes"), ("version", "byte 8: expected .kcz version 1"),
    ("checksum", "byte 24: expected the payload's sha256"),
    ("payload", "byte 24: expected the payload's sha256"),
    ("trailing", "byte 16: expected a payload of")])
def test_bad_packs_fail_in_one_line_with_no_output(pack_file, tmp_path, how, msg):
    bad = tmp_path / "bad.kcz"
    bad.write_bytes(damaged(pack_file.read_bytes(), how))
    out = tmp_path / "out.mdl"
    proc = run_cli("unpack", bad, out)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{bad}: {msg}" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.kcz"]


def sealed(*fields) -> bytes:
    w = Writer()
    for value, width in fields:
        w.int(value, width)
    return seal(w.getvalue())


@pytest.mark.parametrize("data,msg", [
    (sealed((1 << 62, 8)), "unpacked model's size at most"),
    (sealed((100, 8), (1 << 30, 4)), "number of packed matrices at most"),
    (sealed((100, 8), (0, 4), (100, 8), (1 << 40, 8)), "length of the model skeleton at most"),
    (sealed((1 << 20, 8), (0, 4), (1 << 20, 8), (1, 8), (0, 1)),
     "at most 32768x its 1 compressed bytes"),
])
def test_hostile_lengths_are_bounded(data, msg):
    with pytest.raises(KaldiCompressError, match=msg):
        unpack_model(data, "hostile.kcz")


def test_resealed_byte_flips_fail_cleanly_or_unpack(packs):
    """Damage that the checksum would catch, checksum recomputed: every result is a
    clean error or a valid model."""
    data = packs[4][0]
    payload = bytearray(data[HEADER.size:])
    rng = np.random.default_rng(1)
    errors = 0
    for pos in list(range(0, 64)) + list(rng.integers(0, len(payload), 60)):
        bad = bytearray(payload)
        bad[pos] ^= 0xFF
        try:
            parse_model(bytearray(unpack_model(seal(bytes(bad)), "flip.kcz")), "x")
        except KaldiCompressError:
            errors += 1
    assert errors >= 64


# --- the command line ------------------------------------------------------------------

def test_cli_pack_unpack(ko_mdl, tmp_path):
    prepared, kcz = tmp_path / "p.mdl", tmp_path / "p.kcz"
    assert run_cli("copy", "--prepare-for-test", ko_mdl, prepared).returncode == 0
    proc = run_cli("pack", "--bits=4", "--prune-threshold=0.001", prepared, kcz)
    assert proc.returncode == 0, proc.stderr
    assert "gzip -9" in proc.stderr and "xz -9" in proc.stderr and "tdnnf7.linear" in proc.stderr
    a, b = tmp_path / "a.mdl", tmp_path / "b.mdl"
    assert run_cli("unpack", kcz, a).returncode == 0 and run_cli("unpack", kcz, b).returncode == 0
    assert a.read_bytes() == b.read_bytes() and len(a.read_bytes()) == len(prepared.read_bytes())
    proc = run_cli("unpack", kcz, kcz)
    assert proc.returncode == 1 and "refusing to overwrite the input" in proc.stderr
    proc = run_cli("pack", "--bits=9", prepared, tmp_path / "x.kcz")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "1..8" in proc.stderr
    assert not (tmp_path / "x.kcz").exists()


@pytest.mark.slow
def test_vosk_decodes_an_unpacked_model(ko_mdl, ko_model_dir, ko_wide_dev, tmp_path):
    from kaldi_compress.evaluate.vosk_decode import decode, list_wavs, model_dir_with_am
    prepared, kcz, out = tmp_path / "p.mdl", tmp_path / "p.kcz", tmp_path / "u.mdl"
    assert run_cli("copy", "--prepare-for-test", ko_mdl, prepared).returncode == 0
    assert run_cli("pack", "--bits=4", prepared, kcz).returncode == 0
    assert run_cli("unpack", kcz, out).returncode == 0
    wavs = list_wavs(ko_wide_dev)[:4]
    hyps = decode(model_dir_with_am(ko_model_dir, out, tmp_path / "vosk"), wavs, jobs=1).hyps
    assert set(hyps) == {u for u, _ in wavs} and sum(bool(h) for h in hyps.values()) >= 3


# --- data-aware rounding ---------------------------------------------------------------

def correlated_moment(rng, n: int, frames: int = 4000) -> np.ndarray:
    """E[x x^T] of inputs with strongly correlated dimensions (as spliced frames are)."""
    x = rng.normal(size=(frames, 8)) @ rng.normal(size=(8, n)) + 0.1 * rng.normal(size=(frames, n))
    return x.T @ x / frames


def test_error_feedback_with_a_diagonal_moment_is_nearest_rounding():
    from kaldi_compress.pack.rounding import error_feedback_indices
    rng = np.random.default_rng(0)
    w = (rng.laplace(size=(40, 30)) * 0.05).astype(np.float32)
    q = quantize(w, 4)
    h = np.diag(rng.uniform(0.5, 2.0, size=30))
    assert np.array_equal(error_feedback_indices(w, h, q.codebook, damping=0.0), q.indices)


@pytest.mark.parametrize("bits", [8, 4])
def test_error_feedback_lowers_the_output_error(bits):
    """Same codebook, so the same file size; the layer's output error tr(E H E^T) drops
    well below nearest rounding's when the inputs are correlated."""
    from kaldi_compress.pack.rounding import error_feedback_indices, output_error
    rng = np.random.default_rng(bits)
    w = (rng.laplace(size=(64, 48)) * 0.05).astype(np.float32)
    h = correlated_moment(rng, 48)
    q = quantize(w, bits)
    idx = error_feedback_indices(w, h, q.codebook)
    assert idx.min() >= 0 and idx.max() < q.codebook.size
    assert output_error(w, q.codebook[idx], h) < 0.5 * output_error(w, q.values(), h)


def test_error_feedback_keeps_pruned_weights_zero():
    from kaldi_compress.pack.packing import _quantize
    rng = np.random.default_rng(1)
    w = (rng.laplace(size=(32, 24)) * 0.05).astype(np.float32)
    q = _quantize(w, 4, 0.02, correlated_moment(rng, 24))
    small = np.abs(w) < 0.02
    assert small.any() and np.all(q.values()[small] == 0)


def test_data_aware_pack_of_the_korean_model(model, ko_model_dir, ko_wide_train):
    """On real calibration audio, for a TDNN (taps) and an affine matrix: the reported
    output error is below nearest rounding's at the same size, and unpacking gives the
    model ``quantized_model`` builds with the same statistics."""
    from kaldi_compress.compress.calibrate import load_calibration
    from kaldi_compress.pack.rounding import input_moments, output_error
    cal = load_calibration(ko_model_dir, [ko_wide_train], max_utts=3, progress=False)
    chosen = {"tdnnf5.linear", "tdnnf5.affine"}
    moments = input_moments(model.nnet, cal, chosen)
    assert set(moments) == chosen
    mats = {n: m for n, _, m in weight_matrices(model.nnet)}
    assert all(moments[n].shape == (mats[n].shape[1],) * 2 for n in chosen)
    data, report = pack_model(model, 4, peers=False, moments=moments)
    plain_data, _ = pack_model(model, 4, peers=False)
    rows = {r.layer: r for r in report.layers}
    for name in chosen:
        nearest_out = output_error(mats[name], quantize(mats[name], 4).values(),
                                   moments[name]) ** 0.5
        assert rows[name].out_error < 0.8 * nearest_out
    assert all(r.out_error is None for r in report.layers if r.layer not in chosen)
    assert abs(len(data) - len(plain_data)) < 0.01 * len(plain_data)
    expected = quantized_model(model, 4, moments=moments)
    assert unpack_model(data) == expected.to_bytes()


def test_cli_calibration_needs_a_model_dir(ko_mdl, ko_wide_train, tmp_path):
    out = tmp_path / "x.kcz"
    proc = run_cli("pack", "--calibration-data", ko_wide_train, ko_mdl, out)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "--model-dir" in proc.stderr and not out.exists()
