"""The assembled model: Thinker + Talker + Code2Wav, any of which may be left out.

HF mirror: Qwen3OmniMoeForConditionalGeneration. A component that is not loaded is `None`, so a
text-only Thinker costs no Talker or Code2Wav memory (the report's "disable the talker" option).
"""
from __future__ import annotations

import zlib

import torch
from torch import nn

from .code2wav import Code2Wav
from .config import OmniConfig
from .generate import generate as _generate
from .stream import stream as _stream
from .talker import Talker
from .thinker import Thinker

COMPONENTS = ("thinker", "talker", "code2wav")


def check_components(components) -> tuple[str, ...]:
    if isinstance(components, str):
        components = (components,)
    components = tuple(components)
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise ValueError(f"components={components!r}: choose a non-empty subset of {COMPONENTS}")
    return tuple(c for c in COMPONENTS if c in components)   # canonical order


class Qwen3Omni(nn.Module):
    """The whole model (HF Qwen3OmniMoeForConditionalGeneration; report section 2, the
    Thinker-Talker architecture): text, images, video and sound in; text and speech out.

        thinker    Thinker     encoders + MoE text decoder -> the answer's text    (thinker.py)
        talker     Talker      the Thinker's states -> codec codes, 80 ms a frame  (talker.py)
        code2wav   Code2Wav    codec codes -> 24 kHz waveform                      (code2wav.py)

    Build it from a checkpoint with `omni_ref.load(dir, components=...)`; `generate` is HF's
    generate (generate.py), `stream` the same request with speech as it is made (stream.py).
    components default to those the config describes, as HF builds them: the Thinker alone when
    enable_audio_output is false (the Thinking and Captioner checkpoints). The config is checked
    for exactly the components built."""

    def __init__(self, config: OmniConfig, components=None):
        super().__init__()
        self.config = config
        self.components = check_components(
            config.described_components if components is None else components)
        config.validate("OmniConfig", self.components)
        self.thinker = Thinker(config.thinker_config) if "thinker" in self.components else None
        self.talker = Talker(config.talker_config) if "talker" in self.components else None
        self.code2wav = Code2Wav(config.code2wav_config) if "code2wav" in self.components else None

    def generate(self, input_ids=None, **kwargs):
        """HF Qwen3OmniMoeForConditionalGeneration.generate: same options, same meaning."""
        return _generate(self, input_ids, **kwargs)

    def stream(self, **kwargs):
        """Speech while the Thinker is still writing: generate's options (and audio_chunk_frames),
        yielding "text" and "audio" StreamEvents as they are produced (stream.py)."""
        return _stream(self, **kwargs)

    def parameter_table(self) -> list[tuple[str, int]]:
        """(submodule, parameter count) rows, one per top-level part of each loaded component."""
        rows = []
        for comp in self.components:
            for name, child in getattr(self, comp).named_children():
                n = sum(p.numel() for p in child.parameters())
                if n:
                    rows.append((f"{comp}.{name}", n))
        return rows


def init_random_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Fill every parameter from a seeded generator, the same values on every machine.

    Each tensor gets its own generator, seeded from (seed, parameter name), so a value does not
    depend on which other components exist or in which order they are visited. Unlike a training
    init, norm weights, biases, layer scales and Snake parameters are perturbed away from their
    neutral values (1, 0, ...): a parity test with all-ones norms and zero biases could not notice
    a norm or a bias applied wrongly.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            is_norm = p.ndim == 1 and ("norm" in name or ".ln_" in name)
            if leaf in ("alpha", "beta"):                     # SnakeBeta log-parameters
                value = 0.1 * noise
            elif leaf in ("scale", "gamma"):        # layer scale / ConvNeXt gamma: keep them small
                value = p.detach().float().abs().clamp_min(1e-2) * (1 + 0.1 * noise)
            elif is_norm:
                value = 1 + 0.1 * noise if leaf == "weight" else 0.02 * noise
            elif leaf == "bias":
                value = 0.02 * noise
            else:
                value = std * noise
            p.copy_(value.to(p.dtype))
