"""`omni_ref.show(obj)`: put the package's own source of a function, class or method on a notebook page.

A notebook that pasted the code it explains would drift from the code that runs. `show` reads the source from
the file the object was defined in, at the moment the cell runs, so what a learner reads is what executes, with
the file and its line numbers beside it:

    omni_ref.show(omni_ref.moe.route)                            # the whole function
    omni_ref.show(omni_ref.moe.Experts.forward, lines=(1, 12))   # its first 12 lines (1 = the `def` line)
    omni_ref.show(omni_ref.moe.route, lines=("probs =", "return"))   # from the first line containing
                                                                  # "probs =" to the next containing "return"

In Jupyter the result renders as highlighted HTML (Pygments, which Jupyter brings; plain <pre> without it);
anywhere else `print(show(...))` gives plain text with line numbers.
"""
from __future__ import annotations

import html
import inspect
import os
from dataclasses import dataclass

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # .../omni_ref


class ShowError(ValueError):
    """`show` was asked for something it cannot display (not our code, or a line range it does not have)."""


@dataclass(frozen=True)
class Source:
    """A slice of one of the package's files: `text` starts at line `first` of `path` (relative to the repo)."""
    name: str
    path: str
    first: int
    text: str

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @property
    def last(self) -> int:
        return self.first + len(self.lines) - 1

    def __str__(self) -> str:
        width = len(str(self.last))
        body = "\n".join(f"{self.first + i:>{width}}  {line}" for i, line in enumerate(self.lines))
        return f"{self.path}:{self.first}-{self.last}  ({self.name})\n{body}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = (f'<div style="font-family:monospace;font-size:85%;color:#555">{html.escape(self.path)}, '
                f"lines {self.first}-{self.last} &middot; <b>{html.escape(self.name)}</b></div>")
        try:
            from pygments import highlight
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import PythonLexer
        except ImportError:                       # plain but still numbered
            return head + f"<pre>{html.escape(str(self).split(chr(10), 1)[1])}</pre>"
        formatter = HtmlFormatter(linenos="inline", linenostart=self.first, noclasses=True, style="friendly")
        return head + highlight(self.text, PythonLexer(), formatter)


def _unwrap(obj):
    """The plain function behind a property, a staticmethod/classmethod or a decorated function."""
    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    return inspect.unwrap(obj) if callable(obj) else obj


def _select(lines: list[str], spec) -> tuple[int, int]:
    """Half-open (start, end) indices into `lines` for a `lines=` argument (see the module docstring)."""
    if spec is None:
        return 0, len(lines)
    if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
        raise ShowError(f"lines={spec!r}: give (first, last) line numbers counted from 1 at the definition, "
                        "or two strings: a line containing the first and the next line containing the second")
    a, b = spec
    if isinstance(a, str) and isinstance(b, str):
        start = next((i for i, line in enumerate(lines) if a in line), None)
        if start is None:
            raise ShowError(f"lines={spec!r}: no line contains {a!r}")
        end = next((i for i in range(start, len(lines)) if b in lines[i]), None)
        if end is None:
            raise ShowError(f"lines={spec!r}: no line at or after {a!r} contains {b!r}")
        return start, end + 1
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and 1 <= a <= b <= len(lines):
        return a - 1, b
    raise ShowError(f"lines={spec!r}: the source has lines 1..{len(lines)}; give (first, last) within it")


def source_of(obj, lines=None) -> Source:
    """The package's own source of `obj` (a function, class, method or module), optionally a slice of it."""
    target = _unwrap(obj)
    try:
        path = inspect.getsourcefile(target)
        block, first = inspect.getsourcelines(target)
    except (TypeError, OSError) as e:
        raise ShowError(f"show({obj!r}): no Python source to show ({e}); pass a function, class or method "
                        "of omni_ref") from None
    path = os.path.abspath(path)
    if os.path.commonpath([path, PACKAGE_ROOT]) != PACKAGE_ROOT:
        raise ShowError(f"show({obj!r}): {path} is not part of omni_ref; show displays the package's own code")
    block = [line.rstrip("\n") for line in block]
    start, end = _select(block, lines)
    if inspect.ismodule(target):
        first = 1
    name = getattr(target, "__qualname__", getattr(target, "__name__", repr(target)))
    rel = os.path.relpath(path, os.path.dirname(PACKAGE_ROOT))
    return Source(name=name, path=rel, first=first + start, text="\n".join(block[start:end]))


def show(obj, lines=None) -> Source:
    """Display the source of `obj` from the package itself (file and line numbers included).

    `lines` picks a part: `(first, last)` counted from 1 at the definition line, or `(text_a, text_b)`: from
    the first line containing `text_a` to the next line containing `text_b`, both included. Returns the
    `Source`, which Jupyter renders highlighted and `print` writes as numbered plain text."""
    return source_of(obj, lines)
