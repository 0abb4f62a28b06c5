"""Pictures and video frames -> flat patches and their (t, h, w) grid, Qwen2-VL style.

Qwen2-VL (Wang et al. 2024, arXiv 2409.12191, section 2.1 "Naive Dynamic Resolution") sees a
picture at (almost) its own size instead of squashing it to a fixed square, and Qwen3-Omni's vision
encoder keeps that (Qwen3-Omni Technical Report, arXiv 2509.17765, section 2.2):

  1. smart resize: scale so that both sides are multiples of patch * merge (16 * 2 = 32 pixels)
     and the pixel count lies in [min_pixels, max_pixels], keeping the aspect ratio as well as
     whole patches allow;
  2. rescale 0..255 to 0..1 and normalise per channel with the checkpoint's mean and std;
  3. cut 16 x 16 patches, two frames deep in time (a picture is its own second frame), and list
     them so that each 2 x 2 block the encoder will merge into one token is contiguous:
     (t, h/2, w/2, 2, 2) order. Each patch is one row of channels x 2 x 16 x 16 = 1536 numbers.

So a picture costs (h / 16) * (w / 16) / 4 tokens, and a video that per temporal pair of frames.

HF mirror: Qwen2VLImageProcessor (image_processing_qwen2_vl.py: smart_resize, patchify) and
Qwen2VLVideoProcessor (video_processing_qwen2_vl.py: sample_frames, patchify), both resizing with
torchvision's bicubic antialiased resize on uint8, which is torch.nn.functional.interpolate
underneath; that is what we call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .media import ProcessorError

# Qwen2-VL's defaults (OpenAI CLIP statistics), used when a checkpoint does not give its own mean
# and std.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's numbering, as preprocessor_config.json stores it
# HF's Qwen3OmniMoeProcessor resizes video frames to between 128 and 768 tokens per frame pair,
# whatever the checkpoint's min/max_pixels say (a processor default that outranks the video
# processor's own settings).
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 128 * 32 * 32, 768 * 32 * 32


@dataclass(frozen=True)
class VisionSettings:
    """The image / video processor's part of preprocessor_config.json."""
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    image_mean: tuple = CLIP_MEAN
    image_std: tuple = CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = 3
    min_frames: int = 4     # video frame sampling bounds
    max_frames: int = 768

    @classmethod
    def from_dict(cls, d: dict) -> "VisionSettings":
        d = dict(d)
        # Newer files write size = {shortest_edge: min_pixels, longest_edge: max_pixels}.
        size = d.get("size") or {}
        d.setdefault("min_pixels", size.get("shortest_edge", cls.min_pixels))
        d.setdefault("max_pixels", size.get("longest_edge", cls.max_pixels))
        for key in ("image_mean", "image_std"):
            if key in d:
                d[key] = tuple(d[key])
        if d.get("resample", 3) not in RESAMPLE:
            raise ProcessorError(f"resample={d['resample']} is not supported; use 3 (bicubic) "
                                 "or 2 (bilinear)")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @property
    def factor(self) -> int:
        """Sides must be multiples of this: one merged token covers factor x factor pixels."""
        return self.patch_size * self.merge_size


def smart_resize(height: int, width: int, factor: int, min_pixels: int,
                 max_pixels: int) -> tuple[int, int]:
    """The (height, width) to resize to: multiples of `factor`, h * w within limits, aspect kept.

    Round each side to the nearest multiple; if that is too big, shrink both sides by the same
    ratio beta (rounding down), if too small grow them (rounding up).
    """
    if max(height, width) / min(height, width) > 200:
        raise ProcessorError(f"image of {width}x{height} pixels is too elongated (aspect ratio "
                             "above 200, the limit Qwen2-VL's resize allows); crop it into less "
                             "extreme pieces.")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def resize(frames: np.ndarray, size: tuple[int, int], resample: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, h, w) uint8, antialiased on uint8, as torchvision on CPU."""
    x = torch.from_numpy(np.require(frames, requirements=["C", "W"]))        # (T, H, W, 3)
    x = x.permute(0, 3, 1, 2).contiguous()                                  # (T, 3, H, W)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return torch.nn.functional.interpolate(x, size=size, mode=RESAMPLE[resample],
                                           align_corners=False,
                                           antialias=True)


def normalize(frames: torch.Tensor, s: VisionSettings) -> torch.Tensor:
    """uint8 -> float32 (x / 255 - mean) / std, computed as (x - 255 mean) / (255 std) like HF."""
    scale = 1.0 / s.rescale_factor
    mean = (torch.tensor(s.image_mean) * scale).view(-1, 1, 1)
    std = (torch.tensor(s.image_std) * scale).view(-1, 1, 1)
    return (frames.to(torch.float32) - mean) / std


def patchify(frames: torch.Tensor, s: VisionSettings) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(T, C, H, W) float, T a multiple of temporal_patch_size -> (patches, grid (t, h, w))."""
    T, C, H, W = frames.shape
    tp, p, m = s.temporal_patch_size, s.patch_size, s.merge_size
    t, h, w = T // tp, H // p, W // p
    x = frames.reshape(t, tp, C, h // m, m, p, w // m, m, p)
    # -> (t, h/m, w/m, m, m, C, tp, p, p): the m x m patches of one future token sit next to each
    # other
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * h * w, C * tp * p * p), (t, h, w)


def check_image_size(height: int, width: int, s: VisionSettings, what: str) -> None:
    if height < s.patch_size or width < s.patch_size:
        raise ProcessorError(f"{what} is {width}x{height} pixels, smaller than one "
                             f"{s.patch_size}x{s.patch_size} patch: it carries too little to see. "
                             "Use a larger picture, or upscale it yourself (e.g. PIL's "
                             "image.resize) if you really mean it.")


def process_image(image: np.ndarray, s: VisionSettings, min_pixels=None, max_pixels=None):
    """(H, W, 3) uint8 -> (patches (h*w, 1536), grid (1, h, w)), repeated to fill a time patch."""
    check_image_size(image.shape[0], image.shape[1], s, "image")
    size = smart_resize(image.shape[0], image.shape[1], s.factor, min_pixels or s.min_pixels,
                        max_pixels or s.max_pixels)
    x = normalize(resize(image[None], size, s.resample), s)                 # (1, 3, h, w)
    still = x.expand(s.temporal_patch_size, -1, -1, -1)    # a still picture: identical frames
    return patchify(still, s)


def sample_frame_indices(total: int, video_fps: float | None, fps: float,
                         s: VisionSettings) -> torch.Tensor:
    """Which frames to keep to see the video at `fps` frames per second (Qwen2-VL's rule).

    The count is duration * fps, kept within [min_frames, max_frames] and the frames there are, and
    rounded down to a whole number of temporal patches; the kept frames are spread evenly from the
    first one.
    """
    if video_fps is None:
        raise ProcessorError(f"to sample the video at fps={fps} its own frame rate must be known: "
                             "put \"fps\" in the frame folder's meta.json, or pass "
                             f"video_metadata=[{{'fps': ...}}] (one per video).")
    tp = s.temporal_patch_size
    most = math.floor(min(s.max_frames, total) / tp) * tp
    wanted = min(max(total / video_fps * fps, s.min_frames), most, total)
    count = math.floor(wanted / tp) * tp
    if count == 0:
        raise ProcessorError(f"a video of {total} frame(s) is too short to sample at fps={fps}: "
                             f"sampling needs at least {tp} frames (one temporal patch). Pass "
                             "more frames, or do not sample (fps=None).")
    return torch.arange(0, total, total / count).int()


def process_video(frames: np.ndarray, s: VisionSettings, min_pixels=None, max_pixels=None):
    """(T, H, W, 3) uint8 -> (patches (t*h*w, 1536), grid (t, h, w)); odd T repeats the last."""
    check_image_size(frames.shape[1], frames.shape[2], s, "video frame")
    size = smart_resize(frames.shape[1], frames.shape[2], s.factor, min_pixels or VIDEO_MIN_PIXELS,
                        max_pixels or VIDEO_MAX_PIXELS)
    x = normalize(resize(frames, size, s.resample), s)                      # (T, 3, h, w)
    if missing := -len(x) % s.temporal_patch_size:
        x = torch.cat([x, x[-1:].expand(missing, -1, -1, -1)])
    return patchify(x, s)
