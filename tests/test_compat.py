"""`make compat V=x.y.z` (omni_ref/tools/compat.py): its requirement check and its table, without installing
anything. The sweep itself is the parity tests' comparisons in one process; `make compat` runs it."""
import re

import pytest

from omni_ref.tools import compat


@pytest.mark.parametrize("have, spec, ok", [
    ("2.4.0", ">=1.31.0,<3.0", True), ("1.30.9", ">=1.31.0,<3.0", False), ("3.0", ">=1.31.0,<3.0", False),
    ("0.23.3", "<0.24.0,>=0.23.1", True), ("0.24.0", "<0.24.0,>=0.23.1", False),
    ("2026.1.5", ">=2025.10.22", True), ("2025.9.30", ">=2025.10.22", False),
    ("0.8.0", ">=0.8.0", True), ("1.4.2", "~=1.4", True), ("2.0", "~=1.4", False),
    ("5.24.1", "==5.24.*", True), ("5.25.0", "==5.24.*", False), ("1.0", "!=1.0", False),
])
def test_version_specifiers(have, spec, ok):
    assert compat.satisfies(have, spec) is ok


def test_unmet_requirements_name_the_package_and_the_versions():
    installed = {"huggingface-hub": "1.20.0", "numpy": "2.4.6", "tokenizers": "0.23.3"}.get
    reqs = ["huggingface-hub<3.0,>=1.31.0", "numpy>=1.17", "tokenizers<0.24.0,>=0.23.1", "typer"]
    assert compat.unmet_requirements(reqs, installed) == [
        "huggingface-hub 1.20.0 installed, <3.0,>=1.31.0 wanted", "typer: not installed, any version wanted"]
    assert compat.unmet_requirements(reqs[1:3], installed) == []


def test_the_pinned_environment_meets_the_pinned_transformers_requirements(tmp_path):
    """What `make compat` checks first, here for the release the pins name (its metadata as pip installed it)."""
    import importlib.metadata as md
    dist = md.distribution("transformers")
    folder = tmp_path / f"transformers-{dist.version}.dist-info"
    folder.mkdir()
    (folder / "METADATA").write_text(dist.read_text("METADATA"))
    reqs = compat.requirements(tmp_path, dist.version)
    assert any(r.startswith("huggingface-hub") for r in reqs) and not any(";" in r for r in reqs)
    assert compat.unmet_requirements(reqs) == []


def test_release_numbers_only():
    with pytest.raises(SystemExit, match="is not a release number"):
        compat.install("5.24.0; rm -rf /")


def test_table_has_a_row_per_stage_and_a_verdict():
    rows = [{"stage": s, "equal": s != "talker", "max_diff": None if s == "thinker greedy tokens" else 2e-7,
             "warnings": 1 if s == "talker" else 0, "detail": "d"} for s in compat.STAGES]
    table = compat.format_table({"transformers": "9.9.9", "rows": rows,
                                 "warnings": ["FutureWarning: `past_key_values` is deprecated (a/b.py:1)"]})
    lines = table.splitlines()
    assert "transformers 9.9.9" in lines[0]
    body = {ln.split("  ")[0].strip(): ln for ln in lines if ln.split("  ")[0].strip() in compat.STAGES}
    assert list(body) == list(compat.STAGES)
    assert re.match(r"talker\s+NO\s+2\.0e-07\s+1\s+d$", body["talker"])
    assert re.match(r"thinker greedy tokens\s+yes\s+-\s+0\s+d$", body["thinker greedy tokens"])
    assert f"{len(rows) - 1}/{len(rows)} stages equal; differ: talker" in table
    assert "1 distinct deprecation warning(s):" in table and "past_key_values" in lines[-1]


def test_compare_counts_ids_exactly_and_floats_within_the_bar():
    import torch
    ids = torch.tensor([1, 2, 3])
    assert compat._compare([("ids", ids, ids.clone())]) == (True, 0.0, "")
    assert compat._compare([("ids", ids, torch.tensor([1, 2, 4]))])[::2] == (False, "ids: 1 of 3 ids differ")
    x = torch.zeros(4)
    equal, worst, detail = compat._compare([("a", x, x + 5e-6), ("b", x, x + 3e-5)])
    assert (equal, round(worst, 7), detail) == (False, 3e-5, "b: max |diff| 3.0e-05")
    assert compat._compare([("a", x, torch.zeros(5))])[2] == "a: shape (4,) vs (5,)"
