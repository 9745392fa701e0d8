"""Truncated, corrupted and hostile files end in a clean KaldiFormatError."""
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from kaldi_compress.errors import KaldiFormatError
from kaldi_compress.nnet3 import parse_model

GOLDEN_NETS = ["m1_tdnnf", "m2_simple", "m3_lstm", "m4_conv_stats"]


def parse_outcome(buf: bytes) -> str:
    """'ok' or 'error'; anything else (another exception, a hang) fails the test."""
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parse_model(bytearray(buf), "bad.mdl")
            out = "ok"
        except KaldiFormatError as e:
            assert "\n" not in str(e) and str(e).startswith("bad.mdl: byte ")
            out = "error"
    assert time.perf_counter() - t < 5.0
    return out


def test_truncated_korean_model_always_fails_cleanly(ko_bytes):
    n = len(ko_bytes)
    rng = np.random.default_rng(0)
    offsets = sorted(set(range(0, 600)) | set(range(168_000, 178_500, 37))
                     | set(rng.integers(0, n, 150).tolist()) | {n - 1, n - 5, n - 20})
    for k in offsets:
        assert parse_outcome(ko_bytes[:k]) == "error", k


@pytest.mark.parametrize("name", GOLDEN_NETS)
def test_truncated_golden_nets_fail_cleanly(golden, name):
    for suffix in (".raw", ".txt"):
        data = (golden / "nnets" / f"{name}{suffix}").read_bytes()
        step = max(1, len(data) // 400)
        for k in range(0, len(data) - 1, step):
            outcome = parse_outcome(data[:k])
            if suffix == ".raw":
                assert outcome == "error", k


@pytest.mark.parametrize("name", GOLDEN_NETS)
def test_byte_flips_give_clean_errors_or_valid_models(golden, name):
    data = (golden / "nnets" / f"{name}.raw").read_bytes()
    rng = np.random.default_rng(1)
    outcomes = set()
    for _ in range(600):
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), rng.integers(1, 4)):
            buf[pos] = int(rng.integers(0, 256))
        outcomes.add(parse_outcome(bytes(buf)))
    assert "error" in outcomes


def test_byte_flips_in_korean_structure(ko_bytes):
    rng = np.random.default_rng(2)
    for _ in range(150):
        buf = bytearray(ko_bytes)
        pos = int(rng.integers(0, 180_000))
        buf[pos] = int(rng.integers(0, 256))
        parse_outcome(bytes(buf))


def _matrix_header(rows: int, cols: int) -> bytes:
    return b"FM \x04" + rows.to_bytes(4, "little", signed=True) + b"\x04" + \
        cols.to_bytes(4, "little", signed=True)


def test_absurd_and_negative_sizes(ko_bytes):
    start = ko_bytes.index(b"<LinearParams> FM ") + len(b"<LinearParams> ")
    for rows, cols in [(2**31 - 1, 2**31 - 1), (-1, 220), (220, -7), (100_000, 100_000)]:
        bad = ko_bytes[:start] + _matrix_header(rows, cols) + ko_bytes[start + 13:]
        with pytest.raises(KaldiFormatError, match="<LinearParams> matrix"):
            parse_model(bytearray(bad), "bad.mdl")
    n_comp = ko_bytes.index(b"<NumComponents> ") + len(b"<NumComponents> ")
    bad = ko_bytes[:n_comp] + b"\x04\xff\xff\xff\x7f" + ko_bytes[n_comp + 5:]
    with pytest.raises(KaldiFormatError, match="number of components in 0..99999"):
        parse_model(bytearray(bad), "bad.mdl")


def test_wrong_header_and_unknown_tokens(ko_bytes):
    with pytest.raises(KaldiFormatError, match=r"byte 1: expected binary header"):
        parse_model(bytearray(b"\0X" + ko_bytes[2:]), "bad.mdl")
    with pytest.raises(KaldiFormatError, match="<TransitionModel> or <Nnet3>"):
        parse_model(bytearray(b"hello world"), "bad.mdl")
    pos = ko_bytes.index(b"<BiasParams>")
    bad = ko_bytes[:pos] + b"<BiasParamz>" + ko_bytes[pos + 12:]
    with pytest.raises(KaldiFormatError, match=f"byte {pos}: expected <BiasParams>"):
        parse_model(bytearray(bad), "bad.mdl")


def test_bad_utf8_in_config_line(ko_bytes):
    pos = ko_bytes.index(b"component-node name=lda")
    bad = ko_bytes[:pos + 20] + b"\xff\xfe" + ko_bytes[pos + 22:]
    with pytest.raises(KaldiFormatError, match=f"byte {pos + 20}: expected a UTF-8 config line"):
        parse_model(bytearray(bad), "bad.mdl")


def test_dimension_mismatch_in_graph(ko_bytes):
    bad = ko_bytes.replace(b"input-node name=input dim=40", b"input-node name=input dim=41", 1)
    with pytest.raises(KaldiFormatError, match="input dimension 223 but component lda takes 220"):
        parse_model(bytearray(bad), "bad.mdl")
    bad = ko_bytes.replace(b"input=tdnn1.affine\n", b"input=tdnn1.affinx\n", 1)
    with pytest.raises(KaldiFormatError, match="undefined node tdnn1.affinx"):
        parse_model(bytearray(bad), "bad.mdl")
    bad = ko_bytes.replace(b"Offset(input, -1)", b"Offset(input, -1", 1)
    with pytest.raises(KaldiFormatError, match="a valid config line"):
        parse_model(bytearray(bad), "bad.mdl")


def test_cli_reports_one_line_and_writes_nothing(tmp_path, ko_bytes):
    bad = tmp_path / "bad.mdl"
    bad.write_bytes(ko_bytes[:100_000])
    out = tmp_path / "out.mdl"
    proc = subprocess.run([sys.executable, "-m", "kaldi_compress", "copy", str(bad), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kaldi-compress: error: {bad}: byte ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mdl"]


def test_cli_never_overwrites_input(tmp_path, ko_bytes):
    model = tmp_path / "final.mdl"
    model.write_bytes(ko_bytes)
    proc = subprocess.run([sys.executable, "-m", "kaldi_compress", "copy", "--binary=false",
                           str(model), str(model)], capture_output=True, text=True)
    assert proc.returncode == 1 and "refusing to overwrite the input" in proc.stderr
    assert model.read_bytes() == ko_bytes


def test_unknown_component_type_kept_opaque(golden):
    raw = (golden / "nnets" / "m2_simple.raw").read_bytes()
    renamed = raw.replace(b"<ElementwiseProductComponent>", b"<MyFancyProductComponent>") \
        .replace(b"</ElementwiseProductComponent>", b"</MyFancyProductComponent>")
    with pytest.warns(UserWarning, match="unknown component type MyFancyProductComponent"):
        model = parse_model(bytearray(renamed), "x.raw")
    assert model.to_bytes() == renamed
    assert model.nnet.components["prod"].type == "MyFancyProductComponent"
