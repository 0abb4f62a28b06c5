"""Shared fixtures. Everything a test needs is made here, offline, from a seed."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

import omni_ref

torch.manual_seed(0)
torch.use_deterministic_algorithms(True)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Our random-weight tiny checkpoint (HF format), written once per test session."""
    return omni_ref.presets.write_checkpoint("tiny", tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def hf_tiny_dir(tmp_path_factory):
    """A tiny checkpoint written by HF itself: HF's own init and HF's save_pretrained, then our tokenizer files.
    Loading this proves we read what HF writes, not only what we write."""
    from omni_ref import hf
    torch.manual_seed(1)
    model = hf.Qwen3OmniMoeForConditionalGeneration(hf.hf_config(omni_ref.presets.config("tiny")))
    # transformers 5.23's _init_weights initialises the Thinker's experts but not the Talker's, which stay
    # torch.empty (whatever was in memory, NaN included); fill them so the fixture is deterministic.
    with torch.no_grad():
        for layer in model.talker.model.layers:
            layer.mlp.experts.gate_up_proj.normal_(0, 0.02)
            layer.mlp.experts.down_proj.normal_(0, 0.02)
    out = tmp_path_factory.mktemp("hf_tiny")
    model.save_pretrained(out)
    omni_ref.presets.copy_tokenizer_files(out)
    return str(out)
