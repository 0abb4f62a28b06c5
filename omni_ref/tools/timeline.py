"""A timeline of one `model.stream` call: when each stage ran, when each packet of audio arrived,
and whether playback, started at the first packet, would ever run dry.

    tl = stream_timeline(model, **inputs, speaker="Ethan", thinker_max_new_tokens=8, ...)
    tl.intervals["MTP"]        # [(start_s, end_s)] of every call, seconds since the call began
    tl.first_packet_s          # the first "audio" event's time_s
    tl.starves()               # True if playback would catch up with the audio made so far

Qwen3-Omni report section 2.5 and Table 2: the first packet waits for one pass of every stage, and
speech then plays without gaps as long as each later packet arrives before the audio already
received has been played. With t_k the arrival of packet k (t_1 the first packet) and n_k its
samples at 24 kHz, playback started at t_1 has played t - t_1 seconds at time t, and the audio
received before packet k lasts sum_{j<k} n_j / 24000 s; it never starves iff, for every k >= 2,

    sum_{j<k} n_j / 24000  >=  t_k - t_1.

The clocks are the bench's (bench.StepClock's): forward pre-hooks and hooks on the Thinker and the
Talker, and wrappers set on the instance around the code predictor's `generate` (one call per
frame: its 15 residual passes) and around Code2Wav's `step` and `forward` (whichever the stream
decodes with: streaming.Code2WavStream calls `step`). A call nested inside another of the same
stage is counted once, as the outer one. All of it is removed when the stream ends.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..code2wav import SAMPLE_RATE

STAGES = ("Thinker", "Talker", "MTP", "Code2Wav")


@dataclass
class Timeline:
    """One stream, timed. Every time is in seconds since the call began (`time_s` of the events).

    intervals  {stage: [(start_s, end_s)]}, STAGES in order, each stage's calls in order
    audio      [(time_s, samples)] one per "audio" event
    text       [(time_s, tokens)] one per "text" event
    end_s      when the stream's last event had been received
    events     the StreamEvents themselves (empty for a hand-made timeline)"""
    intervals: dict
    audio: list
    text: list = field(default_factory=list)
    end_s: float = 0.0
    sample_rate: int = SAMPLE_RATE
    events: list = field(default_factory=list)

    @property
    def first_packet_s(self) -> float:
        """Time of the first audio event: the report's first-packet latency, measured."""
        if not self.audio:
            raise ValueError("this timeline has no audio event, so no first packet")
        return self.audio[0][0]

    @property
    def audio_s(self) -> float:
        """Seconds of audio in the whole stream."""
        return sum(n for _, n in self.audio) / self.sample_rate

    def audio_end(self, t: float) -> float:
        """Seconds of audio received by time t (events at t included)."""
        return sum(n for s, n in self.audio if s <= t) / self.sample_rate

    def cursor(self, t: float) -> float:
        """The playback position at time t, in seconds of audio, if playback starts at the first
        packet and never pauses: 0 before it, then the wall clock, up to the end of the audio."""
        return min(max(t - self.first_packet_s, 0.0), self.audio_s)

    def headroom(self) -> list[float]:
        """For each packet after the first: seconds of audio still unplayed just before it arrives
        (received before it, minus the cursor). Negative: playback had run dry."""
        heard, out = 0, []
        for k, (t, n) in enumerate(self.audio):
            if k:
                out.append(heard / self.sample_rate - (t - self.first_packet_s))
            heard += n
        return out

    def starves(self) -> bool:
        """True if playback would ever catch up with the audio received (module doc)."""
        return any(h < 0 for h in self.headroom())

    def wav(self) -> torch.Tensor:
        """The stream's audio events joined: (samples,)."""
        return torch.cat([e.wav for e in self.events if e.kind == "audio"])

    def ids(self) -> torch.Tensor:
        """The stream's text events joined: (tokens,) answer token ids."""
        return torch.cat([e.ids.flatten() for e in self.events if e.kind == "text"])

    def busy_s(self) -> dict[str, float]:
        """Total seconds each stage ran."""
        return {s: sum(b - a for a, b in self.intervals[s]) for s in STAGES}


class _Clock:
    """Outermost (start, end) intervals of one stage, from any number of hooked entry points."""

    def __init__(self, origin: float):
        self.origin, self.depth, self.spans = origin, 0, []

    def enter(self, *_):
        if self.depth == 0:
            self._start = time.perf_counter()
        self.depth += 1

    def leave(self, *_):
        self.depth -= 1
        if self.depth == 0:
            self.spans.append((self._start - self.origin, time.perf_counter() - self.origin))

    def wrap(self, obj, method: str):
        """Time every call of obj.<method>: a wrapper set on the instance, found before the
        class's method. Returns the undo."""
        plain = getattr(obj, method)

        def clocked(*args, **kwargs):
            self.enter()
            try:
                return plain(*args, **kwargs)
            finally:
                self.leave()
        setattr(obj, method, clocked)
        return lambda: delattr(obj, method)


@contextmanager
def clocked_stages(model, origin: float = 0.0):
    """While the block runs, time the four stages of `model`: yields {stage: _Clock}, whose spans
    are seconds since `origin` (a time.perf_counter reading; settable on each clock)."""
    clocks = {s: _Clock(origin) for s in STAGES}
    undo = []
    for stage, module in (("Thinker", model.thinker), ("Talker", model.talker),
                          ("Code2Wav", model.code2wav)):
        undo += [module.register_forward_pre_hook(clocks[stage].enter).remove,
                 module.register_forward_hook(clocks[stage].leave).remove]
    undo.append(clocks["MTP"].wrap(model.talker.code_predictor, "generate"))
    if hasattr(model.code2wav, "step"):
        undo.append(clocks["Code2Wav"].wrap(model.code2wav, "step"))
    try:
        yield clocks
    finally:
        for u in reversed(undo):
            u()


def stream_timeline(model, **stream_kwargs) -> Timeline:
    """Run `model.stream(**stream_kwargs)` to its end with the four stages clocked: the Timeline.

    Event times are the stream's own (`time_s`, from its first line); the intervals are measured
    from just before the call, microseconds earlier, so they share one clock to within that.
    """
    events, audio, text = [], [], []
    with clocked_stages(model) as clocks:
        origin = time.perf_counter()
        for clock in clocks.values():
            clock.origin = origin
        for ev in model.stream(**stream_kwargs):
            events.append(ev)
            if ev.kind == "audio":
                audio.append((ev.time_s, int(ev.wav.numel())))
            else:
                text.append((ev.time_s, int(ev.ids.numel())))
        end = time.perf_counter() - origin
    return Timeline({s: clocks[s].spans for s in STAGES}, audio, text, end, SAMPLE_RATE, events)


FIRST_PACKET_ROWS = ("thinker_ttft_s", "talker_ttft_s", "mtp_s", "more_frames_s", "codec_s")


def first_packet_breakdown(tl: Timeline) -> dict[str, float]:
    """The measured first packet cut into Table 2's rows, at the boundaries of the stream's calls;
    the rows add up to tl.first_packet_s exactly (preprocessing happens before the call: time the
    processor for it).

        thinker_ttft_s  call -> the end of the Thinker's prefill (its first token; encoders inside)
        talker_ttft_s   -> the end of the Talker's first pass (the Thinker's second pass, which
                        feeds token 0, and the Talker's prompt come first)
        mtp_s           -> the end of the first MTP call: frame 0's residual codes
        more_frames_s   -> the first Code2Wav call: the other frames of the first packet (a Talker
                        step, its MTP and a Thinker step each); 0 with audio_chunk_frames=1
        codec_s         -> the first audio event: decoding the packet and handing it out"""
    iv = tl.intervals
    if not (iv["Thinker"] and iv["Talker"] and iv["MTP"] and iv["Code2Wav"]):
        raise ValueError("the first packet needs a call of every stage; this timeline has "
                         f"{ {s: len(v) for s, v in iv.items()} }")
    bounds = [0.0, iv["Thinker"][0][1], iv["Talker"][0][1], iv["MTP"][0][1],
              iv["Code2Wav"][0][0], tl.first_packet_s]
    return {row: b - a for row, a, b in zip(FIRST_PACKET_ROWS, bounds, bounds[1:])}
