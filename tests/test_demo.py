"""`make demo` end to end on the tiny preset: every stage runs and HF agrees."""
from omni_ref.tools import demo


def test_demo_runs_and_agrees_with_hf(capsys):
    assert demo.main(["--preset", "tiny", "--max-new-tokens", "4", "--codec-frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "parity verdict: PASS: same text tokens and waveforms within 1e-5 in every request" in out
    for stage in ("omni_ref.load", "see: processor", "see: omni_ref generate", "hear: HF generate, same options",
                  "-> out/demo_hear.wav"):
        assert stage in out
