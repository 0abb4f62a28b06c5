"""Logits processors and token choice against HF's (transformers/generation/logits_process.py), one by one and
chained in the order HF's generate builds them; seeded sampling equal to HF's generate token for token."""
import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                     TopKLogitsWarper, TopPLogitsWarper)

import omni_ref
from omni_ref import hf
from omni_ref.sampling import (SamplingOptions, StopState, apply_repetition_penalty, apply_temperature, apply_top_k,
                               apply_top_p, choose_next, padding_lengths, process_logits)

V = 64


def _scores(seed=0, batch=4):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, V, generator=g) * 3
    scores[0, 10] = scores[0, 11] = scores[0].max() + 1       # a tie at the top
    scores[1, :8] = -0.5                                       # a tie inside the distribution
    ids = torch.randint(0, V, (batch, 12), generator=g)
    ids[:, -3:] = ids[:, :3]                                   # repeated ids: penalised once each
    return scores, ids


def _same_filter(got, want):
    """Same kept set (-inf at the same places) and the same probabilities."""
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got.softmax(-1), want.softmax(-1), atol=1e-7, rtol=0)


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_equal_hf(penalty):
    scores, ids = _scores()
    _same_filter(apply_repetition_penalty(scores, ids, penalty), RepetitionPenaltyLogitsProcessor(penalty)(ids, scores))


def test_repetition_penalty_skipping_left_padding_equal_hf():
    """HF's generate passes each row's left-pad count (padding_lengths of the attention mask) as
    prompt_ignore_length: those leading positions are not penalised."""
    scores, ids = _scores(7)
    mask = torch.ones_like(ids)
    mask[1, :3], mask[2, :11] = 0, 0                           # row 2: all but the last id
    skip = padding_lengths(mask)
    assert skip.tolist() == [0, 3, 11, 0]
    want = RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=skip)(ids, scores)
    got = apply_repetition_penalty(scores, ids, 1.3, skip)
    _same_filter(got, want)
    assert not torch.equal(got, apply_repetition_penalty(scores, ids, 1.3))   # the skip matters


@pytest.mark.parametrize("t", [0.3, 1.7])
def test_temperature_equal_hf(t):
    scores, ids = _scores(1)
    _same_filter(apply_temperature(scores, t), TemperatureLogitsWarper(t)(ids, scores))


@pytest.mark.parametrize("k", [1, 2, 9, 500])
def test_top_k_equal_hf(k):
    scores, ids = _scores(2)
    _same_filter(apply_top_k(scores, k), TopKLogitsWarper(k)(ids, scores))


@pytest.mark.parametrize("p", [0.0, 0.3, 0.9, 0.999])
def test_top_p_equal_hf(p):
    scores, ids = _scores(3)
    _same_filter(apply_top_p(scores, p), TopPLogitsWarper(p)(ids, scores))


@pytest.mark.parametrize("opts", [
    dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3),
    dict(do_sample=True, temperature=1.5, top_k=0, top_p=0.5, repetition_penalty=1.0),
    dict(do_sample=False, repetition_penalty=1.2),
])
def test_processor_chain_equal_hf_generate_chain(tiny_thinker_models, opts):
    """The processors HF's generate itself builds for these options (GenerationMixin._get_logits_processor),
    applied in its order, give the same filtered distribution as ours."""
    _, theirs = tiny_thinker_models
    scores, ids = _scores(4)
    chain = theirs.thinker._get_logits_processor(generation_config=GenerationConfig(**opts),
                                                 input_ids_seq_length=ids.shape[1], device="cpu")
    want = scores.clone()
    for proc in chain:
        want = proc(ids, want)
    _same_filter(process_logits(scores.clone(), ids, SamplingOptions(**opts)), want)


@pytest.mark.parametrize("kw", [
    dict(thinker_do_sample=True),                               # HF's global defaults: top_k=50, T=1, top_p=1
    dict(thinker_do_sample=True, thinker_temperature=0.8, thinker_top_k=30, thinker_top_p=0.9,
         thinker_repetition_penalty=1.2),
    dict(thinker_repetition_penalty=1.5),                       # greedy with a penalty
])
def test_seeded_generation_equal_hf_token_for_token(tiny_thinker_models, kw):
    ours, theirs = tiny_thinker_models
    ids = torch.randint(0, 2048, (2, 8), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    torch.manual_seed(11)
    got = ours.generate(input_ids=ids, attention_mask=mask, return_audio=False, thinker_max_new_tokens=16, **kw)
    torch.manual_seed(11)
    want = theirs.generate(input_ids=ids, attention_mask=mask, return_audio=False, thinker_max_new_tokens=16, **kw)
    assert torch.equal(got, want)


def test_choose_next_and_generator():
    scores, _ = _scores(6)
    assert torch.equal(choose_next(scores, do_sample=False), scores.argmax(-1))
    a = choose_next(scores, True, torch.Generator().manual_seed(0))
    b = choose_next(scores, True, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    only = torch.full((1, V), float("-inf"))
    only[0, 7] = 0.0                                            # one token left after filtering
    assert choose_next(only, True).item() == 7


def test_stop_state_pads_finished_rows():
    stop = StopState(3, eos_token_id=[5, 6], pad_token_id=None)
    assert stop.pad == 5                                        # HF: the first eos id when no pad id is set
    assert not stop.update(torch.tensor([5, 1, 2]))
    assert stop.fill_finished(torch.tensor([9, 9, 9])).tolist() == [5, 9, 9]
    assert not stop.update(torch.tensor([5, 6, 3]))
    assert stop.update(torch.tensor([5, 5, 6]))


@pytest.mark.parametrize("opts, message", [
    (dict(do_sample=True, temperature=0.0), "temperature=0.0: must be > 0 when sampling; for greedy"),
    (dict(do_sample=True, top_p=1.5), "top_p=1.5: must be between 0 and 1"),
    (dict(do_sample=True, top_k=-1), "top_k=-1: must be a whole number >= 0"),
    (dict(repetition_penalty=0), "repetition_penalty=0: must be a number > 0"),
])
def test_bad_options_are_named(opts, message):
    with pytest.raises(ValueError, match=message):
        SamplingOptions(**opts)


def test_greedy_ignores_sampling_only_options():
    SamplingOptions(do_sample=False, temperature=0, top_k=-1, top_p=2)      # HF ignores them too
    with pytest.raises(ValueError, match="eos_token_id=-1: token ids must be >= 0"):
        StopState(1, eos_token_id=-1)
