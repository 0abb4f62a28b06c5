"""Vision tower: pixels -> patch tokens -> 2x2-merged tokens in the Thinker's width, plus deepstack features.

Qwen3-Omni report section 2.3 (vision encoder from Qwen3-VL, SigLIP2-So400M initialised). A Conv3d cuts
(temporal_patch_size x patch x patch) tubes, learned absolute positions are interpolated to each image's grid,
ViT blocks use 2D rotary attention, and a patch merger concatenates each 2x2 group of neighbours and projects it.
Deepstack: the outputs of blocks `deepstack_visual_indexes` are merged by their own mergers (`merger_list`) and
added to the hidden states of the first Thinker layers.

HF mirror: Qwen3OmniMoeVisionEncoder (+ PatchEmbed, VisionBlock, VisionPatchMerger).
"""
from __future__ import annotations

from torch import nn

from .config import VisionEncoderConfig


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        k = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, kernel_size=k, stride=k, bias=True)


class VisionAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)   # q, k and v in one matmul, split afterwards
        self.proj = nn.Linear(dim, dim)


class VisionMLP(nn.Module):
    def __init__(self, dim: int, intermediate: int):
        super().__init__()
        self.linear_fc1 = nn.Linear(dim, intermediate, bias=True)
        self.linear_fc2 = nn.Linear(intermediate, dim, bias=True)


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.attn = VisionAttention(cfg.hidden_size, cfg.num_heads)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.intermediate_size)


class PatchMerger(nn.Module):
    """2x2 neighbouring patches -> one token: LayerNorm, concat (4 * dim), Linear, GELU, Linear -> out width.

    The final merger normalises each patch before concatenating; the deepstack mergers normalise after
    (`postshuffle`), over the concatenated 4 * dim vector, hence the different LayerNorm widths."""

    def __init__(self, cfg: VisionEncoderConfig, postshuffle: bool):
        super().__init__()
        merged = cfg.hidden_size * cfg.spatial_merge_size ** 2
        self.postshuffle = postshuffle
        self.ln_q = nn.LayerNorm(merged if postshuffle else cfg.hidden_size, eps=1e-6)
        # A ModuleList, not Sequential, to keep HF's key names mlp.0 / mlp.2 (index 1 is the parameter-free GELU).
        self.mlp = nn.ModuleList([nn.Linear(merged, merged), nn.GELU(), nn.Linear(merged, cfg.out_hidden_size)])


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        self.config = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Embedding(cfg.num_position_embeddings, cfg.hidden_size)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg, postshuffle=False)
        self.merger_list = nn.ModuleList(PatchMerger(cfg, postshuffle=True) for _ in cfg.deepstack_visual_indexes)
