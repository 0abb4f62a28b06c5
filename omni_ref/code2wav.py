"""Code2Wav: 16-codebook codec frames (12.5 Hz) -> 24 kHz waveform, 1920 samples per frame.

Qwen3-Omni report section 2.5 ("streaming codec decoder"). Mean of the per-codebook embeddings, a
sliding-window causal transformer with layer scale, two 2x causal transposed-conv + ConvNeXt
upsampling stages, then a causal ConvNet decoder (SnakeBeta activations, residual units with
dilations 1/3/9) upsampling by 8, 5, 4 and 3; the output is clamped to [-1, 1]. 2*2*8*5*4*3 = 1920
samples per frame, i.e. 80 ms at 24 kHz. HF mirror: Qwen3OmniMoeCode2Wav (keys `code2wav.*`) and
its parts, Qwen3OmniMoeCausalConvNet, Qwen3OmniMoeCausalTransConvNet, Qwen3OmniMoeConvNeXtBlock,
Qwen3OmniMoeSnakeBeta, Qwen3OmniMoeCode2WavTransformerModel. The incremental (push codes, get
audio) decoder is in streaming.py.

Length quirk, reproduced because the checkpoint was trained with it: every decoder transposed conv
(kernel 2r, stride r) is trimmed by r samples on BOTH sides, where a causal one would trim r on the
right only. Each stage thus starts r samples late, and the loss compounds through the later
upsamplings: 8*60 + 5*12 + 4*3 + 3 = 555 samples. A decode of T frames is 1920*T - 555 samples, and
its sample n belongs to time n + 555 of the ideal 1920-per-frame grid (`samples_lost_at_start`).
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from .config import Code2WavConfig
from .layers import Attention, RMSNorm, SwiGLU, causal_mask
from .rope import rope_inv_freq, rotary_cos_sin

SAMPLE_RATE = 24000   # Hz of the output waveform; not in the config, fixed by the codec's training
# HF's chunked decoding (chunked_decode's defaults, and what HF's generate uses): chunks of 300
# frames (24 s), each decoded after 25 frames (2 s) of left context.
CHUNK_SIZE, LEFT_CONTEXT_SIZE = 300, 25


class CausalConv(nn.Module):
    """Conv1d padded on the left only: no output sample sees future input (streaming-safe)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, groups=groups)
        self.left_pad = (kernel - 1) * dilation      # the dilated kernel's span, minus this sample

    def forward(self, x):                             # (B, C_in, T) -> (B, C_out, T)
        # HF also computes a right "extra padding" for strided convs; with stride 1 (all of
        # Code2Wav) it is 0.
        return self.conv(F.pad(x, (self.left_pad, 0)))


class CausalTransConv(nn.Module):
    """ConvTranspose1d upsampling by `stride`, trimmed by kernel - stride samples on each side.

    kernel == stride (the 2x pre-upsampling): no overlap, no trim, exactly stride * L outputs.
    kernel == 2 * stride (the decoder): (L + 1) * stride outputs, trimmed to (L - 1) * stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(c_in, c_out, kernel, stride=stride)
        self.trim = kernel - stride

    def forward(self, x):              # (B, C_in, L) -> (B, C_out, (L-1)*stride + kernel - 2*trim)
        y = self.conv(x)
        return y[..., self.trim: y.shape[-1] - self.trim]


class ConvNeXtBlock(nn.Module):
    """Depthwise causal conv, LayerNorm, 4x MLP, scaled by `gamma`, residual (Liu et al. 2022)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = CausalConv(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):                                                          # (B, C, T)
        y = self.dwconv(x).transpose(1, 2)                              # (B, T, C): norms act on C
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))              # exact (erf) GELU, as HF
        return x + (self.gamma * y).transpose(1, 2)                                # (B, C, T)


class SnakeBeta(nn.Module):
    """x + 1/b * sin^2(a x) with per-channel a, b stored as logs (Ziyin et al. 2020; BigVGAN).

    A periodic activation suits waveforms: it lets the ConvNet produce oscillations without
    learning them from piecewise-linear pieces. The 1e-9 keeps 1/b finite; HF adds it the same way,
    so we do too."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))   # log a: frequency
        self.beta = nn.Parameter(torch.zeros(channels))    # log b: 1/b is the magnitude

    def forward(self, x):                                  # (B, C, T)
        a = self.alpha.exp()[None, :, None]
        b = self.beta.exp()[None, :, None]
        return x + (1.0 / (b + 1e-9)) * torch.pow(torch.sin(x * a), 2)


class ResidualUnit(nn.Module):
    """Snake, dilated causal conv (kernel 7), Snake, 1x1 conv, plus the input: dilations 1, 3, 9
    stacked in a DecoderBlock see 6 * (1 + 3 + 9) = 78 past samples at that block's rate."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv(dim, dim, 7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv(dim, dim, 1)

    def forward(self, x):
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))


class DecoderBlock(nn.Module):
    """SnakeBeta, transposed conv upsampling by `rate` (half the channels), 3 residual units."""

    def __init__(self, d_in: int, d_out: int, rate: int):
        super().__init__()
        self.block = nn.ModuleList([SnakeBeta(d_in), CausalTransConv(d_in, d_out, 2 * rate, rate)]
                                   + [ResidualUnit(d_out, d) for d in (1, 3, 9)])

    def forward(self, x):                       # (B, d_in, L) -> (B, d_out, (L - 1) * rate)
        for layer in self.block:
            x = layer(x)
        return x


class LayerScale(nn.Module):
    """Per-channel residual scale (Touvron et al. 2021), small so a layer starts near identity."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init))

    def forward(self, x):
        return self.scale * x


class PreTransformerLayer(nn.Module):
    """Pre-norm Qwen3 layer (no QK-norm) with both residual branches scaled by a layer scale."""

    def __init__(self, cfg: Code2WavConfig):
        super().__init__()
        h = cfg.hidden_size
        self.self_attn = Attention(h, cfg.num_attention_heads, cfg.num_key_value_heads,
                                   h // cfg.num_attention_heads, bias=cfg.attention_bias,
                                   qk_norm=False)
        self.mlp = SwiGLU(h, cfg.intermediate_size, cfg.hidden_act)
        self.input_layernorm = RMSNorm(h, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(h, cfg.rms_norm_eps)
        self.self_attn_layer_scale = LayerScale(h, cfg.layer_scale_initial_scale)
        self.mlp_layer_scale = LayerScale(h, cfg.layer_scale_initial_scale)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn_layer_scale(self.self_attn(self.input_layernorm(x), cos, sin, mask))
        return x + self.mlp_layer_scale(self.mlp(self.post_attention_layernorm(x)))


class PreTransformer(nn.Module):
    """Causal transformer over frames; each frame attends to itself and the sliding_window - 1
    frames before it, so L layers see L * (sliding_window - 1) frames back (568 frames, 45 s, in
    the real model)."""

    def __init__(self, cfg: Code2WavConfig):
        super().__init__()
        self.config = cfg
        self.layers = nn.ModuleList(PreTransformerLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x):                                            # (B, T, hidden)
        cfg = self.config
        T = x.shape[1]
        inv_freq = rope_inv_freq(cfg.hidden_size // cfg.num_attention_heads, cfg.rope_theta,
                                 x.device)
        # Positions restart at 0 on every call (also for each chunk of chunked_decode): rotary
        # attention depends only on position differences, so a chunk sees the same scores as it
        # would inside the full sequence.
        pos = torch.arange(T, device=x.device)[None]                 # (1, T)
        cos, sin = rotary_cos_sin(pos, inv_freq, x.dtype)            # (1, T, head_dim)
        mask = causal_mask(T, T, x.dtype, sliding_window=cfg.sliding_window,
                           device=x.device)                  # (1, 1, T, T)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)


def samples_lost_at_start(cfg: Code2WavConfig) -> int:
    """Samples a decode is short of T * samples_per_frame (555 for rates 8, 5, 4, 3): each decoder
    stage drops `rate` samples at its start, later multiplied by every following rate."""
    lost, rates = 0, list(cfg.upsample_rates)
    for i, r in enumerate(rates):
        later = 1
        for q in rates[i + 1:]:
            later *= q
        lost += r * later
    return lost


def chunk_spans(n_frames: int, chunk_size: int,
                left_context_size: int) -> list[tuple[int, int, int]]:
    """The chunks of chunked_decode as (start, end, context): chunk j decodes codes[start - context
    : end] and keeps the audio after its `context` frames. context = min(left_context_size,
    start)."""
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: a chunk must hold at least 1 frame (HF's "
                         f"default is {CHUNK_SIZE})")
    if not isinstance(left_context_size, numbers.Integral) or left_context_size < 0:
        raise ValueError(f"left_context_size={left_context_size!r}: use 0 or more frames (HF's "
                         f"default is {LEFT_CONTEXT_SIZE})")
    return [(start, min(start + chunk_size, n_frames), min(left_context_size, start))
            for start in range(0, n_frames, chunk_size)]


class Code2Wav(nn.Module):
    """The whole vocoder (HF Qwen3OmniMoeCode2Wav): codes (B, num_quantizers, T) -> waveform (B, 1,
    1920 T - 555)."""

    def __init__(self, cfg: Code2WavConfig):
        super().__init__()
        self.config = cfg
        h = cfg.hidden_size
        # All quantizers share one table; quantizer q's code c lives at row q * codebook_size + c.
        self.code_embedding = nn.Embedding(cfg.codebook_size * cfg.num_quantizers, h)
        self.pre_transformer = PreTransformer(cfg)
        self.upsample = nn.ModuleList(
            nn.ModuleList([CausalTransConv(h, h, r, r), ConvNeXtBlock(h)])
            for r in cfg.upsampling_ratios)
        # Channels of the decoder stages: 1536, 768, 384, 192, 96 in the real model.
        dims = [cfg.decoder_dim // 2 ** i for i in range(len(cfg.upsample_rates) + 1)]
        self.decoder = nn.ModuleList(
            [CausalConv(h, dims[0], 7)]
            + [DecoderBlock(dims[i], dims[i + 1], r) for i, r in enumerate(cfg.upsample_rates)]
            + [SnakeBeta(dims[-1]), CausalConv(dims[-1], 1, 7)])

    @property
    def total_upsample(self) -> int:
        return self.config.samples_per_frame       # HF's name for it: 1920

    def check_codes(self, codes, allow_empty: bool = False) -> None:
        """Refuse what HF would decode into noise or crash on, with the reason and the fix."""
        cfg = self.config
        if not isinstance(codes, torch.Tensor):
            raise TypeError("codes must be a torch tensor of codec ids, got "
                            f"{type(codes).__name__}")
        if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
            raise TypeError("codes must be an integer tensor (torch.long) of codec ids, got "
                            f"{codes.dtype}; convert ids with codes.long(), don't pass embeddings "
                            "or audio")
        if codes.ndim != 3:
            raise ValueError("codes must be (batch, num_quantizers, frames), got shape "
                             f"{tuple(codes.shape)}; add the batch axis with codes[None]")
        if codes.shape[1] != cfg.num_quantizers:
            raise ValueError(f"codes have {codes.shape[1]} quantizers on axis 1 but this Code2Wav "
                             f"expects {cfg.num_quantizers} (codebook 0 from the Talker + "
                             f"{cfg.num_quantizers - 1} from the code predictor); is the layout "
                             "(batch, frames, quantizers)? then transpose(1, 2)")
        if codes.shape[2] == 0:
            if allow_empty:
                return
            raise ValueError("codes have 0 frames: there is nothing to decode")
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= cfg.codebook_size:
            raise ValueError(f"codes must lie in 0..{cfg.codebook_size - 1} (codebook_size - 1), "
                             f"found {lo}..{hi}; drop the Talker's control ids (pad / bos / eos "
                             "are >= codebook_size) before decoding")

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, num_quantizers, T) -> waveform (B, 1, 1920 * T - 555) in [-1, 1]."""
        self.check_codes(codes)
        return self._decode(codes)

    def _decode(self, codes):
        cfg = self.config
        offset = torch.arange(cfg.num_quantizers,
                              device=codes.device)[None, :, None] * cfg.codebook_size
        x = self.code_embedding(codes + offset)              # (B, Q, T, h)
        x = x.mean(1)                                        # (B, T, h): the codebooks' average
        x = self.pre_transformer(x).transpose(1, 2)     # (B, h, T): channels first for the ConvNet
        for trans_conv, convnext in self.upsample:
            x = convnext(trans_conv(x))                      # (B, h, 2T), then (B, h, 4T)
        for layer in self.decoder:
            x = layer(x)                                     # ... -> (B, 1, 1920 T - 555)
        return x.clamp(-1, 1)

    def chunked_decode(self, codes: torch.Tensor, chunk_size: int = CHUNK_SIZE,
                       left_context_size: int = LEFT_CONTEXT_SIZE):
        """Decode `chunk_size` frames at a time, each chunk preceded by up to `left_context_size`
        frames of already-decoded codes whose audio is recomputed and thrown away, so the chunk's
        start is not decoded from silence. Memory stays bounded for long audio; the result equals
        HF's chunked_decode.

        HF quirk kept: the slice drops context * 1920 samples, but a decode's first 555 samples are
        already missing (module doc), so every chunk after the first also loses its own first 555
        samples (23 ms): the result is 555 samples shorter per chunk boundary than the full decode.
        streaming.py measures this."""
        self.check_codes(codes)
        spf = self.config.samples_per_frame
        pieces = []
        for start, end, context in chunk_spans(codes.shape[-1], chunk_size, left_context_size):
            wav = self._decode(codes[..., start - context:end])  # (B, 1, 1920 (ctx + chunk) - 555)
            pieces.append(wav[..., context * spf:])
        return torch.cat(pieces, dim=-1)
