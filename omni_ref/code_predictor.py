"""MTP code predictor: from the Talker's hidden state and codebook-0 code, residual codes 1..N-1.

Qwen3-Omni report section 2.4 (multi-token prediction). The codec describes each 80 ms frame with N
codes, one per codebook of a residual vector quantiser (N = 16 in the released model). The Talker
predicts only codebook 0; this small dense Qwen3 decoder then runs autoregressively over the N-1
residual codebooks of that one frame, with a fresh KV cache per frame:

    position   0                  1                     2                 ...  N-1
    input      Talker hidden h_t  Talker table(code 0)  table 0 (code 1)  ...  table N-3 (code N-2)
    predicts   -                  code 1 (head 0)       code 2 (head 1)   ...  code N-1 (head N-2)

Residual codebook j (1..N-1) has its own input table (`model.codec_embedding[j-1]`) and its own
output head (`lm_head[j-1]`); codebook 0 is embedded by the Talker's own table. So a frame costs
one 2-position prefill and N-2 single-position steps of a small model (real: 5 dense layers),
instead of N-1 passes of the Talker (real: 20 MoE layers).

HF mirror: Qwen3OmniMoeTalkerCodePredictorModelForConditionalGeneration (keys
`talker.code_predictor.*`), driven by HF's GenerationMixin from
Qwen3OmniMoeTalkerForConditionalGeneration.prepare_inputs_for_generation. HF samples the residual
codes with top-k 50 and top-p 0.8 (temperature 1) when the Talker samples, and takes the argmax of
each head when it does not (`do_sample` is copied from the Talker's options); `residual_sampling`
says so.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import CodePredictorConfig
from .layers import KVCache, RMSNorm, SwiGLU, causal_mask, decoder_layers
from .rope import rope_inv_freq, rotary_cos_sin
from .sampling import SamplingOptions, choose_next, process_logits


def residual_sampling(do_sample: bool) -> SamplingOptions:
    """The options HF's Talker hands its code predictor: its own do_sample, and when sampling
    top-k 50 and top-p 0.8 at temperature 1 (fixed in HF's prepare_inputs_for_generation, not
    settable from generate)."""
    return SamplingOptions(do_sample=do_sample, temperature=1.0, top_k=50, top_p=0.8)


@dataclass
class ResidualCodes:
    codes: torch.Tensor          # (B, N-1) residual codes 1..N-1 of one frame
    embeds: torch.Tensor         # (B, N-1, H) their embeddings, codebook j by codec_embedding[j-1]
    logits: list | None = None   # per head, (B, codebook) raw logits, when asked for


class CodePredictorModel(nn.Module):
    """The MTP's decoder (HF Qwen3OmniMoeTalkerCodePredictorModel): dense Qwen3 layers, 1-D
    rotary, and one input table per residual codebook."""

    def __init__(self, cfg: CodePredictorConfig):
        super().__init__()
        self.config = cfg
        self.layers = decoder_layers(
            cfg, lambda i: SwiGLU(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # One embedding table per residual codebook 1..N-1 (the Talker embeds codebook 0 itself).
        self.codec_embedding = nn.ModuleList(
            nn.Embedding(cfg.vocab_size, cfg.hidden_size) for _ in range(cfg.num_code_groups - 1))

    def forward(self, inputs_embeds: torch.Tensor, past_key_values: KVCache | None = None,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """inputs_embeds (B, T, H) -> normed hidden states (B, T, H).

        Plain 1-D rotary positions continue from the cache length: a frame is one short unpadded
        sequence. rotary: their (cos, sin) tables, (1, T, head_dim) each, when the caller has them
        (generate makes a frame's once); by default made here."""
        B, T, _ = inputs_embeds.shape
        device, dtype = inputs_embeds.device, inputs_embeds.dtype
        past = past_key_values.length if past_key_values is not None else 0
        if rotary is None:
            rotary = self.rotary_tables(past + T, dtype, device)
            rotary = tuple(t[:, past:] for t in rotary)
        cos, sin = rotary                                                           # (1, T, d)
        # A single new position may see every cached one: no mask needed (it would add zeros).
        mask = causal_mask(T, past + T, dtype, device=device) if T > 1 else None
        h = inputs_embeds
        for i, layer in enumerate(self.layers):
            h, _ = layer(h, cos, sin, mask, past_key_values, i)
        return self.norm(h)

    def rotary_tables(self, n: int, dtype: torch.dtype, device=None):
        """cos, sin (1, n, head_dim) of positions 0..n-1."""
        inv_freq = rope_inv_freq(self.config.resolved_head_dim, self.config.rope_theta, device)
        positions = torch.arange(n, device=device)[None]                            # (1, n)
        return rotary_cos_sin(positions, inv_freq, dtype)


class CodePredictor(nn.Module):
    """The MTP module (HF Qwen3OmniMoeTalkerCodePredictorModelForConditionalGeneration; report
    section 2.4): a small dense decoder (`model`) with one output head per residual codebook
    (`lm_head[j-1]` predicts codebook j). `forward` runs one step, `generate` a whole frame."""

    def __init__(self, cfg: CodePredictorConfig):
        super().__init__()
        self.config = cfg
        self.model = CodePredictorModel(cfg)
        self.lm_head = nn.ModuleList(
            nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
            for _ in range(cfg.num_code_groups - 1))

    def forward(self, step: int, inputs_embeds: torch.Tensor | None = None,
                codes: torch.Tensor | None = None, past_key_values: KVCache | None = None,
                rotary: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass -> (logits (B, T, codebook) of residual codebook step+1, input embeddings).

        step 0:  inputs_embeds (B, 2, H) = [Talker hidden state, Talker embedding of code 0]
                 -> head 0 (code 1)
        step s:  codes (B, 1) of codebook s, embedded with codec_embedding[s-1] -> head s
                 (code s+1)
        HF's forward infers the step from the input length (prefill) or a `generation_steps`
        counter; we name it. rotary: the positions' (cos, sin), see CodePredictorModel."""
        n_heads = len(self.lm_head)
        if not 0 <= step < n_heads:
            raise ValueError(f"step={step}: the code predictor has heads for steps "
                             f"0..{n_heads - 1} (residual codebooks 1..{n_heads})")
        if step == 0:
            if inputs_embeds is None or inputs_embeds.ndim != 3:
                raise ValueError("step 0 takes inputs_embeds (batch, 2, hidden): the Talker's "
                                 "last hidden state and its embedding of the frame's codebook-0 "
                                 "code")
        else:
            if codes is None:
                raise ValueError(f"step {step} takes codes (batch, 1): the code just chosen for "
                                 f"codebook {step}")
            inputs_embeds = self.model.codec_embedding[step - 1](codes)            # (B, 1, H)
        hidden = self.model(inputs_embeds, past_key_values, rotary)
        return self.lm_head[step](hidden), inputs_embeds

    @torch.no_grad()
    def generate(self, talker_hidden: torch.Tensor, code0_embed: torch.Tensor,
                 opts: SamplingOptions, generator: torch.Generator | None = None,
                 output_logits: bool = False) -> ResidualCodes:
        """Residual codes 1..N-1 of one frame. talker_hidden, code0_embed: (B, 1, H).

        Like HF's generate with max_new_tokens = N-1 and no stop id: the last position's logits of
        each pass are processed (sampling.py) and one code chosen, which is the next pass's
        input."""
        cache = KVCache()
        B = talker_hidden.shape[0]
        codes = torch.zeros(B, 0, dtype=torch.long, device=talker_hidden.device)   # (B, so far)
        embeds, kept = [], []
        # The frame's N positions: their rotary tables made once, sliced for each pass.
        cos, sin = self.model.rotary_tables(len(self.lm_head) + 1, code0_embed.dtype,
                                            code0_embed.device)                 # (1, N, d)
        prefill = torch.cat([talker_hidden, code0_embed], dim=1)                    # (B, 2, H)
        logits, _ = self(0, inputs_embeds=prefill, past_key_values=cache,
                         rotary=(cos[:, :2], sin[:, :2]))
        for step in range(len(self.lm_head)):
            if step > 0:                                    # code `step` sits at position step + 1
                at = (cos[:, step + 1:step + 2], sin[:, step + 1:step + 2])
                logits, emb = self(step, codes=codes[:, -1:], past_key_values=cache,
                                   rotary=at)                                          # (B, 1, V)
                embeds.append(emb)
            last = logits[:, -1].float()                                           # (B, codebook)
            if output_logits:
                kept.append(last)
            # As in HF, a repetition penalty (none by default) would see only this frame's
            # residual codes.
            scores = process_logits(last, codes, opts)
            chosen = choose_next(scores, opts.do_sample, generator)                 # (B,)
            codes = torch.cat([codes, chosen[:, None]], dim=1)
        # The last code is never fed back, but the Talker's next input needs its embedding too.
        embeds.append(self.model.codec_embedding[-1](codes[:, -1:]))
        return ResidualCodes(codes, torch.cat(embeds, dim=1), kept if output_logits else None)
