"""The fused Thinker (issue 5): processor outputs with audio, images and video in, logits and tokens equal to HF.

Inputs come from our Processor (itself equal to HF's, tests/test_processor.py) on the sample media in data/,
and the very same tensors go to HF's Thinker. Position ids are compared with HF's get_rope_index for each
modality alone, all together, audio-in-video, and a left-padded batch."""
import pytest
import torch

import omni_ref
from omni_ref import hf, presets

DATA = presets.REPO_DIR / "data"
SPEECH, IMAGE, VIDEO = str(DATA / "speech.wav"), str(DATA / "image.png"), str(DATA / "video")
IM_END = presets.token_ids()["im_end_token_id"]

PARTS = {
    "text": [],
    "audio": [{"type": "audio", "audio": SPEECH}],
    "image": [{"type": "image", "image": IMAGE}],
    "video": [{"type": "video", "video": VIDEO}],
    "all": [{"type": "audio", "audio": SPEECH}, {"type": "image", "image": IMAGE},
            {"type": "video", "video": VIDEO}],
}


def _messages(parts, question="What is in this?"):
    return [{"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
            {"role": "user", "content": parts + [{"type": "text", "text": question}]}]


def _inputs(processor, messages, **kw):
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         fps=2.0, **kw)


@pytest.fixture(scope="module")
def models_and_processor(preset_thinker_models, preset_dir):
    """(our Qwen3Omni with the Thinker only, HF's whole model, our Processor) on each preset."""
    return (*preset_thinker_models, omni_ref.Processor.from_pretrained(preset_dir))


def _rope_index(theirs, inputs, use_audio_in_video=False):
    lengths = inputs["feature_attention_mask"].sum(-1) if "feature_attention_mask" in inputs else None
    return theirs.thinker.model.get_rope_index(
        inputs["input_ids"], inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), inputs["attention_mask"],
        use_audio_in_video, lengths, inputs.get("video_second_per_grid"))


@pytest.mark.parametrize("kind", list(PARTS))
def test_position_ids_equal_hf(models_and_processor, kind):
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, _messages(PARTS[kind]))
    got, got_delta = ours.thinker.prompt_positions(inputs["input_ids"], inputs["attention_mask"], **_media(inputs))
    want, want_delta = _rope_index(theirs, inputs)
    assert torch.equal(got, want.float()) and torch.equal(got_delta.float(), want_delta.float())


def test_position_ids_audio_in_video_and_padded_batch_equal_hf(models_and_processor):
    ours, theirs, processor = models_and_processor
    aiv = _inputs(processor, _messages([{"type": "video", "video": VIDEO}]), use_audio_in_video=True)
    got, _ = ours.thinker.prompt_positions(aiv["input_ids"], aiv["attention_mask"], **_media(aiv))
    want, _ = _rope_index(theirs, aiv, use_audio_in_video=True)
    assert torch.equal(got, want.float())
    # a frame's tokens share one time id, so the prompt's ids run far behind its token count
    assert got[0].max() < got.shape[-1] / 2
    batch = _inputs(processor, [_messages(PARTS["all"]), _messages(PARTS["image"], "Short?")])
    assert (batch["attention_mask"][1] == 0).any()          # the second row is left-padded
    got, got_delta = ours.thinker.prompt_positions(batch["input_ids"], batch["attention_mask"], **_media(batch))
    want, want_delta = _rope_index(theirs, batch)
    assert torch.equal(got, want.float()) and torch.equal(got_delta.float(), want_delta.float())


def _media(inputs):
    return {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}


def test_logits_with_text_audio_image_video_equal_hf(models_and_processor):
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, _messages(PARTS["all"]))
    assert {"input_features", "pixel_values", "pixel_values_videos"} <= set(inputs)
    with torch.no_grad():
        got = ours.thinker(**inputs, output_hidden_states=True)
        want = theirs.thinker(**inputs, output_hidden_states=True)
    for i, (g, w) in enumerate(zip(got.hidden_states, want.hidden_states)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0, msg=lambda m: f"hidden state {i}: {m}")
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)


def test_audio_in_video_logits_equal_hf(models_and_processor):
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, _messages([{"type": "video", "video": VIDEO}]), use_audio_in_video=True)
    with torch.no_grad():
        got = ours.thinker(**inputs).logits
        want = theirs.thinker(**inputs, use_audio_in_video=True).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_16_greedy_tokens_equal_hf(models_and_processor):
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, [_messages(PARTS["all"]), _messages(PARTS["image"], "Short?")])
    with torch.no_grad():
        got = ours.generate(**inputs, return_audio=False, thinker_max_new_tokens=16, thinker_do_sample=False,
                            thinker_eos_token_id=IM_END)
        want = theirs.generate(**inputs, return_audio=False, thinker_max_new_tokens=16, thinker_do_sample=False,
                               thinker_eos_token_id=IM_END)
    assert got.shape[1] == inputs["input_ids"].shape[1] + 16
    assert torch.equal(got, want)


def test_deepstack_reaches_only_visual_positions(models_and_processor):
    ours, _, processor = models_and_processor
    inputs = _inputs(processor, _messages(PARTS["all"]))
    emb = ours.thinker.embed(inputs["input_ids"], **_media(inputs))
    cfg = ours.config.thinker_config
    ids = inputs["input_ids"]
    assert torch.equal(emb.visual_pos_masks, (ids == cfg.image_token_id) | (ids == cfg.video_token_id))
    assert len(emb.deepstack) == len(cfg.vision_config.deepstack_visual_indexes)
    assert all(d.shape == (int(emb.visual_pos_masks.sum()), cfg.text_config.hidden_size) for d in emb.deepstack)


def test_placeholder_count_mismatch_is_explained(models_and_processor):
    ours, _, processor = models_and_processor
    inputs = _inputs(processor, _messages(PARTS["image"]))
    ids = inputs["input_ids"].clone()
    first = (ids == ours.config.thinker_config.image_token_id).nonzero()[0]
    ids[first[0], first[1]] = 0                     # one placeholder fewer than the image's tokens
    with pytest.raises(ValueError, match=r"the prompt has \d+ <\|image_pad\|> placeholder\(s\) but the image "
                                         r"encoder made \d+ image tokens"):
        ours.thinker(input_ids=ids, attention_mask=inputs["attention_mask"], **_media(inputs))
    with pytest.raises(ValueError, match="pixels need image_grid_thw"):
        ours.thinker(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
