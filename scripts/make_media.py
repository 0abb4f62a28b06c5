"""Make the sample media in data/: a spoken sentence, a photo-like picture and a short video with its own sound.

Everything is generated here, offline, so the repository needs no downloaded datasets:

  data/speech.wav        "The quick brown fox jumps over the lazy dog.", spoken by espeak-ng, 16 kHz mono 16-bit
  data/image.png         a 300 x 200 landscape (sky, sun, hills, lake, a house) drawn with numpy, PNG (lossless, so
                         every JPEG decoder agrees on its pixels)
  data/video/frames/     12 JPEG frames, 160 x 120, at 4 frames per second (3 s): a red ball bounces across a lake
  data/video/audio.wav   the video's sound track, 3.0 s at 16 kHz: espeak-ng counting "one, two, three"
  data/video/meta.json   frame rate, frame count, size and the names above; omni_ref.processor reads it

Video containers (mp4, ...) need ffmpeg to decode, which a laptop install of this project does not have, so the video
is kept the way a decoder would hand it over: frames plus a wav.

The speech comes from a text-to-speech engine and is resampled by sox, both from Debian:
    apt-get install espeak-ng sox
Picture and frames depend only on numpy and Pillow and come out byte-identical on every run. The committed wav files are
the reference; another espeak-ng or sox version may produce slightly different samples.

Usage:  python scripts/make_media.py [--out DIR]      (default: data/)
"""
import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
SAMPLING_RATE = 16000
SPEECH_TEXT = "The quick brown fox jumps over the lazy dog."
VIDEO_TEXT = "One, two, three."
VIDEO_FPS = 4
VIDEO_SECONDS = 3
VIDEO_SIZE = (160, 120)  # width, height


def say(text: str, out: Path, seconds: float | None = None) -> None:
    """espeak-ng speaks at 22.05 kHz; sox resamples to 16 kHz mono 16-bit (-D: no dither, whose noise is random, so
    reruns give the same bytes); then, if asked, the wave is cut or padded with silence to exactly `seconds`."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: install it with `apt-get install espeak-ng sox` (Debian/Ubuntu)")
    with tempfile.TemporaryDirectory() as tmp:
        raw, resampled = Path(tmp) / "raw.wav", Path(tmp) / "16k.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-D", "-r", str(SAMPLING_RATE), "-c", "1", "-b", "16", str(resampled)],
                       check=True)
        wave, rate = sf.read(resampled, dtype="int16")
    assert rate == SAMPLING_RATE
    if seconds is not None:
        n = int(seconds * SAMPLING_RATE)
        wave = np.pad(wave[:n], (0, max(0, n - len(wave))))
    sf.write(out, wave, SAMPLING_RATE, subtype="PCM_16")


def landscape(width: int, height: int, seed: int = 0) -> Image.Image:
    """A calm, photo-like scene: smooth gradients with a little texture, so it compresses well and still looks real."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    horizon = 0.55 * height
    # sky: deep blue at the top to a pale haze at the horizon
    t = np.clip(y / horizon, 0, 1)[..., None]
    img = (1 - t) * np.array([40, 90, 170]) + t * np.array([200, 215, 230])
    # sun with a soft glow
    sun_x, sun_y = 0.72 * width, 0.22 * height
    d = np.hypot(x - sun_x, y - sun_y) / height
    img += (np.exp(-(d / 0.12) ** 2) * 90)[..., None] * np.array([1.0, 0.9, 0.6])
    img[d < 0.06] = [255, 244, 200]
    # two ranges of hills, the far one bluish
    for base, amp, freq, colour in ((0.50, 0.08, 3.1, [95, 120, 140]), (0.62, 0.07, 5.3, [60, 110, 55])):
        ridge = height * (base - amp * (np.sin(x[0] / width * freq * np.pi + freq) * 0.6
                                        + np.sin(x[0] / width * freq * 2.3 * np.pi) * 0.4))
        img[y > ridge[None, :]] = colour
    # a lake in front that mirrors the sky, with ripples
    lake = y > 0.75 * height
    ripple = 10 * np.sin(y * 0.9 + np.sin(x * 0.05) * 2)
    img[lake] = (np.array([70, 120, 170]) + ripple[lake][:, None])
    # gentle sensor noise, then a slight blur like a real lens
    img += rng.normal(0, 3, img.shape)
    picture = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    # a small house on the near hill
    draw = ImageDraw.Draw(picture)
    hx, hy, s = int(0.25 * width), int(0.66 * height), max(6, width // 25)
    draw.rectangle([hx, hy, hx + 2 * s, hy + s + s // 2], fill=(225, 205, 170))
    draw.polygon([(hx - s // 3, hy), (hx + s, hy - s), (hx + 2 * s + s // 3, hy)], fill=(150, 50, 40))
    draw.rectangle([hx + s - s // 4, hy + s // 2, hx + s + s // 4, hy + s + s // 2], fill=(90, 60, 40))
    return picture


def video_frames() -> list[Image.Image]:
    """A red ball bouncing left to right across the lake of a small landscape, one position per frame."""
    width, height = VIDEO_SIZE
    background = landscape(width, height, seed=1)
    frames = []
    n = VIDEO_FPS * VIDEO_SECONDS
    for i in range(n):
        frame = background.copy()
        draw = ImageDraw.Draw(frame)
        cx = int(15 + (width - 30) * i / (n - 1))
        cy = int(0.8 * height - 6 * abs(np.sin(i * np.pi / 3)))  # a little bounce
        r = 9
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(210, 30, 30), outline=(120, 10, 10))
        draw.ellipse([cx - r // 2, cy - r // 2, cx - r // 6, cy - r // 6], fill=(255, 160, 160))  # highlight
        frames.append(frame)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data")
    out = parser.parse_args().out
    (out / "video" / "frames").mkdir(parents=True, exist_ok=True)

    say(SPEECH_TEXT, out / "speech.wav")
    landscape(300, 200).save(out / "image.png", optimize=True)

    for old in (out / "video" / "frames").glob("*.jpg"):
        old.unlink()
    for i, frame in enumerate(video_frames()):
        frame.save(out / "video" / "frames" / f"{i:04d}.jpg", quality=85)
    say(VIDEO_TEXT, out / "video" / "audio.wav", seconds=VIDEO_SECONDS)
    meta = {"fps": VIDEO_FPS, "num_frames": VIDEO_FPS * VIDEO_SECONDS, "width": VIDEO_SIZE[0],
            "height": VIDEO_SIZE[1], "frames": "frames/*.jpg", "audio": "audio.wav",
            "description": "a red ball bounces left to right across a lake; the sound track counts one, two, three"}
    (out / "video" / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    sizes = {p.relative_to(out).as_posix(): p.stat().st_size for p in sorted(out.rglob("*"))
             if p.is_file() and "tokenizer" not in p.parts}
    print(f"wrote {len(sizes)} files, {sum(sizes.values()) / 1024:.0f} KB in all")


if __name__ == "__main__":
    main()
