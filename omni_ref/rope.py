"""Rotary position embedding (RoPE; Su et al. 2021), every form Qwen3-Omni uses, in one place.

A rotary embedding turns each pair of a query or key head by an angle that grows with the token's
position, so that a query-key dot product depends only on their distance. The angle of pair i is
position * theta^(-2i/d): fast turns in the first pairs, slow ones in the last. Qwen3-Omni uses it
in three forms, which differ only in where the position of each pair comes from:

    1-D   code predictor, Code2Wav    one position per token              rotary_cos_sin
    2-D   vision tower                the patch's row and column          vision_rotary
    3-D   Thinker and Talker (TM-RoPE) (time, height, width) per token    multimodal_cos_sin

All three make cos, sin tables of shape (..., head_dim) that `apply_rotary` applies to q and k.

TM-RoPE (report section 2.3, "Time-aligned Multimodal RoPE"). Every token carries three position
ids instead of one. Text tokens get the same value on all three axes, so for text TM-RoPE is plain
1-D RoPE; an image patch gets (frame time, row, column); an audio token gets its time on all three.
The head_dim/2 rotating pairs are shared out between the axes by `mrope_section` = (t, h, w) pairs
(24:20:20 in the real model), and unlike Qwen2-VL's M-RoPE (contiguous blocks: all time pairs, then
all height pairs, ...) the axes are *interleaved*: pair 0 follows time, pair 1 height, pair 2
width, pair 3 time again, ... so each axis gets fast and slow frequencies alike.

    pair index i:   0  1  2  3  4  5  ...  3*h-2  3*h-1 ...   head_dim/2 - 1
    axis:           T  H  W  T  H  W  ...  H      W     T ...  T   (leftover pairs follow time)

The second half of the module makes the position ids themselves: `text_position_ids` for text and
`multimodal_position_ids` (HF's get_rope_index) for prompts with audio, images and video; both
return the same (3, B, T) layout, so `multimodal_cos_sin` serves both.

HF mirrors: Qwen3OmniMoeRotaryEmbedding and `rotate_half` / `apply_rotary_pos_emb` (1-D),
Qwen3OmniMoeVisionRotaryEmbedding (2-D), Qwen3OmniMoeThinkerTextRotaryEmbedding
(`recomposition_frequencies`, 3-D) and Qwen3OmniMoeThinkerModel.get_rope_index (position ids).
"""
from __future__ import annotations

import torch

# HF's fallback when a config names no split: the real model's time:height:width = 24:20:20 pairs.
DEFAULT_MROPE_SECTION = (24, 20, 20)


# ---- the rotation ------------------------------------------------------------------------------

def rope_inv_freq(head_dim: int, theta: float, device=None) -> torch.Tensor:
    """Frequencies of the head_dim/2 rotating pairs: theta^(-2i/d), fastest first. (head_dim/2,)"""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    return 1.0 / theta ** exponents


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis: a 90-degree turn of every pair
    (i, i + d/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of x (B, heads, T, d) by its position's angle; cos, sin are (B, T, d)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def _cos_sin(angles: torch.Tensor, dtype=torch.float32):
    """Angles (..., d/2) -> cos, sin (..., d). The table is duplicated along the last axis because
    `rotate_half` pairs dimension i with i + d/2."""
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


# ---- 1-D: one position per token ---------------------------------------------------------------

def rotary_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype=torch.float32):
    """1-D rotary tables for integer positions (B, T) -> cos, sin of shape (B, T, head_dim)."""
    angles = positions[..., None].float() * inv_freq.float()            # (B, T, d/2)
    return _cos_sin(angles, dtype)


# ---- 2-D: the vision tower's rows and columns --------------------------------------------------

def vision_rotary(positions: torch.Tensor, head_dim: int, theta: float):
    """2-D rotary tables (HF Qwen3OmniMoeVisionRotaryEmbedding, "axial"): positions (patches, 2)
    of (row, col) -> cos, sin (patches, head_dim).

    Half of each head rotates with the patch row, half with the column, both with the same
    head_dim / 4 frequencies. Layout [row angles | col angles] twice (see `_cos_sin`)."""
    inv_freq = rope_inv_freq(head_dim // 2, theta, positions.device)         # (d/4,)
    angles = positions[..., None].float() * inv_freq                        # (patches, 2, d/4)
    return _cos_sin(angles.flatten(1))                                      # (patches, d) each


# ---- 3-D: TM-RoPE ------------------------------------------------------------------------------

def axis_of_pairs(num_pairs: int, mrope_section=DEFAULT_MROPE_SECTION,
                  device=None) -> torch.Tensor:
    """Which position axis (0 time, 1 height, 2 width) drives each frequency pair: (head_dim/2,).

    Height takes pairs 1, 4, 7, ... below 3 * section[1]; width takes 2, 5, 8, ... below 3 *
    section[2]; time takes the rest. Like HF we cut these strided ranges at the end of the head, so
    a split that does not fit the interleaved pattern silently changes: HF's own test config
    (head_dim 8, section [1, 1, 2]) ends up with time 2, height 1, width 1 pairs, not 1, 1, 2. We
    reproduce that rather than "fix" it.
    """
    axis = torch.zeros(num_pairs, dtype=torch.long, device=device)
    axis[1:3 * mrope_section[1]:3] = 1
    axis[2:3 * mrope_section[2]:3] = 2
    return axis


def multimodal_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor,
                       mrope_section=DEFAULT_MROPE_SECTION, dtype=torch.float32):
    """Rotary tables for 3-axis positions (3, B, T) -> cos, sin (B, T, head_dim), ready for
    `apply_rotary`. Each frequency pair takes its angle from its own axis's position."""
    if position_ids.ndim != 3 or position_ids.shape[0] != 3:
        raise ValueError(f"position_ids must be (3, batch, seq) for time/height/width, got "
                         f"{tuple(position_ids.shape)}")
    angles = position_ids[..., None].float() * inv_freq.float()     # (3, B, T, d/2): every axis
    axis = axis_of_pairs(inv_freq.shape[0], mrope_section, angles.device)
    index = axis.view(1, 1, 1, -1).expand(1, *angles.shape[1:])      # (1, B, T, d/2)
    angles = angles.gather(0, index)[0]                              # (B, T, d/2): pair i's axis
    return _cos_sin(angles, dtype)                                   # (B, T, d) each


class MultimodalRotary:
    """The rotary table maker of one decoder config (inverse frequencies + mrope split), called
    once per forward. Reads HF's `rope_parameters`: rope_theta (config.rope_theta, which knows HF's
    default for the class) and mrope_section (default 24:20:20, like HF). Used by the Thinker and,
    with its own config, by the Talker, whose HF rotary class is the Thinker's."""

    def __init__(self, cfg):
        rope = cfg.rope_parameters or {}
        self.head_dim, self.theta = cfg.resolved_head_dim, cfg.rope_theta
        self.mrope_section = tuple(rope.get("mrope_section") or DEFAULT_MROPE_SECTION)

    def __call__(self, position_ids: torch.Tensor, dtype=torch.float32):
        inv_freq = rope_inv_freq(self.head_dim, self.theta, position_ids.device)   # (d/2,)
        return multimodal_cos_sin(position_ids, inv_freq, self.mrope_section, dtype)


# ---- position ids of text ----------------------------------------------------------------------

def text_position_ids(attention_mask: torch.Tensor, pad_value: int = 1) -> torch.Tensor:
    """3-axis position ids of a text-only batch: mask (B, T), 1 = real -> (3, B, T) int64.

    Positions count real tokens only, so a left-padded row starts at 0 where its text starts,
    exactly as if it were alone. Padding positions get `pad_value`: 1 in HF's get_rope_index (the
    Thinker), 0 in HF's Talker. They are masked out of attention, so the value only shows in the
    outputs at padding positions, which we keep equal to HF's too.
    """
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be (batch, seq), got shape "
                         f"{tuple(attention_mask.shape)}")
    mask = attention_mask.long()
    pos = mask.cumsum(-1) - 1                                        # (B, T)
    pos = pos.masked_fill(mask == 0, pad_value)
    return pos[None].expand(3, -1, -1)                               # (3, B, T): same on t, h, w


def arange_position_ids(batch: int, length: int, start: int = 0, device=None) -> torch.Tensor:
    """Positions start .. start+length-1 on all three axes, unpadded text: (3, batch, length)."""
    positions = torch.arange(start, start + length, device=device)               # (length,)
    return positions.view(1, 1, -1).expand(3, batch, length)


def as_3d_position_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Accept HF's three layouts of `position_ids` and return the (3, B, T) rotary ones.

    (B, T): one text position per token, copied to all three axes. (3, B, T): time, height, width.
    (4, B, T): HF's generate prepends a plain text-position row (used by HF only to build masks);
    dropped."""
    if position_ids.ndim == 2:
        return position_ids[None].expand(3, -1, -1)
    if position_ids.ndim == 3 and position_ids.shape[0] == 4:
        return position_ids[1:]
    if position_ids.ndim == 3 and position_ids.shape[0] == 3:
        return position_ids
    raise ValueError(f"position_ids of shape {tuple(position_ids.shape)}: expected (batch, seq), "
                     f"(3, batch, seq) or (4, batch, seq)")


# ---- position ids of a multimodal prompt (HF's get_rope_index) ---------------------------------

def _run(length, start, device) -> torch.Tensor:
    """(3, length) positions start, start+1, ... on all three axes: text, special tokens, audio."""
    return torch.arange(length, dtype=torch.float32, device=device).expand(3, length) + start


def _grid(t_values: torch.Tensor, grid_h: int, grid_w: int, start) -> torch.Tensor:
    """(3, frames * h * w) positions of a merged image/video grid, frame by frame and row by row:
    time from `t_values` (one per frame), height = row, width = column, all offset by `start`."""
    n = len(t_values)
    t = t_values.float().repeat_interleave(grid_h * grid_w)
    rows = torch.arange(grid_h, dtype=torch.float32, device=t.device)
    cols = torch.arange(grid_w, dtype=torch.float32, device=t.device)
    h = rows.repeat_interleave(grid_w).repeat(n)
    w = cols.repeat(grid_h * n)
    return torch.stack([t, h, w]) + start


def _by_time(video: torch.Tensor, audio: torch.Tensor) -> list:
    """Audio-in-video: the video's and the audio's position columns merged in order of time (video
    first on ties), the order in which the processor interleaved their tokens. Returns the blocks
    in that order."""
    blocks, i, j = [], 0, 0
    while i < video.shape[1] and j < audio.shape[1]:
        if video[0, i] <= audio[0, j]:
            blocks.append(video[:, i:i + 1])
            i += 1
        else:
            blocks.append(audio[:, j:j + 1])
            j += 1
    return blocks + [rest for rest in (video[:, i:], audio[:, j:]) if rest.shape[1]]


def multimodal_position_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config,
                            image_grid_thw=None, video_grid_thw=None, audio_feature_lengths=None,
                            video_second_per_grid=None, use_audio_in_video: bool = False):
    """TM-RoPE position ids of a prompt: (3, B, T) float, and per row the offset (B, 1) that
    decoding adds to its plain token count (`rope_deltas`: the last position id + 1 minus the
    number of real tokens).

    Report section 2.3; HF mirror: get_rope_index. Walking each row's real tokens left to right:
      text, <start>/<end> marks  t = h = w = a running counter, +1 per token
      audio                      the same: 12.5 Hz tokens are already in time order
      image                      t = running counter; h, w = counter + the merged-grid row / column
      video                      t = counter + frame time in seconds x position_id_per_seconds (13
                                 per second in the real model, so ids can be fractional), h, w as
                                 for an image
      audio in video             the video's and the audio's columns merged by time, as the
                                 processor wove the tokens (<|vision_start|><|audio_start|> ...
                                 <|audio_end|><|vision_end|>)
    After a media run the counter restarts one past the largest id of the block added last (HF's
    rule). Position ids are floats because video times can be fractional; padding stays 0.

    A prompt with no image and no video gets plain text positions (`text_position_ids`), as in HF:
    audio positions are consecutive anyway, only the value at padding positions differs (1, not 0).

    `config` is the ThinkerConfig, or the TalkerConfig for the Talker's prompt: both name the token
    ids, spatial_merge_size and position_id_per_seconds alike (only audio reads the Thinker's
    audio_config). Media counters run across the batch, so grids and audio lengths are listed in
    prompt order, row after row. `use_audio_in_video` is HF's argument, read from the tokens here.
    """
    # Imported here, not at the top: audio_encoder imports layers, which imports this module.
    from .audio_encoder import audio_token_count
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if image_grid_thw is None and video_grid_thw is None:
        pos = text_position_ids(attention_mask).float()
        # HF takes the max over padding positions too (value 1): a row with one real token gets
        # offset 1, not 0.
        last = pos.max(0)[0].max(-1, keepdim=True)[0]
        return pos, last + 1 - attention_mask.sum(-1, keepdim=True)
    merge, per_second = config.spatial_merge_size, config.position_id_per_seconds
    vstart, astart = config.vision_start_token_id, config.audio_start_token_id
    device = input_ids.device
    out = torch.zeros(3, *input_ids.shape, device=device)
    deltas = []
    counters = {"image": 0, "video": 0, "audio": 0}   # media items used so far, across the batch

    def take(kind):
        counters[kind] += 1
        return counters[kind] - 1

    def opens_media(ids, i):     # <|audio_start|>, or <|vision_start|> before an image / video pad
        return ids[i] == astart or (ids[i] == vstart and i + 1 < len(ids) and ids[i + 1] in (
            config.image_token_id, config.video_token_id, astart))

    for b in range(input_ids.shape[0]):
        real = attention_mask[b].bool()
        ids = input_ids[b][real].tolist()
        blocks = []                                 # (3, n) position blocks in prompt order

        def after_last():
            return blocks[-1].max() + 1 if blocks else 0

        st = 0                                      # the first token not yet given a position
        while True:                                 # one media run (and the text before it) a pass
            k = next((i for i in range(st, len(ids)) if opens_media(ids, i)), None)
            if k is None:
                break
            pos = after_last()
            if k > st:
                blocks.append(_run(k - st, pos, device))
                pos += k - st
            if ids[k] == astart:
                kind = "audio"
            elif ids[k + 1] == config.image_token_id:
                kind = "image"
            elif ids[k + 1] == config.video_token_id:
                kind = "video"
            else:
                kind = "audio_in_video"
            # <vision_start><audio_start> open an audio-in-video run; both are closed after it.
            marks = 2 if kind == "audio_in_video" else 1
            blocks.append(_run(marks, pos, device))
            pos += marks
            n_media = 0
            if kind in ("audio", "audio_in_video"):
                frames = audio_feature_lengths[take("audio")]
                n_audio = int(audio_token_count(frames, config.audio_config.n_window))
                audio = _run(n_audio, pos, device)
                n_media += n_audio
            if kind != "audio":
                v = take("image" if kind == "image" else "video")
                t, h, w = (image_grid_thw if kind == "image" else video_grid_thw)[v].tolist()
                seconds = 1.0 if kind == "image" else float(video_second_per_grid[v])
                frame_times = torch.arange(t, device=device) * seconds * per_second
                grid = _grid(frame_times, h // merge, w // merge, pos)
                n_media += t * h * w // merge ** 2
            if kind == "audio":
                blocks.append(audio)
            elif kind == "audio_in_video":
                blocks += _by_time(grid, audio)
            else:
                blocks.append(grid)
            blocks.append(_run(marks, after_last(), device))
            st = k + 2 * marks + n_media
        if st < len(ids):
            blocks.append(_run(len(ids) - st, after_last(), device))
        row = torch.cat(blocks, dim=1)
        out[:, b, real] = row
        deltas.append(row.max() + 1 - len(ids))
    return out, torch.stack(deltas)[:, None]
