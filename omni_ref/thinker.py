"""The Thinker: audio and vision encoders feeding the 48-layer MoE text decoder that answers.

Qwen3-Omni report section 2.1. HF mirror: Qwen3OmniMoeThinkerForConditionalGeneration, whose
checkpoint keys are `thinker.audio_tower.*`, `thinker.visual.*`, `thinker.model.*` (the text
decoder) and `thinker.lm_head.*`.

One forward pass:

    token embeddings (B, T, H), with the encoders' outputs written over the placeholder positions:
        audio   AuT(log-mel)             -> one vector per <|audio_pad|>
        image   vision(patches)          -> one vector per <|image_pad|>, plus deepstack features
        video   vision(frame patches)    -> one vector per <|video_pad|>, plus deepstack features
    TM-RoPE position ids (rope.multimodal_position_ids) for the whole prompt
    N pre-norm layers (GQA attention with QK-norm, sparse MoE); after layer i < 3 the i-th
    deepstack feature is added at the visual positions
    -> RMSNorm -> lm_head -> logits (B, T, vocab)

Placeholder ids in `input_ids` without media inputs are embedded like any other token, as HF does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .audio_encoder import AudioEncoder, pack_padded_features
from .config import TextConfig, ThinkerConfig
from .layers import KVCache, RMSNorm, causal_mask, decoder_layers
from .moe import RoutingStats, load_balancing_loss, moe_for
from .rope import (MultimodalRotary, arange_position_ids, as_3d_position_ids,
                   multimodal_position_ids, text_position_ids)
from .vision_encoder import VisionEncoder

MEDIA_INPUTS = ("input_features", "pixel_values", "pixel_values_videos", "image_grid_thw",
                "video_grid_thw", "feature_attention_mask", "audio_feature_lengths",
                "video_second_per_grid")


@dataclass
class Embedded:
    """The decoder's input: embeddings with media merged in, and where and what deepstack adds."""
    inputs_embeds: torch.Tensor                     # (B, T, H)
    visual_pos_masks: torch.Tensor | None = None    # (B, T) True at image and video positions
    deepstack: list[torch.Tensor] | None = None     # per deepstack level: (visual positions, H)


@dataclass
class DecoderOutput:
    last_hidden_state: torch.Tensor                 # (B, T, H) after the final norm
    past_key_values: KVCache | None
    hidden_states: tuple[torch.Tensor, ...] | None  # HF layout, see MoEDecoder.forward
    routing: list[RoutingStats | None]              # one entry per layer (None for a dense layer)


@dataclass
class ThinkerOutput:
    """HF's MoeCausalLMOutputWithPast fields we produce, plus per-layer `routing` statistics."""
    logits: torch.Tensor                            # (B, T, vocab)
    past_key_values: KVCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    routing: list[RoutingStats | None] | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None   # HF layout: per MoE layer, (B*T, E)
    aux_loss: torch.Tensor | None = None
    loss: torch.Tensor | None = None


class MoEDecoder(nn.Module):
    """The forward pass the Thinker's text decoder and the Talker's decoder share: TM-RoPE, a
    causal mask, N decoder layers with deepstack additions, a final RMSNorm, HF's hidden-state
    layout.

    A subclass builds `config`, its token table, `layers` and `norm` (TextDecoder here,
    talker.TalkerDecoder); this class holds no parameters of its own."""

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, output_hidden_states: bool = False,
                visual_pos_masks: torch.Tensor | None = None,
                deepstack_visual_embeds: list[torch.Tensor] | None = None) -> DecoderOutput:
        """inputs_embeds (B, T, H); position_ids (3, B, T); attention_mask (B, past + T), 1 = real.

        Deepstack (report section 2.2): visual features from early vision-encoder layers are added
        to the hidden states of visual positions (visual_pos_masks (B, T)) after decoder layers 0,
        1, 2, ...

        hidden_states, as HF returns them: (embeddings, output of layer 0, ..., output of layer
        N-2, final normed output); the last layer's raw output is replaced by its normed version,
        and a layer's entry is its own output, before that layer's deepstack feature is added (the
        Talker reads these)."""
        B, T, _ = inputs_embeds.shape
        past = past_key_values.length if past_key_values is not None else 0
        if attention_mask is not None and attention_mask.shape != (B, past + T):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but must "
                             f"cover the cached and new positions: (batch, past + seq) = "
                             f"{(B, past + T)}")
        # The rotary tables are rebuilt per call (head_dim/2 numbers): a buffer made at
        # construction would be left empty by checkpoint.load's meta-device build.
        dtype = inputs_embeds.dtype
        cos, sin = MultimodalRotary(self.config)(position_ids, dtype)   # (B, T, head_dim) each
        mask = causal_mask(T, past + T, dtype, padding=attention_mask, device=inputs_embeds.device)
        h = inputs_embeds
        hidden, routing = [h], []
        for i, layer in enumerate(self.layers):
            h, stats = layer(h, cos, sin, mask, past_key_values, i)
            routing.append(stats)
            hidden.append(h)            # HF records each layer's own output, before deepstack
            if deepstack_visual_embeds is not None and i < len(deepstack_visual_embeds):
                h = h.clone()
                h[visual_pos_masks] = h[visual_pos_masks] + deepstack_visual_embeds[i].to(h.dtype)
        out = self.norm(h)
        hidden[-1] = out
        hidden_states = tuple(hidden) if output_hidden_states else None
        return DecoderOutput(out, past_key_values, hidden_states, routing)


class TextDecoder(MoEDecoder):
    """Token embeddings -> N MoE decoder layers -> final RMSNorm (HF Qwen3OmniMoeThinkerTextModel).
    A layer is sparse or dense as the config's mlp_only_layers / decoder_sparse_step say."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = decoder_layers(cfg, lambda i: moe_for(cfg, i))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Thinker(nn.Module):
    """The Thinker (HF Qwen3OmniMoeThinkerForConditionalGeneration; report section 2.1): the AuT
    audio encoder, the vision encoder and the MoE text decoder, with the head that turns its last
    hidden state into next-token logits.

        audio_tower  AudioEncoder    log-mel -> audio tokens
        visual       VisionEncoder   pixel patches -> image / video tokens + deepstack features
        model        TextDecoder     embeddings (media merged in) -> hidden states
        lm_head      Linear          hidden states -> logits over the text vocabulary

    `embed` merges the media into the token embeddings, `prompt_positions` gives a prompt its
    TM-RoPE positions, and `forward` runs the whole pass (generate.thinker_generate loops it)."""

    def __init__(self, cfg: ThinkerConfig):
        super().__init__()
        self.config = cfg
        self.audio_tower = AudioEncoder(cfg.audio_config)
        self.visual = VisionEncoder(cfg.vision_config)
        self.model = TextDecoder(cfg.text_config)
        self.lm_head = nn.Linear(cfg.text_config.hidden_size, cfg.text_config.vocab_size,
                                 bias=False)

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None,
                past_key_values: KVCache | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                use_cache: bool | None = None, output_router_logits: bool | None = None,
                output_hidden_states: bool = False, use_audio_in_video: bool | None = None,
                return_dict: bool = True, logits_to_keep: int = 0, **media) -> ThinkerOutput:
        """HF's Thinker keywords: input_ids (B, T) or inputs_embeds (B, T, H); attention_mask
        (B, past + T), 1 = real token; media inputs as the processor returns them (MEDIA_INPUTS).

        Without position_ids, a prompt gets its TM-RoPE positions (`prompt_positions`) and a cached
        step plain text positions; past_key_values is a layers.KVCache, filled in place.
        logits_to_keep=n computes the logits of the last n positions only (0: all), as in HF: a
        decoding loop needs just the last one, and a 500-token prompt's other logits would cost
        as much as a layer. return_dict and use_audio_in_video only complete HF's signature: the
        result is always a ThinkerOutput, and the tokens say whether a video carries its
        sound."""
        emb = self.embed(input_ids, inputs_embeds, **media)
        inputs_embeds = emb.inputs_embeds
        B, T, _ = inputs_embeds.shape
        text = self.config.text_config
        use_cache = text.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = KVCache()
        if position_ids is None:
            # Unlike HF's Thinker we keep no `rope_deltas` between calls: a decoding loop passes
            # positions explicitly (generate.py); here a prompt gets its own, later steps count on.
            past = past_key_values.length if past_key_values is not None else 0
            if attention_mask is None:                       # HF: plain 0..T-1 without a mask
                position_ids = arange_position_ids(B, T, past, inputs_embeds.device)
            elif input_ids is not None and past == 0:
                position_ids, _ = self.prompt_positions(input_ids, attention_mask, **media)
            else:
                position_ids = text_position_ids(attention_mask)[..., -T:]
        position_ids = as_3d_position_ids(position_ids)                     # (3, B, T)

        dec = self.model(inputs_embeds, position_ids, attention_mask, past_key_values,
                         output_hidden_states, emb.visual_pos_masks, emb.deepstack)
        logits = self.lm_head(dec.last_hidden_state[:, -logits_to_keep:])   # (B, T or n, vocab)

        if output_router_logits is None:
            output_router_logits = text.output_router_logits
        router_logits = aux_loss = loss = None
        if output_router_logits:
            router_logits = tuple(r.router_logits.reshape(B * T, -1)
                                  for r in dec.routing if r is not None)
            # Only this call's tokens were routed: with a cache, the mask's last T columns.
            mask = attention_mask[:, -T:] if attention_mask is not None else None
            aux_loss = load_balancing_loss(router_logits, text.num_experts,
                                           text.num_experts_per_tok, mask)
        if labels is not None:
            loss = causal_lm_loss(logits, labels)
            if aux_loss is not None:
                loss = loss + text.router_aux_loss_coef * aux_loss
        return ThinkerOutput(logits, past_key_values if use_cache else None, dec.hidden_states,
                             dec.routing, router_logits, aux_loss, loss)

    def prompt_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **media):
        """TM-RoPE positions (3, B, T) of a prompt, and the offsets (B, 1) decoding starts from."""
        audio_lengths = media.get("audio_feature_lengths")
        if media.get("feature_attention_mask") is not None:
            audio_lengths = media["feature_attention_mask"].sum(-1)
        return multimodal_position_ids(input_ids, attention_mask, self.config,
                                       media.get("image_grid_thw"), media.get("video_grid_thw"),
                                       audio_lengths, media.get("video_second_per_grid"))

    def embed(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None = None,
              input_features=None, feature_attention_mask=None, audio_feature_lengths=None,
              pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
              video_grid_thw=None, video_second_per_grid=None, **unknown) -> Embedded:
        """Token embeddings with every media placeholder replaced by its encoder output (HF: the
        first half of Qwen3OmniMoeThinkerModel.forward). Placeholders are found by their ids in
        input_ids."""
        if unknown:
            raise TypeError(f"Thinker.forward got unexpected keyword(s) {sorted(unknown)}; media "
                            f"inputs are {', '.join(MEDIA_INPUTS)}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (batch, seq) or inputs_embeds "
                             "(batch, seq, hidden)")
        has_media = any(x is not None for x in (input_features, pixel_values, pixel_values_videos))
        if inputs_embeds is not None:
            if has_media:
                raise ValueError("media inputs need input_ids: the placeholder ids say where the "
                                 "features go")
            return Embedded(inputs_embeds)
        vocab = self.config.text_config.vocab_size
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        bad = (input_ids < 0) | (input_ids >= vocab)
        if bad.any():
            raise ValueError(f"input_ids contain {int(input_ids[bad][0])}, outside the vocabulary "
                             f"0..{vocab - 1} of this checkpoint")
        embeds = self.model.embed_tokens(input_ids)                         # (B, T, H)
        cfg = self.config

        if input_features is not None:
            if feature_attention_mask is not None:   # the processor's (audios, mel, frames) layout
                features, lengths = pack_padded_features(input_features, feature_attention_mask)
            elif audio_feature_lengths is not None:  # already packed: (mel, total frames)
                features, lengths = input_features, audio_feature_lengths
            else:
                raise ValueError("input_features need feature_attention_mask (as the processor "
                                 "returns it) or audio_feature_lengths, to tell where each audio "
                                 "ends")
            audio = self.audio_tower(features, lengths)                     # (audio tokens, H)
            where = input_ids == cfg.audio_token_id
            embeds = _scatter(embeds, where, audio, "audio", "<|audio_pad|>")

        visual = {}                                  # kind -> (positions mask, deepstack features)
        for kind, pixels, grid, token in (
                ("image", pixel_values, image_grid_thw, cfg.image_token_id),
                ("video", pixel_values_videos, video_grid_thw, cfg.video_token_id)):
            if pixels is None:
                continue
            if grid is None:
                raise ValueError(f"{kind} pixels need {kind}_grid_thw, the (t, h, w) patch grid "
                                 f"of each {kind}")
            out = self.visual(pixels, grid)                     # tokens (n, H) + deepstack
            where = input_ids == token
            embeds = _scatter(embeds, where, out.tokens, kind, f"<|{kind}_pad|>")
            visual[kind] = (where, out.deepstack)
        if not visual:
            return Embedded(embeds)

        # Deepstack features follow the visual positions in sequence order; with images and videos
        # in one prompt each level interleaves the two as their placeholders interleave.
        masks = [where for where, _ in visual.values()]
        visual_pos_masks = masks[0] if len(masks) == 1 else masks[0] | masks[1]   # (B, T)
        levels = []
        for level in range(len(cfg.vision_config.deepstack_visual_indexes)):
            joint = embeds.new_zeros(int(visual_pos_masks.sum()), embeds.shape[-1])
            for where, deepstack in visual.values():
                joint[where[visual_pos_masks]] = deepstack[level].to(joint.dtype)
            levels.append(joint)
        return Embedded(embeds, visual_pos_masks, levels)


def _scatter(embeds: torch.Tensor, where: torch.Tensor, features: torch.Tensor, kind: str,
             token: str):
    """Write features (n, H) over the n placeholder positions `where` (B, T), in reading order."""
    n = int(where.sum())
    if n != features.shape[0]:
        raise ValueError(f"the prompt has {n} {token} placeholder(s) but the {kind} encoder made "
                         f"{features.shape[0]} {kind} tokens: build input_ids and the {kind} "
                         f"inputs with the same processor call so the counts agree")
    out = embeds.clone()
    out[where] = features.to(embeds.dtype)
    return out


def token_modalities(input_ids: torch.Tensor, cfg: ThinkerConfig) -> dict[str, torch.Tensor]:
    """Boolean masks (B, T) telling which positions hold audio, image or video placeholder tokens
    (where the encoders' features go) and which are text (everything else, markers such as
    <|vision_start|> included)."""
    audio = input_ids == cfg.audio_token_id
    image = input_ids == cfg.image_token_id
    video = input_ids == cfg.video_token_id
    return {"text": ~(audio | image | video), "audio": audio, "image": image, "video": video}


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor,
                   ignore_index: int = -100) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts labels[t + 1]; labels of -100 are ignored."""
    shifted = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]   # (B, T): each position's target
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), shifted.reshape(-1),
                           ignore_index=ignore_index)
