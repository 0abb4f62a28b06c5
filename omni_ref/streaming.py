"""Streaming Code2Wav: audio for codec frames as they arrive, and measurements of the trade-offs.

Qwen3-Omni report section 2.5: the Talker emits one 16-code frame per 80 ms of speech and Code2Wav,
being causal, can turn frames into audio while later ones are still being generated; the first
audio packet therefore waits for one chunk of frames, not for the whole answer. HF exposes this as
Qwen3OmniMoeCode2Wav.chunked_decode (a loop over a finished code tensor). Two streaming decoders:

    StreamingCode2Wav   chunked_decode fed piece by piece: each chunk decoded again from codes,
                        with left context; equals HF's chunked_decode (and HF's generate)
    Code2WavStream      truly incremental: every layer carries its state from piece to piece;
                        equals the full decode code2wav(codes), audio out after every frame

Also here: the receptive field of Code2Wav in frames (how much left context a chunk needs to be
decoded as if it were inside the full sequence), the boundary error of chunked decoding against the
full decode, a latency measurement, and `show_chunking`, the callback of notebook 06's chunk-size
slider.
"""
from __future__ import annotations

import time

import torch

from .code2wav import (CHUNK_SIZE, LEFT_CONTEXT_SIZE, SAMPLE_RATE, CausalConv, CausalTransConv,
                       Code2Wav, StreamState, chunk_spans, samples_lost_at_start)
from .config import Code2WavConfig


class StreamingCode2Wav:
    """Incremental twin of `code2wav.chunked_decode(codes, chunk_size, left_context_size)`.

        stream = StreamingCode2Wav(model.code2wav, chunk_size=10, left_context_size=25)
        for piece in pieces:                 # (B, Q, any number of frames, 0 included)
            play(stream.push(piece))         # (B, 1, n): audio of every chunk this completes
        play(stream.flush())                 # the last, partial chunk

    What it keeps, and why that is all it needs: chunked_decode decodes chunk j from codes[start -
    context : end] alone, from scratch (zero padding in the convolutions, attention positions
    restarting at the first context frame). So the exact state is codes, nothing else: the last
    `left_context_size` frames already decoded (the next chunk's context) and the frames of the
    current chunk that has not filled up yet (< chunk_size). For the real model with HF's defaults
    that is 25 x 16 integers of context. Caching activations instead (the pre-transformer's keys
    and values over its window, the tails of every convolution) lets each piece continue from the
    previous one; that is Code2WavStream below, and it gives a different result (the full
    decode's, without the boundary error) from chunked_decode's, which recomputes its context from
    codes by design.
    """

    def __init__(self, code2wav: Code2Wav, chunk_size: int = CHUNK_SIZE,
                 left_context_size: int = LEFT_CONTEXT_SIZE):
        chunk_spans(0, chunk_size, left_context_size)  # the same argument checks as chunked_decode
        self.code2wav = code2wav
        self.chunk_size, self.left_context_size = chunk_size, left_context_size
        self.reset()

    def reset(self) -> None:
        self._context = None          # (B, Q, <= left_context_size): the next chunk's context
        self._pending = None          # (B, Q, < chunk_size): codes of the chunk still filling up
        self.frames_in = 0            # frames pushed so far
        self.frames_out = 0           # frames whose audio has been returned
        self.finished = False

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Take the next frames; return the audio (B, 1, n >= 0) of the chunks they complete."""
        if self.finished:
            raise RuntimeError("this stream was flushed: its last chunk is decoded; call reset() "
                               "to start another")
        self.code2wav.check_codes(codes, allow_empty=True)     # an empty (B, Q, 0) piece is fine
        if self._pending is not None and codes.shape[0] != self._pending.shape[0]:
            raise ValueError(f"this stream has batch size {self._pending.shape[0]}, the piece has "
                             f"{codes.shape[0]}: keep the batch fixed for the whole stream")
        self.frames_in += codes.shape[-1]
        if self._pending is not None:
            codes = torch.cat([self._pending, codes], dim=-1)
        self._pending = codes
        out = []
        while self._pending.shape[-1] >= self.chunk_size:
            chunk = self._pending[..., :self.chunk_size]
            self._pending = self._pending[..., self.chunk_size:]
            out.append(self._decode_chunk(chunk))
        self._pending = self._pending.clone()   # own the leftover: don't pin the caller's tensor
        return torch.cat(out, dim=-1) if out else self._empty(codes.shape[0])

    def flush(self) -> torch.Tensor:
        """End of the codes: decode the last, partial chunk (as chunked_decode does), and close."""
        if self.finished:
            raise RuntimeError("this stream was already flushed; call reset() to start another")
        self.finished = True
        if self._pending is None or self._pending.shape[-1] == 0:
            return self._empty(0 if self._pending is None else self._pending.shape[0])
        return self._decode_chunk(self._pending)

    def _decode_chunk(self, chunk):                        # (B, Q, c) -> (B, 1, 1920 c - 555)
        codes = chunk if self._context is None else torch.cat([self._context, chunk], dim=-1)
        context = codes.shape[-1] - chunk.shape[-1]   # min(left_context_size, frames_out), as HF
        wav = self.code2wav._decode(codes)[..., context * self.code2wav.config.samples_per_frame:]
        keep = min(self.left_context_size, codes.shape[-1])
        self._context = codes[..., codes.shape[-1] - keep:].clone()
        self.frames_out += chunk.shape[-1]
        return wav

    def _empty(self, batch):
        return _empty_audio(self.code2wav, batch)

    def state_nbytes(self) -> int:
        """Bytes held between calls: the context codes and the pending codes, nothing else."""
        held = [t for t in (self._context, self._pending) if t is not None]
        return sum(t.numel() * t.element_size() for t in held)


def _empty_audio(code2wav: Code2Wav, batch: int) -> torch.Tensor:
    p = next(code2wav.parameters())
    return torch.zeros(batch, 1, 0, dtype=p.dtype, device=p.device)


class Code2WavStream:
    """Incremental Code2Wav whose joined output equals the full decode `code2wav(codes)`.

        s = Code2WavStream(model.code2wav)   # the batch size is fixed by the first push
        for piece in pieces:                 # (B, Q, n), any n >= 0
            play(s.push(piece))              # (B, 1, m): every sample no later frame can change
        play(s.flush())                      # (B, 1, 0): nothing is left (see below); closes

    Report section 2.5: Code2Wav is causal throughout, so it can decode frame by frame, carrying
    each layer's state instead of recomputing history. What is carried (code2wav.StreamState):

    - pre-transformer: per layer the keys and values of the last sliding_window - 1 frames, and
      the frame count, so rotary positions continue (the full decode's positions, not restarted);
    - every causal conv: its last left_pad = (kernel - 1) * dilation inputs (the ConvNeXt
      depthwise convs, the decoder's first and last convs, the residual units' dilated convs);
    - every decoder transposed conv (kernel 2r, stride r): its last input, because output block j
      mixes inputs j - 1 and j. (Keeping the input, C_in values, instead of the overlapping half
      of the previous output, C_out * r values, is the same information and smaller.)

    For the real config (hidden 1024, 8 layers, window 72, decoder_dim 1536), batch 1, fp32, once
    71 frames have been pushed: 4,653,056 bytes of keys and values (8 layers x 2 x 71 frames x
    1024) and 536,832 bytes of conv inputs (134,208 values, most of them the residual units'
    6 * (1 + 3 + 9) = 78 steps per block), 5.19 MB in all; it grows no further.

    Latency and the 555-sample quirk (code2wav.py): a decoder transposed conv's output block j
    needs input j, so after k frames exactly the full decode of k frames, 1920 k - 555 samples,
    is final: push returns samples up to that count (1365 after the first frame), and the next
    sample needs frame k. The left trim drops the stream's first samples once; the right trim
    drops exactly the block that would need a frame after the last, so flush has no samples left
    to give: it returns (B, 1, 0) and closes the stream (push then raises; reset() starts anew).

    Against StreamingCode2Wav (= HF chunked_decode = HF generate's audio): for up to CHUNK_SIZE =
    300 frames both equal the full decode, but StreamingCode2Wav's first audio waits for a whole
    chunk (300 frames = 24 s by default) and each chunk re-decodes its 25-frame left context.
    Beyond 300 frames, chunked decoding has boundary error and skips 555 samples per boundary;
    this stream stays equal to the full decode. Measured on the demo preset (random weights,
    random codes of generator seed 0), 330 frames, pushed 4 at a time: this stream gives 633,045
    samples, max |stream - full decode| 6.5e-09; StreamingCode2Wav with HF's 300/25 gives 632,490
    (555 fewer). Its first chunk differs from the full decode by 5.6e-09; its second chunk, next
    to the full decode's samples at the aligned place (aligned_full_span), by up to 2.1e-06
    (boundary error: 25 frames of context, a receptive field of 151), and at the same sample
    index by up to 1.2e-03 (the 555-sample shift; the signal's peak is 1.4e-02). Time, one CPU
    thread of a busy shared machine (noisy): a push of 4 frames takes 140-160 ms whatever the
    history, about what decoding 4 frames from scratch takes, and what the full decode spends per
    4 frames (112-160 ms; 18.0 s for all 330 frames). StreamingCode2Wav(4, 25) decodes 29 frames
    per 4-frame chunk: 4 to 5 times this stream's time per push (notebook 06 measures both).
    """

    def __init__(self, code2wav: Code2Wav):
        self.code2wav = code2wav
        self.reset()

    def reset(self) -> None:
        self._state = StreamState()
        self._batch = None            # fixed by the first push
        self.frames_in = 0            # frames pushed so far
        self.samples_out = 0          # samples returned so far
        self.finished = False

    @torch.no_grad()          # the carried state must not drag an autograd graph from push to push
    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode the next frames (B, Q, n >= 0) -> (B, 1, m): the audio that became final."""
        if self.finished:
            raise RuntimeError("this stream was flushed: its audio is complete; call reset() to "
                               "start another")
        self.code2wav.check_codes(codes, allow_empty=True)     # an empty (B, Q, 0) piece is fine
        if self._batch is None:
            self._batch = codes.shape[0]
        elif codes.shape[0] != self._batch:
            raise ValueError(f"this stream has batch size {self._batch}, the piece has "
                             f"{codes.shape[0]}: keep the batch fixed for the whole stream "
                             "(or reset() to start another)")
        if codes.shape[-1] == 0:
            return _empty_audio(self.code2wav, self._batch)
        wav = self.code2wav.step(codes, self._state)     # (B, 1, 1920 n), 555 fewer the 1st time
        self.frames_in += codes.shape[-1]
        self.samples_out += wav.shape[-1]
        return wav

    def flush(self) -> torch.Tensor:
        """End of the codes: the audio still owed, which is none (class doc); closes the stream."""
        if self.finished:
            raise RuntimeError("this stream was already flushed; call reset() to start another")
        self.finished = True
        return _empty_audio(self.code2wav, self._batch or 0)

    def state_nbytes(self) -> int:
        """Bytes carried between calls: keys and values, conv inputs (class doc)."""
        return self._state.nbytes()

    def state_parts(self) -> dict[str, int]:
        """state_nbytes split by the part of Code2Wav that carries it."""
        parts = dict.fromkeys(["pre-transformer keys and values", "ConvNeXt depthwise conv inputs",
                               "decoder causal conv inputs", "transposed conv inputs"], 0)
        kv = self._state.kv
        if kv is not None:
            parts["pre-transformer keys and values"] = sum(
                t.numel() * t.element_size() for t in kv.keys + kv.values)
        for name, m in self.code2wav.named_modules():
            tail = self._state.tails.get(m)
            if tail is None:
                continue
            part = ("ConvNeXt depthwise conv inputs" if name.endswith("dwconv") else
                    "transposed conv inputs" if isinstance(m, CausalTransConv) else
                    "decoder causal conv inputs")
            parts[part] += tail.numel() * tail.element_size()
        return parts


# ---- how far back Code2Wav looks ----------------------------------------------------------------

def receptive_field(code2wav: Code2Wav) -> dict[str, float]:
    """Frames before a sample that can change it, by part, read off the modules (no decoding).

    Pre-transformer: each layer looks sliding_window - 1 frames back, so L layers look L * (w - 1)
    back. ConvNet: walking the layers in forward order with `rate` = steps per frame at that point,
    a causal conv adds (kernel - 1) * dilation steps = that / rate frames; an overlapping
    transposed conv (kernel 2r, stride r) mixes two neighbouring inputs, adding one input step,
    then multiplies the rate by its stride."""
    cfg = code2wav.config
    convs = {"ConvNeXt depthwise convs": 0.0, "decoder causal convs": 0.0, "decoder transposed "
                                                                           "convs": 0.0}
    rate = 1
    for name, m in code2wav.named_modules():             # registration order is forward order here
        if isinstance(m, CausalTransConv):
            convs["decoder transposed convs"] += (1 if m.trim > 0 else 0) / rate
            rate *= m.conv.stride[0]
        elif isinstance(m, CausalConv):
            if name.endswith("dwconv"):
                part = "ConvNeXt depthwise convs"
            else:
                part = "decoder causal convs"
            convs[part] += m.left_pad / rate
    out = {"pre-transformer": float(cfg.num_hidden_layers * (cfg.sliding_window - 1)), **convs}
    out["ConvNet total"] = sum(convs.values())
    out["total"] = out["pre-transformer"] + out["ConvNet total"]
    return out


@torch.no_grad()
def perturbation_response(code2wav: Code2Wav, codes: torch.Tensor, frame: int) -> torch.Tensor:
    """|waveform change| (samples,) when every code of one frame of codes (1, Q, T) changes."""
    other = codes.clone()
    other[:, :, frame] = (codes[:, :, frame] + 1) % code2wav.config.codebook_size
    return (code2wav(codes) - code2wav(other)).abs()[0, 0]


def influence_frames(code2wav: Code2Wav, codes: torch.Tensor, frame: int) -> float:
    """Measured receptive field: how many frames after the start of `frame` (on the 1920-per-frame
    grid) the last output sample changed by perturbing that frame lies. Effects far away are tiny
    and may round away."""
    last = int(perturbation_response(code2wav, codes, frame).nonzero().max())
    cfg = code2wav.config
    return (last + samples_lost_at_start(cfg)) / cfg.samples_per_frame - frame


# ---- chunked decoding against the full decode ---------------------------------------------------

def aligned_full_span(cfg, start: int, end: int) -> tuple[int, int]:
    """The samples of the full decode that chunk [start, end) of chunked_decode stands for: its
    kept audio is the full decode's [start * 1920, end * 1920 - 555). Successive chunks thus skip
    555 samples between them."""
    return start * cfg.samples_per_frame, end * cfg.samples_per_frame - samples_lost_at_start(cfg)


@torch.no_grad()
def chunk_error(code2wav: Code2Wav, codes, full, start: int, end: int,
                context: int) -> torch.Tensor:
    """|chunk audio - full decode| sample by sample for one chunk decoded with `context` frames
    before it. codes (B, Q, T), full = code2wav(codes); returns (B, n) for the n kept samples of
    the chunk."""
    spf = code2wav.config.samples_per_frame
    wav = code2wav(codes[..., start - context:end])[..., context * spf:]
    a, b = aligned_full_span(code2wav.config, start, end)
    return (wav - full[..., a:b]).abs()[:, 0]


def boundary_error_curve(code2wav: Code2Wav, codes, full, contexts, start: int,
                         end: int) -> list[float]:
    """Max |error| of chunk [start, end) against the full decode, for each left context size."""
    return [float(chunk_error(code2wav, codes, full, start, end, c).max()) for c in contexts]


# ---- latency ------------------------------------------------------------------------------------

@torch.no_grad()
def measure_streaming(code2wav: Code2Wav, codes, chunk_sizes,
                      left_context_size: int = LEFT_CONTEXT_SIZE,
                      chunks_per_run: int = 3) -> list[dict]:
    """For each chunk size c, stream the first chunks_per_run * c frames of `codes` one frame at a
    time (as the Talker delivers them) and time the decoding.

    first_chunk_s: compute time of the first chunk, Code2Wav's share of the first-packet latency
    (the rest is waiting for c frames from the Talker). rtf: decode time / duration of the audio
    produced (< 1: faster than real time). Later chunks also re-decode their left context, so small
    chunks cost more per second."""
    rows = []
    for c in chunk_sizes:
        n = chunks_per_run * c
        if codes.shape[-1] < n:
            raise ValueError(f"chunk_size {c} needs {n} frames of codes, got {codes.shape[-1]}")
        stream, first, n_samples = StreamingCode2Wav(code2wav, c, left_context_size), None, 0
        t0 = time.perf_counter()
        for t in range(n):
            tic = time.perf_counter()
            wav = stream.push(codes[..., t:t + 1])
            if first is None and wav.shape[-1]:
                first = time.perf_counter() - tic
            n_samples += wav.shape[-1]
        total = time.perf_counter() - t0
        rows.append({"chunk_size": c, "first_chunk_s": first, "decode_s": total,
                     "rtf": total / (n_samples / SAMPLE_RATE), "samples": n_samples})
    return rows


def show_chunking(chunk_size: int, n_frames: int = 250, left_context_size: int = LEFT_CONTEXT_SIZE,
                  cfg=None) -> dict:
    """Callback of notebook 06's chunk-size slider: what chunked decoding of `n_frames` frames
    costs at this chunk size. Prints a few lines and returns the numbers (plain function, so it is
    unit-tested)."""
    cfg = cfg or Code2WavConfig()
    spans = chunk_spans(n_frames, chunk_size, left_context_size)
    spf, lost = cfg.samples_per_frame, samples_lost_at_start(cfg)
    decoded = sum(end - start + ctx for start, end, ctx in spans)
    info = {
        "chunks": len(spans),
        "first_packet_audio_ms": 1000 * (spans[0][1] * spf - lost) / SAMPLE_RATE,
        "frames_to_wait_for": spans[0][1],
        "recompute_overhead": decoded / n_frames - 1,   # the share of frames decoded twice
        "samples_skipped_at_boundaries": (len(spans) - 1) * lost,
        "audio_ms": 1000 * (n_frames * spf - len(spans) * lost) / SAMPLE_RATE,
    }
    print(f"chunk_size={chunk_size}, left_context_size={left_context_size}, {n_frames} frames "
          f"({n_frames * spf / SAMPLE_RATE:.2f} s of codes)")
    print(f"  {info['chunks']} chunks; the first packet waits for {info['frames_to_wait_for']} "
          f"frames and holds {info['first_packet_audio_ms']:.0f} ms of audio")
    print(f"  frames decoded twice as context: {100 * info['recompute_overhead']:.0f}% extra work")
    print(f"  HF's chunk slicing skips {info['samples_skipped_at_boundaries']} samples "
          f"({1000 * info['samples_skipped_at_boundaries'] / SAMPLE_RATE:.0f} ms) at the chunk "
          "boundaries")
    return info
