"""Exercises of notebook 07 (latency and scale): the slowest Thinker that keeps speech real-time, per-step times
from timestamps, and the roofline of one Thinker decode step."""
from __future__ import annotations

import functools
import random

from . import call, exercise, number

# ---- 07.1 predict: how slow may the Thinker get before speech stutters? --------------------------------------

# Qwen3-Omni Technical Report (arXiv 2509.17765), Table 2, 1 concurrent request, audio input.
THINKER_TOK_S, TALKER_TOK_S, MTP_MS, CODEC_MS, FRAME_MS = 75, 140, 14, 3, 80


def _slowest_right():
    """RTF = 1: the Thinker's ms per token is what is left of the 80 ms frame after the other three rows."""
    return 1000 / (FRAME_MS - 1000 / TALKER_TOK_S - MTP_MS - CODEC_MS)


@exercise("07.1", "Table 2 (1 request, audio input): Talker 140 tokens/s, MTP 14 ms per token, codec decoder 3 ms "
          "per code, one codec frame = 80 ms of speech. Keeping those, how many tokens/s must the Thinker still make "
          "for the real-time factor to stay at 1 (speech made exactly as fast as it plays)?",
          right=_slowest_right, wrong=lambda: 1000 / FRAME_MS,
          praise="80 - 7.1 - 14 - 3 = 55.9 ms are left for the Thinker's token: 1000 / 55.9 = 17.9 tokens/s. The "
                 "report's 75 tokens/s (RTF 0.47) leaves a 4x margin; below ~18 tokens/s, with everything else "
                 "unchanged, the audio would run dry and stutter.")
def _slowest(answer):
    value = number(answer)
    want = _slowest_right()
    if abs(value - want) <= 0.3:
        return None
    if abs(value - 1000 / FRAME_MS) <= 0.3:
        return "the Thinker does not get the whole 80 ms: the Talker, the MTP and the codec are paid every frame too"
    if abs(value - (FRAME_MS - 1000 / TALKER_TOK_S - MTP_MS - CODEC_MS)) <= 0.3:
        return "that is the Thinker's time per token in ms; the question asks for a rate, tokens per second"
    if abs(value - 1000 / (FRAME_MS - TALKER_TOK_S / 1000 - MTP_MS - CODEC_MS)) <= 0.3 or \
            abs(value - 1000 / (FRAME_MS - MTP_MS - CODEC_MS)) <= 0.3:
        return "turn the Talker's 140 tokens/s into ms per token first (1000 / 140)"
    return ("RTF = (Thinker + Talker + MTP + codec ms per token) / 80 ms; set it to 1 and solve for the Thinker's "
            "ms per token, then turn that into tokens/s")


# ---- 07.2 implement: per-step times from the timestamps of one run --------------------------------------------

def _steps_right():
    def step_times(start, passes, end):
        tokens = passes[1:] + [end]                  # token k exists when pass k + 1 starts; the last at the end
        return tokens[0] - start, [b - a for a, b in zip(tokens, tokens[1:])]
    return step_times


def _steps_wrong():
    def step_times(start, passes, end):              # times the passes, not the tokens: the prefill is lost
        return passes[0] - start, [b - a for a, b in zip(passes, passes[1:])]
    return step_times


@functools.lru_cache(maxsize=1)
def _step_cases():
    rng = random.Random(7)
    cases = []
    for n in (1, 2, 5, 9):
        t = rng.uniform(0, 5)
        start, passes = t, []
        t += rng.uniform(0.0001, 0.01)               # setting up before the first pass
        for k in range(n):
            passes.append(t)
            t += rng.uniform(0.5, 2.0) if k == 0 else rng.uniform(0.01, 0.1)   # prefill, then decode steps
        cases.append((start, passes, t))
    return cases


@exercise("07.2", "Write step_times(start, passes, end) -> (ttft, steps): one generate call started at `start`, "
          "its decoder's forward passes started at the times in `passes` (pass 0 is the prefill), and it returned "
          "at `end`. Return the time to the first token and the list of times between consecutive tokens.",
          right=_steps_right, wrong=_steps_wrong,
          praise="the same figures as bench.thinker_figures: token k exists when pass k + 1 begins, so every figure "
                 "is the difference of two timestamps of the same run, in order, and can never be negative.")
def _steps(fn):
    want_fn = _steps_right()
    for start, passes, end in _step_cases():
        got = call(fn, start, list(passes), end)
        want = want_fn(start, passes, end)
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            return f"return a pair (ttft, steps); you returned {got!r}"
        ttft, steps = number(got[0]), list(got[1])
        if len(steps) != len(want[1]):
            return (f"{len(passes)} passes make {len(passes)} tokens, so {len(want[1])} gaps between tokens; you "
                    f"returned {len(steps)}")
        if abs(ttft - want[0]) > 1e-9:
            if abs(ttft - (passes[0] - start)) < 1e-9:
                return ("that is when the prefill begins, not when the first token exists: the first token is "
                        "chosen after pass 0, just before pass 1 starts")
            return "the first token exists when the second pass starts (or at `end` if there is only one pass)"
        if any(abs(number(a) - b) > 1e-9 for a, b in zip(steps, want[1])):
            return "token k exists when pass k + 1 starts, and the last one when generate returns at `end`"
    return None


# ---- 07.3 predict: the roofline of one real Thinker decode step -----------------------------------------------

# latency.decoder_weights(presets.build_meta("real"))["Thinker"].active: the parameters one decode step reads
# (Table 1's 3,353,556,992 active, less the embedding table but the one row a token looks up).
ACTIVE, STORED, BANDWIDTH = 3_042_131_968, 30_221_221_888, 3.35e12


def _roofline_right():
    return 1000 * 2 * ACTIVE / BANDWIDTH


@exercise("07.3", "One decode step of the real Thinker reads its active weights once: 3,042,131,968 parameters "
          "in bf16, from memory at 3.35 TB/s (an H100's HBM3). At best, how many ms does the step take?",
          right=_roofline_right, wrong=lambda: 1000 * 2 * STORED / BANDWIDTH,
          praise="6.08 GB / 3.35 TB/s = 1.82 ms, so at most ~550 tokens/s; the report measures 75. The arithmetic "
                 "(2 FLOPs per weight, 6 GFLOP at ~989 TFLOP/s: 0.006 ms) is 300x faster still: decoding at "
                 "batch 1 waits on memory, which is why reading 1/10 of the weights (MoE) makes it 10x faster.")
def _roofline(answer):
    value = number(answer)
    want = _roofline_right()
    if abs(value - want) <= 0.03 * want:
        return None
    if abs(value - 1000 * 2 * STORED / BANDWIDTH) <= 0.05 * 10 * want:
        return "that reads every expert; a token's step reads only the experts it is routed to (the active ones)"
    if abs(value - want / 2) <= 0.03 * want / 2:
        return "bf16 is 2 bytes per parameter"
    if abs(value - want * 2) <= 0.03 * want * 2:
        return "bf16 is 2 bytes per parameter, not 4"
    if abs(value - want / 1000) <= 0.03 * want / 1000 or abs(value - want * 1000) <= 0.03 * want * 1000:
        return "check the units: the answer is in milliseconds"
    return "bytes to read (parameters x 2) divided by bytes per second, in ms"
