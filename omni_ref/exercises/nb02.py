"""Exercises of notebook 02 (the encoders and the positions): AuT's windows, TM-RoPE ids, the merge order, rotary.

    02.1  predict: which output tokens of a 10 s recording change when its last second changes?
    02.2  predict: the position id of the <|vision_end|> after a 4 s video
    02.3  implement: list a raster grid of patches in the merger's 2 x 2 block order
    02.4  implement: rotate the pairs of a vector by their rotary angles
"""
from __future__ import annotations

from functools import lru_cache

import torch

from . import call, exercise, number


# ---- 02.1 ------------------------------------------------------------------------------------------------------

def _changed_tokens() -> int:
    """10 s = 1000 frames; tokens of the attention window that holds the last second all change."""
    from ..audio_encoder import audio_token_count
    total = int(audio_token_count(1000))                 # all tokens of the recording
    window = int(audio_token_count(800))                 # n_window_infer = 800 frames (8 s) per window
    return total % window or window


@exercise("02.1", "A 10 s recording goes through AuT. You change only its last second (9-10 s). How many of the "
                  "encoder's output tokens change?",
          right=_changed_tokens, wrong=lambda: 13,
          praise="the last second's 13 tokens change through the convolutions, and attention carries the change "
                 "to every token of the same 8 s window, and no further: 10 s = 104 + 26 tokens.")
def _window_tokens(answer):
    value = number(answer)
    want = _changed_tokens()
    if value == want:
        return None
    if value == 13:
        return ("13 tokens come out of the changed 1 s chunk, but the transformer layers after the convolutions "
                "let every token attend to all tokens of its attention window: which window holds 9-10 s, and "
                "how many tokens does it have?")
    if value == 130:
        return ("attention is windowed: tokens only see the tokens of their own 8 s window (104 tokens), so the "
                "first window never hears the last second")
    return "split the 130 tokens of 10 s into attention windows of 8 s (104 tokens); the change fills one window"


# ---- 02.2 ------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _vision_end_id() -> int:
    """The prompt: 20 text tokens, <|vision_start|>, 4 frame pairs of 10 x 14 merged tokens, <|vision_end|>."""
    from ..presets import config
    from ..rope import multimodal_position_ids
    cfg = config("demo").thinker_config
    pairs, rows, cols = 4, 10, 14
    ids = [0] * 20 + [cfg.vision_start_token_id] + [cfg.video_token_id] * (pairs * rows * cols) \
        + [cfg.vision_end_token_id]
    m = cfg.vision_config.spatial_merge_size
    pos, _ = multimodal_position_ids(torch.tensor([ids]), None, cfg,
                                     video_grid_thw=torch.tensor([[pairs, rows * m, cols * m]]),
                                     video_second_per_grid=torch.tensor([1.0]))
    return int(pos[0, 0, -1])


@exercise("02.2", "A 4 s video sampled at 2 fps (4 frame pairs, 1 s each) of 10 x 14 merged tokens per pair; its "
                  "<|vision_start|> has position 20. Which position id does the <|vision_end|> after it get?",
          right=_vision_end_id, wrong=lambda: 20 + 1 + 4 * 10 * 14,
          praise="the video's ids start at 21; time reaches 21 + 3 x 13 = 60, height only 21 + 9, width 21 + 13, "
                 "so the next token continues one past the time axis: a video's jump is set by its duration.")
def _vision_end(answer):
    value = number(answer)
    want = _vision_end_id()
    if value == want:
        return None
    if value in (20 + 1 + 560, 20 + 1 + 560 + 1, 20 + 560):
        return ("position ids are not token counts: the 560 video tokens share ids. Work out the largest t, h "
                "and w the video's tokens get, then the next token goes one past the largest")
    if value in (21 + 13 + 1, 21 + 9 + 1):
        return ("that is one past the largest height or width id, which is the rule for a still picture. For a "
                "video, t grows with the frame pairs' time: 13 ids per second")
    if value in (20 + 3 * 13 + 1, 20 + 4 * 13 + 1, 21 + 4 * 13 + 1):
        return ("close: the video's first token is at 21 (one after <|vision_start|>), and frame pair k starts "
                "at 21 + k x 1 s x 13, for k = 0 .. 3")
    return ("the video's tokens start at 21; frame pair k has t = 21 + 13 k, rows h = 21 + row, columns w = 21 + "
            "col; the next token gets 1 + the largest of all those")


# ---- 02.3 ------------------------------------------------------------------------------------------------------

GRIDS = ((2, 2, 1), (4, 6, 3), (6, 4, 2), (8, 10, 5))    # (h, w, d): patch rows, patch columns, numbers per patch


def _block_order_right(grid):
    h, w, d = grid.shape
    return grid.reshape(h // 2, 2, w // 2, 2, d).permute(0, 2, 1, 3, 4).reshape(h * w, d)


@exercise("02.3", "Write block_order(grid): an (h, w, d) raster grid of patches -> (h * w, d) rows, listed 2 x 2 "
                  "block by 2 x 2 block (the order of pixel_values), so that the merger can take 4 rows at a time.",
          right=lambda: _block_order_right,
          wrong=lambda: (lambda grid: grid.reshape(-1, grid.shape[-1])),
          praise="blocks row by row, and inside each block its top-left, top-right, bottom-left, bottom-right "
                 "patch: then reshape(-1, 4 * d) gives every token its four neighbours.")
def _block_order(fn):
    from ..vision_encoder import to_block_order
    for h, w, d in GRIDS:
        grid = torch.arange(h * w * d, dtype=torch.float32).reshape(h, w, d)
        got = torch.as_tensor(call(fn, grid.clone()))
        want = to_block_order(grid, 2)
        if got.shape != want.shape:
            return f"for a {h} x {w} x {d} grid you returned shape {tuple(got.shape)}; expected {tuple(want.shape)}"
        if torch.equal(got, want):
            continue
        if torch.equal(got, grid.reshape(-1, d)):
            return ("that is raster order: 4 consecutive rows are then 4 patches side by side in one row of the "
                    "picture, not a 2 x 2 square. Split h and w into (blocks, 2) each and reorder the axes")
        if torch.equal(got, grid.reshape(h // 2, 2, w // 2, 2, d).permute(0, 2, 3, 1, 4).reshape(-1, d)):
            return ("the blocks are right, but inside a block go along the top row first (top-left, top-right), "
                    "then the bottom row")
        return (f"for a {h} x {w} grid the first 4 rows should be the patches at (0, 0), (0, 1), (1, 0), (1, 1), "
                f"the next 4 those at (0, 2), (0, 3), (1, 2), (1, 3)")
    return None


# ---- 02.4 ------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _rotary_case():
    from ..rope import apply_rotary, rope_inv_freq, rotary_cos_sin
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 16, generator=g)                       # (T, head_dim)
    positions = torch.tensor([0.0, 1, 2, 5, 13, 26, 100])
    inv_freq = rope_inv_freq(16, 10000.0)                      # (head_dim / 2,)
    cos, sin = rotary_cos_sin(positions[None], inv_freq)       # (1, T, head_dim)
    want = apply_rotary(x[None, None], cos, sin)[0, 0]         # (T, head_dim)
    return x, positions, inv_freq, want


def _rotate_right(x, positions, inv_freq):
    angles = positions[:, None] * inv_freq[None, :]            # (T, d/2)
    a, b = x.chunk(2, dim=-1)                                  # pair i is (a_i, b_i) = (x_i, x_{i + d/2})
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def _rotate_interleaved(x, positions, inv_freq):
    """The RoFormer paper's layout, pairs (x_2i, x_2i+1): a rotation too, but not the one Qwen's weights expect."""
    angles = positions[:, None] * inv_freq[None, :]
    a, b = x[:, 0::2], x[:, 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(1)


@exercise("02.4", "Write rotate(x, positions, inv_freq): turn each pair (x_i, x_{i+d/2}) of every row of x (T, d) "
                  "by the angle positions[t] * inv_freq[i].",
          right=lambda: _rotate_right,
          wrong=lambda: _rotate_interleaved,
          praise="a plain 2D rotation per pair; TM-RoPE is exactly this, with each pair's position taken from its "
                 "own axis (t, h or w).")
def _rotate(fn):
    x, positions, inv_freq, want = _rotary_case()
    got = torch.as_tensor(call(fn, x.clone(), positions.clone(), inv_freq.clone()))
    if got.shape != want.shape:
        return f"rotate returned shape {tuple(got.shape)}; it should keep x's shape {tuple(want.shape)}"
    if torch.allclose(got, want, atol=1e-5):
        return None
    if torch.allclose(got[0], x[0], atol=1e-6) and not torch.allclose(got[1:], want[1:], atol=1e-4):
        if torch.allclose(got.norm(dim=-1), x.norm(dim=-1), atol=1e-4):
            a, b = x.chunk(2, dim=-1)
            angles = positions[:, None] * inv_freq
            flipped = torch.cat([a * angles.cos() + b * angles.sin(), b * angles.cos() - a * angles.sin()], -1)
            if torch.allclose(got, flipped, atol=1e-5):
                return "you turn the wrong way: x_i' = x_i cos - x_{i+d/2} sin, x_{i+d/2}' = x_i sin + x_{i+d/2} cos"
            return ("a rotation, but not of the right pairs: Qwen (like HF's rotate_half) pairs dimension i with "
                    "i + d/2, not 2i with 2i + 1")
    return ("for each row t and pair i: angle = positions[t] * inv_freq[i]; (x_i, x_{i+d/2}) -> (x_i cos - "
            "x_{i+d/2} sin, x_i sin + x_{i+d/2} cos)")
