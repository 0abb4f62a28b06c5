"""Looking inside: the per-layer diff report against HF, parameter bytes and memory measurements.

Per-layer diff report (after rasbt's layer debugger): run the same input through our Thinker and
HF's, collect the hidden state after every decoder layer and every MoE layer's routing, and print
one line per layer:

    [OK]   embeddings          max |diff| 0.0e+00
    [OK]   layer 0             max |diff| 3.7e-09   experts equal for 26/26 tokens
    [DIFF] layer 1             max |diff| 2.1e-02   experts equal for 19/26 tokens
    ...

so "it does not match" becomes "layer 1 differs, starting in its router". Both sides use the
hidden-state layout HF returns (embeddings, each layer's output, with the last layer's output after
the final norm), so no hooks are needed. The HF side of a trace is made by `hf.hf_thinker_trace`
(only hf.py imports transformers); the one-call version is `hf.thinker_layer_report`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch


# ---- traces and the report ----------------------------------------------------------------------

@torch.no_grad()
def thinker_trace(thinker, **inputs) -> dict:
    """Our Thinker's per-layer record for `inputs` (Thinker.forward keywords): hidden_states (N+1
    of (B, T, H)), experts (per layer: (B*T, k) chosen experts, None for a dense layer) and logits
    (B, T, V)."""
    out = thinker(**inputs, output_hidden_states=True, use_cache=False)
    experts = [None if r is None else r.experts.reshape(-1, r.experts.shape[-1])
               for r in out.routing]
    return {"hidden_states": [h.detach() for h in out.hidden_states], "experts": experts,
            "logits": out.logits.detach()}


def layer_diff_report(ours: dict, theirs: dict, atol: float = 1e-5) -> list[str]:
    """One line per stage (embeddings, each layer, logits): OK when max |diff| <= atol and, for an
    MoE layer, every token chose the same experts in the same order."""
    hs_a, hs_b = ours["hidden_states"], theirs["hidden_states"]
    if len(hs_a) != len(hs_b):
        raise ValueError(f"the traces have {len(hs_a)} and {len(hs_b)} hidden states: not the "
                         "same architecture")
    n_layers = len(hs_a) - 1
    lines = []

    def line(name, a, b, experts_ok=True, experts_note=""):
        diff = (a.double() - b.double()).abs().max().item()
        tag = "[OK]  " if diff <= atol and experts_ok else "[DIFF]"
        note = f"   {experts_note}" if experts_note else ""
        lines.append(f"{tag} {name:<22}max |diff| {diff:.1e}{note}")

    line("embeddings", hs_a[0], hs_b[0])
    for i in range(n_layers):
        ea, eb = ours["experts"][i], theirs["experts"][i]
        ok, note = True, ""
        if ea is not None or eb is not None:       # an MoE layer: compare the router's choices too
            if ea is None or eb is None or ea.shape != eb.shape:
                ok, note = False, "experts: only one side routes here"
            else:
                same = (ea == eb).all(dim=-1)          # (tokens,) same k experts in the same order
                ok = bool(same.all())
                note = f"experts equal for {int(same.sum())}/{same.numel()} tokens"
        name = f"layer {i}" + (" + final norm" if i == n_layers - 1 else "")
        line(name, hs_a[i + 1], hs_b[i + 1], ok, note)
    line("logits", ours["logits"], theirs["logits"])
    return lines


def report_ok(lines: list[str]) -> bool:
    return all(ln.startswith("[OK]") for ln in lines)


# ---- memory -------------------------------------------------------------------------------------

def parameter_bytes(module) -> int:
    """Exact bytes held by a module's parameters (0 for None)."""
    return 0 if module is None else sum(p.numel() * p.element_size() for p in module.parameters())


def rss_bytes() -> int:
    """This process's own resident memory (anonymous: tensors, Python objects), in bytes.

    Linux /proc/self/statm: resident minus shared pages, so that checkpoint files the loader maps
    into memory (page cache, given back under pressure) do not count. Elsewhere: the peak RSS from
    getrusage."""
    try:
        with open("/proc/self/statm") as f:
            fields = f.read().split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_load_rss(checkpoint_dir, loads=(("thinker",), None)) -> list[dict]:
    """Load a checkpoint several times in one fresh Python process (components per entry of
    `loads`, None = all) and return, per load, the process's own resident memory just before and
    just after it and the exact parameter bytes. Earlier models stay alive, so each figure is that
    load's own cost. A fresh process matters: in a long-lived one, memory freed earlier is reused
    and a new model can appear to cost nothing; a warm-up load first pays one-time costs (lazy
    library initialisation, allocator pools) outside the measurement."""
    script = ("import json, sys; import omni_ref; from omni_ref.tools import debug; "
              "keep = [omni_ref.load(sys.argv[1], components=['thinker'])]; out = []\n"
              "for comps in json.loads(sys.argv[2]):\n"
              "    before = debug.rss_bytes()\n"
              "    keep.append(omni_ref.load(sys.argv[1], components=comps))\n"
              "    out.append({'components': comps, 'before': before, "
              "'after': debug.rss_bytes(),\n"
              "                'parameters': debug.parameter_bytes(keep[-1])})\n"
              "print(json.dumps(out))")
    command = [sys.executable, "-c", script, os.fspath(checkpoint_dir), json.dumps(list(loads))]
    done = subprocess.run(command,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
