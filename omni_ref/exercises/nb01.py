"""Exercises of notebook 01 (the processor): token counts of sound and pictures, and two steps of the recipe.

    01.1  predict: how many audio tokens do 7.3 s and 7.1 s of speech make?
    01.2  predict: how many tokens do a 640x480 and a 1000x750 picture cost?
    01.3  implement: the audio token count straight from the number of samples
    01.4  predict: the feature value of silence, from the log, the floor and the scale
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

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

LOUDEST = 1.2              # the clip's largest log10 mel energy in the question


def _silence_value(loudest: float = LOUDEST) -> float:
    """What log_mel gives a silent stretch: log10(max(0, 1e-10)) = -10 is lifted to the floor, then scaled."""
    return (max(-10.0, loudest - 8.0) + 4.0) / 4.0


@exercise("01.4", f"A clip's loudest log10 mel energy is {LOUDEST}. Which feature value does a silent stretch of "
                  f"the same clip get?",
          right=_silence_value, wrong=lambda: (-10.0 + 4.0) / 4.0,
          praise="silence is lifted to the floor 8 decades below the loudest value, then scaled by (x + 4) / 4: "
                 "the floor is set by each sound's own loudness, not by a fixed number.")
def _silence(answer):
    value = number(answer)
    want = _silence_value()
    if abs(value - want) < 1e-6:
        return None
    if abs(value - (-10.0 + 4.0) / 4.0) < 1e-6:
        return ("log10 of the 1e-10 clamp is -10, but log_mel then keeps nothing more than 8 decades below the "
                "clip's loudest value: which is larger, -10 or the floor?")
    if abs(value - (LOUDEST - 8.0)) < 1e-6:
        return "that is the floor in log10 units; the model sees it after the last step, (x + 4) / 4"
    return "three steps: log10 of max(energy, 1e-10); no value below (the loudest) - 8; then (x + 4) / 4"
