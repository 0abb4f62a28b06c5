"""`model.stream`: speech that starts while the Thinker is still writing.

Qwen3-Omni report section 2.5 (designs for streaming and concurrency) and its Table 2 (first-packet
latency): the Thinker, the Talker, the MTP and Code2Wav form a pipeline. The Talker needs only the
start of the answer to begin, it takes one more answer token per 80 ms frame, the MTP completes
each frame as soon as its codebook-0 code is chosen, and the causal Code2Wav turns a few frames
into audio without waiting for the rest. The first audio packet thus waits for a few frames, not
for the whole answer (Table 2 counts one frame: audio_chunk_frames=1).

HF has no such path: Qwen3OmniMoeForConditionalGeneration.generate runs the Thinker to its end,
then the Talker, then Code2Wav, and returns the audio only at the end (its time to first audio is
its whole run). generate.generate_speech does the same; this module runs the same loops
(generate.thinker_steps, talker.talker_steps) interleaved, one step at a time, in one thread.

The scheduling rule (every stage waits only for what it reads):

    Thinker   pass 0 (the prefill) chooses answer token 0, pass 1 feeds it (its embedding) and
              chooses token 1
    prompt    talker.build_prompt over those two passes: the user turns' states come from the
              prefill, the assistant turn ends with token 0. Its trailing text is replaced by the
              stream's own, written entry by entry:
    text      trailing entry j holds answer token j + 1 and is known as soon as Thinker pass j + 1
              has chosen that token: its projected embedding, or tts_eos when that pass was the
              Thinker's last (the token is eos, or the max_new_tokens-th one, which HF never feeds
              back); after it tts_pad for ever. This is build_prompt's rule (with _end_text_at_eos)
              for one prompt, written as the tokens arrive.
    Talker    step t chooses code 0 of frame t, the MTP fills the frame, and the next input adds
              trailing entry t. Before step t the stream runs the Thinker until entry t is known,
              so the Thinker stays one token ahead of the Talker (text arrives at speech pace here;
              the report's deployment runs the stages concurrently, where the text runs ahead).
    Code2Wav  every `audio_chunk_frames` new frames are decoded at once (streaming.Code2WavStream)
              and their audio is an "audio" event. When the Talker stops, the last frames are
              decoded, then the Thinker finishes its text.

So the first "audio" event waits for: the prefill, Thinker pass 1, audio_chunk_frames Talker steps
(each with its MTP) with one Thinker pass between two of them, and one Code2Wav push.

Joined, the events equal generate: the "text" ids are generate's new ids, the "audio" samples its
waveform (within 1e-5; the projections of the answer tokens are computed one at a time here and
all at once there, so they differ at rounding level). generate decodes with chunked_decode(300,
25), which equals the full decode for answers up to 300 frames (24 s); for longer answers the
stream's audio is the full decode (chunked_decode drops 555 samples at each chunk boundary,
streaming.py measures it).

Seeded sampling: interleaving changes the order of the random draws (a Thinker token now comes
between two Talker frames). Each stage drawing from its own generator (thinker_generator=g1,
talker_generator=g2) makes each stage's draws the same as in generate with the same seeds; one
generator object for both stages is refused when both sample, and two stages sampling from
torch's global RNG will not match generate.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import torch

from .generate import (HF_THINKER_EOS, _check_count, _speech_options, _talker_positions,
                       no_frames_error, no_speech_error, thinker_steps)
from .streaming import Code2WavStream
from .talker import build_prompt, talker_steps


@dataclass
class StreamEvent:
    """What model.stream yields, in the order it is produced."""
    kind: str                         # "text" | "audio"
    ids: torch.Tensor | None = None   # "text": (n,) int64 new answer token ids
    wav: torch.Tensor | None = None   # "audio": (n,) float32 samples at 24 kHz, continuing the last
    time_s: float = 0.0               # seconds since the stream was called
    row: int = 0                      # the prompt's row (stream takes one prompt: always 0)


def stream(model, input_ids: torch.Tensor | None = None, speaker: str = "Ethan",
           use_audio_in_video: bool = False, thinker_max_new_tokens: int = 1024,
           thinker_eos_token_id=HF_THINKER_EOS, talker_max_new_tokens: int = 4096,
           talker_do_sample: bool = True, talker_top_k: int = 50, talker_top_p: float = 1.0,
           talker_temperature: float = 0.9, talker_repetition_penalty: float = 1.05,
           audio_chunk_frames: int = 4, return_audio: bool | None = None,
           **kwargs) -> Iterator[StreamEvent]:
    """`model.stream`: generate's speech options and defaults (generate.generate), plus
    audio_chunk_frames, the frames Code2Wav decodes at once (4 = 320 ms of audio). Returns an
    iterator of StreamEvent; the request is checked here, before the first event. return_audio
    is accepted so that generate's keywords can be passed unchanged; a stream always speaks."""
    t0 = time.perf_counter()
    if return_audio is not None and not return_audio:
        raise ValueError("stream speaks (its events carry audio), so return_audio=False has no "
                         "stream; for text only use model.generate(..., return_audio=False)")
    if model.thinker is None:
        raise ValueError("stream needs the Thinker: load the model with 'thinker' among its "
                         "components")
    if (model.talker is None or model.code2wav is None
            or not model.config.enable_audio_output):
        raise no_speech_error(model, "stream (it speaks)", "model.generate(..., return_audio=False)")
    _check_count("audio_chunk_frames", audio_chunk_frames, 1,
                 ": Code2Wav decodes at least one frame at a time")
    speaker_id, thinker_kwargs, talker_kwargs, opts = _speech_options(
        model, input_ids, speaker, thinker_max_new_tokens, thinker_eos_token_id,
        talker_max_new_tokens, talker_do_sample, talker_top_k, talker_top_p, talker_temperature,
        talker_repetition_penalty, kwargs)
    if input_ids.shape[0] != 1:
        raise ValueError(f"stream takes one prompt (input_ids of batch 1), got a batch of "
                         f"{input_ids.shape[0]}: call model.stream once per prompt, or "
                         f"model.generate for the whole batch")
    shared = thinker_kwargs.get("generator")
    if (shared is not None and shared is talker_kwargs.get("generator")
            and thinker_kwargs.get("do_sample", False) and talker_do_sample):
        raise ValueError("thinker_generator and talker_generator are the same torch.Generator: "
                         "stream interleaves the stages, so the draws would come in another order "
                         "than in generate and the result would differ; give each stage its own "
                         "generator (seeded as for generate)")
    thinker_kwargs.pop("return_dict_in_generate", None)
    thinker_kwargs["output_hidden_states"] = True        # the Talker's prompt reads the states
    return _events(model, input_ids, speaker_id, thinker_kwargs, talker_kwargs, opts,
                   talker_max_new_tokens, audio_chunk_frames, kwargs, t0)


@torch.no_grad()
def _events(model, input_ids, speaker_id, thinker_kwargs, talker_kwargs, opts,
            talker_max_new_tokens, audio_chunk_frames, kwargs, t0) -> Iterator[StreamEvent]:
    """The pipeline (module docstring): the Thinker, the Talker with its MTP, and Code2Wav, one
    step at a time."""
    cfg = model.config
    embed = model.thinker.model.embed_tokens
    thinker = thinker_steps(model.thinker, input_ids, **thinker_kwargs)

    def think():                # one Thinker pass: its step, and its token as a "text" event
        s = next(thinker)
        return s, StreamEvent("text", ids=s.tokens.clone(),
                              time_s=time.perf_counter() - t0)

    # -- the Talker's prompt. build_prompt reads the user turns' states from the prefill (pass 0)
    # and answer token 0's embedding from the pass that feeds it (pass 1), which also chooses
    # token 1, the text the Talker's first step adds.
    last, event = think()
    passes = [last.hidden_states]
    yield event
    if not last.done:           # (else build_prompt says that speech needs two tokens)
        last, event = think()
        passes.append(last.hidden_states)
        yield event
    prompt = build_prompt(cfg, model.talker, embed, input_ids, thinker_kwargs.get("attention_mask"),
                          last.sequences, passes, speaker_id, thinker_kwargs.get("eos_token_id"))
    prompt.trailing_text, prompt.text_complete = prompt.trailing_text[:, :0], False

    def write_text(s):          # trailing entry s.step - 1 from Thinker pass s.step
        if s.done:              # the last token is never fed back: tts_eos stands for it
            entry = prompt.tts_eos_embed                                         # (1, 1, H)
        else:
            entry = model.talker.text_projection(embed(s.tokens[:, None]))      # (1, 1, H)
        prompt.trailing_text = torch.cat([prompt.trailing_text, entry], dim=1)
        prompt.text_complete = s.done

    def text_until(entry):      # run the Thinker until trailing entry `entry` is known
        while not prompt.text_complete and prompt.trailing_text.shape[1] <= entry:
            s, event = think()
            write_text(s)
            yield event

    write_text(last)            # entry 0 (or the end of the text) from pass 1

    # -- the Talker (and the MTP in each step) and Code2Wav, interleaved with the Thinker
    positions = _talker_positions(prompt, cfg.talker_config, kwargs)
    decoder = Code2WavStream(model.code2wav)
    frames, n_frames = [], 0

    def audio(wav):             # (1, 1, n) -> an "audio" event, or nothing for no samples
        if wav.shape[-1]:
            yield StreamEvent("audio", wav=wav[0, 0].float(), time_s=time.perf_counter() - t0)

    for s in talker_steps(model.talker, prompt, positions, talker_max_new_tokens, opts,
                          **talker_kwargs):
        if s.codes is not None:
            frames.append(s.codes)                                               # (1, N)
            n_frames += 1
        if len(frames) == audio_chunk_frames:
            yield from audio(decoder.push(torch.stack(frames, dim=-1)))          # (1, N, chunk)
            frames = []
        if not s.done:
            yield from text_until(s.step + 1)    # what the next step adds to its input
    if n_frames == 0:
        raise no_frames_error()
    if frames:
        yield from audio(decoder.push(torch.stack(frames, dim=-1)))
    yield from audio(decoder.flush())
    yield from text_until(float("inf"))          # the Thinker's text, to its end
