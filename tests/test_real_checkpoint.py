"""Optional checks on real weights: run with OMNI_REF_CHECKPOINT=/path/to/Qwen3-Omni-30B-A3B-Instruct.

Nothing here can download the 70 GB checkpoint; these tests run only where someone already has it. The cheap
checks (config, every key and shape) read safetensors headers only; the Code2Wav load reads 0.4 GB."""
import os

import pytest
import torch

import omni_ref

REAL = os.environ.get("OMNI_REF_CHECKPOINT")
pytestmark = pytest.mark.skipif(not REAL, reason="set OMNI_REF_CHECKPOINT to a real Qwen3-Omni checkpoint dir")


def test_every_key_and_shape_matches_the_config():
    plan = omni_ref.verify(REAL)
    n = sum(p.numel() for p in plan.model.parameters())
    if plan.config.thinker_config.text_config == omni_ref.presets.config("real").thinker_config.text_config:
        assert n == 35_259_818_545     # the Instruct model: the published total


def test_code2wav_loads_alone_in_bf16():
    model = omni_ref.load(REAL, dtype=torch.bfloat16, components=("code2wav",))
    assert model.thinker is None and model.talker is None
    assert all(torch.isfinite(p.float()).all() for p in model.code2wav.parameters())
