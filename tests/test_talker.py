"""The Talker and the MTP code predictor against HF (fp32, eager attention), piece by piece.

The Talker's forward (prefill over a left-padded batch, then cached decode steps), the code predictor's logits
for every residual codebook and its greedy / seeded-sampling codes, and the HF quirks the speech path relies on
(suppressed control ids, MoE in every Talker layer). The end-to-end speech path is tests/test_generate_speech.py.
"""
import copy

import pytest
import torch
from transformers import DynamicCache

import omni_ref
from omni_ref import hf, presets
from omni_ref.code_predictor import residual_sampling
from omni_ref.config import OmniConfig
from omni_ref.layers import KVCache
from omni_ref.moe import SparseMoE
from omni_ref.rope import text_position_ids
from omni_ref.talker import PAD_POSITION, suppressed_ids


@pytest.fixture(scope="module")
def talkers(tiny_models):
    """(our Talker, HF's Talker) on the tiny checkpoint."""
    ours, theirs = tiny_models
    return ours.talker, theirs.talker


def _embeds(talker, batch=2, length=9, seed=0):
    """Random Talker inputs at the scale of real prompt embeddings, with the second row left-padded by 3."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, talker.config.text_config.hidden_size, generator=g) * 0.5
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, :3] = 0
    return x, mask


def test_prefill_logits_and_hidden_states_equal_hf(talkers):
    """Every position (padding included) of a left-padded batch; HF computes its own positions from the mask."""
    ours, theirs = talkers
    x, mask = _embeds(ours)
    with torch.no_grad():
        got = ours(inputs_embeds=x, attention_mask=mask, output_hidden_states=True)
        want = theirs(inputs_embeds=x, attention_mask=mask, output_hidden_states=True, use_cache=False)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)
    hidden = want.hidden_states[0]                     # HF packs (hidden states, residual codes)
    assert len(got.hidden_states) == len(hidden) == ours.config.text_config.num_hidden_layers + 1
    for a, b in zip(got.hidden_states, hidden):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the shared expert is there: every layer routes and also runs its gated dense branch
    assert all(r is not None for r in got.routing)


def test_cached_decode_steps_equal_hf(talkers):
    """Prefill, then two single-position steps with the positions HF's generate uses (last + 1 per axis)."""
    ours, theirs = talkers
    x, mask = _embeds(ours, length=8)
    steps = torch.randn(2, 2, 1, x.shape[-1], generator=torch.Generator().manual_seed(1)) * 0.5
    pos = text_position_ids(mask, pad_value=PAD_POSITION)
    cache, hf_cache = KVCache(), DynamicCache(config=theirs.config.text_config)
    with torch.no_grad():
        got = ours(inputs_embeds=x, attention_mask=mask, position_ids=pos, past_key_values=cache)
        want = theirs(inputs_embeds=x, attention_mask=mask, position_ids=pos, **hf.cache_kwargs(hf_cache),
                      use_cache=True)
        torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)
        for step in steps:
            mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
            pos = pos[..., -1:] + 1
            got = ours(inputs_embeds=step, attention_mask=mask, position_ids=pos, past_key_values=cache)
            want = theirs(inputs_embeds=step, attention_mask=mask, position_ids=pos, **hf.cache_kwargs(hf_cache),
                          use_cache=True, generation_step=0)
            torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)
    assert cache.length == hf_cache.get_seq_length() == 10


def test_code_predictor_logits_for_every_residual_codebook_equal_hf(talkers):
    """Head 0 from the 2-position prefill, heads 1..N-2 from cached single-code steps (HF's generation_steps)."""
    ours, theirs = talkers
    ours, theirs = ours.code_predictor, theirs.code_predictor
    x = torch.randn(2, 2, ours.config.hidden_size, generator=torch.Generator().manual_seed(2)) * 0.5
    cache, hf_cache = KVCache(), DynamicCache(config=theirs.config)
    with torch.no_grad():
        got, _ = ours(0, inputs_embeds=x, past_key_values=cache)
        want = theirs(inputs_embeds=x, **hf.cache_kwargs(hf_cache), use_cache=True).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        for step in range(1, ours.config.num_code_groups - 1):
            code = got[:, -1].argmax(-1, keepdim=True)                                   # (B, 1)
            got, _ = ours(step, codes=code, past_key_values=cache)
            want = theirs(input_ids=code, generation_steps=step, **hf.cache_kwargs(hf_cache), use_cache=True).logits
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("do_sample", [False, True])
def test_code_predictor_codes_equal_hf_generate(talkers, do_sample):
    """HF's own generate with the options its Talker passes (greedy, or top-k 50 / top-p 0.8 sampling from the same
    seed: both sides draw once per code from torch's global generator, in the same order)."""
    ours, theirs = talkers
    ours, theirs = ours.code_predictor, theirs.code_predictor
    extra = {"top_k": 50, "top_p": 0.8} if do_sample else {}
    for seed in range(3):
        g = torch.Generator().manual_seed(10 + seed)
        hidden, code0 = torch.randn(2, 2, 1, ours.config.hidden_size, generator=g) * 0.5
        torch.manual_seed(seed)
        got = ours.generate(hidden, code0, residual_sampling(do_sample))
        torch.manual_seed(seed)
        want = theirs.generate(inputs_embeds=torch.cat([hidden, code0], dim=1), do_sample=do_sample,
                               max_new_tokens=ours.config.num_code_groups - 1, **extra)
        assert torch.equal(got.codes, want)
        assert got.codes.shape == (2, ours.config.num_code_groups - 1)
        # the embeddings the Talker sums: codebook j through table j-1
        emb = ours.model.codec_embedding
        assert torch.equal(got.embeds, torch.stack([emb[j](got.codes[:, j]) for j in range(len(emb))], dim=1))


def test_residual_sampling_follows_the_talker():
    assert residual_sampling(False).do_sample is False
    s = residual_sampling(True)
    assert (s.do_sample, s.temperature, s.top_k, s.top_p, s.repetition_penalty) == (True, 1.0, 50, 0.8, 1.0)


def test_suppressed_ids_are_the_control_range_except_eos():
    cfg = presets.config("demo").talker_config
    ids = suppressed_ids(cfg)
    vocab = cfg.text_config.vocab_size
    assert len(ids) == 1023 and ids[0] == vocab - 1024 == cfg.code_predictor_config.vocab_size
    assert cfg.codec_eos_token_id not in ids and ids[-1] == vocab - 1


def test_every_talker_layer_is_sparse_even_when_mlp_only_layers_says_dense():
    """HF's Talker layer overwrites its `mlp` with the sparse block (with shared expert) unconditionally."""
    d = copy.deepcopy(presets.config_dict("tiny"))
    d["talker_config"]["text_config"]["mlp_only_layers"] = [0]
    cfg = OmniConfig.from_dict(d)
    ours = omni_ref.Qwen3Omni(cfg, components=("talker",)).talker
    theirs = hf.Qwen3OmniMoeForConditionalGeneration(hf.hf_config(cfg)).talker
    assert isinstance(ours.model.layers[0].mlp, SparseMoE) and hasattr(ours.model.layers[0].mlp, "shared_expert")
    assert hasattr(theirs.model.layers[0].mlp, "shared_expert")


def test_bad_code_predictor_calls_are_named(talkers):
    cp = talkers[0].code_predictor
    with pytest.raises(ValueError, match=r"step=3: the code predictor has heads for steps 0..2"):
        cp(3, codes=torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"step 0 takes inputs_embeds \(batch, 2, hidden\)"):
        cp(0, codes=torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="step 2 takes codes"):
        cp(2, inputs_embeds=torch.zeros(1, 2, cp.config.hidden_size))
