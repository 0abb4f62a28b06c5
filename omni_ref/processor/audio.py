"""Sound -> log-mel features, and how many audio tokens the encoder will make of them.

The recipe is Whisper's (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak
Supervision", section 2.2), which Qwen3-Omni's AuT encoder keeps (Qwen3-Omni Technical Report,
arXiv 2509.17765, section 2.2):

    16 kHz samples -> frames of 400 samples (25 ms) every 160 samples (10 ms), Hann window
                   -> power spectrum |FFT|^2 (201 bins)
                   -> 128 mel filters (Slaney scale, area-normalised, 0-8 kHz)
                   -> log10, floored 8 decades below the loudest value, scaled by (x + 4) / 4

so one second of sound is 100 feature frames of 128 numbers. The encoder then makes one token per 8
frames (three stride-2 convolutions), working in chunks of 2 * n_window = 100 frames: see
`audio_encoder.audio_token_count`.

HF mirror: WhisperFeatureExtractor (its torch path, `_torch_extract_fbank_features`, and
`mel_filter_bank` in transformers/audio_utils.py), as called by Qwen3OmniMoeProcessor, and
`_get_feat_extract_output_lengths` in processing_qwen3_omni_moe.py for the token count.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .media import ProcessorError


@dataclass(frozen=True)
class AudioSettings:
    """The feature extractor's part of preprocessor_config.json."""
    sampling_rate: int = 16000
    feature_size: int = 128    # mel bins
    n_fft: int = 400           # 25 ms window
    hop_length: int = 160      # 10 ms hop
    padding_value: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> "AudioSettings":
        if d.get("dither", 0.0):
            raise ProcessorError("preprocessor_config.json asks for dither (random noise added to "
                                 "the sound); omni-ref keeps features deterministic and does not "
                                 "support it: set dither to 0.0")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# --------------------------------------------------------------------------------- mel filter bank
def hertz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mel / 200 Hz), logarithmic above (27 / 6.4x)."""
    hz = np.asarray(hz, dtype=np.float64)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log_part, 3.0 * hz / 200.0)


def mel_to_hertz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, 200.0 * mel / 3.0)


def mel_filter_bank(s: AudioSettings, max_hz: float = 8000.0) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) float64 triangles, even in mel, of unit area (Slaney norm)."""
    bin_hz = np.linspace(0, s.sampling_rate // 2, s.n_fft // 2 + 1)                       # (201,)
    edges = mel_to_hertz(np.linspace(hertz_to_mel(0.0), hertz_to_mel(max_hz), s.feature_size + 2))
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]                          # (128,) each
    rising = (bin_hz[:, None] - left) / (centre - left)                                # (201, 128)
    falling = (right - bin_hz[:, None]) / (right - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    # Wide (high) filters get lower peaks: equal energy per band.
    return triangles * (2.0 / (right - left))


# ---------------------------------------------------------------------------------------- features
def min_samples(s: AudioSettings) -> int:
    """The shortest sound that has features: the STFT centres its first window on sample 0 by
    mirroring n_fft // 2 samples at each end, and a mirror needs more samples than it reflects
    (201 at 16 kHz: 12.6 ms)."""
    return s.n_fft // 2 + 1


def check_lengths(waves: list[np.ndarray], s: AudioSettings) -> None:
    """Refuse a sound too short to have features, naming it by its place among this call's
    sounds."""
    need = min_samples(s)
    for i, w in enumerate(waves):
        if len(w) < need:
            raise ProcessorError(
                f"audio {i} (counting the sounds of this call from 0, video sound tracks "
                f"included) has {len(w)} samples ({1000 * len(w) / s.sampling_rate:.1f} ms), "
                f"fewer than the {need} ({1000 * need / s.sampling_rate:.1f} ms at "
                f"{s.sampling_rate} Hz) the features need: the {s.n_fft}-sample window is "
                f"centred by mirroring {s.n_fft // 2} samples at each end. Pad it with silence, "
                f"e.g. np.pad(wave, (0, {need} - len(wave))), or drop the audio part.")


def log_mel(waves: list[np.ndarray], s: AudioSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Several mono waves -> (features (B, n_mels, frames) float32, mask (B, frames) int32).

    Like HF, the batch is padded with silence to the longest wave *before* the STFT, so a short
    wave's last frames see zeros, not a mirror of its own end, and its values near the end depend
    on what it was batched with.
    """
    check_lengths(waves, s)
    longest = max(len(w) for w in waves)
    batch = np.full((len(waves), longest), s.padding_value, dtype=np.float32)
    for i, w in enumerate(waves):
        batch[i, :len(w)] = w                  # float64 input is rounded to float32 here, as in HF
    x = torch.from_numpy(batch)                                # (B, samples)

    # STFT, written out: centre each frame on its hop by mirroring n_fft/2 samples at both ends,
    # cut overlapping frames, window them, FFT. (Bit-identical to torch.stft(x, n_fft, hop, window,
    # center=True).)
    half = s.n_fft // 2
    padded = torch.nn.functional.pad(x[:, None], (half, half), mode="reflect")[:, 0]
    frames = padded.unfold(-1, s.n_fft, s.hop_length)          # (B, samples // hop + 1, n_fft)
    window = torch.hann_window(s.n_fft)                        # periodic Hann
    spectrum = torch.fft.rfft(frames * window, dim=-1)    # (B, frames + 1, n_fft // 2 + 1) complex
    # Whisper drops the last frame, so there are exactly samples // hop frames (100 per second).
    power = (spectrum[:, :-1].abs() ** 2).transpose(1, 2).contiguous()   # (B, 201, frames)

    filters = torch.from_numpy(mel_filter_bank(s)).float()     # (201, n_mels)
    mel = filters.T @ power                                    # (B, n_mels, frames)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    # Keep 8 decades (80 dB) below each wave's loudest value: silence becomes a flat floor, not
    # -inf.
    loudest = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, loudest - 8.0)
    features = (log_spec + 4.0) / 4.0                          # roughly into [-1, 1]

    # Which frames are real sound. HF marks a frame as real if its first sample is (samples 0, 160,
    # 320, ...), i.e. ceil(length / hop) frames, capped by the number of frames there are: a short
    # wave whose length is not a multiple of 160 gets one frame more than the longest one would
    # alone.
    num_frames = features.shape[-1]
    lengths = torch.tensor([min(-(-len(w) // s.hop_length), num_frames) for w in waves])
    mask = (torch.arange(num_frames)[None, :] < lengths[:, None]).to(torch.int32)   # (B, frames)
    return features, mask
