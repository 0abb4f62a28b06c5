"""Peak host memory while loading a sharded checkpoint: omni_ref.load beside HF's from_pretrained.

    python -m omni_ref.tools.load_memory [--size-gb 1.0] [--no-hf]

The checkpoint: the tiny preset with the Thinker's text decoder widened to the demo preset's
(hidden 256, 64 experts of width 64, top-8) and given as many layers as the size needs (~13 MB
each in fp32), written once by omni_ref.save in HF's layout, in SHARDS shards (4 of ~250 MB at
1 GB), under the preset cache (.cache/ or $OMNI_REF_CACHE).

Each side loads it in fp32 in a fresh Python process, so that neither inherits freed memory from
the other or from the writer. The process first loads the tiny preset once, to pay the one-time
costs outside the figure (lazy imports, allocator pools; reported as first_use_bytes, tiny model
included: on our side mostly torch's Python decompositions, imported when the meta-device build
first initialises an Embedding). Then it loads the big checkpoint and reads every parameter once
(a loader that maps the files lazily has not brought the weights into memory until they are
read; reading them makes both sides hold the whole model). The figure is

    peak_bytes = VmHWM after the load - VmRSS just before it        (/proc/self/status, Linux)

with the high-water mark reset just before the load (writing 5 to /proc/self/clear_refs), so VmHWM
is the kernel's own exact peak of resident memory during the load; mapped file pages count while
they are mapped, like any other resident page. Why not the alternatives: getrusage's ru_maxrss
cannot be reset, so it would report an earlier, higher peak (the warm-up's, the imports'); a
sampling thread can miss a peak that falls between two samples. Where clear_refs is missing (not
Linux), ru_maxrss stands in, which can only overstate the peak.

Measured (1,006,202,604 bytes in 4 shards of 250 MB; 2 shared CPU cores): omni_ref 1.057x (the
model plus at most checkpoint.READ_GROUP values, 64 MB, of mapped shard), HF's from_pretrained
2.31x (2.00x and 2.31x in earlier runs on 5 shards: HF's figure varies from run to run, ours
stayed at 1.06x). One-time costs (first_use_bytes): ours 170 MB, HF's 20 MB.

INTERPRETER_ALLOWANCE, for small checkpoints: besides the weights a load grows the process by the
module tree's Python objects, the safetensors headers, malloc's bookkeeping and the mapped shard
pages (at most READ_GROUP values, or a whole shard if smaller). At 33 MB (shards of 7 MB) that
came to 9 MB; 32 MiB leaves room for other allocators and Python builds, yet a second copy of the
weights (33 MB) would not fit in it. At 1 GB the allowance is not needed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

TARGET = 1.2                        # omni_ref's peak: at most 1.2x the checkpoint's bytes
INTERPRETER_ALLOWANCE = 32 * 2 ** 20
SHARDS = 4                          # 4 shards of ~250 MB at 1 GB

# The child process: a warm-up load, then the measured one; prints JSON on its last line.
_CHILD = r"""
import json, os, resource, sys
side, warm_up, folder = sys.argv[1:4]
import torch, omni_ref
if side == "hf":
    from omni_ref import hf
load = omni_ref.load if side == "omni_ref" else hf.load_hf

def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                      # VmHWM := VmRSS
        return status("VmRSS"), True
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False

def peak(exact):
    return status("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

start, exact = reset_peak()
small = load(warm_up)                             # one-time costs: lazy imports, allocator pools
first_use = status("VmRSS") - start if exact else 0
before, exact = reset_peak()
model = load(folder)
with torch.no_grad():                                                 # read every weight once
    checksum = sum(float(t.float().sum()) for t in model.state_dict().values())
params = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"peak_bytes": peak(exact) - before, "parameter_bytes": params,
                  "exact": exact, "first_use_bytes": first_use}))
"""


def scaled_config(size_gb: float):
    """A demo-like OmniConfig of about `size_gb` GB in fp32 (see the module doc). It keeps at least
    one text layer per deepstack feature (2), so it is never below ~33 MB."""
    from .. import presets
    from ..config import OmniConfig
    tiny, demo = presets.config_dict("tiny"), presets.config_dict("demo")
    thinker = tiny["thinker_config"]
    thinker["text_config"] = dict(demo["thinker_config"]["text_config"])
    width = thinker["text_config"]["hidden_size"]
    # the encoders write into the Thinker's width, the Talker reads from it
    thinker["audio_config"]["output_dim"] = thinker["vision_config"]["out_hidden_size"] = width
    tiny["talker_config"]["thinker_hidden_size"] = width

    def nbytes(layers):
        thinker["text_config"]["num_hidden_layers"] = layers
        model = presets.build_meta(OmniConfig.from_dict(tiny))
        return 4 * sum(p.numel() for p in model.parameters())

    least = len(thinker["vision_config"]["deepstack_visual_indexes"])
    base, per_layer = nbytes(least), nbytes(least + 1) - nbytes(least)
    nbytes(max(least, least + round((size_gb * 1e9 - base) / per_layer)))
    return OmniConfig.from_dict(tiny, where=f"load_memory {size_gb} GB")


def write_checkpoint(size_gb: float, cache_dir=None) -> str:
    """The sharded checkpoint of about `size_gb` GB, written once (atomically), then reused."""
    from .. import presets
    from ..checkpoint import save
    from ..model import Qwen3Omni, init_random_weights
    config = scaled_config(size_gb)
    recipe = json.dumps(config.to_hf_dict(), sort_keys=True, default=str) + f"shards={SHARDS}+1%"
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:10]
    root = Path(cache_dir or os.environ.get("OMNI_REF_CACHE", presets.REPO_DIR / ".cache"))
    out = root / f"load-memory-{size_gb:g}gb-{digest}"
    if (out / "config.json").is_file():
        return os.fspath(out)
    with torch.device("meta"):
        model = Qwen3Omni(config)
    model.to_empty(device="cpu")
    init_random_weights(model, seed=0)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    tmp = root / f".{out.name}.tmp{os.getpid()}"
    # 1 % spare: save() packs whole tensors, so an exact quarter would leave a small fifth shard
    save(model, tmp, max_shard_bytes=int(total / SHARDS * 1.01))
    del model
    try:
        os.replace(tmp, out)
    except OSError:                               # a parallel writer won the race: use its folder
        shutil.rmtree(tmp, ignore_errors=True)
    return os.fspath(out)


def _measure(side: str, warm_up: str, folder: str) -> dict:
    """One side's figures, from a fresh Python process running _CHILD."""
    env = dict(os.environ)
    repo = os.fspath(Path(__file__).resolve().parents[2])      # this omni_ref, not another copy
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    done = subprocess.run([sys.executable, "-c", _CHILD, side, warm_up, folder],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"the {side} load of {folder} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_load_memory(size_gb: float = 1.0, cache_dir=None, hf: bool = True) -> dict:
    """Peak host memory of loading a ~size_gb GB sharded checkpoint, ours and (hf=True) HF's.

    Returns {checkpoint_dir, checkpoint_bytes (the sum of the shard files), shards, target, met
    (ours within target), method, omni_ref: {peak_bytes, ratio (peak / checkpoint bytes),
    parameter_bytes, exact, first_use_bytes}, hf: {the same}}; see the module doc."""
    from .. import presets
    folder = write_checkpoint(size_gb, cache_dir)
    warm_up = presets.cached_checkpoint("tiny", root=cache_dir)
    shards = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    nbytes = sum(os.path.getsize(os.path.join(folder, f)) for f in shards)
    out = {"checkpoint_dir": folder, "checkpoint_bytes": nbytes, "shards": len(shards),
           "target": TARGET,
           "method": "a fresh process per side, a warm-up load of the tiny preset, then VmHWM - "
                     "VmRSS around the load (high-water mark reset first), every weight read"}
    for side in ("omni_ref", "hf") if hf else ("omni_ref",):
        measured = _measure(side, warm_up, folder)
        out[side] = {"peak_bytes": measured["peak_bytes"],
                     "ratio": measured["peak_bytes"] / nbytes,
                     **{k: measured[k] for k in ("parameter_bytes", "exact", "first_use_bytes")}}
    out["met"] = out["omni_ref"]["ratio"] <= TARGET
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--no-hf", action="store_true", help="measure omni_ref only")
    args = parser.parse_args(argv)
    print(json.dumps(measure_load_memory(args.size_gb, hf=not args.no_hf), indent=2))


if __name__ == "__main__":
    main()
