"""Kaldi binary/text primitives: exact layouts and Kaldi's %.7g number format."""
import numpy as np
import pytest

from kaldi_compress.errors import KaldiFormatError
from kaldi_compress.io.binary import BinaryReader, BinaryWriter
from kaldi_compress.io.numtext import format_g7, parse_floats
from kaldi_compress.io.text import TextReader, TextWriter


def printf_g7(values) -> bytes:
    return b"".join(b"%s " % (b"%.7g" % float(v)) for v in values)


@pytest.mark.parametrize("seed", range(3))
def test_format_g7_equals_printf_on_random_floats(seed):
    rng = np.random.default_rng(seed)
    n = 200_000
    vals = np.concatenate([
        rng.standard_normal(n) * 0.05,
        rng.standard_normal(n // 4) * 1e5,
        np.exp(rng.uniform(-103, 88, n // 4)) * rng.choice([-1, 1], n // 4),
        rng.integers(-2**24, 2**24, n // 8),
    ]).astype(np.float32)
    assert format_g7(vals) == printf_g7(vals)


def test_format_g7_edge_values():
    edge = np.array([0.0, -0.0, 1, -1, 10, 1e6, 9999999, 1e7, 12345675, 12345665, 0.0001,
                     0.00001, 2000, -0.6931472, 0.5, 123456.75, 1.5e-45, 3.4028235e38,
                     np.inf, -np.inf, np.nan, 1e-40, 0.1, 65504], dtype=np.float32)
    assert format_g7(edge) == printf_g7(edge)


def test_format_g7_matrix_layout():
    m = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    assert format_g7(m, row_len=3) == b"\n  0 0.25 0.5 \n  0.75 1 1.25 "


def test_parse_floats_rejects_garbage():
    assert parse_floats(b"1 2.5 -3e-2") .tolist() == [1.0, 2.5, np.float32(-0.03)]
    assert parse_floats(b"1 x 3") is None


def test_binary_layouts():
    w = BinaryWriter()
    w.write_token("<Dim>")
    w.write_int(7)
    w.write_float(np.float32(0.5))
    w.write_float(np.float64(2.0))
    w.write_bool(True)
    w.write_vector(np.array([1, 2], np.float32))
    w.write_matrix(np.ones((1, 2), np.float32))
    w.write_int_vector(np.array([-1, 0], np.int32))
    data = w.getvalue()
    assert data.startswith(b"<Dim> \x04\x07\x00\x00\x00\x04\x00\x00\x00?"
                           b"\x08\x00\x00\x00\x00\x00\x00\x00@TFV \x04\x02\x00\x00\x00")
    r = BinaryReader(bytearray(data), "mem")
    assert r.read_token() == "<Dim>"
    assert r.read_int() == 7
    assert r.read_float() == np.float32(0.5) and isinstance(r.read_float(), np.float64)
    assert r.read_bool() is True
    assert r.read_vector().tolist() == [1, 2]
    assert r.read_matrix().shape == (1, 2)
    assert r.read_int_vector().tolist() == [-1, 0]
    assert r.at_end()


def test_text_layouts_match_kaldi():
    w = TextWriter()
    w.write_token("<V>")
    w.write_vector(np.array([1.5, 2], np.float32))
    w.write_token("<M>")
    w.write_matrix(np.array([[1, 2], [3, 4]], np.float32))
    w.write_token("<E>")
    w.write_matrix(np.zeros((0, 0), np.float32))
    w.write_int_vector(np.array([1, -2], np.int32))
    w.write_int_pair_vector(np.array([[1, 2], [-3, 4]], np.int32))
    w.write_bool(False)
    text = w.getvalue()
    assert text == (b"<V>  [ 1.5 2 ]\n<M>  [\n  1 2 \n  3 4 ]\n<E>  [ ]\n"
                    b"[ 1 -2 ]\n[ 1,2 -3,4 ]\nF ")
    r = TextReader(bytearray(text), "mem")
    r.expect_token("<V>")
    assert r.read_vector().tolist() == [1.5, 2]
    r.expect_token("<M>")
    assert r.read_matrix().tolist() == [[1, 2], [3, 4]]
    r.expect_token("<E>")
    assert r.read_matrix().shape == (0, 0)
    assert r.read_int_vector().tolist() == [1, -2]
    assert r.read_int_pair_vector().tolist() == [[1, 2], [-3, 4]]
    assert r.read_bool() is False


def test_binary_reader_bounds_checked_before_allocation():
    w = BinaryWriter()
    w.write_token("FM")
    w.write_int(2**30)
    w.write_int(2**30)
    with pytest.raises(KaldiFormatError, match=r"byte 13: expected matrix: 1152921504606846976 "
                                                r"values, got end of file"):
        BinaryReader(bytearray(w.getvalue()), "mem").read_matrix()
    w = BinaryWriter()
    w.write_token("FV")
    w.write_int(-5)
    with pytest.raises(KaldiFormatError, match="non-negative size"):
        BinaryReader(bytearray(w.getvalue()), "mem").read_vector()


def test_text_matrix_ragged_rows_rejected():
    r = TextReader(bytearray(b" [\n  1 2 \n  3 ]\n"), "mem")
    with pytest.raises(KaldiFormatError, match="2 values in every row"):
        r.read_matrix()


def test_read_input_reads_pipes_to_the_end_with_a_bound(tmp_path):
    """A pipe (as <(...) or a FIFO gives) has no size: read to EOF, never past the bound."""
    import os
    import threading

    from kaldi_compress.errors import KaldiCompressError
    from kaldi_compress.io.files import read_input
    from kaldi_compress.io.tables import read_transcripts

    data = bytes(range(256)) * 5000          # > one 1 MiB chunk
    for payload, bound, ok in ((data, 1 << 30, True), (data, 1000, False),
                               ("u1 가나\nu2 x\n".encode(), 1 << 30, True)):
        r, w = os.pipe()

        def feed(w=w, payload=payload):
            try:
                os.write(w, payload)
            except BrokenPipeError:      # the reader stopped at the bound
                pass
            os.close(w)
        writer = threading.Thread(target=feed)
        writer.start()
        try:
            if ok and payload is data:
                assert read_input(f"/dev/fd/{r}", bound) == data
            elif ok:
                assert read_transcripts(f"/dev/fd/{r}") == {"u1": "가나", "u2": "x"}
            else:
                with pytest.raises(KaldiCompressError, match="more than the 1000 bytes"):
                    read_input(f"/dev/fd/{r}", bound)
        finally:
            os.close(r)
            writer.join()


def test_piped_tables_read_to_the_end_stop_early_or_fail_in_one_error(tmp_path):
    """``ark:COMMAND |``: read whole, the command's success is checked; a reader that stops
    early leaves the command to SIGPIPE without an error; a command that fails (here after
    half of its table) is an error, not a silently shorter table."""
    from kaldi_compress.errors import KaldiCompressError
    from kaldi_compress.io.tables import MatrixWriter, read_matrices

    ark = tmp_path / "m.ark"
    mats = {f"u{i}": np.full((2000, 40), i, dtype=np.float32) for i in range(8)}  # 2.5 MB
    with MatrixWriter(f"ark:{ark}") as w:
        for k, m in mats.items():
            w.write(k, m)
    got = dict(read_matrices(f"ark:cat {ark} |"))
    assert list(got) == list(mats) and all(np.array_equal(got[k], mats[k]) for k in mats)
    first = read_matrices(f"ark,s,cs:cat {ark} |")
    assert next(first)[0] == "u0"
    first.close()                        # the rest unread: no error, no hang
    half = ark.stat().st_size // 2
    with pytest.raises(KaldiCompressError, match=r"command 'head -c \d+ .*; exit 3' failed "
                       r"\(exit status 3\)"):
        list(read_matrices(f"ark:head -c {half} {ark}; exit 3 |"))


def test_scp_tables_fail_on_an_unreadable_matrix_and_stop_early_quietly(tmp_path, capfd,
                                                                         monkeypatch):
    """An scp line whose matrix cannot be read is an error naming it (kaldi-io's own scp
    reader skipped it with a note on stdout, which ``compute ... ark:-`` writes to); a
    reader that stops early closes the table without a word; scp lines from a pipe."""
    import gc
    import sys
    import warnings
    from kaldi_compress.errors import KaldiCompressError
    from kaldi_compress.io.tables import read_matrices
    from arks import write_ark_scp

    mats = {f"u{i}": np.full((3, 2), i, dtype=np.float32) for i in range(3)}
    scp = write_ark_scp(tmp_path / "m.ark", mats)
    got = dict(read_matrices(f"scp:{scp}"))
    assert list(got) == list(mats) and all(np.array_equal(got[k], mats[k]) for k in mats)
    assert list(dict(read_matrices(f"scp:cat {scp} |"))) == list(mats)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = read_matrices(f"scp:{scp}")
        assert next(first)[0] == "u0"
        first.close()
        gc.collect()
    assert not unraisable
    bad = tmp_path / "bad.scp"
    bad.write_text(scp.read_text() + f"u9 {tmp_path / 'gone.ark'}:15\n")
    with pytest.raises(KaldiCompressError, match=r"cannot read .*gone\.ark:15"):
        list(read_matrices(f"scp:{bad}"))
    bad.write_text("u0\n")
    with pytest.raises(KaldiCompressError, match=r"bad\.scp: line 1: expected 'key rxfile'"):
        list(read_matrices(f"scp:{bad}"))
    assert capfd.readouterr().out == ""
