"""`make demo` end to end on the tiny preset: every stage runs and HF agrees."""
from omni_ref import demo


def test_demo_runs_and_agrees_with_hf(capsys):
    assert demo.main(["--preset", "tiny", "--max-new-tokens", "4", "--codec-frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "parity verdict: PASS: same tokens" in out
    for stage in ("omni_ref.load", "processor: chat with speech + image + video", "omni_ref generate",
                  "HF generate, same options"):
        assert stage in out
