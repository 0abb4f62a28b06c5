"""Code2Wav against HF (fp32): full decode and chunked_decode on the tiny and demo presets; the streaming
decoder against chunked_decode; receptive field and chunk alignment; bad input.

Sequences are chosen to exercise what could go wrong: more than sliding_window (72) frames so the window
mask matters, more than 300 frames so HF's default chunking has a second chunk, and chunks smaller than the
left context."""
import pytest
import torch

import omni_ref
from omni_ref import hf
from omni_ref.code2wav import chunk_spans, samples_lost_at_start
from omni_ref.streaming import (StreamingCode2Wav, aligned_full_span, boundary_error_curve, influence_frames,
                                measure_streaming, receptive_field, show_chunking)


def _codes(cfg, batch, frames, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.codebook_size, (batch, cfg.num_quantizers, frames), generator=g)


@pytest.fixture(scope="module")
def code2wavs(preset_dir):
    """(our Code2Wav, HF's) from each preset's checkpoint."""
    from_ours = omni_ref.load(preset_dir, components=["code2wav"]).code2wav
    return from_ours, hf.load_hf(preset_dir).code2wav


@pytest.fixture(scope="module")
def tiny_code2wav(tiny_dir):
    """Our Code2Wav on the tiny checkpoint."""
    return omni_ref.load(tiny_dir, components=["code2wav"]).code2wav


# ---- parity with HF ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset_dir,batch", [("tiny", 2), ("demo", 1)], indirect=["preset_dir"])
def test_full_decode_equal_hf(code2wavs, batch):
    ours, theirs = code2wavs
    codes = _codes(ours.config, batch, 80, seed=0)
    with torch.no_grad():
        want, got = theirs(codes), ours(codes)
    assert got.shape == want.shape == (codes.shape[0], 1, 80 * 1920 - 555)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset_dir,frames,chunk,context", [
    ("tiny", 305, 300, 25), ("tiny", 47, 10, 25), ("tiny", 23, 7, 3), ("tiny", 23, 5, 0),
    ("demo", 305, 300, 25), ("demo", 47, 10, 25),     # HF's default and small chunks on the notebook preset
], indirect=["preset_dir"])
def test_chunked_decode_equal_hf(code2wavs, frames, chunk, context):
    ours, theirs = code2wavs
    codes = _codes(ours.config, 1, frames, seed=1)
    with torch.no_grad():
        want = theirs.chunked_decode(codes, chunk_size=chunk, left_context_size=context)
        got = ours.chunked_decode(codes, chunk_size=chunk, left_context_size=context)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ---- streaming -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk,context,pieces", [
    (10, 25, [3, 0, 7, 1, 15, 2, 25, 4]),     # pieces smaller, equal and larger than a chunk; an empty one
    (7, 3, [1] * 29),                         # frame by frame, context shorter than the chunk
    (5, 0, [12, 17]),                         # no context at all
    (300, 25, [29]),                          # HF's default: everything lands in the final, partial chunk
])
def test_streaming_equals_chunked_decode(tiny_code2wav, chunk, context, pieces):
    codes = _codes(tiny_code2wav.config, 2, sum(pieces), seed=2)
    stream = StreamingCode2Wav(tiny_code2wav, chunk_size=chunk, left_context_size=context)
    q, bound = tiny_code2wav.config.num_quantizers, 0
    with torch.no_grad():
        want = tiny_code2wav.chunked_decode(codes, chunk_size=chunk, left_context_size=context)
        out, start = [], 0
        for n in pieces:
            out.append(stream.push(codes[..., start:start + n]))
            start += n
            bound = max(bound, stream.state_nbytes())
        out.append(stream.flush())
    # Same tensors through the same operations: bit-identical, not merely close.
    assert torch.equal(torch.cat(out, dim=-1), want)
    assert stream.frames_in == stream.frames_out == sum(pieces)
    # The state never grows beyond the left context plus one unfinished chunk of int64 codes.
    assert bound <= 2 * q * (context + chunk - 1) * 8


def test_streaming_emits_audio_as_soon_as_a_chunk_is_complete(tiny_code2wav):
    codes = _codes(tiny_code2wav.config, 1, 12, seed=3)
    stream = StreamingCode2Wav(tiny_code2wav, chunk_size=4, left_context_size=25)
    with torch.no_grad():
        sizes = [stream.push(codes[..., t:t + 1]).shape[-1] for t in range(12)]
    assert sizes == [0, 0, 0, 4 * 1920 - 555] * 3


def test_streaming_misuse(tiny_code2wav):
    codes = _codes(tiny_code2wav.config, 1, 3, seed=4)
    stream = StreamingCode2Wav(tiny_code2wav, chunk_size=2, left_context_size=1)
    with torch.no_grad():
        stream.push(codes)
        with pytest.raises(ValueError, match="keep the batch fixed"):
            stream.push(torch.cat([codes, codes])[..., :1])
        assert stream.flush().shape[-1] == 1920 - 555
        with pytest.raises(RuntimeError, match="already flushed"):
            stream.flush()
        with pytest.raises(RuntimeError, match="call reset"):
            stream.push(codes)
        stream.reset()
        assert stream.push(codes).shape[-1] == 2 * 1920 - 555
    with pytest.raises(ValueError, match="chunk_size=0"):
        StreamingCode2Wav(tiny_code2wav, chunk_size=0)


# ---- what the chunks see -----------------------------------------------------------------------------------

def test_length_and_lost_samples(tiny_code2wav):
    assert samples_lost_at_start(tiny_code2wav.config) == 8 * 60 + 5 * 12 + 4 * 3 + 3 == 555
    assert tiny_code2wav.total_upsample == 1920
    assert chunk_spans(23, 10, 25) == [(0, 10, 0), (10, 20, 10), (20, 23, 20)]
    assert aligned_full_span(tiny_code2wav.config, 10, 20) == (19200, 38400 - 555)


def test_chunk_with_enough_context_equals_full_decode(tiny_code2wav):
    """Placing each chunk at aligned_full_span, a chunk whose left context covers the receptive field (80.4
    frames for tiny_code2wav) reproduces the full decode up to rounding; without context it does not at all."""
    cfg = tiny_code2wav.config
    assert receptive_field(tiny_code2wav)["total"] == pytest.approx(71 + 9.3796875)
    codes = _codes(cfg, 1, 100, seed=5)
    with torch.no_grad():
        full = tiny_code2wav(codes)
    no_ctx, enough = boundary_error_curve(tiny_code2wav, codes, full, [0, 82], start=90, end=95)
    assert no_ctx > 1e-4 and enough < 1e-7


def test_measured_receptive_field_matches_analytic():
    """Change one frame and see how far the change reaches: at most the frame itself plus the receptive field
    (demo: 2 layers x 71 frames + 9.38 frames of convolutions). The farthest effects are tiny_code2wav (they pass through
    two small layer scales) and may round away, so the measured reach is allowed to fall short by under a frame."""
    code2wav = omni_ref.load(omni_ref.presets.cached_checkpoint("demo"), components=["code2wav"]).code2wav
    rf = receptive_field(code2wav)
    assert rf["pre-transformer"] == 142 and rf["ConvNet total"] == pytest.approx(9.3796875)
    reach = influence_frames(code2wav, _codes(code2wav.config, 1, 165, seed=6), frame=5)
    assert rf["total"] < reach <= 1 + rf["total"]


def test_slider_callback_and_latency_rows(tiny_code2wav, capsys):
    info = show_chunking(10, n_frames=25, left_context_size=25)
    assert info["chunks"] == 3 and info["frames_to_wait_for"] == 10
    assert info["first_packet_audio_ms"] == pytest.approx((10 * 1920 - 555) / 24)
    assert info["recompute_overhead"] == pytest.approx((10 + 20) / 25)      # contexts of chunks 2 and 3
    assert info["samples_skipped_at_boundaries"] == 2 * 555
    out = capsys.readouterr().out
    assert "3 chunks" in out and "1110 samples" in out
    with pytest.raises(ValueError, match="at least 1 frame"):
        show_chunking(0)
    rows = measure_streaming(tiny_code2wav, _codes(tiny_code2wav.config, 1, 6, seed=7), [1, 2], left_context_size=2)
    assert [r["samples"] for r in rows] == [3 * (1920 - 555), 3 * (2 * 1920 - 555)]
    assert all(r["rtf"] > 0 and r["first_chunk_s"] > 0 for r in rows)


def test_causal_conv_picture():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from omni_ref.tools.plots import plot_causal_conv
    fig, ax = plt.subplots()
    plot_causal_conv(ax, kernel=3, dilation=2, length=6)
    assert sum(p.get_label() == "0" for p in ax.patches) == 4        # (3 - 1) * 2 zeros of left padding
    plt.close(fig)


# ---- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make,err,match", [
    (lambda q: torch.zeros(1, q - 1, 4, dtype=torch.long), ValueError, r"3 quantizers on axis 1 .* expects 4"),
    (lambda q: torch.zeros(1, 6, q, dtype=torch.long), ValueError, r"6 quantizers on axis 1 .* transpose\(1, 2\)"),
    (lambda q: torch.full((1, q, 4), 128), ValueError, r"0\.\.127 .* found 128\.\.128"),
    (lambda q: torch.full((1, q, 4), -1), ValueError, r"found -1\.\.-1; drop the Talker's control ids"),
    (lambda q: torch.zeros(1, q, 4), TypeError, r"integer tensor .* got torch.float32"),
    (lambda q: torch.zeros(q, 4, dtype=torch.long), ValueError, r"\(batch, num_quantizers, frames\).*codes\[None\]"),
    (lambda q: torch.zeros(1, q, 0, dtype=torch.long), ValueError, r"0 frames"),
    (lambda q: [[0] * 4] * q, TypeError, r"torch tensor"),
])
def test_bad_codes_are_refused(tiny_code2wav, make, err, match):
    codes = make(tiny_code2wav.config.num_quantizers)       # tiny_code2wav: 4 quantizers of 128 codes
    with pytest.raises(err, match=match):
        tiny_code2wav(codes)
    with pytest.raises(err, match=match):
        tiny_code2wav.chunked_decode(codes)


def test_bad_chunk_settings_are_refused(tiny_code2wav):
    codes = _codes(tiny_code2wav.config, 1, 3, seed=8)
    with pytest.raises(ValueError, match=r"chunk_size=0: a chunk must hold at least 1 frame"):
        tiny_code2wav.chunked_decode(codes, chunk_size=0)
    with pytest.raises(ValueError, match=r"left_context_size=-1: use 0 or more"):
        tiny_code2wav.chunked_decode(codes, chunk_size=2, left_context_size=-1)
    with pytest.raises(ValueError, match=r"chunk_size=2.5"):
        tiny_code2wav.chunked_decode(codes, chunk_size=2.5)
