"""Generation: the Thinker's decoding loop and the unified `model.generate` with HF's thinker_* / talker_* options.

Decoding with a KV cache has two phases (report section 2.1; the Thinker is a causal decoder):

    prefill   the whole prompt in one forward pass: T_prompt positions, fills the cache with their keys/values
    decode    one forward pass per new token: 1 position, attends to everything cached, appends its own K/V

After each pass the last position's logits go through sampling.py (repetition penalty, temperature, top-k, top-p)
to pick the next token. Positions: the prompt gets its TM-RoPE ids (rope.multimodal_position_ids; a left-padded
row counts only its real tokens), and each new token takes the previous position + 1 on all three axes, as HF's
generate does.

HF mirrors: GenerationMixin._sample (the loop), Qwen3OmniMoeThinkerForConditionalGeneration
._prepare_position_ids_for_generation (positions) and Qwen3OmniMoeForConditionalGeneration.generate (option
routing). Only the text path exists so far; return_audio=True needs the Talker and Code2Wav (later issues).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .layers import KVCache
from .sampling import SamplingOptions, StopState, choose_next, process_logits

# HF's default for thinker_eos_token_id: Qwen's <|im_end|> id in the real vocabulary. Our tiny and demo
# checkpoints have a small vocabulary, so with them pass thinker_eos_token_id=model.config.im_end_token_id.
HF_THINKER_EOS = 151645
THINKER_OPTIONS = ("max_new_tokens", "eos_token_id", "pad_token_id", "do_sample", "temperature", "top_k", "top_p",
                   "repetition_penalty", "generator", "output_hidden_states", "return_dict_in_generate")


@dataclass
class StepRecord:
    """One forward pass of the loop, for notebooks: what went in and what the cache held afterwards."""
    step: int             # 0 = prefill
    new_positions: int    # positions computed in this pass
    cache_length: int     # positions cached after it
    cache_bytes: int
    seconds: float


@dataclass
class ThinkerGeneration:
    """HF's GenerateDecoderOnlyOutput fields we fill: sequences (B, T_prompt + new) and, when asked, the hidden
    states of every pass: one tuple per pass, each (embeddings, layer outputs..., final norm), as HF."""
    sequences: torch.Tensor
    hidden_states: tuple | None = None


@torch.no_grad()
def thinker_generate(thinker, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     max_new_tokens: int = 20, eos_token_id=None, pad_token_id: int | None = None,
                     do_sample: bool = False, temperature: float = 1.0, top_k: int | None = 50, top_p: float = 1.0,
                     repetition_penalty: float = 1.0, generator: torch.Generator | None = None,
                     output_hidden_states: bool = False, return_dict_in_generate: bool = False,
                     trace: list | None = None, **media):
    """Prompt ids (B, T) -> (B, T + n) ids, n <= max_new_tokens (HF Thinker.generate for text prompts).

    Stops when max_new_tokens are generated or every row has produced an eos id; finished rows are filled with
    pad_token_id (default: the config's pad id, else the first eos id, as HF). `generator` (not an HF option)
    makes sampling reproducible without seeding torch's global RNG. `trace`, if a list, receives one StepRecord
    per forward pass."""
    if input_ids is None or input_ids.ndim != 2:
        raise ValueError("thinker generation needs input_ids of shape (batch, seq): the token ids of the prompt")
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a whole number >= 1")
    opts = SamplingOptions(do_sample, temperature, top_k, top_p, repetition_penalty)
    if pad_token_id is None:
        pad_token_id = thinker.config.text_config.pad_token_id
    B, T = input_ids.shape
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.dtype)
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(mask.shape)} must have the shape of input_ids "
                         f"{tuple(input_ids.shape)}")
    stop = StopState(B, eos_token_id, pad_token_id)
    positions, _ = thinker.prompt_positions(input_ids, mask, **media)    # (3, B, T) TM-RoPE ids of the prompt
    cache = KVCache()
    sequences, hidden = input_ids, [] if output_hidden_states else None
    step_ids = input_ids
    for step in range(max_new_tokens):
        t0 = time.perf_counter()
        out = thinker(input_ids=step_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                      use_cache=True, output_hidden_states=output_hidden_states, **media)
        if trace is not None:
            trace.append(StepRecord(step, step_ids.shape[1], cache.length, cache.nbytes(), time.perf_counter() - t0))
        if hidden is not None:
            hidden.append(out.hidden_states)
        media = {}                                                       # media enter with the prompt only
        scores = process_logits(out.logits[:, -1].float(), sequences, opts)   # (B, V)
        next_tokens = stop.fill_finished(choose_next(scores, opts.do_sample, generator))   # (B,)
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=1)
        if stop.update(next_tokens):
            break
        step_ids = next_tokens[:, None]                                  # (B, 1): decode one position
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)            # (B, past + 1)
        positions = positions[..., -1:] + 1                              # (3, B, 1): next position on every axis
    if return_dict_in_generate:
        return ThinkerGeneration(sequences, tuple(hidden) if hidden is not None else None)
    return sequences


@torch.no_grad()
def generate(model, input_ids: torch.Tensor | None = None, speaker: str = "Ethan", use_audio_in_video: bool = False,
             return_audio: bool | None = None, thinker_max_new_tokens: int = 1024,
             thinker_eos_token_id=HF_THINKER_EOS, talker_max_new_tokens: int = 4096, talker_do_sample: bool = True,
             talker_top_k: int = 50, talker_top_p: float = 1.0, talker_temperature: float = 0.9,
             talker_repetition_penalty: float = 1.05, generation_mode: str | None = None, **kwargs):
    """`model.generate`: HF Qwen3OmniMoeForConditionalGeneration.generate's signature and meaning.

    thinker_X=value is passed to the Thinker's loop as X (thinker_do_sample, thinker_temperature, thinker_top_k,
    thinker_top_p, thinker_repetition_penalty, thinker_pad_token_id, ...). return_audio=None means "speak if a
    Talker is loaded"; with return_audio=False the result is the Thinker's ids, prompt included, as HF returns
    them: (batch, prompt + new tokens). use_audio_in_video is accepted for HF's signature; the prompt's tokens
    already say whether a video carries its sound."""
    if return_audio is None and generation_mode is not None:
        return_audio = generation_mode != "text"
    has_talker = model.talker is not None and model.code2wav is not None and model.config.enable_audio_output
    if return_audio and not has_talker:
        raise ValueError("return_audio=True needs the Talker and Code2Wav: load the model with "
                         "components=('thinker', 'talker', 'code2wav') (or pass return_audio=False for text only)")
    if return_audio is None:
        return_audio = has_talker
    if model.thinker is None:
        raise ValueError("generate needs the Thinker: load the model with 'thinker' among its components")

    thinker_kwargs = {"max_new_tokens": thinker_max_new_tokens, "eos_token_id": thinker_eos_token_id}
    for key, value in kwargs.items():
        if key.startswith("thinker_"):
            name = key[len("thinker_"):]
            if name not in THINKER_OPTIONS:
                raise TypeError(f"{key}: omni_ref's Thinker loop does not know option {name!r}; it takes "
                                f"{', '.join('thinker_' + o for o in THINKER_OPTIONS)}")
            thinker_kwargs[name] = value
        elif key.startswith(("talker_", "token2wav_")):
            continue                                   # speech options: used only on the speech path
        else:
            thinker_kwargs.setdefault(key, value)      # attention_mask and media inputs go to the Thinker

    if return_audio:
        raise NotImplementedError("speech output (Talker + Code2Wav) is not built yet; call generate with "
                                  "return_audio=False for the Thinker's text ids")
    return thinker_generate(model.thinker, input_ids, **thinker_kwargs)
