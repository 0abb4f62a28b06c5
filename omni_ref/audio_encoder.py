"""AuT, the audio encoder: log-mel (128 bins, 100 frames/s) -> 12.5 Hz tokens in the Thinker's width.

Qwen3-Omni report section 2.2. Three stride-2 Conv2d layers shrink time and frequency 8x (one token per 80 ms),
a linear layer flattens channels x frequency, sinusoidal positions are added per 1 s chunk, and a Whisper-style
encoder attends inside windows of `n_window_infer` mel frames; two linear layers project to the Thinker.

HF mirror: Qwen3OmniMoeAudioEncoder (+ Qwen3OmniMoeAudioEncoderLayer, SinusoidsPositionEmbedding).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import AudioEncoderConfig


def sinusoid_positions(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positions: (length, channels), sines in the first half, cosines in the second."""
    log_step = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_step * torch.arange(channels // 2).float())
    t = torch.arange(length).float()[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class AudioAttention(nn.Module):
    """Bidirectional multi-head attention with biased projections (Whisper encoder style)."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.q_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)


class AudioEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer layer with a GELU MLP."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.self_attn = AudioAttention(cfg.d_model, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, cfg.d_model)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model)


class AudioEncoder(nn.Module):
    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.config = cfg
        c = cfg.downsample_hidden_size
        self.conv2d1 = nn.Conv2d(1, c, 3, stride=2, padding=1)    # (1, mel, T) -> (c, mel/2, T/2)
        self.conv2d2 = nn.Conv2d(c, c, 3, stride=2, padding=1)    #             -> (c, mel/4, T/4)
        self.conv2d3 = nn.Conv2d(c, c, 3, stride=2, padding=1)    #             -> (c, mel/8, T/8)
        self.conv_out = nn.Linear(c * cfg.freq_after_convs, cfg.d_model, bias=False)
        # Fixed, so not stored in checkpoints (HF registers it as a non-persistent buffer too).
        self.register_buffer("positional_embedding", torch.empty(cfg.max_source_positions, cfg.d_model),
                             persistent=False)
        self.reset_buffers()
        self.layers = nn.ModuleList(AudioEncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.ln_post = nn.LayerNorm(cfg.d_model)
        self.proj1 = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj2 = nn.Linear(cfg.d_model, cfg.output_dim)

    def reset_buffers(self) -> None:
        if self.positional_embedding.device.type != "meta":
            cfg = self.config
            self.positional_embedding.copy_(sinusoid_positions(cfg.max_source_positions, cfg.d_model))
