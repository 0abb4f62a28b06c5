"""Sparse mixture-of-experts feed-forward: a router picks top-k of E SwiGLU experts per token.

Qwen3-Omni report section 2.1 (Thinker and Talker are MoE); routing as in Qwen3-MoE: softmax over all E router
logits, keep the k largest, renormalise them to sum to one when `norm_topk_prob` (both Qwen3-Omni decoders do).
The Talker adds a shared expert that every token passes through, scaled by a sigmoid gate.

HF mirrors: Qwen3OmniMoeThinkerTextSparseMoeBlock (router `gate`, experts) and
Qwen3OmniMoeTalkerTextSparseMoeBlock (+ `shared_expert`, `shared_expert_gate`).

Weight layout. Checkpoints store each expert separately (`experts.7.gate_proj.weight`, shape (I, H)); HF's
in-memory model fuses gate and up into one (E, 2I, H) tensor. We keep three stacked tensors, one per projection,
so expert e's weights are simply `gate_proj[e]`, `up_proj[e]`, `down_proj[e]`; checkpoint.py stacks and unstacks.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import SwiGLU


class Experts(nn.Module):
    """E SwiGLU experts stored as stacked weights: gate_proj, up_proj (E, I, H); down_proj (E, H, I)."""

    def __init__(self, num_experts: int, hidden: int, intermediate: int):
        super().__init__()
        self.num_experts = num_experts
        self.gate_proj = nn.Parameter(torch.empty(num_experts, intermediate, hidden))
        self.up_proj = nn.Parameter(torch.empty(num_experts, intermediate, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, intermediate))


class SparseMoE(nn.Module):
    """Router + experts (+ optional shared expert with its sigmoid gate, as in the Talker)."""

    def __init__(self, hidden: int, num_experts: int, top_k: int, expert_intermediate: int,
                 norm_topk_prob: bool, shared_intermediate: int = 0):
        super().__init__()
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob
        self.gate = nn.Linear(hidden, num_experts, bias=False)    # the router: one logit per expert
        self.experts = Experts(num_experts, hidden, expert_intermediate)
        if shared_intermediate:
            self.shared_expert = SwiGLU(hidden, shared_intermediate)
            self.shared_expert_gate = nn.Linear(hidden, 1, bias=False)


def moe_for(cfg, layer: int) -> nn.Module:
    """The feed-forward block of `layer` in a Thinker or Talker text config: sparse, or dense where HF's
    mlp_only_layers / decoder_sparse_step say so."""
    if not cfg.is_moe_layer(layer):
        return SwiGLU(cfg.hidden_size, cfg.intermediate_size)
    return SparseMoE(cfg.hidden_size, cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size,
                     cfg.norm_topk_prob, getattr(cfg, "shared_expert_intermediate_size", 0))
