"""Exercises of notebook 06 (Code2Wav and streaming): which samples one frame can change, a causal conv1d, the
length of a chunked decode, the report's real-time factor."""
from __future__ import annotations

import functools

import torch

from . import call, exercise, number

SPF, LOST = 1920, 555      # samples per frame (2*2*8*5*4*3) and samples a decode is short at its start


# ---- 06.1 predict: which output samples change when frame 40's codes change --------------------------------------

N_FRAMES, FRAME = 60, 40


@functools.lru_cache(maxsize=1)
def _measured_span() -> tuple[int, int]:
    """First and last output sample that move when every code of frame 40 of a 60-frame decode is changed,
    measured on a small random Code2Wav with the real model's upsampling (the tiny preset's geometry). In
    float64: this small random network changes its output by less than float32 resolves near some samples."""
    from .. import presets
    from ..code2wav import Code2Wav
    from ..model import init_random_weights
    from ..streaming import perturbation_response
    with torch.random.fork_rng(devices=[]):
        code2wav = Code2Wav(presets.config("tiny").code2wav_config).eval()
    init_random_weights(code2wav, seed=8)
    code2wav = code2wav.double()
    g = torch.Generator().manual_seed(9)
    codes = torch.randint(0, code2wav.config.codebook_size, (1, code2wav.config.num_quantizers, N_FRAMES),
                          generator=g)
    moved = perturbation_response(code2wav, codes, FRAME).nonzero().flatten()
    return int(moved.min()), int(moved.max())


@exercise("06.1", "Code2Wav decodes 60 frames of codes. Every code of frame 40 is changed. Which output samples "
          "change? Answer (first, last) sample index, counting from 0.",
          right=_measured_span, wrong=lambda: (FRAME * SPF, N_FRAMES * SPF - 1),
          praise="nothing before frame 40 moves (causal padding everywhere), and frame 40 starts at output sample "
                 "40 x 1920 - 555 = 76245 because a decode is 555 samples short at its start. The change then "
                 "runs to the very last sample, 60 x 1920 - 555 - 1 = 114644: the receptive field (151 frames "
                 "here) reaches far past the 20 frames that follow.")
def _span(answer):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise TypeError("answer with two sample indices: (first, last)")
    first, last = (int(number(a)) for a in answer)
    want_first, want_last = _measured_span()
    if first == FRAME * SPF:
        return ("frame 40 starts at 40 x 1920 on the ideal grid, but the decode is short at its start: where "
                "does that put it in the output?")
    if first < want_first:
        return "could a sample before frame 40 depend on frame 40's codes? every convolution pads on the left only"
    if first != want_first:
        return "the first changed sample is the first sample of frame 40 in the output"
    if last == N_FRAMES * SPF - 1 or last == N_FRAMES * SPF:
        return "that would end 60 whole frames of 1920 samples; how long is a 60-frame decode?"
    if last < want_last:
        return ("frame 40's influence ends only where the receptive field ends: does that come before the end of "
                "a 60-frame decode?")
    if last != want_last:
        return "no sample after the end of the output: a 60-frame decode has 1920 x 60 - 555 samples"
    return None


# ---- 06.2 implement: a causal conv1d -------------------------------------------------------------------------------

def _conv_right():
    def causal_conv1d(x, weight, bias, dilation):
        left = (weight.shape[-1] - 1) * dilation                 # the span of the dilated kernel, minus "now"
        return torch.nn.functional.conv1d(torch.nn.functional.pad(x, (left, 0)), weight, bias, dilation=dilation)
    return causal_conv1d


def _conv_wrong():
    def causal_conv1d(x, weight, bias, dilation):                # "same" padding: looks into the future
        half = (weight.shape[-1] - 1) * dilation // 2
        return torch.nn.functional.conv1d(torch.nn.functional.pad(x, (half, half)), weight, bias, dilation=dilation)
    return causal_conv1d


@functools.lru_cache(maxsize=1)
def _conv_cases():
    from ..code2wav import CausalConv
    g = torch.Generator().manual_seed(10)
    cases = []
    for c_in, c_out, kernel, dilation in ((3, 4, 7, 1), (4, 4, 7, 9), (2, 5, 3, 2), (4, 1, 1, 1)):
        with torch.random.fork_rng(devices=[]):                   # leave the learner's global RNG alone
            conv = CausalConv(c_in, c_out, kernel, dilation)
        with torch.no_grad():
            conv.conv.weight.copy_(torch.randn(conv.conv.weight.shape, generator=g))
            conv.conv.bias.copy_(torch.randn(conv.conv.bias.shape, generator=g))
            x = torch.randn(2, c_in, 40, generator=g)
            cases.append((x, conv.conv.weight.detach().clone(), conv.conv.bias.detach().clone(), dilation,
                          conv(x)))
    return cases


@exercise("06.2", "Write causal_conv1d(x, weight, bias, dilation): x (B, C_in, T), weight (C_out, C_in, K), bias "
          "(C_out,) -> (B, C_out, T), where output t reads only inputs t, t - d, ..., t - (K - 1) d.",
          right=_conv_right, wrong=_conv_wrong,
          praise="equal to code2wav.CausalConv (and HF's Qwen3OmniMoeCausalConvNet at stride 1): (K - 1) d zeros "
                 "on the left, none on the right, so the output has the input's length and never looks ahead.")
def _conv(fn):
    for x, weight, bias, dilation, want in _conv_cases():
        got = torch.as_tensor(call(fn, x.clone(), weight, bias, dilation))
        if tuple(got.shape) != tuple(want.shape):
            return (f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}: pad so that the output is as "
                    f"long as the input")
        if torch.allclose(got, want, atol=1e-4):
            continue
        future = x.clone()
        future[..., 20:] += 1.0                                  # change the input from t = 20 on
        early = torch.as_tensor(call(fn, future, weight, bias, dilation))[..., :20]
        if not torch.allclose(early, got[..., :20], atol=1e-6):
            return "outputs before t = 20 change when inputs from t = 20 on change: your conv looks into the future"
        return "causal, but not the same numbers: pad (K - 1) x dilation zeros on the left and use the dilation"
    return None


# ---- 06.3 predict: length of a chunked decode ----------------------------------------------------------------------

def _chunked_right():
    from ..code2wav import chunk_spans
    return sum((end - start) * SPF - LOST for start, end, _ in chunk_spans(100, 30, 25))


@exercise("06.3", "How many samples does chunked_decode return for 100 frames with chunk_size=30 and "
          "left_context_size=25?",
          right=_chunked_right, wrong=lambda: 100 * SPF - LOST,
          praise="4 chunks (30, 30, 30, 10 frames), each decoded on its own and each 555 samples short: "
                 "100 x 1920 - 4 x 555 = 189,780. The full decode would give 191,445: HF's slicing skips 555 "
                 "samples (23 ms) at every chunk boundary.")
def _chunked(answer):
    value = number(answer)
    if value == _chunked_right():
        return None
    if value == 100 * SPF - LOST:
        return ("that is the full decode; each chunk is decoded on its own, and every decode is short at its "
                "start")
    if value == 100 * SPF:
        return "a decode of T frames is not 1920 T samples: look at its length quirk"
    if value == 100 * SPF - 3 * LOST:
        return "count the chunks again: 100 frames in chunks of 30"
    if value > 100 * SPF:
        return "the left context's audio is decoded, then thrown away: it is not in the output"
    return "list the chunks with chunk_spans(100, 30, 25) and add up what each one keeps"


# ---- 06.4 predict: the report's real-time factor at 4 concurrent requests ------------------------------------------

TABLE_2_4X = dict(thinker_tok_per_s=63.0, talker_tok_per_s=125.0, mtp_s=0.016, codec_s=0.005)   # 4 concurrent


def _rtf_right():
    t = TABLE_2_4X
    return (1 / t["thinker_tok_per_s"] + 1 / t["talker_tok_per_s"] + t["mtp_s"] + t["codec_s"]) / 0.080


@exercise("06.4", "The report's Table 2 at 4 concurrent requests: Thinker 63 tokens/s, Talker 125 tokens/s, MTP "
          "16 ms and codec 5 ms per frame. What real-time factor does that give, as the report defines it?",
          right=_rtf_right, wrong=lambda: 1 / 63 + 1 / 125 + 0.016 + 0.005,
          praise="(15.9 + 8.0 + 16 + 5) ms = 44.9 ms of compute per 80 ms frame: RTF 0.56, the report's figure "
                 "(latency.real_time_factor; 0.47 at 1 request). Below 1, speech is produced faster than it "
                 "plays, so four users at once still hear it without gaps.")
def _rtf(answer):
    value = number(answer)
    want = _rtf_right()
    if abs(value - want) <= 0.006:
        return None
    t = TABLE_2_4X
    per_frame = want * 0.080
    if abs(value - per_frame) < 1e-3 or abs(value - 1000 * per_frame) < 0.5:
        return "that is the compute per frame; the real-time factor divides it by the audio one frame holds"
    if abs(value - 0.47) < 0.006:
        return "0.47 is the 1-request column; redo the sum with the 4-request numbers"
    if abs(value - (t["thinker_tok_per_s"] + t["talker_tok_per_s"])) < 1 or value > 10:
        return "tokens per second are rates; turn them into seconds per token first"
    if abs(value - (t["mtp_s"] + t["codec_s"]) / 0.080) < 1e-3:
        return "one frame also needs one Thinker token and one Talker step"
    return "add the seconds every stage spends on one frame, then divide by the 80 ms of speech it makes"
