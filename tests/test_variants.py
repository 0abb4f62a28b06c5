"""Thinker-only checkpoints (the Thinking and Captioner variants): HF saves them, omni_ref loads them.

Qwen3-Omni-30B-A3B-Thinking and -Captioner are published with enable_audio_output false. For such a
config HF builds, saves and loads the Thinker alone, but config.json still carries a talker_config
and a code2wav_config, HF's class defaults when none is given (thinker_hidden_size 2048,
accept_hidden_layer 18, 32 code groups against 16 quantizers) and the default chat ids (151644 ...),
none of which fits a small Thinker. Each checkpoint below is made by HF alone: a Thinker config
wrapped in `Qwen3OmniMoeConfig(thinker_config=..., enable_audio_output=False)` and nothing else,
HF's init, HF's save_pretrained. Two Thinker configs:

    hf_test    HF's own tiny test Thinker (omni_ref.hf.HF_TEST_THINKER_CONFIG, copied value for value
               from transformers' tests): 20 mel bins, a 99-token vocabulary
    tiny       the tiny preset's Thinker, whose vocabulary is our offline tokenizer's, so that our
               Processor (and HF's) can read the folder: the Captioner's use, one sound in, text out
"""
import copy
import json
import os
import shutil

import pytest
import torch

import omni_ref
from omni_ref import hf, presets
from omni_ref.audio_encoder import audio_token_count
from omni_ref.checkpoint import CheckpointError, to_checkpoint
from omni_ref.config import ConfigError, OmniConfig
from omni_ref.model import init_random_weights
from omni_ref.tools import latency

SPEECH = str(presets.REPO_DIR / "data" / "speech.wav")
IM_END = presets.token_ids()["im_end_token_id"]       # the tiny tokenizer's <|im_end|>
THINKER_CONFIGS = {"hf_test": hf.HF_TEST_THINKER_CONFIG,
                   "tiny": presets.config_dict("tiny")["thinker_config"]}


@hf.quiet()
def _save_thinker_only(thinker_config: dict, out, seed: int) -> str:
    """What HF writes for a Thinker-only model. HF's init leaves norm weights at 1 and biases at 0;
    omni_ref's seeded init then moves them (as the other parity fixtures do), so that a norm or a
    bias applied wrongly cannot go unnoticed. The audio encoder gets std 0.2: at 0.02 its output
    hardly depends on the features (measured: changing them to zeros moved the audio embeddings by
    1e-7 and the logits by 4e-7, below the parity tolerance), so an audio check would check nothing;
    at 0.2 the sound moves the logits by about 0.5."""
    cfg = hf.Qwen3OmniMoeConfig(thinker_config=copy.deepcopy(thinker_config),
                                enable_audio_output=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = hf.Qwen3OmniMoeForConditionalGeneration(cfg)
    init_random_weights(model.thinker, seed=seed)
    init_random_weights(model.thinker.model.audio_tower, seed=seed, std=0.2)
    model.save_pretrained(os.fspath(out))
    return os.fspath(out)


@pytest.fixture(scope="module")
def thinker_only_dirs(tmp_path_factory) -> dict[str, str]:
    """name -> the checkpoint HF saved for that Thinker config."""
    dirs = {}
    for name, thinker_config in THINKER_CONFIGS.items():
        dirs[name] = _save_thinker_only(thinker_config, tmp_path_factory.mktemp(f"only_{name}"), seed=3)
    presets.copy_tokenizer_files(dirs["tiny"])    # the processor's files, as a checkpoint ships them
    return dirs


@pytest.fixture(scope="module", params=sorted(THINKER_CONFIGS))
def thinker_only(request, thinker_only_dirs):
    """(name, dir, our model loaded with the default components, HF's model) per Thinker config."""
    d = thinker_only_dirs[request.param]
    return request.param, d, omni_ref.load(d), hf.load_hf(d)


def _vocab(model) -> int:
    return model.config.thinker_config.text_config.vocab_size


def _audio_prompt(name, d, config):
    """One sound and nothing else (the Captioner's input). tiny: through our Processor, from the
    folder itself; hf_test (20 mel bins, no tokenizer): log-mel features drawn at random, with the
    placeholder count the audio encoder needs."""
    if name == "tiny":
        processor = omni_ref.Processor.from_pretrained(d)
        chat = [{"role": "user", "content": [{"type": "audio", "audio": SPEECH}]}]
        return processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                             return_dict=True)
    th = config.thinker_config
    g = torch.Generator().manual_seed(5)
    frames = 230
    n = audio_token_count(frames, th.audio_config.n_window)
    text = torch.randint(9, th.text_config.vocab_size, (6,), generator=g).tolist()
    ids = [th.audio_start_token_id] + [th.audio_token_id] * n + [th.audio_end_token_id] + text
    features = torch.randn(1, th.audio_config.num_mel_bins, frames, generator=g)
    return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "input_features": features, "feature_attention_mask": torch.ones(1, frames, dtype=torch.long)}


# ---- what HF writes, and what omni_ref loads from it -------------------------------------------------------

def test_hf_writes_the_thinker_alone_with_default_talker_configs(thinker_only):
    """The premise: HF's file holds thinker.* tensors only, and a Talker / Code2Wav config that does not fit
    the Thinker (the values that used to stop omni_ref.load). HF itself loads it without a Talker."""
    _, d, _, theirs = thinker_only
    with open(os.path.join(d, "config.json")) as f:
        written = json.load(f)
    assert written["enable_audio_output"] is False
    assert written["talker_config"]["thinker_hidden_size"] == 2048
    assert written["talker_config"]["accept_hidden_layer"] == 18
    assert written["code2wav_config"]["num_quantizers"] == 16 != written["talker_config"]["num_code_groups"]
    assert written["im_start_token_id"] == 151644 > written["thinker_config"]["text_config"]["vocab_size"]
    assert {k.split(".")[0] for k in hf.checkpoint_tensors(d)} == {"thinker"}
    assert not hasattr(theirs, "talker") and not theirs.has_talker


def test_thinker_only_checkpoint_loads_the_thinker_alone(thinker_only):
    _, d, ours, _ = thinker_only
    assert ours.components == ("thinker",)
    assert ours.talker is None and ours.code2wav is None
    explicit = omni_ref.load(d, components=("thinker",))
    assert explicit.components == ("thinker",)
    # every tensor of the file, and nothing else, is in the model, value for value
    assert hf.compare_tensors(to_checkpoint(ours.state_dict()), hf.checkpoint_tensors(d)) == []


def test_text_prompt_logits_equal_hf(thinker_only, random_prompt):
    _, _, ours, theirs = thinker_only
    ids, mask = random_prompt(_vocab(ours), seed=4)
    with torch.no_grad():
        got = ours.thinker(input_ids=ids, attention_mask=mask).logits
        want = theirs.thinker(input_ids=ids, attention_mask=mask).logits
    assert got.abs().max() > 0.1            # not a degenerate output that any model would match
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_audio_prompt_logits_equal_hf(thinker_only):
    name, d, ours, theirs = thinker_only
    inputs = _audio_prompt(name, d, ours.config)
    assert (inputs["input_ids"] == ours.config.thinker_config.audio_token_id).sum() > 10
    with torch.no_grad():
        got = ours.thinker(**inputs).logits
        want = theirs.thinker(**inputs).logits
        without_sound = ours.thinker(**{**inputs, "input_features": torch.zeros_like(inputs["input_features"])})
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - without_sound.logits).abs().max() > 0.1      # the sound reaches the logits


@pytest.mark.parametrize("prompt", ["text", "audio"])
def test_greedy_text_equal_hf(thinker_only, random_prompt, prompt):
    """generate with no return_audio on a Thinker-only model: text ids, on both sides (HF's has_talker is
    False, ours has no Talker), the same greedy tokens."""
    name, d, ours, theirs = thinker_only
    if prompt == "text":
        ids, mask = random_prompt(_vocab(ours), seed=6, batch=1, pads=(0,))
        inputs = {"input_ids": ids, "attention_mask": mask}
    else:
        inputs = _audio_prompt(name, d, ours.config)
    eos = IM_END if name == "tiny" else _vocab(ours) - 1
    options = dict(thinker_max_new_tokens=12, thinker_do_sample=False, thinker_eos_token_id=eos)
    with torch.no_grad(), hf.quiet():
        got = ours.generate(**inputs, **options)
        want = theirs.generate(**inputs, **options)
    assert isinstance(got, torch.Tensor) and got.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(got, want)


def test_processor_reads_the_thinker_only_folder_as_hf_does(thinker_only_dirs):
    """The tiny folder (HF's test Thinker has no tokenizer). HF reads sound files only through soxr, which
    this project does not install: HF gets the samples (read with soundfile), omni_ref the path, as in
    tests/test_processor.py."""
    import soundfile as sf
    d = thinker_only_dirs["tiny"]
    got = _audio_prompt("tiny", d, OmniConfig.from_json_file(d, components=("thinker",)))
    wave, _ = sf.read(SPEECH, dtype="float32")
    chat = [{"role": "user", "content": [{"type": "audio", "audio": wave}]}]
    with hf.quiet():
        want = hf.load_hf_processor(d).apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                           return_dict=True, return_tensors="pt")
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.equal(got["feature_attention_mask"], want["feature_attention_mask"])
    torch.testing.assert_close(got["input_features"], want["input_features"], atol=1e-5, rtol=0)


# ---- asking for what is not there ----------------------------------------------------------------------------

@pytest.mark.parametrize("components", [("thinker", "talker"), ("talker",), ("thinker", "talker", "code2wav")])
def test_asking_for_a_missing_component_says_which_and_why(thinker_only, components):
    _, d, _, _ = thinker_only
    for call in (omni_ref.load, omni_ref.verify):
        with pytest.raises(CheckpointError) as err:
            call(d, components=components)
        message = str(err.value)
        assert "holds no talker.* " in message
        assert ("code2wav.*" in message) == ("code2wav" in components)
        assert "enable_audio_output=false" in message and "components=('thinker',)" in message


def test_a_component_saved_out_of_a_full_checkpoint_is_named(tiny_dir, tmp_path):
    """A full config whose checkpoint lacks Code2Wav (saved from a model loaded without it): the error names
    the component, not 50 missing keys."""
    omni_ref.save(omni_ref.load(tiny_dir, components=("thinker", "talker")), tmp_path)
    with pytest.raises(CheckpointError, match=r"holds no code2wav\.\* tensors.*saved without them"):
        omni_ref.load(tmp_path, components=("thinker", "code2wav"))
    assert omni_ref.load(tmp_path).components == ("thinker", "talker")


def test_speech_on_a_thinker_only_model_is_refused_clearly(thinker_only):
    _, _, ours, _ = thinker_only
    with pytest.raises(ValueError, match=r"return_audio=True needs the Talker and Code2Wav, and this "
                                         r"checkpoint has none.*enable_audio_output=false.*return_audio=False"):
        ours.generate(input_ids=torch.tensor([[10, 11]]), return_audio=True)
    with pytest.raises(ValueError, match=r"stream \(it speaks\).*enable_audio_output=false"):
        next(iter(ours.stream(input_ids=torch.tensor([[10, 11]]))))


# ---- what is built is still checked ------------------------------------------------------------------------

def _tiny(**edits) -> dict:
    d = presets.config_dict("tiny")
    for path, value in edits.items():
        node = d
        *owners, leaf = path.split("__")
        for key in owners:
            node = node[key]
        node[leaf] = value
    return d


BROKEN = {  # each breaks a tie between the Talker (or Code2Wav) and the rest, and the message names it
    "talker_config__thinker_hidden_size": (48, "talker_config.thinker_hidden_size=48 must equal "
                                               "thinker_config.text_config.hidden_size=64"),
    "talker_config__accept_hidden_layer": (7, "accept_hidden_layer=7 must be a Thinker layer index 0..2"),
    "im_start_token_id": (5000, "im_start_token_id=5000 is outside the Thinker vocabulary"),
    "code2wav_config__num_quantizers": (8, "num_quantizers=8 must equal talker_config.num_code_groups=4"),
    "talker_config__text_config__num_experts_per_tok": (9, "num_experts_per_tok=9 must be between 1"),
}


@pytest.mark.parametrize("field", sorted(BROKEN))
def test_a_full_checkpoint_still_checks_the_talker(tiny_dir, tmp_path, field):
    """The same broken value is refused when the Talker is built (a full checkpoint, or components naming
    it) and ignored when only the Thinker is."""
    value, message = BROKEN[field]
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, d)
    (d / "config.json").write_text(json.dumps(_tiny(**{field: value})))
    full = ("thinker", "talker", "code2wav")
    for components in (None, full, ("thinker", "talker") if "code2wav" not in field else full):
        with pytest.raises(ConfigError) as err:
            omni_ref.load(d, components=components)
        assert message in str(err.value) and str(d / "config.json") in str(err.value)
    assert omni_ref.load(d, components=("thinker",)).components == ("thinker",)
    with pytest.raises(ConfigError, match=message.split("=")[0]):
        OmniConfig.from_dict(_tiny(**{field: value}))                       # the default: every component
    OmniConfig.from_dict(_tiny(**{field: value}), components=("thinker",))
    thinker_only = OmniConfig.from_dict(_tiny(**{field: value}, enable_audio_output=False))
    assert thinker_only.described_components == ("thinker",)
    with pytest.raises(ConfigError, match=message.split("=")[0]):               # building it checks it
        omni_ref.Qwen3Omni(thinker_only, components=full)


def test_code2wav_ties_are_checked_only_with_both_ends_built():
    """num_quantizers must equal the Talker's code groups when both are built; Code2Wav alone decodes whatever
    codes it is given, and a Talker alone writes codes for no Code2Wav."""
    d = _tiny(code2wav_config__num_quantizers=8)
    for components in (("code2wav",), ("thinker", "talker"), ("talker",)):
        OmniConfig.from_dict(d, components=components)
    with pytest.raises(ConfigError, match="num_quantizers=8 must equal"):
        OmniConfig.from_dict(d, components=("talker", "code2wav"))


def test_a_thinker_config_is_still_checked_in_a_thinker_only_checkpoint():
    d = _tiny(enable_audio_output=False, thinker_config__image_token_id=5000)
    with pytest.raises(ConfigError, match=r"image_token_id=5000 is outside the vocabulary \(vocab_size=2048\)"):
        OmniConfig.from_dict(d)


# ---- the planner: what the two variants weigh -------------------------------------------------------------

def test_variant_sizes_of_the_real_model_equal_hf():
    """Thinking and Captioner keep the Thinker and drop the Talker, its MTP and Code2Wav: their kept count is
    HF's Thinker-only model (enable_audio_output false) built on the meta device from the same config, and
    kept + dropped is the whole model."""
    real = presets.build_meta("real")
    rows = {r.name: r for r in latency.variant_sizes(real)}
    assert list(rows) == ["Instruct", "Thinking", "Captioner"]
    total = sum(p.numel() for p in real.parameters())
    with torch.device("meta"), hf.quiet():
        hf_full = hf.Qwen3OmniMoeForConditionalGeneration(hf.hf_config(presets.config("real")))
        hf_thinker_only = hf.Qwen3OmniMoeForConditionalGeneration(
            hf.hf_config(presets.config("real").replace(enable_audio_output=False)))
    hf_kept = sum(p.numel() for p in hf_thinker_only.parameters())
    assert rows["Instruct"].kept == total == sum(p.numel() for p in hf_full.parameters()) == 35_259_818_545
    assert rows["Instruct"].dropped == 0
    for name in ("Thinking", "Captioner"):
        r = rows[name]
        assert r.components == ("thinker",)
        assert r.kept == hf_kept == 31_719_205_488 and r.kept + r.dropped == total
        assert r.dropped == sum(p.numel() for c in ("talker", "code2wav") for p in getattr(real, c).parameters())
        assert r.active == latency.count_params(real.thinker)[1] < r.kept
    assert latency.weight_bytes(rows["Thinking"].dropped, "bf16") == 7_081_226_114   # 2 bytes a parameter


def test_variant_sizes_needs_the_whole_model():
    with pytest.raises(ValueError, match="needs the whole model"):
        latency.variant_sizes(presets.build_meta("tiny", components=("thinker",)))
