"""`make bench`: per-stage latencies of omni_ref AND Hugging Face, measured in one run on the same inputs.

    python -m omni_ref.tools.bench --out bench/ [--preset demo] [--repeats 3]

On the demo preset (CPU, fp32, the thread count fixed by OMP_NUM_THREADS), for each sample chat of `make demo`
(demo.sample_chats()), the stages of the report's Table 2 (Qwen3-Omni Technical Report, arXiv 2509.17765,
section 6 / Table 2), each measured in `repeats` runs after one warm-up run:

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
    code2wav_stream    StreamingCode2Wav fed one frame at a time (omni_ref only), per frame

Every per-step figure is read off timestamps taken while one generate call runs (StepClock: a forward pre-hook
on the decoder, and a wrapper around the code predictor's generate), the same way on both sides, so it is never
the difference of two separate runs (under load such a difference once came out at -1949.7 ms per token). Per
run, a per-step stage takes the median over that run's steps; the stage's figure is the median over the runs,
and its spread is (max - min) / median over the runs. A figure that is negative, or whose spread is over 50 %,
is flagged (stages.<stage>.flag.<side>): it is not a measurement to quote or plot as one.

From these, first-packet latency and real-time factor exactly as the report defines them (latency.first_packet,
latency.real_time_factor). The JSON holds the hardware, versions, settings, every figure with its runs and
spread, and the ratios omni_ref / HF: results.<request>.stages.<stage>.{omni_ref, hf, spread, runs, flag}.
The same functions (measure_request, summarise, environment) are what notebook 07 calls; stage_timeline, the
same clocks around one whole speech generate call, gives notebook 00 its stage timings. Timing is noisy: quote
ratios from one run, not absolute times across machines.
"""
from __future__ import annotations

import argparse
import importlib.metadata
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
from ..sampling import SamplingOptions
from ..streaming import measure_streaming
from ..talker import suppressed_ids, talker_generate
from .scoped import torch_state_kept

SIDES = ("omni_ref", "hf")
MAX_SPREAD = 0.5          # a figure whose runs differ by more than half their median is flagged


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


def clocked_runs(clock: StepClock, fn, figures, repeats: int, warmup: int = 1):
    """({figure: [one value per run]}, {figure: [per-step seconds of the last run]}, the last result): each
    run's per-step figures reduced to their median."""
    out, runs, last = None, {}, {}
    for r in range(warmup + repeats):
        out = clock.run(fn)
        if r >= warmup:
            last = figures(clock)
            for name, values in last.items():
                runs.setdefault(name, []).append(statistics.median(values))
    return runs, last, out


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


def stage(ours: list[float], theirs: list[float] | None = None, per: int = 1) -> dict:
    """One stage of the JSON from each side's runs, in seconds (divided by `per`: frames per call)."""
    runs = {"omni_ref": [t / per for t in ours], "hf": None if theirs is None else [t / per for t in theirs]}
    return {**{side: None if r is None else statistics.median(r) for side, r in runs.items()},
            "spread": {side: None if r is None else spread(r) for side, r in runs.items()},
            "runs": runs, "flag": {side: flag(r) for side, r in runs.items()}}


def flagged(stages: dict) -> list[tuple[str, str, str]]:
    """(stage, side, reason) for every flagged figure of a request's stages."""
    return [(name, side, why) for name, v in stages.items() for side, why in v.get("flag", {}).items() if why]


# ---- one request ---------------------------------------------------------------------------------------------

def measure_request(model, twin, processor, messages, repeats: int = 3, thinker_tokens: int = 8,
                    talker_steps: int = 8, codec_frames: int = 50) -> dict:
    """Every stage of one chat on both sides: {"stages": {stage: stage(...)}, "parity": {...},
    "prompt_tokens": n, "steps": {"thinker" | "talker": {side: {figure: per-step seconds of the last run}}}}.
    twin: hf.load_hf of the same checkpoint. HF's notices are silenced for the call (hf.quiet)."""
    from .. import hf
    with hf.quiet(), torch.no_grad():
        return _measure_request(model, twin, processor, messages, repeats, thinker_tokens, talker_steps,
                                codec_frames)


def _measure_request(model, twin, processor, messages, repeats, thinker_tokens, talker_steps, codec_frames):
    cfg = model.config
    eos = cfg.im_end_token_id
    stages, parity, steps = {}, {}, {"thinker": {}, "talker": {}}

    def both(name, ours, theirs, per=1):
        t_ours, r_ours = timed_runs(ours, repeats)
        t_hf, r_hf = timed_runs(theirs, repeats) if theirs is not None else (None, None)
        stages[name] = stage(t_ours, t_hf, per)
        return r_ours, r_hf

    def clocked(part, figures, sides):
        """Clocked runs of each side's generate; their figures become stages, the last run's steps are kept."""
        runs, outs = {}, {}
        for side, (decoder, inner, fn) in sides.items():
            runs[side], steps[part][side], outs[side] = clocked_runs(StepClock(decoder, inner), fn, figures, repeats)
        for name in runs["omni_ref"]:
            stages[name] = stage(runs["omni_ref"][name], runs["hf"][name])
        return outs

    inputs, _ = both("processor", lambda: processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, fps=2.0), None)
    media = {k: v for k, v in inputs.items() if k != "input_ids"}
    th, hth = model.thinker, twin.thinker
    if "input_features" in inputs:
        feats, mask = inputs["input_features"], inputs["feature_attention_mask"]
        a, b = both("audio_encoder", lambda: th.audio_tower(*pack_padded_features(feats, mask)),
                    lambda: hth.get_audio_features(feats, mask).last_hidden_state)
        parity["audio_encoder_max_abs"] = float((a - b).abs().max())
    pixels = [(inputs[p], inputs[g], getattr(hth, f"get_{kind}_features")) for kind, p, g in (
        ("image", "pixel_values", "image_grid_thw"), ("video", "pixel_values_videos", "video_grid_thw")) if p in inputs]
    if pixels:      # HF's get_*_features split the merged tokens per image / video: joined again for the diff
        a, b = both("vision_encoder", lambda: [th.visual(p, g).tokens for p, g, _ in pixels],
                    lambda: [torch.cat(get(p, g).pooler_output) for p, g, get in pixels])
        parity["vision_encoder_max_abs"] = max(float((x - y).abs().max()) for x, y in zip(a, b))

    # The Thinker: each run is one generate of `thinker_tokens` tokens; its clock gives the TTFT and every step.
    out = clocked("thinker", thinker_figures, {
        "omni_ref": (th, None, lambda: thinker_generate(th, inputs["input_ids"], max_new_tokens=thinker_tokens,
                                                        eos_token_id=eos, **media)),
        "hf": (hth, None, lambda: hth.generate(**inputs, max_new_tokens=thinker_tokens, do_sample=False,
                                               eos_token_id=eos))})
    parity["thinker_tokens_equal"] = bool(torch.equal(out["omni_ref"], out["hf"]))

    # The speech path once on each side (untimed): our Speech object and HF's captured Talker call give each
    # side its own Talker prompt, and their codes must agree.
    from .. import hf
    opts = dict(thinker_max_new_tokens=max(thinker_tokens, 2), thinker_eos_token_id=eos,
                talker_max_new_tokens=talker_steps, talker_do_sample=False)
    speech = generate_speech(model, inputs["input_ids"], "Ethan", **opts, **media)
    seen = hf.hf_speech(twin, **inputs, speaker="Ethan", **opts, thinker_do_sample=False)
    parity["codes_equal"] = bool(torch.equal(speech.talker.codes, seen["codes"]))
    parity["wav_max_abs"] = float((speech.wav - seen["wav"].reshape(speech.wav.shape)).abs().max())

    # The Talker: each run is `talker_steps` steps with no eos on either side (HF: min_new_tokens), so every run
    # has the same steps; the clock times each step and each MTP call inside it.
    kc = cfg.talker_config
    greedy = SamplingOptions(False, 0.9, 50, 1.0, 1.05)
    tk, htk = model.talker, twin.talker
    clocked("talker", talker_figures, {
        "omni_ref": (tk, tk.code_predictor, lambda: talker_generate(
            tk, speech.prompt, speech.positions, talker_steps, greedy, eos_token_id=None,
            suppress_tokens=suppressed_ids(kc))),
        "hf": (htk, htk.code_predictor, lambda: htk.generate(
            **{**seen["talker_kwargs"], "max_new_tokens": talker_steps, "min_new_tokens": talker_steps}))})

    # The MTP on one made-up frame, untimed: the same residual codes on both sides.
    cp, hcp = tk.code_predictor, htk.code_predictor
    hidden = torch.randn(1, 1, kc.text_config.hidden_size, generator=torch.Generator().manual_seed(0))
    code0 = tk.model.codec_embedding(torch.zeros(1, 1, dtype=torch.long))                 # (1, 1, H)
    a = cp.generate(hidden, code0, residual_sampling(False)).codes
    b = hcp.generate(inputs_embeds=torch.cat([hidden, code0], dim=1), do_sample=False,
                     max_new_tokens=kc.num_code_groups - 1, return_dict_in_generate=True).sequences
    parity["mtp_codes_equal"] = bool(torch.equal(a, b))

    codes = torch.randint(cfg.code2wav_config.codebook_size, (1, cfg.code2wav_config.num_quantizers, codec_frames),
                          generator=torch.Generator().manual_seed(0))
    a, b = both("code2wav_chunked", lambda: model.code2wav.chunked_decode(codes, 300, 25),
                lambda: twin.code2wav.chunked_decode(codes, chunk_size=300, left_context_size=25), per=codec_frames)
    parity["code2wav_max_abs"] = float((a - b).abs().max())
    stream = [measure_streaming(model.code2wav, codes, [codec_frames // 5], 25, 5)[0]["decode_s"]
              for _ in range(repeats)]
    stages["code2wav_stream"] = stage(stream, None, per=codec_frames)
    return {"stages": stages, "parity": parity, "prompt_tokens": int(inputs["input_ids"].shape[1]), "steps": steps}


def summarise(stages: dict) -> dict:
    """Table 2's derived rows from one request's stages, per side: first-packet latency (the sum of the rows;
    preprocessing = our processor time on both sides, as HF's could not be run on the same inputs) and RTF.
    "flagged" lists the flagged stages each row is built from: a row built on one is not a measurement either."""
    first_rows = ("processor", "thinker_ttft", "talker_ttft", "mtp", "code2wav_chunked")
    rtf_rows = ("thinker_token", "talker_token", "mtp", "code2wav_chunked")
    out = {}
    for side in SIDES:
        pick = {k: side if v[side] is not None else "omni_ref" for k, v in stages.items()}
        s = {k: stages[k][p] for k, p in pick.items()}
        bad = {k for k, p in pick.items() if stages[k].get("flag", {}).get(p)}
        out[side] = {
            "first_packet_s": latency.first_packet(*(s[k] for k in first_rows)),
            "rtf": latency.real_time_factor(*(s[k] for k in rtf_rows)),
            "thinker_tok_s": 1 / s["thinker_token"], "talker_tok_s": 1 / s["talker_token"],
            "flagged": sorted(bad & set(first_rows + rtf_rows))}
    return out


def ratios(stages: dict) -> dict:
    """omni_ref time / HF time per stage (< 1: omni_ref is faster); stages HF cannot run are left out."""
    return {k: v["omni_ref"] / v["hf"] for k, v in stages.items() if v["hf"]}


def environment() -> dict:
    """Hardware and versions, for the JSON and for the notebook's ignored-output cell."""
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
    return {"hardware": {"platform": platform.platform(), "machine": platform.machine(),
                         "processor": platform.processor(), "cpu_count": os.cpu_count(),
                         "torch_threads": torch.get_num_threads(), "total_ram_bytes": ram},
            "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                         "transformers": importlib.metadata.version("transformers"), "omni_ref_commit": git_commit()}}


def memory(model, twin) -> dict:
    """Peak resident memory of this process (both models loaded) and each side's parameter bytes."""
    def nbytes(m):
        return sum(p.numel() * p.element_size() for p in m.parameters())
    return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,   # Linux reports KiB
            "omni_ref_param_bytes": nbytes(model), "hf_param_bytes": nbytes(twin)}


@torch_state_kept()   # run seeds torch and makes it deterministic for itself only
def run(preset: str = "demo", repeats: int = 3, names=None, flush_denormal: bool = True, **sizes) -> dict:
    """The whole benchmark as a dict (what `make bench` writes). names: which of demo.sample_chats() to run
    (None: all; "hear" is the speech-input chat, the kind of input of the report's Table 2 audio column).

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
    try:
        ckpt = presets.cached_checkpoint(preset)
        model, twin, processor = load(ckpt), hf.load_hf(ckpt), Processor.from_pretrained(ckpt)
        results = {}
        for name, messages in sample_chats().items():
            if names is None or name in names:
                r = measure_request(model, twin, processor, messages, repeats, **sizes)
                results[name] = {**r, "ratios": ratios(r["stages"]), "table_2": summarise(r["stages"])}
    finally:
        torch.set_flush_denormal(False)
    return {**environment(), "settings": {"preset": preset, "repeats": repeats, "dtype": "float32",
                                          "device": "cpu", "warmup": 1, "max_spread": MAX_SPREAD,
                                          "statistic": "median over runs (per-step stages: of each run's median "
                                                       "step) after 1 warm-up; spread = (max - min) / median",
                                          "flush_denormal": flush_denormal, **sizes},
            "results": results, "memory": memory(model, twin)}


def report_lines(report: dict) -> list[str]:
    """What `make bench` prints: per request and stage, each side's median and spread, the ratio, the flags."""
    lines = []
    for name, r in report["results"].items():
        repeats = report["settings"]["repeats"]
        lines.append(f"{name}: median of {repeats} runs (spread = (max - min) / median); omni_ref / HF < 1: "
                     f"omni_ref faster" + ("" if repeats >= 3 else "; fewer than 3 runs: the spread says little"))
        for stage_name, v in r["stages"].items():
            cells = []
            for side in SIDES:
                if v[side] is None:
                    cells.append(f"{side} {'n/a':>18s}")
                else:
                    mark = " FLAGGED" if v["flag"][side] else ""
                    cells.append(f"{side} {1000 * v[side]:9.2f} ms ±{v['spread'][side]:4.0%}{mark}")
            ratio = f"{r['ratios'][stage_name]:6.2f}" if stage_name in r["ratios"] else "   n/a"
            lines.append(f"  {stage_name:17s} {'   '.join(cells)}   ratio {ratio}")
        for side, t in r["table_2"].items():
            mark = f"  FLAGGED (built on {', '.join(t['flagged'])})" if t["flagged"] else ""
            lines.append(f"  {side:8s} first packet {1000 * t['first_packet_s']:8.1f} ms   RTF {t['rtf']:.2f}{mark}")
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
    ap.add_argument("--keep-denormals", action="store_true", help="do not flush subnormal floats (see run)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats {args.repeats}: need at least 1 timed run per stage")
    t0 = time.perf_counter()
    report = run(args.preset, args.repeats, args.requests, flush_denormal=not args.keep_denormals)
    report["settings"]["wall_s"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_{args.preset}.json"
    path.write_text(json.dumps(report, indent=1))
    print("\n".join(report_lines(report)))
    print(f"wrote {path} in {report['settings']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
