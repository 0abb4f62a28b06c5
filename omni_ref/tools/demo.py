"""`make demo`: the main job end to end on the sample inputs, with stage timings and parity.

    checkpoint   write the random-weight demo checkpoint (first run only) and load it
    processor    two chats: one with the sample image and video, one with the sample speech clip
                 -> token ids, patches, log-mel
    thinker      greedy decoding of each answer's text
    talker       codec codes for each answer, and Code2Wav -> 24 kHz wavs in out/demo_<request>.wav
    streaming    the three run interleaved (model.stream): the wav is written chunk by chunk while
                 the Thinker is still writing; the time to the first audio chunk is printed next to
                 HF's time to its audio (HF's generate returns audio only at its end)
    parity       the same checkpoint and inputs through HF transformers: equal tokens, wav within
                 1e-5

(Two chats, not one: HF (5.23, 5.24) cannot speak an answer to a turn that mixes audio with an image or
video, its Talker crashes on it, so there would be nothing to compare with.)

The weights are random (written from a seed), so the text is gibberish and the wav is noise: what
the demo shows is the whole pipeline running, where its time goes, and that it is the same
computation as HF's.
"""
from __future__ import annotations

import argparse
import os
import time

import soundfile as sf
import torch

from .. import presets
from . import latency
from ..checkpoint import load
from ..code2wav import SAMPLE_RATE
from ..processor import Processor

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


def sample_chats() -> dict[str, list]:
    """The sample chats of the demo (and of `make bench`): name -> messages."""
    system = {"role": "system",
              "content": [{"type": "text", "text": "You are a helpful assistant."}]}
    return {
        "see": [system, {"role": "user", "content": [
            {"type": "image", "image": str(DATA / "image.png")},
            {"type": "video", "video": str(DATA / "video")},
            {"type": "text", "text": "What do you see in the picture and in the video?"}]}],
        "hear": [system, {"role": "user", "content": [
            {"type": "audio", "audio": str(DATA / "speech.wav")},
            {"type": "text", "text": "Answer what you hear, out loud."}]}],
    }


def _generate(model, inputs, args, eos: int):
    """Text only: the Thinker's ids (1, T + n)."""
    return model.generate(**inputs, return_audio=False, thinker_max_new_tokens=args.max_new_tokens,
                          thinker_do_sample=False, thinker_eos_token_id=eos)


def _stream(model, inputs, args, eos: int, path):
    """Speech, streamed: each audio chunk is appended to the wav file at `path` as it arrives.
    Returns (text ids (1, T + n), wav (1, 1, samples), seconds to the first audio chunk, chunks)."""
    text, audio, first = [inputs["input_ids"][0]], [], None
    with sf.SoundFile(path, "w", samplerate=SAMPLE_RATE, channels=1) as wav_file:
        for event in model.stream(**inputs, speaker="Ethan", thinker_do_sample=False,
                                  thinker_max_new_tokens=args.max_new_tokens,
                                  thinker_eos_token_id=eos, talker_do_sample=False,
                                  talker_max_new_tokens=args.codec_frames,
                                  audio_chunk_frames=args.audio_chunk_frames):
            if event.kind == "text":
                text.append(event.ids)
                continue
            if first is None:
                first = event.time_s
            wav_file.write(event.wav.numpy())
            audio.append(event.wav)
    return torch.cat(text)[None], torch.cat(audio)[None, None], first, len(audio)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo", choices=["tiny", "demo"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--codec-frames", type=int, default=25, help="Talker steps (80 ms of audio "
                                                                 "each)")
    ap.add_argument("--audio-chunk-frames", type=int, default=4,
                    help="frames Code2Wav decodes at once while streaming")
    ap.add_argument("--no-speech", action="store_true", help="text only (no Talker / Code2Wav)")
    ap.add_argument("--no-parity", action="store_true", help="skip the HF twin")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    print(f"omni-ref demo: preset {args.preset!r}, seed {args.seed}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")

    st = Stages()
    ckpt = st.run("checkpoint: write (first run only) or reuse",
                  lambda: presets.cached_checkpoint(args.preset, args.seed))
    model = st.run("omni_ref.load (fp32)", lambda: load(ckpt))
    processor = st.run("Processor.from_pretrained", lambda: Processor.from_pretrained(ckpt))
    twin = None
    if not args.no_parity:
        from .. import hf    # the only place transformers is imported
        twin = st.run("HF from_pretrained (fp32, eager)", lambda: hf.load_hf(ckpt))
    eos = model.config.im_end_token_id
    cfg = model.config.thinker_config
    problems, ours_s, hf_s, firsts = [], 0.0, 0.0, []
    for name, msgs in sample_chats().items():
        print(f"\n-- request {name!r}")
        inputs = st.run(f"{name}: processor", lambda: processor.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=True, return_dict=True, fps=2.0))
        ids = inputs["input_ids"][0]
        counts = {k: int((ids == getattr(cfg, f"{k}_token_id")).sum())
                  for k in ("audio", "image", "video")}
        parts = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        print(f"             prompt: {ids.numel()} tokens, of which {parts}")
        wav, first = None, None
        if args.no_speech:
            text_ids = st.run(f"{name}: omni_ref generate (text only)",
                              lambda: _generate(model, inputs, args, eos))
            ours_s += st.seconds[f"{name}: omni_ref generate (text only)"]
        else:
            OUT.mkdir(exist_ok=True)
            text_ids, wav, first, chunks = st.run(
                f"{name}: omni_ref stream (text and audio as they are made)",
                lambda: _stream(model, inputs, args, eos, OUT / f"demo_{name}.wav"))
            ours_s += st.seconds[f"{name}: omni_ref stream (text and audio as they are made)"]
        answer = processor.decode(text_ids[0, ids.numel():].tolist())
        n_new = text_ids.shape[1] - ids.numel()
        print(f"             answer ({n_new} tokens, random weights): {answer[:80]!r}")
        if wav is not None:
            print(f"             speech: {wav.shape[-1] / SAMPLE_RATE:.2f} s at 24 kHz in {chunks} "
                  f"chunks, written as they came -> out/demo_{name}.wav")
            total = st.seconds[f"{name}: omni_ref stream (text and audio as they are made)"]
            print(f"             first audio chunk after {first * 1000:.1f} ms of the request's "
                  f"{total * 1000:.1f} ms")
        if twin is not None:
            label = f"{name}: HF generate, same options"
            with torch.no_grad():
                hf_ids, hf_wav = st.run(label, lambda: _hf_generate(twin, inputs, wav is not None,
                                                                    args, eos))
            hf_s += st.seconds[label]
            if wav is not None:
                firsts.append((name, first, st.seconds[label]))
                print(f"             time to first audio: {first * 1000:.1f} ms streamed, "
                      f"{st.seconds[label] * 1000:.1f} ms HF (generate returns its audio at "
                      f"the end)")
            if not torch.equal(hf_ids, text_ids):
                problems.append(f"{name}: text tokens differ")
            if wav is not None and (hf_wav.shape != wav.shape
                                    or (hf_wav - wav).abs().max() > 1e-5):
                problems.append(f"{name}: waveforms differ")
    _table(f"{args.preset} model (random weights)", latency.module_sizes(model))

    verdict = "skipped (--no-parity)"
    if twin is not None:
        what = "same text tokens" + ("" if args.no_speech else " and waveforms within 1e-5")
        if problems:
            verdict = "FAIL: " + "; ".join(problems)
        else:
            verdict = f"PASS: {what} in every request"
        what_ran = "generate" if args.no_speech else "stream"
        print(f"speed: omni_ref's {what_ran} took {ours_s / hf_s:.2f}x HF's generate time (one run "
              "each, same machine)")
        for name, first, hf_total in firsts:
            print(f"time to first audio ({name}): {first * 1000:.1f} ms streamed vs "
                  f"{hf_total * 1000:.1f} ms HF generate ({first / hf_total:.2f}x)")
    print(f"parity verdict: {verdict}")
    return 0 if not verdict.startswith("FAIL") else 1


def _hf_generate(twin, inputs, speech: bool, args, eos: int):
    opts = dict(thinker_max_new_tokens=args.max_new_tokens, thinker_do_sample=False,
                thinker_eos_token_id=eos)
    if not speech:
        return twin.generate(**inputs, return_audio=False, **opts), None
    out = twin.generate(**inputs, return_audio=True, speaker="Ethan",
                        talker_max_new_tokens=args.codec_frames, talker_do_sample=False, **opts)
    return out[0], out[1]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
