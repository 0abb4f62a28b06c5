"""Checkpoint I/O: we read what HF writes, HF reads what we write, and broken checkpoints are named."""
import json
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import omni_ref
from omni_ref import hf
from omni_ref.checkpoint import CheckpointError


def test_round_trip_hf_to_omni_ref_to_hf(hf_tiny_dir, tmp_path):
    """HF-saved tiny checkpoint -> omni_ref.load -> omni_ref.save -> HF loads it with identical tensors."""
    original = hf.load_hf(hf_tiny_dir)
    ours = omni_ref.load(hf_tiny_dir)
    omni_ref.save(ours, tmp_path)
    omni_ref.presets.copy_tokenizer_files(tmp_path)
    reloaded = hf.load_hf(tmp_path)
    a, b = original.state_dict(), reloaded.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    # and the files themselves: same keys, same bytes
    assert hf.compare_tensors(hf.checkpoint_tensors(hf_tiny_dir), hf.checkpoint_tensors(tmp_path)) == []


def test_experts_are_stacked_in_expert_order(hf_tiny_dir):
    ours = omni_ref.load(hf_tiny_dir)
    files = hf.checkpoint_tensors(hf_tiny_dir)
    experts = ours.thinker.model.layers[1].mlp.experts
    for e in range(experts.num_experts):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            key = f"thinker.model.layers.1.mlp.experts.{e}.{proj}.weight"
            assert torch.equal(getattr(experts, proj)[e], files[key])


def test_hf_loads_our_checkpoint_with_every_tensor(tiny_dir):
    model = hf.load_hf(tiny_dir)   # raises on any missing / unexpected / mismatched key
    assert hf.compare_tensors(hf.hf_checkpoint_tensors(model), hf.checkpoint_tensors(tiny_dir)) == []


def test_write_checkpoint_is_deterministic(tiny_dir, tmp_path):
    again = omni_ref.presets.write_checkpoint("tiny", tmp_path / "again", seed=0)
    other = omni_ref.presets.write_checkpoint("tiny", tmp_path / "other", seed=1)
    for name in os.listdir(tiny_dir):
        with open(os.path.join(tiny_dir, name), "rb") as f1, open(os.path.join(again, name), "rb") as f2:
            assert f1.read() == f2.read(), name
    a, b = hf.checkpoint_tensors(tiny_dir), hf.checkpoint_tensors(other)
    assert not torch.equal(a["thinker.lm_head.weight"], b["thinker.lm_head.weight"])


def test_random_weights_are_not_neutral(tiny_dir):
    """Norm weights and biases are perturbed, so a parity test would notice one applied wrongly."""
    t = hf.checkpoint_tensors(tiny_dir)
    assert not torch.allclose(t["thinker.model.norm.weight"], torch.ones_like(t["thinker.model.norm.weight"]))
    assert t["thinker.audio_tower.proj1.bias"].abs().max() > 0
    assert t["code2wav.decoder.5.alpha"].abs().max() > 0


def test_sharded_round_trip_and_index(tiny_dir, tmp_path):
    model = omni_ref.load(tiny_dir)
    shards = omni_ref.save(model, tmp_path, max_shard_bytes=200_000)
    assert len(shards) > 2
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert not (tmp_path / "model.safetensors").exists()
    again = omni_ref.load(tmp_path)
    a, b = model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    omni_ref.presets.copy_tokenizer_files(tmp_path)
    hf.load_hf(tmp_path)       # HF reads our shards and index too


def _split_by_component(src, dst):
    """Rewrite a checkpoint as three shards, one per component, with an index."""
    os.makedirs(dst, exist_ok=True)
    tensors = hf.checkpoint_tensors(src)
    weight_map = {}
    for comp in ("thinker", "talker", "code2wav"):
        fname = f"{comp}.safetensors"
        save_file({k: v for k, v in tensors.items() if k.startswith(comp + ".")}, os.path.join(dst, fname))
        weight_map.update({k: fname for k in tensors if k.startswith(comp + ".")})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copyfile(os.path.join(src, "config.json"), dst / "config.json")


def test_thinker_only_reads_no_talker_or_code2wav_tensor(tiny_dir, tmp_path, monkeypatch):
    _split_by_component(tiny_dir, tmp_path)
    read = []
    real_safe_open = safe_open

    class Recording:
        def __init__(self, path, framework):
            self.path, self.inner = path, real_safe_open(path, framework)

        def __enter__(self):
            self.f = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.f.keys()

        def get_slice(self, key):
            return self.f.get_slice(key)

        def get_tensor(self, key):
            read.append(key)
            return self.f.get_tensor(key)

    monkeypatch.setattr("omni_ref.checkpoint.safe_open", Recording)
    model = omni_ref.load(tmp_path, components=("thinker",))
    assert model.talker is None and model.code2wav is None
    assert read and all(k.startswith("thinker.") for k in read)
    # Stronger still: with the Talker and Code2Wav shards deleted, the Thinker still loads ...
    os.remove(tmp_path / "talker.safetensors")
    os.remove(tmp_path / "code2wav.safetensors")
    monkeypatch.undo()
    omni_ref.load(tmp_path, components=("thinker",))
    # ... while the default (every component the index names) says which shard is gone.
    with pytest.raises(CheckpointError, match="shard code2wav.safetensors named in model.safetensors.index.json is missing"):
        omni_ref.load(tmp_path)


def test_default_components_are_those_present(tiny_dir, tmp_path):
    tensors = hf.checkpoint_tensors(tiny_dir)
    save_file({k: v for k, v in tensors.items() if k.startswith("thinker.")}, tmp_path / "model.safetensors")
    shutil.copyfile(os.path.join(tiny_dir, "config.json"), tmp_path / "config.json")
    model = omni_ref.load(tmp_path)
    assert model.components == ("thinker",)


def _copy_with(tiny_dir, dst, edit):
    os.makedirs(dst, exist_ok=True)
    tensors = load_file(os.path.join(tiny_dir, "model.safetensors"))
    edit(tensors)
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    shutil.copyfile(os.path.join(tiny_dir, "config.json"), os.path.join(dst, "config.json"))
    return dst


def test_missing_key_is_named(tiny_dir, tmp_path):
    d = _copy_with(tiny_dir, tmp_path, lambda t: t.pop("talker.model.layers.1.mlp.experts.3.up_proj.weight"))
    with pytest.raises(CheckpointError) as err:
        omni_ref.load(d)
    assert "missing 1 key(s): talker.model.layers.1.mlp.experts.3.up_proj.weight" in str(err.value)
    omni_ref.load(d, components=("thinker", "code2wav"))   # the other components are unaffected


def test_unexpected_key_is_named(tiny_dir, tmp_path):
    d = _copy_with(tiny_dir, tmp_path, lambda t: t.update({"thinker.model.layers.9.mlp.gate.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"unexpected 1 key\(s\): thinker.model.layers.9.mlp.gate.weight"):
        omni_ref.load(d)


def test_wrong_shape_is_named(tiny_dir, tmp_path):
    d = _copy_with(tiny_dir, tmp_path, lambda t: t.update({"code2wav.code_embedding.weight": torch.zeros(3, 32)}))
    with pytest.raises(CheckpointError) as err:
        omni_ref.load(d)
    assert "code2wav.code_embedding.weight (3, 32) (config says (512, 32))" in str(err.value)


def test_missing_weights_file_says_what_to_do(tmp_path):
    omni_ref.presets.config("tiny").save(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
        omni_ref.load(tmp_path)


def test_bad_components_argument(tiny_dir):
    with pytest.raises(ValueError, match="choose a non-empty subset of"):
        omni_ref.load(tiny_dir, components=("thinker", "vocoder"))


def test_dtype_is_applied_and_buffers_are_rebuilt(tiny_dir):
    """bf16 weights, but the fixed audio positions recomputed in fp32, exactly as HF keeps its buffer in a bf16
    load (HF's forward casts it to the activations' dtype, as ours does)."""
    m = omni_ref.load(tiny_dir, dtype=torch.bfloat16, components=("thinker",))
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    from omni_ref.audio_encoder import sinusoid_positions
    cfg = m.config.thinker_config.audio_config
    ours = m.thinker.audio_tower.positional_embedding
    assert ours.dtype == torch.float32 and ours.device.type == "cpu"
    assert torch.equal(ours, sinusoid_positions(cfg.max_source_positions, cfg.d_model))
    hf_tower = hf.load_hf(tiny_dir, dtype=torch.bfloat16).thinker.model.audio_tower
    theirs = hf_tower.positional_embedding.positional_embedding
    assert theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_processor_loads_offline_from_a_written_checkpoint(tiny_dir):
    """write_checkpoint's directory is complete for HF's processor too (tokenizer, template, feature settings)."""
    processor = hf.load_hf_processor(tiny_dir)
    cfg = omni_ref.presets.config("tiny")
    assert processor.tokenizer.convert_tokens_to_ids("<|audio_pad|>") == cfg.thinker_config.audio_token_id
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                         add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_a_shard_is_read_in_groups_of_at_most_read_group_values(tiny_dir, monkeypatch):
    """load reopens a shard every READ_GROUP values, so that only that much of it is mapped at a time (the
    peak-memory bound, measured by omni_ref.tools.load_memory); the tensors are the same either way."""
    from omni_ref import checkpoint
    reference = omni_ref.load(tiny_dir).state_dict()
    plan = checkpoint.verify(tiny_dir)
    monkeypatch.setattr(checkpoint, "READ_GROUP", 20_000)
    groups = checkpoint._read_groups(plan.by_file["model.safetensors"], plan.slots)
    values = [sum(torch.Size(plan.slots[k][2]).numel() for k in g) for g in groups]
    assert all(v <= 20_000 or len(g) == 1 for v, g in zip(values, groups))
    assert [k for g in groups for k in g] == plan.by_file["model.safetensors"] and len(groups) > 10
    opened, real_open = [], checkpoint._open_shard

    def counting(ckpt_dir, fname):
        opened.append(fname)
        return real_open(ckpt_dir, fname)

    monkeypatch.setattr(checkpoint, "_open_shard", counting)
    model = omni_ref.load(tiny_dir)
    # one opening per group, besides verify's look at the keys and headers (3 openings)
    assert len(groups) <= opened.count("model.safetensors") <= len(groups) + 3
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
