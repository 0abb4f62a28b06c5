"""make bench (omni_ref/bench.py): its arithmetic on hand-made stage times, and one real run on the tiny preset
that writes the JSON and shows the two sides computed the same thing. No timing is asserted: timings vary."""
import json

import pytest
import torch

from omni_ref.tools import bench, latency

STAGES = {"processor": {"omni_ref": 0.010, "hf": None}, "thinker_ttft": {"omni_ref": 0.100, "hf": 0.050},
          "thinker_token": {"omni_ref": 0.020, "hf": 0.040}, "talker_ttft": {"omni_ref": 0.030, "hf": 0.030},
          "talker_token": {"omni_ref": 0.010, "hf": 0.010}, "mtp": {"omni_ref": 0.005, "hf": 0.010},
          "code2wav_chunked": {"omni_ref": 0.005, "hf": 0.005}}


def test_timed_takes_the_median_after_warm_up():
    calls = []
    t, out = bench.timed(lambda: calls.append(1) or len(calls), repeats=3, warmup=2)
    assert out == 5 and len(calls) == 5 and t >= 0


def test_sides_take_turns_after_every_warm_up():
    calls, entered = [], []

    def context(side):
        class Ctx:
            def __enter__(self):
                entered.append(side)

            def __exit__(self, *exc):
                return False
        return Ctx

    cols = {side: (side.upper(), context(side)) for side in ("a", "b", "c")}
    out = bench.taking_turns(cols, lambda side, model: calls.append((side, model)) or len(calls), repeats=3)
    order = [side for side, _ in calls]
    assert order == ["a", "b", "c",  "a", "b", "c",  "b", "c", "a",  "c", "a", "b"]
    assert all(model == side.upper() for side, model in calls)       # each side runs its own model
    assert entered == order                                          # ... inside its own context, every run
    assert out == {"a": [4, 9, 11], "b": [5, 7, 12], "c": [6, 8, 10]}


class Toy(torch.nn.Module):
    def forward(self, x):
        return x + 1


class Predictor:
    def generate(self, x):
        return x * 2


def test_step_clock_stamps_every_pass_and_every_inner_call():
    toy, inner = Toy(), Predictor()
    clock = bench.StepClock(toy, inner)

    def loop():                     # a decoding loop: 3 passes, the inner generate between them
        x = toy(torch.zeros(1))
        for _ in range(2):
            x = toy(inner.generate(x))
        return x
    assert clock.run(loop).item() == 7
    assert len(clock.passes) == 3 and len(clock.inner_calls) == 2
    assert clock.start <= clock.passes[0] <= clock.inner_calls[0][0] <= clock.inner_calls[0][1] <= clock.passes[1]
    assert clock.passes[-1] <= clock.end
    assert len(clock.pass_ends) == 3 and all(a <= b for a, b in zip(clock.passes, clock.pass_ends))
    assert "generate" not in vars(inner) and not toy._forward_pre_hooks and not toy._forward_hooks   # put back
    assert clock.run(lambda: toy(torch.zeros(1))).item() == 1 and len(clock.passes) == 1   # a fresh record


def test_stage_timeline_reads_one_call():
    class Vocoder:
        def chunked_decode(self, codes):
            return codes * 0

    class Model:                    # the three parts generate calls, in its order
        thinker, talker, code2wav = Toy(), Toy(), Vocoder()

    m = Model()

    def generate():
        x = m.thinker(m.thinker(m.thinker(torch.zeros(1))))       # prefill + 2 decode passes
        for _ in range(4):
            x = m.talker(x)
        return m.code2wav.chunked_decode(x)
    out, t = bench.stage_timeline(m, generate)
    assert out.item() == 0
    assert set(t) == {"thinker_prefill", "thinker_decode", "talker_prompt", "talker_and_mtp", "code2wav", "total"}
    assert all(v >= 0 for v in t.values())
    assert sum(v for k, v in t.items() if k != "total") <= t["total"]
    assert "chunked_decode" not in vars(m.code2wav)


def fake_clock(start, passes, end, inner=()):
    clock = bench.StepClock.__new__(bench.StepClock)
    clock.start, clock.passes, clock.end, clock.inner_calls = start, list(passes), end, list(inner)
    return clock


def test_figures_from_timestamps_by_hand():
    # Thinker: call at 0, passes start at 0.0, 1.0, 1.2, 1.5, returns at 1.9 -> token k exists when pass k+1
    # starts: first token at 1.0 (TTFT), then steps of 0.2, 0.3, 0.4.
    f = bench.thinker_figures(fake_clock(0.0, [0.0, 1.0, 1.2, 1.5], 1.9))
    assert f["thinker_ttft"] == pytest.approx([1.0]) and f["thinker_token"] == pytest.approx([0.2, 0.3, 0.4])
    # Talker: passes at 0, 1, 2; MTP calls (0.5, 0.8) and (1.4, 1.9) inside steps [0, 1] and [1, 2].
    f = bench.talker_figures(fake_clock(0.0, [0.0, 1.0, 2.0], 2.5, [(0.5, 0.8), (1.4, 1.9)]))
    assert f["talker_ttft"] == pytest.approx([0.5]) and f["talker_step"] == pytest.approx([1.0, 1.0])
    assert f["mtp"] == pytest.approx([0.3, 0.5]) and f["talker_token"] == pytest.approx([0.7, 0.5])
    with pytest.raises(RuntimeError, match="do not nest"):          # an MTP call outside its step
        bench.talker_figures(fake_clock(0.0, [0.0, 1.0, 2.0], 2.5, [(0.5, 1.2), (1.4, 1.9)]))


def test_spread_and_flags():
    assert bench.spread([1.0, 1.2, 1.4]) == pytest.approx(0.4 / 1.2) and bench.spread([2.0]) == 0
    assert bench.flag([1.0, 1.2, 1.4]) is None and bench.flag(None) is None
    assert "negative" in bench.flag([-1.9, 0.1, 0.2])
    assert "spread 100% is over 50%" in bench.flag([1.0, 2.0, 3.0])
    s = bench.stage({"omni_ref": [0.2, 0.1, 0.3], "hf": [1.0, 1.0, 1.0], "hf_eager": None}, per=10)
    assert s["omni_ref"] == pytest.approx(0.02) and s["hf"] == pytest.approx(0.1) and s["hf_eager"] is None
    assert s["spread"]["omni_ref"] == pytest.approx(1.0) and s["flag"]["omni_ref"] and s["flag"]["hf"] is None
    assert bench.flagged({"x": s}) == [("x", "omni_ref", s["flag"]["omni_ref"])]


def test_a_flagged_stage_flags_the_rows_built_on_it():
    stages = {k: {**v, "flag": {"omni_ref": None, "hf": None}} for k, v in STAGES.items()}
    stages["mtp"]["flag"]["hf"] = "spread 80% is over 50%"
    s = bench.summarise(stages)
    assert s["omni_ref"]["flagged"] == [] and s["hf"]["flagged"] == ["mtp"]


def test_ratios_and_summary_by_hand():
    r = bench.ratios(STAGES)
    assert "processor" not in r and r["thinker_ttft"] == pytest.approx(2.0) and r["mtp"] == pytest.approx(0.5)
    s = bench.summarise(STAGES)
    # first packet = processor + thinker TTFT + talker TTFT + MTP + codec; HF borrows our processor time.
    assert s["omni_ref"]["first_packet_s"] == pytest.approx(0.150)
    assert s["hf"]["first_packet_s"] == pytest.approx(0.010 + 0.050 + 0.030 + 0.010 + 0.005)
    assert s["omni_ref"]["rtf"] == pytest.approx(latency.real_time_factor(0.020, 0.010, 0.005, 0.005))
    assert s["omni_ref"]["rtf"] == pytest.approx(0.5) and s["hf"]["thinker_tok_s"] == pytest.approx(25)


def test_bad_repeats_is_refused_with_the_fix(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0", "--out", "unused"])
    assert "--repeats 0: need at least 1 timed run per stage" in capsys.readouterr().err


def _stage(**medians):
    return bench.stage({side: None if m is None else [m] * 3 for side, m in medians.items()})


def test_figures_and_targets_by_hand():
    stages = {"processor": _stage(omni_ref=0.01, hf=None), "audio_encoder": _stage(omni_ref=0.02, hf=0.03),
              "thinker_ttft": _stage(omni_ref=0.5, hf=0.6), "thinker_token": _stage(omni_ref=0.02, hf=0.02),
              "talker_step": _stage(omni_ref=0.01, hf=0.04), "code2wav_chunked": _stage(omni_ref=0.004, hf=0.004),
              "first_audio": _stage(omni_ref=0.3, hf=1.0), "total": _stage(omni_ref=1.1, hf=1.0)}
    f = bench.figures(stages, prompt_tokens=100)
    assert f["omni_ref"]["thinker_prefill_tok_s"] == pytest.approx(200) and f["hf"]["processor_s"] is None
    assert f["omni_ref"]["encoders_s"] == pytest.approx(0.02) and f["hf"]["talker_mtp_frames_s"] == pytest.approx(25)
    assert f["omni_ref"]["code2wav_rtf"] == pytest.approx(0.05) and f["hf"]["first_audio_s"] == pytest.approx(1.0)
    t = bench.targets(stages)
    assert set(t) == {"thinker_prefill", "thinker_decode", "talker_mtp_frames_per_s", "first_audio"}
    assert t["thinker_prefill"]["ratio"] == pytest.approx(0.5 / 0.6) and t["thinker_prefill"]["met"]
    assert t["thinker_decode"]["ratio"] == pytest.approx(1.0) and t["thinker_decode"]["met"]      # at the limit
    assert t["talker_mtp_frames_per_s"]["ratio"] == pytest.approx(4.0) and t["talker_mtp_frames_per_s"]["met"]
    assert t["first_audio"]["ratio"] == pytest.approx(0.3) and not t["first_audio"]["met"]        # over 0.2
    stages["thinker_token"] = bench.stage({"omni_ref": [0.01, 0.02, 0.03], "hf": [0.05] * 3})   # spread 100 %
    t = bench.targets(stages)
    assert t["thinker_decode"]["ratio"] < 1 and not t["thinker_decode"]["met"]                     # flagged
    assert t["thinker_decode"]["flagged"] == ["omni_ref"]
    both = bench.all_targets({"a": {"name": "a", "targets": bench.targets(stages)},
                              "b": {"name": "b", "targets": {"thinker_prefill": {
                                  **t["thinker_prefill"], "ratio": 1.2, "met": False}}}})
    assert both["thinker_prefill"]["ratio"] == pytest.approx(1.2) and not both["thinker_prefill"]["met"]
    assert both["thinker_prefill"]["requests"] == {"a": pytest.approx(0.5 / 0.6), "b": 1.2}


class Event:
    def __init__(self, kind, time_s, n=0):
        self.kind, self.time_s, self.wav = kind, time_s, torch.zeros(n)


class Streamer:
    """model.stream's contract: events in order, each with its time since the call began."""
    def stream(self, **kwargs):
        self.kwargs = kwargs
        yield Event("text", 0.1)
        yield Event("audio", 0.25, 1920 * 4)
        yield Event("text", 0.3)
        yield Event("audio", 0.4, 1920 * 4)


def test_first_audio_reads_the_first_audio_event():
    m = Streamer()
    assert bench.first_audio_ours(m, {"input_ids": 1}, speaker="Ethan", talker_max_new_tokens=61) == 0.25
    assert m.kwargs == {"input_ids": 1, "speaker": "Ethan", "talker_max_new_tokens": 61, "audio_chunk_frames": 4}
    m.stream = lambda **kw: iter([Event("text", 0.1)])
    with pytest.raises(RuntimeError, match="without an audio event"):
        bench.first_audio_ours(m, {})


def test_eager_path_switches_and_restores(tiny_dir):
    import omni_ref
    from omni_ref.layers import Attention
    from omni_ref.moe import Experts
    model = omni_ref.load(tiny_dir, components=("thinker",), attn_implementation="sdpa",
                          experts_implementation="grouped_mm")

    def kinds():
        return ({m.attn_implementation for m in model.modules() if isinstance(m, Attention)},
                {m.implementation for m in model.modules() if isinstance(m, Experts)})
    with bench.eager_path(model):
        assert kinds() == ({"eager"}, {"eager"})
    assert kinds() == ({"sdpa"}, {"grouped_mm"})


def test_tiny_run_writes_json_and_every_column_agrees(tmp_path, capsys, monkeypatch):
    full = bench.run       # fewer tokens, steps and frames than make bench, to keep the test quick
    monkeypatch.setattr(bench, "run", lambda *a, **k: full(*a, thinker_tokens=3, talker_steps=3, codec_frames=10, **k))
    assert bench.main(["--preset", "tiny", "--repeats", "1", "--requests", "hear", "--answer-frames", "0",
                       "--no-load-memory", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench_tiny.json").read_text())
    assert set(report) >= {"hardware", "versions", "settings", "results", "memory", "targets"}
    assert {"platform", "machine", "processor", "cpu_count", "torch_threads", "total_ram_bytes", "load_average"} <= \
        set(report["hardware"])
    assert {"python", "torch", "transformers", "omni_ref_commit"} <= set(report["versions"])
    hear = report["results"]["hear"]
    assert set(hear["stages"]) == {"processor", "audio_encoder", "thinker_ttft", "thinker_token", "talker_ttft",
                                   "talker_step", "talker_token", "mtp", "code2wav_chunked", "code2wav_stream"}
    assert set(hear["ratios"]) == set(hear["stages"]) - {"processor", "code2wav_stream"}
    sides = {"omni_ref", "omni_ref_eager", "hf", "hf_eager"}
    for name, v in hear["stages"].items():            # every figure: each column's median, spread, runs, flag
        assert set(v) == sides | {"spread", "runs", "flag"}, name
        assert len(v["runs"]["omni_ref"]) == 1 and min(v["runs"]["omni_ref"]) >= 0, name
    assert hear["stages"]["thinker_token"]["hf_eager"] > 0 and hear["stages"]["processor"]["hf"] is None
    assert set(hear["steps"]["thinker"]["hf_eager"]) == {"thinker_ttft", "thinker_token"}
    assert len(hear["steps"]["talker"]["omni_ref"]["mtp"]) == 2      # 3 Talker steps: an MTP call after 2
    assert set(hear["table_2"]) == sides and set(hear["table_2"]["hf"]) >= {"first_packet_s", "rtf", "flagged"}
    assert set(hear["figures"]) == sides and hear["figures"]["omni_ref"]["thinker_decode_tok_s"] > 0
    assert set(hear["targets"]) == {"thinker_prefill", "thinker_decode", "talker_mtp_frames_per_s"}
    assert set(report["targets"]) == set(hear["targets"])
    for t in hear["targets"].values():
        assert set(t) == {"measures", "ratio", "limit", "met", "flagged"} and isinstance(t["met"], bool)
    p = hear["parity"]
    assert p["thinker_tokens_equal"] and p["codes_equal"] and p["mtp_codes_equal"]
    assert p["wav_max_abs"] <= 1e-5 and p["code2wav_max_abs"] <= 1e-5 and p["audio_encoder_max_abs"] <= 1e-5
    assert report["memory"]["omni_ref_param_bytes"] == report["memory"]["hf_param_bytes"]
    assert report["settings"]["flush_denormal"] is True and "load_memory" not in report
    assert {k: report["settings"][k] for k in ("thinker_tokens", "talker_steps", "codec_frames")} == \
        {"thinker_tokens": 3, "talker_steps": 3, "codec_frames": 10}
    assert bench.request_sizes({}) == {"thinker_tokens": 8, "talker_steps": 16, "codec_frames": 50}
    assert report["settings"]["columns"]["hf"].startswith("attn_implementation=sdpa")
    assert "ratio = omni_ref / hf, < 1: omni_ref faster" in capsys.readouterr().out
