"""The analytic model: parameters (total vs active), weight memory and KV-cache size, from a config alone.

Everything here is computed on the meta device or from config numbers, so it works for the real 35B model on a
laptop. The report's Table 1 (module sizes) is the reference these numbers are checked against (notebook 00);
the second half of the module is the latency side, a roofline set beside the report's Table 2 (notebook 07).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import OmniConfig
from ..moe import SparseMoE

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


@dataclass
class ModuleSize:
    name: str           # as the report's Table 1 names it
    total: int          # parameters stored
    active: int         # parameters one token actually multiplies with (MoE: only its top-k experts)


def count_params(module: nn.Module) -> tuple[int, int]:
    """(total, active-per-token) parameters. In a SparseMoE block a token runs k of E experts, so the expert
    weights count k/E towards the active figure; everything else (router, shared expert, attention) is used in
    full. Embedding tables count in full too, by the report's convention, though a token reads one row."""
    total = sum(p.numel() for p in module.parameters())
    inactive = 0
    for m in module.modules():
        if isinstance(m, SparseMoE):
            experts = sum(p.numel() for p in m.experts.parameters())
            inactive += experts - experts * m.top_k // m.experts.num_experts
    return total, total - inactive


def module_sizes(model) -> list[ModuleSize]:
    """Table 1's rows for a (meta-device) Qwen3Omni: AuT, vision, Thinker LM, Talker, MTP, Code2Wav."""
    rows = []
    if model.thinker is not None:
        th = model.thinker
        rows.append(ModuleSize("Audio encoder (AuT)", *count_params(th.audio_tower)))
        rows.append(ModuleSize("Vision encoder", *count_params(th.visual)))
        lm = [count_params(th.model), count_params(th.lm_head)]
        rows.append(ModuleSize("Thinker LM", sum(t for t, _ in lm), sum(a for _, a in lm)))
    if model.talker is not None:
        tk = model.talker
        parts = [count_params(m) for name, m in tk.named_children() if name != "code_predictor"]
        rows.append(ModuleSize("Talker", sum(t for t, _ in parts), sum(a for _, a in parts)))
        rows.append(ModuleSize("MTP (code predictor)", *count_params(tk.code_predictor)))
    if model.code2wav is not None:
        rows.append(ModuleSize("Code2Wav", *count_params(model.code2wav)))
    return rows


def weight_bytes(n_params: int, dtype: str = "bf16") -> int:
    return n_params * BYTES[dtype]


# The published checkpoints of Qwen3-Omni-30B-A3B and the components each holds. Instruct speaks;
# Thinking (which reasons step by step before it answers) and Captioner (Instruct fine-tuned to
# describe any audio in detail) are published with enable_audio_output false: a Thinker only,
# answering in text. All three have the same Thinker.
VARIANTS = {"Instruct": ("thinker", "talker", "code2wav"), "Thinking": ("thinker",),
            "Captioner": ("thinker",)}


@dataclass
class VariantSize:
    name: str                       # as published: Qwen3-Omni-30B-A3B-<name>
    components: tuple[str, ...]     # what its checkpoint holds
    kept: int                       # parameters in its checkpoint
    active: int                     # of those, used per token (count_params' rule)
    dropped: int                    # parameters of the whole model it leaves out


def variant_sizes(model) -> list[VariantSize]:
    """One row per published variant (VARIANTS), counted on a whole (meta-device) Qwen3Omni: the
    parameters each checkpoint keeps and those it drops (the Talker, its MTP and Code2Wav). The
    variants share one Thinker config, so one module tree counts them all."""
    if model.components != ("thinker", "talker", "code2wav"):
        raise ValueError(f"variant_sizes counts what a variant drops, so it needs the whole model; "
                         f"got components={model.components}: build it with "
                         f"presets.build_meta(name), every component")
    per = {c: count_params(getattr(model, c)) for c in model.components}
    total = sum(t for t, _ in per.values())
    rows = []
    for name, components in VARIANTS.items():
        kept = sum(per[c][0] for c in components)
        active = sum(per[c][1] for c in components)
        rows.append(VariantSize(name, components, kept, active, total - kept))
    return rows


def kv_bytes_per_token(config: OmniConfig, dtype: str = "bf16") -> dict[str, int]:
    """Bytes of K and V cached per token: layers x 2 (K and V) x kv_heads x head_dim x bytes per value.
    Grouped-query attention is why this is small: the Thinker caches 4 K/V heads for its 32 query heads."""
    out = {}
    for name, c in (("Thinker", config.thinker_config.text_config), ("Talker", config.talker_config.text_config),
                    ("MTP", config.talker_config.code_predictor_config)):
        out[name] = c.num_hidden_layers * 2 * c.num_key_value_heads * c.resolved_head_dim * BYTES[dtype]
    return out


# ---- the latency side: a roofline per stage, against the report's Table 2 ------------------------------------
#
# One decoding step of a transformer multiplies every weight it uses once per token (2 FLOPs per weight: a multiply
# and an add) and must first read those weights from memory. At batch 1 the second cost dominates by far, so a
# step takes about max(compute, weight bytes / bandwidth): the roofline. It is a LOWER bound: it leaves out kernel
# launches, the KV cache, attention over the context, sampling, the CPU side and the other stages sharing the GPU.
# What it does get right is the scaling: a MoE decoder reads only the experts its token is routed to, so its
# decode time follows ACTIVE parameters, while prefill, with many tokens, touches nearly every expert.

@dataclass
class Hardware:
    """Peak numbers of one accelerator. Defaults: NVIDIA H100 SXM, dense bf16 tensor-core peak 989 TFLOP/s and
    HBM3 bandwidth 3.35 TB/s (vendor data sheet). The report does not name its GPU; these are a plausible stand-in."""
    flops: float = 989e12            # FLOP/s
    bandwidth: float = 3.35e12       # bytes/s
    name: str = "H100 SXM (peak bf16, HBM3)"


@dataclass
class DecoderWeights:
    """What one token of a decoder reads: `dense` weights (attention, norms, router, shared expert, output head,
    one embedding row) used by every token, and `experts`, the routed experts of all MoE layers, of which a token
    uses top_k / num_experts. `passes`: forward passes per output token (the MTP runs one per residual codebook)."""
    name: str
    dense: int
    experts: int = 0
    top_k: int = 1
    num_experts: int = 1
    passes: int = 1

    @property
    def active(self) -> int:                 # parameters one pass multiplies with
        return self.dense + self.experts * self.top_k // self.num_experts


def experts_touched(tokens: int, top_k: int, num_experts: int) -> float:
    """Expected fraction of a layer's experts that at least one of `tokens` tokens is routed to, if routing were
    uniform and independent: 1 - (1 - k/E)^T. One token: k/E; a 100-token prompt with 8 of 128: 99.8%."""
    return 1.0 - (1.0 - top_k / num_experts) ** tokens


def decode_seconds(w: DecoderWeights, hw: Hardware = Hardware(), dtype: str = "bf16") -> dict[str, float]:
    """Time per output token: passes x max(2 x active / FLOP/s, active x bytes / bandwidth)."""
    compute = 2 * w.active / hw.flops
    memory = w.active * BYTES[dtype] / hw.bandwidth
    return {"compute_s": w.passes * compute, "memory_s": w.passes * memory, "seconds": w.passes * max(compute, memory)}


def prefill_seconds(w: DecoderWeights, tokens: int, hw: Hardware = Hardware(), dtype: str = "bf16") -> dict:
    """Time to run a `tokens`-long prompt in one pass: every token computes with its active weights, but the
    weights read are the dense ones plus every expert some token of the prompt was routed to."""
    compute = 2 * w.active * tokens / hw.flops
    read = w.dense + w.experts * (experts_touched(tokens, w.top_k, w.num_experts) if w.experts else 0.0)
    memory = read * BYTES[dtype] / hw.bandwidth
    return {"compute_s": compute, "memory_s": memory, "seconds": max(compute, memory)}


def codec_seconds_per_frame(flops_per_frame: float, n_params: int, frames_per_call: int = 1,
                            hw: Hardware = Hardware(), dtype: str = "bf16") -> float:
    """Code2Wav is a ConvNet: its FLOPs scale with the samples it makes, not with its parameters, so they are
    counted (torch's FlopCounterMode on the meta device), and its weights are read once per call of
    `frames_per_call` frames."""
    return max(flops_per_frame / hw.flops, n_params * BYTES[dtype] / hw.bandwidth / frames_per_call)


def first_packet(preprocess_s, thinker_ttft_s, talker_ttft_s, mtp_s, codec_s) -> float:
    """The report's overall first-packet latency: the plain sum of the stage rows of Table 2."""
    return preprocess_s + thinker_ttft_s + talker_ttft_s + mtp_s + codec_s


def real_time_factor(thinker_token_s, talker_token_s, mtp_s, codec_s, frame_s: float = 0.080) -> float:
    """The report's RTF: (Thinker + Talker time for one token + MTP + codec time per token) / one 80 ms frame."""
    return (thinker_token_s + talker_token_s + mtp_s + codec_s) / frame_s


def decoder_weights(model) -> dict[str, DecoderWeights]:
    """Thinker, Talker and MTP of a (meta-device) Qwen3Omni as DecoderWeights. Embedding tables count one row
    (a token reads one); the Talker's input projections run on the prompt only, so they are left out of a step."""
    def parts(*modules):
        dense = experts = 0
        top_k = num_experts = 1
        for module in modules:
            dense += sum(p.numel() for p in module.parameters())
            for m in module.modules():
                if isinstance(m, SparseMoE):
                    n = sum(p.numel() for p in m.experts.parameters())
                    dense, experts, top_k, num_experts = dense - n, experts + n, m.top_k, m.experts.num_experts
                elif isinstance(m, nn.Embedding):
                    dense -= m.weight.numel() - m.embedding_dim
        return dense, experts, top_k, num_experts

    th, tk, cp = model.thinker, model.talker, model.talker.code_predictor
    body = parts(cp.model.layers, cp.model.norm)[0] + cp.model.codec_embedding[0].embedding_dim
    mtp_passes = len(cp.lm_head)                      # one pass per residual codebook: 15 for 16 codebooks
    return {"Thinker": DecoderWeights("Thinker", *parts(th.model, th.lm_head)),
            "Talker": DecoderWeights("Talker", *parts(tk.model, tk.codec_head)),
            "MTP": DecoderWeights("MTP", body + cp.lm_head[0].weight.numel(), passes=mtp_passes)}


# The report's Table 2, 1-concurrency column, audio input (Qwen3-Omni Technical Report, arXiv 2509.17765,
# Table 2: vLLM, torch.compile and CUDA graphs on the MTP and the codec decoder), in seconds.
PAPER_TABLE_2 = {"preprocess_s": 0.072, "thinker_ttft_s": 0.088, "talker_ttft_s": 0.057, "mtp_s": 0.014,
                 "codec_s": 0.003, "first_packet_s": 0.234, "thinker_tok_s": 75.0, "talker_tok_s": 140.0, "rtf": 0.47}


def analytic_table_2(model=None, hw: Hardware = Hardware(), dtype: str = "bf16", prompt_tokens: int = 160,
                     talker_prompt_tokens: int = 160, codec_frames_per_call: int = 1) -> dict[str, float]:
    """The roofline's Table 2 rows (PAPER_TABLE_2's keys) for the real model (built on the meta device) or `model`.

    prompt_tokens: the Thinker's prompt (default 160: ~10 s of audio at 12.5 tokens/s plus the chat template);
    the AuT encoder runs over the audio tokens first (part of the Thinker's time to first token, as in the
    report). Preprocessing (the report's 72 ms: CPU work, feature extraction, scheduling) has no weights to
    model: the paper's figure is carried over so the overall row can be summed."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from .. import presets
    model = model if model is not None else presets.build_meta("real")
    w = decoder_weights(model)
    audio = sum(p.numel() for p in model.thinker.audio_tower.parameters())
    audio_tokens = max(prompt_tokens - 35, 1)
    encoder = max(2 * audio * audio_tokens / hw.flops, audio * BYTES[dtype] / hw.bandwidth)
    c2w = model.code2wav
    frames = 50
    codes = torch.zeros(1, c2w.config.num_quantizers, frames, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        c2w._decode(codes)                                                # (1, 1, samples) on meta: shapes only
    codec = codec_seconds_per_frame(counter.get_total_flops() / frames, sum(p.numel() for p in c2w.parameters()),
                                    codec_frames_per_call, hw, dtype)
    thinker_tok = decode_seconds(w["Thinker"], hw, dtype)["seconds"]
    talker_tok = decode_seconds(w["Talker"], hw, dtype)["seconds"]
    rows = {"preprocess_s": PAPER_TABLE_2["preprocess_s"],
            "thinker_ttft_s": encoder + prefill_seconds(w["Thinker"], prompt_tokens, hw, dtype)["seconds"],
            "talker_ttft_s": prefill_seconds(w["Talker"], talker_prompt_tokens, hw, dtype)["seconds"],
            "mtp_s": decode_seconds(w["MTP"], hw, dtype)["seconds"], "codec_s": codec}
    rows["first_packet_s"] = first_packet(*(rows[k] for k in ("preprocess_s", "thinker_ttft_s", "talker_ttft_s",
                                                              "mtp_s", "codec_s")))
    rows["thinker_tok_s"], rows["talker_tok_s"] = 1 / thinker_tok, 1 / talker_tok
    rows["rtf"] = real_time_factor(thinker_tok, talker_tok, rows["mtp_s"], codec)
    return rows
