"""Fuzz harness (issue 14): hundreds of generated bad inputs to the processor, the config reader and the loader.

Every case must end one of two ways:
  - accepted, with output equal to HF's on the same input (the processor: HF's Qwen3OmniMoeProcessor; the config
    reader: HF's config classes read the same values; the loader: the tensors the files hold, which is what HF
    loads), or, where HF refuses the input, not accepted by us either;
  - refused with one of our own error classes (ConfigError, CheckpointError, ProcessorError), whose message names
    the input (the file, the field, the shard, the sample index).
Any other exception, an accepted input that HF refuses or reads differently, or a case that runs longer than
CASE_SECONDS, is a failure. The cases are drawn from a seeded generator: every run tries the same ones. The counts
by category are printed (pytest -s) and are part of the assertion message.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import struct
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import omni_ref
from omni_ref import hf, presets
from omni_ref.checkpoint import CheckpointError, _weight_map, checkpoint_slots, save
from omni_ref.config import ConfigError, OmniConfig
from omni_ref.model import Qwen3Omni
from omni_ref.processor import Processor, ProcessorError

OUR_ERRORS = (ConfigError, CheckpointError, ProcessorError)
CASE_SECONDS = 10          # a case that takes longer is a hang
SEED = 14
AUDIO = "<|audio_start|><|audio_pad|><|audio_end|>"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


class Mismatch(AssertionError):
    """We accepted an input and our output differs from HF's (or HF refuses what we accepted)."""


class Hang(BaseException):
    """A case ran past CASE_SECONDS (raised from the alarm handler; BaseException so no except clause eats it)."""


class Tally:
    """Counts by category and the failures, with one line of summary."""

    def __init__(self):
        self.tried, self.accepted, self.refused, self.seconds = Counter(), Counter(), Counter(), Counter()
        self.failures: list[str] = []
        self.slowest = (0.0, "")

    def run(self, category: str, name: str, case, must_name=()):
        """case(): returns when accepted (having compared with HF), or raises. must_name: strings the message of a
        refusal must contain (the input's name: file, field, shard, index); a tuple in it: any one of those."""
        self.tried[category] += 1
        t0 = time.perf_counter()
        alarm = hasattr(signal, "setitimer")
        if alarm:
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
        try:
            case()
            self.accepted[category] += 1
        except OUR_ERRORS as e:
            self.refused[category] += 1
            missing = [s for s in must_name if not any(str(x) in str(e) for x in (s if isinstance(s, tuple) else [s]))]
            if missing:
                self.failures.append(f"{category} / {name}: message does not name {missing}: {str(e)[:300]}")
        except Mismatch as e:
            self.failures.append(f"{category} / {name}: {str(e)[:400]}")
        except Hang:
            self.failures.append(f"{category} / {name}: still running after {CASE_SECONDS} s")
        except Exception as e:   # noqa: BLE001 -- exactly what the harness is looking for
            self.failures.append(f"{category} / {name}: {type(e).__module__}.{type(e).__name__}: {str(e)[:300]}")
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - t0
        self.seconds[category] += elapsed
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, f"{category} / {name}")

    def summary(self) -> str:
        lines = [f"{sum(self.tried.values())} cases, {sum(self.accepted.values())} accepted (equal to HF), "
                 f"{sum(self.refused.values())} refused with our errors, {len(self.failures)} failures; slowest "
                 f"{self.slowest[0]:.2f} s ({self.slowest[1]})"]
        for cat in sorted(self.tried):
            lines.append(f"  {cat:28s} tried {self.tried[cat]:4d}  accepted {self.accepted[cat]:4d}  "
                         f"refused {self.refused[cat]:4d}  {self.seconds[cat]:5.1f} s")
        return "\n".join(lines)


def _on_alarm(signum, frame):
    raise Hang()


# ------------------------------------------------------------------------------------------------- comparisons
def same_outputs(a: dict, b) -> None:
    """Our processor output against HF's: same keys in the same order, integers equal, floats within 1e-5."""
    if list(a) != list(b):
        raise Mismatch(f"keys differ: ours {list(a)}, HF {list(b)}")
    for key in a:
        x, y = a[key], b[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            raise Mismatch(f"{key}: ours {tuple(x.shape)} {x.dtype}, HF {tuple(y.shape)} {y.dtype}")
        if x.is_floating_point():
            if not torch.equal(x, y) and not torch.allclose(x, y, atol=1e-5, rtol=0):
                raise Mismatch(f"{key}: max |diff| {(x - y).abs().max().item():.3g}")
        elif not torch.equal(x, y):
            raise Mismatch(f"{key}: values differ")


def hf_side(fn):
    """HF's result on an input we accepted; HF refusing it is a mismatch (we should have refused it too)."""
    try:
        with hf.quiet():
            return fn()
    except Exception as e:   # noqa: BLE001
        raise Mismatch(f"we accept it but HF refuses: {type(e).__name__}: {str(e)[:200]}") from None


# ================================================================================================== processor
def processor_cases(t: Tally, ours: Processor, theirs, tmp: Path, rng: np.random.Generator):
    def chat(parts):
        return [{"role": "user", "content": parts}]

    def via_chat(messages, hf_messages=None, **kw):
        """apply_chat_template on both sides (prompt text, then tensors)."""
        def case():
            a = ours.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, **kw)
            text = ours.apply_chat_template(messages, add_generation_prompt=True)
            hm = hf_messages if hf_messages is not None else messages
            their_text = hf_side(lambda: theirs.apply_chat_template(hm, add_generation_prompt=True))
            if text != their_text:
                raise Mismatch(f"prompt differs: ours {text[:80]!r}, HF {their_text[:80]!r}")
            hkw = {k: v for k, v in kw.items() if k != "processor_kwargs"}
            same_outputs(a, hf_side(lambda: theirs.apply_chat_template(
                hm, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
                processor_kwargs={"padding": True, **kw.get("processor_kwargs", {})}, **hkw)))
        return case

    def via_call(text, hf_kwargs=None, **kw):
        """Processor.__call__ on both sides; hf_kwargs replace ours on HF's side where it spells them differently."""
        def case():
            a = ours(text=text, **kw)
            same_outputs(a, hf_side(lambda: theirs(text=text, return_tensors="pt", padding=True,
                                                   **(kw if hf_kwargs is None else hf_kwargs))))
        return case

    wave = (0.3 * np.sin(np.arange(3200) / 7.0)).astype(np.float32)

    # ---- shapes: audio, image and video arrays of every rank and layout
    for shape in [(3200,), (1, 3200), (3200, 1), (2, 3200), (3200, 2), (3, 1600), (1600, 6), (), (0,), (0, 2),
                  (10, 10, 10), (64, 64), (1, 1), (5, 400), (400, 5), (1, 1, 3200)]:
        a = rng.uniform(-0.5, 0.5, shape).astype(np.float32)
        t.run("processor/shapes", f"audio {shape}", via_chat(chat([{"type": "audio", "audio": a}])), ["audio"])
    for shape in [(32, 48, 3), (32, 48), (32, 48, 4), (32, 48, 1), (3, 32, 48), (1, 32, 48, 3), (48,), (),
                  (32, 48, 2), (0, 48, 3), (32, 0, 3), (16, 16, 3), (2, 2, 3), (40, 40, 3, 1), (4, 32, 48, 3)]:
        im = rng.integers(0, 256, shape, dtype=np.uint8)
        t.run("processor/shapes", f"image {shape}", via_chat(chat([{"type": "image", "image": im}])), ["image"])
    for shape in [(4, 32, 48, 3), (3, 32, 48, 3), (1, 32, 48, 3), (0, 32, 48, 3), (4, 32, 48), (4, 32, 48, 4),
                  (4, 3, 32, 48), (32, 48, 3), (2, 4, 32, 48, 3), (4, 8, 8, 3), (5, 40, 24, 3)]:
        v = rng.integers(0, 256, shape, dtype=np.uint8)
        t.run("processor/shapes", f"video {shape}", via_call(VIDEO, videos=[v]), ["video"])

    # ---- dtypes
    for dtype in [np.float16, np.float32, np.float64, np.int16, np.int32, np.uint8, np.bool_, np.complex64,
                  object, np.str_, np.longdouble]:
        a = rng.uniform(-0.5, 0.5, 3200).astype(dtype)
        t.run("processor/dtypes", f"audio {np.dtype(dtype)}", via_chat(chat([{"type": "audio", "audio": a}])),
              ["audio"])
    for dtype in [np.uint8, np.float32, np.float64, np.int64, np.int32, np.uint16, np.bool_, np.int8, object]:
        im = rng.integers(0, 256, (32, 48, 3)).astype(dtype)
        t.run("processor/dtypes", f"image {np.dtype(dtype)}", via_chat(chat([{"type": "image", "image": im}])),
              ["image"])
        v = rng.integers(0, 256, (2, 32, 48, 3)).astype(dtype)
        t.run("processor/dtypes", f"video {np.dtype(dtype)}", via_call(VIDEO, videos=[v]), ["video"])
    # forms we take and HF does not (a list of samples, a torch tensor): HF gets the same samples as numpy
    for name, value in [("list of floats", wave.tolist()), ("list of ints", [1, 2, 3] * 100),
                        ("list of str", ["a"] * 300), ("torch float32", torch.from_numpy(wave)),
                        ("torch float64", torch.from_numpy(wave.astype(np.float64))),
                        ("torch int16", torch.zeros(3200, dtype=torch.int16)), ("dict", {"array": wave}),
                        ("int", 5), ("float", 0.5), ("bytes", b"\x00" * 400)]:
        as_numpy = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value) \
            if isinstance(value, list) else value
        t.run("processor/dtypes", f"audio as {name}", via_chat(chat([{"type": "audio", "audio": value}]),
                                                               chat([{"type": "audio", "audio": as_numpy}])),
              ["audio"])

    # ---- rates
    messages = chat([{"type": "audio", "audio": wave}, {"type": "text", "text": "?"}])
    for rate in [16000, 16000.0, 8000, 22050, 44100, 48000, 15999, 0, -16000, "16000", True, 1e9, float("nan")]:
        t.run("processor/rates", f"apply_chat_template sampling_rate={rate!r}",
              via_chat(messages, sampling_rate=rate), ["16000", "Hz"])
        t.run("processor/rates", f"__call__ sampling_rate={rate!r}",
              via_call(AUDIO, audio=[wave], sampling_rate=rate), ["16000", "Hz"])
    for rate in [8000, 22050, 44100, 16000]:
        path = tmp / f"sound_{rate}.wav"
        sf.write(path, wave, rate)
        hf_messages = chat([{"type": "audio", "audio": sf.read(path, dtype="float32")[0]}])
        t.run("processor/rates", f"wav file at {rate} Hz",
              via_chat(chat([{"type": "audio", "audio": str(path)}]), hf_messages), [str(path), "Hz"])
    frames = rng.integers(0, 256, (8, 32, 48, 3), dtype=np.uint8)
    pairs = [(fps, video_fps) for fps in [0.5, 2, 8, 0, -1, float("nan"), float("inf"), "2", True, None]
             for video_fps in [4, 4.0, 1, 0, -4, "4", None, float("nan")]]
    for fps, video_fps in [pairs[i] for i in sorted(rng.choice(len(pairs), 30, replace=False))]:
        meta = [{"fps": video_fps, "total_num_frames": 8}]
        sample = fps is not None
        t.run("processor/rates", f"video fps={fps!r} from {video_fps!r}",
              via_call(VIDEO, videos=[frames], fps=fps, do_sample_frames=sample, video_metadata=meta),
              ["fps"])

    # ---- lengths (and values) of sounds
    lengths = [0, 1, 2, 50, 159, 160, 161, 199, 200, 201, 202, 320, 399, 400, 401, 1599, 1600, 1601, 16000, 16001]
    lengths += sorted(rng.integers(1, 40000, 16).tolist())
    for n in lengths:
        a = rng.uniform(-0.5, 0.5, n).astype(np.float32)
        t.run("processor/lengths", f"audio of {n} samples", via_chat(chat([{"type": "audio", "audio": a}])),
              ["audio", "201"] if 0 < n <= 200 else ["audio"])
    for n, m in [(100, 16000), (16000, 100), (201, 201), (201, 48000), (200, 200), (3000, 7)]:
        pair = [rng.uniform(-0.5, 0.5, n).astype(np.float32), rng.uniform(-0.5, 0.5, m).astype(np.float32)]
        t.run("processor/lengths", f"two sounds of {n} and {m} samples",
              via_call(AUDIO + AUDIO, audio=pair), ["audio"])
    for kind, value in [("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)]:
        for where in [0, 1, 777, 3199]:
            a = wave.copy()
            a[where] = value
            t.run("processor/lengths", f"{kind} at sample {where}", via_chat(chat([{"type": "audio", "audio": a}])),
                  ["audio", f"index {where}"])
        path = tmp / f"bad_{kind}.wav"
        a = wave.copy()
        a[1234] = value
        sf.write(path, a, 16000, subtype="FLOAT")
        t.run("processor/lengths", f"wav file with {kind}", via_chat(chat([{"type": "audio", "audio": str(path)}])),
              [str(path), "index 1234"])
    for name, a in [("silence", np.zeros(3200, np.float32)), ("loud", wave * 1e4), ("tiny values", wave * 1e-30),
                    ("subnormal", np.full(3200, 1e-40, np.float32)), ("constant 1", np.ones(3200, np.float32))]:
        t.run("processor/lengths", f"audio {name}", via_chat(chat([{"type": "audio", "audio": a}])), ["audio"])

    # ---- images: sizes, aspect ratios, PIL modes, files
    for h, w in [(1, 1), (15, 15), (16, 15), (15, 16), (16, 16), (17, 33), (31, 32), (32, 32), (16, 3200),
                 (16, 3201), (3201, 16), (3300, 16), (100, 7), *rng.integers(16, 400, (10, 2)).tolist()]:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        t.run("processor/images", f"image {w}x{h}", via_chat(chat([{"type": "image", "image": im}])), ["image"])
    base = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    for mode in ["RGB", "L", "LA", "RGBA", "P", "PA", "CMYK", "1", "I", "F", "I;16", "YCbCr", "HSV", "LAB"]:
        try:
            im = Image.fromarray(base).convert(mode)
        except ValueError:
            im = Image.fromarray(base[..., 0]).convert(mode)
        t.run("processor/images", f"PIL image mode {mode}", via_chat(chat([{"type": "image", "image": im}])),
              ["image"])
    png = tmp / "ok.png"
    Image.fromarray(base).save(png)
    raw = png.read_bytes()
    for name, data in [("empty file", b""), ("truncated png", raw[: len(raw) // 2]), ("text", b"not an image"),
                       ("png header only", raw[:16]), ("random bytes", rng.integers(0, 256, 500).astype(np.uint8).tobytes())]:
        path = tmp / f"{name.replace(' ', '_')}.png"
        path.write_bytes(data)
        t.run("processor/images", f"image file: {name}", via_chat(chat([{"type": "image", "image": str(path)}])),
              [str(path)])
    (tmp / "a_folder.png").mkdir(exist_ok=True)
    for name, value in [("a folder named .png", str(tmp / "a_folder.png")), ("missing file", str(tmp / "nope.png")),
                        ("url", "https://example.com/cat.png"), ("good file", str(png)),
                        ("path object", png), ("int", 7), ("None", None), ("list of images", [base, base])]:
        as_hf = str(value) if isinstance(value, Path) else value   # HF takes a path as a string only
        t.run("processor/images", f"image: {name}", via_chat(chat([{"type": "image", "image": value}]),
                                                             chat([{"type": "image", "image": as_hf}])), ["image"])

    # ---- frame folders: meta.json, frames, sound track
    clip = rng.integers(0, 256, (6, 48, 64, 3), dtype=np.uint8)
    sound = (0.2 * np.sin(np.arange(24000) / 5.0)).astype(np.float32)

    def folder(name, meta=None, meta_text=None, frames=clip, audio=True, frame_names=None):
        d = tmp / "videos" / name
        (d / "frames").mkdir(parents=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(d / "frames" / (frame_names[i] if frame_names else f"{i:04d}.png"))
        if audio:
            sf.write(d / "audio.wav", sound, 16000)
        if meta_text is not None:
            (d / "meta.json").write_text(meta_text)
        elif meta is not None:
            (d / "meta.json").write_text(json.dumps(meta))
        return d

    def folder_case(d, fps=None, with_sound=False):
        def case():
            kw = dict(fps=fps, do_sample_frames=fps is not None)
            a = ours(text=VIDEO if not with_sound else VIDEO, videos=[str(d)], use_audio_in_video=with_sound, **kw)
            video = omni_ref.processor.load_video(str(d), 16000)
            hkw = dict(videos=[video.frames], return_tensors="pt", **kw)
            if video.fps is not None:
                hkw["video_metadata"] = [{"total_num_frames": len(video.frames), "fps": video.fps}]
            if with_sound and video.audio is not None:
                hkw.update(audio=[video.audio], audio_from_video_indices=[0], load_audio_from_video=True)
            same_outputs(a, hf_side(lambda: theirs(text=VIDEO, **hkw)))
        return case

    outside = tmp / "outside.wav"
    sf.write(outside, sound, 16000)
    metas = [({"fps": 4}, None), ({"fps": 2.5}, None), ({"fps": 0}, "fps"), ({"fps": -3}, "fps"),
             ({"fps": "4"}, "fps"), ({"fps": None}, None), ({"fps": True}, "fps"), ({"fps": [4]}, "fps"),
             ({"fps": {"value": 4}}, "fps"), ({}, None), ({"fps": 4, "audio": "audio.wav"}, None),
             ({"fps": 4, "audio": "../../outside.wav"}, "audio"), ({"fps": 4, "audio": str(outside)}, "audio"),
             ({"fps": 4, "audio": 5}, "audio"), ({"fps": 4, "audio": ""}, "audio"),
             ({"fps": 4, "audio": "missing.wav"}, "audio"), ({"fps": 4, "audio": "frames/../audio.wav"}, "audio"),
             ({"fps": 1e-9}, None), ({"fps": 4, "unknown": [1, 2]}, None)]
    combos = [(None, False), (None, True), (2.0, False), (2.0, True)]
    for i, (meta, field) in enumerate(metas):
        for fps, with_sound in (combos[i % 4], combos[(i + 1) % 4]):
            d = folder(f"meta{i}_{fps}_{with_sound}", meta)
            t.run("processor/frame folders", f"meta {meta} fps={fps} sound={with_sound}",
                  folder_case(d, fps, with_sound), [str(d / "meta.json"), field] if field else ["video"])
    texts = [("not json", "{fps: 4}"), ("empty", ""), ("truncated", '{"fps": 4'), ("a list", "[4]"),
             ("a number", "4"), ("NaN fps", '{"fps": NaN}'), ("infinite fps", '{"fps": 1e999}'),
             ("binary", "\x00\x01\x02"), ("null", "null")]
    for name, text in texts:
        d = folder(f"text_{name.replace(' ', '_')}", meta_text=text)
        t.run("processor/frame folders", f"meta.json {name}", folder_case(d, None), [str(d / "meta.json")])
    odd = [("no frames", dict(frames=clip[:0])), ("one frame", dict(frames=clip[:1])),
           ("frames of two sizes", dict(frames=[clip[0], clip[1, :32]])),
           ("grey and colour frames", dict(frames=[clip[0], clip[1, ..., 0]])),
           ("jpg and png", dict(frame_names=["0.jpg", "1.png", "2.jpg", "3.png", "4.jpg", "5.png"])),
           ("no sound", dict(audio=False))]
    for name, kw in odd:
        d = folder(f"odd_{name.replace(' ', '_')}", {"fps": 4}, **kw)
        t.run("processor/frame folders", name, folder_case(d, None, True), ["video"])
    d = folder("corrupt_frame", {"fps": 4})
    (d / "frames" / "0002.png").write_bytes(b"broken")
    t.run("processor/frame folders", "a corrupt frame", folder_case(d), [str(d / "frames" / "0002.png")])
    d = folder("dir_frame", {"fps": 4})
    (d / "frames" / "9999.png").mkdir()
    t.run("processor/frame folders", "a folder named like a frame", folder_case(d), ["9999.png"])
    d = folder("stereo", {"fps": 4})
    sf.write(d / "audio.wav", np.stack([sound, sound], 1), 16000)
    t.run("processor/frame folders", "stereo sound track", folder_case(d, None, True), [str(d / "audio.wav")])
    d = folder("short_sound", {"fps": 4})
    sf.write(d / "audio.wav", sound[:150], 16000)
    t.run("processor/frame folders", "150-sample sound track", folder_case(d, None, True), ["audio 0", "201"])
    d = folder("sound_8k", {"fps": 4})
    sf.write(d / "audio.wav", sound, 8000)
    t.run("processor/frame folders", "8 kHz sound track", folder_case(d, None, True), [str(d / "audio.wav")])
    t.run("processor/frame folders", "a video file", via_call(VIDEO, videos=[str(png)]), [str(png)])

    # ---- message structures
    good = {"role": "user", "content": "hi"}
    structures = [
        ("None", None), ("empty list", []), ("a string", "hello"), ("a dict", good), ("batch with empty chat", [[]]),
        ("batch of one", [[good]]), ("batch of two", [[good], [{"role": "user", "content": "other"}]]),
        ("message without role", [{"content": "hi"}]), ("message without content", [{"role": "user"}]),
        ("role not a string", [{"role": 5, "content": "hi"}]), ("content int", [{"role": "user", "content": 5}]),
        ("content dict", [{"role": "user", "content": {"type": "text", "text": "hi"}}]),
        ("content list of strings", [{"role": "user", "content": ["hi", "there"]}]),
        ("content empty list", [{"role": "user", "content": []}]),
        ("content None", [{"role": "user", "content": None}]),
        ("text part with int", [{"role": "user", "content": [{"type": "text", "text": 5}]}]),
        ("text part without text", [{"role": "user", "content": [{"type": "text"}]}]),
        ("part type None", [{"role": "user", "content": [{"type": None}]}]),
        ("part type list", [{"role": "user", "content": [{"type": ["image"]}]}]),
        ("unknown part type", [{"role": "user", "content": [{"type": "pdf", "pdf": "x.pdf"}]}]),
        ("image part without image", [{"role": "user", "content": [{"type": "image"}]}]),
        ("audio part without audio", [{"role": "user", "content": [{"type": "audio"}]}]),
        ("video part without video", [{"role": "user", "content": [{"type": "video"}]}]),
        ("image url part", [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(png)}}]}]),
        ("system then user", [{"role": "system", "content": "Be brief."}, good]),
        ("system with parts", [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, good]),
        ("assistant turn", [good, {"role": "assistant", "content": "Hello."}, good]),
        ("tool role", [good, {"role": "tool", "content": "42"}]),
        ("unknown role", [{"role": "wizard", "content": "hi"}]),
        ("extra keys", [{"role": "user", "content": "hi", "name": "Ann", "id": 3}]),
        ("reasoning", [good, {"role": "assistant", "content": "A", "reasoning_content": "think"}]),
        ("message a list", [["user", "hi"]]), ("message a string", ["hi"]), ("nested too deep", [[[good]]]),
        ("mixed batch", [[good], good]), ("tuple of messages", (good,)),
        ("part not a dict", [{"role": "user", "content": [5]}]),
        ("very long text", [{"role": "user", "content": "word " * 3000}]),
        ("unicode text", [{"role": "user", "content": "héllo 你好 🙂 \x00 \u202e"}]),
        ("special tokens in text", [{"role": "user", "content": "<|im_end|><|image_pad|>"}]),
    ]
    for name, conversation in structures:
        t.run("processor/messages", name, via_chat(copy.deepcopy(conversation)), ["message"]
              if "part" in name or "message" in name else [])
    for i in range(40):   # random mixtures of parts
        parts = []
        for _ in range(rng.integers(1, 4)):
            kind = rng.choice(["text", "image", "audio", "bad", "empty"])
            if kind == "text":
                parts.append({"type": "text", "text": "x" * int(rng.integers(0, 20))})
            elif kind == "image":
                parts.append({"type": "image", "image": rng.integers(0, 256, (int(rng.integers(8, 64)),
                                                                          int(rng.integers(8, 64)), 3), dtype=np.uint8)})
            elif kind == "audio":
                parts.append({"type": "audio", "audio": rng.uniform(-0.5, 0.5, int(rng.integers(100, 4000)))
                              .astype(np.float32)})
            elif kind == "bad":
                parts.append({"type": str(rng.choice(["txt", "Image", "sound", ""]))})
            else:
                parts.append({})
        t.run("processor/messages", f"random parts {i}", via_chat(chat(parts)), [])


# ================================================================================================ config reader
HF_CLASSES = {"AudioEncoderConfig": "Qwen3OmniMoeAudioEncoderConfig", "VisionEncoderConfig":
              "Qwen3OmniMoeVisionEncoderConfig", "TextConfig": "Qwen3OmniMoeTextConfig",
              "TalkerTextConfig": "Qwen3OmniMoeTalkerTextConfig", "CodePredictorConfig":
              "Qwen3OmniMoeTalkerCodePredictorConfig", "Code2WavConfig": "Qwen3OmniMoeCode2WavConfig",
              "ThinkerConfig": "Qwen3OmniMoeThinkerConfig", "TalkerConfig": "Qwen3OmniMoeTalkerConfig"}
COMPONENT_OF = {"thinker_config": "thinker", "talker_config": "talker", "code2wav_config": "code2wav"}


def _leaves(d: dict, prefix=()):
    """(path, value) of every field that is not itself a sub-config."""
    for k, v in d.items():
        if isinstance(v, dict) and k.endswith("_config"):
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _at(d, path):
    for k in path:
        d = d[k]
    return d


def config_cases(t: Tally, tmp: Path, rng: np.random.Generator):
    import transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe as hf_configs
    tiny = presets.config_dict("tiny")
    counter = iter(range(10 ** 6))

    def read(d=None, text=None, field_path=None):
        """Write config.json, read it; if accepted, compare the touched field with HF's reading and build the
        component it belongs to on the meta device (an accepted config must build)."""
        def case():
            folder = tmp / f"cfg{next(counter)}"
            folder.mkdir()
            path = folder / "config.json"
            path.write_text(text if text is not None else json.dumps(d))
            cfg = OmniConfig.from_json_file(path)
            if field_path is None:
                return
            owner_path, name = field_path[:-1], field_path[-1]
            ours = cfg
            for k in owner_path:
                ours = getattr(ours, k)
            hf_name = HF_CLASSES.get(type(ours).__name__)
            if hf_name is not None:      # a leaf config: HF's class alone reads the same dictionary
                theirs = hf_side(lambda: getattr(hf_configs, hf_name)(**copy.deepcopy(_at(d, owner_path))))
            else:
                theirs = hf_side(lambda: hf.Qwen3OmniMoeConfig(**copy.deepcopy(d)))
                for k in owner_path:
                    theirs = getattr(theirs, k)
            mine = getattr(ours, ours.aliases.get(name, name)) if hasattr(ours, "aliases") else getattr(ours, name)
            if hasattr(theirs, name) or name in _at(d, owner_path):
                other = getattr(theirs, name, None)
                if _norm(mine) != _norm(other) and not (name == "rope_parameters" and _rope_agrees(mine, other)):
                    raise Mismatch(f"{'.'.join(field_path)}: ours {mine!r:.80}, HF {other!r:.80}")
            component = COMPONENT_OF.get(field_path[0])
            with torch.device("meta"):
                Qwen3Omni(cfg, (component,) if component else ("thinker", "talker", "code2wav"))
        return case

    leaves = list(_leaves(tiny))

    def some(items, k):
        return [items[i] for i in sorted(rng.choice(len(items), size=min(len(items), k), replace=False))]
    # ---- fields removed: both sides fall back to their defaults, which must agree
    for path, _ in some(leaves, 40):
        d = copy.deepcopy(tiny)
        del _at(d, path[:-1])[path[-1]]
        t.run("config/removed", ".".join(path), read(d, field_path=path), [path[-1], "config.json"])
    for sub in [("thinker_config", "audio_config"), ("thinker_config", "vision_config"), ("talker_config",),
                ("code2wav_config",), ("talker_config", "code_predictor_config")]:
        d = copy.deepcopy(tiny)
        del _at(d, sub[:-1])[sub[-1]]
        t.run("config/removed", "whole " + ".".join(sub), read(d), ["config.json"])

    # ---- fields retyped
    def retypes(value):
        if isinstance(value, bool):
            return [str(value).lower(), int(value), [value], None]
        if isinstance(value, int):
            return [str(value), value + 0.5, float(value), [value], {"value": value}, True, None]
        if isinstance(value, float):
            return [str(value), [value], True, None, {"v": value}]
        if isinstance(value, str):
            return [5, [value], None, True]
        if isinstance(value, list):
            return [value[0] if value else 1, ",".join(map(str, value)), [str(v) for v in value], {"0": value},
                    [[v] for v in value]]
        if isinstance(value, dict):
            return [[value], "text", 5, list(value.items())]
        return [1]
    for path, value, bad in some([(p, v, b) for p, v in leaves for b in retypes(v)], 150):
        d = copy.deepcopy(tiny)
        _at(d, path[:-1])[path[-1]] = bad
        t.run("config/retyped", f"{'.'.join(path)}={bad!r:.40}", read(d, field_path=path),
              [path[-1], "config.json"])
    for key, bad in [("rope_theta", "1e6"), ("rope_theta", [1e6]), ("mrope_section", [2, "2", 2]),
                     ("mrope_section", "2,2,2"), ("interleaved", "yes"), ("rope_type", 3)]:
        d = copy.deepcopy(tiny)
        d["thinker_config"]["text_config"]["rope_parameters"][key] = bad
        t.run("config/retyped", f"rope_parameters.{key}={bad!r}",
              read(d, field_path=("thinker_config", "text_config", "rope_parameters")), [key, "config.json"])

    # ---- fields out of range
    def out_of_range(name, value):
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return []
        if isinstance(value, int):
            return [0, -1, -value - 3, value * 2 + 1]
        if isinstance(value, float):
            return [0.0, -value, float("nan"), float("inf"), -float("inf"), 1.5]
        if isinstance(value, list):
            return [[], [-1] * max(len(value), 1), value + [10 ** 6]]
        return []
    for path, value, bad in some([(p, v, b) for p, v in leaves for b in out_of_range(p[-1], v)], 70):
        d = copy.deepcopy(tiny)
        _at(d, path[:-1])[path[-1]] = bad
        t.run("config/out of range", f"{'.'.join(path)}={bad!r:.40}", read(d, field_path=path),
              [path[-1], "config.json"])
    for name, bad in [("rope_theta", 0), ("rope_theta", -1.0), ("mrope_section", [-1, 4, 5]),
                      ("mrope_section", [8, 0, 0])]:
        d = copy.deepcopy(tiny)
        d["thinker_config"]["text_config"]["rope_parameters"][name] = bad
        t.run("config/out of range", f"rope_parameters.{name}={bad!r}",
              read(d, field_path=("thinker_config", "text_config", "rope_parameters")), [name, "config.json"])
    for bad in [{"ethan": -1}, {}, {"ethan": 10 ** 6}]:
        d = copy.deepcopy(tiny)
        d["talker_config"]["speaker_id"] = bad
        t.run("config/out of range", f"speaker_id={bad}", read(d, field_path=("talker_config", "speaker_id")),
              ["speaker_id", "config.json"])

    # ---- the file itself
    text = json.dumps(tiny)
    for name, bad in [("empty", ""), ("truncated", text[: len(text) // 2]), ("not json", "thinker_config = 1"),
                      ("a list", "[1, 2]"), ("null", "null"), ("a number", "3"), ("binary", "\x00\xff"),
                      ("wrong model_type", json.dumps({**tiny, "model_type": "llama"})),
                      ("sub-config a list", json.dumps({**tiny, "talker_config": [1]})),
                      ("sub-config a number", json.dumps({**tiny, "code2wav_config": 0})),
                      ("sub-config null", json.dumps({**tiny, "code2wav_config": None})),
                      ("unknown top key", json.dumps({**tiny, "thinker": {}}))]:
        t.run("config/file", name, read(text=bad), ["config.json"])


def _norm(x):
    if isinstance(x, tuple):
        return [_norm(v) for v in x]
    if isinstance(x, list):
        return [_norm(v) for v in x]
    if isinstance(x, dict):
        return {k: _norm(v) for k, v in x.items()}
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return x


def _rope_agrees(ours, theirs) -> bool:
    """HF fills in rope_parameters (rope_type, default theta): every key we hold must agree."""
    ours, theirs = ours or {}, theirs or {}
    return all(_norm(theirs.get(k)) == _norm(v) for k, v in ours.items())


# ======================================================================================================= loader
def loader_cases(t: Tally, tmp: Path, rng: np.random.Generator):
    src = presets.cached_checkpoint("tiny")
    # the Talker's and Code2Wav's tensors (the Thinker's are 70% of the bytes and add no kind of case)
    tensors = {k: v for k, v in load_file(os.path.join(src, "model.safetensors")).items()
               if not k.startswith("thinker.")}
    config_text = Path(src, "config.json").read_text()
    counter = iter(range(10 ** 6))
    talker_keys = sorted(k for k in tensors if k.startswith("talker."))

    def new_dir():
        d = tmp / f"ckpt{next(counter)}"
        d.mkdir()
        (d / "config.json").write_text(config_text)
        return d

    def loads(d, components=("talker",)):
        """Load; if accepted, every parameter must hold exactly the file's tensor (cast to float32)."""
        def case():
            try:
                model = omni_ref.load(d, components=components)
                weight_map = _weight_map(os.fspath(d))    # only the loaded components' shards need be readable
                for name, p in model.named_parameters():
                    for key, (e, _) in checkpoint_slots(name, p.shape).items():
                        with safe_open(os.path.join(d, weight_map[key]), "pt") as f:
                            stored = f.get_tensor(key)
                        if not torch.equal(p if e is None else p[e], stored.to(torch.float32)):
                            raise Mismatch(f"{key}: loaded values differ from the file's")
            finally:
                shutil.rmtree(d)
        return case

    def single(edit=None, raw_edit=None):
        d = new_dir()
        ts = dict(tensors)
        if edit:
            edit(ts)
        save_file(ts, d / "model.safetensors", metadata={"format": "pt"})
        if raw_edit:
            path = d / "model.safetensors"
            path.write_bytes(raw_edit(path.read_bytes()))
        return d

    # ---- headers and bytes of a single-file checkpoint
    raw = (lambda d: (d / "model.safetensors").read_bytes())(single())
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    cuts = [0, 1, 7, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 1, len(raw) // 2, len(raw) - 1]
    cuts += sorted(rng.integers(8 + n, len(raw), 4).tolist())
    for cut in cuts:
        t.run("loader/headers", f"truncated at byte {cut}", loads(single(raw_edit=lambda b, c=cut: b[:c])),
              ["model.safetensors"])
    for length in [0, 1, 7, n - 1, n + 1, len(raw), 2 ** 40, 2 ** 64 - 1]:
        t.run("loader/headers", f"header length {length}",
              loads(single(raw_edit=lambda b, x=length: struct.pack("<Q", x) + b[8:])), ["model.safetensors"])
    for i in range(12):
        positions = rng.integers(8, 8 + n, int(rng.integers(1, 4)))
        def flip(b, positions=positions):
            b = bytearray(b)
            for p in positions:
                b[p] = (b[p] + 1 + int(rng.integers(0, 254))) % 256
            return bytes(b)
        t.run("loader/headers", f"header bytes changed at {positions.tolist()}", loads(single(raw_edit=flip)),
              [("model.safetensors", "key(s): ")])   # the file, or the keys a changed name broke

    def with_header(change):
        def edit(b):
            h = copy.deepcopy(header)
            change(h)
            text = json.dumps(h).encode()
            text += b" " * (-len(text) % 8)
            return struct.pack("<Q", len(text)) + text + b[8 + n:]
        return edit
    key = talker_keys[3]
    offsets = header[key]["data_offsets"]
    for name, change in [
            ("dtype unknown", lambda h: h[key].update(dtype="Q9")), ("dtype I32", lambda h: h[key].update(dtype="I32")),
            ("dtype BOOL", lambda h: h[key].update(dtype="BOOL")), ("dtype F16 (size mismatch)", lambda h: h[key].update(dtype="F16")),
            ("offsets reversed", lambda h: h[key].update(data_offsets=offsets[::-1])),
            ("offsets past the end", lambda h: h[key].update(data_offsets=[offsets[0], len(raw) * 2])),
            ("offsets negative", lambda h: h[key].update(data_offsets=[-4, offsets[1]])),
            ("shape too big for the bytes", lambda h: h[key].update(shape=[s * 2 for s in h[key]["shape"]])),
            ("shape negative", lambda h: h[key].update(shape=[-1])), ("shape a string", lambda h: h[key].update(shape="3")),
            ("entry without dtype", lambda h: h[key].pop("dtype")), ("entry a list", lambda h: h.update({key: [1]})),
            ("metadata a list", lambda h: h.update({"__metadata__": [1]})),
            ("metadata non-string", lambda h: h.update({"__metadata__": {"format": 5}})),
            ("key removed from header", lambda h: h.pop(key)),
            ("extra entry in header", lambda h: h.update({"talker.bogus": {"dtype": "F32", "shape": [1],
                                                                           "data_offsets": [0, 4]}}))]:
        t.run("loader/headers", name, loads(single(raw_edit=with_header(change))), ["model.safetensors"])
    t.run("loader/headers", "bytes appended", loads(single(raw_edit=lambda b: b + b"\0" * 16)), ["model.safetensors"])
    d = single()
    (d / "config.json").write_text("")
    t.run("loader/headers", "empty config.json", loads(d), [str(d / "config.json")])

    # ---- wrong shapes
    for key in [talker_keys[i] for i in rng.choice(len(talker_keys), 5, replace=False)]:
        shape = tuple(tensors[key].shape)
        for new in {shape[::-1], shape + (1,), shape[1:] or (2,), tuple(s + 1 for s in shape), (), (0,) + shape[1:]}:
            if new == shape:
                continue
            t.run("loader/shapes", f"{key} {shape} -> {new}",
                  loads(single(lambda ts, k=key, s=new: ts.update({k: torch.zeros(s)}))), [key])

    # ---- missing keys (of the loaded component, of another one, many)
    for key in [talker_keys[i] for i in rng.choice(len(talker_keys), 12, replace=False)]:
        t.run("loader/missing keys", key, loads(single(lambda ts, k=key: ts.pop(k))), [key])
    other = sorted(k for k in tensors if not k.startswith("talker."))    # Code2Wav's, not loaded
    for key in [other[i] for i in rng.choice(len(other), 6, replace=False)]:
        t.run("loader/missing keys", f"{key} (not loaded)", loads(single(lambda ts, k=key: ts.pop(k))), [key])
    t.run("loader/missing keys", "every talker key", loads(single(lambda ts: [ts.pop(k) for k in talker_keys])),
          ["talker"])
    t.run("loader/missing keys", "every key but one",
          loads(single(lambda ts: [ts.pop(k) for k in list(ts) if k != talker_keys[0]]), None), [])

    # ---- extra keys
    for name in ["talker.model.layers.9.mlp.gate.weight", "talker.bogus", "talker.", "vocoder.weight", "bogus",
                 "thinker.model.extra", ".talker.x", "talker.model.layers.0.mlp.experts.99.up_proj.weight",
                 "code2wav.x.y.z", "Talker.model.norm.weight"]:
        t.run("loader/extra keys", name,
              loads(single(lambda ts, k=name: ts.update({k: torch.zeros(2, 2)}))), [name])

    # ---- stored dtypes
    for dtype in [torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.bool, torch.uint8,
                  torch.int8]:
        key = talker_keys[int(rng.integers(len(talker_keys)))]
        t.run("loader/dtypes", f"{key} as {dtype}",
              loads(single(lambda ts, k=key, dt=dtype: ts.update({k: ts[k].to(dt)}))), [key])

    # ---- index entries of a sharded checkpoint
    model = omni_ref.load(src, components=("talker", "code2wav"))
    shard_dir = tmp / "sharded"
    names = save(model, shard_dir, max_shard_bytes=300_000)      # config.json, shards and the index
    index = json.loads((shard_dir / "model.safetensors.index.json").read_text())
    planted = tmp / "outside" / "planted.safetensors"
    planted.parent.mkdir()
    shutil.copyfile(shard_dir / names[-1], planted)

    def sharded(change=None, text=None):
        d = tmp / f"sharded{next(counter)}"
        shutil.copytree(shard_dir, d)
        if text is not None:
            (d / "model.safetensors.index.json").write_text(text)
        elif change is not None:
            idx = copy.deepcopy(index)
            change(idx)
            (d / "model.safetensors.index.json").write_text(json.dumps(idx))
        return d
    t.run("loader/index", "intact", loads(sharded(), None), [])
    keys = sorted(index["weight_map"])
    picks = [keys[i] for i in rng.choice(len(keys), 2, replace=False)] + talker_keys[:1]
    for key in picks:
        for bad in ["../outside/planted.safetensors", str(planted), "../../etc/passwd.safetensors",
                    "sub/../../x.safetensors", "..\\outside\\planted.safetensors", 5, None, ["a"], "",
                    "missing.safetensors", "config.json", "model.safetensors.index.json",
                    "./" + index["weight_map"][key], names[0] if index["weight_map"][key] != names[0] else names[-1]]:
            t.run("loader/index", f"{key} -> {bad!r}",
                  loads(sharded(lambda idx, k=key, b=bad: idx["weight_map"].update({k: b}))),
                  [key] if not isinstance(bad, str) or bad != "missing.safetensors" else ["missing.safetensors"])
    for name, text in [("not json", "{weight_map"), ("empty", ""), ("a list", "[]"), ("no weight_map", "{}"),
                       ("weight_map a list", '{"weight_map": []}'), ("weight_map null", '{"weight_map": null}'),
                       ("weight_map empty", '{"weight_map": {}}')]:
        t.run("loader/index", f"index {name}", loads(sharded(text=text), None), ["model.safetensors.index.json"]
              if name != "weight_map empty" else [])
    t.run("loader/index", "index names a key no shard holds",
          loads(sharded(lambda idx: idx["weight_map"].update({"talker.ghost": names[0]})), None), ["talker.ghost"])
    t.run("loader/index", "index without a talker key",
          loads(sharded(lambda idx: idx["weight_map"].pop(talker_keys[1])), None), [talker_keys[1]])
    d = sharded()
    (d / names[0]).unlink()
    t.run("loader/index", "a shard deleted", loads(d, None), [names[0]])
    d = sharded()
    (d / names[1]).write_bytes(b"")
    t.run("loader/index", "a shard emptied", loads(d, None), [names[1]])


# ============================================================================================== the one test
def test_fuzz_bad_inputs(tmp_path):
    t0, cpu0 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(SEED)
    tally = Tally()
    ckpt = presets.cached_checkpoint("tiny")
    ours, theirs = Processor.from_pretrained(ckpt), hf.load_hf_processor(ckpt)
    for name, make in (("processor", lambda d: processor_cases(tally, ours, theirs, d, rng)),
                       ("config", lambda d: config_cases(tally, d, rng)),
                       ("loader", lambda d: loader_cases(tally, d, rng))):
        (tmp_path / name).mkdir()
        make(tmp_path / name)
    summary = tally.summary() + (f"\n  total {time.perf_counter() - t0:.1f} s wall, "
                                 f"{time.process_time() - cpu0:.1f} s CPU")
    print("\n" + summary)
    assert sum(tally.tried.values()) >= 500, summary
    assert not tally.failures, summary + "\nfailures:\n" + "\n".join(tally.failures[:60])
