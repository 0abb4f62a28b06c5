"""Exercises of notebook 09 (the whole pipeline streaming): the first packet when Code2Wav waits
for several frames, the starve check, and the roofline's Thinker speed at 4 concurrent requests."""
from __future__ import annotations

import functools
import random

from . import call, exercise, number

# Qwen3-Omni Technical Report (arXiv 2509.17765), Table 2, 1 concurrent request, audio input, in ms.
FIRST_PACKET, TALKER_TOK_S, MTP, CODEC, FRAME = 234.0, 140.0, 14.0, 3.0, 80.0
THINKER_TOK_S = 75.0


# ---- 09.1 predict: the first packet when Code2Wav decodes k frames at a time ---------------------

K = 4


def _first_packet_right():
    """Table 2's first packet holds one frame. Each further frame of the packet costs a Talker
    step and its MTP; Code2Wav then decodes all K frames."""
    return FIRST_PACKET + (K - 1) * (1000 / TALKER_TOK_S + MTP + CODEC)


@exercise("09.1", "Table 2 (1 request, audio): first packet 234 ms, for a packet of ONE frame. The "
          "stream decodes audio_chunk_frames=4 frames at a time. The Thinker runs ahead on its own "
          "(as in the report's deployment); the Talker makes 140 tokens/s, the MTP takes 14 ms a "
          "frame and the codec 3 ms a frame. What is the first packet now, in ms?",
          right=_first_packet_right, wrong=lambda: FIRST_PACKET + (K - 1) * FRAME,
          praise="234 + 3 x (7.1 + 14 + 3) = 306.4 ms: three more Talker steps with their MTP, and "
                 "three more frames through the codec. The packet then holds 4 x 80 - 23 = 297 "
                 "ms of speech, 5.2x the one-frame packet's 57 ms, for 31% more wait: more time "
                 "for the next packet to arrive before playback runs dry.")
def _first_packet(answer):
    value = number(answer)
    want = _first_packet_right()
    if abs(value - want) <= 0.5:
        return None
    if abs(value - (FIRST_PACKET + (K - 1) * FRAME)) <= 0.5:
        return ("80 ms is how long a frame PLAYS, not how long it takes to make; the first packet "
                "waits for the frames to be made")
    if abs(value - K * FIRST_PACKET) <= 0.5:
        return ("preprocessing and the two prefills happen once per request, not once per frame: "
                "only the per-frame rows repeat")
    if abs(value - (want + (K - 1) * 1000 / THINKER_TOK_S)) <= 0.5:
        return "the Thinker runs ahead on its own here: its tokens are not on the Talker's path"
    if abs(value - (FIRST_PACKET + (K - 1) * (1000 / TALKER_TOK_S + MTP))) <= 0.5:
        return "Code2Wav decodes all 4 frames of the packet, 3 ms each"
    return ("start from the one-frame packet and add, for each of the 3 further frames, what it "
            "costs to make it and to decode it")


# ---- 09.2 implement: does playback ever run dry? ---------------------------------------------

def _starves_right():
    def starves(packets, sample_rate=24000):
        t_first, heard = packets[0][0], 0
        for k, (t, n) in enumerate(packets):
            if k and heard / sample_rate < t - t_first:       # played past all received so far
                return True
            heard += n
        return False
    return starves


def _starves_wrong():
    def starves(packets, sample_rate=24000):    # adds each packet before checking: no gap seen
        t_first, heard = packets[0][0], 0
        for t, n in packets:
            heard += n
            if heard / sample_rate < t - t_first:
                return True
        return False
    return starves


@functools.lru_cache(maxsize=1)
def _starve_cases():
    rng = random.Random(9)
    cases = [[(0.2, 7125), (0.35, 7680), (0.5, 7680)],        # always ahead
             [(0.2, 7125), (0.5, 7680), (0.6, 7680)],         # 3 ms late
             [(1.0, 7125)],                                   # one packet: nothing to wait for
             [(0.3, 7125), (0.6, 7680), (0.9, 7680)]]         # 3.1 ms late, then 23 ms behind
    for _ in range(12):
        t, packets = rng.uniform(0.1, 2.0), []
        for k in range(rng.randint(2, 8)):
            packets.append((t, 1920 * rng.randint(1, 6) - (555 if k == 0 else 0)))
            t += rng.uniform(0.05, 0.45)
        cases.append(packets)
    return cases


@exercise("09.2", "Write starves(packets, sample_rate=24000) -> bool: packets is a list of "
          "(arrival time in s, samples) in order; playback starts when the first arrives and plays "
          "in real time. Return True if it ever plays past all the audio received so far.",
          right=_starves_right, wrong=_starves_wrong,
          praise="the same check as tools.timeline.Timeline.starves: just BEFORE packet k arrives, "
                 "the audio received is that of packets 0..k-1, and the cursor stands at t_k - t_0."
                 " "
                 "Checking after adding packet k lets the late packet's own audio cover the gap it "
                 "left, which hides all but the longest gaps.")
def _starves(fn):
    want_fn = _starves_right()
    for packets in _starve_cases():
        got, want = call(fn, list(packets)), want_fn(packets)
        if not isinstance(got, bool) and not hasattr(got, "item"):
            return f"return True or False, not {type(got).__name__}"
        if bool(got) != want:
            if want:
                return ("your check misses a gap: compare the cursor with the audio received "
                        "BEFORE "
                        "the packet, at the moment it arrives")
            return ("your check sees a gap where there is none: the cursor starts at the first "
                    "packet's arrival, and the audio received includes every earlier packet")
    return None


# ---- 09.3 predict: the roofline's Thinker speed with 4 requests in one batch ---------------------

# latency.decoder_weights(presets.build_meta("real"))["Thinker"]: parameters outside the routed
# experts that one step reads (one embedding row among them), and the routed experts.
DENSE, EXPERTS, TOP_K, NUM_EXPERTS, BANDWIDTH = 1_230_192_640, 28_991_029_248, 8, 128, 3.35e12


def _batched_right():
    read = DENSE + EXPERTS * (1 - (1 - TOP_K / NUM_EXPERTS) ** 4)
    return BANDWIDTH / (2 * read)


def _one_request():
    return BANDWIDTH / (2 * (DENSE + EXPERTS * TOP_K // NUM_EXPERTS))


@exercise("09.3", "The real Thinker: 1,230,192,640 parameters used by every token, 28,991,029,248 "
          "in routed experts, 8 of 128 per token per layer. 4 requests decode together, one token "
          "each per step; a step reads the dense weights once and every expert at least one of "
          "the 4 tokens is routed to (routing uniform, independent), in bf16 at 3.35 TB/s. At "
          "best, how many tokens/s does each request get?",
          right=_batched_right, wrong=lambda: _one_request() / 4,
          praise="1 - (120/128)^4 = 22.8% of the experts are read: 7.83 B parameters, 4.67 ms a "
                 "step, 214 tokens/s for each of the 4 (the roofline's 551 alone). The 4 tokens "
                 "share the dense weights and many experts, so the step costs 2.6x one request's, "
                 "not 4x; the report measures 75 -> 63 tokens/s (latency.analytic_table_2).")
def _batched(answer):
    value = number(answer)
    want = _batched_right()
    if abs(value - want) <= 0.01 * want:
        return None
    if abs(value - _one_request() / 4) <= 0.02 * want:
        return ("that reads each token's experts separately; tokens routed to the same expert "
                "share one read of it: what fraction of experts do 4 tokens touch?")
    if abs(value - _one_request()) <= 0.02 * _one_request():
        return "that is one request alone; 4 tokens are routed to more experts than 1"
    every = BANDWIDTH / (2 * (DENSE + EXPERTS))
    if abs(value - every) <= 0.01 * every:
        return "4 tokens do not touch every expert: 1 - (1 - 8/128)^4 of them"
    if abs(value - want / 4) <= 0.02 * want / 4 or abs(value - 4 * want) <= 0.02 * 4 * want:
        return ("each step makes one token for EACH request: the rate per request is one token "
                "per step")
    return ("parameters read = dense + experts x (1 - (1 - 8/128)^4); seconds a step = 2 bytes "
            "x that / 3.35e12; one token per request per step")
