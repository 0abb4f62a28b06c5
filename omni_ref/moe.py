"""Sparse mixture-of-experts feed-forward: a router picks top-k of E SwiGLU experts per token.

Qwen3-Omni report section 2.1 (Thinker and Talker are MoE); routing as in Qwen3-MoE: softmax over
all E router logits, keep the k largest, renormalise them to sum to one when `norm_topk_prob` (both
decoders of the released model do; HF's Talker config class defaults to not renormalising). The
Talker adds a shared expert that every token passes through, scaled by a sigmoid gate.

    p = softmax(x W_r^T)                          (E,)  router probabilities, in fp32
    S = top-k indices of p                        (k,)  chosen experts, most probable first
    w_e = p_e / sum_{j in S} p_j   (or p_e)             mixing weights
    y = sum_{e in S} w_e * down_e(silu(gate_e(x)) * up_e(x))   [+ sigmoid(g . x) * shared(x)]

HF mirrors: Qwen3OmniMoeThinkerTextTopKRouter + Qwen3OmniMoeThinkerTextExperts + ...SparseMoeBlock,
and Qwen3OmniMoeTalkerTextSparseMoeBlock (+ `shared_expert`, `shared_expert_gate`).

Weight layout. Checkpoints store each expert separately (`experts.7.gate_proj.weight`, shape (I,
H)); HF's in-memory model fuses gate and up into one (E, 2I, H) tensor. We keep three stacked
tensors, one per projection, so expert e's weights are simply `gate_proj[e]`, `up_proj[e]`,
`down_proj[e]`; checkpoint.py stacks and unstacks.

Every block returns its routing statistics (`RoutingStats`) next to its output, so plots and the
load-balancing loss need no forward hooks (the labml_nn convention).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ACTIVATIONS, SwiGLU

# How the experts run (HF's experts_implementation): Experts.forward, one expert at a time, or
# Experts.grouped, all of them in one grouped matmul per projection. set_experts_implementation.
EXPERTS_IMPLEMENTATIONS = ("eager", "grouped_mm")


@dataclass
class RoutingStats:
    """What the router decided for each of B x T tokens in one layer (tensors detached from
    autograd, except router_logits: the load-balancing loss trains the router through them, as
    HF's does through its logits).

    router_logits (B, T, E)   raw scores x W_r^T
    router_probs  (B, T, E)   softmax over all E experts, fp32
    experts       (B, T, k)   chosen expert ids, most probable first (torch.topk order, as HF)
    weights       (B, T, k)   mixing weights of those experts (renormalised when norm_topk_prob)
    """
    router_logits: torch.Tensor
    router_probs: torch.Tensor
    experts: torch.Tensor
    weights: torch.Tensor

    @property
    def num_experts(self) -> int:
        return self.router_probs.shape[-1]

    def expert_counts(self, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """How many of the selected tokens chose each expert: (E,) int64. token_mask (B, T) picks
        the tokens (default: all)."""
        chosen = self.experts if token_mask is None else self.experts[token_mask.bool()]
        return torch.bincount(chosen.reshape(-1), minlength=self.num_experts)


class Experts(nn.Module):
    """E SwiGLU experts as stacked weights: gate_proj, up_proj (E, I, H); down_proj (E, H, I)."""

    def __init__(self, num_experts: int, hidden: int, intermediate: int, act: str = "silu"):
        super().__init__()
        self.num_experts = num_experts
        self.act = ACTIVATIONS[act]
        self.gate_proj = nn.Parameter(torch.empty(num_experts, intermediate, hidden))
        self.up_proj = nn.Parameter(torch.empty(num_experts, intermediate, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, intermediate))
        self.implementation = "eager"             # or "grouped_mm": see set_experts_implementation

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e on a batch of token vectors x (n, H) -> (n, H)."""
        h = self.act(F.linear(x, self.gate_proj[e])) * F.linear(x, self.up_proj[e])   # (n, I)
        return F.linear(h, self.down_proj[e])                                          # (n, H)

    def forward(self, x: torch.Tensor, experts: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        """x (N, H) token vectors; experts, weights (N, k) from the router. Returns (N, H).

        Expert by expert rather than token by token: each expert that some token chose runs once,
        as one matrix multiply over all of its tokens, and experts nobody chose cost nothing. Each
        result row is scaled by that token's routing weight and added into the token's output.

        Equivalence with HF. HF's eager Qwen3OmniMoeThinkerTextExperts loops over the experts that
        were hit and gathers their tokens with a one-hot mask; its default `grouped_mm` path sorts
        assignments by expert and runs one grouped matmul. All three compute the same sum over the
        same k terms per token; we add the experts' contributions in ascending expert order, as
        HF's eager loop does, and agree with HF's default path to float rounding (well inside the
        1e-5 parity tolerance).
        """
        out = torch.zeros_like(x)
        for e in experts.unique().tolist():                     # ascending expert ids
            # Which tokens chose expert e, and in which of their k slots (each token at most once).
            token, slot = torch.where(experts == e)             # (n,), (n,)
            y = self.expert(e, x[token])                        # (n, H): one matmul for all n
            y = y * weights[token, slot, None]                  # (n, H): times each token's weight
            out.index_add_(0, token, y.to(out.dtype))           # into those tokens' rows
        return out

    def grouped(self, x: torch.Tensor, experts: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        """The same sum as `forward`, without its Python loop over experts (HF's grouped_mm path).

        Sort the N*k (token, expert) pairs by expert: each expert's tokens become one block of
        consecutive rows, and `F.grouped_mm` multiplies block e by expert e's weights, every
        block in one call. Then weight each row and add it into its token's output, as forward
        does. The stable sort keeps each token's pairs in ascending expert order, so the k terms
        are added in forward's order too, and the two give the same numbers."""
        k = experts.shape[1]
        pairs = experts.flatten()                                  # (N*k,) expert of each pair
        order = pairs.argsort(stable=True)                         # pairs, grouped by expert
        token = order // k                                         # (N*k,) each pair's token
        ends = torch.bincount(pairs, minlength=self.num_experts).cumsum(0).to(torch.int32)  # (E,)
        xs = x[token]                                              # (N*k, H) rows by expert
        gate = F.grouped_mm(xs, self.gate_proj.transpose(1, 2), offs=ends)           # (N*k, I)
        up = F.grouped_mm(xs, self.up_proj.transpose(1, 2), offs=ends)               # (N*k, I)
        y = F.grouped_mm(self.act(gate) * up, self.down_proj.transpose(1, 2), offs=ends)
        y = y * weights.flatten()[order, None]                     # (N*k, H) times their weights
        return torch.zeros_like(x).index_add_(0, token, y.to(x.dtype))               # (N, H)


def route(logits: torch.Tensor, top_k: int, norm_topk_prob: bool):
    """Router decision from logits (N, E): probs fp32 (N, E), weights (N, k), experts (N, k).

    Softmax runs over all E experts before the top-k cut; with renormalisation the k kept
    probabilities are rescaled to sum to one, otherwise they keep their (smaller) softmax
    values."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)      # (N, E)
    weights, experts = torch.topk(probs, top_k, dim=-1)              # (N, k), most probable first
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return probs, weights.to(logits.dtype), experts


class SparseMoE(nn.Module):
    """Router + experts (+ optional shared expert with its sigmoid gate, as in the Talker)."""

    def __init__(self, hidden: int, num_experts: int, top_k: int, expert_intermediate: int,
                 norm_topk_prob: bool, shared_intermediate: int = 0, act: str = "silu"):
        super().__init__()
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob
        self.gate = nn.Linear(hidden, num_experts, bias=False)    # the router: a logit per expert
        self.experts = Experts(num_experts, hidden, expert_intermediate, act)
        if shared_intermediate:
            self.shared_expert = SwiGLU(hidden, shared_intermediate, act)
            self.shared_expert_gate = nn.Linear(hidden, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RoutingStats]:
        """x (B, T, H) -> (B, T, H) and this layer's RoutingStats."""
        B, T, H = x.shape
        flat = x.reshape(B * T, H)                                   # (N, H): routing is per token
        logits = self.gate(flat)                                     # (N, E)
        probs, weights, experts = route(logits, self.top_k, self.norm_topk_prob)
        run = self.experts.grouped if self.experts.implementation == "grouped_mm" else self.experts
        out = run(flat, experts, weights)                            # (N, H)
        if hasattr(self, "shared_expert"):
            gate = torch.sigmoid(self.shared_expert_gate(flat))      # (N, 1)
            out = out + gate * self.shared_expert(flat)
        stats = RoutingStats(logits.view(B, T, -1), probs.detach().view(B, T, -1),
                             experts.view(B, T, -1), weights.detach().view(B, T, -1))
        return out.view(B, T, H), stats


def set_experts_implementation(model: nn.Module, name: str) -> nn.Module:
    """Choose how every Experts module in `model` runs (HF's experts_implementation): "eager",
    Experts.forward's loop over the chosen experts, as notebook 03 shows it, or "grouped_mm",
    Experts.grouped, one grouped matmul per projection (HF's default path). Returns `model`."""
    if name not in EXPERTS_IMPLEMENTATIONS:
        raise ValueError(f"experts_implementation={name!r}: choose one of "
                         f"{EXPERTS_IMPLEMENTATIONS}")
    for module in model.modules():
        if isinstance(module, Experts):
            module.implementation = name
    return model


def sparse_moe(cfg) -> SparseMoE:
    """The sparse block of a Thinker or Talker text config (the Talker's has a shared expert)."""
    return SparseMoE(cfg.hidden_size, cfg.num_experts, cfg.num_experts_per_tok,
                     cfg.moe_intermediate_size, cfg.norm_topk_prob,
                     cfg.shared_expert_intermediate_size, cfg.hidden_act)


def moe_for(cfg, layer_idx: int) -> nn.Module:
    """The feed-forward block of layer `layer_idx` in a Thinker text config: sparse, or dense where
    HF's mlp_only_layers / decoder_sparse_step say so."""
    if not cfg.is_moe_layer(layer_idx):
        return SwiGLU(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
    return sparse_moe(cfg)


# ---- reading routing statistics (plots and the notebook's explorer) ----------------------------

def expert_usage(routing: list, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(layers, E): per layer, the share of the selected tokens (token_mask (B, T), default all)
    that chose each expert. A row sums to k (every token picks k experts); a perfectly balanced row
    is k/E everywhere. Dense layers (routing entry None) give a row of zeros, so row i is always
    layer i."""
    first = next(r for r in routing if r is not None)
    rows = []
    for r in routing:
        if r is None:
            rows.append(torch.zeros(first.num_experts, device=first.experts.device))
            continue
        B, T, _ = r.experts.shape
        n = B * T if token_mask is None else int(token_mask.sum())
        rows.append(r.expert_counts(token_mask).float() / max(n, 1))
    return torch.stack(rows)


def explain_token(routing: list, layer: int, token: int, labels: list[str] | None = None,
                  batch: int = 0) -> str:
    """Text answer of the routing explorer: which experts layer number `layer` chose for position
    `token` of row `batch`, with their mixing weights and router probabilities. Notebook 03 wires
    this function to two sliders named after its arguments."""
    if not 0 <= layer < len(routing):
        raise IndexError(f"layer={layer}: the model has layers 0..{len(routing) - 1}")
    r = routing[layer]
    if r is None:
        return (f"layer {layer} is dense (mlp_only_layers): every token uses the same "
                f"feed-forward block")
    T = r.experts.shape[1]
    if not 0 <= token < T:
        raise IndexError(f"token={token}: the prompt has positions 0..{T - 1}")
    name = f" {labels[token]!r}" if labels is not None else ""
    k = r.experts.shape[-1]
    lines = [f"layer {layer}, position {token}{name}: top-{k} of {r.num_experts} experts"]
    for e, w in zip(r.experts[batch, token].tolist(), r.weights[batch, token].tolist()):
        p = r.router_probs[batch, token, e].item()
        lines.append(f"  expert {e:>3}   weight {w:.3f}   router prob {p:.3f}")
    kept = r.router_probs[batch, token, r.experts[batch, token]].sum().item()
    lines.append(f"  router probability mass kept by the top-k: {kept:.3f}")
    return "\n".join(lines)


# ---- load balancing (Switch Transformer, Fedus et al. 2021, eq. 4-6) ---------------------------

def load_balancing_loss(router_logits, num_experts: int, top_k: int,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Auxiliary loss, least when tokens spread evenly over experts (HF load_balancing_loss_func).

        f_e = share of (token, slot) assignments that went to expert e, times k
              (the fraction of tokens using e)
        P_e = mean router probability of expert e
        loss = E * sum_e f_e * P_e

    router_logits: a sequence of per-layer logits, each (N, E) or (B, T, E) for the same N = B*T
    tokens. As in HF, f and P are averaged over all layers' tokens together before the product (not
    one loss per layer), and `attention_mask` (B, T) leaves padding out of both averages. With
    uniform probabilities the loss equals k, whatever the assignments, which makes k the natural
    reference value.
    """
    layers = [lg.reshape(-1, lg.shape[-1]).float() for lg in router_logits]
    if not layers:
        raise ValueError("load_balancing_loss needs router logits of at least one MoE layer")
    n_tokens, device = layers[0].shape[0], layers[0].device
    weight = (torch.ones(n_tokens, device=device) if attention_mask is None
              else attention_mask.reshape(-1).float())               # (N,) 1 for tokens that count
    if weight.shape[0] != n_tokens:
        raise ValueError(f"attention_mask has {weight.shape[0]} positions but the router saw "
                         f"{n_tokens} tokens; pass the mask of the same forward call")
    assigned = torch.zeros(num_experts, device=device)
    prob_sum = torch.zeros(num_experts, device=device)
    for logits in layers:
        probs = torch.softmax(logits, dim=-1)                        # (N, E)
        chosen = torch.topk(probs, top_k, dim=-1).indices            # (N, k)
        slot_weight = weight.repeat_interleave(top_k)                # (N*k,) a token's k slots
        assigned += assigned.new_zeros(num_experts).scatter_add_(0, chosen.reshape(-1),
                                                                 slot_weight)
        prob_sum += (probs * weight[:, None]).sum(0)
    rows = weight.sum() * len(layers)
    return num_experts * torch.sum((assigned / rows) * (prob_sum / rows))
