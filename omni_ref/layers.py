"""Building blocks shared by every decoder in Qwen3-Omni: RMSNorm, attention, the SwiGLU MLP, a decoder layer.

The Thinker's text decoder, the Talker, the MTP code predictor and Code2Wav's pre-transformer are all the same
pre-norm transformer layer (Qwen3 architecture) with different widths and a different feed-forward part:

    x = x + attn(rms_norm(x))          # grouped-query attention, optional per-head QK-norm
    x = x + ffn(rms_norm(x))           # dense SwiGLU, or a mixture of experts (moe.py)

HF mirrors: Qwen3OmniMoeThinkerTextRMSNorm, Qwen3OmniMoeThinkerTextAttention, Qwen3OmniMoeMLP,
Qwen3OmniMoeThinkerTextDecoderLayer. Parameter names follow HF's checkpoint keys so the key map stays short.
"""
from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): x / rms(x) * weight, no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps


class Attention(nn.Module):
    """Multi-head attention with grouped K/V heads and, in Qwen3 decoders, an RMSNorm on each query and key
    head (QK-norm) applied before the rotary embedding.

    q_proj: (hidden -> heads * head_dim); k_proj, v_proj: (hidden -> kv_heads * head_dim). Note that
    heads * head_dim need not equal hidden: the real Thinker attends in 32 x 128 = 4096 dims from a 2048 stream.
    """

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, bias: bool = False,
                 qk_norm: bool = True, eps: float = 1e-6):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=bias)
        if qk_norm:  # normalises each head vector separately, so the weight has head_dim entries
            self.q_norm = RMSNorm(head_dim, eps)
            self.k_norm = RMSNorm(head_dim, eps)


class SwiGLU(nn.Module):
    """Dense gated feed-forward: down(silu(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants")."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)


class DecoderLayer(nn.Module):
    """One pre-norm transformer layer; `mlp` is a SwiGLU or a sparse MoE block."""

    def __init__(self, attn: Attention, mlp: nn.Module, hidden: int, eps: float):
        super().__init__()
        self.self_attn = attn
        self.mlp = mlp
        self.input_layernorm = RMSNorm(hidden, eps)
        self.post_attention_layernorm = RMSNorm(hidden, eps)


def decoder_layers(cfg, make_mlp) -> nn.ModuleList:
    """The layer stack of a Qwen3 decoder config (TextConfig, TalkerTextConfig, CodePredictorConfig)."""
    return nn.ModuleList(
        DecoderLayer(
            Attention(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.resolved_head_dim,
                      bias=cfg.attention_bias, qk_norm=True, eps=cfg.rms_norm_eps),
            make_mlp(i), cfg.hidden_size, cfg.rms_norm_eps)
        for i in range(cfg.num_hidden_layers))
