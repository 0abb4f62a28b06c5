"""Configs: presets are valid and agree with the tokenizer; bad values are refused with the field named."""
import json

import pytest

import omni_ref
from omni_ref.config import ConfigError, OmniConfig


def test_real_preset_matches_published_keyfields():
    """Our packaged real config is the published one (shared/reference) when that folder is beside the repo."""
    import pathlib
    ref = pathlib.Path(omni_ref.presets.REPO_DIR).parent / "shared/reference/qwen3_omni_30b_a3b_instruct.keyfields.json"
    if not ref.is_file():
        pytest.skip("../shared/reference is not beside this checkout")
    published = json.loads(ref.read_text())
    published.pop("_source")
    assert omni_ref.presets.config_dict("real") == published


@pytest.mark.parametrize("name", ["tiny", "demo", "real"])
def test_presets_round_trip_through_config_json(name, tmp_path):
    cfg = omni_ref.presets.config(name)
    cfg.save(tmp_path)
    again = OmniConfig.from_json_file(tmp_path)
    assert again == cfg
    cfg.talker_config.check_codec_ids()


@pytest.mark.parametrize("name", ["tiny", "demo"])
def test_preset_token_ids_agree_with_tokenizer(name):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(omni_ref.presets.TOKENIZER_DIR / "tokenizer.json"))
    cfg = omni_ref.presets.config(name)
    th = cfg.thinker_config
    expect = {"<|im_start|>": cfg.im_start_token_id, "<|im_end|>": cfg.im_end_token_id,
              "system": cfg.system_token_id, "user": cfg.user_token_id, "assistant": cfg.assistant_token_id,
              "<|audio_pad|>": th.audio_token_id, "<|image_pad|>": th.image_token_id,
              "<|video_pad|>": th.video_token_id, "<|audio_start|>": th.audio_start_token_id,
              "<|audio_end|>": th.audio_end_token_id, "<|vision_start|>": th.vision_start_token_id,
              "<|vision_end|>": th.vision_end_token_id, "<tts_pad>": cfg.tts_pad_token_id,
              "<tts_text_bos>": cfg.tts_bos_token_id, "<tts_text_eod>": cfg.tts_eos_token_id}
    assert {s: tok.token_to_id(s) for s in expect} == expect
    assert tok.get_vocab_size() <= th.text_config.vocab_size
    assert cfg.talker_config.audio_start_token_id == th.audio_start_token_id


def test_demo_keeps_the_real_ratios():
    demo, real = omni_ref.presets.config("demo"), omni_ref.presets.config("real")
    assert demo.code2wav_config.samples_per_frame == real.code2wav_config.samples_per_frame == 1920
    assert demo.talker_config.num_code_groups == real.talker_config.num_code_groups == 16
    assert demo.code2wav_config.codebook_size == real.code2wav_config.codebook_size == 2048
    for attr in ("patch_size", "spatial_merge_size", "temporal_patch_size"):
        assert getattr(demo.thinker_config.vision_config, attr) == getattr(real.thinker_config.vision_config, attr)
    assert demo.thinker_config.audio_config.num_mel_bins == 128
    assert demo.thinker_config.text_config.rope_parameters["interleaved"] is True
    assert demo.talker_config.text_config.shared_expert_intermediate_size > 0
    assert demo.thinker_config.text_config.num_experts >= 8 * demo.thinker_config.text_config.num_experts_per_tok / 2


def _tiny_with(path, value):
    d = omni_ref.presets.config_dict("tiny")
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return d


@pytest.mark.parametrize("path,value,message", [
    (("thinker_config", "text_config", "num_experts_per_tok"), 9, "num_experts_per_tok=9 must be between 1 and num_experts=8"),
    (("thinker_config", "text_config", "num_key_value_heads"), 3, "num_attention_heads=4 is not a multiple of num_key_value_heads=3"),
    (("thinker_config", "text_config", "head_dim"), 15, "head_dim=15 must be a positive even number"),
    (("thinker_config", "text_config", "rope_parameters"), {"rope_type": "default", "mrope_section": [4, 2, 1]}, "summing to head_dim // 2 = 8"),
    (("thinker_config", "text_config", "hidden_act"), "swish2", "hidden_act='swish2' is not one of"),
    (("thinker_config", "text_config", "num_expert"), 4, "unknown key(s) ['num_expert']"),
    (("thinker_config", "audio_config", "encoder_attention_heads"), 3, "d_model=32 is not divisible by encoder_attention_heads=3"),
    (("thinker_config", "audio_config", "output_dim"), 32, "audio_config.output_dim=32 must equal text_config.hidden_size=64"),
    (("thinker_config", "vision_config", "num_position_embeddings"), 200, "must be a square number"),
    (("thinker_config", "vision_config", "deepstack_visual_indexes"), [0, 5], "deepstack_visual_indexes [5] are outside 0..2"),
    (("thinker_config", "image_token_id"), 5000, "image_token_id=5000 is outside the vocabulary (vocab_size=2048)"),
    (("talker_config", "accept_hidden_layer"), 7, "accept_hidden_layer=7 must be a Thinker layer index 0..2"),
    (("talker_config", "num_code_groups"), 8, "num_code_groups=8 differs from code_predictor_config.num_code_groups=4"),
    (("code2wav_config", "num_quantizers"), 8, "num_quantizers=8 must equal talker_config.num_code_groups=4"),
    (("code2wav_config", "decoder_dim"), 40, "decoder_dim=40 must be divisible by 2**len(upsample_rates) = 16"),
])
def test_bad_values_are_refused_with_the_field_named(path, value, message):
    with pytest.raises(ConfigError) as err:
        OmniConfig.from_dict(_tiny_with(path, value))
    assert message in str(err.value)
    assert ".".join(path[:-1]) in str(err.value) or path[0] in str(err.value)


def test_unknown_keys_can_be_ignored_on_request():
    d = _tiny_with(("thinker_config", "text_config", "some_future_field"), 1)
    cfg = OmniConfig.from_dict(d, strict=False)
    assert cfg.thinker_config.text_config.num_experts == 8


def test_codec_id_rules_are_checked_before_speech():
    d = _tiny_with(("talker_config", "codec_pad_id"), 5)      # inside the codebook: would be sampled as audio
    cfg = OmniConfig.from_dict(d)                               # loading is fine (text-only use)
    with pytest.raises(ConfigError, match="codec_pad_id=5 must be a control id in 128..1151"):
        cfg.talker_config.check_codec_ids()


def test_missing_config_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_checkpoint"):
        OmniConfig.from_json_file(tmp_path)


def test_hf_reads_our_config_json_identically(tmp_path):
    """Every field we write is read back by HF's config classes with the same value."""
    from omni_ref import hf
    for name in ("tiny", "demo", "real"):
        cfg = omni_ref.presets.config(name)
        theirs = hf.hf_config(cfg)
        assert theirs.thinker_config.text_config.num_experts == cfg.thinker_config.text_config.num_experts
        assert theirs.talker_config.text_config.num_experts == cfg.talker_config.text_config.num_experts
        assert theirs.thinker_config.text_config.head_dim == cfg.thinker_config.text_config.head_dim
        assert list(theirs.thinker_config.vision_config.deepstack_visual_indexes) == \
            cfg.thinker_config.vision_config.deepstack_visual_indexes
        assert theirs.talker_config.accept_hidden_layer == cfg.talker_config.accept_hidden_layer
        assert theirs.talker_config.speaker_id == cfg.talker_config.speaker_id
        assert list(theirs.code2wav_config.upsample_rates) == cfg.code2wav_config.upsample_rates
        # and the reverse: HF's dictionary reads back into ours, and one more round trip changes nothing (the
        # first one only adds values HF derives, such as the vision rotary type and the predictor's layer types)
        ours_again = OmniConfig.from_dict(theirs.to_dict())
        assert ours_again.thinker_config.text_config == cfg.thinker_config.text_config
        assert ours_again.talker_config.text_config == cfg.talker_config.text_config
        assert ours_again.code2wav_config == cfg.code2wav_config
        assert OmniConfig.from_dict(hf.hf_config(ours_again).to_dict()) == ours_again
