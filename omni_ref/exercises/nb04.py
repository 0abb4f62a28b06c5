"""Exercises of notebook 04 (Thinker decoding): KV-cache bytes per token, top-p, the repetition penalty."""
from __future__ import annotations

import functools

import torch

from . import call, exercise, number

# ---- 04.1 predict: KV-cache bytes per token of the real Thinker -------------------------------------------------

REAL = dict(layers=48, heads=32, kv_heads=4, head_dim=128, hidden=2048)    # presets.config("real") text decoder
BF16 = 2


def _kv_right():
    return 2 * REAL["layers"] * REAL["kv_heads"] * REAL["head_dim"] * BF16


@exercise("04.1", "How many bytes of KV cache does the real Thinker add per token in bf16? (48 layers, 32 query "
          "heads, 4 key/value heads, head_dim 128)",
          right=_kv_right, wrong=lambda: 2 * REAL["layers"] * REAL["heads"] * REAL["head_dim"] * BF16,
          praise="2 (K and V) x 48 layers x 4 kv_heads x 128 x 2 bytes = 98,304 bytes = 96 KiB per token: a "
                 "32k-token context holds about 3.2 GB of cache. Grouped-query attention makes it 8x smaller "
                 "than caching all 32 heads.")
def _kv(answer):
    value = number(answer)
    want = _kv_right()
    if value == want:
        return None
    if value == want * REAL["heads"] // REAL["kv_heads"]:
        return ("that caches every query head; with grouped-query attention only the key/value heads are "
                "stored, each shared by several query heads")
    if value == want // 2:
        return "a decode step needs both the keys and the values of every earlier position"
    if value == want * 2:
        return "check the bytes per number: bf16 is a 16-bit format"
    if value == want // REAL["layers"]:
        return "that is one layer; every layer has its own attention and its own cache"
    if value == 2 * REAL["layers"] * REAL["hidden"] * BF16:
        return "the cache holds what k_proj and v_proj produce (kv_heads x head_dim), not the hidden state"
    return "count the numbers stored per new position: K and V, in every layer, for each key/value head"


# ---- 04.2 implement: top-p (nucleus) filter ----------------------------------------------------------------------

def _top_p_right():
    def top_p_filter(logits, top_p):
        probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs                    # mass of the more likely tokens
        drop_sorted = before >= top_p                            # the set already reached p without them
        drop = drop_sorted.scatter(-1, order, drop_sorted)       # back to vocabulary order
        return logits.masked_fill(drop, float("-inf"))
    return top_p_filter


def _top_p_wrong():
    def top_p_filter(logits, top_p):                             # drops the token that crosses p
        probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
        drop_sorted = probs.cumsum(dim=-1) > top_p
        drop_sorted[..., 0] = False
        return logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return top_p_filter


@functools.lru_cache(maxsize=1)
def _top_p_cases():
    g = torch.Generator().manual_seed(4)
    flat = torch.randn(3, 200, generator=g)
    zipf = -1.2 * torch.log(torch.arange(1, 301, dtype=torch.float32))[None]
    zipf = zipf[:, torch.randperm(300, generator=g)]             # peaked, in shuffled vocabulary order
    return [(flat, 0.9), (flat, 0.5), (zipf, 0.9), (zipf, 0.6), (flat * 3, 0.05)]


@exercise("04.2", "Write top_p_filter(logits, top_p): logits (B, V) -> the same logits with -inf for every token "
          "outside the smallest set of most likely tokens whose probability reaches top_p.",
          right=_top_p_right, wrong=_top_p_wrong,
          praise="the nucleus: the same kept tokens and values as omni_ref.sampling.apply_top_p and HF's "
                 "TopPLogitsWarper.")
def _top_p(fn):
    from ..sampling import apply_top_p
    for logits, p in _top_p_cases():
        got = torch.as_tensor(call(fn, logits.clone(), p))
        if tuple(got.shape) != tuple(logits.shape):
            return f"return logits of the input's shape {tuple(logits.shape)}; got {tuple(got.shape)}"
        want = apply_top_p(logits, p)
        kept, want_kept = torch.isfinite(got), torch.isfinite(want)
        if torch.equal(kept, want_kept):
            if not torch.equal(got[kept], logits[kept]):
                return "the right tokens are kept, but their logits changed: leave kept logits as they are"
            continue
        if (kept & ~want_kept).any() and not (want_kept & ~kept).any():
            return "you keep too many tokens: stop as soon as the kept probability reaches top_p"
        if (want_kept & ~kept).any() and not (kept & ~want_kept).any():
            return ("you keep too few: the token whose probability makes the total cross top_p belongs to the "
                    "set (and the most likely token is always kept)")
        return ("other tokens are kept than the nucleus: sort by probability (softmax of the logits), "
                "accumulate from the most likely down, and map the decision back to vocabulary order")
    return None


# ---- 04.3 implement: repetition penalty ----------------------------------------------------------------------------

def _penalty_right():
    def repetition_penalty(scores, input_ids, penalty):
        seen = scores.gather(1, input_ids)                       # (B, L) scores of the ids already present
        seen = torch.where(seen < 0, seen * penalty, seen / penalty)
        return scores.scatter(1, input_ids, seen)                # an id repeated in input_ids is penalised once
    return repetition_penalty


def _penalty_wrong():
    def repetition_penalty(scores, input_ids, penalty):          # divides negative scores too
        seen = scores.gather(1, input_ids)
        return scores.scatter(1, input_ids, seen / penalty)
    return repetition_penalty


@functools.lru_cache(maxsize=1)
def _penalty_cases():
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(2, 40, generator=g) * 3
    ids = torch.tensor([[3, 7, 7, 12, 3, 30], [0, 1, 2, 2, 2, 39]])
    return [(scores, ids, 1.5), (scores, ids, 0.8)]


@exercise("04.3", "Write repetition_penalty(scores, input_ids, penalty): scores (B, V), input_ids (B, L) -> "
          "scores in which every id present in input_ids is made less likely (for penalty > 1), as HF does.",
          right=_penalty_right, wrong=_penalty_wrong,
          praise="positive scores divided, negative ones multiplied, each present id once: the same scores as "
                 "omni_ref.sampling.apply_repetition_penalty and HF's RepetitionPenaltyLogitsProcessor.")
def _penalty(fn):
    from ..sampling import apply_repetition_penalty
    for scores, ids, penalty in _penalty_cases():
        got = torch.as_tensor(call(fn, scores.clone(), ids.clone(), penalty))
        if tuple(got.shape) != tuple(scores.shape):
            return f"return scores of the input's shape {tuple(scores.shape)}; got {tuple(got.shape)}"
        want = apply_repetition_penalty(scores, ids, penalty)
        if torch.allclose(got, want, atol=1e-6, rtol=0):
            continue
        present = torch.zeros_like(scores, dtype=torch.bool).scatter(1, ids, True)
        if not torch.allclose(got[~present], scores[~present]):
            return "only the ids that occur in input_ids change; every other score stays as it was"
        counts = torch.zeros_like(scores).scatter_add(1, ids, torch.ones_like(ids, dtype=scores.dtype))
        once, repeated = counts == 1, counts > 1
        if torch.allclose(got[once], want[once], atol=1e-6, rtol=0) and not torch.allclose(
                got[repeated], want[repeated], atol=1e-6, rtol=0):
            return "the ids that occur once are right; an id that occurs several times is still penalised once"
        negative = present & (scores < 0)
        if not torch.allclose(got[negative], want[negative], atol=1e-6, rtol=0):
            return ("look at the negative scores: dividing a negative score by a penalty > 1 moves it towards 0, "
                    "which makes the token more likely, not less")
        return "a positive score is divided by the penalty, once per id, however often the id occurs"
    return None
