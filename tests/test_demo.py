"""`make demo` end to end on the tiny preset: every stage runs, the speech is streamed, and HF agrees."""
import re

import soundfile as sf

from omni_ref import presets
from omni_ref.tools import demo


def test_demo_runs_and_agrees_with_hf(capsys):
    assert demo.main(["--preset", "tiny", "--max-new-tokens", "4", "--codec-frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "parity verdict: PASS: same text tokens and waveforms within 1e-5 in every request" in out
    for stage in ("omni_ref.load", "see: processor", "see: omni_ref stream", "hear: HF generate, same options",
                  "-> out/demo_hear.wav"):
        assert stage in out
    # the wav written chunk by chunk while streaming holds the whole answer: 3 frames fed back, 1920 - 555 ...
    wav, rate = sf.read(presets.REPO_DIR / "out" / "demo_hear.wav")
    assert rate == 24000 and wav.shape == (3 * 1920 - 555,)
    firsts = re.findall(r"time to first audio \((see|hear)\): ([\d.]+) ms streamed vs ([\d.]+) ms HF generate", out)
    assert [name for name, _, _ in firsts] == ["see", "hear"]
    assert all(0 < float(streamed) for _, streamed, _ in firsts)
