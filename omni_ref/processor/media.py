"""Reading what a message can carry (sound, pictures, video) into plain arrays, with errors that
say what to do.

Every later stage of the processor works on three kinds of array:

    audio  float32 (samples,)            mono, at the model's sampling rate (16 kHz for Qwen3-Omni)
    image  uint8   (height, width, 3)    RGB
    video  uint8   (frames, height, width, 3) plus its frame rate and, if it has one, its sound

HF accepts the same inputs (paths, numpy arrays, PIL images, lists of frames) in
`Qwen3OmniMoeProcessor` and decodes files with torchvision / soundfile; here PIL and soundfile do
it. A video file (mp4, ...) needs ffmpeg, which an offline laptop install does not have, so a video
is a folder: frames/*.jpg (or *.png), an optional meta.json with "fps", and an optional audio.wav
(data/video/ is one; scripts/make_media.py makes it).

Where HF would quietly do something surprising (resample with a library we do not have, average
stereo channels, crash deep inside on an empty array) we stop with a message that names the input
and the fix instead.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ProcessorError(ValueError):
    """A bad input to the processor. The message says what was wrong and what to do about it."""


class MediaNotFoundError(ProcessorError, FileNotFoundError):
    """A media path that does not exist (both a ProcessorError and a FileNotFoundError)."""


@dataclass
class Video:
    """Decoded video: frames (T, H, W, 3) uint8, their rate (None if unknown), and its sound."""
    frames: np.ndarray
    fps: float | None = None
    audio: np.ndarray | None = None  # float32 (samples,) at the model's rate; None if silent


def _existing_path(source, what: str) -> Path:
    text = os.fspath(source)
    if text.startswith(("http://", "https://")):
        raise ProcessorError(f"{what} {text!r} is a URL, and omni-ref runs offline: download the "
                             "file first and pass its local path.")
    path = Path(text)
    if not path.exists():
        raise MediaNotFoundError(f"{what} file not found: {text!r}. Check the path (a relative "
                                 "path starts from the current working directory, os.getcwd()).")
    return path


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _unreadable(what: str, path, error: Exception, kind: str) -> ProcessorError:
    return ProcessorError(f"{what} {os.fspath(path)!r} cannot be read as {kind} "
                          f"({type(error).__name__}: {str(error)[:200]}). Is it really {kind} "
                          f"file, and complete? Open it in a viewer or player to check, or "
                          f"convert it again.")


def check_finite(wave: np.ndarray, what: str, sampling_rate: int) -> None:
    """NaN or infinite samples would turn every feature, and then the logits, into NaN: say where
    they are."""
    bad = ~np.isfinite(wave)
    if bad.any():
        first = int(np.argmax(bad))
        raise ProcessorError(f"{what} has {int(bad.sum())} sample(s) that are NaN or infinite, "
                             f"the first at index {first} ({first / sampling_rate:.3f} s): sound "
                             f"is finite numbers in [-1, 1]. Fix the source, or replace them, "
                             f"e.g. np.nan_to_num(wave, nan=0.0, posinf=1.0, neginf=-1.0).")


def check_fps(value, where: str, field: str = "fps"):
    """A frame rate: None (unknown) or a positive finite number of frames per second."""
    if value is None:
        return None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value <= 0:
        raise ProcessorError(f"{where}: {field}={value!r:.60} is not a frame rate; write a "
                             f"positive number of frames per second, e.g. {field}: 4 (or leave "
                             f"it out if it is unknown).")
    return value


def _inside(folder: Path, name, where: str) -> Path:
    """A file named relative to a folder (meta.json's "audio"), which must stay inside that
    folder."""
    if not isinstance(name, str) or not name:
        raise ProcessorError(f"{where}: audio={name!r:.60} must be the name of the sound file in "
                             f"the folder, e.g. \"audio.wav\".")
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise ProcessorError(f"{where}: audio={name!r} points outside the video folder; the sound "
                             f"track must be a file inside it (e.g. \"audio.wav\"). Copy the file "
                             f"into the folder and name it there.")
    return folder / name


# ------------------------------------------------------------------------------------------- audio
def load_audio(source, sampling_rate: int, what: str = "audio") -> np.ndarray:
    """A sound file path, or a 1-D array / tensor / list of floats -> float32 (samples,)."""
    if _is_path(source):
        path = _existing_path(source, what)
        try:
            wave, rate = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
        except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as e:
            raise _unreadable(what, source, e, "a sound") from None
        if wave.shape[1] > 1:
            raise ProcessorError(
                f"{what} {os.fspath(source)!r} is stereo ({wave.shape[1]} channels); the model "
                "hears one channel. Mix it down first, e.g. `sox in.wav -c 1 out.wav`, or pass "
                "soundfile.read(path)[0].mean(axis=1).")
        if rate != sampling_rate:
            raise ProcessorError(
                f"{what} {os.fspath(source)!r} is sampled at {rate} Hz but the model expects "
                f"{sampling_rate} Hz. Resample it first, e.g. `sox in.wav -r {sampling_rate} "
                "out.wav` (omni-ref does not resample: HF uses the soxr library for that, and a "
                "different resampler would give different features).")
        wave = wave[:, 0]
        what = f"{what} {os.fspath(source)!r}"
    else:
        wave = np.asarray(source.numpy() if hasattr(source, "numpy") else source)
        if np.issubdtype(wave.dtype, np.integer):
            raise ProcessorError(f"{what} is an integer array ({wave.dtype}); the model expects "
                                 "floats in [-1, 1]. Convert it, e.g. wave.astype(np.float32) / "
                                 "32768 for 16-bit samples.")
        if not np.issubdtype(wave.dtype, np.floating):
            raise ProcessorError(f"{what} is an array of {wave.dtype}, not of samples; pass a 1-D "
                                 f"float array of sound in [-1, 1] (mono, at {sampling_rate} Hz), "
                                 f"or a path to a sound file.")
        if wave.ndim == 2 and min(wave.shape) in (2, 3, 4, 6, 8):
            raise ProcessorError(f"{what} has shape {wave.shape}, which looks like "
                                 f"{min(wave.shape)} channels (stereo or more); the model hears "
                                 "one channel. Pass a 1-D array, e.g. "
                                 f"wave.mean(axis={int(np.argmin(wave.shape))}).")
        if wave.ndim != 1:
            raise ProcessorError(f"{what} must be a 1-D array of samples (mono), got shape "
                                 f"{wave.shape}.")
    if wave.size == 0:
        raise ProcessorError(f"{what} is empty (0 samples): pass at least some sound, or drop the "
                             "audio part.")
    check_finite(wave, what, sampling_rate)
    return wave


# ------------------------------------------------------------------------------------------- image
def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image in any mode -> (H, W, 3) uint8. Transparent pixels are laid over white, as HF
    does for PIL input."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def load_image(source, what: str = "image") -> np.ndarray:
    """A path, PIL image or uint8 array (H, W, 3) / (H, W) -> uint8 (H, W, 3)."""
    if _is_path(source):
        path = _existing_path(source, what)
        try:
            with Image.open(path) as im:
                # a file is read like torchvision's decode_image(mode=RGB): turned upright by its
                # EXIF tag, alpha dropped
                return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        # PIL's ways to say "not an image"
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise _unreadable(what, source, e, "an image") from None
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    array = np.asarray(source.numpy() if hasattr(source, "numpy") else source)
    if array.dtype != np.uint8:
        raise ProcessorError(f"{what} array has dtype {array.dtype}; pass uint8 pixels 0..255 "
                             "(height, width, 3), e.g. (x * 255).round().astype(np.uint8) for "
                             "floats in [0, 1], or a PIL image.")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)  # grey -> RGB
    if array.ndim != 3 or array.shape[2] != 3:
        raise ProcessorError(f"{what} array has shape {array.shape}; pass (height, width, 3) RGB "
                             "or (height, width) grey, channels last.")
    return array


# ------------------------------------------------------------------------------------------- video
def _read_meta(meta_path: Path) -> dict:
    """A frame folder's meta.json: one JSON object; "fps" a frame rate, "audio" a file name inside
    the folder."""
    if not meta_path.is_file():
        return {}
    where = os.fspath(meta_path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProcessorError(f"{where} is not valid JSON ({e}); write it as an object, e.g. "
                             f'{{"fps": 4, "audio": "audio.wav"}}.') from None
    if not isinstance(meta, dict):
        raise ProcessorError(f"{where} holds a JSON {type(meta).__name__}; write it as an object, "
                             f'e.g. {{"fps": 4, "audio": "audio.wav"}}.')
    check_fps(meta.get("fps"), where)
    if "audio" in meta and not _inside(meta_path.parent, meta["audio"], where).is_file():
        raise MediaNotFoundError(f"{where}: audio={meta['audio']!r} names a sound track that is "
                                 f"not in the folder {os.fspath(meta_path.parent)!r}: put the "
                                 f"file there, or remove the \"audio\" entry for a silent video.")
    return meta


def _video_folder(path: Path, sampling_rate: int) -> Video:
    meta_path = path / "meta.json"
    meta = _read_meta(meta_path)
    frame_dir = path / "frames" if (path / "frames").is_dir() else path
    names = sorted(p for p in frame_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise ProcessorError(f"video folder {os.fspath(path)!r} has no frames: put the frames in "
                             f"{os.fspath(frame_dir)!r} as {'/'.join(IMAGE_SUFFIXES)} files, "
                             "named so that they sort in time order (0000.jpg, 0001.jpg, ...).")
    frames = _stack_frames([load_image(p, what="video frame") for p in names], os.fspath(path))
    audio_path = path / meta.get("audio", "audio.wav")
    audio = load_audio(audio_path, sampling_rate,
                       what="video sound track") if audio_path.is_file() else None
    return Video(frames, meta.get("fps"), audio)


def _stack_frames(frames: list[np.ndarray], name: str) -> np.ndarray:
    sizes = sorted({f.shape for f in frames})
    if len(sizes) > 1:
        raise ProcessorError(f"video {name} has frames of different sizes {sizes}; resize them to "
                             "one size first.")
    return np.stack(frames)  # (T, H, W, 3)


def load_video(source, sampling_rate: int, what: str = "video") -> Video:
    """A frame folder, uint8 array (T, H, W, 3), list of frames (paths, images, arrays), Video."""
    if isinstance(source, Video):
        video = source
    elif _is_path(source):
        path = _existing_path(source, what)
        if not path.is_dir():
            raise ProcessorError(
                f"{what} {os.fspath(source)!r} is a file; decoding video files needs ffmpeg, "
                f"which omni-ref does not use. Extract the frames and sound once (e.g. "
                f"`ffmpeg -i clip.mp4 -vf fps=4 frames/%04d.jpg` and "
                f"`ffmpeg -i clip.mp4 -ac 1 -ar {sampling_rate} audio.wav`) into a folder with a "
                f'meta.json {{"fps": 4}}, and pass the folder (data/video/ is an example).')
        video = _video_folder(path, sampling_rate)
    elif isinstance(source, (list, tuple)):
        if len(source) == 0:
            raise ProcessorError(f"{what} has no frames (an empty list): pass at least one frame.")
        video = Video(_stack_frames([load_image(f, what="video frame") for f in source], what))
    else:
        frames = np.asarray(source.numpy() if hasattr(source, "numpy") else source)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ProcessorError(f"{what} array has shape {frames.shape} and dtype "
                                 f"{frames.dtype}; pass uint8 frames (num_frames, height, width, "
                                 "3), a list of frames, or a frame folder.")
        video = Video(frames)
    if len(video.frames) == 0:
        raise ProcessorError(f"{what} has no frames: pass at least one frame.")
    check_fps(video.fps, what)
    return video
