"""Reading and writing HF-format Qwen3-Omni checkpoint directories.

A checkpoint directory, as HF `save_pretrained` writes it and as the published model ships:

    config.json                      the OmniConfig tree (config.py)
    model.safetensors                all tensors, or, for big models, shards:
    model-00001-of-00015.safetensors + model.safetensors.index.json
                                     {"weight_map": {key: shard file}}

Key map. Our parameter names are the checkpoint's, with one exception: the checkpoint stores every
MoE expert as its own three matrices, we stack them (moe.py explains why). That is the whole table:

    checkpoint key                                    omni_ref parameter
    <layer>.mlp.experts.<e>.gate_proj.weight  (I, H)  <layer>.mlp.experts.gate_proj[e]   (E, I, H)
    <layer>.mlp.experts.<e>.up_proj.weight    (I, H)  <layer>.mlp.experts.up_proj[e]     (E, I, H)
    <layer>.mlp.experts.<e>.down_proj.weight  (H, I)  <layer>.mlp.experts.down_proj[e]   (E, H, I)
    anything else                                     the same name

HF's in-memory model differs again (thinker.model.audio_tower..., fused gate_up_proj); that is HF's
business, converted by HF when it loads this same layout.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import OmniConfig, read_json_object
from .layers import set_attn_implementation
from .moe import set_experts_implementation
from .model import COMPONENTS, Qwen3Omni, check_components

STACKED_KEY = re.compile(r"^(?P<prefix>.+\.mlp\.experts)\.(?P<proj>gate_proj|up_proj|down_proj)$")
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# safetensors' names of the dtypes a weight may be stored in
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
# Values read per opening of a shard (64 MB in fp32): what a load holds of a shard at a time.
READ_GROUP = 2 ** 24


class CheckpointError(ValueError):
    """A checkpoint that does not fit the config: the message lists the offending keys."""


# ---- the key map --------------------------------------------------------------------------------

def checkpoint_slots(name: str, shape) -> dict[str, tuple[int | None, tuple[int, ...]]]:
    """The checkpoint key(s) filling one of our parameters: key -> (expert index | None, shape)."""
    m = STACKED_KEY.match(name)
    if not m:
        return {name: (None, tuple(shape))}
    return {f"{m['prefix']}.{e}.{m['proj']}.weight": (e, tuple(shape[1:]))
            for e in range(shape[0])}


def to_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> checkpoint tensors (experts unstacked)."""
    out = {}
    for name, t in state.items():
        for key, (e, _) in checkpoint_slots(name, t.shape).items():
            out[key] = (t if e is None else t[e]).contiguous()
    return out


# ---- reading ------------------------------------------------------------------------------------

def _weight_map(ckpt_dir: str) -> dict[str, str]:
    """checkpoint key -> file that holds it, for a single file or a sharded checkpoint."""
    index = os.path.join(ckpt_dir, INDEX_FILE)
    if os.path.isfile(index):
        return _read_index(ckpt_dir, index)
    single = os.path.join(ckpt_dir, SINGLE_FILE)
    if not os.path.isfile(single):
        raise FileNotFoundError(
            f"{ckpt_dir} holds neither {SINGLE_FILE} nor {INDEX_FILE}. Write a checkpoint with "
            f"omni_ref.presets.write_checkpoint('tiny', dir) or HF save_pretrained(dir).")
    with _open_shard(ckpt_dir, SINGLE_FILE) as f:
        return {k: SINGLE_FILE for k in f.keys()}


def _read_index(ckpt_dir: str, index: str) -> dict[str, str]:
    """The index's weight_map, every entry checked: a key and a shard file name inside the
    checkpoint folder."""
    what = '{"weight_map": {key: shard file name}}'
    weight_map = read_json_object(index, CheckpointError, what).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index} has no \"weight_map\" object ({{key: shard file name}}), "
                              f"which says where each tensor is: restore the index from the "
                              f"original checkpoint.")
    for key, shard in weight_map.items():
        _check_shard_name(index, key, shard)
    return weight_map


def _check_shard_name(index: str, key: str, shard) -> None:
    """A shard is named relative to the checkpoint folder and must stay inside it: an index that
    points at "../elsewhere/x.safetensors" or "/abs/path" would otherwise load tensors planted
    outside the checkpoint. (Only the name is checked: a shard that is a symbolic link, as in HF's
    download cache, is the folder's own.)"""
    if not isinstance(shard, str) or not shard.endswith(".safetensors"):
        raise CheckpointError(f"{index}: weight_map[{key!r}] = {shard!r:.80} is not the name of a "
                              f".safetensors shard file in the checkpoint folder.")
    parts = shard.replace("\\", "/").split("/")
    if os.path.isabs(shard) or re.match(r"^[A-Za-z]:", shard) or ".." in parts:
        raise CheckpointError(f"{index}: weight_map[{key!r}] names the shard {shard!r}, which is "
                              f"outside the checkpoint folder; shards must be files inside it "
                              f"(e.g. model-00001-of-00002.safetensors). Refusing to read it: fix "
                              f"or replace the index.")


@contextlib.contextmanager
def _open_shard(ckpt_dir: str, fname: str):
    """safe_open with its errors (a damaged header, a truncated file, a tensor the file lacks) as
    CheckpointError naming the shard."""
    path = os.path.join(ckpt_dir, fname)
    try:
        with safe_open(path, "pt") as f:
            yield f
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{ckpt_dir}: shard {fname} cannot be read: {e}. The file is "
                              f"damaged or incomplete (an interrupted download or copy?) or does "
                              f"not match {INDEX_FILE}: fetch it again from the original "
                              f"checkpoint.") from None


def present_components(ckpt_dir: str) -> tuple[str, ...]:
    """Components that have at least one tensor in the checkpoint."""
    return _components_in(_weight_map(os.fspath(ckpt_dir)))


def _components_in(weight_map: dict[str, str]) -> tuple[str, ...]:
    prefixes = {k.split(".", 1)[0] for k in weight_map}
    return tuple(c for c in COMPONENTS if c in prefixes)


def _absent_message(ckpt_dir: str, config: OmniConfig, components, absent, present) -> str:
    """Why requested components cannot be loaded: the checkpoint has none of their tensors."""
    why = ("config.json says enable_audio_output=false: a Thinker-only checkpoint (HF saves no "
           "Talker and no Code2Wav for it; Qwen3-Omni-30B-A3B-Thinking and -Captioner ship so), "
           "which answers in text only"
           if not config.enable_audio_output else
           "the checkpoint was saved without them")
    return (f"{ckpt_dir} holds no {' or '.join(c + '.*' for c in absent)} tensors, so "
            f"components={tuple(components)} cannot be loaded: {why}. Load "
            f"components={tuple(present)} (what it holds), or leave components out.")


def _describe(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


@dataclass
class LoadPlan:
    """What a load will do, from config.json and the safetensors headers alone (no tensor read)."""

    config: OmniConfig
    model: Qwen3Omni                                      # on the meta device
    # checkpoint key -> (our parameter, expert index, shape)
    slots: dict[str, tuple[str, int | None, tuple]]
    by_file: dict[str, list[str]]                     # file -> the checkpoint keys to read from it


def verify(checkpoint_dir, components=None, dtype: torch.dtype = torch.float32,
           strict_config: bool = True) -> LoadPlan:
    """Check a checkpoint against its config.json without reading any tensor: every expected key
    present, none unexpected, every shape right. Raises CheckpointError listing the offending keys.
    Cheap even for 70 GB."""
    _check_dtype(dtype)
    ckpt_dir = os.fspath(checkpoint_dir)
    weight_map = _weight_map(ckpt_dir)
    present = _components_in(weight_map)
    components = present if components is None else check_components(components)
    # config.json is validated for the components built: a Thinker-only checkpoint carries Talker
    # and Code2Wav configs that describe nothing it holds (config.OmniConfig.validate)
    config = OmniConfig.from_json_file(ckpt_dir, strict=strict_config,
                                       components=[c for c in components if c in present])
    absent = [c for c in components if c not in present]
    if absent:
        raise CheckpointError(_absent_message(ckpt_dir, config, components, absent, present))
    if not components:
        raise CheckpointError(f"{ckpt_dir}: no thinker.*, talker.* or code2wav.* tensors found")

    with torch.device("meta"):           # shapes only: no memory until real tensors arrive
        model = Qwen3Omni(config, components).to(dtype)

    slots = {}
    for name, p in model.named_parameters():
        for key, (e, shape) in checkpoint_slots(name, p.shape).items():
            slots[key] = (name, e, shape)
    wanted_prefixes = tuple(c + "." for c in components)
    in_file = {k for k in weight_map if k.startswith(wanted_prefixes)}
    missing, unexpected = set(slots) - in_file, in_file - set(slots)
    # ... and keys that belong to no component at all
    unexpected |= {k for k in weight_map if k.split(".", 1)[0] not in COMPONENTS}
    if missing or unexpected:
        lines = [f"{ckpt_dir} does not match its config.json for components {components}:"]
        if missing:
            lines.append(f"  missing {len(missing)} key(s): {_describe(missing)}")
        if unexpected:
            lines.append(f"  unexpected {len(unexpected)} key(s): {_describe(unexpected)}")
        lines.append("  Is config.json the one saved with these weights? Was the checkpoint "
                     "truncated?")
        raise CheckpointError("\n".join(lines))

    by_file = defaultdict(list)
    for key in sorted(in_file):
        by_file[weight_map[key]].append(key)
    wrong = []
    for fname, keys in sorted(by_file.items()):
        path = os.path.join(ckpt_dir, fname)
        if not os.path.isfile(path):
            raise CheckpointError(f"{ckpt_dir}: shard {fname} named in {INDEX_FILE} is missing "
                                  f"({len(keys)} of the requested tensors live there)")
        with _open_shard(ckpt_dir, fname) as f:
            for key in keys:
                shape = tuple(f.get_slice(key).get_shape())
                if shape != slots[key][2]:
                    wrong.append(f"{key} {shape} (config says {slots[key][2]})")
                stored = f.get_slice(key).get_dtype()
                if stored not in FLOAT_DTYPES:
                    wrong.append(f"{key} in {fname} stored as {stored} (weights are floating "
                                 f"point: {', '.join(FLOAT_DTYPES)})")
    if wrong:
        raise CheckpointError(f"{ckpt_dir}: {len(wrong)} tensor(s) have the wrong shape or type "
                              "for config.json: "
                              + _describe(wrong))
    return LoadPlan(config, model, slots, dict(by_file))


def load(checkpoint_dir, dtype: torch.dtype = torch.float32, components=None, device=None,
         strict_config: bool = True, attn_implementation: str = "eager",
         experts_implementation: str = "eager") -> Qwen3Omni:
    """Build the model described by `checkpoint_dir/config.json` and fill it from its safetensors.

    attn_implementation ("eager" | "sdpa") and experts_implementation ("eager" | "grouped_mm")
    pick the fast paths, as HF's from_pretrained keywords of those names do (see
    layers.set_attn_implementation, moe.set_experts_implementation); the default, eager, is the
    code the notebooks show.

    components: subset of ("thinker", "talker", "code2wav"); default: every component the
    checkpoint holds. Only the shards and keys of the requested components are read, so a
    Thinker-only load of the real model never touches the Talker's or Code2Wav's bytes.
    dtype: the weights' floating-point type (torch.bfloat16 halves the memory; fixed tables such
    as the audio positions stay fp32, as in HF). device: where the weights go ("cpu" by default,
    "cuda", "cuda:1", a torch.device); they are written there directly, never first assembled on
    the CPU.

    Memory. The module tree is built on the meta device (shapes only, no storage), then each
    parameter gets its storage once, at `dtype` on `device`, and every checkpoint tensor is copied
    into its place. safetensors maps a shard into memory, and the pages read stay resident until
    the file is closed; so a shard is opened afresh for every READ_GROUP values (`_read_groups`),
    and a load holds one model plus at most that much of a shard (64 MB in fp32) in host memory,
    whatever the shard size (a GPU load: only that). Copying into owned storage, rather than
    keeping tensors that map the files, means a loaded model never changes or faults when its
    checkpoint files are rewritten; and stacking experts into preallocated tensors avoids holding
    them twice (60 GB extra for the real Thinker). `python -m omni_ref.tools.load_memory` measures
    the peak.
    """
    device = _check_device(device)
    ckpt_dir = os.fspath(checkpoint_dir)
    plan = verify(ckpt_dir, components, dtype, strict_config)
    set_attn_implementation(plan.model, attn_implementation)     # names checked before any read
    set_experts_implementation(plan.model, experts_implementation)
    model = plan.model
    model.to_empty(device=device)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for fname, keys in plan.by_file.items():
            for group in _read_groups(keys, plan.slots):
                with _open_shard(ckpt_dir, fname) as f:
                    for key in group:
                        name, e, _ = plan.slots[key]
                        target = params[name] if e is None else params[name][e]
                        target.copy_(f.get_tensor(key))      # cast to dtype, moved to device
    _rebuild_buffers(model)
    return model.eval()


def _read_groups(keys: list[str], slots: dict) -> list[list[str]]:
    """`keys` cut into consecutive runs of at most READ_GROUP values (a tensor larger than that
    alone): each run is read with the shard opened once, so that at most one run's file pages are
    mapped and resident at a time."""
    groups, size = [[]], 0
    for key in keys:
        n = math.prod(slots[key][2])
        if groups[-1] and size + n > READ_GROUP:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += n
    return groups


def _check_device(device) -> torch.device:
    """`device` as a torch.device that can hold tensors here, or a ValueError saying why not."""
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a device name ({e}); use 'cpu', 'cuda', "
                         f"'cuda:1' or a torch.device") from None
    if device.type == "meta":
        raise ValueError("device='meta' holds shapes but no values, so there is nothing to load "
                         "into: for shapes and parameter counts use omni_ref.verify(dir) "
                         "(its .model) or omni_ref.presets.build_meta(config)")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"device={str(device)!r} is not usable on this machine ({e}); "
                         f"torch.cuda.is_available() is {torch.cuda.is_available()}: load on "
                         f"'cpu' or on an accelerator that is present") from None
    return device


def _check_dtype(dtype) -> None:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype={dtype!r}: weights need a floating-point torch.dtype such as "
                        f"torch.float32 or torch.bfloat16")


def _rebuild_buffers(model: Qwen3Omni) -> None:
    """Fixed tables (sinusoidal positions) are non-persistent buffers, absent from checkpoints and
    left uninitialised by the meta-device build: each owning module recomputes its own, on the
    device it now lives on."""
    for module in model.modules():
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()


# ---- writing ------------------------------------------------------------------------------------

def save(model: Qwen3Omni, out_dir, max_shard_bytes: int = 2 * 1024 ** 3) -> list[str]:
    """Write config.json and the weights in HF's layout, sharded above `max_shard_bytes`."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    model.config.save(out_dir)
    tensors = to_checkpoint({k: v.detach().cpu() for k, v in model.state_dict().items()})
    shards, current, size = [], {}, 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = tensors[key]
        size += nbytes
    shards.append(current)
    for stale in (SINGLE_FILE, INDEX_FILE):
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))
    if len(shards) == 1:
        save_file(shards[0], os.path.join(out_dir, SINGLE_FILE), metadata={"format": "pt"})
        return [SINGLE_FILE]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        save_file(shard, os.path.join(out_dir, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2,
                  sort_keys=True)
    return names
