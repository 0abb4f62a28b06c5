"""Exercises of notebook 01 (the processor): token counts of sound and pictures, and two steps of the recipe.

    01.1  predict: how many audio tokens do 7.3 s and 7.1 s of speech make?
    01.2  predict: how many tokens do a 640x480 and a 1000x750 picture cost?
    01.3  implement: the audio token count straight from the number of samples
    01.4  implement: the log, the floor and the scale that turn mel energies into features
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from . import call, exercise, number

SAMPLE_RATE, HOP = 16000, 160          # 16 kHz sound, one mel frame per 10 ms


def _pair(answer) -> tuple[float, float]:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise TypeError(f"expected two numbers, e.g. (95, 12), got {answer!r}")
    return number(answer[0]), number(answer[1])


# ---- 01.1 ------------------------------------------------------------------------------------------------------

def _tokens_for_seconds(seconds: float) -> int:
    from ..audio_encoder import audio_token_count
    return int(audio_token_count(round(seconds * SAMPLE_RATE) // HOP))


@exercise("01.1", "How many audio tokens will 7.3 s and 7.1 s of speech make? Answer (tokens_7_3, tokens_7_1).",
          right=lambda: (_tokens_for_seconds(7.3), _tokens_for_seconds(7.1)),
          wrong=lambda: (round(7.3 * 13), round(7.1 * 13)),
          praise="whole seconds give 13 tokens each, and the leftover frames are a chunk of their own, halved "
                 "three times rounding up. 13 x 7.3 happens to round to the right number; 13 x 7.1 does not.")
def _audio_tokens(answer):
    a, b = _pair(answer)
    want = (_tokens_for_seconds(7.3), _tokens_for_seconds(7.1))
    if (a, b) == want:
        return None
    if (a, b) in ((round(7.3 * 12.5), round(7.1 * 12.5)), (7.3 * 12.5, 7.1 * 12.5)):
        return ("12.5 tokens per second (one per 80 ms) is the rate on paper, but AuT convolves every 1 s chunk "
                "on its own and each stride-2 convolution rounds up: count what one full chunk of 100 frames "
                "becomes, then what the leftover frames become")
    if a == want[0] and b != want[1]:
        return ("7.3 s is right. For 7.1 s: the 7 whole seconds give what they gave before; the 10 leftover "
                "frames are a chunk of their own. Halve 10 three times, rounding up each time")
    return ("frames = samples // 160 (100 per second); tokens = (tokens of one 100-frame chunk) x (whole "
            "chunks) + (tokens of the leftover frames), where a chunk of n frames becomes ceil(n / 2), three times")


# ---- 01.2 ------------------------------------------------------------------------------------------------------

def _image_tokens(height: int, width: int) -> int:
    from ..processor.placeholders import vision_token_count
    from ..processor.vision import VisionSettings, smart_resize
    s = VisionSettings(patch_size=16)          # the real model's preprocessor: 16 px patches, 2 x 2 merge
    min_pixels, max_pixels = 3136, 12845056
    h, w = smart_resize(height, width, s.factor, min_pixels, max_pixels)
    return vision_token_count((1, h // s.patch_size, w // s.patch_size), s.merge_size)


@exercise("01.2", "How many tokens do a 640x480 and a 1000x750 picture cost? Answer (tokens_640x480, "
                  "tokens_1000x750).",
          right=lambda: (_image_tokens(480, 640), _image_tokens(750, 1000)),
          wrong=lambda: (640 * 480 // 256, 1000 * 750 // 256),
          praise="smart resize rounds each side to a multiple of 32 px (750 -> 736, 1000 -> 992), then every "
                 "32 x 32 px square (2 x 2 patches of 16 px) is one token.")
def _picture_tokens(answer):
    a, b = _pair(answer)
    want = (_image_tokens(480, 640), _image_tokens(750, 1000))
    if (a, b) == want:
        return None
    if (a, b) == (640 * 480 / 256, 1000 * 750 / 256) or (a, b) == (640 * 480 // 256, 1000 * 750 // 256):
        return ("that is the number of 16 x 16 patches; the vision encoder's merger turns every 2 x 2 block of "
                "patches into one token")
    if a == want[0]:
        return ("640x480 is right. 1000 and 750 are not multiples of 32: smart resize first rounds each side to "
                "the nearest multiple of 32 px, and only then counts 32 x 32 squares")
    return "resize each side to the nearest multiple of 32 px (16 px patches, merged 2 x 2), then count 32 x 32 squares"


# ---- 01.3 ------------------------------------------------------------------------------------------------------

SAMPLE_COUNTS = (400, 1599, 1600, 1760, 15999, 16000, 16160, 54321, 116800, 113600, 160000, 480000 + 7)


@lru_cache(maxsize=None)
def _tokens_by_processor(num_samples: int) -> int:
    """What the processor writes: frames from the log-mel mask of a silent wave of that length, then the rule."""
    from ..audio_encoder import audio_token_count
    from ..processor.audio import AudioSettings, log_mel
    _, mask = log_mel([np.zeros(num_samples, np.float32)], AudioSettings())
    return int(audio_token_count(int(mask.sum())))


def _audio_tokens_right(num_samples):
    def halve_three_times(n):
        for _ in range(3):
            n = (n + 1) // 2                   # ceil(n / 2): one stride-2 convolution
        return n
    frames = num_samples // HOP
    return (frames // 100) * halve_three_times(100) + halve_three_times(frames % 100)


@exercise("01.3", "Write audio_tokens(num_samples): how many <|audio_pad|> tokens a mono 16 kHz wave of that many "
                  "samples gets.",
          right=lambda: _audio_tokens_right,
          wrong=lambda: (lambda num_samples: round(num_samples / SAMPLE_RATE * 12.5)),
          praise="samples -> 10 ms frames -> 1 s chunks -> three ceil-halvings per chunk: the processor writes "
                 "exactly as many pads as the encoder will make vectors.")
def _audio_tokens_fn(fn):
    for n in SAMPLE_COUNTS:
        got, want = number(call(fn, n)), _tokens_by_processor(n)
        if got != want:
            seconds = n / SAMPLE_RATE
            return (f"audio_tokens({n}) ({seconds:.3f} s) returned {got:g}, the processor writes {want}. Frames = "
                    f"samples // 160; each 100-frame chunk and the leftover tail are halved three times, "
                    f"rounding up")
    return None


# ---- 01.4 ------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _mel_case():
    """A wave with a tone, a chirp and silence; its mel energies (n_mels, frames) and omni_ref's features."""
    from ..processor.audio import AudioSettings, log_mel, mel_filter_bank
    s = AudioSettings()
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    wave = np.concatenate([0.3 * np.sin(2 * np.pi * 440 * t), np.zeros(SAMPLE_RATE // 2),
                           0.1 * np.sin(2 * np.pi * (200 + 3000 * t) * t)]).astype(np.float32)
    spectrum = torch.stft(torch.from_numpy(wave), s.n_fft, s.hop_length, window=torch.hann_window(s.n_fft),
                          return_complex=True)
    power = spectrum[:, :-1].abs() ** 2
    mel = torch.from_numpy(mel_filter_bank(s)).float().T @ power              # (128, frames)
    features, _ = log_mel([wave], s)
    return mel, features[0]


def _log_compress_right(mel):
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@exercise("01.4", "Write log_compress(mel): mel energies (n_mels, frames) of one sound -> the features the model "
                  "sees (log10, the 8-decade floor, the scale).",
          right=lambda: _log_compress_right,
          wrong=lambda: (lambda mel: (torch.clamp(mel, min=1e-10).log10() + 4.0) / 4.0),
          praise="log10 of the energies, floored 8 decades below the loudest value of the sound, scaled by "
                 "(x + 4) / 4: the features equal the processor's.")
def _log_compress(fn):
    mel, want = _mel_case()
    got = call(fn, mel.clone())
    got = torch.as_tensor(got, dtype=torch.float32)
    if got.shape != want.shape:
        return f"log_compress returned shape {tuple(got.shape)}; it should keep the input's shape {tuple(want.shape)}"
    if torch.allclose(got, want, atol=1e-5):
        return None
    log10 = torch.clamp(mel, min=1e-10).log10()
    if torch.allclose(got, (log10 + 4) / 4, atol=1e-5):
        return ("right during the tone, wrong in the silence: there the energies are ~0 and their log plunges to "
                "-10. Keep nothing more than 8 decades (log10 units) below the sound's loudest value")
    natural = torch.clamp(mel, min=1e-10).log()
    if torch.allclose(got, (torch.maximum(natural, natural.max() - 8) + 4) / 4, atol=1e-4):
        return "the logarithm is base 10 (Whisper's recipe counts decades), not the natural log"
    return ("three steps: log10 of max(mel, 1e-10); then no value below (the largest of them) - 8; then "
            "(x + 4) / 4")
