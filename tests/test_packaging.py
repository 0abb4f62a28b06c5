"""The set-up a newcomer relies on: pins agree everywhere, the README's commands are the Makefile's and CI's."""
import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _pyproject_pins():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = data["project"]["dependencies"] + data["project"]["optional-dependencies"]["dev"]
    pins = {}
    for r in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.]+)", r)
        assert m, f"pyproject.toml: {r!r} is not an exact pin (name==version)"
        pins[m[1].lower()] = m[2]
    return pins


def test_environment_yml_has_the_same_pins():
    env = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.fullmatch(r"\s*-\s*([A-Za-z0-9_.-]+)==([\w.]+)\s*", line)
        if m:
            env[m[1].lower()] = m[2]
    assert env == _pyproject_pins()


def test_parity_pins():
    pins = _pyproject_pins()
    assert (pins["torch"], pins["torchvision"], pins["transformers"]) == ("2.14.1", "0.29.1", "5.24.0")


def test_installed_versions_are_the_pins():
    out = subprocess.run([sys.executable, "-m", "omni_ref.tools.env_check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert "FAIL" not in out.stdout


def test_readme_quick_start_is_two_commands_and_shows_the_pins():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick, re.S)[1]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == ["make demo", "make test"]
    for name, version in (("transformers", "5.24.0"), ("torch", "2.14.1"), ("torchvision", "0.29.1")):
        assert f"`{name}` | `=={version}`" in readme


def test_make_targets_and_ci():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "lab", "notebooks", "compat"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_make_compat_installs_beside_the_pinned_environment():
    """`make compat V=x.y.z` runs the compat tool; the candidate goes to .compat/, which git ignores."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ncompat:", 1)[1].split("\n\n", 1)[0]
    assert "-m omni_ref.tools.compat $(V)" in recipe
    assert ".compat/" in (ROOT / ".gitignore").read_text().splitlines()
    from omni_ref.tools import compat
    assert compat.target_dir("9.9.9") == ROOT / ".compat" / "transformers-9.9.9"


def test_every_notebook_is_checked_by_make_test():
    """`make test` hands the notebooks folder to nbval, so a new notebook cannot escape the check."""
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "--nbval" in test_recipe and " notebooks" in test_recipe


def test_omni_ref_does_not_import_transformers():
    """Only omni_ref/hf.py may import transformers (and torchvision is never imported)."""
    offenders = []
    for path in (ROOT / "omni_ref").rglob("*.py"):
        text = path.read_text()
        if path.name != "hf.py" and re.search(r"^\s*(from|import) transformers", text, re.M):
            offenders.append(path.name)
        if re.search(r"^\s*(from|import) torchvision", text, re.M):
            offenders.append(path.name)
    assert offenders == []
