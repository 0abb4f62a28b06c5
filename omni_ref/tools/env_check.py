"""`python -m omni_ref.tools.env_check`: one OK/FAIL line per dependency, for bug reports.

The pins are read from the checkout's pyproject.toml when omni_ref runs from one (an editable
install, or PYTHONPATH pointing at a clone), else from the installed package's metadata, which pip
wrote from that same file. The file comes first because an editable install's metadata keeps the
old pins after a pin moves, until it is reinstalled, and the environment must be judged by the pins
it will be held to.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import pathlib
import platform
import re
import sys
import tomllib

# distribution name -> module to import (import proves more than an installed version number)
IMPORT_NAMES = {"torch": "torch", "torchvision": "torchvision", "transformers": "transformers",
                "numpy": "numpy", "safetensors": "safetensors", "tokenizers": "tokenizers",
                "soundfile": "soundfile", "jinja2": "jinja2", "pillow": "PIL",
                "jupyterlab": "jupyterlab", "ipywidgets": "ipywidgets", "ipykernel": "ipykernel",
                "nbconvert": "nbconvert", "matplotlib": "matplotlib", "nbval": "nbval",
                "pytest": "pytest", "pytest-xdist": "xdist"}


PYPROJECT = pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml"


def _requirements() -> list[str]:
    """omni-ref's requirement strings, the dev extra marked as pip's metadata marks it."""
    if PYPROJECT.is_file():
        project = tomllib.loads(PYPROJECT.read_text()).get("project", {})
        if project.get("name") == "omni-ref":
            dev = project.get("optional-dependencies", {}).get("dev", [])
            return project["dependencies"] + [f'{r}; extra == "dev"' for r in dev]
    return md.requires("omni-ref") or []


def pins() -> dict[str, tuple[str, bool]]:
    """name -> (pinned version, needed by omni_ref itself and not only by tests and notebooks)."""
    out = {}
    for req in _requirements():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)\s*(;.*)?$", req)
        if m:
            out[m[1].lower()] = (m[2], "extra" not in (m[3] or ""))
    return out


def check() -> list[tuple[bool, str]]:
    rows = []
    ok_py = sys.version_info[:2] == (3, 11)
    rows.append((ok_py, f"python {platform.python_version()} (want 3.11)"))
    for name, (want, core) in sorted(pins().items()):
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            dev = "" if core else " [dev]"
            rows.append((False, f"{name}: not installed (want =={want}){dev}"))
            continue
        try:
            importlib.import_module(IMPORT_NAMES.get(name, name))
            err = ""
        except Exception as e:   # a broken install (torchvision beside another torch) shows here
            err = f", import fails: {type(e).__name__}: {e}"
        ok = have == want and not err
        rows.append((ok, f"{name} {have}" + ("" if have == want else f" (want =={want})") + err))
    return rows


def main() -> int:
    try:
        rows = check()
    except md.PackageNotFoundError:
        print("FAIL omni-ref is not installed: run `make test` or `pip install -e .[dev]`")
        return 1
    for ok, line in rows:
        print(("OK   " if ok else "FAIL ") + line)
    try:
        import torch
        print(f"info torch threads={torch.get_num_threads()} cuda={torch.cuda.is_available()} "
              f"platform={platform.platform()} machine={platform.machine()}")
    except ImportError:
        pass
    return 0 if all(ok for ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
