"""The Thinker: audio and vision encoders feeding a 48-layer MoE text decoder that writes the answer text.

Qwen3-Omni report section 2.1. HF mirror: Qwen3OmniMoeThinkerForConditionalGeneration, whose checkpoint keys are
`thinker.audio_tower.*`, `thinker.visual.*`, `thinker.model.*` (the text decoder) and `thinker.lm_head.*`.
"""
from __future__ import annotations

from torch import nn

from .audio_encoder import AudioEncoder
from .config import TextConfig, ThinkerConfig
from .layers import RMSNorm, decoder_layers
from .moe import moe_for
from .vision_encoder import VisionEncoder


class TextDecoder(nn.Module):
    """Token embeddings -> N MoE decoder layers -> final RMSNorm (HF Qwen3OmniMoeThinkerTextModel)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = decoder_layers(cfg, lambda i: moe_for(cfg, i))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Thinker(nn.Module):
    def __init__(self, cfg: ThinkerConfig):
        super().__init__()
        self.config = cfg
        self.audio_tower = AudioEncoder(cfg.audio_config)
        self.visual = VisionEncoder(cfg.vision_config)
        self.model = TextDecoder(cfg.text_config)
        self.lm_head = nn.Linear(cfg.text_config.hidden_size, cfg.text_config.vocab_size, bias=False)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("the Thinker forward pass arrives with issues 4 and 5 (decoder, encoders)")
