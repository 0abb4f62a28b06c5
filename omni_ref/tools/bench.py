"""`make bench`: per-stage latencies of omni_ref AND Hugging Face, measured in one run on the same inputs.

    python -m omni_ref.tools.bench --out bench/ [--preset demo] [--repeats 3] [--no-eager]

Four columns, on the same checkpoint and inputs (CPU, fp32, the thread count fixed by OMP_NUM_THREADS):

    omni_ref        our fast path: omni_ref.load(..., attn_implementation="sdpa", experts_implementation="grouped_mm")
    omni_ref_eager  the same model on the eager path the notebooks show (switched in place, no second copy)
    hf              HF's default path, what its users run: sdpa attention, grouped_mm experts
    hf_eager        HF with attn_implementation="eager", experts_implementation="eager"

For each sample chat of `make demo` (demo.sample_chats()), the stages of the report's Table 2 (Qwen3-Omni Technical
Report, arXiv 2509.17765, section 6 / Table 2), each measured in `repeats` runs after one warm-up run, the
columns taking turns run by run (taking_turns), so that a slow spell of the machine falls on all of them:

    processor          chat template, log-mel, patches (omni_ref only: HF cannot read the sample video folder)
    audio / vision     the encoders alone (AuT; the vision tower on the image and video pixels)
    thinker_ttft       from the call of the Thinker's generate to its first token (prefill, encoders included)
    thinker_token      one decode step: the time between two consecutive tokens of the same run
    talker_ttft        from the call of the Talker's generate to its first codebook-0 code (its prompt comes
                       from the Thinker, built once beforehand on each side)
    talker_step        one Talker step with its MTP: the time between two consecutive Talker forward passes
    mtp                the code predictor completing one frame (15 residual codes), timed around each of its
                       calls inside that same Talker run
    talker_token       the Talker's own share of a step: the step minus the MTP call nested inside it
    code2wav_chunked   chunked_decode (300-frame chunks, 25 of context) of `codec_frames` frames, per frame
    code2wav_stream    Code2WavStream (what model.stream decodes with) fed 4 frames a push (omni_ref only), per frame
    first_audio        a spoken answer of `answer_frames` frames: ours, the time from calling model.stream to its
                       first audio event (4-frame packets); HF's, its generate's wall time, since HF returns the
                       audio only when all of it is made
    total              that same answer complete, through generate on each side (these two: omni_ref and hf only)

Every per-step figure is read off timestamps taken while one generate call runs (StepClock: a forward pre-hook
on the decoder, and a wrapper around the code predictor's generate), the same way on both sides, so it is never
the difference of two separate runs (under load such a difference once came out at -1949.7 ms per token). Per
run, a per-step stage takes the median over that run's steps; the stage's figure is the median over the runs,
and its spread is (max - min) / median over the runs. A figure that is negative, or whose spread is over 50 %,
is flagged (stages.<stage>.flag.<side>): it is not a measurement to quote or plot as one.

From the stages: first-packet latency and real-time factor exactly as the report defines them (latency.first_packet,
latency.real_time_factor, `table_2`), the figures a reader asks for (`figures`: encoders, Thinker prefill and decode
tokens/s, Talker+MTP frames/s, Code2Wav real-time factor, time to first audio, total), and the three speed targets
of omni_ref against HF's default path (`targets`, each with its ratio, its limit and met: true/false). The JSON
holds the hardware, versions, load average, settings, every figure with its runs and spread, and the ratios
omni_ref / HF: results.<request>.stages.<stage>.{omni_ref, omni_ref_eager, hf, hf_eager, spread, runs, flag}.
The same functions (measure_request, summarise, environment) are what notebook 07 calls; stage_timeline, the
same clocks around one whole speech generate call, gives notebook 00 its stage timings. Timing is noisy: quote
ratios from one run, not absolute times across machines.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from .. import presets
from . import latency
from ..audio_encoder import pack_padded_features
from ..code_predictor import residual_sampling
from .demo import sample_chats
from ..generate import generate_speech, thinker_generate
from ..layers import Attention, set_attn_implementation
from ..moe import Experts, set_experts_implementation
from ..sampling import SamplingOptions
from ..streaming import Code2WavStream
from ..talker import suppressed_ids, talker_generate
from .scoped import torch_state_kept

# The columns: ours and HF's, each on its default fast path and on its eager path (module docstring).
SIDES = ("omni_ref", "omni_ref_eager", "hf", "hf_eager")
OURS = ("omni_ref", "omni_ref_eager")
MAX_SPREAD = 0.5          # a figure whose runs differ by more than half their median is flagged
FRAME_S = 0.080           # one codec frame is 80 ms of audio
# The speed targets of omni_ref's fast path against HF's default path: (what, "max" | "min", limit).
TARGETS = {"thinker_prefill": ("thinker_ttft time ratio", "max", 1.0),
           "thinker_decode": ("thinker_token time ratio", "max", 1.0),
           "talker_mtp_frames_per_s": ("Talker+MTP frames/s ratio (HF step / our step)", "min", 1.5),
           "first_audio": ("our first audio / HF's time to audio", "max", 0.2)}


# ---- timing ----------------------------------------------------------------------------------------------------

def timed(fn, repeats: int = 3, warmup: int = 1):
    """(median seconds over `repeats` calls after `warmup` untimed ones, the last call's result)."""
    times, out = timed_runs(fn, repeats, warmup)
    return statistics.median(times), out


def timed_runs(fn, repeats: int = 3, warmup: int = 1):
    """([seconds of each of `repeats` calls], the last call's result), after `warmup` untimed calls."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


class StepClock:
    """Timestamps of one generate call, taken while it runs: when the call starts and returns, when each forward
    pass of `decoder` starts and ends (forward hooks), and when each call of `inner.<method>` starts and ends (a
    wrapper set on that instance; by default the code predictor's generate, which both sides call once a frame).

        clock = StepClock(model.thinker)
        ids = clock.run(lambda: thinker_generate(model.thinker, ...))
        clock.start, clock.passes, clock.pass_ends, clock.end          # seconds (time.perf_counter)
    """

    def __init__(self, decoder: torch.nn.Module, inner=None, method: str = "generate"):
        self.decoder, self.inner, self.method = decoder, inner, method

    def run(self, fn):
        self.passes, self.pass_ends, self.inner_calls = [], [], []      # [t], [t], [(t_start, t_end)]
        hooks = [self.decoder.register_forward_pre_hook(lambda *_: self.passes.append(time.perf_counter())),
                 self.decoder.register_forward_hook(lambda *_: self.pass_ends.append(time.perf_counter()))]
        if self.inner is not None:
            plain = getattr(self.inner, self.method)

            def clocked(*args, **kwargs):
                t0 = time.perf_counter()
                out = plain(*args, **kwargs)
                self.inner_calls.append((t0, time.perf_counter()))
                return out
            setattr(self.inner, self.method, clocked)             # found before the class's method
        try:
            self.start = time.perf_counter()
            out = fn()
            self.end = time.perf_counter()
        finally:
            for h in hooks:
                h.remove()
            if self.inner is not None:
                delattr(self.inner, self.method)                  # back to the class's method
        return out

    def token_times(self) -> list[float]:
        """When each new token existed: token k is chosen just before pass k + 1 starts; the last one, when
        generate returns."""
        return self.passes[1:] + [self.end]


def thinker_figures(clock: StepClock) -> dict[str, list[float]]:
    """{"thinker_ttft": [s], "thinker_token": [s per decode step]} of one clocked Thinker generate."""
    tokens = clock.token_times()
    return {"thinker_ttft": [tokens[0] - clock.start],
            "thinker_token": [b - a for a, b in zip(tokens, tokens[1:])]}


def talker_figures(clock: StepClock) -> dict[str, list[float]]:
    """Talker TTFT, and per step the step, its MTP call and the Talker's own share, of one clocked Talker generate.

    Code 0 of step k is chosen after pass k; then the MTP fills frame k; then pass k + 1 starts. So the first
    code exists when the first MTP call starts, and MTP call k lies inside [pass k, pass k + 1]: a step minus
    its own MTP call is the time outside it, never negative."""
    passes, mtp = clock.passes, clock.inner_calls
    steps = [(a, b) for a, b in zip(passes, passes[1:])]
    if len(mtp) != len(steps) or not all(a <= s and e <= b for (a, b), (s, e) in zip(steps, mtp)):
        raise RuntimeError(f"{len(passes)} Talker passes and {len(mtp)} MTP calls do not nest one per step")
    return {"talker_ttft": [mtp[0][0] - clock.start],
            "talker_step": [b - a for a, b in steps],
            "mtp": [e - s for s, e in mtp],
            "talker_token": [(b - a) - (e - s) for (a, b), (s, e) in zip(steps, mtp)]}


def stage_timeline(model, fn):
    """(fn(), {stage: seconds}) for one whole speech generate call `fn` of `model`, ours or HF's (both have
    .thinker, .talker and .code2wav.chunked_decode), read off the timestamps of that one call:

        thinker_prefill   call -> first token (the encoders run inside the first pass)
        thinker_decode    first token -> the Thinker's last pass ends
        talker_prompt     -> the Talker's first pass starts (building its prompt from the Thinker's states)
        talker_and_mtp    the Talker's first pass -> its last pass ends (every frame's code 0 and its MTP)
        code2wav          chunked_decode of all the codes
        total             the whole call"""
    thinker = StepClock(model.thinker)
    talker = StepClock(model.talker, model.code2wav, "chunked_decode")
    out = thinker.run(lambda: talker.run(fn))
    first_token = thinker.passes[1] if len(thinker.passes) > 1 else thinker.pass_ends[0]
    (c2w_start, c2w_end), = talker.inner_calls
    return out, {"thinker_prefill": first_token - thinker.start,
                 "thinker_decode": thinker.pass_ends[-1] - first_token,
                 "talker_prompt": talker.passes[0] - thinker.pass_ends[-1],
                 "talker_and_mtp": talker.pass_ends[-1] - talker.passes[0],
                 "code2wav": c2w_end - c2w_start, "total": thinker.end - thinker.start}


def taking_turns(cols: dict, run, repeats: int, warmup: int = 1) -> dict:
    """{side: [run(side, model) of each timed run]}: every side's warm-up first, then the sides take turns, one
    run each per round, starting one side later each round.

    Measuring one side's runs all together, then the next side's, lets a slow spell of the machine (another
    process, the kernel reclaiming memory) land on one side only, and the ratio then measures the machine: in
    one such bench our MTP ran 85 ms a frame on the first request and 47 ms on the second, HF's 83 and 80. Taking
    turns puts such a spell on every side of the round it falls in."""
    sides = list(cols)
    for side in sides:
        model, context = cols[side]
        with context():
            for _ in range(warmup):
                run(side, model)
    results = {side: [] for side in sides}
    for r in range(repeats):
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            model, context = cols[side]
            with context():
                results[side].append(run(side, model))
    return results


# ---- figures: median, spread, flag -------------------------------------------------------------------------------

def spread(runs: list[float]) -> float:
    """(max - min) / median of the runs: 0 for one run; inf when the median is not positive."""
    med = statistics.median(runs)
    return (max(runs) - min(runs)) / med if med > 0 else float("inf")


def flag(runs: list[float] | None) -> str | None:
    """Why a figure cannot be quoted as a measurement (negative, or runs spread over 50 %), or None when it can."""
    if not runs:
        return None
    if min(runs) < 0 or statistics.median(runs) <= 0:
        return "negative or zero: not a duration"
    if spread(runs) > MAX_SPREAD:
        return f"spread {spread(runs):.0%} is over {MAX_SPREAD:.0%}: re-run on a quieter machine"
    return None


def stage(runs: dict[str, list[float] | None], per: int = 1) -> dict:
    """One stage of the JSON from each side's runs in seconds ({side: [s] or None when that side cannot run
    it}), divided by `per` (frames per call): {side: median, "spread": {side: ...}, "runs": ..., "flag": ...}."""
    runs = {side: None if r is None else [t / per for t in r] for side, r in runs.items()}
    return {**{side: None if r is None else statistics.median(r) for side, r in runs.items()},
            "spread": {side: None if r is None else spread(r) for side, r in runs.items()},
            "runs": runs, "flag": {side: flag(r) for side, r in runs.items()}}


def flagged(stages: dict) -> list[tuple[str, str, str]]:
    """(stage, side, reason) for every flagged figure of a request's stages."""
    return [(name, side, why) for name, v in stages.items() for side, why in v.get("flag", {}).items() if why]


def carried_decode_seconds(code2wav, codes: torch.Tensor, frames_per_push: int = 4) -> float:
    """Seconds to decode `codes` (1, Q, n) through Code2WavStream, `frames_per_push` frames at a time, as
    model.stream does with its default audio_chunk_frames."""
    stream, t0 = Code2WavStream(code2wav), time.perf_counter()
    for start in range(0, codes.shape[-1], frames_per_push):
        stream.push(codes[..., start:start + frames_per_push])
    stream.flush()
    return time.perf_counter() - t0


# ---- the columns -------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def eager_path(model):
    """`model` (ours) on the eager path for the block, then back on the implementations it had."""
    attn = next(m.attn_implementation for m in model.modules() if isinstance(m, Attention))
    experts = next((m.implementation for m in model.modules() if isinstance(m, Experts)), "eager")
    set_attn_implementation(model, "eager")
    set_experts_implementation(model, "eager")
    try:
        yield model
    finally:
        set_attn_implementation(model, attn)
        set_experts_implementation(model, experts)


def columns(model, twin, twin_eager=None, eager: bool = False) -> dict:
    """{side: (the model, a context to enter around that side's runs)} for the sides being measured: ours
    (`model`, as loaded) and HF's (`twin`) always; our eager path when `eager`; HF's eager twin if given."""
    cols = {"omni_ref": (model, contextlib.nullcontext), "hf": (twin, contextlib.nullcontext)}
    if eager:
        cols["omni_ref_eager"] = (model, lambda: eager_path(model))
    if twin_eager is not None:
        cols["hf_eager"] = (twin_eager, contextlib.nullcontext)
    return {side: cols[side] for side in SIDES if side in cols}


# ---- time to first audio -----------------------------------------------------------------------------------------

def first_audio_ours(model, inputs: dict, **options) -> float:
    """Seconds from the call of model.stream to its first audio event (the event's own time_s), for one spoken
    answer; the stream is closed there. options: generate's speech options (speaker, thinker_*, talker_*)."""
    for ev in model.stream(**inputs, **options, audio_chunk_frames=4):
        if ev.kind == "audio":
            return ev.time_s
    raise RuntimeError("model.stream ended without an audio event: the answer had no codec frame")


def answer(m, inputs: dict, **options) -> dict:
    """One whole spoken answer through generate (ours or HF's: the same call): {"total_s", "samples"}."""
    t0 = time.perf_counter()
    _, wav = m.generate(**inputs, **options, thinker_do_sample=False, return_audio=True)
    return {"total_s": time.perf_counter() - t0, "samples": int(wav.numel())}


def measure_first_audio(cols: dict, inputs: dict, repeats: int, **options) -> tuple[dict, dict]:
    """The stages first_audio and total of every column from `repeats` runs each after one warm-up, and the
    samples each side's answer had (they must agree: the same answer on every side).

    total: generate's wall time on every side. first_audio: ours, model.stream's first audio event; HF's, the
    same generate call, since HF returns the waveform only when all of it is made. Only the two default-path
    columns run it (a 60-frame answer takes seconds a run; the eager columns would double the bench's time):
    the eager columns get None."""
    from .. import hf

    def run(side, m):
        out = answer(m, inputs, **options)
        if side in OURS:           # its generate runs are the stream's warm-up
            out["first_s"] = first_audio_ours(m, inputs, **options)
        return out

    with hf.quiet():
        done = taking_turns({side: cols[side] for side in ("omni_ref", "hf")}, run, repeats)
    total = {side: [r["total_s"] for r in done[side]] if side in done else None for side in cols}
    first = {side: [r.get("first_s", r["total_s"]) for r in done[side]] if side in done else None for side in cols}
    samples = {side: r[-1]["samples"] for side, r in done.items()}
    return {"first_audio": stage(first), "total": stage(total)}, samples


# ---- one request ---------------------------------------------------------------------------------------------

def measure_request(model, twin, processor, messages, repeats: int = 3, thinker_tokens: int = 8,
                    talker_steps: int = 16, codec_frames: int = 50, answer_frames: int | None = None,
                    twin_eager=None, eager: bool = False) -> dict:
    """Every stage of one chat on every column: {"stages": {stage: stage(...)}, "parity": {...},
    "prompt_tokens": n, "steps": {"thinker" | "talker": {side: {figure: per-step seconds of the last run}}}}.
    twin: hf.load_hf of the same checkpoint ("hf"); twin_eager: a second HF model ("hf_eager"); eager: also time
    our model on its eager path ("omni_ref_eager"). answer_frames: also time a spoken answer of that many frames
    (first_audio, total; needs model.stream). HF's notices are silenced for the call (hf.quiet)."""
    from .. import hf
    cols = columns(model, twin, twin_eager, eager)
    with hf.quiet(), torch.no_grad():
        return _measure_request(cols, processor, messages, repeats, thinker_tokens, talker_steps, codec_frames,
                                answer_frames)


def _measure_request(cols, processor, messages, repeats, thinker_tokens, talker_steps, codec_frames,
                     answer_frames):
    model, twin = cols["omni_ref"][0], cols["hf"][0]
    cfg = model.config
    eos = cfg.im_end_token_id
    stages, parity, steps = {}, {}, {"thinker": {}, "talker": {}}

    def timed_stage(name, ours, theirs, per=1):
        """ours(m), theirs(m): one call on a model of that side (theirs None: HF cannot run it). Returns the last
        result of omni_ref and of hf."""
        def run(side, m):
            t0 = time.perf_counter()
            out = (ours if side in OURS else theirs)(m)
            return time.perf_counter() - t0, out

        able = {side: col for side, col in cols.items() if (ours if side in OURS else theirs) is not None}
        done = taking_turns(able, run, repeats)
        stages[name] = stage({side: [t for t, _ in done[side]] if side in done else None for side in cols}, per)
        return tuple(done[side][-1][1] if side in done else None for side in ("omni_ref", "hf"))

    def clocked(part, figures, ours, theirs):
        """ours(m) / theirs(m) -> (decoder, inner, fn): clocked runs of each side's generate; their figures
        become stages, the last run's steps are kept."""
        def run(side, m):
            decoder, inner, fn = (ours if side in OURS else theirs)(m)
            clock = StepClock(decoder, inner)
            out = clock.run(fn)
            return figures(clock), out

        done = taking_turns(cols, run, repeats)
        for name in done["omni_ref"][0][0]:       # each run's per-step figures reduced to their median
            stages[name] = stage({side: [statistics.median(f[name]) for f, _ in r] for side, r in done.items()})
        for side, r in done.items():
            steps[part][side] = r[-1][0]
        return {side: r[-1][1] for side, r in done.items()}

    inputs, _ = timed_stage("processor", lambda m: processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, fps=2.0), None)
    media = {k: v for k, v in inputs.items() if k != "input_ids"}
    if "input_features" in inputs:
        feats, mask = inputs["input_features"], inputs["feature_attention_mask"]
        a, b = timed_stage("audio_encoder", lambda m: m.thinker.audio_tower(*pack_padded_features(feats, mask)),
                           lambda m: m.thinker.get_audio_features(feats, mask).last_hidden_state)
        parity["audio_encoder_max_abs"] = float((a - b).abs().max())
    kinds = [(kind, p, g) for kind, p, g in (("image", "pixel_values", "image_grid_thw"),
                                            ("video", "pixel_values_videos", "video_grid_thw")) if p in inputs]
    if kinds:       # HF's get_*_features split the merged tokens per image / video: joined again for the diff
        a, b = timed_stage(
            "vision_encoder", lambda m: [m.thinker.visual(inputs[p], inputs[g]).tokens for _, p, g in kinds],
            lambda m: [torch.cat(getattr(m.thinker, f"get_{kind}_features")(inputs[p], inputs[g]).pooler_output)
                       for kind, p, g in kinds])
        parity["vision_encoder_max_abs"] = max(float((x - y).abs().max()) for x, y in zip(a, b))

    # The Thinker: each run is one generate of `thinker_tokens` tokens; its clock gives the TTFT and every step.
    out = clocked("thinker", thinker_figures,
                  lambda m: (m.thinker, None, lambda: thinker_generate(
                      m.thinker, inputs["input_ids"], max_new_tokens=thinker_tokens, eos_token_id=eos, **media)),
                  lambda m: (m.thinker, None, lambda: m.thinker.generate(
                      **inputs, max_new_tokens=thinker_tokens, do_sample=False, eos_token_id=eos)))
    parity["thinker_tokens_equal"] = bool(torch.equal(out["omni_ref"], out["hf"]))

    # The speech path once on each side (untimed): our Speech object and HF's captured Talker call give each
    # side its own Talker prompt, and their codes must agree.
    from .. import hf
    opts = dict(thinker_max_new_tokens=max(thinker_tokens, 2), thinker_eos_token_id=eos,
                talker_max_new_tokens=talker_steps, talker_do_sample=False)
    speech = generate_speech(model, inputs["input_ids"], "Ethan", **opts, **media)
    seen = {id(m): hf.hf_speech(m, **inputs, speaker="Ethan", **opts, thinker_do_sample=False)
            for side, (m, _) in cols.items() if side not in OURS}         # by HF model: its own prompt
    parity["codes_equal"] = bool(torch.equal(speech.talker.codes, seen[id(twin)]["codes"]))
    parity["wav_max_abs"] = float((speech.wav - seen[id(twin)]["wav"].reshape(speech.wav.shape)).abs().max())

    # The Talker: each run is `talker_steps` steps with no eos on either side (HF: min_new_tokens), so every run
    # has the same steps; the clock times each step and each MTP call inside it.
    kc = cfg.talker_config
    greedy = SamplingOptions(False, 0.9, 50, 1.0, 1.05)
    clocked("talker", talker_figures,
            lambda m: (m.talker, m.talker.code_predictor, lambda: talker_generate(
                m.talker, speech.prompt, speech.positions, talker_steps, greedy, eos_token_id=None,
                suppress_tokens=suppressed_ids(kc))),
            lambda m: (m.talker, m.talker.code_predictor, lambda: m.talker.generate(
                **{**seen[id(m)]["talker_kwargs"], "max_new_tokens": talker_steps,
                   "min_new_tokens": talker_steps})))

    # The MTP on one made-up frame, untimed: the same residual codes on both sides.
    cp, hcp = model.talker.code_predictor, twin.talker.code_predictor
    hidden = torch.randn(1, 1, kc.text_config.hidden_size, generator=torch.Generator().manual_seed(0))
    code0 = model.talker.model.codec_embedding(torch.zeros(1, 1, dtype=torch.long))       # (1, 1, H)
    a = cp.generate(hidden, code0, residual_sampling(False)).codes
    b = hcp.generate(inputs_embeds=torch.cat([hidden, code0], dim=1), do_sample=False,
                     max_new_tokens=kc.num_code_groups - 1, return_dict_in_generate=True).sequences
    parity["mtp_codes_equal"] = bool(torch.equal(a, b))

    codes = torch.randint(cfg.code2wav_config.codebook_size, (1, cfg.code2wav_config.num_quantizers, codec_frames),
                          generator=torch.Generator().manual_seed(0))
    a, b = timed_stage("code2wav_chunked", lambda m: m.code2wav.chunked_decode(codes, 300, 25),
                       lambda m: m.code2wav.chunked_decode(codes, chunk_size=300, left_context_size=25),
                       per=codec_frames)
    parity["code2wav_max_abs"] = float((a - b).abs().max())
    stream = [carried_decode_seconds(model.code2wav, codes) for _ in range(repeats)]
    stages["code2wav_stream"] = stage({side: stream if side == "omni_ref" else None for side in cols},
                                      per=codec_frames)
    out = {"stages": stages, "parity": parity, "prompt_tokens": int(inputs["input_ids"].shape[1]), "steps": steps}
    if answer_frames:
        # frames = Talker steps - 1: the step after a frame's code 0 completes it (generate.generate_speech)
        answer = dict(speaker="Ethan", thinker_max_new_tokens=max(thinker_tokens, 2), thinker_eos_token_id=eos,
                      talker_max_new_tokens=answer_frames + 1, talker_do_sample=False)
        more, samples = measure_first_audio(cols, inputs, repeats, **answer)
        stages.update(more)
        parity["answer_samples"] = samples
        parity["answer_samples_equal"] = len(set(samples.values())) == 1
        out["answer_frames"] = answer_frames
    return out


# ---- what a request's stages say -----------------------------------------------------------------------------

def sides_of(stages: dict) -> list[str]:
    """The columns a request was measured on, in SIDES order."""
    present = {side for v in stages.values() for side in v.get("runs", v) if side in SIDES}
    return [side for side in SIDES if side in present]


def summarise(stages: dict) -> dict:
    """Table 2's derived rows from one request's stages, per side: first-packet latency (the sum of the rows;
    preprocessing = our processor time on both sides, as HF's could not be run on the same inputs) and RTF.
    "flagged" lists the flagged stages each row is built from: a row built on one is not a measurement either."""
    first_rows = ("processor", "thinker_ttft", "talker_ttft", "mtp", "code2wav_chunked")
    rtf_rows = ("thinker_token", "talker_token", "mtp", "code2wav_chunked")
    out = {}
    for side in sides_of(stages):
        pick = {k: side if v.get(side) is not None else "omni_ref" for k, v in stages.items()}
        s = {k: stages[k][p] for k, p in pick.items()}
        bad = {k for k, p in pick.items() if stages[k].get("flag", {}).get(p)}
        out[side] = {
            "first_packet_s": latency.first_packet(*(s[k] for k in first_rows)),
            "rtf": latency.real_time_factor(*(s[k] for k in rtf_rows)),
            "thinker_tok_s": 1 / s["thinker_token"], "talker_tok_s": 1 / s["talker_token"],
            "flagged": sorted(bad & set(first_rows + rtf_rows))}
    return out


def figures(stages: dict, prompt_tokens: int) -> dict:
    """Per side, the figures a reader asks for, from the stages (None where a side did not run a stage):
    processor_s, encoders_s, Thinker prefill tokens/s (prompt tokens / TTFT, encoders included) and decode
    tokens/s, Talker+MTP frames/s, Code2Wav real-time factor (decode time per 80 ms frame), first_audio_s,
    total_s, and "flagged": the flagged stages among those they are built from."""
    def value(name, side):
        return stages[name].get(side) if name in stages else None

    def inverse(x, times=1.0):
        return None if x is None or x <= 0 else times / x

    out = {}
    for side in sides_of(stages):
        encoders = [value(k, side) for k in ("audio_encoder", "vision_encoder") if k in stages]
        c2w = value("code2wav_chunked", side)
        used = ("processor", "audio_encoder", "vision_encoder", "thinker_ttft", "thinker_token", "talker_step",
                "code2wav_chunked", "first_audio", "total")
        out[side] = {
            "processor_s": value("processor", side),
            "encoders_s": None if None in encoders else sum(encoders),
            "thinker_prefill_tok_s": inverse(value("thinker_ttft", side), prompt_tokens),
            "thinker_decode_tok_s": inverse(value("thinker_token", side)),
            "talker_mtp_frames_s": inverse(value("talker_step", side)),
            "code2wav_rtf": None if c2w is None else c2w / FRAME_S,
            "first_audio_s": value("first_audio", side), "total_s": value("total", side),
            "flagged": sorted(k for k in used if k in stages and stages[k]["flag"].get(side))}
    return out


def targets(stages: dict) -> dict:
    """The speed targets (TARGETS) of one request: {target: {"measures", "ratio", "limit", "met", "flagged"}}.
    A ratio built on a flagged figure is not met, whatever its value: it is no measurement. Targets whose
    stages were not measured are left out."""
    pairs = {"thinker_prefill": ("thinker_ttft", False), "thinker_decode": ("thinker_token", False),
             "talker_mtp_frames_per_s": ("talker_step", True), "first_audio": ("first_audio", False)}
    out = {}
    for name, (stage_name, inverted) in pairs.items():
        v = stages.get(stage_name)
        if v is None or not v.get("omni_ref") or not v.get("hf"):
            continue
        ratio = v["hf"] / v["omni_ref"] if inverted else v["omni_ref"] / v["hf"]
        measures, kind, limit = TARGETS[name]
        bad = [side for side in ("omni_ref", "hf") if v["flag"].get(side)]
        within = ratio >= limit if kind == "min" else ratio <= limit
        out[name] = {"measures": measures, "ratio": ratio, "limit": f"{'>=' if kind == 'min' else '<='} {limit}",
                     "met": bool(within and not bad), "flagged": bad}
    return out


def all_targets(results: dict) -> dict:
    """The targets over every request: per target the worst ratio, and met only if it is met in every one."""
    out = {}
    for r in results.values():
        for name, t in r.get("targets", {}).items():
            kind = TARGETS[name][1]
            seen = out.setdefault(name, {**t, "requests": {}})
            seen["requests"][r.get("name", len(seen["requests"]))] = t["ratio"]
            worse = t["ratio"] < seen["ratio"] if kind == "min" else t["ratio"] > seen["ratio"]
            seen["ratio"] = t["ratio"] if worse else seen["ratio"]
            seen["met"] = seen["met"] and t["met"]
            seen["flagged"] = sorted(set(seen["flagged"]) | set(t["flagged"]))
    return out


def ratios(stages: dict) -> dict:
    """omni_ref time / HF time per stage (< 1: omni_ref is faster); stages HF cannot run are left out."""
    return {k: v["omni_ref"] / v["hf"] for k, v in stages.items() if v.get("hf") and v.get("omni_ref")}


def environment() -> dict:
    """Hardware, versions and the load average, for the JSON and for the notebook's ignored-output cell."""
    def git_commit():
        try:
            return subprocess.run(["git", "rev-parse", "HEAD"], cwd=presets.REPO_DIR, capture_output=True,
                                  text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = None
    try:
        load = list(os.getloadavg())             # 1, 5, 15 minutes: other work sharing the cores
    except OSError:
        load = None
    return {"hardware": {"platform": platform.platform(), "machine": platform.machine(),
                         "processor": platform.processor(), "cpu_count": os.cpu_count(),
                         "torch_threads": torch.get_num_threads(), "total_ram_bytes": ram, "load_average": load},
            "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                         "transformers": importlib.metadata.version("transformers"), "omni_ref_commit": git_commit()}}


def memory(model, twin) -> dict:
    """Peak resident memory of this process (every model loaded) and each side's parameter bytes."""
    def nbytes(m):
        return sum(p.numel() * p.element_size() for p in m.parameters())
    return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,   # Linux reports KiB
            "omni_ref_param_bytes": nbytes(model), "hf_param_bytes": nbytes(twin)}


def load_memory() -> dict | None:
    """omni_ref.tools.load_memory.measure_load_memory() (each load's own peak memory, measured in a fresh
    process) where that module exists, else None."""
    if importlib.util.find_spec("omni_ref.tools.load_memory") is None:
        return None
    return importlib.import_module("omni_ref.tools.load_memory").measure_load_memory()


@torch_state_kept()   # run seeds torch and makes it deterministic for itself only
def run(preset: str = "demo", repeats: int = 3, names=None, flush_denormal: bool = True, eager: bool = True,
        answer_frames: int | None = 60, with_load_memory: bool = True, **sizes) -> dict:
    """The whole benchmark as a dict (what `make bench` writes). names: which of demo.sample_chats() to run
    (None: all; "hear" is the speech-input chat, the kind of input of the report's Table 2 audio column).
    eager: also measure both eager columns. answer_frames: the length of the spoken answer that first_audio and
    total time (None: leave those two stages out). with_load_memory: add the `load_memory` block (load_memory).

    flush_denormal: flush subnormal floats to zero for the run (torch.set_flush_denormal; reset after it).
    Subnormal arithmetic takes a slow microcode path on x86 CPUs; once, on a busy machine, both sides' Thinker
    prefill ran ~100x slower in one process and the flush cured it, though the slowdown did not come back
    later without it. It changes no result the bench checks (the parity lines run under the same setting on
    both sides) and the JSON records it; --keep-denormals measures without it."""
    from .. import hf
    from ..checkpoint import load
    from ..processor import Processor
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: need at least 1 timed run per stage")
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_flush_denormal(flush_denormal)
    load_before = environment()["hardware"]["load_average"]
    try:
        ckpt = presets.cached_checkpoint(preset)
        model = load(ckpt, attn_implementation="sdpa", experts_implementation="grouped_mm")
        twin = hf.load_hf(ckpt, attn_implementation="sdpa")                 # HF's default path
        twin_eager = hf.load_hf(ckpt, attn_implementation="eager", experts_implementation="eager") if eager \
            else None
        processor = Processor.from_pretrained(ckpt)
        results = {}
        for name, messages in sample_chats().items():
            if names is None or name in names:
                r = measure_request(model, twin, processor, messages, repeats, answer_frames=answer_frames,
                                    twin_eager=twin_eager, eager=eager, **sizes)
                results[name] = {**r, "ratios": ratios(r["stages"]), "table_2": summarise(r["stages"]),
                                 "figures": figures(r["stages"], r["prompt_tokens"]),
                                 "targets": targets(r["stages"])}
    finally:
        torch.set_flush_denormal(False)
    report = {**environment(), "settings": {
        "preset": preset, "repeats": repeats, "dtype": "float32", "device": "cpu", "warmup": 1,
        "max_spread": MAX_SPREAD, "columns": {
            "omni_ref": "attn_implementation=sdpa, experts_implementation=grouped_mm",
            "omni_ref_eager": "attn_implementation=eager, experts_implementation=eager" if eager else None,
            "hf": "attn_implementation=sdpa, experts_implementation default (grouped_mm)",
            "hf_eager": "attn_implementation=eager, experts_implementation=eager" if eager else None},
        "statistic": "median over runs (per-step stages: of each run's median step) after 1 warm-up, the columns "
                     "taking turns run by run; spread = (max - min) / median",
        "flush_denormal": flush_denormal, "answer_frames": answer_frames,
        **request_sizes(sizes)}, "results": results,
        "targets": all_targets({k: {**v, "name": k} for k, v in results.items()}),
        "memory": memory(model, twin)}
    report["hardware"]["load_average_before"] = load_before
    lm = load_memory() if with_load_memory else None
    if lm is not None:
        report["load_memory"] = lm
    return report


def request_sizes(sizes: dict) -> dict:
    """The sizes each request was measured with (thinker_tokens, talker_steps, codec_frames): measure_request's
    defaults, updated by the ones given."""
    defaults = inspect.signature(measure_request).parameters
    return {name: sizes.get(name, defaults[name].default) for name in ("thinker_tokens", "talker_steps",
                                                                       "codec_frames")}


def _ms(x) -> str:
    return f"{1000 * x:9.2f} ms"


def report_lines(report: dict) -> list[str]:
    """What `make bench` prints: per request and stage, each side's median and spread, the ratio, the flags;
    the figures and the targets."""
    lines = []
    for name, r in report["results"].items():
        repeats = report["settings"]["repeats"]
        sides = sides_of(r["stages"])
        lines.append(f"{name}: median of {repeats} runs (spread = (max - min) / median); ratio = omni_ref / hf, "
                     f"< 1: omni_ref faster" + ("" if repeats >= 3 else "; fewer than 3 runs: the spread says "
                                                                         "little"))
        lines.append(f"  {'stage':17s} " + "   ".join(f"{side:>24s}" for side in sides))
        for stage_name, v in r["stages"].items():
            cells = []
            for side in sides:
                if v.get(side) is None:
                    cells.append(f"{'n/a':>24s}")
                else:
                    mark = "!" if v["flag"][side] else " "
                    cells.append(f"{_ms(v[side])} ±{v['spread'][side]:5.0%}{mark}".rjust(24))
            ratio = f"{r['ratios'][stage_name]:6.2f}" if stage_name in r.get("ratios", {}) else "   n/a"
            lines.append(f"  {stage_name:17s} {'   '.join(cells)}   ratio {ratio}")
        for side, t in r.get("table_2", {}).items():
            mark = f"  FLAGGED (built on {', '.join(t['flagged'])})" if t["flagged"] else ""
            lines.append(f"  {side:14s} first packet {1000 * t['first_packet_s']:8.1f} ms   RTF {t['rtf']:.2f}{mark}")
        for side, f in r.get("figures", {}).items():
            def show(key, fmt):
                return "n/a" if f[key] is None else format(f[key], fmt)
            lines.append(f"  {side:14s} prefill {show('thinker_prefill_tok_s', '.0f')} tok/s, decode "
                         f"{show('thinker_decode_tok_s', '.1f')} tok/s, Talker+MTP "
                         f"{show('talker_mtp_frames_s', '.1f')} frames/s, Code2Wav RTF {show('code2wav_rtf', '.3f')}"
                         f", first audio {show('first_audio_s', '.3f')} s, total {show('total_s', '.3f')} s")
        for target, t in r.get("targets", {}).items():
            lines.append(f"  target {target:24s} {t['ratio']:6.2f} (limit {t['limit']}): "
                         f"{'met' if t['met'] else 'NOT met'}" + (f", flagged {t['flagged']}" if t["flagged"] else ""))
        for stage_name, side, why in flagged(r["stages"]):
            lines.append(f"  flagged: {stage_name} ({side}): {why}")
        lines.append(f"  parity: {r['parity']}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/", help="folder for bench_<preset>.json")
    ap.add_argument("--preset", default="demo", choices=["tiny", "demo"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", nargs="+", default=None, choices=sorted(sample_chats()),
                    help="which sample chats of make demo to measure (default: all)")
    ap.add_argument("--no-eager", action="store_true", help="leave out the omni_ref_eager and hf_eager columns")
    ap.add_argument("--answer-frames", type=int, default=60,
                    help="frames of the spoken answer first_audio and total time (0: leave them out)")
    ap.add_argument("--no-load-memory", action="store_true",
                    help="leave out the load_memory block (a ~1 GB checkpoint loaded in fresh processes)")
    ap.add_argument("--keep-denormals", action="store_true", help="do not flush subnormal floats (see run)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats {args.repeats}: need at least 1 timed run per stage")
    if args.answer_frames < 0:
        ap.error(f"--answer-frames {args.answer_frames}: a number of frames, >= 1 (0: leave the stages out)")
    t0 = time.perf_counter()
    report = run(args.preset, args.repeats, args.requests, flush_denormal=not args.keep_denormals,
                 eager=not args.no_eager, answer_frames=args.answer_frames or None,
                 with_load_memory=not args.no_load_memory)
    report["settings"]["wall_s"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_{args.preset}.json"
    path.write_text(json.dumps(report, indent=1))
    print("\n".join(report_lines(report)))
    for target, t in report["targets"].items():
        print(f"target {target}: worst ratio {t['ratio']:.2f} (limit {t['limit']}): {'met' if t['met'] else 'NOT met'}")
    print(f"wrote {path} in {report['settings']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
