"""`make bench`: per-stage latencies of omni_ref AND Hugging Face, measured in one run on the same inputs.

    python -m omni_ref.tools.bench --out bench/ [--preset demo] [--repeats 3]

On the demo preset (CPU, fp32, the thread count fixed by OMP_NUM_THREADS), for each sample chat of `make demo`
(demo.requests()), the stages of the report's Table 2 (Qwen3-Omni Technical Report, arXiv 2509.17765,
section 6 / Table 2), each timed as the median of `repeats` runs after one warm-up run:

    processor          chat template, log-mel, patches (omni_ref only: HF cannot read the sample video folder)
    audio / vision     the encoders alone (AuT; the vision tower on the image and video pixels)
    thinker_ttft       Thinker prefill with its encoders, up to the first token (generate, 1 new token)
    thinker_token      one decode step: (time of n tokens - time of 1) / (n - 1)
    talker_ttft        the Talker's prompt prefill up to the first codebook-0 code (its prompt comes from the
                       Thinker, built once beforehand on each side)
    talker_step        one Talker step with its MTP, by the same difference;  talker_token = talker_step - mtp
    mtp                the code predictor completing one frame (15 residual codes)
    code2wav_chunked   chunked_decode (300-frame chunks, 25 of context) per frame
    code2wav_stream    StreamingCode2Wav fed one frame at a time (omni_ref only), per frame

From these, first-packet latency and real-time factor exactly as the report defines them (latency.first_packet,
latency.real_time_factor). The JSON holds the hardware, versions, settings, every median and the ratios
omni_ref / HF. The same functions (measure_request, summarise, environment) are what notebook 07 calls.
Timing is noisy: quote ratios from one run, not absolute times across machines.
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
from .demo import requests
from ..generate import generate_speech, thinker_generate
from ..sampling import SamplingOptions
from ..streaming import measure_streaming
from ..talker import suppressed_ids, talker_generate
from .scoped import torch_state_kept


def timed(fn, repeats: int = 3, warmup: int = 1):
    """(median seconds over `repeats` calls after `warmup` untimed ones, the last call's result)."""
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _per_step(t_many: float, t_one: float, steps: int) -> float:
    """Time of one more step, from a run of `steps` steps and a run of one (which also paid the prefill)."""
    return (t_many - t_one) / max(steps - 1, 1)


@torch.no_grad()
def measure_request(model, twin, processor, messages, repeats: int = 3, thinker_tokens: int = 8,
                    talker_steps: int = 8, codec_frames: int = 50) -> dict:
    """Median seconds per stage for one chat, {stage: {"omni_ref": s, "hf": s or None}}, plus the parity of the
    two sides on it: {"stages": ..., "parity": {...}, "prompt_tokens": n}. twin: hf.load_hf of the same checkpoint."""
    cfg = model.config
    eos = cfg.im_end_token_id
    stages, parity = {}, {}

    def both(name, ours, theirs):
        t_ours, r_ours = timed(ours, repeats)
        t_hf, r_hf = timed(theirs, repeats) if theirs is not None else (None, None)
        stages[name] = {"omni_ref": t_ours, "hf": t_hf}
        return r_ours, r_hf

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

    def ours_gen(n):
        return lambda: thinker_generate(th, inputs["input_ids"], max_new_tokens=n, eos_token_id=eos, **media)

    def hf_gen(n):
        return lambda: hth.generate(**inputs, max_new_tokens=n, do_sample=False, eos_token_id=eos)
    both("thinker_ttft", ours_gen(1), hf_gen(1))
    t_ours, ids = timed(ours_gen(thinker_tokens), repeats)
    t_hf, hf_ids = timed(hf_gen(thinker_tokens), repeats)
    n_new = ids.shape[1] - inputs["input_ids"].shape[1]
    stages["thinker_token"] = {"omni_ref": _per_step(t_ours, stages["thinker_ttft"]["omni_ref"], n_new),
                               "hf": _per_step(t_hf, stages["thinker_ttft"]["hf"], n_new)}
    parity["thinker_tokens_equal"] = bool(torch.equal(ids, hf_ids))

    # The speech path once on each side (untimed): our Speech object and HF's captured Talker call give each
    # side its own Talker prompt, and their codes must agree.
    from .. import hf
    opts = dict(thinker_max_new_tokens=max(thinker_tokens, 2), thinker_eos_token_id=eos,
                talker_max_new_tokens=talker_steps, talker_do_sample=False)
    speech = generate_speech(model, inputs["input_ids"], "Ethan", **opts, **media)
    seen = hf.hf_speech(twin, **inputs, speaker="Ethan", **{k: v for k, v in opts.items()}, thinker_do_sample=False)
    parity["codes_equal"] = bool(torch.equal(speech.talker.codes, seen["codes"]))
    parity["wav_max_abs"] = float((speech.wav - seen["wav"].reshape(speech.wav.shape)).abs().max())

    kc = cfg.talker_config
    greedy = SamplingOptions(False, 0.9, 50, 1.0, 1.05)

    def ours_talk(n):
        return lambda: talker_generate(model.talker, speech.prompt, speech.positions, n, greedy,
                                       eos_token_id=None, suppress_tokens=suppressed_ids(kc))

    def hf_talk(n):      # no eos: every run makes exactly n steps on both sides
        return lambda: twin.talker.generate(**{**seen["talker_kwargs"], "max_new_tokens": n, "min_new_tokens": n})
    both("talker_ttft", ours_talk(1), hf_talk(1))
    t_ours, got = timed(ours_talk(talker_steps), repeats)
    t_hf, _ = timed(hf_talk(talker_steps), repeats)
    steps = got.sequences.shape[1]
    step = {"omni_ref": _per_step(t_ours, stages["talker_ttft"]["omni_ref"], steps),
            "hf": _per_step(t_hf, stages["talker_ttft"]["hf"], steps)}

    cp, hcp = model.talker.code_predictor, twin.talker.code_predictor
    hidden = torch.randn(1, 1, kc.text_config.hidden_size, generator=torch.Generator().manual_seed(0))
    code0 = model.talker.model.codec_embedding(torch.zeros(1, 1, dtype=torch.long))          # (1, 1, H)
    a, b = both("mtp", lambda: cp.generate(hidden, code0, residual_sampling(False)).codes,
                lambda: hcp.generate(inputs_embeds=torch.cat([hidden, code0], dim=1), do_sample=False,
                                     max_new_tokens=kc.num_code_groups - 1, return_dict_in_generate=True).sequences)
    parity["mtp_codes_equal"] = bool(torch.equal(a, b))
    stages["talker_step"] = step
    stages["talker_token"] = {k: step[k] - stages["mtp"][k] for k in step}

    codes = torch.randint(cfg.code2wav_config.codebook_size, (1, cfg.code2wav_config.num_quantizers, codec_frames),
                          generator=torch.Generator().manual_seed(0))
    a, b = both("code2wav_chunked", lambda: model.code2wav.chunked_decode(codes, 300, 25),
                lambda: twin.code2wav.chunked_decode(codes, chunk_size=300, left_context_size=25))
    parity["code2wav_max_abs"] = float((a - b).abs().max())
    for side in ("omni_ref", "hf"):
        stages["code2wav_chunked"][side] /= codec_frames
    stream = min(measure_streaming(model.code2wav, codes, [codec_frames // 5], 25, 5)[0]["decode_s"]
                 for _ in range(repeats))
    stages["code2wav_stream"] = {"omni_ref": stream / codec_frames, "hf": None}
    return {"stages": stages, "parity": parity, "prompt_tokens": int(inputs["input_ids"].shape[1])}


def summarise(stages: dict) -> dict:
    """Table 2's derived rows from one request's stages, per side: first-packet latency (the sum of the rows;
    preprocessing = our processor time on both sides, as HF's could not be run on the same inputs) and RTF."""
    out = {}
    for side in ("omni_ref", "hf"):
        s = {k: (v[side] if v[side] is not None else v["omni_ref"]) for k, v in stages.items()}
        out[side] = {
            "first_packet_s": latency.first_packet(s["processor"], s["thinker_ttft"], s["talker_ttft"], s["mtp"],
                                                   s["code2wav_chunked"]),
            "rtf": latency.real_time_factor(s["thinker_token"], s["talker_token"], s["mtp"], s["code2wav_chunked"]),
            "thinker_tok_s": 1 / s["thinker_token"], "talker_tok_s": 1 / s["talker_token"]}
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
    """The whole benchmark as a dict (what `make bench` writes). names: which of demo.requests() to run
    (None: all; "hear" is the speech-input chat, the kind of input of the report's Table 2 audio column).

    flush_denormal: flush subnormal floats to zero for the run (torch.set_flush_denormal; reset after it).
    Subnormal arithmetic takes a slow microcode path on x86 CPUs; once, on a busy machine, both sides' Thinker
    prefill ran ~100x slower in one process and the flush cured it, though the slowdown did not come back
    later without it. It changes no result the bench checks (the parity lines run under the same setting on
    both sides) and the JSON records it; --keep-denormals measures without it."""
    from .. import hf
    from ..checkpoint import load
    from ..processor import Processor
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_flush_denormal(flush_denormal)
    try:
        ckpt = presets.cached_checkpoint(preset)
        model, twin, processor = load(ckpt), hf.load_hf(ckpt), Processor.from_pretrained(ckpt)
        results = {}
        for name, messages in requests().items():
            if names is None or name in names:
                r = measure_request(model, twin, processor, messages, repeats, **sizes)
                results[name] = {**r, "ratios": ratios(r["stages"]), "table_2": summarise(r["stages"])}
    finally:
        torch.set_flush_denormal(False)
    return {**environment(), "settings": {"preset": preset, "repeats": repeats, "dtype": "float32",
                                          "device": "cpu", "statistic": "median after 1 warm-up",
                                          "flush_denormal": flush_denormal, **sizes},
            "results": results, "memory": memory(model, twin)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/", help="folder for bench_<preset>.json")
    ap.add_argument("--preset", default="demo", choices=["tiny", "demo"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", nargs="+", default=None, choices=sorted(requests()),
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
    for name, r in report["results"].items():
        print(f"{name}: omni_ref / HF time per stage (< 1: omni_ref faster)")
        for stage, ratio in r["ratios"].items():
            print(f"  {stage:18s} {ratio:6.2f}")
        print(f"  parity: {r['parity']}")
    print(f"wrote {path} in {report['settings']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
