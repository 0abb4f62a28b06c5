"""`make demo`: the main job, end to end on the sample inputs, with stage timings and a parity verdict.

    checkpoint   write the random-weight demo checkpoint (first run only) and load it
    processor    a chat with the sample speech clip, image and video -> token ids, log-mel, patches
    thinker      greedy decoding of the answer text
    talker       codec codes for the answer, and Code2Wav -> a 24 kHz wav in out/demo.wav
    parity       the same checkpoint and inputs through HF transformers: equal tokens (and codes), wav within 1e-5

The weights are random (written from a seed), so the text is gibberish and the wav is noise: what the demo shows
is the whole pipeline running, where its time goes, and that it is the same computation as HF's.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from . import latency, presets
from .checkpoint import load
from .processor import Processor

DATA = presets.REPO_DIR / "data"
OUT = presets.REPO_DIR / "out"


class Stages:
    """Runs named stages, printing one line each with its wall time."""

    def __init__(self):
        self.seconds = {}

    def run(self, name, fn):
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] = time.perf_counter() - t0
        print(f"[{self.seconds[name] * 1000:9.1f} ms] {name}")
        return out


def _table(title, rows):
    print(f"\n{title}")
    print(f"  {'module':24s} {'total':>16s} {'active/token':>16s}")
    for r in rows:
        print(f"  {r.name:24s} {r.total:16,d} {r.active:16,d}")
    print(f"  {'all':24s} {sum(r.total for r in rows):16,d}\n")


def messages():
    return [
        {"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
        {"role": "user", "content": [
            {"type": "audio", "audio": str(DATA / "speech.wav")},
            {"type": "image", "image": str(DATA / "image.png")},
            {"type": "video", "video": str(DATA / "video")},
            {"type": "text", "text": "What do you hear, and what do you see?"}]},
    ]


def _generate(model, inputs, speech: bool, args, eos: int):
    """Text ids, or (text ids, wav) when speech is on; None for the wav where the Talker is not built yet."""
    opts = dict(thinker_max_new_tokens=args.max_new_tokens, thinker_do_sample=False, thinker_eos_token_id=eos)
    if not speech:
        return model.generate(**inputs, return_audio=False, **opts), None
    try:
        return model.generate(**inputs, return_audio=True, speaker="Ethan", talker_max_new_tokens=args.codec_frames,
                              talker_do_sample=False, **opts)
    except NotImplementedError as e:      # the Talker is still being built: say so, keep the text path
        print(f"             speech skipped: {e}")
        return model.generate(**inputs, return_audio=False, **opts), None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo", choices=["tiny", "demo"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--codec-frames", type=int, default=25, help="Talker steps (80 ms of audio each)")
    ap.add_argument("--no-speech", action="store_true", help="text only (no Talker / Code2Wav)")
    ap.add_argument("--no-parity", action="store_true", help="skip the HF twin")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    print(f"omni-ref demo: preset {args.preset!r}, seed {args.seed}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")

    st = Stages()
    ckpt = st.run("checkpoint: write (first run only) or reuse", lambda: presets.cached_checkpoint(args.preset, args.seed))
    model = st.run("omni_ref.load (fp32)", lambda: load(ckpt))
    processor = st.run("Processor.from_pretrained", lambda: Processor.from_pretrained(ckpt))
    inputs = st.run("processor: chat with speech + image + video -> tensors", lambda: processor.apply_chat_template(
        messages(), add_generation_prompt=True, tokenize=True, return_dict=True, fps=2.0))
    ids = inputs["input_ids"][0]
    cfg = model.config.thinker_config
    print(f"             prompt: {ids.numel()} tokens = {int((ids == cfg.audio_token_id).sum())} audio + "
          f"{int((ids == cfg.image_token_id).sum())} image + {int((ids == cfg.video_token_id).sum())} video + "
          f"{int(((ids != cfg.audio_token_id) & (ids != cfg.image_token_id) & (ids != cfg.video_token_id)).sum())}"
          f" text/marks")

    eos = model.config.im_end_token_id
    with torch.no_grad():
        text_ids, wav = st.run("omni_ref generate", lambda: _generate(model, inputs, not args.no_speech, args, eos))
    answer = processor.decode(text_ids[0, ids.numel():].tolist())
    print(f"             answer ({text_ids.shape[1] - ids.numel()} tokens, random weights): {answer[:100]!r}")
    if wav is not None:
        import soundfile as sf
        OUT.mkdir(exist_ok=True)
        samples = wav.reshape(-1).float().numpy()
        sf.write(OUT / "demo.wav", samples, 24000)
        print(f"             wav: {samples.size} samples = {samples.size / 24000:.2f} s at 24 kHz -> out/demo.wav")
    _table(f"{args.preset} model (random weights)", latency.module_sizes(model))

    verdict = "skipped (--no-parity)"
    if not args.no_parity:
        from . import hf    # the only place transformers is imported
        twin = st.run("HF from_pretrained (fp32, eager)", lambda: hf.load_hf(ckpt))
        with torch.no_grad():
            hf_ids, hf_wav = st.run("HF generate, same options",
                                    lambda: _hf_generate(twin, inputs, wav is not None, args, eos))
        problems = []
        if not torch.equal(hf_ids, text_ids):
            problems.append("text tokens differ")
        if wav is not None:
            n = min(hf_wav.shape[-1], wav.shape[-1])
            if hf_wav.shape[-1] != wav.shape[-1] or (hf_wav[..., :n] - wav[..., :n]).abs().max() > 1e-5:
                problems.append("waveforms differ")
        verdict = "PASS: same tokens" + (" and waveform within 1e-5" if wav is not None else "") \
            if not problems else "FAIL: " + ", ".join(problems)
        ratio = st.seconds["omni_ref generate"] / st.seconds["HF generate, same options"]
        print(f"             speed: omni_ref generate took {ratio:.2f}x "
              f"HF's time (one run each, same machine)")
    print(f"\nparity verdict: {verdict}")
    return 0 if not verdict.startswith("FAIL") else 1


def _hf_generate(twin, inputs, speech: bool, args, eos: int):
    opts = dict(thinker_max_new_tokens=args.max_new_tokens, thinker_do_sample=False, thinker_eos_token_id=eos)
    if not speech:
        return twin.generate(**inputs, return_audio=False, **opts), None
    out = twin.generate(**inputs, return_audio=True, speaker="Ethan", talker_max_new_tokens=args.codec_frames,
                        talker_do_sample=False, **opts)
    return out[0], out[1]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
