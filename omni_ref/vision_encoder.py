"""Vision tower: pixels -> patch tokens -> 2x2-merged tokens in the Thinker's width, + deepstack.

Qwen3-Omni report section 2.3 (vision encoder from Qwen3-VL, SigLIP2-So400M initialised). A Conv3d
cuts (temporal_patch_size x patch x patch) tubes, learned absolute positions are interpolated to
each image's grid, ViT blocks use 2D rotary attention, and a patch merger concatenates each 2x2
group of neighbours and projects it. Deepstack: the outputs of blocks `deepstack_visual_indexes`
are merged by their own mergers (`merger_list`) and added to the hidden states of the first Thinker
layers (that addition is the Thinker's job, not this module's).

HF mirror: Qwen3OmniMoeVisionEncoder (+ PatchEmbed, VisionBlock, VisionPatchMerger,
VisionRotaryEmbedding and the grid helpers of transformers/vision_utils.py).

Input layout, as the processor makes it: `pixel_values` has one row per patch, t * h * w rows per
image or video (grid_thw rows), each row the (channels, temporal_patch_size, patch, patch) pixels
flattened. Inside an image the rows are NOT in raster order: the processor lists them merge block
by merge block (the 2x2 patches that will become one token are consecutive rows), so that merging
is a plain reshape. Everything positional below (learned positions, rotary angles) is therefore
laid out in that same block order.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionEncoderConfig
from .layers import ACTIVATIONS, segment_attention
from .rope import apply_rotary, vision_rotary


class VisionOutput(NamedTuple):
    """What `VisionEncoder.forward` returns. HF's tower returns the same values as an output
    object: `tokens` is its `pooler_output`, `deepstack` its `deepstack_features`, `patch_states`
    its `last_hidden_state`. Items follow one another in grid_thw order; split with
    `merged_token_counts(grid_thw, merge)`."""

    tokens: torch.Tensor    # (sum t*h*w / merge^2, out_hidden_size): merged tokens for the Thinker
    deepstack: list[torch.Tensor]     # one per deepstack_visual_indexes, each shaped like `tokens`
    patch_states: torch.Tensor      # (sum t*h*w, hidden_size): last block's output, before merging


# ---- grids: sizes, block order, positions -------------------------------------------------------

def merged_token_counts(grid_thw: torch.Tensor, merge: int) -> list[int]:
    """Tokens each image / video gives the Thinker: t * h * w / merge^2."""
    return (grid_thw.prod(-1) // merge ** 2).tolist()


def to_block_order(grid: torch.Tensor, merge: int) -> torch.Tensor:
    """(h, w, ...) raster grid -> (h * w, ...) rows in merge-block order: block by block (row-major
    over blocks), and inside a block row-major over its merge x merge patches; the order of the
    processor's pixel rows."""
    h, w = grid.shape[:2]
    rest = grid.shape[2:]
    blocks = grid.reshape(h // merge, merge, w // merge, merge, *rest)      # (H, m, W, m, ...)
    return blocks.transpose(1, 2).reshape(h * w, *grid.shape[2:])                  # (H*W*m*m, ...)


def patch_positions(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """(row, col) of every patch row of pixel_values: (sum t*h*w, 2). Frames of a video repeat the
    same positions: time is not part of the vision tower's rotary (the Thinker's TM-RoPE adds it
    later)."""
    out = []
    for t, h, w in grid_thw.tolist():
        rows, cols = torch.meshgrid(torch.arange(h, device=grid_thw.device),
                                    torch.arange(w, device=grid_thw.device), indexing="ij")
        rc = to_block_order(torch.stack([rows, cols], dim=-1), merge)             # (h*w, 2)
        out.append(rc.repeat(t, 1))                                               # (t*h*w, 2)
    return torch.cat(out)


def interpolated_positions(table: torch.Tensor, grid_thw: torch.Tensor,
                           merge: int) -> torch.Tensor:
    """Learned absolute positions resized to every grid: (sum t*h*w, hidden).

    The table is a side x side grid of vectors (48 x 48 in the real model, trained at 768 px). For
    an h x w image it is resampled bilinearly with align_corners=True: the corner patches get
    exactly the corner vectors and patch i of h sits at i * (side - 1) / (h - 1) on the table. HF
    computes the same thing as a weighted sum of four gathered rows per patch; F.interpolate is the
    textbook statement of it."""
    side = round(table.shape[0] ** 0.5)
    # In fp32 whatever the weights' dtype: HF's sum (bf16 rows times fp32 weights) is fp32 too.
    square = table.float().T.reshape(1, -1, side, side)                   # (1, hidden, side, side)
    out = []
    for t, h, w in grid_thw.tolist():
        grid = F.interpolate(square, size=(h, w), mode="bilinear",
                             align_corners=True)                        # (1, hidden, h, w)
        out.append(to_block_order(grid[0].permute(1, 2, 0), merge).repeat(t, 1))  # (t*h*w, hidden)
    return torch.cat(out)


# ---- modules ------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """One patch row -> one vector: a Conv3d whose kernel equals its stride equals the patch, i.e.
    a linear layer over the flattened (channels, frames, patch, patch) pixels."""

    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        self.patch = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, kernel_size=self.patch[1:],
                              stride=self.patch[1:],
                              bias=True)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.view(-1, *self.patch).to(self.proj.weight.dtype)  # (patches, C, tp, p, p)
        return self.proj(x).flatten(1)                                          # (patches, hidden)


class VisionAttention(nn.Module):
    """Bidirectional multi-head attention with 2-D rotary, inside each image or video frame."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)  # q, k and v in one matmul, split afterwards
        self.proj = nn.Linear(dim, dim)
        self.attn_implementation = "eager"             # or "sdpa": layers.set_attn_implementation

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                frames: list[int]) -> torch.Tensor:
        N, D = x.shape
        qkv = self.qkv(x).view(N, 3, self.heads, -1)                  # (N, 3, heads, head_dim)
        q, k, v = qkv.permute(1, 2, 0, 3)                             # each (heads, N, head_dim)
        # The rotation runs in fp32 (cos, sin are fp32) and returns to x's dtype, as in HF.
        q = apply_rotary(q[None], cos[None], sin[None])[0].to(x.dtype)
        k = apply_rotary(k[None], cos[None], sin[None])[0].to(x.dtype)
        out = segment_attention(q, k, v, frames, self.attn_implementation)   # (heads, N, head_dim)
        return self.proj(out.transpose(0, 1).reshape(N, D))


class VisionMLP(nn.Module):
    """Two biased linear layers with the config's activation between them."""

    def __init__(self, dim: int, intermediate: int, act: str):
        super().__init__()
        self.linear_fc1 = nn.Linear(dim, intermediate, bias=True)
        self.linear_fc2 = nn.Linear(intermediate, dim, bias=True)
        self.act = ACTIVATIONS[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_fc2(self.act(self.linear_fc1(x)))


class VisionBlock(nn.Module):
    """Pre-LayerNorm ViT block; attention stays inside one image or one video frame."""

    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.attn = VisionAttention(cfg.hidden_size, cfg.num_heads)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)

    def forward(self, x, cos, sin, frames):
        x = x + self.attn(self.norm1(x), cos, sin, frames)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """2x2 neighbouring patches -> one token: LayerNorm, concat (4 * dim), Linear, GELU, Linear.

    The final merger normalises each patch before concatenating; the deepstack mergers normalise
    after (`postshuffle`), over the concatenated 4 * dim vector, hence the different LayerNorm
    widths."""

    def __init__(self, cfg: VisionEncoderConfig, postshuffle: bool):
        super().__init__()
        merged = cfg.hidden_size * cfg.spatial_merge_size ** 2
        self.merged = merged
        self.postshuffle = postshuffle
        self.ln_q = nn.LayerNorm(merged if postshuffle else cfg.hidden_size, eps=1e-6)
        # A ModuleList, not Sequential, to keep HF's key names mlp.0 / mlp.2 (index 1 is the
        # parameter-free GELU).
        self.mlp = nn.ModuleList([nn.Linear(merged, merged), nn.GELU(),
                                  nn.Linear(merged, cfg.out_hidden_size)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Block-ordered rows make each group of merge^2 consecutive patches one token: a reshape,
        # no gather.
        if self.postshuffle:
            x = self.ln_q(x.reshape(-1, self.merged))                           # (tokens, 4 * dim)
        else:
            x = self.ln_q(x).reshape(-1, self.merged)                           # (tokens, 4 * dim)
        for layer in self.mlp:
            x = layer(x)
        return x                                                        # (tokens, out_hidden_size)


class VisionEncoder(nn.Module):
    """The vision tower (HF Qwen3OmniMoeVisionEncoder; report section 2.2): pixel patches of
    images and video frames -> one token per 2x2 patches for the Thinker, plus the deepstack
    features of blocks `deepstack_visual_indexes`.

        patch_embed   PatchEmbed         a pixel row per patch -> one vector
        pos_embed     Embedding          learned positions, interpolated to each grid
        blocks        VisionBlock x N    ViT blocks with 2-D rotary, attention within a frame
        merger        PatchMerger        2x2 patches -> one token of the Thinker's width
        merger_list   PatchMerger each   the deepstack features, one merger per chosen block
    """

    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        self.config = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Embedding(cfg.num_position_embeddings, cfg.hidden_size)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg, postshuffle=False)
        self.merger_list = nn.ModuleList(PatchMerger(cfg, postshuffle=True)
                                         for _ in cfg.deepstack_visual_indexes)

    def _check(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> None:
        cfg, m = self.config, self.config.spatial_merge_size
        row = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size ** 2
        if (grid_thw.dim() != 2 or grid_thw.shape[1] != 3 or grid_thw.shape[0] == 0
                or grid_thw.is_floating_point()):
            raise ValueError(f"grid_thw has shape {tuple(grid_thw.shape)} ({grid_thw.dtype}); "
                             "expected an integer (num_images, 3) tensor of (t, h, w) patch "
                             "counts, one row per image or video")
        if (grid_thw < 1).any():
            raise ValueError(f"grid_thw {grid_thw.tolist()} has a zero or negative size; every t, "
                             "h, w must be >= 1")
        bad = [g for g in grid_thw.tolist() if g[1] % m or g[2] % m]
        if bad:
            raise ValueError(f"grid_thw rows {bad}: h and w must be multiples of "
                             f"spatial_merge_size={m} (each {m}x{m} block of patches becomes one "
                             "token); resize the image so both sides are multiples of "
                             f"{m * cfg.patch_size} pixels, as the processor does")
        if pixel_values.dim() != 2 or pixel_values.shape[1] != row:
            raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)}; expected "
                             f"(patches, {row}): one row of {cfg.in_channels} x "
                             f"{cfg.temporal_patch_size} x {cfg.patch_size} x {cfg.patch_size} "
                             "pixels per patch, as the processor flattens them")
        patches = int(grid_thw.prod(-1).sum())
        if pixel_values.shape[0] != patches:
            raise ValueError(f"pixel_values has {pixel_values.shape[0]} patch rows but grid_thw "
                             f"{grid_thw.tolist()} describes {patches} (sum of t * h * w): pass "
                             "the grid_thw that came with these pixels")

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> VisionOutput:
        """pixel_values (patches, C * tp * p * p), grid_thw (num_images, 3) -> VisionOutput."""
        cfg, m = self.config, self.config.spatial_merge_size
        grid_thw = torch.as_tensor(grid_thw, device=pixel_values.device)
        self._check(pixel_values, grid_thw)
        x = self.patch_embed(pixel_values)                                      # (patches, hidden)
        x = x + interpolated_positions(self.pos_embed.weight, grid_thw, m).to(x.dtype)
        head_dim = cfg.hidden_size // cfg.num_heads
        cos, sin = vision_rotary(patch_positions(grid_thw, m), head_dim, cfg.rope_theta)
        # Attention segments: every frame of every image / video on its own (h * w patches each).
        frames = [h * w for t, h, w in grid_thw.tolist() for _ in range(t)]
        deepstack = []
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, frames)
            if i in cfg.deepstack_visual_indexes:
                deepstack.append(self.merger_list[cfg.deepstack_visual_indexes.index(i)](x))
        return VisionOutput(tokens=self.merger(x), deepstack=deepstack, patch_states=x)
