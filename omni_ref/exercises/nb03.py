"""Exercises of notebook 03 (MoE routing): the share of experts a token uses, the router, the load-balancing loss."""
from __future__ import annotations

import functools

import torch

from . import call, exercise, number

# ---- 03.1 predict: the share of expert parameters one token uses ---------------------------------------------

REAL_EXPERTS, REAL_TOP_K = 128, 8


def _share_right():
    return REAL_TOP_K / REAL_EXPERTS


@exercise("03.1", "The real Thinker has E = 128 experts per layer and routes each token to k = 8. What fraction of "
          "the expert parameters does one token use?",
          right=_share_right, wrong=lambda: 1 / REAL_EXPERTS,
          praise="k/E = 8/128 = 1/16: every expert has the same size, so a token multiplies with 1/16 of the expert "
                 "weights of each layer. That is most of why a 30B-parameter model costs about 3B per token.")
def _share(answer):
    value = number(answer)
    want = _share_right()
    if abs(value - want) <= 1e-3 * want:
        return None
    if abs(value - 100 * want) <= 1e-3 * 100 * want:
        return "that looks like a percentage: give the fraction (0.5 for half)"
    if abs(value - 1 / REAL_EXPERTS) <= 1e-6:
        return "that is the share of one expert; how many experts does each token run in a layer?"
    if abs(value - REAL_TOP_K) < 1e-6 or value > 1:
        return "a fraction is between 0 and 1: the experts a token runs, divided by the experts a layer has"
    return "all experts of a layer have the same size, so count experts: those a token runs out of those there are"


# ---- 03.2 implement: the router -------------------------------------------------------------------------------

def _route_right():
    def route(logits, k):
        probs = torch.softmax(logits.float(), dim=-1)                    # (N, E): over all experts
        weights, experts = torch.topk(probs, k, dim=-1)                  # (N, k): the k most probable
        return weights / weights.sum(dim=-1, keepdim=True), experts      # renormalised to sum to one
    return route


def _route_wrong():
    def route(logits, k):                                                # forgets to renormalise
        weights, experts = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
        return weights, experts
    return route


@functools.lru_cache(maxsize=1)
def _route_cases():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(12, 64, generator=g) * 2, 8), (torch.randn(5, 16, generator=g), 2),
            (torch.randn(3, 8, generator=g) * 4, 1)]


def _by_expert(weights, experts):
    """Rows sorted by expert id, so that any order of the k chosen experts is accepted."""
    order = experts.argsort(dim=-1)
    return weights.gather(-1, order), experts.gather(-1, order)


@exercise("03.2", "Write route(logits, k): logits (N, E) -> (weights (N, k), experts (N, k)), Qwen3-MoE routing "
          "with renormalisation (norm_topk_prob=True).",
          right=_route_right, wrong=_route_wrong,
          praise="softmax over all E, top-k, renormalise: the same decision as omni_ref.moe.route and HF's "
                 "Qwen3OmniMoeThinkerTextTopKRouter.")
def _route(fn):
    from ..moe import route
    for logits, k in _route_cases():
        out = call(fn, logits.clone(), k)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            return "return two tensors: (weights, experts), each of shape (N, k)"
        weights, experts = (torch.as_tensor(t) for t in out)
        N = logits.shape[0]
        if tuple(weights.shape) != (N, k) or tuple(experts.shape) != (N, k):
            return (f"for logits of shape {tuple(logits.shape)} and k={k} both outputs must be ({N}, {k}); got "
                    f"{tuple(weights.shape)} and {tuple(experts.shape)}")
        _, want_w, want_e = route(logits, k, True)
        got_w, got_e = _by_expert(weights.float(), experts.long())
        want_w, want_e = _by_expert(want_w, want_e)
        if not torch.equal(got_e, want_e):
            return ("some tokens chose other experts: take the k largest router probabilities of each row "
                    "(the experts are the last axis)")
        if not torch.allclose(weights.float().sum(-1), torch.ones(N), atol=1e-5):
            return "the right experts, but each token's k weights should sum to one: norm_topk_prob renormalises"
        if not torch.allclose(got_w, want_w, atol=1e-5, rtol=0):
            return "the right experts, but other weights: they are the kept softmax probabilities, rescaled"
    return None


# ---- 03.3 predict: the load-balancing loss of a two-group router --------------------------------------------

LB_EXPERTS, LB_TOP_K = 64, 8


def _two_group_logits() -> torch.Tensor:
    """Two tokens: the first puts all its router probability, evenly, on experts 0..7, the second on 8..15."""
    logits = torch.full((2, LB_EXPERTS), -40.0)
    logits[0, :LB_TOP_K] = 0.0
    logits[1, LB_TOP_K:2 * LB_TOP_K] = 0.0
    return logits


@exercise("03.3", "E = 64, k = 8, one layer. Half the tokens put router probability 1/8 on each of experts 0..7 "
          "(and 0 elsewhere), the other half 1/8 on each of experts 8..15. What is the load-balancing loss "
          "E * sum_e f_e * P_e?",
          right=lambda: 32, wrong=lambda: 64,
          praise="f_e = 1/2 and P_e = 1/16 on 16 experts: 64 * 16 * (1/2) * (1/16) = 32, halfway between a "
                 "uniform router (k = 8, in the loss's units) and total collapse (E = 64). Spreading over g "
                 "groups of k experts gives E/g.")
def _lb(answer):
    from ..moe import load_balancing_loss
    value = number(answer)
    want = float(load_balancing_loss([_two_group_logits()], LB_EXPERTS, LB_TOP_K))
    if abs(value - want) <= 1e-3 * want:
        return None
    if abs(value - LB_EXPERTS) < 1e-6:
        return ("64 = E is total collapse, every token on the same k experts; here the tokens split over two "
                "groups, so each busy expert gets only half of them")
    if abs(value - LB_TOP_K) < 1e-6:
        return "8 = k is what a router with uniform probabilities scores; this one uses only 16 of the 64 experts"
    return ("work out f_e (the share of tokens that choose e; over all experts these sum to k) and P_e (the mean "
            "router probability of e) for a busy expert, note both are 0 for the other experts, then sum")
