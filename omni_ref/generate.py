"""Generation: the Thinker's decoding loop, and `model.generate` with HF's thinker_* options.

Decoding with a KV cache has two phases (report section 2.1; the Thinker is a causal decoder):

    prefill   the whole prompt in one forward pass: T_prompt positions, fills the cache with their
              keys and values
    decode    one forward pass per new token: 1 position, attends to everything cached, appends
              its own K/V

After each pass the last position's logits go through sampling.py (repetition penalty, temperature,
top-k, top-p) to pick the next token. Positions: the prompt gets its TM-RoPE ids
(rope.multimodal_position_ids; a left-padded row counts only its real tokens), and each new token
takes the previous position + 1 on all three axes, as HF's generate does.

Speech (return_audio=True, report sections 2.4-2.5) chains three stages after the Thinker's loop:

    Thinker   generate text, keeping every pass's hidden states
    Talker    prompt from those states (talker.build_prompt), then codebook-0 codes frame by frame,
              each frame completed by the MTP code predictor (talker.talker_generate)
    Code2Wav  codes (B, N, frames) -> 24 kHz waveform, decoded in chunks of 300 frames with 25
              frames of context (code2wav.CHUNK_SIZE, LEFT_CONTEXT_SIZE)

`model.stream` (stream.py) runs the same stages interleaved, so that speech starts while the
Thinker is still writing. The loops are generators (thinker_steps here, talker.talker_steps) that
generate runs to the end and stream runs a pass at a time.

HF mirrors: GenerationMixin._sample (the loop), Qwen3OmniMoeThinkerForConditionalGeneration
._prepare_position_ids_for_generation (positions) and Qwen3OmniMoeForConditionalGeneration.generate
(option routing, the Talker hand-off, batched speech).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .code2wav import CHUNK_SIZE, LEFT_CONTEXT_SIZE
from .layers import KVCache
from .sampling import (SamplingOptions, StopState, choose_next, padding_lengths,
                       process_logits)
from .talker import (TalkerGeneration, TalkerPrompt, build_prompt, suppressed_ids,
                     talker_generate, talker_position_ids)

# HF's default for thinker_eos_token_id: Qwen's <|im_end|> id in the real vocabulary. Our tiny and
# demo checkpoints have a small vocabulary, so with them pass
# thinker_eos_token_id=model.config.im_end_token_id.
HF_THINKER_EOS = 151645
THINKER_OPTIONS = ("max_new_tokens", "eos_token_id", "pad_token_id", "do_sample", "temperature",
                   "top_k", "top_p", "repetition_penalty", "generator", "output_hidden_states",
                   "return_dict_in_generate")
# talker_X options beyond the named ones of `generate` (HF passes any talker_X to the Talker's
# generate as X).
TALKER_OPTIONS = ("eos_token_id", "pad_token_id", "suppress_tokens", "generator")


@dataclass
class StepRecord:
    """One forward pass of the loop, for notebooks: what went in and what the cache held after."""
    step: int             # 0 = prefill
    new_positions: int    # positions computed in this pass
    cache_length: int     # positions cached after it
    cache_bytes: int
    seconds: float


@dataclass
class ThinkerGeneration:
    """HF's GenerateDecoderOnlyOutput fields we fill: sequences (B, T_prompt + new) and, when
    asked, the hidden states of every pass: one tuple per pass, each (embeddings, layer outputs...,
    final norm), as HF."""
    sequences: torch.Tensor
    hidden_states: tuple | None = None


@dataclass
class ThinkerStep:
    """One forward pass of the Thinker's loop, as `thinker_steps` yields it."""
    step: int                     # 0 = the prefill
    tokens: torch.Tensor          # (B,) the ids this pass chose (pad_token_id in finished rows)
    sequences: torch.Tensor       # (B, T + step + 1): the prompt and every id chosen so far
    hidden_states: tuple | None   # this pass's hidden states (HF layout), when asked for
    done: bool                    # the last pass: every row ended, or max_new_tokens reached


@torch.no_grad()
def thinker_generate(thinker, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     max_new_tokens: int = 20, eos_token_id=None, pad_token_id: int | None = None,
                     do_sample: bool = False, temperature: float = 1.0, top_k: int | None = 50,
                     top_p: float = 1.0, repetition_penalty: float = 1.0,
                     generator: torch.Generator | None = None, output_hidden_states: bool = False,
                     return_dict_in_generate: bool = False, trace: list | None = None, **media):
    """Prompt ids (B, T) -> (B, T + n) ids, n <= max_new_tokens (HF Thinker.generate for text).

    Stops when max_new_tokens are generated or every row has produced an eos id; finished rows are
    filled with pad_token_id (default: the config's pad id, else the first eos id, as HF).
    `generator` (not an HF option) makes sampling reproducible without seeding torch's global RNG.
    `trace`, if a list, receives one StepRecord per forward pass. The loop itself is
    `thinker_steps`; this runs it to the end (stream.py runs it a pass at a time)."""
    passes = []
    for last in thinker_steps(thinker, input_ids, attention_mask, max_new_tokens, eos_token_id,
                              pad_token_id, do_sample, temperature, top_k, top_p,
                              repetition_penalty, generator, output_hidden_states, trace, **media):
        passes.append(last.hidden_states)
    if return_dict_in_generate:
        return ThinkerGeneration(last.sequences, tuple(passes) if output_hidden_states else None)
    return last.sequences


@torch.no_grad()
def thinker_steps(thinker, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  max_new_tokens: int = 20, eos_token_id=None, pad_token_id: int | None = None,
                  do_sample: bool = False, temperature: float = 1.0, top_k: int | None = 50,
                  top_p: float = 1.0, repetition_penalty: float = 1.0,
                  generator: torch.Generator | None = None, output_hidden_states: bool = False,
                  trace: list | None = None, **media):
    """The Thinker's decoding loop, one forward pass at a time: a generator of ThinkerStep, the
    prefill first, then one pass per token. Options as thinker_generate."""
    if input_ids is None or input_ids.ndim != 2:
        raise ValueError("thinker generation needs input_ids of shape (batch, seq): the token ids "
                         "of the prompt")
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a whole number >= 1")
    opts = SamplingOptions(do_sample, temperature, top_k, top_p, repetition_penalty)
    if pad_token_id is None:
        pad_token_id = thinker.config.text_config.pad_token_id
    B, T = input_ids.shape
    if attention_mask is None:
        mask = torch.ones_like(input_ids)
    else:
        mask = attention_mask.to(input_ids.dtype)
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(mask.shape)} must have the shape of input_ids "
                         f"{tuple(input_ids.shape)}")
    stop = StopState(B, eos_token_id, pad_token_id, input_ids.device)
    unpenalised = padding_lengths(mask)          # (B,): the penalty skips the left pads, as HF
    positions, _ = thinker.prompt_positions(input_ids, mask, **media)   # (3, B, T) TM-RoPE ids
    cache = KVCache()
    sequences = input_ids
    step_ids = input_ids
    for step in range(max_new_tokens):
        t0 = time.perf_counter()
        out = thinker(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                      past_key_values=cache, use_cache=True, logits_to_keep=1,
                      output_hidden_states=output_hidden_states, **media)
        if trace is not None:
            trace.append(StepRecord(step, step_ids.shape[1], cache.length, cache.nbytes(),
                                    time.perf_counter() - t0))
        media = {}                                          # media enter with the prompt only
        scores = process_logits(out.logits[:, -1].float(), sequences, opts, unpenalised)
        next_tokens = stop.fill_finished(choose_next(scores, opts.do_sample, generator))   # (B,)
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=1)
        done = stop.update(next_tokens) or step == max_new_tokens - 1
        yield ThinkerStep(step, next_tokens, sequences, out.hidden_states, done)
        if done:
            break
        step_ids = next_tokens[:, None]                     # (B, 1): decode one position
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)   # (B, past + 1)
        positions = positions[..., -1:] + 1                 # (3, B, 1): the next on every axis


class UnknownSpeakerError(ValueError, NotImplementedError):
    """A speaker the checkpoint has no id for (HF raises NotImplementedError; this is both)."""


@dataclass
class Speech:
    """Everything the speech path made, for notebooks: `generate(..., return_audio=True)` returns
    (text_ids, wav) of this."""
    text_ids: torch.Tensor       # (B, T + n) the Thinker's ids, prompt included
    wav: torch.Tensor | list     # (1, 1, samples) for one row; a list of (samples,) per row
    thinker: ThinkerGeneration
    prompt: TalkerPrompt
    positions: torch.Tensor      # (3, B, L) the Talker prompt's TM-RoPE positions
    talker: TalkerGeneration     # codebook-0 ids and codes (B, N, frames)
    speaker_id: int


def speaker_id_of(talker_config, speaker: str) -> int:
    """The codec id of a speaker name, case-insensitive as in HF."""
    table = talker_config.speaker_id or {}
    if not isinstance(speaker, str) or speaker.lower() not in table:
        names = ", ".join(sorted(table)) or "none (talker_config.speaker_id is empty)"
        raise UnknownSpeakerError(f"speaker={speaker!r} is not in this checkpoint; its speakers "
                                  f"are: {names}")
    return table[speaker.lower()]


def _split_options(kwargs: dict, thinker_kwargs: dict, talker_kwargs: dict | None) -> None:
    """Route generate's extra keywords: thinker_X -> the Thinker as X, talker_X -> the Talker as X
    (when speaking; ignored otherwise, as in HF), token2wav_X -> nowhere (HF collects them but its
    Code2Wav call takes none), anything else (attention_mask, media inputs) -> the Thinker."""
    for key, value in kwargs.items():
        if key.startswith("thinker_"):
            name = key[len("thinker_"):]
            if name not in THINKER_OPTIONS:
                raise TypeError(f"{key}: omni_ref's Thinker loop does not know option {name!r}; "
                                f"it takes {', '.join('thinker_' + o for o in THINKER_OPTIONS)}")
            thinker_kwargs[name] = value
        elif key.startswith("talker_"):
            name = key[len("talker_"):]
            if talker_kwargs is None:
                continue
            if name not in TALKER_OPTIONS:
                known = ", ".join("talker_" + o for o in TALKER_OPTIONS)
                raise TypeError(f"{key}: omni_ref's Talker loop does not know option {name!r}; "
                                f"besides talker_max_new_tokens / do_sample / top_k / top_p / "
                                f"temperature / repetition_penalty it takes {known}")
            talker_kwargs[name] = value
        elif key.startswith("token2wav_"):
            continue
        else:
            thinker_kwargs.setdefault(key, value)  # attention_mask and media inputs: the Thinker's


def _check_count(name: str, value, least: int, why: str) -> None:
    if not (isinstance(value, int) and value >= least):
        raise ValueError(f"{name}={value!r} must be a whole number >= {least}{why}")


def no_speech_error(model, what: str, text_only: str) -> ValueError:
    """The error for a request that speaks on a model without the Talker and Code2Wav: a
    Thinker-only checkpoint (enable_audio_output=false, e.g. the Thinking and Captioner ones) has
    no speech to load, any other was loaded without it."""
    if not model.config.enable_audio_output:
        return ValueError(f"{what} needs the Talker and Code2Wav, and this checkpoint has none: its "
                          f"config says enable_audio_output=false (a Thinker-only checkpoint, like "
                          f"Qwen3-Omni's Thinking and Captioner ones), so it writes text only: use "
                          f"{text_only}")
    return ValueError(f"{what} needs the Talker and Code2Wav: load the model with "
                      f"components=('thinker', 'talker', 'code2wav'), or use {text_only}")


@torch.no_grad()
def generate(model, input_ids: torch.Tensor | None = None, speaker: str = "Ethan",
             use_audio_in_video: bool = False, return_audio: bool | None = None,
             thinker_max_new_tokens: int = 1024, thinker_eos_token_id=HF_THINKER_EOS,
             talker_max_new_tokens: int = 4096, talker_do_sample: bool = True,
             talker_top_k: int = 50, talker_top_p: float = 1.0, talker_temperature: float = 0.9,
             talker_repetition_penalty: float = 1.05, generation_mode: str | None = None,
             **kwargs):
    """`model.generate`: HF Qwen3OmniMoeForConditionalGeneration.generate's signature and meaning.

    thinker_X=value is passed to the Thinker's loop as X (thinker_do_sample, thinker_temperature,
    thinker_top_k, thinker_top_p, thinker_repetition_penalty, thinker_pad_token_id, ...).
    return_audio=None means "speak if a Talker is loaded"; with return_audio=False the result is
    the Thinker's ids, prompt included, as HF returns them: (batch, prompt + new tokens). With
    return_audio=True it is (text_ids, wav): wav (1, 1, samples) at 24 kHz for one prompt, a list
    of 1-D waveforms for a batch (see generate_speech). use_audio_in_video is accepted for HF's
    signature; the prompt's tokens already say whether a video carries its sound."""
    if return_audio is None and generation_mode is not None:
        return_audio = generation_mode != "text"
    has_talker = (model.talker is not None and model.code2wav is not None
                  and model.config.enable_audio_output)
    if return_audio and not has_talker:
        raise no_speech_error(model, "return_audio=True", "return_audio=False")
    if return_audio is None:
        return_audio = has_talker
    if model.thinker is None:
        raise ValueError("generate needs the Thinker: load the model with 'thinker' among its "
                         "components")

    if return_audio:
        speech = generate_speech(model, input_ids, speaker, thinker_max_new_tokens,
                                 thinker_eos_token_id, talker_max_new_tokens, talker_do_sample,
                                 talker_top_k, talker_top_p, talker_temperature,
                                 talker_repetition_penalty, **kwargs)
        return speech.text_ids, speech.wav
    thinker_kwargs = {"max_new_tokens": thinker_max_new_tokens,
                      "eos_token_id": thinker_eos_token_id}
    _split_options(kwargs, thinker_kwargs, None)
    return thinker_generate(model.thinker, input_ids, **thinker_kwargs)


@torch.no_grad()
def generate_speech(model, input_ids: torch.Tensor, speaker: str = "Ethan",
                    thinker_max_new_tokens: int = 1024, thinker_eos_token_id=HF_THINKER_EOS,
                    talker_max_new_tokens: int = 4096, talker_do_sample: bool = True,
                    talker_top_k: int = 50, talker_top_p: float = 1.0,
                    talker_temperature: float = 0.9, talker_repetition_penalty: float = 1.05,
                    talker_output_logits: bool = False, **kwargs) -> Speech:
    """The speech path of `generate`, returning every intermediate (Speech). Same options as
    generate; talker_output_logits=True also keeps the Talker's and the MTP's raw logits of every
    step.

    Talker options as HF sets them: eos = codec eos, suppress = the control ids except eos
    (talker.suppressed_ids), repetition penalty over the codes chosen so far; the MTP samples
    (top-k 50, top-p 0.8) exactly when the Talker does, so talker_do_sample=False makes the whole
    run greedy."""
    speaker_id, thinker_kwargs, talker_kwargs, opts = _speech_options(
        model, input_ids, speaker, thinker_max_new_tokens, thinker_eos_token_id,
        talker_max_new_tokens, talker_do_sample, talker_top_k, talker_top_p, talker_temperature,
        talker_repetition_penalty, kwargs)
    cfg = model.config

    thinker_kwargs.update(output_hidden_states=True, return_dict_in_generate=True)
    result = thinker_generate(model.thinker, input_ids, **thinker_kwargs)
    prompt = build_prompt(cfg, model.talker, model.thinker.model.embed_tokens, input_ids,
                          thinker_kwargs.get("attention_mask"), result.sequences,
                          result.hidden_states, speaker_id, thinker_kwargs.get("eos_token_id"))
    positions = _talker_positions(prompt, cfg.talker_config, kwargs)
    talker = talker_generate(model.talker, prompt, positions, talker_max_new_tokens, opts,
                             output_logits=talker_output_logits, **talker_kwargs)
    wav = codes_to_wav(model.code2wav, talker.codes, talker.sequences,
                       talker_kwargs["eos_token_id"])
    return Speech(result.sequences, wav, result, prompt, positions, talker, speaker_id)


def _speech_options(model, input_ids, speaker, thinker_max_new_tokens, thinker_eos_token_id,
                    talker_max_new_tokens, talker_do_sample, talker_top_k, talker_top_p,
                    talker_temperature, talker_repetition_penalty, kwargs):
    """Check a speech request and route its options (generate_speech and stream.py): returns
    (speaker id, the Thinker loop's keywords, the Talker loop's keywords, Talker SamplingOptions).
    """
    if model.talker is None or model.code2wav is None:
        raise no_speech_error(model, "speech", "generate(..., return_audio=False)")
    talker_cfg = model.config.talker_config
    talker_cfg.check_codec_ids()
    speaker_id = speaker_id_of(talker_cfg, speaker)
    if input_ids is None or input_ids.ndim != 2 or input_ids.shape[1] == 0:
        shape = None if input_ids is None else tuple(input_ids.shape)
        raise ValueError(f"speech needs a chat prompt: input_ids of shape (batch, seq) with "
                         f"seq > 0, got {shape}; build it with "
                         f"Processor.apply_chat_template(..., add_generation_prompt=True)")
    _check_count("thinker_max_new_tokens", thinker_max_new_tokens, 2,
                 ": the Talker's prompt takes the first answer token, and speech needs one more")
    _check_count("talker_max_new_tokens", talker_max_new_tokens, 2,
                 ": a frame's codes are complete only when the step after its codebook-0 code "
                 "has run")
    talker_kwargs = {"eos_token_id": talker_cfg.codec_eos_token_id,
                     "suppress_tokens": suppressed_ids(talker_cfg)}
    thinker_kwargs = {"max_new_tokens": thinker_max_new_tokens,
                      "eos_token_id": thinker_eos_token_id}
    _split_options(kwargs, thinker_kwargs, talker_kwargs)
    opts = SamplingOptions(talker_do_sample, talker_temperature, talker_top_k, talker_top_p,
                           talker_repetition_penalty)
    return speaker_id, thinker_kwargs, talker_kwargs, opts


def _talker_positions(prompt: TalkerPrompt, talker_cfg, kwargs) -> torch.Tensor:
    """The Talker prompt's TM-RoPE positions (3, B, L). HF hands the Talker the grids and audio
    lengths (not use_audio_in_video) of the request."""
    feature_mask = kwargs.get("feature_attention_mask")
    audio_lengths = feature_mask.sum(1) if feature_mask is not None else None
    return talker_position_ids(prompt, talker_cfg, kwargs.get("image_grid_thw"),
                               kwargs.get("video_grid_thw"), audio_lengths,
                               kwargs.get("video_second_per_grid"))


def no_frames_error() -> ValueError:
    return ValueError("the Talker produced no codec frame (codec eos came first): there is "
                      "nothing to decode; try another prompt or sampling settings")


def codes_to_wav(code2wav, codes: torch.Tensor, sequences: torch.Tensor, eos_token_id):
    """Codes (B, N, frames) -> waveform(s), as HF's generate ends.

    One row: chunked_decode of every frame, (1, 1, samples). A batch decodes together (Code2Wav is
    causal, so a row's audio does not depend on what follows it): frames from each row's codec eos
    on are set to code 0 (they are padding, not codes), and each row's wave is cut to its own
    length, allowing for the samples each chunk loses at its start (code2wav.chunked_decode).
    Returns a list of (samples,) tensors."""
    B, _, n = codes.shape
    if n == 0:
        raise no_frames_error()
    if B == 1:
        wav = code2wav.chunked_decode(codes, chunk_size=CHUNK_SIZE,
                                      left_context_size=LEFT_CONTEXT_SIZE)
        return wav.float()
    eos = torch.as_tensor(eos_token_id, device=codes.device).flatten()
    is_eos = torch.isin(sequences[:, :n], eos)
    frame = torch.arange(n, device=codes.device)                           # (n,)
    lengths = torch.where(is_eos, frame, n).min(dim=-1).values             # (B,) frames per row
    padding = (frame[None] >= lengths[:, None])[:, None, :]                # (B, 1, n)
    codes = codes.masked_fill(padding, 0)
    wavs = code2wav.chunked_decode(codes, chunk_size=CHUNK_SIZE,
                                   left_context_size=LEFT_CONTEXT_SIZE)    # (B, 1, S)
    per_frame = int(code2wav.total_upsample)
    chunks = (n + CHUNK_SIZE - 1) // CHUNK_SIZE
    lost_per_chunk = (n * per_frame - wavs.shape[-1]) // chunks           # measured, not assumed
    chunks_per_row = (lengths + CHUNK_SIZE - 1) // CHUNK_SIZE              # (B,)
    keep = lengths * per_frame - lost_per_chunk * chunks_per_row           # (B,) samples
    return [w[..., :k].reshape(-1).float() for w, k in zip(wavs, keep.tolist())]
