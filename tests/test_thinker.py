"""The Thinker's text decoder and its decoding loop against HF (fp32, eager attention).

Checkpoints: our tiny preset, and HF's own tiny Thinker test configuration (omni_ref.hf.HF_TEST_THINKER_CONFIG,
copied value for value from transformers' tests/models/qwen3_omni_moe/test_modeling_qwen3_omni_moe.py,
Qwen3OmniMoeThinkerForConditionalGenerationTester), written by HF's save_pretrained."""
import pytest
import torch
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerTextRotaryEmbedding

import omni_ref
from omni_ref import hf
from omni_ref.config import ConfigError, OmniConfig
from omni_ref.layers import KVCache
from omni_ref.rope import MultimodalRotary, axis_of_pairs, text_position_ids
from omni_ref.thinker import token_modalities


PAIRS = ["tiny_thinker_models", "hf_test_thinker_models"]


@pytest.mark.parametrize("which", PAIRS)
def test_prefill_logits_and_hidden_states_equal_hf(which, request, random_prompt):
    ours, theirs = request.getfixturevalue(which)
    ids, mask = random_prompt(ours.config.thinker_config.text_config.vocab_size)
    with torch.no_grad():
        got = ours.thinker(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        want = theirs.thinker(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)   # padding positions included
    assert len(got.hidden_states) == len(want.hidden_states)
    for a, b in zip(got.hidden_states, want.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_inputs_embeds_and_2d_position_ids_equal_hf(tiny_thinker_models, random_prompt):
    ours, theirs = tiny_thinker_models
    ids, _ = random_prompt(2048, seed=1, batch=2, pads=(0, 0))
    embeds = ours.thinker.model.embed_tokens(ids).detach()
    pos = torch.arange(3, 3 + ids.shape[1])[None].expand(2, -1)          # an offset start, one row per token
    with torch.no_grad():
        got = ours.thinker(inputs_embeds=embeds, position_ids=pos).logits
        want = theirs.thinker(inputs_embeds=embeds, position_ids=pos).logits
        from_ids = ours.thinker(input_ids=ids, position_ids=pos).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_ids, got, atol=0, rtol=0)


@pytest.mark.parametrize("which", PAIRS)
def test_three_axis_positions_equal_hf(which, request):
    """Distinct time/height/width positions (as image tokens have): rotary tables and the whole decoder."""
    ours, theirs = request.getfixturevalue(which)
    text = ours.config.thinker_config.text_config
    g = torch.Generator().manual_seed(2)
    pos = torch.randint(0, 50, (3, 2, 8), generator=g)
    cos, sin = MultimodalRotary(text)(pos)
    rotary = Qwen3OmniMoeThinkerTextRotaryEmbedding(theirs.config.thinker_config.text_config)
    cos_h, sin_h = rotary(torch.zeros(1, dtype=torch.float32), pos)
    torch.testing.assert_close(cos, cos_h, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin, sin_h, atol=1e-6, rtol=0)
    ids = torch.randint(9, text.vocab_size, (2, 8), generator=g)
    with torch.no_grad():
        got = ours.thinker(input_ids=ids, position_ids=pos).logits
        want = theirs.thinker(input_ids=ids, position_ids=pos).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_rotary_defaults_equal_hf():
    """No rope_parameters at all: HF's Thinker falls back to theta 1e6 and the 24:20:20 split (real head size)."""
    from omni_ref.config import TextConfig
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTextConfig
    ours = MultimodalRotary(TextConfig(hidden_size=256, num_attention_heads=2, num_key_value_heads=2))
    theirs = Qwen3OmniMoeThinkerTextRotaryEmbedding(Qwen3OmniMoeTextConfig(hidden_size=256, num_attention_heads=2,
                                                                           num_key_value_heads=2))
    pos = torch.randint(0, 4000, (3, 1, 6), generator=torch.Generator().manual_seed(0))
    for a, b in zip(ours(pos), theirs(torch.zeros(1), pos)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_interleaved_axis_split():
    # The real model: 24 time, 20 height, 20 width pairs, interleaved T H W T H W ...
    axis = axis_of_pairs(64, (24, 20, 20))
    assert axis[:6].tolist() == [0, 1, 2, 0, 1, 2] and axis[60:].tolist() == [0, 0, 0, 0]
    assert torch.bincount(axis).tolist() == [24, 20, 20]
    # HF's test split [1, 1, 2] on 4 pairs: the strided ranges are cut at the head's end -> 2, 1, 1 (HF quirk).
    assert axis_of_pairs(4, (1, 1, 2)).tolist() == [0, 1, 2, 0]


def test_text_position_ids_equal_hf_get_rope_index(tiny_thinker_models, random_prompt):
    _, theirs = tiny_thinker_models
    _, mask = random_prompt(2048, pads=(0, 4, 9))
    want, _ = theirs.thinker.get_rope_index(torch.zeros_like(mask), attention_mask=mask)
    assert torch.equal(text_position_ids(mask).float(), want)


def test_deepstack_injection_equal_hf(tiny_thinker_models):
    ours, theirs = tiny_thinker_models
    text = ours.config.thinker_config.text_config
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 9, text.hidden_size, generator=g)
    visual = torch.zeros(1, 9, dtype=torch.bool)
    visual[0, 2:6] = True
    deep = [torch.randn(4, text.hidden_size, generator=g) for _ in range(2)]
    pos = text_position_ids(torch.ones(1, 9))
    with torch.no_grad():
        got = ours.thinker.model(x, pos, deepstack_visual_embeds=deep, visual_pos_masks=visual).last_hidden_state
        want = theirs.thinker.model.language_model(inputs_embeds=x, position_ids=pos, visual_pos_masks=visual,
                                                   deepstack_visual_embeds=deep).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", PAIRS)
def test_cached_decoding_equals_uncached_forward(which, request, random_prompt):
    ours, _ = request.getfixturevalue(which)
    ids, mask = random_prompt(ours.config.thinker_config.text_config.vocab_size, seed=4, length=12)
    with torch.no_grad():
        full = ours.thinker(input_ids=ids, attention_mask=mask, use_cache=False)
        cache = KVCache()
        steps = [ours.thinker(input_ids=ids[:, :7], attention_mask=mask[:, :7], past_key_values=cache).logits]
        for t in range(7, 12):          # positions come from the mask's cumulative count, as in generate
            steps.append(ours.thinker(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1],
                                      past_key_values=cache).logits)
    assert full.past_key_values is None and cache.length == 12
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[real], full.logits[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", PAIRS)
def test_32_greedy_tokens_equal_hf_generate(which, request, random_prompt):
    ours, theirs = request.getfixturevalue(which)
    ids, mask = random_prompt(ours.config.thinker_config.text_config.vocab_size, seed=5)
    got = ours.generate(input_ids=ids, attention_mask=mask, return_audio=False, thinker_max_new_tokens=32)
    want = theirs.generate(input_ids=ids, attention_mask=mask, return_audio=False, thinker_max_new_tokens=32)
    want_thinker = theirs.thinker.generate(input_ids=ids, attention_mask=mask, max_new_tokens=32)
    assert got.shape == (3, 10 + 32)
    assert torch.equal(got, want) and torch.equal(got, want_thinker)
    # HF's integration test passes thinker_temperature=0 with greedy decoding: allowed, and ignored.
    again = ours.generate(input_ids=ids, attention_mask=mask, return_audio=False, thinker_max_new_tokens=32,
                          thinker_do_sample=False, thinker_temperature=0)
    assert torch.equal(again, got)


def test_generation_hidden_states_equal_hf(tiny_thinker_models, random_prompt):
    """What the Talker will consume: the hidden states of every pass (prefill, then one position per step)."""
    from omni_ref.generate import thinker_generate
    ours, theirs = tiny_thinker_models
    ids, mask = random_prompt(2048, seed=9, batch=2, pads=(0, 3))
    got = thinker_generate(ours.thinker, ids, mask, max_new_tokens=4, output_hidden_states=True,
                           return_dict_in_generate=True)
    want = theirs.thinker.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, output_hidden_states=True,
                                   return_dict_in_generate=True)
    assert torch.equal(got.sequences, want.sequences)
    assert len(got.hidden_states) == len(want.hidden_states) == 4
    for step_a, step_b in zip(got.hidden_states, want.hidden_states):
        for a, b in zip(step_a, step_b):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", PAIRS)
def test_eos_stops_rows_and_pads_like_hf(which, request, random_prompt):
    ours, theirs = request.getfixturevalue(which)
    ids, mask = random_prompt(ours.config.thinker_config.text_config.vocab_size, seed=6)
    free = theirs.generate(input_ids=ids, attention_mask=mask, return_audio=False, thinker_max_new_tokens=12)
    eos = [int(free[1, 10 + 2]), int(free[2, 10 + 5])]      # rows 1 and 2 stop early, row 0 maybe too
    got = ours.generate(input_ids=ids, attention_mask=mask, return_audio=False, thinker_max_new_tokens=12,
                        thinker_eos_token_id=eos)
    want = theirs.generate(input_ids=ids, attention_mask=mask, return_audio=False, thinker_max_new_tokens=12,
                           thinker_eos_token_id=eos)
    assert torch.equal(got, want)
    pad = ours.config.thinker_config.text_config.pad_token_id
    pad = eos[0] if pad is None else pad                    # HF: the config's pad id, else the first eos id
    first_stop = (got[1, 10:].unsqueeze(-1) == torch.tensor(eos)).any(-1).nonzero()[0, 0].item()
    assert (got[1, 10 + first_stop + 1:] == pad).all()


def test_layer_report_ok_on_parity_and_names_the_broken_layer(hf_test_dir, random_prompt):
    # A fresh pair: this test breaks a router.
    ours, theirs = omni_ref.load(hf_test_dir, components=("thinker",)), hf.load_hf(hf_test_dir)
    ids, mask = random_prompt(99, seed=7)
    report = hf.thinker_layer_report(ours, theirs, input_ids=ids, attention_mask=mask)
    assert len(report) == 4 + 2 and all(line.startswith("[OK]") for line in report)
    assert report[1].startswith("[OK]   layer 0 ") and report[1].endswith("experts equal for 30/30 tokens")
    with torch.no_grad():
        ours.thinker.model.layers[2].mlp.gate.weight.mul_(-1)          # break layer 2's router
    report = hf.thinker_layer_report(ours, theirs, input_ids=ids, attention_mask=mask)
    status = [line.split()[0] for line in report]
    assert status[:3] == ["[OK]"] * 3 and status[3] == "[DIFF]" and report[3].split()[1:3] == ["layer", "2"]


def test_labels_loss_equal_hf(tiny_thinker_models, random_prompt):
    ours, theirs = tiny_thinker_models
    ids, mask = random_prompt(2048, seed=8)
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        got = ours.thinker(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
        want = theirs.thinker(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=0)


def test_token_modalities_split_placeholders(tiny_thinker_models):
    ours, _ = tiny_thinker_models
    cfg = ours.config.thinker_config
    ids = torch.tensor([[5, cfg.audio_token_id, cfg.audio_token_id, cfg.image_token_id, 7]])
    m = token_modalities(ids, cfg)
    assert m["text"].tolist() == [[True, False, False, False, True]]
    assert m["audio"].sum() == 2 and m["image"].sum() == 1 and m["video"].sum() == 0


# ---- bad input -----------------------------------------------------------------------------------------------

def test_bad_inputs_get_clear_errors(tiny_thinker_models):
    ours, _ = tiny_thinker_models
    th = ours.thinker
    with pytest.raises(ValueError, match=r"input_ids contain 5000, outside the vocabulary 0..2047"):
        th(input_ids=torch.tensor([[1, 5000]]))
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        th()
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, seq\)"):
        th(input_ids=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 5\).*\(1, 3\)"):
        th(input_ids=torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match=r"position_ids of shape \(2, 1, 3\)"):
        th(input_ids=torch.tensor([[1, 2, 3]]), position_ids=torch.zeros(2, 1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"unexpected keyword\(s\) \['pixel_value'\]"):
        th(input_ids=torch.tensor([[1, 2]]), pixel_value=1)
    with pytest.raises(ValueError, match="return_audio=True needs the Talker and Code2Wav"):
        ours.generate(input_ids=torch.tensor([[1, 2]]), return_audio=True)
    with pytest.raises(TypeError, match="thinker_top_n: omni_ref's Thinker loop does not know option 'top_n'"):
        ours.generate(input_ids=torch.tensor([[1, 2]]), return_audio=False, thinker_top_n=3)
    with pytest.raises(ValueError, match="max_new_tokens=0 must be a whole number >= 1"):
        ours.generate(input_ids=torch.tensor([[1, 2]]), return_audio=False, thinker_max_new_tokens=0)


def test_hf_test_config_reads_strictly(hf_test_dir):
    """HF's own test config carries keys that no HF Qwen3-Omni class reads (text_config max_window_layers /
    use_sliding_window, vision_config embed_dim / mlp_ratio); the strict reader knows them as ignorable, and
    still refuses a key it does not know."""
    import json
    import os
    with open(os.path.join(hf_test_dir, "config.json")) as f:
        d = json.load(f)
    assert "use_sliding_window" in d["thinker_config"]["text_config"] and "embed_dim" in d["thinker_config"]["vision_config"]
    cfg = OmniConfig.from_dict(d)
    assert cfg.thinker_config.text_config.rope_parameters["mrope_section"] == [1, 1, 2]
    d["thinker_config"]["text_config"]["use_sliding_windows"] = True
    with pytest.raises(ConfigError, match=r"text_config: unknown key\(s\) \['use_sliding_windows'\]"):
        OmniConfig.from_dict(d)
