"""The register of HF's oddities (docs/hf_oddities.md): one test per oddity, each exercising HF itself.

Each test asserts that transformers still behaves in its odd way, and fails with the oddity's name
(`HF oddity '<name>' changed: ...`) the day it does not, so that an upgrade shows at once which of our
"as HF does" (or "HF fails here, so we refuse") decisions needs a second look. Each test also checks what
omni_ref does about it: reproduces it, or refuses the input with a clear error. All run on the tiny preset
or on HF's small pieces and take seconds; none may hang (the looping one counts HF's loop turns instead).
"""
import re
import types

import numpy as np
import pytest
import torch
from PIL import Image

import omni_ref
from omni_ref import hf, presets
from omni_ref.audio_encoder import audio_token_count, conv_stack_length
from omni_ref.code2wav import chunk_spans, samples_lost_at_start
from omni_ref.code_predictor import residual_sampling
from omni_ref.layers import KVCache
from omni_ref.model import Qwen3Omni, init_random_weights
from omni_ref.processor.vision import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, smart_resize
from omni_ref.rope import axis_of_pairs, multimodal_position_ids
from omni_ref.talker import talker_position_ids

ROOT = presets.REPO_DIR
REGISTER = ROOT / "docs" / "hf_oddities.md"


def changed(name: str, detail: str):
    """Stop the test: the named oddity is no longer what the register says HF does."""
    pytest.fail(f"HF oddity '{name}' changed under transformers {hf.version()}: {detail}. Re-check what "
                f"omni_ref does for it and update docs/hf_oddities.md.", pytrace=False)


def still(name: str, condition: bool, detail: str):
    if not condition:
        changed(name, detail)


def _hf_raises(name: str, exc_type, pattern: str, call):
    """Run `call` (an HF call the register says fails) and check it still fails the same way."""
    try:
        with hf.quiet():
            call()
    except exc_type as e:
        still(name, re.search(pattern, str(e)) is not None,
              f"HF still raises {exc_type.__name__}, but now says {str(e)[:200]!r}")
        return
    except Exception as e:               # noqa: BLE001 - any other failure is a change too
        changed(name, f"HF now raises {type(e).__name__}: {str(e)[:200]} (was {exc_type.__name__})")
    changed(name, "HF no longer fails here")


@pytest.fixture(scope="module")
def models(tiny_dir):
    """(our Qwen3Omni, HF's whole model) on the tiny preset."""
    return omni_ref.load(tiny_dir), hf.load_hf(tiny_dir)


# ---- model construction ------------------------------------------------------------------------

def test_talker_experts_left_uninitialised():
    name = "Talker experts left uninitialised"
    with torch.random.fork_rng(devices=[]), hf.quiet():
        torch.manual_seed(0)
        model = hf.Qwen3OmniMoeForConditionalGeneration(hf.hf_config(presets.config("tiny")))
    thinker = model.thinker.model.language_model.layers[0].mlp.experts
    talker = model.talker.model.layers[0].mlp.experts
    # Mark both expert banks with NaN and run HF's own init again (its "already done" flags cleared):
    # whatever _init_weights reaches becomes finite, whatever it skips stays NaN, as torch.empty left it.
    with torch.no_grad():
        for experts in (thinker, talker):
            experts.gate_up_proj.fill_(float("nan"))
            experts.down_proj.fill_(float("nan"))
    for obj in [*model.modules(), *model.parameters(), *model.buffers()]:
        if hasattr(obj, "_is_hf_initialized"):
            del obj._is_hf_initialized
    with hf.quiet():
        model.initialize_weights()
    still(name, not thinker.gate_up_proj.isnan().any(), "HF's init no longer fills the Thinker's experts")
    still(name, bool(talker.gate_up_proj.isnan().all() and talker.down_proj.isnan().all()),
          "HF's init now fills the Talker's experts (Qwen3OmniMoeTalkerTextExperts)")
    # omni_ref: its seeded init fills every parameter, the Talker's experts included
    ours = Qwen3Omni(presets.config("tiny"))
    with torch.no_grad():
        ours.talker.model.layers[0].mlp.experts.gate_proj.fill_(float("nan"))
    init_random_weights(ours, seed=0)
    assert all(torch.isfinite(p).all() for p in ours.parameters())


# ---- Code2Wav ----------------------------------------------------------------------------------

def test_555_samples_lost_per_chunk_boundary(models):
    name = "555 samples lost per chunk boundary"
    ours, theirs = models
    c2w = ours.config.code2wav_config
    codes = torch.randint(0, c2w.codebook_size, (1, c2w.num_quantizers, 6), generator=torch.Generator().manual_seed(0))
    lost = samples_lost_at_start(ours.config.code2wav_config)
    assert lost == 555                                        # rates 8, 5, 4, 3: the real model's
    with torch.no_grad(), hf.quiet():
        full = theirs.code2wav(codes)
        chunked = theirs.code2wav.chunked_decode(codes, chunk_size=2, left_context_size=1)   # 3 chunks
    still(name, full.shape[-1] == 1920 * 6 - lost, f"a 6-frame decode is {full.shape[-1]} samples")
    still(name, full.shape[-1] - chunked.shape[-1] == 2 * lost,
          f"3 chunks are {full.shape[-1] - chunked.shape[-1]} samples shorter than one decode, not 2 x {lost}")
    # omni_ref reproduces it, sample for sample
    with torch.no_grad():
        got = ours.code2wav.chunked_decode(codes, chunk_size=2, left_context_size=1)
    assert got.shape == chunked.shape
    torch.testing.assert_close(got, chunked, atol=1e-5, rtol=0)


class _Looping(Exception):
    pass


def test_chunk_size_0_looping(models):
    name = "chunk_size=0 looping"
    ours, theirs = models
    codes = torch.zeros(1, ours.config.code2wav_config.num_quantizers, 4, dtype=torch.long)
    calls = []

    def fake_decode(chunk):         # stands in for HF's decode: counts the loop's turns, never runs forever
        calls.append(chunk.shape[-1])
        if len(calls) > 50:
            raise _Looping
        return torch.zeros(chunk.shape[0], 1, chunk.shape[-1] * 1920)

    theirs.code2wav.forward = fake_decode
    try:
        with torch.no_grad():
            theirs.code2wav.chunked_decode(codes, chunk_size=0, left_context_size=25)
    except _Looping:
        still(name, set(calls) == {0}, f"HF's loop decoded chunks of {sorted(set(calls))} frames")
    else:
        changed(name, f"chunked_decode(chunk_size=0) returned after {len(calls)} decode(s)")
    finally:
        del theirs.code2wav.forward                        # back to the class's forward
    # omni_ref refuses it before decoding anything
    with pytest.raises(ValueError, match=r"chunk_size=0: a chunk must hold at least 1 frame"):
        ours.code2wav.chunked_decode(codes, chunk_size=0)
    assert chunk_spans(4, 300, 25) == [(0, 4, 0)]


# ---- processor ---------------------------------------------------------------------------------

def test_13_tokens_per_chunk_audio_rule():
    name = "13 tokens per chunk audio rule"
    from transformers.models.qwen3_omni_moe import processing_qwen3_omni_moe as hf_processing
    frames = torch.tensor([100, 250, 730])
    # HF counts 13 tokens for every full chunk of 2 * n_window mel frames, whatever n_window is...
    for n_window in (50, 25):
        want = frames // (2 * n_window) * 13 + conv_stack_length(frames % (2 * n_window))
        got = hf_processing._get_feat_extract_output_lengths(frames, n_window)
        still(name, torch.equal(got, want), f"n_window={n_window}: HF counts {got.tolist()}, not {want.tolist()}")
        still(name, torch.equal(hf.hf_modeling._get_feat_extract_output_lengths(frames, n_window), want),
              "the model's copy of the count now differs from the processor's")
    # ...which is what the convolutions make of a full chunk only at n_window = 50 (100 -> 13 frames)
    assert conv_stack_length(100) == 13 and conv_stack_length(50) == 7
    # omni_ref: the same count at n_window = 50 (every published config); it derives the 13 from the chunk
    assert torch.equal(audio_token_count(frames, 50), hf_processing._get_feat_extract_output_lengths(frames, 50))
    assert audio_token_count(100, 25) == 2 * 7


def test_video_sizing(tiny_dir, tiny_processor):
    name = "video sizing"
    theirs = hf.load_hf_processor(tiny_dir)
    own = theirs.video_processor
    frames = [Image.fromarray(np.full((64, 96, 3), 40 * i, dtype=np.uint8)) for i in range(4)]
    text = "<|vision_start|><|video_pad|><|vision_end|>"
    with hf.quiet():
        grid = theirs(text=text, videos=[frames], return_tensors="pt")["video_grid_thw"]
        alone = own(videos=[frames], return_tensors="pt")["video_grid_thw"]
    patch, merge = own.patch_size, own.merge_size
    # the processor sizes frames to 128..768 merged tokens per frame pair, not by its video processor's settings
    h, w = smart_resize(64, 96, patch * merge, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)
    still(name, grid.tolist() == [[2, h // patch, w // patch]],
          f"the processor's grid is {grid.tolist()}, not 128..768 tokens per frame pair ({h}x{w} pixels)")
    still(name, alone.tolist() != grid.tolist(),
          "the video processor alone now sizes frames as the processor does")
    # omni_ref reproduces the processor's sizing
    ours = tiny_processor(text=text, videos=[frames])
    assert torch.equal(ours["video_grid_thw"], grid)


# ---- positions ---------------------------------------------------------------------------------

def test_rope_index_restart(models):
    """Audio in video with a tall picture and little sound: the sound's tokens are the block added last, and the
    closing marks restart one past *their* largest id, below the picture's rows."""
    name = "rope-index restart"
    ours, theirs = models
    cfg = ours.config.thinker_config
    grid = torch.tensor([[1, 16, 4]])                      # one frame pair of 8 x 2 merged tokens
    audio_frames = torch.tensor([20])                      # 3 audio tokens
    n_video, n_audio = 16, int(audio_token_count(20))
    ids = torch.tensor([[10, 11, cfg.vision_start_token_id, cfg.audio_start_token_id]
                        + [cfg.video_token_id] * n_video + [cfg.audio_token_id] * n_audio
                        + [cfg.audio_end_token_id, cfg.vision_end_token_id, 12]])
    mask = torch.ones_like(ids)
    with hf.quiet():
        want, want_delta = theirs.thinker.model.get_rope_index(ids, None, grid, mask, True, audio_frames,
                                                               torch.tensor([2.0]))
    start = 4                                              # the media's first position id
    media = want[:, 0, 4:4 + n_video + n_audio]
    closing = want[:, 0, 4 + n_video + n_audio]
    still(name, media.max().item() == start + 7, f"the media block's largest id is {media.max().item()}")
    still(name, closing.tolist() == [start + n_audio] * 3,
          f"the closing marks sit at {closing.tolist()}, not one past the audio block ({start + n_audio})")
    # omni_ref reproduces it
    got, got_delta = multimodal_position_ids(ids, mask, cfg, video_grid_thw=grid, audio_feature_lengths=audio_frames,
                                             video_second_per_grid=torch.tensor([2.0]))
    assert torch.equal(got, want.float()) and torch.equal(got_delta.float(), want_delta.float())


def test_mrope_split():
    name = "mrope split"
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTextConfig
    text = Qwen3OmniMoeTextConfig(**hf.HF_TEST_THINKER_CONFIG["text_config"])   # head_dim 8: 4 pairs, [1, 1, 2]
    rotary = hf.hf_modeling.Qwen3OmniMoeThinkerTextRotaryEmbedding(text)
    follows = []
    for axis in range(3):                                  # move one axis at a time: which pairs turn?
        pos = torch.zeros(3, 1, 1)
        pos[axis] = 1000.0                                 # large enough that every pair turns visibly
        cos, _ = rotary(torch.zeros(1), pos)
        follows.append((cos[0, 0, :4] != 1).tolist())
    counts = [sum(f) for f in follows]
    still(name, counts == [2, 1, 1], f"HF's split of mrope_section [1, 1, 2] over 4 pairs is {counts} (t, h, w)")
    # omni_ref reproduces it
    axis = axis_of_pairs(4, (1, 1, 2))
    assert [int((axis == a).sum()) for a in range(3)] == counts
    assert [[bool(axis[i] == a) for i in range(4)] for a in range(3)] == follows


def test_cache_without_position_ids(models, random_prompt):
    name = "cache without position ids"
    ours, theirs = models
    ids, mask = random_prompt(ours.config.thinker_config.text_config.vocab_size, seed=7, batch=2, length=8,
                              pads=(0, 3))
    from transformers import DynamicCache
    cache = DynamicCache(config=theirs.thinker.config.text_config)
    with torch.no_grad(), hf.quiet():
        theirs.thinker(input_ids=ids[:, :7], attention_mask=mask[:, :7], use_cache=True, **hf.cache_kwargs(cache))
    _hf_raises(name, RuntimeError, r"must match the size",
               lambda: theirs.thinker(input_ids=ids[:, 7:], attention_mask=mask, use_cache=True,
                                      **hf.cache_kwargs(cache)))
    # omni_ref: the step gets the mask's count of real tokens, so it equals the uncached forward
    with torch.no_grad():
        full = ours.thinker(input_ids=ids, attention_mask=mask, use_cache=False).logits
        ours_cache = KVCache()
        ours.thinker(input_ids=ids[:, :7], attention_mask=mask[:, :7], past_key_values=ours_cache)
        step = ours.thinker(input_ids=ids[:, 7:], attention_mask=mask, past_key_values=ours_cache).logits
    torch.testing.assert_close(step[:, -1], full[:, -1], atol=1e-5, rtol=0)


# ---- speech ------------------------------------------------------------------------------------

def test_talker_crash_on_audio_with_vision(models):
    name = "Talker crash on audio with vision"
    ours, theirs = models
    cfg, tok = ours.config.talker_config, ours.config.thinker_config          # token ids: the Thinker's
    ids = torch.tensor([[tok.audio_start_token_id, tok.audio_token_id, tok.audio_end_token_id,
                         tok.vision_start_token_id] + [tok.image_token_id] * 4 + [tok.vision_end_token_id, 10]])
    mask = torch.ones_like(ids)
    image_grid, audio_frames = torch.tensor([[1, 4, 4]]), torch.tensor([4])
    # HF's Talker reads the audio encoder's n_window from its own config, which has no audio_config
    _hf_raises(name, AttributeError, r"audio_config",
               lambda: theirs.talker.get_rope_index(ids, image_grid, None, mask, False, audio_frames, None))
    # omni_ref refuses the request with a message that says why
    prompt = types.SimpleNamespace(input_ids=ids, attention_mask=mask)
    with pytest.raises(NotImplementedError, match="audio next to an image or video is not supported"):
        talker_position_ids(prompt, cfg, image_grid_thw=image_grid, audio_feature_lengths=audio_frames)


def test_do_sample_flip(models):
    name = "do_sample flip"
    _, theirs = models
    predictor = theirs.talker.code_predictor.generation_config
    before = predictor.do_sample
    try:
        seen = []
        for do_sample in (False, True, False):
            with hf.quiet():
                theirs.talker._prepare_generation_config(None, do_sample=do_sample)
            seen.append(predictor.do_sample)
        still(name, seen == [False, True, False],
              f"after Talker calls with do_sample False, True, False the code predictor's own generation "
              f"config says {seen}")
    finally:
        predictor.do_sample = before
    # omni_ref reproduces the coupling without the state: the MTP's options are a function of the Talker's
    assert residual_sampling(False).do_sample is False
    sampled = residual_sampling(True)
    assert (sampled.do_sample, sampled.top_k, sampled.top_p, sampled.temperature) == (True, 50, 0.8, 1.0)


# ---- the register itself -----------------------------------------------------------------------

def _register_rows():
    rows = []
    for line in REGISTER.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 5 and cells[0] not in ("oddity", "") and set(cells[0]) != {"-"}:
            rows.append(cells)
    return rows


def test_every_registered_oddity_has_its_test():
    rows = _register_rows()
    names = [re.sub(r"\*", "", r[0]) for r in rows]
    guards = [re.search(r"`(test_\w+)`", r[-1])[1] for r in rows]
    assert len(rows) == 10, names
    here = {n for n, f in globals().items() if n.startswith("test_") and callable(f)}
    assert set(guards) <= here, set(guards) - here
    # each guard names its oddity in its failure message
    source = (ROOT / "tests" / "test_hf_oddities.py").read_text()
    for oddity, guard in zip(names, guards):
        body = source.split(f"def {guard}(", 1)[1].split("\ndef ", 1)[0]
        assert f'name = "{oddity}"' in body, (guard, oddity)
    readme = (ROOT / "README.md").read_text()
    assert "docs/hf_oddities.md" in readme
