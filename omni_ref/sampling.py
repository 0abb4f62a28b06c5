"""Choosing the next token from the logits: HF generate's logits processors, in HF's order.

    scores = logits of the last position, in fp32                        (B, V)
    1. repetition penalty   every id already in the sequence (prompt included) is made less likely:
                            a positive score is divided by the penalty, a negative one multiplied;
                            the first `ignore_first[b]` positions of row b do not count (HF: the
                            left-padding length of the attention mask, see below)
    -- only when sampling (do_sample=True): --
    2. temperature          scores / T: T < 1 sharpens the distribution, T > 1 flattens it
    3. top-k                keep the k highest scores (ties with the k-th are kept), the rest
                            -> -inf
    4. top-p (nucleus)      keep the smallest set of top tokens whose probability reaches p
    then: greedy = argmax of the scores; sampling = one draw from softmax(scores)

HF mirrors: RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
TopPLogitsWarper (transformers/generation/logits_process.py) and the token choice in
GenerationMixin._sample. The defaults are HF's global generation defaults (temperature 1, top_k 50,
top_p 1, repetition penalty 1, greedy): note that top_k=50 is therefore active whenever you sample
without naming top_k, exactly as in HF. A penalty of 1, a temperature of 1, top_k of 0/None and
top_p of 1 switch the corresponding step off.

Left padding and the penalty. HF's generate builds its RepetitionPenaltyLogitsProcessor with
prompt_ignore_length = the number of leading zeros of each row's attention mask (padding_lengths),
and the processor skips that many leading positions of the ids it is given. For the Thinker those
positions are exactly the pad tokens of the prompt, so padding is never penalised. HF's Talker is
called with inputs_embeds only, so its ids hold the generated codes alone: there the same count
skips the first codes a left-padded row generates (a row with p pads has its first p codes left
out of the penalty), which a row run alone does not. `padding_lengths` computes the count.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingOptions:
    """HF generation options, by HF's names (prefixed for the Thinker: thinker_do_sample, ...)."""
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self):
        def bad(name, value, rule):
            raise ValueError(f"{name}={value!r}: {rule}")
        if not (isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0):
            bad("repetition_penalty", self.repetition_penalty, "must be a number > 0 (1.0 = no "
                                                               "penalty)")
        if not self.do_sample:
            return                        # greedy ignores temperature / top-k / top-p, as HF does
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            bad("temperature", self.temperature, "must be > 0 when sampling; for greedy decoding "
                                                 "set do_sample=False")
        if self.top_k is not None and not (isinstance(self.top_k, int) and self.top_k >= 0):
            bad("top_k", self.top_k, "must be a whole number >= 0 (0 or None = no top-k filter)")
        if not (isinstance(self.top_p, (int, float)) and 0 <= self.top_p <= 1):
            bad("top_p", self.top_p, "must be between 0 and 1 (1.0 = no nucleus filter)")


# ---- the processors (each (B, V) -> (B, V), never in place) -------------------------------------

def padding_lengths(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, L) mask -> (B,) index of each row's first kept position: its number of left pads (0 for
    a row without padding), as HF's generate computes prompt_ignore_length."""
    if attention_mask is None:
        return None
    return (attention_mask != 0).int().argmax(dim=1)


def apply_repetition_penalty(scores: torch.Tensor, input_ids: torch.Tensor, penalty: float,
                             ignore_first: torch.Tensor | None = None) -> torch.Tensor:
    """Scores of the ids present in input_ids (B, L) are divided (if > 0) or multiplied (if < 0) by
    `penalty`, once per id however often it occurs. Positions j < ignore_first[b] (B,) of row b do
    not count (HF's prompt_ignore_length)."""
    V = scores.shape[-1]
    if ignore_first is not None:
        skipped = torch.arange(input_ids.shape[1], device=input_ids.device) < ignore_first[:, None]
        input_ids = input_ids.masked_fill(skipped, V)   # (B, L): to a spare column, dropped below
    seen = torch.zeros(scores.shape[0], V + 1, dtype=torch.bool, device=scores.device)
    seen = seen.scatter(1, input_ids, True)                                  # (B, V + 1)
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen[:, :V], penalised, scores)                        # (B, V)


def apply_temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    return scores / temperature


def apply_top_k(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    k = min(top_k, scores.shape[-1])
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]        # (B, 1): the k-th best score
    return scores.masked_fill(scores < kth, float("-inf"))


def apply_top_p(scores: torch.Tensor, top_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filter. Sorting ascending and dropping tokens while the cumulative probability stays
    <= 1 - p keeps exactly the most probable tokens whose total reaches p (HF's formulation, ties
    included)."""
    sorted_scores, order = torch.sort(scores, descending=False)         # (B, V) least likely first
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[..., -min_tokens_to_keep:] = False                  # always keep the best token(s)
    drop = drop_sorted.scatter(1, order, drop_sorted)                  # back to vocabulary order
    return scores.masked_fill(drop, float("-inf"))


def process_logits(scores: torch.Tensor, input_ids: torch.Tensor, opts: SamplingOptions,
                   ignore_first: torch.Tensor | None = None) -> torch.Tensor:
    """All active processors in HF's order: scores (B, V) fp32 next-token logits; ids (B, L);
    ignore_first (B,) leading positions the penalty skips (padding_lengths of the prompt mask)."""
    if opts.repetition_penalty != 1.0:
        scores = apply_repetition_penalty(scores, input_ids, opts.repetition_penalty,
                                          ignore_first)
    if opts.do_sample:
        if opts.temperature != 1.0:
            scores = apply_temperature(scores, opts.temperature)
        if opts.top_k:
            scores = apply_top_k(scores, opts.top_k)
        if opts.top_p < 1.0:
            scores = apply_top_p(scores, opts.top_p)
    return scores


def choose_next(scores: torch.Tensor, do_sample: bool,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) processed scores -> (B,) next token ids: argmax, or one multinomial draw from
    softmax(scores). Without a generator the draw uses torch's global RNG, as HF does (so
    torch.manual_seed reproduces HF)."""
    if not do_sample:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


# ---- stopping -----------------------------------------------------------------------------------

def eos_ids(eos_token_id, device=None) -> torch.Tensor | None:
    """None, an int or a list of ints -> 1D tensor of stop ids (or None)."""
    if eos_token_id is None:
        return None
    ids = torch.as_tensor(eos_token_id, dtype=torch.long, device=device).reshape(-1)
    if (ids < 0).any():
        raise ValueError(f"eos_token_id={eos_token_id!r}: token ids must be >= 0")
    return ids


class StopState:
    """Which rows of a batch are still generating. A row that produced an eos id is finished; from
    then on it receives `pad_token_id` (default: the first eos id, as HF) while the other rows go
    on."""

    def __init__(self, batch: int, eos_token_id=None, pad_token_id: int | None = None,
                 device=None):
        self.eos = eos_ids(eos_token_id, device)
        if pad_token_id is None and self.eos is not None:
            pad_token_id = int(self.eos[0])
        self.pad = pad_token_id
        self.unfinished = torch.ones(batch, dtype=torch.bool, device=device)

    def fill_finished(self, next_tokens: torch.Tensor) -> torch.Tensor:
        if self.eos is None:
            return next_tokens
        return torch.where(self.unfinished, next_tokens, torch.full_like(next_tokens, self.pad))

    def update(self, next_tokens: torch.Tensor) -> bool:
        """Record the tokens just appended; True when every row is finished."""
        if self.eos is not None:
            self.unfinished &= ~torch.isin(next_tokens, self.eos)
        return not bool(self.unfinished.any())
