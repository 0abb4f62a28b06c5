"""Code2Wav: 16-codebook codec frames (12.5 Hz) -> 24 kHz waveform, 1920 samples per frame.

Qwen3-Omni report section 2.5. Sum-of-codebook embeddings (averaged), a sliding-window transformer with layer
scale, two 2x causal transposed-conv + ConvNeXt upsampling stages, then a causal ConvNet decoder (SnakeBeta
activations, residual units with dilations 1/3/9) upsampling by 8, 5, 4 and 3; the output is clamped to [-1, 1].
HF mirror: Qwen3OmniMoeCode2Wav (keys `code2wav.*`).
"""
from __future__ import annotations

import torch
from torch import nn

from .config import Code2WavConfig
from .layers import Attention, RMSNorm, SwiGLU


class CausalConv(nn.Module):
    """Conv1d padded on the left only, so an output sample never sees future input (streaming-safe)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, groups=groups)


class CausalTransConv(nn.Module):
    """ConvTranspose1d (upsampling by `stride`) trimmed so that it stays causal."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(c_in, c_out, kernel, stride=stride)


class ConvNeXtBlock(nn.Module):
    """Depthwise causal conv, LayerNorm, 4x pointwise MLP, scaled by `gamma`, residual (Liu et al. 2022)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = CausalConv(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))


class SnakeBeta(nn.Module):
    """x + 1/b * sin^2(a x) with per-channel a, b stored as logs (Ziyin et al. 2020; BigVGAN)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))   # log a
        self.beta = nn.Parameter(torch.zeros(channels))    # log b


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv(dim, dim, 7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv(dim, dim, 1)


class DecoderBlock(nn.Module):
    """SnakeBeta, transposed conv upsampling by `rate` (halving channels), three dilated residual units."""

    def __init__(self, d_in: int, d_out: int, rate: int):
        super().__init__()
        self.block = nn.ModuleList([SnakeBeta(d_in), CausalTransConv(d_in, d_out, 2 * rate, rate)]
                                   + [ResidualUnit(d_out, d) for d in (1, 3, 9)])


class LayerScale(nn.Module):
    """Per-channel residual scale (Touvron et al. 2021), starting small so each layer starts near identity."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init))


class PreTransformerLayer(nn.Module):
    def __init__(self, cfg: Code2WavConfig):
        super().__init__()
        h = cfg.hidden_size
        self.self_attn = Attention(h, cfg.num_attention_heads, cfg.num_key_value_heads,
                                   h // cfg.num_attention_heads, bias=cfg.attention_bias, qk_norm=False)
        self.mlp = SwiGLU(h, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(h, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(h, cfg.rms_norm_eps)
        self.self_attn_layer_scale = LayerScale(h, cfg.layer_scale_initial_scale)
        self.mlp_layer_scale = LayerScale(h, cfg.layer_scale_initial_scale)


class PreTransformer(nn.Module):
    def __init__(self, cfg: Code2WavConfig):
        super().__init__()
        self.layers = nn.ModuleList(PreTransformerLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Code2Wav(nn.Module):
    def __init__(self, cfg: Code2WavConfig):
        super().__init__()
        self.config = cfg
        h = cfg.hidden_size
        # All quantizers share one table; quantizer q's code c lives at row q * codebook_size + c.
        self.code_embedding = nn.Embedding(cfg.codebook_size * cfg.num_quantizers, h)
        self.pre_transformer = PreTransformer(cfg)
        self.upsample = nn.ModuleList(
            nn.ModuleList([CausalTransConv(h, h, r, r), ConvNeXtBlock(h)]) for r in cfg.upsampling_ratios)
        dims = [cfg.decoder_dim // 2 ** i for i in range(len(cfg.upsample_rates) + 1)]  # 1536, 768, 384, 192, 96
        self.decoder = nn.ModuleList(
            [CausalConv(h, dims[0], 7)]
            + [DecoderBlock(dims[i], dims[i + 1], r) for i, r in enumerate(cfg.upsample_rates)]
            + [SnakeBeta(dims[-1]), CausalConv(dims[-1], 1, 7)])

    def forward(self, codes):
        raise NotImplementedError("the Code2Wav forward pass arrives with issue 6")
