"""TM-RoPE: rotary positions with three axes (time, height, width), interleaved across the head.

Qwen3-Omni report section 2.3 ("Time-aligned Multimodal RoPE"). Every token carries three position ids instead of
one. Text tokens get the same value on all three axes, so for text TM-RoPE is plain 1D RoPE; an image patch
gets (frame time, row, column); an audio token gets its time on all three. The head_dim/2 rotating frequency
pairs are shared out between the axes by `mrope_section` = (t, h, w) pairs (24:20:20 in the real model), and
unlike Qwen2-VL's M-RoPE (contiguous blocks: all time pairs, then all height pairs, ...) the axes are
*interleaved*: pair 0 follows time, pair 1 height, pair 2 width, pair 3 time again, ... so each axis gets fast
and slow frequencies alike.

    pair index i:   0  1  2  3  4  5  ...  3*h-2  3*h-1 ...   head_dim/2 - 1
    axis:           T  H  W  T  H  W  ...  H      W     T ...  T   (leftover pairs follow time)

HF mirror: Qwen3OmniMoeThinkerTextRotaryEmbedding (`recomposition_frequencies`) and, for text-only and
left-padded batches, the text branch of `get_rope_index`. The multimodal `get_rope_index` (audio, image, video
and audio-in-video position ids) belongs in this module too and arrives with issue 5; it returns the same
(3, B, T) layout that `text_position_ids` returns here, so `multimodal_cos_sin` serves both.
"""
from __future__ import annotations

import torch

from .config import TextConfig
from .layers import rope_inv_freq

# HF's fallback when a config names no split: the real model's time:height:width = 24:20:20 pairs.
DEFAULT_MROPE_SECTION = (24, 20, 20)


def axis_of_pairs(num_pairs: int, mrope_section=DEFAULT_MROPE_SECTION) -> torch.Tensor:
    """Which position axis (0 time, 1 height, 2 width) drives each of the head_dim/2 frequency pairs. (d/2,)

    Height takes pairs 1, 4, 7, ... below 3 * section[1]; width takes 2, 5, 8, ... below 3 * section[2]; time
    takes the rest. Like HF we cut these strided ranges at the end of the head, so a split that does not fit the
    interleaved pattern silently changes: HF's own test config (head_dim 8, section [1, 1, 2]) ends up with
    time 2, height 1, width 1 pairs, not 1, 1, 2. We reproduce that rather than "fix" it.
    """
    axis = torch.zeros(num_pairs, dtype=torch.long)
    axis[1:3 * mrope_section[1]:3] = 1
    axis[2:3 * mrope_section[2]:3] = 2
    return axis


def multimodal_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor, mrope_section=DEFAULT_MROPE_SECTION,
                       dtype=torch.float32):
    """Rotary tables for 3-axis positions (3, B, T) -> cos, sin (B, T, head_dim), ready for layers.apply_rotary.

    Each frequency pair takes its angle from its own axis's position; the half-table is then duplicated along
    the last axis because `rotate_half` pairs dimension i with i + head_dim/2 (as for 1D rotary)."""
    if position_ids.ndim != 3 or position_ids.shape[0] != 3:
        raise ValueError(f"position_ids must be (3, batch, seq) for time/height/width, got {tuple(position_ids.shape)}")
    angles = position_ids[..., None].float() * inv_freq.float()     # (3, B, T, d/2): every axis, every pair
    axis = axis_of_pairs(inv_freq.shape[0], mrope_section).to(angles.device)
    index = axis.view(1, 1, 1, -1).expand(1, *angles.shape[1:])      # (1, B, T, d/2)
    angles = angles.gather(0, index)[0]                              # (B, T, d/2): pair i from axis[i]
    angles = torch.cat([angles, angles], dim=-1)                     # (B, T, d)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class MultimodalRotary:
    """The rotary table maker of one decoder config (inverse frequencies + mrope split), called once per forward.

    Reads HF's `rope_parameters`: rope_theta, and mrope_section (default 24:20:20 like HF). A config without
    rope_theta gets HF's default for its class: 1e6 for the Thinker's text config (Qwen3OmniMoeTextConfig
    .default_theta), 1e4 otherwise. Used by the Thinker (and, with its own config, by the Talker, whose HF
    rotary class is the Thinker's)."""

    def __init__(self, cfg):
        rope = cfg.rope_parameters or {}
        default_theta = 1_000_000.0 if isinstance(cfg, TextConfig) else 10_000.0
        self.inv_freq = rope_inv_freq(cfg.resolved_head_dim, rope.get("rope_theta", default_theta))
        self.mrope_section = tuple(rope.get("mrope_section") or DEFAULT_MROPE_SECTION)

    def __call__(self, position_ids: torch.Tensor, dtype=torch.float32):
        return multimodal_cos_sin(position_ids, self.inv_freq, self.mrope_section, dtype)


# ---- position ids -----------------------------------------------------------------------------------------

def text_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """3-axis position ids of a text-only batch: (B, T) mask with 1 = real token -> (3, B, T) int64.

    Positions count real tokens only, so a left-padded row starts at 0 where its text starts, exactly as if it
    were alone. Padding positions get the value 1 (HF's get_rope_index does this; they are masked out of
    attention, so the value only shows in the outputs at padding positions, which we keep equal to HF's too).
    """
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be (batch, seq), got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.long()
    pos = mask.cumsum(-1) - 1                                        # (B, T)
    pos = pos.masked_fill(mask == 0, 1)
    return pos[None].expand(3, -1, -1)                               # (3, B, T): same value on t, h, w


def arange_position_ids(batch: int, length: int, start: int = 0) -> torch.Tensor:
    """Positions start .. start+length-1 on all three axes, for unpadded text: (3, batch, length)."""
    return torch.arange(start, start + length).view(1, 1, -1).expand(3, batch, length)


def as_3d_position_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Accept HF's three layouts of `position_ids` and return the (3, B, T) rotary ones.

    (B, T): one text position per token, copied to all three axes. (3, B, T): time, height, width.
    (4, B, T): HF's generate prepends a plain text-position row (used by HF only to build masks); dropped."""
    if position_ids.ndim == 2:
        return position_ids[None].expand(3, -1, -1)
    if position_ids.ndim == 3 and position_ids.shape[0] == 4:
        return position_ids[1:]
    if position_ids.ndim == 3 and position_ids.shape[0] == 3:
        return position_ids
    raise ValueError(f"position_ids of shape {tuple(position_ids.shape)}: expected (batch, seq), (3, batch, seq) "
                     f"or (4, batch, seq)")
