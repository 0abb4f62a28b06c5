"""Building blocks of every decoder in Qwen3-Omni: RMSNorm, attention, SwiGLU, a decoder layer.

The Thinker's text decoder, the Talker, the MTP code predictor and Code2Wav's pre-transformer are
all the same pre-norm transformer layer (Qwen3 architecture) with different widths and a different
feed-forward part:

    x = x + attn(rms_norm(x))          # grouped-query attention, optional per-head QK-norm
    x = x + ffn(rms_norm(x))           # dense SwiGLU, or a mixture of experts (moe.py)

Rotary position embedding, which attention applies to its queries and keys, lives in rope.py.

HF mirrors: Qwen3OmniMoeThinkerTextRMSNorm, Qwen3OmniMoeThinkerTextAttention, Qwen3OmniMoeMLP,
Qwen3OmniMoeThinkerTextDecoderLayer. Parameter names follow HF's checkpoint keys so the key map
stays short.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rotary

# The activations a config's hidden_act / activation_function may name (config.py checks it).
ACTIVATIONS = {
    "silu": F.silu,
    "gelu": F.gelu,                                               # exact erf form
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
}

# How attention mixes the values (HF's attn_implementation): steps 7-9 of Attention.forward written
# out, or the same maths in one fused torch call. `set_attn_implementation` switches a model.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


# ---- attention inside segments (encoders) ------------------------------------------------------

def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      lengths: list[int], implementation: str = "eager") -> torch.Tensor:
    """Attention within consecutive segments only: q, k, v (heads, T, d); T = sum(lengths).

    Tokens of different segments (audio windows, image frames) never see each other. Computing
    each segment on its own is what HF's eager path does (its `cu_seqlens` are the cumulative
    `lengths`), and it costs sum(len^2) instead of T^2 for one big block-diagonal mask.
    implementation: "eager" or "sdpa", as the calling encoder's attention was set
    (set_attn_implementation)."""
    outs = []
    for qs, ks, vs in zip(q.split(lengths, 1), k.split(lengths, 1), v.split(lengths, 1)):
        if implementation == "sdpa":          # the three lines below in one fused call
            outs.append(F.scaled_dot_product_attention(qs, ks, vs))
            continue
        scores = qs @ ks.transpose(1, 2) * qs.shape[-1] ** -0.5             # (heads, len, len)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(qs.dtype)
        outs.append(probs @ vs)                                             # (heads, len, d)
    return torch.cat(outs, dim=1)                                           # (heads, T, d)


# ---- masks -------------------------------------------------------------------------------------

def causal_mask(q_len: int, kv_len: int, dtype: torch.dtype, padding: torch.Tensor | None = None,
                sliding_window: int | None = None, device=None) -> torch.Tensor:
    """Additive attention mask (B or 1, 1, q_len, kv_len): 0 where a query may look, else -huge.

    The queries are the last q_len of kv_len positions (earlier ones are in the KV cache). A key is
    visible if it is not in the future, not padding (padding: (B, kv_len) with 1 = real token),
    and, with a sliding window w, fewer than w positions back. We add finfo.min rather than -inf,
    as HF's eager path does, so that a fully masked row (a padding query) gives a uniform softmax
    instead of NaN.
    """
    q_idx = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    k_idx = torch.arange(kv_len, device=device)[None, :]
    allowed = k_idx <= q_idx                                       # (q_len, kv_len)
    if sliding_window is not None:
        allowed = allowed & (k_idx > q_idx - sliding_window)
    allowed = allowed[None, None]                                  # (1, 1, q_len, kv_len)
    if padding is not None:
        allowed = allowed & padding[:, None, None, :].bool()      # (B, 1, q_len, kv_len)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


class KVCache:
    """Keys and values of every layer so far: (B, kv_heads, T, head_dim) pairs, grown by cat.

    The simplest cache that is correct; HF's DynamicCache does the same. `length` is the number of
    cached positions, i.e. where the next token's position starts in plain text decoding."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        """Append k, v (B, kv_heads, T, d) to layer `layer_idx`'s cache; return all of them."""
        if layer_idx == len(self.keys):                 # the first call for this layer
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], k], dim=2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], v], dim=2)
        return self.keys[layer_idx], self.values[layer_idx]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def rms_normalise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) over the last axis, without a weight; computed in fp32, returned in x's dtype
    (RMSNorm's first half)."""
    return F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


def _join(modules, name: str):
    """Copy the parameters `name` of `modules` into one tensor, along rows, and make each module's
    parameter a view of its rows of it. None if the modules have none."""
    parts = [getattr(m, name) for m in modules]
    if parts[0] is None:
        return None
    joined = torch.cat(parts)
    for p, view in zip(parts, joined.split([p.shape[0] for p in parts])):
        p.data = view
    return joined


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): x / rms(x) * weight; no mean, no bias."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm(x, shape, weight, eps) is x * rsqrt(mean(x^2) + eps) * weight in one call
        # (pow, mean, add, rsqrt, mul, mul), with the same numbers.
        if x.dtype == self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # In lower precision, normalise in fp32 (a bf16 mean of squares loses too much), then
        # multiply by the weight in the input dtype, as HF does.
        return self.weight * rms_normalise(x, self.eps)


class Attention(nn.Module):
    """Multi-head attention with grouped K/V heads and, in Qwen3 decoders, an RMSNorm on each query
    and key head (QK-norm) applied before the rotary embedding.

    q_proj: (hidden -> heads * head_dim); k_proj, v_proj: (hidden -> kv_heads * head_dim). Note
    that heads * head_dim need not equal hidden: the real Thinker attends in 32 x 128 = 4096 dims
    from a 2048-wide stream.
    """

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, bias: bool = False,
                 qk_norm: bool = True, eps: float = 1e-6):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=bias)
        # Per head: each norm's weight is (head_dim,), shared by all heads.
        self.q_norm = RMSNorm(head_dim, eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim, eps) if qk_norm else nn.Identity()
        self.attn_implementation = "eager"          # or "sdpa": see set_attn_implementation
        # The fast path's joined weights (fast_forward), made on its first call: see joined_weights.
        self._joined: tuple | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None, cache: KVCache | None = None,
                layer_idx: int = 0) -> torch.Tensor:
        """x (B, T, hidden) -> (B, T, hidden). cos, sin (B, T, head_dim) for these T positions;
        mask (B or 1, 1, T, S) with S = cached + new positions; `layer_idx` picks this layer's
        entry of the cache. H = heads, Hkv = kv_heads, d = head_dim."""
        if self.attn_implementation == "sdpa" and not torch.is_grad_enabled():
            return self.fast_forward(x, cos, sin, mask, cache, layer_idx)
        B, T, _ = x.shape

        # 1. Project the input to queries, keys and values.
        q = self.q_proj(x)                                       # (B, T, H * d)
        k = self.k_proj(x)                                       # (B, T, Hkv * d)
        v = self.v_proj(x)                                       # (B, T, Hkv * d)

        # 2. Split the last axis into heads.
        q = q.view(B, T, self.heads, self.head_dim)              # (B, T, H, d)
        k = k.view(B, T, self.kv_heads, self.head_dim)           # (B, T, Hkv, d)
        v = v.view(B, T, self.kv_heads, self.head_dim)           # (B, T, Hkv, d)

        # 3. QK-norm: an RMSNorm over each query and key head (Qwen3), before the rotation.
        q = self.q_norm(q)
        k = self.k_norm(k)

        # 4. Heads first, so that each head attends on its own.
        q = q.transpose(1, 2)                                    # (B, H, T, d)
        k = k.transpose(1, 2)                                    # (B, Hkv, T, d)
        v = v.transpose(1, 2)                                    # (B, Hkv, T, d)

        # 5. Rotary position embedding: turn queries and keys by their positions' angles.
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)

        # 6. KV cache: the keys and values of earlier positions join the new ones.
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)                 # (B, Hkv, S, d)

        # With gradients on, the fast path does only steps 7-9 in one fused call: the same sum, the
        # same additive mask.
        if self.attn_implementation == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))      # (B, T, hidden)

        # 7. Grouped-query attention: each K/V head serves heads // kv_heads query heads.
        group = self.heads // self.kv_heads
        k = k.repeat_interleave(group, dim=1)                    # (B, H, S, d)
        v = v.repeat_interleave(group, dim=1)                    # (B, H, S, d)

        # 8. Scaled dot-product scores, the mask added, softmax in fp32.
        scores = q @ k.transpose(2, 3) * self.head_dim ** -0.5   # (B, H, T, S)
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)

        # 9. Mix the values, put the heads side by side again, project back to the stream.
        out = probs @ v                                          # (B, H, T, d)
        out = out.transpose(1, 2)                                # (B, T, H, d)
        out = out.reshape(B, T, self.heads * self.head_dim)      # (B, T, H * d)
        return self.o_proj(out)                                  # (B, T, hidden)

    def fast_forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     mask: torch.Tensor | None = None, cache: KVCache | None = None,
                     layer_idx: int = 0) -> torch.Tensor:
        """forward's nine steps with fewer, larger calls (the "sdpa" path, without gradients).

        Queries, keys and values come out of one matmul; the query and key heads sit side by side
        in its output, so one RMSNorm call and one rotation serve both; steps 7-9 are one fused
        SDPA call. The numbers are forward's: every element goes through the same operations.
        In a decoding step T = 1 and each call is cheap, so the number of calls sets the time: an
        MTP frame of the demo preset (15 passes of 2 layers) makes 38 % fewer torch calls this
        way, and takes 16-25 % less time on a 2-core CPU (notebook 09 counts and times them)."""
        B, T, _ = x.shape
        H, Hkv, d = self.heads, self.kv_heads, self.head_dim
        weight, bias, norm_weight = self.joined_weights()
        qkv = F.linear(x, weight, bias).view(B, T, H + 2 * Hkv, d)     # (B, T, H + 2 Hkv, d)
        qk, v = qkv[:, :, :H + Hkv], qkv[:, :, H + Hkv:]
        if norm_weight is not None:                       # QK-norm of all H + Hkv heads at once
            qk = norm_weight * rms_normalise(qk, self.q_norm.eps)
        qk = apply_rotary(qk.transpose(1, 2), cos, sin)                 # (B, H + Hkv, T, d)
        q, k, v = qk[:, :H], qk[:, H:], v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)                        # (B, Hkv, S, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))      # (B, T, hidden)

    def joined_weights(self):
        """(weight ((H + 2 Hkv) d, hidden), bias or None, QK-norm weight (H + Hkv, d) or None).

        The joined matrix is made once: q_proj's, k_proj's and v_proj's rows are copied into it,
        and those three weights become views of its rows, so memory is unchanged, the state dict
        keeps HF's names, and an in-place change to a weight (load_state_dict, an optimiser step)
        is seen by both paths. It is made again if a weight was replaced or moved (.to,
        to_empty), which gives it new storage. The norm weight (q_norm's row for each query head,
        k_norm's for each key head) is small and is copied again whenever either norm weight
        changes (its version counter moves)."""
        layers = (self.q_proj, self.k_proj, self.v_proj)
        attn = tuple(p for m in layers for p in (m.weight, m.bias) if p is not None)
        norms = (self.q_norm.weight, self.k_norm.weight) if isinstance(self.q_norm, RMSNorm) else ()
        key = tuple(w.data_ptr() for w in attn) + tuple((w.data_ptr(), w._version) for w in norms)
        if self._joined is None or self._joined[-1] != key:
            # Plain tensors even under torch.inference_mode: the weights become views of them, and
            # a weight made an inference tensor could no longer be trained.
            with torch.inference_mode(False), torch.no_grad():
                weight, bias = _join(layers, "weight"), _join(layers, "bias")
                norm_weight = torch.cat([norms[0].expand(self.heads, -1),
                                         norms[1].expand(self.kv_heads, -1)]) if norms else None
            key = tuple(w.data_ptr() for w in attn) + key[len(attn):]      # the views' addresses
            self._joined = (weight, bias, norm_weight, key)
        return self._joined[:3]


def set_attn_implementation(model: nn.Module, name: str) -> nn.Module:
    """Choose how every attention in `model` computes steps 7-9 of Attention.forward, and the
    encoders' segment_attention its scores and softmax (HF's attn_implementation):

        "eager"  written out step by step, as the notebooks show it; the parity tests compare it
                 with HF's eager path
        "sdpa"   torch.nn.functional.scaled_dot_product_attention: the same softmax(q k^T / sqrt(d)
                 + mask) v in one fused kernel, without materialising the (T, S) scores per head or
                 repeating the K/V heads (enable_gqa); HF's default path. Without gradients
                 (generate, stream) a decoder's attention also projects q, k and v in one
                 matmul and norms and rotates its query and key heads together
                 (Attention.fast_forward)

    Both read the same additive mask (causal, padding, sliding window; a fully masked padding row
    gives the same uniform softmax) and agree to float rounding. Returns `model`."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation={name!r}: choose one of {ATTN_IMPLEMENTATIONS}")
    for module in model.modules():
        if hasattr(module, "attn_implementation"):    # Attention and the encoders' attention
            module.attn_implementation = name
    return model


class SwiGLU(nn.Module):
    """Dense gated feed-forward: down(act(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants"); act is
    the config's hidden_act, SiLU in every Qwen3-Omni config (hence the name)."""

    def __init__(self, hidden: int, intermediate: int, act: str = "silu"):
        super().__init__()
        self.act = ACTIVATIONS[act]
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """One pre-norm transformer layer; `mlp` is a SwiGLU or a sparse MoE block.

    An MoE block returns (output, routing statistics); the layer passes the statistics up (None
    when dense), so a caller can plot routing without hooks."""

    def __init__(self, attn: Attention, mlp: nn.Module, hidden: int, eps: float):
        super().__init__()
        self.self_attn = attn
        self.mlp = mlp
        self.input_layernorm = RMSNorm(hidden, eps)
        self.post_attention_layernorm = RMSNorm(hidden, eps)

    def forward(self, x, cos, sin, mask=None, cache=None, layer_idx=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer_idx)
        out = self.mlp(self.post_attention_layernorm(x))
        out, routing = out if isinstance(out, tuple) else (out, None)
        return x + out, routing


def decoder_layers(cfg, make_mlp) -> nn.ModuleList:
    """The layer stack of a Qwen3 decoder config (TextConfig, TalkerTextConfig,
    CodePredictorConfig); make_mlp(i) builds layer i's feed-forward block. QK-norm is on in all
    three: HF's Qwen3 attention has no switch for it."""
    def attention():
        return Attention(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                         cfg.resolved_head_dim, bias=cfg.attention_bias, qk_norm=True,
                         eps=cfg.rms_norm_eps)
    return nn.ModuleList(DecoderLayer(attention(), make_mlp(i), cfg.hidden_size, cfg.rms_norm_eps)
                         for i in range(cfg.num_hidden_layers))
