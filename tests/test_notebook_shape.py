"""Every numbered notebook teaches in the same shape (DESIGN.md, "How a notebook teaches"): at least one LaTeX
formula, two cells that show the package's own code, two by-hand rebuilds, two exercises with checkers; and
nothing in the project points at ../shared, which a user's clone does not have."""
import json
import re
from pathlib import Path

import pytest

from omni_ref import exercises

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"))


def cells(path, kind):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == kind]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_the_teaching_shape(path):
    markdown, code = cells(path, "markdown"), cells(path, "code")
    assert any("$$" in m or re.search(r"\$[^$\n]+\$", m) for m in markdown), "no LaTeX formula"
    assert sum("show(" in c for c in code) >= 2, "fewer than two omni_ref.show cells"
    assert sum("by hand" in c.lower() for c in code) >= 2, "fewer than two by-hand rebuilds"
    checked = set(re.findall(r'exercises\.check\("(\d\d\.\d)"', "\n".join(code)))
    assert len(checked) >= 2, "fewer than two exercises"
    assert checked <= set(exercises.registry()), f"unknown exercise keys {checked - set(exercises.registry())}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_a_solutions_notebook(path):
    solutions = ROOT / "notebooks" / "solutions" / path.name
    assert solutions.is_file(), f"{solutions.relative_to(ROOT)} is missing"
    keys = set(re.findall(r'exercises\.check\("(\d\d\.\d)"', "\n".join(cells(path, "code"))))
    solved = set(re.findall(r'exercises\.check\("(\d\d\.\d)"', "\n".join(cells(solutions, "code"))))
    assert keys <= solved, f"exercises without a worked solution: {sorted(keys - solved)}"


def test_nothing_points_at_shared():
    skip = {".git", ".venv", ".cache", "tests", "out", "bench"}
    hits = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not (set(p.relative_to(ROOT).parts) & skip) and p.suffix != ".safetensors"
            and "../shared" in p.read_text(errors="ignore")]
    assert not hits, f"these files point at ../shared, which a user's clone does not have: {hits}"
