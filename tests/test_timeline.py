"""tools/timeline.py: one model.stream call timed stage by stage (tiny preset), and the starve check
on hand-made timelines whose answer is known."""
import pytest
import torch

import omni_ref
from omni_ref.tools import timeline
from omni_ref.tools.timeline import STAGES, Timeline

SPF, LOST = 1920, 555          # samples a frame, samples a decode is short at its start
FRAMES, CHUNK = 7, 3           # talker_max_new_tokens=8 without eos: 7 frames, the 8th step stops


@pytest.fixture(scope="module")
def timed(tiny_dir, tiny_processor):
    model = omni_ref.load(tiny_dir)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Say something."}]}]
    inputs = tiny_processor.apply_chat_template(messages, add_generation_prompt=True,
                                                tokenize=True, return_dict=True)
    opts = dict(thinker_max_new_tokens=5, thinker_eos_token_id=model.config.im_end_token_id,
                talker_max_new_tokens=FRAMES + 1, talker_do_sample=False)
    torch.manual_seed(0)
    tl = timeline.stream_timeline(model, **inputs, **opts, audio_chunk_frames=CHUNK)
    return model, inputs, opts, tl


def test_every_stage_was_timed_once_per_call(timed):
    model, _, _, tl = timed
    n_text = sum(n for _, n in tl.text)
    assert len(tl.intervals["Thinker"]) == len(tl.text) == n_text        # one pass, one token
    frames = len(tl.intervals["MTP"])                                     # one MTP call a frame
    assert frames == FRAMES and len(tl.intervals["Talker"]) == FRAMES + 1
    assert len(tl.intervals["Code2Wav"]) == -(-FRAMES // CHUNK)          # 3 + 3 + 1 frames
    assert sum(n for _, n in tl.audio) == SPF * FRAMES - LOST
    # Unhooked afterwards: no hook left, no wrapper left on the instances.
    assert not model.thinker._forward_hooks and not model.talker._forward_pre_hooks
    assert "generate" not in vars(model.talker.code_predictor)
    assert "step" not in vars(model.code2wav)


def test_intervals_are_ordered_inside_the_call_and_never_overlap(timed):
    tl = timed[3]
    spans = sorted(s for stage in STAGES for s in tl.intervals[stage])
    assert all(0 <= a <= b <= tl.end_s for a, b in spans)
    # One thread runs the whole pipeline: no two calls, of any stages, overlap.
    assert all(b0 <= a1 for (_, b0), (a1, _) in zip(spans, spans[1:]))
    times = [t for t, _ in tl.audio + tl.text]
    assert all(0 <= t <= tl.end_s for t in times)
    assert [t for t, _ in tl.audio] == sorted(t for t, _ in tl.audio)


def test_first_packet_is_the_first_audio_event_after_the_first_decode(timed):
    tl = timed[3]
    first_audio = next(e for e in tl.events if e.kind == "audio")
    assert tl.first_packet_s == first_audio.time_s == tl.audio[0][0]
    # Its audio comes from the first Code2Wav call, after CHUNK MTP calls (clocks ~us apart).
    assert tl.first_packet_s >= tl.intervals["Code2Wav"][0][1] - 1e-3
    assert tl.intervals["Code2Wav"][0][0] >= tl.intervals["MTP"][CHUNK - 1][1]
    assert tl.audio[0][1] == SPF * CHUNK - LOST


def test_first_packet_breakdown_adds_up_at_the_calls(timed):
    tl = timed[3]
    rows = timeline.first_packet_breakdown(tl)
    assert list(rows) == list(timeline.FIRST_PACKET_ROWS) and all(v >= 0 for v in rows.values())
    assert sum(rows.values()) == pytest.approx(tl.first_packet_s, abs=1e-12)
    assert rows["thinker_ttft_s"] == tl.intervals["Thinker"][0][1]
    c2w = tl.intervals["Code2Wav"][0]
    assert rows["codec_s"] >= c2w[1] - c2w[0] - 1e-3                  # the decode, and the event
    with pytest.raises(ValueError, match="needs a call of every stage"):
        timeline.first_packet_breakdown(Timeline({s: [] for s in STAGES}, [(0.1, 100)]))


def test_joined_stream_is_generate(timed):
    model, inputs, opts, tl = timed
    assert tl.wav().numel() == sum(n for _, n in tl.audio)
    ids, wav = model.generate(**inputs, **opts, return_audio=True)
    assert torch.equal(tl.ids(), ids[0, inputs["input_ids"].shape[1]:])
    assert (tl.wav() - wav.flatten()).abs().max() <= 1e-5


def hand_made(times, frames=(4, 4, 4)):
    """Packets of `frames` frames arriving at `times` (s); the first is 555 samples short."""
    samples = [SPF * f - (LOST if k == 0 else 0) for k, f in enumerate(frames)]
    return Timeline({s: [] for s in STAGES}, list(zip(times, samples)), end_s=times[-1])


def test_starve_check_on_hand_made_timelines():
    # Packets of 4 frames (320 ms; the first 296.9 ms). Every 150 ms: always ahead.
    ok = hand_made([0.2, 0.35, 0.5])
    assert not ok.starves()
    assert ok.headroom() == pytest.approx([7125 / 24000 - 0.15, 14805 / 24000 - 0.30])
    assert ok.cursor(0.1) == 0 and ok.cursor(0.3) == pytest.approx(0.1)
    assert ok.audio_end(0.35) == pytest.approx(14805 / 24000) and ok.audio_end(0.34) < 0.3
    # The second packet 300 ms after the first: 3.1 ms after the first packet's 296.9 ms ran out.
    late = hand_made([0.2, 0.5, 0.6])
    assert late.starves() and late.headroom()[0] == pytest.approx(7125 / 24000 - 0.3)
    # RTF just under 1 (each 320 ms packet 316 ms after the last) starves at first, by the
    # first packet's missing 555 samples (23.1 ms), and gains 4 ms a packet: ahead from the 6th.
    rtf = hand_made([0.316 * k for k in range(8)], frames=(4,) * 8)
    room = rtf.headroom()
    assert rtf.starves() and room == pytest.approx([0.004 * k - LOST / 24000 for k in range(1, 8)])
    assert room[4] < 0 < room[5]
    with pytest.raises(ValueError, match="no audio event"):
        Timeline({}, []).first_packet_s


def test_the_exercise_checks_starving_as_the_timeline_does():
    from omni_ref.exercises import nb09
    starves = nb09._starves_right()
    cases = nb09._starve_cases()
    assert sum(starves(c) for c in cases) >= 3 and sum(not starves(c) for c in cases) >= 3
    for packets in cases:
        assert starves(packets) == Timeline({}, packets).starves(), packets
