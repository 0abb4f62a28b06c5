"""AuT audio encoder against HF's Qwen3OmniMoeAudioEncoder (fp32, eager), on the tiny and demo presets.

Inputs are random log-mel features from a fixed seed in HF's layout. Single audios go to HF's tower directly:
for one unpadded audio that is exactly what the Thinker's `get_audio_features` hands it (features of shape
(mel, frames), feature_lens = [frames]). The batch goes through HF's `get_audio_features` itself, from the padded
(num_audios, mel, frames) + feature_attention_mask layout the processor produces, so the packing step that the
Thinker performs before its tower is checked too (ours: `pack_padded_features`).
"""
import pytest
import torch
from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as hf_omni

import omni_ref
from omni_ref import hf
from omni_ref.audio_encoder import audio_token_count, pack_padded_features

MEL = 128


def close(got, want):
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def mel(frames: int, seed: int) -> torch.Tensor:
    return torch.randn(MEL, frames, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def audio_towers(preset_thinker_models):
    """(our audio tower, HF's Thinker) on each preset's checkpoint."""
    ours, theirs = preset_thinker_models
    return ours.thinker.audio_tower.eval(), theirs.thinker


@pytest.fixture(scope="module")
def tiny_audio_tower(tiny_dir):
    """Our audio tower on the tiny checkpoint."""
    return omni_ref.load(tiny_dir, components=("thinker",)).thinker.audio_tower


def test_token_count_rule_equal_hf():
    frames = torch.arange(0, 4000)
    torch.testing.assert_close(audio_token_count(frames), hf_omni._get_feat_extract_output_lengths(frames),
                               atol=0, rtol=0)
    assert [audio_token_count(n) for n in (100, 730, 3100)] == [13, 95, 403]     # 1 s, 7.3 s, 31 s
    assert isinstance(audio_token_count(730), int)


@pytest.mark.parametrize("seconds", [1, 7.3, 31])
def test_single_audio_equal_hf(audio_towers, seconds):
    ours, theirs = audio_towers
    frames = round(seconds * 100)
    x = mel(frames, seed=frames)
    with torch.no_grad():
        want = theirs.model.audio_tower(x, feature_lens=torch.tensor([frames])).last_hidden_state
        got = ours(x, torch.tensor([frames]))
    assert got.shape == (audio_token_count(frames), ours.config.output_dim)
    close(got, want)


def test_batch_equal_hf_thinker_path(audio_towers):
    """Two audios of different lengths, padded like the processor pads them (junk in the padding, to prove it is
    dropped), through HF's get_audio_features vs our pack_padded_features + tower."""
    ours, theirs = audio_towers
    lens = [730, 250]
    padded = torch.randn(2, MEL, max(lens), generator=torch.Generator().manual_seed(7))
    mask = (torch.arange(max(lens))[None, :] < torch.tensor(lens)[:, None]).long()
    with torch.no_grad():
        want = theirs.get_audio_features(padded, feature_attention_mask=mask).last_hidden_state
        got = ours(*pack_padded_features(padded, mask))
    assert got.shape[0] == sum(audio_token_count(n) for n in lens)
    close(got, want)


def test_short_clip_alone_and_batched_equal_hf(audio_towers):
    """HF pads every chunk to the longest chunk of the call, and the padded frames' conv outputs reach a short
    tail's last token. So a 0.3 s clip gives a (slightly) different last token alone than next to a 1 s clip; we
    reproduce both cases."""
    ours, theirs = audio_towers
    clip, other = mel(30, seed=1), mel(100, seed=2)
    with torch.no_grad():
        alone = ours(clip, [30])
        batched = ours(torch.cat([other, clip], 1), [100, 30])
        close(alone, theirs.model.audio_tower(clip, feature_lens=torch.tensor([30])).last_hidden_state)
        close(batched, theirs.model.audio_tower(torch.cat([other, clip], 1),
                                                feature_lens=torch.tensor([100, 30])).last_hidden_state)
    assert not torch.equal(alone[-1], batched[-1])


@pytest.mark.parametrize("lens", [[100], [730], [3100], [1700, 30], [800, 801, 799], [30, 20]])
def test_attention_windows_equal_hf_cu_seqlens(tiny_audio_tower, lens):
    cfg = tiny_audio_tower.config
    lens = torch.tensor(lens)
    _, chunk_lengths = hf_omni.chunk_and_pad_features(torch.zeros(MEL, int(lens.sum())), lens, cfg.n_window)
    want = hf_omni.get_audio_cu_seqlens(chunk_lengths, lens, cfg.n_window_infer, cfg.n_window)
    got = torch.tensor([0] + tiny_audio_tower.attention_windows(lens)).cumsum(0)
    assert got.tolist() == want.tolist()


def test_trace_shows_each_step(tiny_audio_tower):
    x = mel(730, seed=0)
    c, d = tiny_audio_tower.config.downsample_hidden_size, tiny_audio_tower.config.d_model
    with torch.no_grad():
        plain = tiny_audio_tower(x, [730])
        out, trace = tiny_audio_tower(x, [730], trace=True)
    assert torch.equal(out, plain)
    assert trace.chunk_frames == [100] * 7 + [30]
    assert trace.chunk_tokens == [13] * 7 + [4]
    assert trace.shapes == {"chunks": (8, 1, 128, 100), "conv2d1": (8, c, 64, 50), "conv2d2": (8, c, 32, 25),
                            "conv2d3": (8, c, 16, 13), "conv_out": (8, 13, d), "tokens": (95, d),
                            "output": (95, tiny_audio_tower.config.output_dim)}
    assert trace.window_tokens == [95] and trace.audio_tokens == [95]
    with torch.no_grad():
        _, long_trace = tiny_audio_tower(torch.cat([mel(3100, 1), x], 1), [3100, 730], trace=True)
    assert long_trace.window_tokens == [104, 104, 104, 91, 95]     # 8 s windows, never across two audios


def test_bad_inputs_are_named(tiny_audio_tower):
    x = mel(200, seed=0)
    with pytest.raises(ValueError, match=r"expected \(128, total_frames\) with 128 mel bins"):
        tiny_audio_tower(torch.randn(80, 200), [200])
    with pytest.raises(ValueError, match="add up to 150 frames but input_features has 200"):
        tiny_audio_tower(x, [100, 50])
    with pytest.raises(ValueError, match="each at least 1 frame"):
        tiny_audio_tower(x, [200, 0])
    with pytest.raises(ValueError, match="is batched.*pack_padded_features"):
        tiny_audio_tower(x[None], [200])
    with pytest.raises(ValueError, match=r"\(num_audios, mel, frames\) and \(num_audios, frames\)"):
        pack_padded_features(x[None], torch.ones(1, 199))
