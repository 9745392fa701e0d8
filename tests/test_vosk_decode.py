"""Kaldi itself (inside Vosk) is the judge: our written models load and decode."""
import shutil

import pytest

from kaldi_compress import read_model, write_model
from kaldi_compress.evaluate.vosk_decode import decode, list_wavs, model_dir_with_am
from kaldi_compress.nnet3.edit import prepare_for_test

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def baseline_hyps(ko_model_dir, ko_mdl, ko_wide_dev, tmp_path_factory):
    """The original model, decoded without dither (as every evaluation here)."""
    vdir = model_dir_with_am(ko_model_dir, ko_mdl, tmp_path_factory.mktemp("vosk") / "original")
    return decode(vdir, list_wavs(ko_wide_dev), jobs=2).hyps


def test_prepared_and_copied_models_decode_exactly_as_original(ko_mdl, ko_model_dir, ko_wide_dev,
                                                                baseline_hyps, tmp_path):
    model = read_model(str(ko_mdl))
    copy_path = tmp_path / "copy.mdl"
    write_model(model, str(copy_path))
    # the copy is byte-identical, so Vosk is given exactly the original model
    assert copy_path.read_bytes() == ko_mdl.read_bytes()
    prepare_for_test(model.nnet)
    prepared = tmp_path / "prepared.mdl"
    write_model(model, str(prepared))
    assert len(baseline_hyps) == 60 and sum(bool(h) for h in baseline_hyps.values()) >= 55
    hyps = decode(model_dir_with_am(ko_model_dir, prepared, tmp_path / "vosk_prepared"),
                  list_wavs(ko_wide_dev), jobs=2).hyps
    assert hyps == baseline_hyps


def test_text_to_binary_model_loads_and_decodes(ko_model_dir, ko_kaldi_text, ko_wide_dev,
                                                baseline_hyps, tmp_path):
    model = read_model(str(ko_kaldi_text))
    out = tmp_path / "from_text.mdl"
    write_model(model, str(out), binary=True)
    wavs = list_wavs(ko_wide_dev)[:8]
    hyps = decode(model_dir_with_am(ko_model_dir, out, tmp_path / "vosk_text"), wavs, jobs=2).hyps
    # 7-digit text values move the scores slightly; the words barely change
    same_words = sum(len(set(hyps[u].split()) & set(baseline_hyps[u].split())) for u, _ in wavs)
    total = sum(len(set(baseline_hyps[u].split())) for u, _ in wavs)
    assert same_words / total > 0.9


def test_vosk_rejects_a_broken_model(ko_model_dir, ko_wide_dev, tmp_path):
    broken = tmp_path / "broken.mdl"
    shutil.copy(ko_model_dir / "am" / "final.mdl", broken)
    broken.write_bytes(broken.read_bytes()[:1000])
    with pytest.raises(Exception, match="Vosk cannot load the model"):
        decode(model_dir_with_am(ko_model_dir, broken, tmp_path / "vosk_broken"),
               list_wavs(ko_wide_dev)[:1], jobs=1)
