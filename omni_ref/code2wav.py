"""Code2Wav: 16-codebook codec frames (12.5 Hz) -> 24 kHz waveform, 1920 samples per frame.

Qwen3-Omni report section 2.5 ("streaming codec decoder"). Mean of the per-codebook embeddings, a
sliding-window causal transformer with layer scale, two 2x causal transposed-conv + ConvNeXt
upsampling stages, then a causal ConvNet decoder (SnakeBeta activations, residual units with
dilations 1/3/9) upsampling by 8, 5, 4 and 3; the output is clamped to [-1, 1]. 2*2*8*5*4*3 = 1920
samples per frame, i.e. 80 ms at 24 kHz. HF mirror: Qwen3OmniMoeCode2Wav (keys `code2wav.*`) and
its parts, Qwen3OmniMoeCausalConvNet, Qwen3OmniMoeCausalTransConvNet, Qwen3OmniMoeConvNeXtBlock,
Qwen3OmniMoeSnakeBeta, Qwen3OmniMoeCode2WavTransformerModel.

Streaming (report section 2.5: the decoder "streams" because every part is causal): besides its
full-decode `forward`, each module with memory has a `step(x, state)` that decodes the next piece
of a sequence, carrying what it needs from earlier pieces in a `StreamState`: the pre-transformer
its keys and values over the sliding window, every convolution its last few inputs. Joined, the
steps' outputs equal the full decode. streaming.py wraps this as Code2WavStream (push codes, get
audio), next to StreamingCode2Wav, the piecewise twin of HF's chunked_decode.

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
from .layers import Attention, KVCache, RMSNorm, SwiGLU, causal_mask
from .rope import rope_inv_freq, rotary_cos_sin

SAMPLE_RATE = 24000   # Hz of the output waveform; not in the config, fixed by the codec's training
# HF's chunked decoding (chunked_decode's defaults, and what HF's generate uses): chunks of 300
# frames (24 s), each decoded after 25 frames (2 s) of left context.
CHUNK_SIZE, LEFT_CONTEXT_SIZE = 300, 25


class WindowKVCache(KVCache):
    """A KV cache that keeps only the last `keep` positions of each layer: a sliding window of w
    frames means a new frame attends to itself and the w - 1 before it, and never to older ones."""

    def __init__(self, keep: int):
        super().__init__()
        self.keep = keep

    def update(self, layer_idx, k, v):
        k, v = super().update(layer_idx, k, v)            # (B, Hkv, cached + new, d): all of them
        start = max(k.shape[2] - self.keep, 0)            # attention needs them all this time ...
        self.keys[layer_idx] = k[:, :, start:].clone()    # ... the next push only the window
        self.values[layer_idx] = v[:, :, start:].clone()
        return k, v


class StreamState:
    """Everything a streaming decode carries from one piece of frames to the next.

    One idea covers every convolution: if output step t reads inputs t - span .. t, a streaming
    conv keeps its last `span` inputs (`tails`), glues them in front of the next piece and
    convolves without padding; that gives exactly the outputs the full decode has at those steps.
    Before the first piece the kept inputs are the zeros a causal conv pads with. The
    pre-transformer keeps its keys and values over the sliding window (`kv`) and the number of
    frames seen (`frames`): the next frame's rotary position, continuing, not restarting."""

    def __init__(self):
        self.tails: dict[nn.Module, torch.Tensor] = {}   # conv -> (B, C_in, <= span) last inputs
        self.kv: WindowKVCache | None = None
        self.frames = 0

    def carry(self, conv: nn.Module, x: torch.Tensor, span: int,
              zeros_at_start: bool = True) -> torch.Tensor:
        """x (B, C, n) -> (B, C, kept + n): the inputs `conv` kept from earlier pieces, then x;
        keeps the last `span` of those for the next piece. Before the first piece the kept inputs
        are `span` zeros, or none (zeros_at_start=False)."""
        tail = self.tails.get(conv)
        if tail is None:
            tail = x.new_zeros(x.shape[0], x.shape[1], span if zeros_at_start else 0)
        joined = torch.cat([tail, x], dim=-1) if tail.shape[-1] else x
        # clone: a view would pin the whole joined piece in memory until the next push
        self.tails[conv] = joined[..., max(joined.shape[-1] - span, 0):].clone()
        return joined

    def nbytes(self) -> int:
        held = list(self.tails.values())
        if self.kv is not None:
            held += self.kv.keys + self.kv.values
        return sum(t.numel() * t.element_size() for t in held)


def stream_step(layer: nn.Module, x: torch.Tensor, state: StreamState) -> torch.Tensor:
    """One layer on the next piece: its `step` if it carries state, else plain `forward` (a
    pointwise layer such as SnakeBeta needs no history)."""
    return layer.step(x, state) if hasattr(layer, "step") else layer(x)


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

    def step(self, x, state: StreamState):        # (B, C_in, n) -> (B, C_out, n)
        # The last left_pad inputs of earlier pieces stand where forward puts zeros.
        return self.conv(state.carry(self, x, self.left_pad))    # (B, C_in, left_pad + n) in


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

    def step(self, x, state: StreamState):             # (B, C_in, n) -> (B, C_out, n * stride)
        """Output block j (`stride` samples) mixes inputs j - span .. j, span = kernel / stride - 1
        (1 in the decoder): keep the last input, emit the n blocks the new inputs complete. The
        block that would also need the next input waits for it; at the end of the sequence it is
        what forward's right trim drops, so nothing is owed at the end. Forward's left trim drops
        the stream's first `trim` samples, once (the first step returns n * stride - trim)."""
        n, stride = x.shape[-1], self.conv.stride[0]
        first = self not in state.tails
        x = state.carry(self, x, self.conv.kernel_size[0] // stride - 1,
                        zeros_at_start=False)                  # (B, C_in, kept + n)
        kept = x.shape[-1] - n
        y = self.conv(x)[..., kept * stride: x.shape[-1] * stride]     # (B, C_out, n * stride)
        return y[..., self.trim:] if first else y


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
        return self._pointwise(x, self.dwconv(x))

    def step(self, x, state: StreamState):           # only the depthwise conv looks back in time
        return self._pointwise(x, self.dwconv.step(x, state))

    def _pointwise(self, x, y):                      # x, y = dwconv(x): (B, C, T) -> (B, C, T)
        y = y.transpose(1, 2)                                           # (B, T, C): norms act on C
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

    def step(self, x, state: StreamState):
        return x + self.conv2.step(self.act2(self.conv1.step(self.act1(x), state)), state)


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

    def step(self, x, state: StreamState):    # (B, d_in, n) -> (B, d_out, n * rate), first: - rate
        for layer in self.block:
            x = stream_step(layer, x, state)
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

    def forward(self, x, cos, sin, mask, cache=None, layer_idx=0):
        x = x + self.self_attn_layer_scale(self.self_attn(self.input_layernorm(x), cos, sin, mask,
                                                          cache, layer_idx))
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
        # Positions restart at 0 on every call (also for each chunk of chunked_decode): rotary
        # attention depends only on position differences, so a chunk sees the same scores as it
        # would inside the full sequence.
        cos, sin = self._rotary(0, T, x)                             # (1, T, head_dim)
        mask = causal_mask(T, T, x.dtype, sliding_window=cfg.sliding_window,
                           device=x.device)                  # (1, 1, T, T)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)

    def step(self, x, state: StreamState):                  # (B, n, hidden): the next n frames
        """The next frames attend to themselves and to the keys and values of the sliding_window -
        1 frames before them, which the state carries; positions continue from the frames seen."""
        cfg = self.config
        n = x.shape[1]
        if state.kv is None:
            state.kv = WindowKVCache(cfg.sliding_window - 1)
        cached = state.kv.length                             # <= sliding_window - 1 earlier frames
        cos, sin = self._rotary(state.frames, n, x)          # (1, n, head_dim)
        mask = causal_mask(n, cached + n, x.dtype, sliding_window=cfg.sliding_window,
                           device=x.device)                  # (1, 1, n, cached + n)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, state.kv, i)
        state.frames += n
        return self.norm(x)

    def _rotary(self, start: int, n: int, x):                # positions start .. start + n - 1
        cfg = self.config
        inv_freq = rope_inv_freq(cfg.hidden_size // cfg.num_attention_heads, cfg.rope_theta,
                                 x.device)
        pos = torch.arange(start, start + n, device=x.device)[None]         # (1, n)
        return rotary_cos_sin(pos, inv_freq, x.dtype)                       # (1, n, head_dim) x 2


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
        x = self._embed(codes)                               # (B, T, h)
        x = self.pre_transformer(x).transpose(1, 2)     # (B, h, T): channels first for the ConvNet
        for trans_conv, convnext in self.upsample:
            x = convnext(trans_conv(x))                      # (B, h, 2T), then (B, h, 4T)
        for layer in self.decoder:
            x = layer(x)                                     # ... -> (B, 1, 1920 T - 555)
        return x.clamp(-1, 1)

    def _embed(self, codes):                                 # (B, Q, T) -> (B, T, h)
        cfg = self.config
        offset = torch.arange(cfg.num_quantizers,
                              device=codes.device)[None, :, None] * cfg.codebook_size
        x = self.code_embedding(codes + offset)              # (B, Q, T, h)
        return x.mean(1)                                     # (B, T, h): the codebooks' average

    def step(self, codes, state: StreamState):
        """The next n frames (B, Q, n >= 1) of a sequence -> their audio (B, 1, 1920 n), 555
        samples fewer on the first step: `_decode` with every layer's `step`. Unchecked (the
        caller, Code2WavStream, checks the codes)."""
        x = self.pre_transformer.step(self._embed(codes), state).transpose(1, 2)    # (B, h, n)
        for trans_conv, convnext in self.upsample:
            x = convnext.step(trans_conv.step(x, state), state)     # (B, h, 2n), then (B, h, 4n)
        for layer in self.decoder:
            x = stream_step(layer, x, state)                 # ... -> (B, 1, 1920 n (- 555))
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
