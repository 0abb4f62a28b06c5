"""The analytic model: parameters (total vs active), weight memory and KV-cache size, from a config alone.

Everything here is computed on the meta device or from config numbers, so it works for the real 35B model on a
laptop. The report's Table 1 (module sizes) is the reference these numbers are checked against; the latency
side of the model (Table 2) arrives with notebook 07.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .config import OmniConfig
from .moe import SparseMoE

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


@dataclass
class ModuleSize:
    name: str           # as the report's Table 1 names it
    total: int          # parameters stored
    active: int         # parameters one token actually multiplies with (MoE: only its top-k experts)


def _count(module: nn.Module) -> tuple[int, int]:
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
        rows.append(ModuleSize("Audio encoder (AuT)", *_count(th.audio_tower)))
        rows.append(ModuleSize("Vision encoder", *_count(th.visual)))
        lm = [_count(th.model), _count(th.lm_head)]
        rows.append(ModuleSize("Thinker LM", sum(t for t, _ in lm), sum(a for _, a in lm)))
    if model.talker is not None:
        tk = model.talker
        parts = [_count(m) for name, m in tk.named_children() if name != "code_predictor"]
        rows.append(ModuleSize("Talker", sum(t for t, _ in parts), sum(a for _, a in parts)))
        rows.append(ModuleSize("MTP (code predictor)", *_count(tk.code_predictor)))
    if model.code2wav is not None:
        rows.append(ModuleSize("Code2Wav", *_count(model.code2wav)))
    return rows


def weight_bytes(n_params: int, dtype: str = "bf16") -> int:
    return n_params * BYTES[dtype]


def kv_bytes_per_token(config: OmniConfig, dtype: str = "bf16") -> dict[str, int]:
    """Bytes of K and V cached per token: layers x 2 (K and V) x kv_heads x head_dim x bytes per value.
    Grouped-query attention is why this is small: the Thinker caches 4 K/V heads for its 32 query heads."""
    out = {}
    for name, c in (("Thinker", config.thinker_config.text_config), ("Talker", config.talker_config.text_config),
                    ("MTP", config.talker_config.code_predictor_config)):
        out[name] = c.num_hidden_layers * 2 * c.num_key_value_heads * c.resolved_head_dim * BYTES[dtype]
    return out
