"""`make compat V=x.y.z`: omni_ref's parity against another transformers release, stage by stage.

The upgrade path for a maintainer. When transformers x.y.z comes out, this installs it beside the
pinned environment (never into it), checks that the packages already installed meet what that
release requires, and runs a compact parity sweep in a fresh Python that imports the candidate
first, then prints one row per stage:

    stage                  equal  max |diff|  warnings  detail
    processor              yes    0.0e+00     0         6 tensors; ids, masks and grids equal
    audio encoder          yes    0.0e+00     0         (45, 64) audio tokens
    ...

"equal": the stage's integer outputs (token ids, codec codes, masks, grids) are identical and its
float outputs lie within 1e-5 of HF's, the project's parity bar. "warnings": the deprecation
warnings (DeprecationWarning, FutureWarning) raised while the stage ran; a rename such as 5.24's
`past_key_values` -> `cache` shows up there first. With --tests (make compat ... TESTS=1) the
register of HF's oddities (tests/test_hf_oddities.py) and the `*_equal_hf` tests run under the
candidate as well.

    1. pip install --no-deps --target .compat/transformers-x.y.z transformers==x.y.z  (kept)
    2. its Requires-Dist (dist-info METADATA) against the installed versions; a clear message if
       one is not met
    3. python -m omni_ref.tools.compat --sweep with PYTHONPATH=.compat/transformers-x.y.z:<repo>
       prints the rows as JSON
    4. the table; exit status 0 when every stage is equal

Why a sweep of its own and not the test suite: the suite takes minutes on two cores and answers
"which test failed"; the table answers "which stage differs, and by how much" in under a minute,
the first question an upgrade asks. The sweep compares what the parity tests compare (the tiny
preset, `omni_ref.hf`'s loaders, `hf_speech`), so a row and its test agree.

This module never imports transformers itself; only `omni_ref.hf` does, in the sweep's process.
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
STAGES = ("processor", "audio encoder", "vision encoder", "thinker", "thinker greedy tokens",
          "talker", "code predictor", "code2wav", "code2wav chunked", "generate/speech")


# ---- 1 and 2: the candidate beside the pinned environment, and its requirements ----------------

def target_dir(version: str) -> pathlib.Path:
    return COMPAT_DIR / f"transformers-{version}"


def install(version: str, python: str = sys.executable) -> pathlib.Path:
    """transformers==version into .compat/transformers-<version>, without dependencies (the pinned
    environment's are used, once `unmet_requirements` has checked them). A folder that already
    holds that release is reused, so a second run starts at once."""
    if not re.fullmatch(r"\d+(\.\d+)*([a-z]+\d*)?(\.dev\d+)?", version):
        raise SystemExit(f"V={version!r} is not a release number; use e.g. make compat V=5.24.0")
    target = target_dir(version)
    if (target / f"transformers-{version}.dist-info").is_dir():
        print(f"using transformers {version} already in {target.relative_to(ROOT)}")
        return target
    print(f"installing transformers {version} into {target.relative_to(ROOT)} (no dependencies)")
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-deps", "--target", str(target), f"transformers=={version}"])
    if done.returncode != 0:
        raise SystemExit(f"pip could not install transformers=={version} (see above): is that "
                         "release published, and is the package index reachable?")
    return target


def requirements(target: pathlib.Path, version: str) -> list[str]:
    """The installed candidate's unconditional Requires-Dist lines (extras and markers left out)."""
    meta = target / f"transformers-{version}.dist-info" / "METADATA"
    if not meta.is_file():
        raise SystemExit(f"{meta} is missing: delete {target} and run again")
    reqs = []
    for line in meta.read_text().splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            if ";" not in req:                   # "; extra == ..." or a platform marker
                reqs.append(req)
    return reqs


def _version_key(v: str) -> tuple:
    """A release number as a comparable tuple: "2025.10.22" -> ((2025, True), (10, True), ...);
    a piece with a pre-release tail ("0rc1") sorts below the plain number."""
    parts = []
    for piece in v.split("."):
        m = re.match(r"(\d+)(.*)", piece)
        parts.append((int(m[1]), m[2] == "") if m else (0, False))
    return tuple(parts)


def satisfies(have: str, spec: str) -> bool:
    """Whether version `have` meets a specifier such as ">=1.31.0,<3.0" (the operators package
    metadata uses: >= <= > < == != ~= and ==X.*)."""
    ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
           "<": lambda a, b: a < b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = re.fullmatch(r"(>=|<=|==|!=|~=|>|<)\s*([\w.*]+)", clause)
        if not m:
            return False
        op, want = m[1], m[2]
        if op == "~=":                           # compatible release: >= want, same prefix
            prefix = want.split(".")[:-1]
            if (_version_key(have) < _version_key(want)
                    or have.split(".")[:len(prefix)] != prefix):
                return False
        elif op == "==" and want.endswith(".*"):
            if not (have + ".").startswith(want[:-1]):
                return False
        elif not ops[op](_version_key(have), _version_key(want)):
            return False
    return True


def unmet_requirements(reqs: list[str], installed=None) -> list[str]:
    """One line per requirement this environment does not meet (empty when all are met).
    `installed(name) -> version or None` defaults to the packages this Python sees."""
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


# ---- 3: the sweep (runs in the candidate's process) --------------------------------------------

def _compare(pairs) -> tuple[bool, float, str]:
    """pairs of (name, ours, theirs) tensors -> (equal, max |diff| over the float pairs, what
    differs). Integer tensors must be identical, float ones within ATOL."""
    equal, worst, bad = True, 0.0, []
    for name, a, b in pairs:
        if a.shape != b.shape:
            equal = False
            bad.append(f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
        elif a.is_floating_point() or b.is_floating_point():
            d = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
            worst = max(worst, d)
            if not d <= ATOL:                    # NaN fails too
                equal = False
                bad.append(f"{name}: max |diff| {d:.1e}")
        elif not bool((a == b).all()):
            equal = False
            bad.append(f"{name}: {int((a != b).sum())} of {a.numel()} ids differ")
    return equal, worst, "; ".join(bad)


def _stages(ckpt) -> dict:
    """The sweep's stages in pipeline order: name -> function returning (equal, max |diff| or
    None, detail). Models and inputs are made once, here."""
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
    system = {"role": "system",
              "content": [{"type": "text", "text": "You are a helpful assistant."}]}

    def chat(*parts, question="What is in this?"):
        return [system, {"role": "user", "content": [*parts, {"type": "text", "text": question}]}]

    def template(processor, messages, **kw):
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                             return_dict=True, **kw)

    # HF reads sound files only through soxr, which we do not install: it gets the samples
    picture = {"type": "image", "image": image}
    inputs = template(ours_p, chat({"type": "audio", "audio": speech}, picture))
    # Speech from a prompt with a picture (the Talker gets TM-RoPE positions too), not with sound as
    # well: HF's Talker crashes on that (docs/hf_oddities.md, "Talker crash on audio with vision").
    speech_inputs = template(ours_p, chat(picture, question="Say hi."))
    g = torch.Generator().manual_seed(0)
    talker_width = ours.config.talker_config.text_config.hidden_size

    def processor():
        with hf.quiet():
            b = template(theirs_p, chat({"type": "audio", "audio": wave}, picture),
                         return_tensors="pt")
        if list(inputs) != list(b):
            return False, None, f"keys differ: {list(inputs)} vs {list(b)}"
        equal, worst, bad = _compare([(k, inputs[k], b[k]) for k in inputs])
        return equal, worst, bad or f"{len(inputs)} tensors; ids, masks and grids equal"

    def audio_encoder():
        feats, mask = inputs["input_features"], inputs["feature_attention_mask"]
        with torch.no_grad(), hf.quiet():
            want = theirs.thinker.get_audio_features(feats, feature_attention_mask=mask)
        with torch.no_grad():
            got = ours.thinker.audio_tower(*pack_padded_features(feats, mask))
        equal, worst, bad = _compare([("audio tokens", got, want.last_hidden_state)])
        return equal, worst, bad or f"{tuple(got.shape)} audio tokens"

    def vision_encoder():
        px, grid = inputs["pixel_values"], inputs["image_grid_thw"]
        with torch.no_grad(), hf.quiet():
            want = theirs.thinker.model.visual(px, grid_thw=grid)
        with torch.no_grad():
            got = ours.thinker.visual(px, grid)
        pairs = [("merged tokens", got.tokens, want.pooler_output)]
        pairs += [(f"deepstack {i}", a, b)
                  for i, (a, b) in enumerate(zip(got.deepstack, want.deepstack_features))]
        equal, worst, bad = _compare(pairs)
        return equal, worst, bad or (f"{tuple(got.tokens.shape)} image tokens, "
                                     f"{len(got.deepstack)} deepstack")

    def thinker():
        with torch.no_grad(), hf.quiet():
            want = theirs.thinker(**inputs, output_hidden_states=True)
        with torch.no_grad():
            got = ours.thinker(**inputs, output_hidden_states=True)
        pairs = [(f"hidden {i}", a, b)
                 for i, (a, b) in enumerate(zip(got.hidden_states, want.hidden_states))]
        equal, worst, bad = _compare(pairs + [("logits", got.logits, want.logits)])
        return equal, worst, bad or f"logits {tuple(got.logits.shape)}, every hidden state"

    def thinker_tokens():
        kw = dict(return_audio=False, thinker_max_new_tokens=8, thinker_do_sample=False,
                  thinker_eos_token_id=im_end)
        with torch.no_grad(), hf.quiet():
            want = theirs.generate(**inputs, **kw)
        got = ours.generate(**inputs, **kw)
        equal, _, bad = _compare([("token ids", got, want)])
        new = got.shape[1] - inputs["input_ids"].shape[1]
        return equal, None, bad or f"{new} greedy tokens equal"

    def talker():
        """Prefill of a left-padded batch, then one cached step at HF generate's positions."""
        x = torch.randn(2, 8, talker_width, generator=g) * 0.5                 # (B, T, H)
        step = torch.randn(2, 1, talker_width, generator=g) * 0.5
        mask = torch.ones(2, 8, dtype=torch.long)
        mask[1, :3] = 0
        longer = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
        pos = text_position_ids(mask, pad_value=PAD_POSITION)                # (3, B, T)
        cache, hf_cache = KVCache(), hf.new_cache(theirs.talker.config.text_config)
        with torch.no_grad(), hf.quiet():
            w0 = theirs.talker(inputs_embeds=x, attention_mask=mask, position_ids=pos,
                               use_cache=True, **hf.cache_kwargs(hf_cache)).logits
            w1 = theirs.talker(inputs_embeds=step, attention_mask=longer,
                               position_ids=pos[..., -1:] + 1, use_cache=True, generation_step=0,
                               **hf.cache_kwargs(hf_cache)).logits
        with torch.no_grad():
            g0 = ours.talker(inputs_embeds=x, attention_mask=mask, position_ids=pos,
                             past_key_values=cache).logits
            g1 = ours.talker(inputs_embeds=step, attention_mask=longer,
                             position_ids=pos[..., -1:] + 1, past_key_values=cache).logits
        equal, worst, bad = _compare([("prefill logits", g0, w0), ("cached step", g1, w1)])
        return equal, worst, bad or "prefill of a left-padded batch + one cached step"

    def code_predictor():
        """Head 0 from the 2-position prefill, the other heads from cached single-code steps."""
        mine, hers = ours.talker.code_predictor, theirs.talker.code_predictor
        x = torch.randn(2, 2, mine.config.hidden_size, generator=g) * 0.5
        cache, hf_cache = KVCache(), hf.new_cache(hers.config)
        with torch.no_grad(), hf.quiet():
            got, _ = mine(0, inputs_embeds=x, past_key_values=cache)
            want = hers(inputs_embeds=x, use_cache=True, **hf.cache_kwargs(hf_cache)).logits
            pairs = [("head 0", got, want)]
            for step in range(1, mine.config.num_code_groups - 1):
                code = got[:, -1].argmax(-1, keepdim=True)                     # (B, 1)
                got, _ = mine(step, codes=code, past_key_values=cache)
                want = hers(input_ids=code, generation_steps=step, use_cache=True,
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

    def speech():
        kw = dict(thinker_max_new_tokens=6, thinker_do_sample=False, talker_max_new_tokens=10,
                  talker_do_sample=False, thinker_eos_token_id=im_end)
        want = hf.hf_speech(theirs, **speech_inputs, **kw)
        got = generate_speech(ours, **speech_inputs, **kw)
        prompt = want["talker_kwargs"]["inputs_embeds"]
        pairs = [("text ids", got.text_ids, want["text_ids"]),
                 ("talker prompt", got.prompt.inputs_embeds, prompt),
                 ("codebook-0 ids", got.talker.sequences, want["talker_result"].sequences),
                 ("codec codes", got.talker.codes, want["codes"]),
                 ("waveform", got.wav, want["wav"])]
        equal, worst, bad = _compare(pairs)
        return equal, worst, bad or (f"greedy speech: {got.talker.codes.shape[-1]} frames, "
                                     f"{got.wav.shape[-1]} samples")

    return dict(zip(STAGES, (processor, audio_encoder, vision_encoder, thinker, thinker_tokens,
                             talker, code_predictor, code2wav, code2wav_chunked, speech)))


def _deprecations(caught) -> list:
    return [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]


def _describe(w) -> str:
    parts = pathlib.Path(w.filename).parts
    where = "/".join(parts[-3:])
    return f"{w.category.__name__}: {str(w.message).splitlines()[0][:140]} ({where}:{w.lineno})"


def sweep(ckpt=None) -> dict:
    """Every stage on the tiny preset; a stage that raises becomes a row saying so, the others
    still run. -> {"transformers", "location", "rows", "warnings": the distinct deprecation
    warnings seen, loading included}."""
    import torch

    from omni_ref import hf, presets
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    ckpt = ckpt or presets.cached_checkpoint("tiny")
    rows = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for name, stage in _stages(ckpt).items():
            start = len(seen)
            try:
                equal, worst, detail = stage()
            except Exception as e:                      # noqa: BLE001 - a row, not a crash
                equal, worst = False, None
                detail = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            rows.append({"stage": name, "equal": bool(equal), "max_diff": worst,
                         "warnings": len(_deprecations(seen[start:])), "detail": detail})
    messages = list(dict.fromkeys(_describe(w) for w in _deprecations(seen)))
    where = pathlib.Path(hf.transformers.__file__).parent.parent
    where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
    return {"transformers": hf.version(), "location": str(where), "rows": rows,
            "warnings": messages}


# ---- 4: the table ------------------------------------------------------------------------------

def format_table(result: dict) -> str:
    """The sweep's rows as a fixed-width table under a heading naming the release, then the
    verdict and the distinct deprecation warnings."""
    rows = result["rows"]
    where = f" from {result['location']}" if result.get("location") else ""
    lines = [f"parity of omni_ref against transformers {result['transformers']}{where}",
             f"(tiny preset, fp32, eager attention; equal = ids identical, floats within "
             f"{ATOL:g})", "",
             f"{'stage':<22} {'equal':<6} {'max |diff|':<11} {'warnings':<9} detail"]
    for r in rows:
        diff = "-" if r["max_diff"] is None else f"{r['max_diff']:.1e}"
        equal = "yes" if r["equal"] else "NO"
        lines.append(f"{r['stage']:<22} {equal:<6} {diff:<11} {r['warnings']:<9} {r['detail']}")
    bad = [r["stage"] for r in rows if not r["equal"]]
    lines += ["", f"{len(rows) - len(bad)}/{len(rows)} stages equal"
              + (f"; differ: {', '.join(bad)}" if bad else "")]
    messages = result.get("warnings", [])
    lines.append(f"{len(messages)} distinct deprecation warning(s)" + (":" if messages else ""))
    lines += [f"  {m}" for m in messages]
    return "\n".join(lines)


def _candidate_env(target: pathlib.Path) -> dict:
    """This environment, with the candidate first on the import path and then this checkout."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]),
                HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")


def run_sweep(target: pathlib.Path, python: str = sys.executable) -> dict:
    """The sweep in a fresh interpreter that imports the candidate transformers."""
    done = subprocess.run([python, "-m", "omni_ref.tools.compat", "--sweep"], cwd=ROOT,
                          env=_candidate_env(target), capture_output=True, text=True)
    out = done.stdout.strip().splitlines()
    if done.returncode != 0 or not out:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit("the sweep did not run to its end under the candidate (error above)")
    return json.loads(out[-1])


def run_tests(target: pathlib.Path, python: str = sys.executable) -> int:
    """The oddity register and the parity tests under the candidate; pytest's exit status."""
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "-k",
               "equal_hf or test_hf_oddities"]
    print("\n$ " + " ".join(command[2:]))
    return subprocess.run(command, cwd=ROOT, env=_candidate_env(target)).returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omni_ref.tools.compat",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("version", nargs="?", help="the transformers release, e.g. 5.25.0")
    parser.add_argument("--tests", action="store_true",
                        help="also run tests/test_hf_oddities.py and the *_equal_hf tests")
    parser.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)   # the child
    args = parser.parse_args(argv)
    if args.sweep:
        print(json.dumps(sweep()))
        return 0
    if not args.version:
        parser.error("name the release: make compat V=5.25.0")
    target = install(args.version)
    problems = unmet_requirements(requirements(target, args.version))
    if problems:
        print(f"transformers {args.version} needs packages this environment does not have:")
        print("\n".join(f"  {p}" for p in problems))
        print(f"Install those versions beside it (pip install --target {target.relative_to(ROOT)}"
              " 'name==version'), or move the pins in pyproject.toml first.")
        return 2
    result = run_sweep(target)
    print(format_table(result))
    status = 0 if all(r["equal"] for r in result["rows"]) else 1
    if args.tests:
        status = run_tests(target) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
