"""`make compat V=x.y.z`: omni_ref's parity against another transformers release, one row per stage.

The upgrade path for a maintainer: when transformers x.y.z comes out, this installs it beside the pinned
environment (never into it), checks that the packages already installed satisfy what that release
requires, and runs a compact parity sweep in a fresh Python that imports the candidate first:

    stage            equal  max |diff|  warnings  detail
    processor        yes    0.0e+00     0         10 tensors, ids and masks equal
    audio encoder    yes    1.2e-07     0         (29, 32) audio tokens
    ...

"equal" means the stage's integer outputs (token ids, codec codes, masks, grids) are identical and its float
outputs lie within 1e-5 of HF's (the project's parity bar); "warnings" counts the deprecation warnings
(DeprecationWarning, FutureWarning) the stage's HF calls raised: a rename such as 5.24's `past_key_values` ->
`cache` shows here first. Then, with --tests, the register of HF's oddities (tests/test_hf_oddities.py) and the
parity tests (`pytest -k equal_hf`) run under the candidate too. Steps:

    1. pip install --no-deps --target .compat/transformers-x.y.z transformers==x.y.z   (kept for the next run)
    2. its Requires-Dist (its dist-info METADATA) against the installed versions: a clear message if not met
    3. python -m omni_ref.tools.compat --sweep, with PYTHONPATH=.compat/transformers-x.y.z:<repo>, prints JSON
    4. the table; exit status 0 when every stage is equal

Why a sweep of its own rather than the test suite: the suite takes minutes on two cores and answers "which
test failed"; the table answers "which stage differs, and by how much" in about a minute, which is the
question an upgrade asks first. The sweep reuses what the tests use (the tiny preset, `omni_ref.hf`'s loaders
and `hf_speech`), so a stage here and its parity test compare the same things.

This module never imports transformers itself (only `omni_ref.hf` does, inside the sweep's own process).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import pathlib
import re
import subprocess
import sys
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPAT_DIR = ROOT / ".compat"
ATOL = 1e-5
STAGES = ("processor", "audio encoder", "vision encoder", "thinker", "thinker greedy tokens", "talker",
          "code predictor", "code2wav", "code2wav chunked", "generate/speech")


# ---- 1 and 2: the candidate beside the pinned environment, and its requirements ---------------------------

def target_dir(version: str) -> pathlib.Path:
    return COMPAT_DIR / f"transformers-{version}"


def install(version: str, python: str = sys.executable) -> pathlib.Path:
    """transformers==version into .compat/transformers-<version> (no dependencies: those of the pinned
    environment are used, after `unmet_requirements` has checked them). An existing folder is reused."""
    if not re.fullmatch(r"\d+(\.\d+)*([a-z]+\d*)?(\.dev\d+)?", version):
        raise SystemExit(f"V={version!r} is not a release number; use e.g. make compat V=5.24.0")
    target = target_dir(version)
    if (target / f"transformers-{version}.dist-info").is_dir():
        print(f"using transformers {version} already in {target.relative_to(ROOT)}")
        return target
    print(f"installing transformers {version} into {target.relative_to(ROOT)} (no dependencies) ...")
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-deps", "--target", str(target), f"transformers=={version}"])
    if done.returncode != 0:
        raise SystemExit(f"pip could not install transformers=={version} (see above): is the version "
                         "published, and is the package index reachable?")
    return target


def requirements(target: pathlib.Path, version: str) -> list[str]:
    """The unconditional Requires-Dist lines of the installed candidate (extras and markers left out)."""
    meta = target / f"transformers-{version}.dist-info" / "METADATA"
    if not meta.is_file():
        raise SystemExit(f"{meta} is missing: delete {target} and run again")
    reqs = []
    for line in meta.read_text().splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            if ";" not in req:                      # "; extra == ..." and platform markers: not needed
                reqs.append(req)
    return reqs


def _version_key(v: str) -> tuple:
    """A release number as a comparable tuple ("2025.10.22" -> (2025, 10, 22)); pre-release tails sort low."""
    parts = []
    for piece in v.split("."):
        m = re.match(r"(\d+)(.*)", piece)
        parts.append((int(m[1]), m[2] == "") if m else (0, False))
    return tuple(parts)


def satisfies(have: str, spec: str) -> bool:
    """Whether version `have` meets a specifier such as ">=1.31.0,<3.0" (the operators pip metadata uses)."""
    ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
           "<": lambda a, b: a < b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = re.fullmatch(r"(>=|<=|==|!=|~=|>|<)\s*([\w.*]+)", clause)
        if not m:
            return False
        op, want = m[1], m[2]
        if op == "~=":                                 # compatible release: >= want, same prefix
            prefix = want.split(".")[:-1]
            if _version_key(have) < _version_key(want) or have.split(".")[:len(prefix)] != prefix:
                return False
        elif op == "==" and want.endswith(".*"):
            if not (have + ".").startswith(want[:-1]):
                return False
        elif not ops[op](_version_key(have), _version_key(want)):
            return False
    return True


def unmet_requirements(reqs: list[str], installed=None) -> list[str]:
    """One line per requirement the current environment does not meet; empty when all are met.
    `installed(name) -> version or None` defaults to this environment's packages."""
    def lookup(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None
    installed = installed or lookup
    problems = []
    for req in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(\[[^\]]*\])?\s*\(?([^)]*)\)?", req.strip())
        if not m:
            problems.append(f"{req}: cannot read this requirement")
            continue
        name, spec = m[1], m[3].strip()
        have = installed(name)
        if have is None:
            problems.append(f"{name}: not installed, {spec or 'any version'} wanted")
        elif spec and not satisfies(have, spec):
            problems.append(f"{name} {have} installed, {spec} wanted")
    return problems


# ---- 3: the sweep (runs in the candidate's process) -----------------------------------------------------

def _max_diff(a, b) -> float:
    if a.numel() == 0:
        return 0.0
    return (a.double() - b.double()).abs().max().item()


def _compare(pairs) -> tuple[bool, float, str]:
    """pairs: (name, ours, theirs) tensors -> (equal, max |diff| over the float ones, what differs)."""
    equal, worst, bad = True, 0.0, []
    for name, a, b in pairs:
        if a.shape != b.shape:
            equal = False
            bad.append(f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
            continue
        if a.is_floating_point() or b.is_floating_point():
            d = _max_diff(a, b)
            worst = max(worst, d)
            if not d <= ATOL:
                equal = False
                bad.append(f"{name}: max |diff| {d:.1e}")
        elif not bool((a == b).all()):
            equal = False
            bad.append(f"{name}: {int((a != b).sum())} of {a.numel()} ids differ")
    return equal, worst, "; ".join(bad)


def _stages(ckpt):
    """The stages of the sweep, in pipeline order: name -> function returning (equal, max diff, detail)."""
    import soundfile
    import torch

    import omni_ref
    from omni_ref import hf, presets
    from omni_ref.audio_encoder import pack_padded_features
    from omni_ref.generate import generate_speech
    from omni_ref.layers import KVCache
    from omni_ref.rope import text_position_ids
    from omni_ref.talker import PAD_POSITION

    data = presets.REPO_DIR / "data"
    speech, image = str(data / "speech.wav"), str(data / "image.png")
    wave, _ = soundfile.read(speech, dtype="float32")
    ours, theirs = omni_ref.load(ckpt), hf.load_hf(ckpt)
    ours_p, theirs_p = omni_ref.Processor.from_pretrained(ckpt), hf.load_hf_processor(ckpt)
    im_end = ours.config.im_end_token_id

    def messages(audio):
        return [{"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
                {"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "image", "image": image},
                                             {"type": "text", "text": "What is in this?"}]}]

    inputs = ours_p.apply_chat_template(messages(speech), add_generation_prompt=True, tokenize=True,
                                        return_dict=True)
    g = torch.Generator().manual_seed(0)
    talker_text = ours.config.talker_config.text_config

    def processor():
        with hf.quiet():
            b = theirs_p.apply_chat_template(messages(wave), add_generation_prompt=True, tokenize=True,
                                             return_dict=True, return_tensors="pt")
        if list(inputs) != list(b):
            return False, None, f"keys differ: {list(inputs)} vs {list(b)}"
        equal, worst, bad = _compare([(k, inputs[k], b[k]) for k in inputs])
        return equal, worst, bad or f"{len(inputs)} tensors; ids, masks and grids equal"

    def audio_encoder():
        feats, mask = inputs["input_features"], inputs["feature_attention_mask"]
        with torch.no_grad(), hf.quiet():
            want = theirs.thinker.get_audio_features(feats, feature_attention_mask=mask).last_hidden_state
        with torch.no_grad():
            got = ours.thinker.audio_tower(*pack_padded_features(feats, mask))
        equal, worst, bad = _compare([("audio tokens", got, want)])
        return equal, worst, bad or f"{tuple(got.shape)} audio tokens"

    def vision_encoder():
        px, grid = inputs["pixel_values"], inputs["image_grid_thw"]
        with torch.no_grad(), hf.quiet():
            want = theirs.thinker.model.visual(px, grid_thw=grid)
        with torch.no_grad():
            got = ours.thinker.visual(px, grid)
        pairs = [("merged tokens", got.tokens, want.pooler_output)]
        pairs += [(f"deepstack {i}", a, b) for i, (a, b) in enumerate(zip(got.deepstack, want.deepstack_features))]
        equal, worst, bad = _compare(pairs)
        return equal, worst, bad or f"{tuple(got.tokens.shape)} image tokens, {len(got.deepstack)} deepstack"

    def thinker():
        with torch.no_grad(), hf.quiet():
            want = theirs.thinker(**inputs, output_hidden_states=True)
        with torch.no_grad():
            got = ours.thinker(**inputs, output_hidden_states=True)
        pairs = [(f"hidden {i}", a, b) for i, (a, b) in enumerate(zip(got.hidden_states, want.hidden_states))]
        equal, worst, bad = _compare(pairs + [("logits", got.logits, want.logits)])
        return equal, worst, bad or f"logits {tuple(got.logits.shape)}, every hidden state"

    def thinker_tokens():
        kw = dict(return_audio=False, thinker_max_new_tokens=8, thinker_do_sample=False,
                  thinker_eos_token_id=im_end)
        with torch.no_grad(), hf.quiet():
            want = theirs.generate(**inputs, **kw)
        got = ours.generate(**inputs, **kw)
        equal, _, bad = _compare([("token ids", got, want)])
        return equal, None, bad or f"{got.shape[1] - inputs['input_ids'].shape[1]} greedy tokens equal"

    def talker():
        x = torch.randn(2, 8, talker_text.hidden_size, generator=g) * 0.5
        mask = torch.ones(2, 8, dtype=torch.long)
        mask[1, :3] = 0
        pos = text_position_ids(mask, pad_value=PAD_POSITION)
        step = torch.randn(2, 1, talker_text.hidden_size, generator=g) * 0.5
        cache, hf_cache = KVCache(), hf.new_cache(theirs.talker.config.text_config)
        with torch.no_grad(), hf.quiet():
            w0 = theirs.talker(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=True,
                               **hf.cache_kwargs(hf_cache)).logits
            mask2 = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
            w1 = theirs.talker(inputs_embeds=step, attention_mask=mask2, position_ids=pos[..., -1:] + 1,
                               use_cache=True, generation_step=0, **hf.cache_kwargs(hf_cache)).logits
        with torch.no_grad():
            g0 = ours.talker(inputs_embeds=x, attention_mask=mask, position_ids=pos, past_key_values=cache).logits
            g1 = ours.talker(inputs_embeds=step, attention_mask=mask2, position_ids=pos[..., -1:] + 1,
                             past_key_values=cache).logits
        equal, worst, bad = _compare([("prefill logits", g0, w0), ("cached step logits", g1, w1)])
        return equal, worst, bad or "prefill of a left-padded batch + one cached step"

    def code_predictor():
        ours_mtp, theirs_mtp = ours.talker.code_predictor, theirs.talker.code_predictor
        x = torch.randn(2, 2, ours_mtp.config.hidden_size, generator=g) * 0.5
        cache, hf_cache = KVCache(), hf.new_cache(theirs_mtp.config)
        pairs = []
        with torch.no_grad(), hf.quiet():
            got, _ = ours_mtp(0, inputs_embeds=x, past_key_values=cache)
            want = theirs_mtp(inputs_embeds=x, use_cache=True, **hf.cache_kwargs(hf_cache)).logits
            pairs.append(("head 0", got, want))
            for step in range(1, ours_mtp.config.num_code_groups - 1):
                code = got[:, -1].argmax(-1, keepdim=True)
                got, _ = ours_mtp(step, codes=code, past_key_values=cache)
                want = theirs_mtp(input_ids=code, generation_steps=step, use_cache=True,
                                  **hf.cache_kwargs(hf_cache)).logits
                pairs.append((f"head {step}", got, want))
        equal, worst, bad = _compare(pairs)
        return equal, worst, bad or f"logits of {len(pairs)} residual heads, cached"

    c2w = ours.config.code2wav_config
    codes = torch.randint(0, c2w.codebook_size, (1, c2w.num_quantizers, 7), generator=g)

    def code2wav():
        with torch.no_grad(), hf.quiet():
            want = theirs.code2wav(codes)
        with torch.no_grad():
            got = ours.code2wav(codes)
        equal, worst, bad = _compare([("waveform", got, want)])
        return equal, worst, bad or f"{codes.shape[-1]} frames -> {got.shape[-1]} samples"

    def code2wav_chunked():
        with torch.no_grad(), hf.quiet():
            want = theirs.code2wav.chunked_decode(codes, chunk_size=3, left_context_size=2)
        with torch.no_grad():
            got = ours.code2wav.chunked_decode(codes, chunk_size=3, left_context_size=2)
        equal, worst, bad = _compare([("waveform", got, want)])
        return equal, worst, bad or f"3 chunks -> {got.shape[-1]} samples"

    # Speech from a prompt with an image (TM-RoPE positions for the Talker too); not with audio as well: HF's
    # Talker crashes on audio next to an image (docs/hf_oddities.md, "Talker crash on audio with vision").
    speech_inputs = ours_p.apply_chat_template(messages(None)[:1] + [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Say hi."}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True)

    def speech():
        kw = dict(thinker_max_new_tokens=6, thinker_do_sample=False, talker_max_new_tokens=10,
                  talker_do_sample=False, thinker_eos_token_id=im_end)
        want = hf.hf_speech(theirs, **speech_inputs, **kw)
        got = generate_speech(ours, **speech_inputs, **kw)
        pairs = [("text ids", got.text_ids, want["text_ids"]),
                 ("talker prompt", got.prompt.inputs_embeds, want["talker_kwargs"]["inputs_embeds"]),
                 ("codebook-0 ids", got.talker.sequences, want["talker_result"].sequences),
                 ("codec codes", got.talker.codes, want["codes"]), ("waveform", got.wav, want["wav"])]
        equal, worst, bad = _compare(pairs)
        return equal, worst, bad or (f"greedy speech: {got.talker.codes.shape[-1]} frames, "
                                     f"{got.wav.shape[-1]} samples")

    return dict(zip(STAGES, (processor, audio_encoder, vision_encoder, thinker, thinker_tokens, talker,
                             code_predictor, code2wav, code2wav_chunked, speech)))


def _deprecations(caught) -> list:
    return [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]


def _describe(w) -> str:
    where = pathlib.Path(w.filename)
    where = "/".join(where.parts[-3:]) if len(where.parts) > 3 else str(where)
    return f"{w.category.__name__}: {str(w.message).splitlines()[0][:140]} ({where}:{w.lineno})"


def sweep(ckpt=None) -> dict:
    """Run every stage (one failing stage does not stop the others) -> {"transformers", "rows",
    "warnings": the distinct deprecation warnings seen, loading included}."""
    import torch

    from omni_ref import hf, presets
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    ckpt = ckpt or presets.cached_checkpoint("tiny")
    rows = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        stages = _stages(ckpt)
        for name, stage in stages.items():
            start = len(seen)
            try:
                equal, worst, detail = stage()
            except Exception as e:                     # noqa: BLE001 - a broken stage is a row, not a crash
                equal, worst, detail = False, None, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            rows.append({"stage": name, "equal": bool(equal), "max_diff": worst,
                         "warnings": len(_deprecations(seen[start:])), "detail": detail})
    messages = list(dict.fromkeys(_describe(w) for w in _deprecations(seen)))
    where = pathlib.Path(hf.transformers.__file__).parent.parent
    where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
    return {"transformers": hf.version(), "location": str(where), "rows": rows, "warnings": messages}


# ---- 4: the table ---------------------------------------------------------------------------------------

def format_table(result: dict) -> str:
    """The sweep's rows as a fixed-width table, a heading naming the release, and a verdict line."""
    rows = result["rows"]
    where = f" from {result['location']}" if result.get("location") else ""
    lines = [f"parity of omni_ref against transformers {result['transformers']}{where}",
             f"(tiny preset, fp32, eager attention; equal = ids identical, floats within {ATOL:g})", "",
             f"{'stage':<22} {'equal':<6} {'max |diff|':<11} {'warnings':<9} detail"]
    for r in rows:
        diff = "-" if r["max_diff"] is None else f"{r['max_diff']:.1e}"
        lines.append(f"{r['stage']:<22} {'yes' if r['equal'] else 'NO':<6} {diff:<11} {r['warnings']:<9} "
                     f"{r['detail']}")
    bad = [r["stage"] for r in rows if not r["equal"]]
    lines.append("")
    lines.append(f"{len(rows) - len(bad)}/{len(rows)} stages equal" + (f"; differ: {', '.join(bad)}" if bad else ""))
    messages = result.get("warnings", [])
    lines.append(f"{len(messages)} distinct deprecation warning(s)" + (":" if messages else ""))
    lines += [f"  {m}" for m in messages]
    return "\n".join(lines)


def run_sweep(target: pathlib.Path, python: str = sys.executable) -> dict:
    """The sweep in a fresh interpreter that finds the candidate transformers first, then this checkout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run([python, "-m", "omni_ref.tools.compat", "--sweep"], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    out = done.stdout.strip().splitlines()
    if done.returncode != 0 or not out:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit("the sweep did not run to its end under the candidate (its error is above)")
    return json.loads(out[-1])


def run_tests(target: pathlib.Path, python: str = sys.executable) -> int:
    """The register of HF's oddities and the parity tests under the candidate; pytest's exit status."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]), OMP_NUM_THREADS="1")
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "-k",
               "equal_hf or test_hf_oddities"]
    print("$ " + " ".join(command[2:]))
    return subprocess.run(command, env=env, cwd=ROOT).returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omni_ref.tools.compat", description=__doc__.split("\n")[0])
    parser.add_argument("version", nargs="?", help="the transformers release to try, e.g. 5.24.0")
    parser.add_argument("--tests", action="store_true",
                        help="also run tests/test_hf_oddities.py and the *_equal_hf tests under it")
    parser.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)   # the child's entry point
    args = parser.parse_args(argv)
    if args.sweep:
        print(json.dumps(sweep()))
        return 0
    if not args.version:
        parser.error("name the release: make compat V=5.24.0")
    target = install(args.version)
    problems = unmet_requirements(requirements(target, args.version))
    if problems:
        print(f"transformers {args.version} needs packages this environment does not have:")
        for p in problems:
            print(f"  {p}")
        print("Install the missing versions beside it (pip install --target "
              f"{target.relative_to(ROOT)} 'name==version'), or raise the pins in pyproject.toml first.")
        return 2
    result = run_sweep(target)
    print(format_table(result))
    status = 0 if all(r["equal"] for r in result["rows"]) else 1
    if args.tests:
        status = run_tests(target) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
