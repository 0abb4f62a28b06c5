"""The Talker: turns the Thinker's representations into codec codes, one 80 ms frame at a time.

Qwen3-Omni report section 2.4. An MoE decoder with a shared expert reads a prompt built from the
Thinker's states (`build_prompt`) and predicts the codebook-0 code of each frame with `codec_head`;
the MTP module (code_predictor.py) fills in codebooks 1..N-1 of that frame. The next step's input
is the sum of the frame's N code embeddings plus the next piece of the answer text:

    prompt   [user turns] [assistant: role, 4 x tts_pad, tts_bos, first answer token]
             (build_prompt)
    step t   logits -> code 0 of frame t -> MTP -> codes 1..N-1 of frame t   (t = 0, 1, ...)
             next input = sum_j embed_j(code j of frame t) + trailing text t, where trailing text
             t is text_projection(answer token t + 2, counting from 1), then tts_eos, then tts_pad
             for ever

HF mirrors: Qwen3OmniMoeTalkerForConditionalGeneration (forward, prepare_inputs_for_generation,
position ids), Qwen3OmniMoeTalkerModel, Qwen3OmniMoeTalkerResizeMLP, and the prompt half of
Qwen3OmniMoeForConditionalGeneration.generate (_get_talker_user_parts,
_get_talker_assistant_parts). Keys `talker.*`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .code_predictor import CodePredictor, residual_sampling
from .config import OmniConfig, TalkerConfig, TalkerTextConfig
from .layers import ACTIVATIONS, KVCache, RMSNorm, decoder_layers
from .moe import RoutingStats, sparse_moe
from .rope import as_3d_position_ids, multimodal_position_ids, text_position_ids
from .sampling import (SamplingOptions, StopState, choose_next, padding_lengths,
                       process_logits)
from .thinker import MoEDecoder

# The position id HF's Talker gives padding in text-only prompts (HF's Thinker gives 1). Padding is
# masked out of attention, so only the outputs at padding positions show it.
PAD_POSITION = 0


class ResizeMLP(nn.Module):
    """Two-layer MLP from the Thinker's width to the Talker's (HF Qwen3OmniMoeTalkerResizeMLP)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, act: str = "silu"):
        super().__init__()
        self.act = ACTIVATIONS[act]
        self.linear_fc1 = nn.Linear(d_in, d_hidden, bias=True)
        self.linear_fc2 = nn.Linear(d_hidden, d_out, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (..., Thinker width) -> (..., Talker's)
        return self.linear_fc2(self.act(self.linear_fc1(x)))


class TalkerDecoder(MoEDecoder):
    """The Thinker's decoder pass (thinker.MoEDecoder: TM-RoPE, causal mask, layers, final norm,
    HF's hidden-state layout) over a codec-token table (HF Qwen3OmniMoeTalkerModel). HF quirk kept:
    every Talker layer is sparse with a shared expert, whatever mlp_only_layers /
    decoder_sparse_step say (HF's layer overwrites its `mlp`)."""

    def __init__(self, cfg: TalkerTextConfig):
        super().__init__()
        self.config = cfg
        self.codec_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = decoder_layers(cfg, lambda i: sparse_moe(cfg))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


@dataclass
class TalkerOutput:
    logits: torch.Tensor                      # (B, T, talker vocab): codebook 0 + control ids
    last_hidden_state: torch.Tensor           # (B, T, H) after the final norm: the MTP's input
    past_key_values: KVCache | None = None
    hidden_states: tuple | None = None        # HF layout (embeddings, layers..., final norm)
    routing: list[RoutingStats | None] | None = None


class Talker(nn.Module):
    """The Talker (HF Qwen3OmniMoeTalkerForConditionalGeneration; report section 2.4): an MoE
    decoder over codec tokens that speaks the Thinker's answer.

        text_projection    ResizeMLP       Thinker token embeddings -> Talker width
        hidden_projection  ResizeMLP       Thinker layer states at media positions -> Talker width
        model              TalkerDecoder   codec embeddings + projected text -> hidden states
        codec_head         Linear          hidden states -> codebook-0 logits (+ control ids)
        code_predictor     CodePredictor   the MTP module: codebooks 1..N-1 of each frame

    `build_prompt` (below) makes its prompt, `forward` runs one pass, `next_input` completes a
    frame and builds the next step's input, `talker_steps` loops them (`talker_generate` runs the
    loop to the end, stream.py a step at a time)."""

    def __init__(self, cfg: TalkerConfig):
        super().__init__()
        self.config = cfg
        t = cfg.text_config
        self.model = TalkerDecoder(t)
        self.text_projection = ResizeMLP(cfg.thinker_hidden_size, t.intermediate_size,
                                         t.hidden_size, t.hidden_act)
        self.hidden_projection = ResizeMLP(cfg.thinker_hidden_size, t.intermediate_size,
                                           t.hidden_size, t.hidden_act)
        self.codec_head = nn.Linear(t.hidden_size, t.vocab_size, bias=False)
        self.code_predictor = CodePredictor(cfg.code_predictor_config)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool | None = None,
                output_hidden_states: bool = False) -> TalkerOutput:
        """inputs_embeds (B, T, H) -> codec logits (B, T, vocab). attention_mask (B, past + T),
        1 = real; position_ids (3, B, T) (or HF's (B, T) / (4, B, T)); without them, positions
        count the mask's real tokens (HF's text-only rule: padding gets 0), or run on from the
        cache length without a mask."""
        B, T, _ = inputs_embeds.shape
        use_cache = self.config.text_config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = KVCache()
        if position_ids is None:
            past = past_key_values.length if past_key_values is not None else 0
            mask = attention_mask
            if mask is None:
                mask = torch.ones(B, past + T, dtype=torch.long, device=inputs_embeds.device)
            position_ids = text_position_ids(mask, pad_value=PAD_POSITION)[..., -T:]
        dec = self.model(inputs_embeds, as_3d_position_ids(position_ids), attention_mask,
                         past_key_values, output_hidden_states)
        logits = self.codec_head(dec.last_hidden_state)                      # (B, T, vocab)
        return TalkerOutput(logits, dec.last_hidden_state,
                            past_key_values if use_cache else None, dec.hidden_states,
                            dec.routing)

    def next_input(self, hidden: torch.Tensor, code0: torch.Tensor, text: torch.Tensor,
                   opts: SamplingOptions, generator=None, output_logits: bool = False):
        """After code 0 of a frame is chosen: the MTP fills the frame, and the frame's code
        embeddings plus one text vector (B, 1, H) become the Talker's next input. hidden: the
        Talker's last normed state (B, 1, H); code0 (B, 1). Returns (codes (B, N), next input
        (B, 1, H), the MTP's ResidualCodes)."""
        code0_embed = self.model.codec_embedding(code0)                          # (B, 1, H)
        res = self.code_predictor.generate(hidden, code0_embed, opts, generator, output_logits)
        frame = torch.cat([code0_embed, res.embeds], dim=1)                      # (B, N, H)
        codes = torch.cat([code0, res.codes], dim=1)                             # (B, N)
        return codes, frame.sum(1, keepdim=True) + text, res


def suppressed_ids(cfg: TalkerConfig) -> list[int]:
    """Ids the Talker may never emit: the 1024 control ids above the codebook (vocab-1024 ..
    vocab-1), except codec eos, which ends the speech. (HF generate's `suppress_tokens` for the
    Talker.)"""
    vocab = cfg.text_config.vocab_size
    return [i for i in range(vocab - 1024, vocab) if i != cfg.codec_eos_token_id]


# ---- the prompt: which Thinker states feed which Talker positions ------------------------------

@dataclass
class TalkerPrompt:
    inputs_embeds: torch.Tensor   # (B, U + 9, H): user turns (left-padded to U) + 9 assistant ones
    attention_mask: torch.Tensor  # (B, U + 9)
    input_ids: torch.Tensor      # (B, U + 9): user ids, then tts_pad ids (only TM-RoPE reads them)
    trailing_text: torch.Tensor   # (B, n, H): text vectors fed one per step after the prompt
    tts_pad_embed: torch.Tensor   # (1, 1, H): fed once the trailing text is used up
    user_length: int              # U
    sources: list = field(default_factory=list)   # row 0: what each position is made of (plots)
    tts_eos_embed: torch.Tensor | None = None    # (1, 1, H): marks the end of the answer's text
    # False while the Thinker is still writing (stream.py appends trailing_text as it goes)
    text_complete: bool = True

    def text_at(self, step: int) -> torch.Tensor:
        """The text vector (B, 1, H) added to the Talker's input after step `step`: trailing text
        entry `step`, tts_pad once they are used up."""
        B, n = self.trailing_text.shape[:2]
        if step < n:
            return self.trailing_text[:, step:step + 1]
        if not self.text_complete:
            raise RuntimeError(f"trailing text entry {step} is not known yet ({n} so far): run "
                               "the Thinker until it has written the token this entry holds")
        return self.tts_pad_embed.expand(B, -1, -1)

    def segments(self) -> list[tuple[str, int, int]]:
        """Row 0's prompt as runs of equal source: (source, start, end) with end exclusive."""
        runs = []
        for i, s in enumerate(self.sources):
            if runs and runs[-1][0] == s:
                runs[-1] = (s, runs[-1][1], i + 1)
            else:
                runs.append((s, i, i + 1))
        return runs


ASSISTANT_SEGMENTS = ("<|im_start|>", "assistant", "\\n", "tts_pad + codec_nothink",
                      "tts_pad + codec_think_bos", "tts_pad + codec_think_eos",
                      "tts_pad + speaker", "tts_bos + codec_pad", "first text token + codec_bos")


def build_prompt(config: OmniConfig, talker: Talker, text_embedding: nn.Embedding,
                 input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 sequences: torch.Tensor, passes: tuple, speaker_id: int,
                 thinker_eos_token_id=None) -> TalkerPrompt:
    """The Talker's prompt from the Thinker's generation (HF Qwen3OmniMoe...Generation.generate).

    input_ids (B, T) the Thinker's prompt; sequences (B, T + n) prompt + generated ids; passes: the
    hidden states of each Thinker forward pass, HF layout, (embeddings, layer outputs..., final
    norm). The last generated token was never fed back, so the states cover sequences[:, :-1].

      user turns     every position whose turn starts <|im_start|>user (system and earlier
                     assistant turns are left out): text tokens through
                     text_projection(token embedding), audio / image / video placeholders through
                     hidden_projection(Thinker layer-`accept_hidden_layer` state); rows are
                     left-padded to the longest user part
      assistant      text side: <|im_start|> assistant \\n, 4 x tts_pad, tts_bos, first answer
                     token (projected embeddings); codec side (added): 3 zeros, nothink,
                     think_bos, think_eos, speaker, pad, bos
      trailing text  answer tokens 2..n-1 then tts_eos; a row whose Thinker stopped early gets
                     tts_eos right after its own eos and tts_pad after that
    """
    thinker_cfg, talker_cfg = config.thinker_config, config.talker_config
    B, T = input_ids.shape
    if attention_mask is None:
        mask = torch.ones_like(input_ids)
    else:
        mask = attention_mask.to(input_ids.device)
    embeds = torch.cat([p[0] for p in passes], dim=1)                        # (B, T + n - 1, Dt)
    hidden = torch.cat([p[talker_cfg.accept_hidden_layer] for p in passes], dim=1)   # the same
    media_ids = input_ids.new_tensor([thinker_cfg.audio_token_id, thinker_cfg.image_token_id,
                                      thinker_cfg.video_token_id])
    media = torch.isin(sequences, media_ids)                                 # (B, T + n)

    # -- user turns: a position belongs to the turn of the last <|im_start|> at or before it
    pos = torch.arange(T, device=input_ids.device).expand(B, T)
    is_start = input_ids == config.im_start_token_id
    turn_start = torch.where(is_start, pos, -1).cummax(-1).values.clamp_min(0)     # (B, T)
    role = input_ids.gather(1, (turn_start + 1).clamp_max(T - 1))                   # (B, T)
    is_user = (role == config.user_token_id) & mask.bool()
    n_user = is_user.sum(-1)
    U = int(n_user.max())
    if U == 0:
        raise ValueError("the prompt has no user turn (<|im_start|>user ...): the Talker speaks "
                         "an answer to a user message; build the prompt with "
                         "Processor.apply_chat_template")
    # Sort keys: user positions T + p (all above the others), others p. The last U columns are
    # then each row's user positions in order, preceded (in shorter rows) by other positions that
    # the mask hides.
    order = torch.where(is_user, T + pos, pos).argsort(dim=-1)[:, -U:]               # (B, U)
    projected = _project_user(talker, embeds[:, :T], hidden[:, :T], media[:, :T])   # (B, T, H)
    user_embeds = projected.gather(1, order[..., None].expand(-1, -1, projected.shape[-1]))
    user_ids = sequences[:, :T].gather(1, order)                                     # (B, U)
    user_pos = torch.arange(U, device=input_ids.device)[None]                        # (1, U)
    user_mask = (user_pos >= (U - n_user)[:, None]).to(mask.dtype)                   # right-aligned

    # -- the assistant turn being answered: HF finds it in row 0 (left padding aligns every row's
    # end)
    starts = ((input_ids[0, :-1] == config.im_start_token_id) &
              (input_ids[0, 1:] == config.assistant_token_id)).nonzero().flatten()
    if len(starts) == 0:
        raise ValueError("the prompt does not end with an assistant turn (<|im_start|>assistant): "
                         "build it with apply_chat_template(..., add_generation_prompt=True)")
    a = int(starts[-1])
    special = input_ids.new_tensor([[config.tts_bos_token_id, config.tts_eos_token_id,
                                     config.tts_pad_token_id]])
    specials = talker.text_projection(text_embedding(special))                       # (1, 3, H)
    tts_bos, tts_eos, tts_pad = specials.chunk(3, dim=1)                           # (1, 1, H) each
    assistant = talker.text_projection(embeds[:, a:])                   # (B, T - a + n - 1, H)
    if assistant.shape[1] < 4:
        raise ValueError(f"the Thinker generated {sequences.shape[1] - T} token(s); speech needs "
                         f"at least 2 (the Talker's prompt ends with the first answer token, the "
                         f"rest is fed step by step): raise thinker_max_new_tokens")
    text_side = torch.cat([assistant[:, :3], tts_pad.expand(B, 4, -1), tts_bos.expand(B, -1, -1),
                           assistant[:, 3:4]], dim=1)                                # (B, 9, H)
    codec_ids = input_ids.new_tensor([[talker_cfg.codec_nothink_id, talker_cfg.codec_think_bos_id,
                                       talker_cfg.codec_think_eos_id, speaker_id,
                                       talker_cfg.codec_pad_id,
                                       talker_cfg.codec_bos_id]]).expand(B, -1)      # (B, 6)
    codec_side = torch.cat([text_side.new_zeros(B, 3, text_side.shape[-1]),
                            talker.model.codec_embedding(codec_ids)], dim=1)         # (B, 9, H)
    trailing = torch.cat([assistant[:, 4:], tts_eos.expand(B, -1, -1)], dim=1)      # (B, n - 1, H)
    if thinker_eos_token_id is not None:
        trailing = _end_text_at_eos(trailing, sequences[:, T:], thinker_eos_token_id, tts_eos,
                                    tts_pad)

    pads = U - int(n_user[0])
    row0_media = media[0, :T][order[0]][pads:].tolist()
    sources = ["padding"] * pads + [
        "user media: hidden_projection" if m else "user text: text_projection"
        for m in row0_media] + list(ASSISTANT_SEGMENTS)
    tts_pad_ids = user_ids.new_full((B, 9), config.tts_pad_token_id)
    return TalkerPrompt(
        inputs_embeds=torch.cat([user_embeds, text_side + codec_side], dim=1),
        attention_mask=torch.cat([user_mask, mask.new_ones(B, 9)], dim=1),
        input_ids=torch.cat([user_ids, tts_pad_ids], dim=1),
        trailing_text=trailing, tts_pad_embed=tts_pad, user_length=U, sources=sources,
        tts_eos_embed=tts_eos)


def _project_user(talker: Talker, embeds, hidden, media) -> torch.Tensor:
    """Per position: hidden_projection of the Thinker state at media placeholders, text_projection
    of the token embedding elsewhere. Both MLPs see only their own positions, gathered into one
    flat batch as in HF."""
    width = talker.config.text_config.hidden_size
    out = embeds.new_empty(*embeds.shape[:2], width)                         # (B, T, H)
    if media.any():
        out[media] = talker.hidden_projection(hidden[media])
    out[~media] = talker.text_projection(embeds[~media])
    return out


def _end_text_at_eos(trailing, generated, eos_token_id, tts_eos, tts_pad):
    """Entry j of `trailing` holds generated token j + 1. A row whose first eos is generated token
    e gets tts_eos at entry e and tts_pad after it, so a short answer in a batch ends when its own
    text ends (HF's rule; for the longest row this changes nothing)."""
    eos = torch.as_tensor(eos_token_id, device=generated.device).flatten()
    is_eos = torch.isin(generated, eos)                                      # (B, n)
    n = generated.shape[1]
    steps = torch.arange(n, device=generated.device)                         # (n,)
    first = torch.where(is_eos, steps, n).min(dim=-1).values                 # (B,)
    j = torch.arange(trailing.shape[1], device=generated.device)[None]       # (1, n - 1)
    after = (j > first[:, None])[..., None]                                  # (B, n - 1, 1)
    at = (j == first[:, None])[..., None]
    trailing = torch.where(after, tts_pad.to(trailing.dtype), trailing)
    return torch.where(at, tts_eos.to(trailing.dtype), trailing)


def talker_position_ids(prompt: TalkerPrompt, cfg: TalkerConfig, image_grid_thw=None,
                        video_grid_thw=None, audio_feature_lengths=None,
                        video_second_per_grid=None) -> torch.Tensor:
    """TM-RoPE positions (3, B, L) of the Talker prompt, from its ids and the Talker config's ids.

    As in HF: without media inputs, the count of real tokens (0 at padding); with audio lengths
    only, the same with 1 at padding (HF's get_rope_index text branch); with image / video grids,
    the full multimodal layout of the user turns (rope.multimodal_position_ids, which reads the
    Talker config as it reads the Thinker's). HF's Talker never receives use_audio_in_video."""
    grids = [g for g in (image_grid_thw, video_grid_thw) if g is not None and g.numel() > 0]
    if audio_feature_lengths is None and not grids:
        return text_position_ids(prompt.attention_mask, pad_value=PAD_POSITION)
    is_audio = (prompt.input_ids == cfg.audio_start_token_id) & prompt.attention_mask.bool()
    if grids and is_audio.any():
        raise NotImplementedError(
            "speech for a user turn with audio next to an image or video is not supported: "
            "transformers' Talker (5.23 and 5.24) fails on it as well (its get_rope_index reads "
            "audio_config, which the Talker config lacks), so there is no reference to match. Use "
            "return_audio=False, or send the audio and the visual input in separate requests.")
    positions, _ = multimodal_position_ids(prompt.input_ids, prompt.attention_mask, cfg,
                                           image_grid_thw, video_grid_thw, audio_feature_lengths,
                                           video_second_per_grid)
    return positions


# ---- decoding ----------------------------------------------------------------------------------

@dataclass
class TalkerGeneration:
    sequences: torch.Tensor        # (B, n) codebook-0 ids chosen, codec eos / padding included
    codes: torch.Tensor            # (B, N, frames): every frame fed back, frames = n - 1 or fewer
    logits: list | None = None     # per step, raw codebook-0 logits (B, vocab), when asked for
    residual_logits: list | None = None   # per frame, the MTP's per-head logits, when asked for


@dataclass
class TalkerStep:
    """One step of the Talker's loop, as `talker_steps` yields it."""
    step: int
    code0: torch.Tensor            # (B,) the codebook-0 id chosen
    sequences: torch.Tensor        # (B, step + 1) every codebook-0 id so far
    codes: torch.Tensor | None     # (B, N) the frame the MTP completed; None on the last step
    logits: torch.Tensor | None    # (B, vocab) raw codebook-0 logits, when asked for
    residual_logits: list | None   # the MTP's per-head logits of this frame, when asked for
    done: bool                     # the last step: every row ended, or max_new_tokens reached


@torch.no_grad()
def talker_generate(talker: Talker, prompt: TalkerPrompt, position_ids: torch.Tensor,
                    max_new_tokens: int, opts: SamplingOptions, eos_token_id=None,
                    suppress_tokens=None, pad_token_id=None,
                    generator: torch.Generator | None = None,
                    output_logits: bool = False) -> TalkerGeneration:
    """The Talker's decoding loop run to the end (HF: GenerationMixin._sample with the Talker's own
    preparation): codebook-0 ids (B, n) and the codes (B, N, frames) of every completed frame. The
    loop itself is `talker_steps` (stream.py runs it a step at a time)."""
    B, device = prompt.inputs_embeds.shape[0], prompt.inputs_embeds.device
    sequences = torch.zeros(B, 0, dtype=torch.long, device=device)
    frames, logits_kept, residual_kept = [], [], []
    for s in talker_steps(talker, prompt, position_ids, max_new_tokens, opts, eos_token_id,
                          suppress_tokens, pad_token_id, generator, output_logits):
        sequences = s.sequences
        logits_kept.append(s.logits)
        if s.codes is not None:
            frames.append(s.codes)                                               # (B, N)
            residual_kept.append(s.residual_logits)
    n_groups = talker.config.num_code_groups
    if frames:
        codes = torch.stack(frames, dim=-1)                                      # (B, N, frames)
    else:
        codes = torch.zeros(B, n_groups, 0, dtype=torch.long, device=device)
    return TalkerGeneration(sequences, codes, logits_kept if output_logits else None,
                            residual_kept if output_logits else None)


@torch.no_grad()
def talker_steps(talker: Talker, prompt: TalkerPrompt, position_ids: torch.Tensor,
                 max_new_tokens: int, opts: SamplingOptions, eos_token_id=None,
                 suppress_tokens=None, pad_token_id=None,
                 generator: torch.Generator | None = None, output_logits: bool = False):
    """The Talker's decoding loop, one step at a time: a generator of TalkerStep.

    Each step: the last position's logits, suppressed ids set to -inf, then sampling.py's
    processors (repetition penalty over the codes chosen so far only: HF's Talker gets no
    input_ids; a row with p left pads leaves its first p codes out, as HF) choose code 0. Unless
    that was the last step or every row has stopped, the MTP fills the frame and the next input
    is built (Talker.next_input) from it and the next trailing text vector (prompt.text_at:
    tts_pad once they are used up). The code predictor samples exactly
    when the Talker does (code_predictor.residual_sampling)."""
    B = prompt.inputs_embeds.shape[0]
    vocab = talker.config.text_config.vocab_size
    device = prompt.inputs_embeds.device
    blocked = torch.zeros(vocab, dtype=torch.bool, device=device)
    if suppress_tokens:
        blocked[torch.as_tensor(suppress_tokens, device=device)] = True
    residual_opts = residual_sampling(opts.do_sample)
    stop = StopState(B, eos_token_id, pad_token_id, device)
    cache, mask, positions = KVCache(), prompt.attention_mask, position_ids
    x = prompt.inputs_embeds
    sequences = torch.zeros(B, 0, dtype=torch.long, device=device)
    # HF's penalty skips as many leading ids as the prompt has pads; the Talker's ids are its codes
    # alone, so a padded row's first codes go unpenalised (sampling.py, "Left padding").
    unpenalised = padding_lengths(prompt.attention_mask)                         # (B,)
    for step in range(max_new_tokens):
        out = talker(inputs_embeds=x, attention_mask=mask, position_ids=positions,
                     past_key_values=cache, use_cache=True)
        scores = out.logits[:, -1].float()                                       # (B, vocab)
        raw = scores if output_logits else None
        # HF suppresses just after the repetition penalty; doing it just before is the same, since
        # the penalty maps -inf to -inf and the other scores do not depend on the suppressed ones.
        scores = process_logits(scores.masked_fill(blocked, float("-inf")), sequences, opts,
                                unpenalised)
        code0 = stop.fill_finished(choose_next(scores, opts.do_sample, generator))   # (B,)
        sequences = torch.cat([sequences, code0[:, None]], dim=1)
        if stop.update(code0) or step == max_new_tokens - 1:
            yield TalkerStep(step, code0, sequences, None, raw, None, done=True)
            break
        text = prompt.text_at(step)                                              # (B, 1, H)
        frame, x, res = talker.next_input(out.last_hidden_state[:, -1:], code0[:, None], text,
                                          residual_opts, generator, output_logits)
        yield TalkerStep(step, code0, sequences, frame, raw, res.logits, done=False)
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)                     # (B, past + 1)
        positions = positions[..., -1:] + 1                                      # (3, B, 1)
