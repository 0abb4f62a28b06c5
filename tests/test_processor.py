"""omni_ref.Processor against HF's Qwen3OmniMoeProcessor, both read from the same checkpoint directory.

Parity: token ids and masks identical, float tensors within 1e-5 (in practice they are bit-identical), same keys in the
same order, same dtypes. HF reads sound files only through the soxr library, which this project does not install, so HF
gets the sound as an array (read with soundfile) where omni_ref gets the path; pictures are given to both as paths or
objects; videos, which HF cannot read from a frame folder, are given to HF as the frames our loader read.
"""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from omni_ref import hf, presets
from omni_ref.processor import (Processor, audio_token_count, load_video, mel_filter_bank, smart_resize,
                                vision_token_count)
from omni_ref.processor.audio import AudioSettings

DATA = presets.REPO_DIR / "data"
SPEECH, IMAGE, VIDEO = DATA / "speech.wav", DATA / "image.png", DATA / "video"


@pytest.fixture(scope="module")
def ours(tiny_dir):
    return Processor.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def theirs(tiny_dir):
    return hf.load_hf_processor(tiny_dir)


@pytest.fixture(scope="module")
def speech():
    wave, rate = sf.read(SPEECH, dtype="float32")
    assert rate == 16000 and wave.ndim == 1
    return wave


@pytest.fixture(scope="module")
def video():
    return load_video(VIDEO, 16000)


def assert_same(a: dict, b) -> dict:
    """Same keys in the same order, same shapes and dtypes, integers equal, floats within 1e-5. Returns max diffs."""
    assert list(a) == list(b)
    diffs = {}
    for key in a:
        x, y = a[key], b[key]
        assert isinstance(x, torch.Tensor), key
        assert (x.shape, x.dtype) == (y.shape, y.dtype), key
        if x.is_floating_point():
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0, msg=key)
            diffs[key] = (x - y).abs().max().item()
        else:
            assert torch.equal(x, y), key
    return diffs


def both(ours, theirs, our_messages, their_messages=None, **kwargs):
    """apply_chat_template on both sides: the prompt text must agree, then the tensors."""
    their_messages = their_messages or our_messages
    for add in (False, True):
        assert ours.apply_chat_template(our_messages, add_generation_prompt=add) == \
            theirs.apply_chat_template(their_messages, add_generation_prompt=add)
    our_kwargs = {k: v for k, v in kwargs.items() if k != "hf_kwargs"}
    a = ours.apply_chat_template(our_messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                 **our_kwargs)
    b = theirs.apply_chat_template(their_messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                   return_tensors="pt", **kwargs.get("hf_kwargs", {}))
    assert_same(a, b)
    return a


# ------------------------------------------------------------------------------------------------------- reading
def test_reads_the_checkpoint_files(ours, theirs):
    ids = presets.token_ids()
    assert (ours.image_token_id, ours.video_token_id, ours.audio_token_id) == (
        ids["image_token_id"], ids["video_token_id"], ids["audio_token_id"]) == (
        theirs.image_token_id, theirs.video_token_id, theirs.audio_token_id)
    assert ours.pad_token_id == ids["endoftext_token_id"]
    assert ours.chat_template == theirs.chat_template
    s = ours.audio_settings
    assert (s.sampling_rate, s.feature_size, s.n_fft, s.hop_length) == (16000, 128, 400, 160)
    v = ours.image_settings
    assert (v.patch_size, v.temporal_patch_size, v.merge_size, v.min_pixels, v.max_pixels) == (
        16, 2, 2, 3136, 12845056)
    assert (ours.n_window, ours.position_id_per_seconds) == (50, 13)
    import omni_ref.processor as package
    assert package.Processor is Processor


def test_building_blocks_equal_hf(theirs):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import _get_feat_extract_output_lengths
    assert np.array_equal(mel_filter_bank(AudioSettings()), theirs.feature_extractor.mel_filters)
    for frames in [1, 7, 99, 100, 101, 199, 200, 343, 800, 4500, 4501, 30000]:
        assert audio_token_count(frames) == int(_get_feat_extract_output_lengths(np.array(frames))), frames
    rng = np.random.default_rng(0)
    for h, w in [*rng.integers(16, 5000, (200, 2)).tolist(), (16, 16), (16, 3000), (4000, 3999)]:
        for lo, hi in [(3136, 12845056), (131072, 786432), (3136, 65536)]:
            assert smart_resize(h, w, 32, lo, hi) == hf_smart_resize(h, w, 32, lo, hi), (h, w, lo, hi)
    assert vision_token_count((3, 20, 28), 2) == 420


def test_sample_media_are_what_the_script_makes(speech, video):
    """data/ holds what scripts/make_media.py writes: the picture and frames are rebuilt here and compared; the wav
    files come from espeak-ng + sox, so only their format is checked."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_media", presets.REPO_DIR / "scripts" / "make_media.py")
    make_media = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_media)
    assert np.array_equal(np.asarray(Image.open(IMAGE)), np.asarray(make_media.landscape(300, 200)))
    frames = make_media.video_frames()
    assert video.frames.shape == (len(frames), 120, 160, 3) and video.fps == make_media.VIDEO_FPS
    assert np.abs(video.frames[5].astype(int) - np.asarray(frames[5])).mean() < 3   # JPEG, quality 85
    assert SPEECH.stat().st_size < 300_000 and 2 < len(speech) / 16000 < 6
    assert video.audio.shape == (make_media.VIDEO_SECONDS * 16000,)


# ------------------------------------------------------------------------------------------------------- parity
def test_text_only_system_prompt_and_turns(ours, theirs):
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": "Hello! What is 2 + 2?"}]},
        {"role": "assistant", "content": "It is 4."},
        {"role": "user", "content": "And 3 + 3?  Answer in words, café-style: naïve 東京 🎧."},
    ]
    out = both(ours, theirs, messages)
    assert list(out) == ["input_ids", "attention_mask"]
    assert out["input_ids"][0, :2].tolist() == [presets.token_ids()["im_start_token_id"],
                                                 presets.token_ids()["system_token_id"]]


def test_tools_tool_calls_and_reasoning_render_like_hf(ours, theirs):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather <now>, café",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "Sunny, 21 C"},
                {"role": "assistant", "content": "It is sunny.", "reasoning": "The tool said so.", "name": None}]
    for add in (False, True):
        prompt = ours.apply_chat_template(messages, tools=tools, add_generation_prompt=add)
        assert prompt == theirs.apply_chat_template(messages, tools=tools, add_generation_prompt=add)
    assert '"description": "Weather <now>, café"' in prompt and "<think>\nThe tool said so.\n</think>" in prompt


def test_sample_speech_clip(ours, theirs, speech):
    mine = [{"role": "user", "content": [{"type": "audio", "audio": str(SPEECH)},
                                         {"type": "text", "text": "What was said?"}]}]
    hers = [{"role": "user", "content": [{"type": "audio", "audio": speech},
                                         {"type": "text", "text": "What was said?"}]}]
    out = both(ours, theirs, mine, hers)
    frames = len(speech) // 160
    assert out["input_features"].shape == (1, 128, frames)
    assert (out["input_ids"] == ours.audio_token_id).sum().item() == audio_token_count(frames)


def test_45_seconds_of_audio_with_a_short_clip(ours, theirs, speech):
    """45 s crosses 45 chunk boundaries of 100 frames (and the encoder's 800-frame windows); batched with the 3.4 s
    clip, the short one is padded with silence before its STFT and, its length not being a multiple of 160, gets one
    mask frame more than it would alone: a quirk of HF's mask we reproduce."""
    rng = np.random.default_rng(0)
    n = 45 * 16000 + 77
    long = np.resize(speech, n) + 0.003 * rng.standard_normal(n).astype(np.float32)
    messages = [{"role": "user", "content": [{"type": "audio", "audio": long}, {"type": "audio", "audio": speech},
                                             {"type": "text", "text": "Compare the two."}]}]
    out = both(ours, theirs, messages)
    assert out["feature_attention_mask"].sum(-1).tolist() == [4500, len(speech) // 160 + 1]
    assert (out["input_ids"] == ours.audio_token_id).sum().item() == 45 * 13 + audio_token_count(len(speech) // 160 + 1)


@pytest.mark.parametrize("height, width", [(200, 300), (420, 140), (60, 60), (1000, 1300)])
def test_images_of_several_aspect_ratios(ours, theirs, height, width):
    """Landscape, portrait, a small square grown to min_pixels, and one above the max_pixels given at call time."""
    rng = np.random.default_rng(height)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Look."}]}]
    limit = 256 * 256
    out = both(ours, theirs, messages, processor_kwargs={"max_pixels": limit},
               hf_kwargs={"processor_kwargs": {"size": {"shortest_edge": 3136, "longest_edge": limit}}})
    t, h, w = out["image_grid_thw"][0].tolist()
    assert (t, h * 16, w * 16) == (1, *smart_resize(height, width, 32, 3136, limit))
    assert h * w * 256 <= limit and out["pixel_values"].shape == (h * w, 3 * 2 * 16 * 16)


def test_sample_image_from_its_path(ours, theirs):
    messages = [{"role": "user", "content": [{"type": "image", "image": str(IMAGE)}, {"type": "text", "text": "?"}]}]
    out = both(ours, theirs, messages)
    assert out["image_grid_thw"].tolist() == [[1, 12, 18]]   # 300x200 -> 288x192 pixels -> 18x12 patches


def test_image_above_the_checkpoints_max_pixels(tiny_dir, tmp_path):
    """The limits come from preprocessor_config.json: a checkpoint with a small max_pixels shrinks a big picture."""
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(f"{tiny_dir}/{f}", tmp_path / f)
    config = json.loads(open(f"{tiny_dir}/preprocessor_config.json").read())
    config["max_pixels"] = 224 * 224
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (600, 900, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}]}]
    out = both(Processor.from_pretrained(tmp_path), hf.load_hf_processor(tmp_path), messages)
    assert out["image_grid_thw"].tolist() == [[1, 10, 16]]   # 600x900 (540,000 pixels) -> 160x256 (40,960)


def test_sample_video_sampled_at_2_fps(ours, theirs, video):
    """12 frames at 4 fps, sampled at 2 fps -> 6 frames -> 3 frame pairs of 20x28 patches (frames grow to at least
    128 tokens each: the processor's own video size default), 1 second per frame pair."""
    text = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What happens?<|im_end|>\n"
    a = ours(text=text, videos=[str(VIDEO)], fps=2.0, do_sample_frames=True)
    b = theirs(text=text, videos=[video.frames], fps=2.0, do_sample_frames=True,
               video_metadata=[{"total_num_frames": 12, "fps": 4.0}], return_tensors="pt")
    assert_same(a, b)
    assert a["video_grid_thw"].tolist() == [[3, 20, 28]] and a["video_second_per_grid"].tolist() == [1.0]
    # through a chat message too: our apply_chat_template reads the folder and samples it
    messages = [{"role": "user", "content": [{"type": "video", "video": str(VIDEO)},
                                             {"type": "text", "text": "What happens?"}]}]
    c = ours.apply_chat_template(messages, tokenize=True, return_dict=True, fps=2.0)
    assert torch.equal(c["pixel_values_videos"], a["pixel_values_videos"])


def test_video_frames_without_fps(ours, theirs, video):
    """Without fps every frame is kept and HF assumes 1 frame per second: 2 s per frame pair. An odd frame count
    repeats the last frame to fill the last pair."""
    frames = [Image.fromarray(f) for f in video.frames[:5]]
    text = "<|vision_start|><|video_pad|><|vision_end|>"
    a = ours(text=text, videos=[frames])
    assert_same(a, theirs(text=text, videos=[frames], return_tensors="pt"))
    assert a["video_grid_thw"].tolist() == [[3, 20, 28]] and a["video_second_per_grid"].tolist() == [2.0]


def test_audio_in_video(ours, theirs, video, speech):
    """The video's own sound woven into its tokens; a standalone sound before it keeps its own placeholder."""
    messages = [{"role": "user", "content": [{"type": "audio", "audio": str(SPEECH)},
                                             {"type": "video", "video": str(VIDEO)},
                                             {"type": "text", "text": "What do you see and hear?"}]}]
    a = ours.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, fps=2.0,
                                 use_audio_in_video=True)
    prompt = ours.apply_chat_template(messages, add_generation_prompt=True)
    b = theirs(text=prompt, videos=[video.frames], audio=[speech, video.audio], audio_from_video_indices=[None, 0],
               load_audio_from_video=True, fps=2.0, do_sample_frames=True,
               video_metadata=[{"total_num_frames": 12, "fps": 4.0}], return_tensors="pt")
    assert_same(a, b)
    ids = a["input_ids"][0].tolist()
    n_video, n_audio = 3 * 140, audio_token_count(300)   # 3 frame pairs of 10x14 tokens; 3 s of sound
    assert ids.count(ours.video_token_id) == n_video
    assert ids.count(ours.audio_token_id) == audio_token_count(len(speech) // 160) + n_audio
    # woven: frame pair k (at k * 13 positions) comes before audio token 13 k
    start = ids.index(ours.video_token_id) - 1
    assert ours.decode(ids[start - 1:start + 1]) == "<|vision_start|><|audio_start|>"
    woven = ["V" if i == ours.video_token_id else "A" for i in ids[start + 1:start + 1 + n_video + n_audio]]
    assert "".join(woven) == "V" * 140 + "A" * 13 + "V" * 140 + "A" * 13 + "V" * 140 + "A" * 13
    # __call__ with the sound given as `audio`, its role read off the text (no audio_from_video_indices needed)
    c = ours(text=prompt, videos=[str(VIDEO)], audio=[speech, video.audio], use_audio_in_video=True, fps=2.0,
             do_sample_frames=True)
    assert_same(a, c)


def test_batch_of_two_pads_left(ours, theirs, speech):
    image = Image.open(IMAGE)
    short = [{"role": "user", "content": "Hi."}]
    long = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "audio", "audio": speech},
                                         {"type": "text", "text": "Describe both."}]}]
    out = both(ours, theirs, [long, short], hf_kwargs={"processor_kwargs": {"padding": True}})
    mask = out["attention_mask"]
    assert mask[0].all() and not mask[1].all()
    pads = int((mask[1] == 0).sum())
    assert mask[1, :pads].eq(0).all() and mask[1, pads:].eq(1).all()     # padding on the left
    assert out["input_ids"][1, :pads].eq(ours.pad_token_id).all()
    # the short prompt, unpadded, is the same tokens
    alone = ours.apply_chat_template(short, add_generation_prompt=True, tokenize=True)
    assert torch.equal(out["input_ids"][1, pads:], alone[0])


def test_numpy_output(ours):
    out = ours(text="<|audio_start|><|audio_pad|><|audio_end|>", audio=np.zeros(1600, np.float32),
               return_tensors="np")
    assert isinstance(out["input_ids"], np.ndarray) and out["input_features"].shape == (1, 128, 10)
