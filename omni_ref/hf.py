"""The Hugging Face twin: the only omni_ref module that imports transformers.

Parity in this project means: the same checkpoint directory loaded by HF (fp32, eager attention) and by
omni_ref gives equal tokens and codes and tensors within 1e-5. This module loads the HF side and offers the
helpers that tests and notebooks share to compare the two.
"""
from __future__ import annotations

import os
import tempfile

import torch
from safetensors import safe_open
from transformers import (Qwen3OmniMoeConfig, Qwen3OmniMoeForConditionalGeneration,
                          Qwen3OmniMoeProcessor)
from transformers.utils import logging as hf_logging

from .checkpoint import _weight_map
from .config import OmniConfig

# HF warns that it does not know the multimodal rotary keys (mrope_section, interleaved) of a default rope; they
# are read by the Qwen3-Omni code itself, so the warning is noise for our purposes.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def hf_config(config: OmniConfig) -> Qwen3OmniMoeConfig:
    """Our config -> HF's, through the same config.json dictionary both sides read."""
    return Qwen3OmniMoeConfig(**config.to_hf_dict())


def load_hf(checkpoint_dir, dtype: torch.dtype = torch.float32) -> Qwen3OmniMoeForConditionalGeneration:
    """HF's model for `checkpoint_dir`, eager attention, refusing any missing or unexpected weight: a model
    with a randomly initialised tensor would make every parity check meaningless."""
    model, info = Qwen3OmniMoeForConditionalGeneration.from_pretrained(
        os.fspath(checkpoint_dir), dtype=dtype, attn_implementation="eager", output_loading_info=True)
    problems = {k: sorted(v) for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys",
                                                                      "mismatched_keys", "error_msgs")}
    if problems:
        raise RuntimeError(f"HF could not load {checkpoint_dir} cleanly: {problems}")
    return model.eval()


def load_hf_processor(checkpoint_dir) -> Qwen3OmniMoeProcessor:
    return Qwen3OmniMoeProcessor.from_pretrained(os.fspath(checkpoint_dir))


def checkpoint_tensors(checkpoint_dir) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory by its file key (single file or shards)."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    out = {}
    weight_map = _weight_map(checkpoint_dir)
    for fname in sorted(set(weight_map.values())):
        with safe_open(os.path.join(checkpoint_dir, fname), "pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def hf_checkpoint_tensors(model: Qwen3OmniMoeForConditionalGeneration) -> dict[str, torch.Tensor]:
    """What HF's model would write as a checkpoint (its own save_pretrained, so HF's key conversion is used)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return checkpoint_tensors(tmp)


def compare_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Differences between two {key: tensor} dicts, one line each; empty when they are identical."""
    diffs = [f"only in first: {k}" for k in sorted(set(a) - set(b))]
    diffs += [f"only in second: {k}" for k in sorted(set(b) - set(a))]
    for k in sorted(set(a) & set(b)):
        if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype:
            diffs.append(f"{k}: {tuple(a[k].shape)} {a[k].dtype} vs {tuple(b[k].shape)} {b[k].dtype}")
        elif not torch.equal(a[k], b[k]):
            diffs.append(f"{k}: max |diff| {(a[k].double() - b[k].double()).abs().max().item():.3g}")
    return diffs
