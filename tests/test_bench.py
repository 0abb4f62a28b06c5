"""make bench (omni_ref/bench.py): its arithmetic on hand-made stage times, and one real run on the tiny preset
that writes the JSON and shows the two sides computed the same thing. No timing is asserted: timings vary."""
import json

import pytest

from omni_ref.tools import bench, latency

STAGES = {"processor": {"omni_ref": 0.010, "hf": None}, "thinker_ttft": {"omni_ref": 0.100, "hf": 0.050},
          "thinker_token": {"omni_ref": 0.020, "hf": 0.040}, "talker_ttft": {"omni_ref": 0.030, "hf": 0.030},
          "talker_token": {"omni_ref": 0.010, "hf": 0.010}, "mtp": {"omni_ref": 0.005, "hf": 0.010},
          "code2wav_chunked": {"omni_ref": 0.005, "hf": 0.005}}


def test_timed_takes_the_median_after_warm_up():
    calls = []
    t, out = bench.timed(lambda: calls.append(1) or len(calls), repeats=3, warmup=2)
    assert out == 5 and len(calls) == 5 and t >= 0


def test_per_step_difference():
    assert bench._per_step(1.0, 0.2, 5) == pytest.approx(0.2)      # 4 more steps cost 0.8 s
    assert bench._per_step(1.0, 0.2, 1) == pytest.approx(0.8)      # no division by zero


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


def test_tiny_run_writes_json_and_both_sides_agree(tmp_path, capsys, monkeypatch):
    full = bench.run       # fewer tokens, steps and frames than make bench, to keep the test quick
    monkeypatch.setattr(bench, "run", lambda *a, **k: full(*a, thinker_tokens=3, talker_steps=3, codec_frames=10, **k))
    assert bench.main(["--preset", "tiny", "--repeats", "1", "--requests", "hear", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench_tiny.json").read_text())
    assert set(report) == {"hardware", "versions", "settings", "results", "memory"}
    assert {"platform", "machine", "processor", "cpu_count", "torch_threads", "total_ram_bytes"} <= \
        set(report["hardware"])
    assert {"python", "torch", "transformers", "omni_ref_commit"} <= set(report["versions"])
    hear = report["results"]["hear"]
    assert set(hear["stages"]) == {"processor", "audio_encoder", "thinker_ttft", "thinker_token", "talker_ttft",
                                   "talker_step", "talker_token", "mtp", "code2wav_chunked", "code2wav_stream"}
    assert set(hear["ratios"]) == set(hear["stages"]) - {"processor", "code2wav_stream"}
    p = hear["parity"]
    assert p["thinker_tokens_equal"] and p["codes_equal"] and p["mtp_codes_equal"]
    assert p["wav_max_abs"] <= 1e-5 and p["code2wav_max_abs"] <= 1e-5 and p["audio_encoder_max_abs"] <= 1e-5
    assert report["memory"]["omni_ref_param_bytes"] == report["memory"]["hf_param_bytes"]
    assert report["settings"]["flush_denormal"] is True
    assert "omni_ref / HF time per stage" in capsys.readouterr().out
