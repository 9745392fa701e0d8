"""MFCC features as Kaldi's ``compute-mfcc-feats``, computed by kaldi-native-fbank.

Options come from a Kaldi MFCC config (e.g. a Vosk model's ``conf/mfcc.conf``) with
Kaldi's names and defaults.  Like Kaldi and Vosk, the default dither of 1 adds
Gaussian noise of that standard deviation to every frame's samples.  The noise is
Kaldi's own (:mod:`.kaldi_rand`): a :class:`KaldiDither` carried from utterance to
utterance gives the features of one ``compute-mfcc-feats`` process run over the same
utterances in the same order.  Waveforms are 16-bit PCM wav files; samples are used
as integers in [-32768, 32767], as Kaldi does.
"""
from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np

from ..errors import KaldiCompressError
from ..io.options import get_bool, get_float, get_int, read_options, reject_unknown
from .kaldi_rand import KaldiDither

# Kaldi option name -> (knf section, knf attribute, kind)
_MFCC_OPTIONS = {
    "sample-frequency": ("frame", "samp_freq", float),
    "frame-shift": ("frame", "frame_shift_ms", float),
    "frame-length": ("frame", "frame_length_ms", float),
    "dither": ("frame", "dither", float),
    "preemphasis-coefficient": ("frame", "preemph_coeff", float),
    "remove-dc-offset": ("frame", "remove_dc_offset", bool),
    "window-type": ("frame", "window_type", str),
    "round-to-power-of-two": ("frame", "round_to_power_of_two", bool),
    "blackman-coeff": ("frame", "blackman_coeff", float),
    "snip-edges": ("frame", "snip_edges", bool),
    "num-mel-bins": ("mel", "num_bins", int),
    "low-freq": ("mel", "low_freq", float),
    "high-freq": ("mel", "high_freq", float),
    "vtln-low": ("mel", "vtln_low", float),
    "vtln-high": ("mel", "vtln_high", float),
    "num-ceps": ("mfcc", "num_ceps", int),
    "use-energy": ("mfcc", "use_energy", bool),
    "energy-floor": ("mfcc", "energy_floor", float),
    "raw-energy": ("mfcc", "raw_energy", bool),
    "cepstral-lifter": ("mfcc", "cepstral_lifter", float),
    "htk-compat": ("mfcc", "htk_compat", bool),
}
# compute-mfcc-feats options that do not change features of a matching wav.
_IGNORED = {"allow-downsample", "allow-upsample"}

KALDI_DEFAULTS = {
    "sample-frequency": "16000", "frame-shift": "10", "frame-length": "25", "dither": "1",
    "preemphasis-coefficient": "0.97", "remove-dc-offset": "true", "window-type": "povey",
    "round-to-power-of-two": "true", "blackman-coeff": "0.42", "snip-edges": "true",
    "num-mel-bins": "23", "low-freq": "20", "high-freq": "0", "vtln-low": "100",
    "vtln-high": "-500", "num-ceps": "13", "use-energy": "true", "energy-floor": "0",
    "raw-energy": "true", "cepstral-lifter": "22", "htk-compat": "false",
}


@dataclass
class MfccConfig:
    """Kaldi MFCC options by Kaldi name (strings, as in a config file)."""
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: str) -> "MfccConfig":
        opts = read_options(path)
        opts.update(overrides)
        return cls(opts)

    def knf_options(self) -> knf.MfccOptions:
        """kaldi-native-fbank's options; its own dither is off (see :func:`compute_mfcc`)."""
        reject_unknown(self.options, set(_MFCC_OPTIONS) | _IGNORED, "MFCC config")
        values = {**KALDI_DEFAULTS, **{k: v for k, v in self.options.items() if k not in _IGNORED}}
        opts = knf.MfccOptions()
        sections = {"frame": opts.frame_opts, "mel": opts.mel_opts, "mfcc": opts}
        for name, (section, attr, kind) in _MFCC_OPTIONS.items():
            if kind is bool:
                value = get_bool(values, name, False)
            elif kind is int:
                value = get_int(values, name, 0)
            elif kind is float:
                value = get_float(values, name, 0.0)
            else:
                value = values[name]
            setattr(sections[section], attr, value)
        opts.frame_opts.dither = 0.0
        return opts

    @property
    def dither(self) -> float:
        return get_float({**KALDI_DEFAULTS, **self.options}, "dither", 1.0)

    @property
    def sample_frequency(self) -> float:
        return get_float({**KALDI_DEFAULTS, **self.options}, "sample-frequency", 16000.0)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples (as float32 integers) and sample rate of a 16-bit mono PCM wav."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise KaldiCompressError(f"{path}: expected 16-bit mono PCM, got "
                                         f"{8 * w.getsampwidth()}-bit, {w.getnchannels()} channels")
            data = w.readframes(w.getnframes())
            rate = w.getframerate()
    except (OSError, EOFError, wave.Error) as e:
        raise KaldiCompressError(f"{path}: cannot read wav: {e}") from None
    return np.frombuffer(data, dtype="<i2").astype(np.float32), rate


def frame_windows(samples: np.ndarray, shift: int, length: int, snip_edges: bool) -> np.ndarray:
    """Every frame's samples as Kaldi's ExtractWindow takes them: (frames x length).

    snip-edges: frame t starts at t*shift and must fit in the wave.  Otherwise there
    are round(n / shift) frames centred on t*shift + shift/2, and samples outside the
    wave are reflected (-1 -> 0, n -> n-1): index s maps to m = s mod 2n, or 2n-1-m
    when m >= n.
    """
    n = len(samples)
    if snip_edges:
        starts = np.arange(0 if n < length else 1 + (n - length) // shift) * shift
    else:
        starts = np.arange((n + shift // 2) // shift) * shift + shift // 2 - length // 2
    m = (starts[:, None] + np.arange(length)) % (2 * n)
    return samples[np.where(m >= n, 2 * n - 1 - m, m)]


def compute_mfcc(samples: np.ndarray, rate: int, config: MfccConfig,
                 dither: KaldiDither | None = None) -> np.ndarray:
    """MFCC matrix (frames x num-ceps) of a waveform, float32.

    With a non-zero dither the frames are cut here, the noise of ``dither`` (default:
    a fresh process's) is added, and kaldi-native-fbank computes each noisy window as
    a frame of its own (a shift of one window length); the rest of Kaldi's per-frame
    processing (DC removal, energy, pre-emphasis, window, mel, DCT) is the same.
    """
    if rate != config.sample_frequency:
        raise KaldiCompressError(f"wav sample rate {rate} Hz differs from the MFCC "
                                 f"config's {config.sample_frequency:g} Hz (resampling is not "
                                 "supported)")
    opts = config.knf_options()
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if config.dither != 0.0 and len(samples):
        frame = opts.frame_opts
        shift = int(frame.samp_freq * 0.001 * frame.frame_shift_ms)
        length = int(frame.samp_freq * 0.001 * frame.frame_length_ms)
        windows = frame_windows(samples, shift, length, frame.snip_edges)
        samples = (dither or KaldiDither(config.dither))(windows).reshape(-1)
        frame.frame_shift_ms, frame.snip_edges = frame.frame_length_ms, True
    mfcc = knf.OnlineMfcc(opts)
    mfcc.accept_waveform(float(rate), samples)
    mfcc.input_finished()
    n = mfcc.num_frames_ready
    if n == 0:
        return np.zeros((0, mfcc.dim), dtype=np.float32)
    return np.stack([mfcc.get_frame(i) for i in range(n)]).astype(np.float32)


def wav_mfcc(path: str | Path, config: MfccConfig,
             dither: KaldiDither | None = None) -> np.ndarray:
    """MFCC of a wav file."""
    return compute_mfcc(*read_wav(path), config, dither)
