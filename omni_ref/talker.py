"""The Talker: turns the Thinker's representations into codec codes, one 80 ms frame at a time.

Qwen3-Omni report section 2.4. Text positions enter through `text_projection` (from Thinker token embeddings),
multimodal positions through `hidden_projection` (from Thinker layer `accept_hidden_layer`); an MoE decoder with
a shared expert predicts the codebook-0 code of each frame (`codec_head`) and the MTP module fills in the rest.
HF mirror: Qwen3OmniMoeTalkerForConditionalGeneration (keys `talker.*`).
"""
from __future__ import annotations

from torch import nn

from .code_predictor import CodePredictor
from .config import TalkerConfig, TalkerTextConfig
from .layers import RMSNorm, decoder_layers
from .moe import moe_for


class ResizeMLP(nn.Module):
    """Two-layer MLP from the Thinker's width to the Talker's (HF Qwen3OmniMoeTalkerResizeMLP)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.linear_fc1 = nn.Linear(d_in, d_hidden, bias=True)
        self.linear_fc2 = nn.Linear(d_hidden, d_out, bias=True)


class TalkerDecoder(nn.Module):
    def __init__(self, cfg: TalkerTextConfig):
        super().__init__()
        self.codec_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = decoder_layers(cfg, lambda i: moe_for(cfg, i))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Talker(nn.Module):
    def __init__(self, cfg: TalkerConfig):
        super().__init__()
        self.config = cfg
        t = cfg.text_config
        self.model = TalkerDecoder(t)
        self.text_projection = ResizeMLP(cfg.thinker_hidden_size, t.intermediate_size, t.hidden_size)
        self.hidden_projection = ResizeMLP(cfg.thinker_hidden_size, t.intermediate_size, t.hidden_size)
        self.codec_head = nn.Linear(t.hidden_size, t.vocab_size, bias=False)
        self.code_predictor = CodePredictor(cfg.code_predictor_config)
