"""MTP code predictor: given the Talker's hidden state and codebook-0 code, predicts residual codes 1..N-1.

Qwen3-Omni report section 2.4 (multi-token prediction). A small dense Qwen3 decoder run autoregressively over
the N-1 residual codebooks of one frame; codebook j has its own input embedding and its own output head.
HF mirror: Qwen3OmniMoeTalkerCodePredictorModelForConditionalGeneration (keys `talker.code_predictor.*`).
"""
from __future__ import annotations

from torch import nn

from .config import CodePredictorConfig
from .layers import RMSNorm, SwiGLU, decoder_layers


class CodePredictorModel(nn.Module):
    def __init__(self, cfg: CodePredictorConfig):
        super().__init__()
        self.layers = decoder_layers(cfg, lambda i: SwiGLU(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # One embedding table per residual codebook 1..N-1 (codebook 0 is embedded by the Talker itself).
        self.codec_embedding = nn.ModuleList(
            nn.Embedding(cfg.vocab_size, cfg.hidden_size) for _ in range(cfg.num_code_groups - 1))


class CodePredictor(nn.Module):
    def __init__(self, cfg: CodePredictorConfig):
        super().__init__()
        self.config = cfg
        self.model = CodePredictorModel(cfg)
        self.lm_head = nn.ModuleList(
            nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False) for _ in range(cfg.num_code_groups - 1))
