"""Shared fixtures, each named after what it returns. Everything is made here, offline, from a seed.

    checkpoint directories (written once per test session)
      tiny_dir               our random-weight tiny preset, written by omni_ref
      hf_tiny_dir            a tiny checkpoint written by HF itself (HF's init, save_pretrained)
      hf_test_dir            HF's own tiny test Thinker (omni_ref.hf.HF_TEST_THINKER_CONFIG)
      preset_dir             the cached tiny and demo checkpoints: a test using it runs per preset

    (ours, theirs) model pairs on one checkpoint, loaded fresh for each test module, so that no
    module sees what another did to its models
      tiny_thinker_models    (our Qwen3Omni with the Thinker only, HF's whole model) on tiny_dir
      hf_test_thinker_models the same on hf_test_dir
      tiny_models            (our Qwen3Omni with every component, HF's whole model) on tiny_dir
      preset_thinker_models  (our Qwen3Omni with the Thinker only, HF's whole model) on preset_dir

    tiny_processor           our Processor on tiny_dir
    random_prompt            a function making a random left-padded batch (input_ids, attention_mask)

Parity tests are named `test_<what>_equal_hf` (`pytest -k equal_hf` runs them all).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

import omni_ref

torch.manual_seed(0)
torch.use_deterministic_algorithms(True)

PRESETS = ["tiny", "demo"]


# ---- checkpoint directories --------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Our random-weight tiny checkpoint (HF format), written once per test session."""
    return omni_ref.presets.write_checkpoint("tiny", tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def hf_tiny_dir(tmp_path_factory):
    """A tiny checkpoint written by HF itself: HF's own init and HF's save_pretrained, then our
    tokenizer files. Loading this proves we read what HF writes, not only what we write."""
    from omni_ref import hf
    torch.manual_seed(1)
    model = hf.Qwen3OmniMoeForConditionalGeneration(hf.hf_config(omni_ref.presets.config("tiny")))
    # transformers' _init_weights (5.23, 5.24) initialises the Thinker's experts but not the Talker's,
    # which stay torch.empty (whatever was in memory, NaN included); fill them so the fixture is
    # deterministic.
    with torch.no_grad():
        for layer in model.talker.model.layers:
            layer.mlp.experts.gate_up_proj.normal_(0, 0.02)
            layer.mlp.experts.down_proj.normal_(0, 0.02)
    out = tmp_path_factory.mktemp("hf_tiny")
    model.save_pretrained(out)
    omni_ref.presets.copy_tokenizer_files(out)
    return str(out)


@pytest.fixture(scope="session")
def hf_test_dir(tmp_path_factory):
    """HF's own tiny Thinker test configuration (omni_ref.hf.HF_TEST_THINKER_CONFIG, copied value
    for value from transformers' tests), written by HF's save_pretrained."""
    from omni_ref import hf
    return hf.write_hf_test_checkpoint(tmp_path_factory.mktemp("hf_test_thinker"), seed=0)


@pytest.fixture(scope="session", params=PRESETS)
def preset_dir(request):
    """The cached checkpoint of each preset in turn (tiny, then demo)."""
    return omni_ref.presets.cached_checkpoint(request.param)


# ---- (ours, theirs) model pairs ----------------------------------------------------------------

def _thinker_models(path):
    from omni_ref import hf
    return omni_ref.load(path, components=("thinker",)), hf.load_hf(path)


@pytest.fixture(scope="module")
def tiny_thinker_models(tiny_dir):
    """(our Qwen3Omni with the Thinker only, HF's whole model) from tiny_dir."""
    return _thinker_models(tiny_dir)


@pytest.fixture(scope="module")
def hf_test_thinker_models(hf_test_dir):
    """(our Qwen3Omni with the Thinker only, HF's whole model) from HF's test Thinker."""
    return _thinker_models(hf_test_dir)


@pytest.fixture(scope="module")
def preset_thinker_models(preset_dir):
    """(our Qwen3Omni with the Thinker only, HF's whole model) from each preset's checkpoint."""
    return _thinker_models(preset_dir)


@pytest.fixture(scope="module")
def tiny_models(tiny_dir):
    """(our Qwen3Omni with every component, HF's whole model) from tiny_dir."""
    from omni_ref import hf
    return omni_ref.load(tiny_dir), hf.load_hf(tiny_dir)


@pytest.fixture(scope="module")
def tiny_processor(tiny_dir):
    """Our Processor, read from tiny_dir."""
    return omni_ref.Processor.from_pretrained(tiny_dir)


# ---- inputs ------------------------------------------------------------------------------------

def _random_prompt(vocab, seed=0, batch=3, length=10, pads=(0, 4, 1), low=9):
    """Token ids drawn from low..vocab-1 (B, T) and a mask whose row r starts with pads[r] zeros:
    left padding, as a batched chat prompt has. Ids below `low` are kept free for special tokens."""
    ids = torch.randint(low, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    for row, n in enumerate(pads):
        mask[row, :n] = 0
    return ids, mask


@pytest.fixture(scope="session")
def random_prompt():
    """The function random_prompt(vocab, seed=0, batch=3, length=10, pads=(0, 4, 1), low=9) ->
    (input_ids, attention_mask), both (batch, length)."""
    return _random_prompt
