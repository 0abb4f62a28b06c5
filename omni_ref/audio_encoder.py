"""AuT, the audio encoder: log-mel (128 bins, 100 frames/s) -> 12.5 Hz tokens, Thinker width.

Qwen3-Omni report section 2.2. The mel frames of each audio are cut into 1 s chunks (2 * n_window
frames), three stride-2 Conv2d layers shrink each chunk 8x in time and frequency (one token per 80
ms), a linear layer flattens channels x frequency, sinusoidal positions are added, restarting at 0
in every chunk, and a Whisper-style encoder attends inside windows of `n_window_infer` mel frames
(8 s); two linear layers project to the Thinker's width.

HF mirror: Qwen3OmniMoeAudioEncoder (+ Qwen3OmniMoeAudioEncoderLayer, SinusoidsPositionEmbedding
and the helpers chunk_and_pad_features, get_valid_indices, get_audio_cu_seqlens,
_get_feat_extract_output_lengths).

Input contract, as HF's tower receives it from `Qwen3OmniMoeThinkerModel.get_audio_features`: the
processor gives padded features (num_audios, mel, frames) plus `feature_attention_mask`
(num_audios, frames); the Thinker packs the real frames of all audios side by side into one (mel,
total_frames) matrix and passes the per-audio frame counts as `feature_lens`
(`pack_padded_features` below). The encoder returns (total_tokens, output_dim): the tokens of all
audios concatenated, audio after audio, in the order the placeholders appear in the prompt.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import AudioEncoderConfig
from .layers import ACTIVATIONS, segment_attention


def sinusoid_positions(length: int, channels: int, max_timescale: float = 10000.0,
                       device=None) -> torch.Tensor:
    """Whisper's fixed positions: (length, channels), sines in the first half, cosines after."""
    log_step = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_step * torch.arange(channels // 2, device=device).float())
    t = torch.arange(length, device=device).float()[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


# ---- how many tokens a number of mel frames becomes ---------------------------------------------

def conv_stack_length(frames):
    """Length after the three (kernel 3, stride 2, padding 1) convolutions: ceil(n / 2), three
    times. Works on ints and integer tensors alike; 0 frames stay 0 (floor division: (0 - 1) // 2 +
    1 == 0)."""
    for _ in range(3):
        frames = (frames - 1) // 2 + 1
    return frames


def audio_token_count(mel_frames, n_window: int = 50):
    """Audio tokens the encoder makes from `mel_frames` frames (int or integer tensor): HF's
    `_get_feat_extract_output_lengths`, which the processor also uses to expand the audio
    placeholder.

    The audio is cut into chunks of 2 * n_window frames that are convolved separately, so the count
    is (full chunks) x (tokens per full chunk) + (tokens of the leftover tail). With n_window = 50:
    100 frames -> 13 tokens, so 1 s -> 13, 7.3 s (730 frames) -> 7 * 13 + 4 = 95. HF writes the 13
    as a literal; we derive it from the chunk size, which gives the same number for every published
    config (n_window = 50)."""
    chunk = 2 * n_window
    return (mel_frames // chunk) * conv_stack_length(chunk) + conv_stack_length(mel_frames % chunk)


def pack_padded_features(input_features: torch.Tensor, feature_attention_mask: torch.Tensor):
    """Processor layout -> encoder layout, as HF's Thinker does before calling its audio tower.

    input_features (num_audios, mel, frames) padded, feature_attention_mask (num_audios, frames)
    with 1 on real frames -> (features (mel, total_real_frames), feature_lens (num_audios,))."""
    if input_features.dim() != 3 or feature_attention_mask.dim() != 2 \
            or input_features.shape[::2] != feature_attention_mask.shape:
        raise ValueError(f"input_features {tuple(input_features.shape)} and "
                         f"feature_attention_mask {tuple(feature_attention_mask.shape)} should be "
                         "(num_audios, mel, frames) and (num_audios, frames), as the processor "
                         "returns them")
    keep = feature_attention_mask.bool()
    features = input_features.transpose(1, 2)[keep].T             # (mel, total_real_frames)
    return features, keep.sum(-1)


# ---- the encoder --------------------------------------------------------------------------------

class AudioAttention(nn.Module):
    """Bidirectional multi-head attention, biased projections (Whisper encoder), no rotary."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.q_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.attn_implementation = "eager"             # or "sdpa": layers.set_attn_implementation

    def forward(self, x: torch.Tensor, windows: list[int]) -> torch.Tensor:
        T, D = x.shape
        q, k, v = (p(x).view(T, self.heads, -1).transpose(0, 1)              # (heads, T, head_dim)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = segment_attention(q, k, v, windows, self.attn_implementation)      # (heads, T, d)
        out = out.transpose(0, 1).reshape(T, D)                                  # (T, d_model)
        return self.out_proj(out)


class AudioEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer layer with a GELU MLP."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.self_attn = AudioAttention(cfg.d_model, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, cfg.d_model)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model)
        self.act = ACTIVATIONS[cfg.activation_function]

    def forward(self, x: torch.Tensor, windows: list[int]) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), windows)
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


@dataclass
class AudioTrace:
    """What happened inside one forward pass, for teaching (`forward(..., trace=True)`)."""

    chunk_frames: list[int]                 # mel frames of every 1 s conv chunk, audio after audio
    chunk_tokens: list[int]                 # tokens each chunk keeps after the convolutions
    shapes: dict[str, tuple] = field(default_factory=dict)   # shape after each step, by name
    window_tokens: list[int] = field(default_factory=list)   # per attention window (cu_seqlens)
    audio_tokens: list[int] = field(default_factory=list)    # tokens per audio


class AudioEncoder(nn.Module):
    """AuT, the audio encoder (HF Qwen3OmniMoeAudioEncoder; report section 2.2): packed log-mel
    frames of one or more audios -> 12.5 Hz tokens in the Thinker's width (see the module doc).

        conv2d1..3   three stride-2 Conv2d over (mel, time) of each 1 s chunk: 8x fewer of both
        conv_out     Linear      channels x remaining mel bins -> d_model
        layers       AudioEncoderLayer x N    Whisper-style, attention inside 8 s windows
        ln_post, proj1, proj2    LayerNorm, then a GELU MLP to output_dim

    `split_into_chunks` and `attention_windows` are the two bookkeeping steps a reader may want
    on their own; `forward(..., trace=True)` records the shape after each step."""

    def __init__(self, cfg: AudioEncoderConfig):
        super().__init__()
        self.config = cfg
        c = cfg.downsample_hidden_size
        self.conv2d1 = nn.Conv2d(1, c, 3, stride=2, padding=1)    # (1, mel, T) -> (c, mel/2, T/2)
        self.conv2d2 = nn.Conv2d(c, c, 3, stride=2, padding=1)    #             -> (c, mel/4, T/4)
        self.conv2d3 = nn.Conv2d(c, c, 3, stride=2, padding=1)    #             -> (c, mel/8, T/8)
        self.conv_out = nn.Linear(c * cfg.freq_after_convs, cfg.d_model, bias=False)
        # Fixed, so not stored in checkpoints (HF registers it as a non-persistent buffer too).
        self.register_buffer("positional_embedding",
                             torch.empty(cfg.max_source_positions, cfg.d_model),
                             persistent=False)
        self.reset_buffers()
        self.layers = nn.ModuleList(AudioEncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.ln_post = nn.LayerNorm(cfg.d_model)
        self.proj1 = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj2 = nn.Linear(cfg.d_model, cfg.output_dim)

    def reset_buffers(self) -> None:
        """(Re)compute the table on the buffer's device, in fp32 whatever the weights' dtype, as
        HF keeps it (forward casts it to the activations' dtype). On meta, checkpoint.load calls
        this again once the model has a real device."""
        device = self.positional_embedding.device
        if device.type != "meta":
            cfg = self.config
            self.positional_embedding = sinusoid_positions(cfg.max_source_positions, cfg.d_model,
                                                           device=device)

    def _check(self, input_features: torch.Tensor, feature_lens) -> torch.Tensor:
        mel = self.config.num_mel_bins
        if input_features.dim() == 3:
            raise ValueError(f"input_features {tuple(input_features.shape)} is batched; the "
                             "encoder takes the real frames of all audios side by side, (mel, "
                             "total_frames): convert with pack_padded_features(input_features, "
                             "feature_attention_mask)")
        if input_features.dim() != 2 or input_features.shape[0] != mel:
            raise ValueError(f"input_features has shape {tuple(input_features.shape)}; expected "
                             f"({mel}, total_frames) with {mel} mel bins (config.num_mel_bins): "
                             f"compute the log-mel features with {mel} bins, time along the last "
                             "axis")
        lens = torch.as_tensor(feature_lens, device=input_features.device).long().reshape(-1)
        if lens.numel() == 0 or (lens < 1).any():
            raise ValueError(f"feature_lens {lens.tolist()} must list at least one audio, each at "
                             "least 1 frame")
        if lens.sum().item() != input_features.shape[1]:
            raise ValueError(f"feature_lens {lens.tolist()} add up to {lens.sum().item()} frames "
                             f"but input_features has {input_features.shape[1]}: give one length "
                             "per audio, summing to the frame count")
        return lens

    def split_into_chunks(self, input_features: torch.Tensor, feature_lens: torch.Tensor):
        """(mel, total_frames) -> (chunks (num_chunks, mel, longest_chunk), frames per chunk).

        Every audio restarts its chunking at its own first frame. Short tails are zero-padded to
        the longest chunk of the whole call (HF's pad_sequence), not to 2 * n_window: when every
        chunk is short the padding is less. This matters for values, not only shapes: the padded
        frames go through the convolutions too and their outputs (the conv bias) leak into a tail's
        last token. So a 0.3 s clip alone and the same clip batched with a longer one differ
        slightly in their final token; we reproduce this rather than 'fix' it."""
        chunk = 2 * self.config.n_window
        pieces = []
        for audio in input_features.split(feature_lens.tolist(), dim=1):
            pieces += list(audio.split(chunk, dim=1))                        # each (mel, <= chunk)
        frames = [p.shape[1] for p in pieces]
        longest = max(frames)
        pieces = [F.pad(p, (0, longest - p.shape[1])) for p in pieces]   # each (mel, longest)
        padded = torch.stack(pieces)                                     # (chunks, mel, longest)
        return padded, frames

    def attention_windows(self, feature_lens: torch.Tensor) -> list[int]:
        """Token count of each attention window: an audio's tokens cut into windows of
        `n_window_infer` frames' worth (8 s -> 104 tokens), the last one shorter. Windows never
        span two audios.

        HF derives the window from the longest chunk in the call (its tokens x n_window_infer /
        chunk); whenever an audio is long enough to need more than one window that chunk is a full
        one, so it is this same number."""
        window = audio_token_count(self.config.n_window_infer, self.config.n_window)
        out = []
        for n in audio_token_count(feature_lens, self.config.n_window).tolist():
            out += [window] * (n // window) + ([n % window] if n % window else [])
        return out

    def forward(self, input_features: torch.Tensor, feature_lens, trace: bool = False):
        """input_features (mel, total_frames), feature_lens (num_audios,) -> (tokens, output_dim).

        With trace=True returns (tokens, AudioTrace) with the chunk sizes, each step's shape and
        the windows."""
        cfg = self.config
        lens = self._check(input_features, feature_lens)
        chunks, chunk_frames = self.split_into_chunks(input_features, lens)
        x = chunks[:, None].to(self.conv2d1.weight.dtype)                # (chunks, 1, mel, frames)
        shapes = {"chunks": tuple(x.shape)}
        outs = []
        # Chunks go through the convolutions conv_chunksize at a time, only to bound memory on long
        # audio.
        for group in x.split(cfg.conv_chunksize, dim=0):
            for name in ("conv2d1", "conv2d2", "conv2d3"):    # always the exact (erf) GELU here
                group = F.gelu(getattr(self, name)(group))    # channels up, mel and time halved
                shapes[name] = (x.shape[0],) + tuple(group.shape[1:])
            outs.append(group)
        x = torch.cat(outs)                                          # (chunks, c, mel/8, frames/8)
        n, c, f, t = x.shape
        x = self.conv_out(x.permute(0, 3, 1, 2).reshape(n, t, c * f))        # (chunks, t, d_model)
        shapes["conv_out"] = tuple(x.shape)
        x = x + self.positional_embedding[:t].to(x.dtype)     # positions 0..t-1 inside every chunk
        # Drop the tokens that came from padding: each chunk keeps conv_stack_length(its frames)
        # tokens.
        chunk_tokens = conv_stack_length(torch.tensor(chunk_frames, device=x.device))
        keep = torch.arange(t, device=x.device)[None, :] < chunk_tokens[:, None]   # (chunks, t)
        x = x[keep]                                                       # (total_tokens, d_model)
        shapes["tokens"] = tuple(x.shape)
        windows = self.attention_windows(lens)
        for layer in self.layers:
            x = layer(x, windows)
        act = ACTIVATIONS[cfg.activation_function]
        x = self.proj2(act(self.proj1(self.ln_post(x))))                     # (tokens, output_dim)
        shapes["output"] = tuple(x.shape)
        if not trace:
            return x
        return x, AudioTrace(chunk_frames=chunk_frames, chunk_tokens=chunk_tokens.tolist(),
                             shapes=shapes,
                             window_tokens=windows,
                             audio_tokens=audio_token_count(lens, cfg.n_window).tolist())

