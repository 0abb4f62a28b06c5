"""Code2WavStream, the incremental Code2Wav decoder that carries each layer's state from push to push: its
joined output equals the full decode model.code2wav(codes) for any piece sizes; it emits every sample that no
later frame can change, as soon as it is final; its state stays bounded; bad input is refused.

Lengths are chosen to exercise what could go wrong: more than sliding_window (72) frames, so the carried keys
and values must slide and rotary positions must continue; more than 300 frames, where HF's chunked decode
(StreamingCode2Wav) starts a second chunk and leaves the full decode.

Most tests run on `code2wav`, the tiny checkpoint's Code2Wav with its weights re-drawn at PyTorch's default
scale and its layer scales set to 1. The presets' random init (layer scales 0.01, ConvNeXt gamma 1e-6, weights
of std 0.02) makes the output all but independent of the codes: changing every code of a frame moves it by
~1e-9, so a 1e-5 check there would pass with a broken state (restarting rotary positions, for one). With the
rescaled weights the same change moves it by ~1e-2 (asserted below). The presets' own weights are checked too.
"""
import copy

import pytest
import torch
from torch import nn

import omni_ref
from omni_ref.code2wav import CausalConv, CausalTransConv, ConvNeXtBlock, LayerScale, StreamState
from omni_ref.streaming import Code2WavStream


def _codes(cfg, batch, frames, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.codebook_size, (batch, cfg.num_quantizers, frames), generator=g)


def _stream(code2wav, codes, pieces, stream=None):
    """Push codes (B, Q, sum(pieces)) in pieces of the given sizes, then flush; the joined audio."""
    assert sum(pieces) == codes.shape[-1]
    stream = stream or Code2WavStream(code2wav)
    out, start = [], 0
    for n in pieces:
        out.append(stream.push(codes[..., start:start + n]))
        start += n
    out.append(stream.flush())
    return torch.cat(out, dim=-1)


def _uneven(total, high, seed):
    """Random piece sizes in 0..high (empty pieces included) summing to total."""
    g, sizes = torch.Generator().manual_seed(seed), []
    while sum(sizes) < total:
        sizes.append(min(int(torch.randint(0, high + 1, (1,), generator=g)), total - sum(sizes)))
    return sizes


def _final_samples(code2wav, frames):
    """Samples of the full decode that `frames` frames fix, from the architecture: a causal conv keeps the
    length; a transposed conv turns n inputs into the n * stride samples they complete, minus its left trim
    (the block that needs a later input is what its right trim drops)."""
    if frames == 0:
        return 0
    n = frames
    for m in code2wav.modules():                        # registration order is forward order
        if isinstance(m, CausalTransConv):
            n = n * m.conv.stride[0] - m.trim
    return n


@pytest.fixture(scope="module")
def tiny_code2wav(tiny_dir):
    """Our Code2Wav on the tiny checkpoint (window 72, 1 pre-transformer layer, 4 quantizers)."""
    return omni_ref.load(tiny_dir, components=["code2wav"]).code2wav


@pytest.fixture(scope="module")
def code2wav(tiny_code2wav):
    """tiny_code2wav with weights whose output depends on the codes at O(1e-2) (module doc)."""
    model = copy.deepcopy(tiny_code2wav)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d, nn.Embedding)):
                m.reset_parameters()
            elif isinstance(m, LayerScale):
                m.scale.fill_(1.0)
            elif isinstance(m, ConvNeXtBlock):
                m.gamma.fill_(1.0)
    return model


@pytest.fixture(scope="module")
def full_decodes(code2wav):
    """frames -> (codes (2, Q, frames), their full decode), computed once per length."""
    cache = {}

    def get(frames):
        if frames not in cache:
            codes = _codes(code2wav.config, 2, frames, seed=frames)
            with torch.no_grad():
                cache[frames] = codes, code2wav(codes)
        return cache[frames]
    return get


def test_the_test_model_is_sensitive_to_the_codes(code2wav, full_decodes):
    codes, full = full_decodes(80)
    other = codes.clone()
    other[:, :, 40] = (codes[:, :, 40] + 1) % code2wav.config.codebook_size
    with torch.no_grad():
        moved = (code2wav(other) - full).abs()
    assert moved.max() > 1e-3 and full.abs().max() < 1          # ... and nothing hides behind the clamp


# ---- equal to the full decode ------------------------------------------------------------------------------

@pytest.mark.parametrize("frames,pieces", [
    (80, [1] * 80),                          # frame by frame, past the 72-frame window
    (80, [2] * 40),
    (80, [3] * 26 + [2]),
    (80, [7] * 11 + [3]),
    (80, [0, 5, 0, 0, 1, 74, 0]),            # empty pieces, also before the first frame and after the last
    (310, [300, 10]),                        # HF's chunk size, then a second chunk's worth
    (310, [310]),                            # everything in one push
    (310, [1] * 5 + [150, 2, 3, 150]),       # small and large pieces across frame 300
    (310, _uneven(310, 30, seed=0)),         # uneven random sizes, empty ones included
])
def test_stream_equals_full_decode(code2wav, full_decodes, frames, pieces):
    codes, full = full_decodes(frames)
    got = _stream(code2wav, codes, pieces)
    assert got.shape == full.shape == (2, 1, 1920 * frames - 555)
    torch.testing.assert_close(got, full, atol=1e-5, rtol=0)


def test_stream_equals_full_decode_on_tiny_checkpoint(tiny_code2wav):
    codes = _codes(tiny_code2wav.config, 2, 90, seed=8)
    with torch.no_grad():
        full = tiny_code2wav(codes)
    torch.testing.assert_close(_stream(tiny_code2wav, codes, [1, 2, 3, 0, 84]), full, atol=1e-5, rtol=0)


def test_stream_equals_full_decode_on_demo_preset():
    """The notebook preset: 2 pre-transformer layers, 16 quantizers, decoder_dim 256; 80 frames (past the
    window) in pieces of 1 to 4 frames, as model.stream delivers them."""
    code2wav = omni_ref.load(omni_ref.presets.cached_checkpoint("demo"), components=["code2wav"]).code2wav
    codes = _codes(code2wav.config, 1, 80, seed=9)
    with torch.no_grad():
        full = code2wav(codes)
    got = _stream(code2wav, codes, [1, 1, 2, 3] + [4] * 18 + [1])
    assert got.shape == full.shape
    torch.testing.assert_close(got, full, atol=1e-5, rtol=0)


def test_batch_rows_are_independent(code2wav, full_decodes):
    """Each row of a batch-2 stream equals that row streamed alone."""
    codes, _ = full_decodes(80)
    pieces = [4] * 20
    both = _stream(code2wav, codes, pieces)
    for row in range(2):
        alone = _stream(code2wav, codes[row:row + 1], pieces)
        torch.testing.assert_close(both[row:row + 1], alone, atol=1e-6, rtol=0)


def test_reset_starts_a_new_sequence(code2wav, full_decodes):
    codes, full = full_decodes(80)
    stream = Code2WavStream(code2wav)
    _stream(code2wav, codes[..., :30].flip(-1), [30], stream)      # some other sequence first
    stream.reset()
    assert stream.frames_in == stream.samples_out == stream.state_nbytes() == 0
    torch.testing.assert_close(_stream(code2wav, codes, [40, 40], stream), full, atol=1e-5, rtol=0)


# ---- as early as possible ----------------------------------------------------------------------------------

def test_emits_every_final_sample_after_each_frame(code2wav, full_decodes):
    codes, _ = full_decodes(80)
    codes = codes[:1, :, :12]
    stream, emitted = Code2WavStream(code2wav), []
    for t in range(12):
        stream.push(codes[..., t:t + 1])
        emitted.append(stream.samples_out)
        assert stream.frames_in == t + 1
    expected = [_final_samples(code2wav, k) for k in range(1, 13)]
    assert expected[:2] == [1920 - 555, 2 * 1920 - 555]      # the architecture's count, worked out by hand
    assert emitted == expected
    assert stream.flush().shape == (1, 1, 0)                 # nothing was held back
    assert stream.samples_out == 12 * 1920 - 555


@pytest.mark.parametrize("k", [1, 2, 5])
def test_the_next_sample_needs_the_next_frame(code2wav, full_decodes, k):
    """What push returned after k frames is final (changing frame k leaves it alone), and it could not have
    returned more: the very next sample changes with frame k."""
    codes, _ = full_decodes(80)
    codes = codes[:1, :, :k + 1]
    other = codes.clone()
    other[..., k] = (codes[..., k] + 1) % code2wav.config.codebook_size
    with torch.no_grad():
        diff = (code2wav(codes) - code2wav(other)).abs()[0, 0]
    m = Code2WavStream(code2wav).push(codes[..., :k]).shape[-1]
    assert m == _final_samples(code2wav, k)
    assert diff[:m].max() == 0 and diff[m] > 0


# ---- what is carried ---------------------------------------------------------------------------------------

def _expected_state_nbytes(code2wav, batch, frames):
    """Keys and values of min(frames, window - 1) frames per layer, plus each conv's kept inputs: left_pad
    for a causal conv, kernel / stride - 1 for a transposed conv, times its input channels (fp32)."""
    cfg = code2wav.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv = cfg.num_hidden_layers * 2 * min(frames, cfg.sliding_window - 1) * cfg.num_key_value_heads * head_dim
    convs = 0
    for m in code2wav.modules():
        if isinstance(m, CausalConv):
            convs += m.left_pad * m.conv.in_channels
        elif isinstance(m, CausalTransConv):
            convs += (m.conv.kernel_size[0] // m.conv.stride[0] - 1) * m.conv.in_channels
    return 4 * batch * (kv + convs)


def test_state_is_the_window_and_the_conv_tails(code2wav, full_decodes):
    codes, _ = full_decodes(80)
    stream, sizes = Code2WavStream(code2wav), []
    for t in range(0, 80, 4):
        stream.push(codes[..., t:t + 4])
        sizes.append(stream.state_nbytes())
        assert sizes[-1] == _expected_state_nbytes(code2wav, 2, t + 4)
        assert sum(stream.state_parts().values()) == sizes[-1]
    assert sizes[-1] == sizes[-3]                           # past the window it grows no further


def test_real_config_state_size_is_the_documented_one():
    """The numbers in Code2WavStream's docstring, from the real config's module tree on the meta device."""
    code2wav = omni_ref.presets.build_meta("real", components=("code2wav",)).code2wav
    state = StreamState()
    codes = torch.zeros(1, code2wav.config.num_quantizers, 80, dtype=torch.long, device="meta")
    with torch.no_grad():
        code2wav.step(codes, state)
    kv = sum(t.numel() * 4 for t in state.kv.keys + state.kv.values)
    assert (kv, state.nbytes() - kv) == (4_653_056, 536_832)
    assert state.nbytes() == _expected_state_nbytes(code2wav, 1, 80)
    assert "4,653,056" in Code2WavStream.__doc__ and "536,832" in Code2WavStream.__doc__


def test_push_carries_no_autograd_graph(code2wav, full_decodes):
    codes, _ = full_decodes(80)
    stream = Code2WavStream(code2wav)
    assert not stream.push(codes[..., :3]).requires_grad
    assert not any(t.requires_grad for t in stream._state.tails.values())


# ---- bad input ---------------------------------------------------------------------------------------------

def test_misuse_is_refused_and_leaves_the_stream_usable(code2wav, full_decodes):
    codes, full = full_decodes(80)
    q = code2wav.config.num_quantizers
    stream = Code2WavStream(code2wav)
    out = [stream.push(codes[..., :10])]
    with pytest.raises(ValueError, match="batch size 2, the piece has 1: keep the batch fixed"):
        stream.push(codes[:1, :, 10:11])
    with pytest.raises(ValueError, match=f"3 quantizers on axis 1 .* expects {q}"):
        stream.push(codes[:, :3, 10:11])
    with pytest.raises(ValueError, match=r"0\.\.127 .* found"):
        stream.push(torch.full((2, q, 1), 128))
    with pytest.raises(TypeError, match="integer tensor"):
        stream.push(codes[..., 10:11].float())
    with pytest.raises(ValueError, match=r"codes\[None\]"):
        stream.push(codes[0, :, 10:11])
    assert stream.frames_in == 10                            # the refused pieces changed nothing
    out += [stream.push(codes[..., 10:]), stream.flush()]
    torch.testing.assert_close(torch.cat(out, dim=-1), full, atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match="flushed.*call reset"):
        stream.push(codes[..., :1])
    with pytest.raises(RuntimeError, match="already flushed"):
        stream.flush()


def test_flush_without_frames(tiny_code2wav):
    assert Code2WavStream(tiny_code2wav).flush().shape == (0, 1, 0)
    stream = Code2WavStream(tiny_code2wav)
    empty = torch.zeros(3, tiny_code2wav.config.num_quantizers, 0, dtype=torch.long)
    assert stream.push(empty).shape == (3, 1, 0)
    assert stream.flush().shape == (3, 1, 0)
