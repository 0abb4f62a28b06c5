"""Exercises for the notebooks, each with a checker: `omni_ref.exercises.check("03.2", answer)`.

Every notebook ends with a few exercises. A *predict-then-check* exercise asks for a number or a choice that you
work out on paper first ("how many audio tokens will 7.3 s of speech make?"); an *implement-it* exercise asks
for a small function ("write top-p"), which the checker runs on inputs of its own and compares with omni_ref.
`check` answers one of three ways, so the saved notebooks pass nbval with the placeholders left in:

    03.2 not answered yet: replace the ... with your answer
    03.2 wrong: <a hint that points at the idea, not the answer>
    03.2 right: <what the answer shows>

The exercises themselves live one module per notebook (`nb03.py` holds "03.1", "03.2", ...), beside the code
they ask about; `tests/test_exercises.py` checks that every exercise accepts its worked answer and gives its
hint for a typical wrong one. Worked solutions are in `notebooks/solutions/`.
"""
from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

NOT_ANSWERED, RIGHT, WRONG = "not answered yet", "right", "wrong"


class NotAnswered(Exception):
    """Raised inside a checker when the answer is still the placeholder (`...`, `None`, or a stub function)."""


@dataclass(frozen=True)
class Exercise:
    key: str                          # "03.2": notebook 03, exercise 2
    question: str                     # one line, as the notebook asks it
    judge: Callable[[Any], str | None]    # None when right, else a hint; may raise NotAnswered
    right: Callable[[], Any]          # builds a right answer (the tests use it; so can a stuck learner)
    wrong: Callable[[], Any]          # builds a typical wrong answer, whose hint the tests expect
    praise: str = ""                  # what a right answer shows, printed with the verdict


@dataclass(frozen=True)
class Verdict:
    key: str
    status: str                       # RIGHT | WRONG | NOT_ANSWERED
    message: str

    @property
    def ok(self) -> bool:
        return self.status == RIGHT

    def __repr__(self) -> str:
        return f"{self.key} {self.status}: {self.message}"

    __str__ = __repr__


_REGISTRY: dict[str, Exercise] = {}


def exercise(key: str, question: str, *, right: Callable[[], Any], wrong: Callable[[], Any], praise: str = ""):
    """Decorator for a checker `judge(answer) -> None | hint`, registering it under `key`."""
    def register(judge):
        if key in _REGISTRY:
            raise ValueError(f"exercise {key} is registered twice")
        _REGISTRY[key] = Exercise(key, question, judge, right, wrong, praise)
        return judge
    return register


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("nb"):
            importlib.import_module(f"{__name__}.{info.name}")


def registry() -> dict[str, Exercise]:
    """Every exercise, by key, in notebook order."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get(key: str) -> Exercise:
    exercises = registry()
    if key not in exercises:
        raise KeyError(f"no exercise {key!r}; the exercises are {', '.join(exercises)}")
    return exercises[key]


def question(key: str) -> str:
    return get(key).question


def check(key: str, answer: Any = ...) -> Verdict:
    """Judge `answer` to exercise `key`: right, wrong with a hint, or not answered yet (the `...` placeholder)."""
    ex = get(key)
    if answer is ... or answer is None:
        return Verdict(key, NOT_ANSWERED, "replace the ... with your answer")
    try:
        hint = ex.judge(answer)
    except NotAnswered:
        return Verdict(key, NOT_ANSWERED, "your function still returns None: fill in its body")
    except Exception as e:            # a learner's function that crashes is a wrong answer, said plainly
        return Verdict(key, WRONG, f"your answer raised {type(e).__name__}: {e}")
    if hint is None:
        return Verdict(key, RIGHT, ex.praise or "well done")
    return Verdict(key, WRONG, hint)


# ---- small helpers the checkers share ------------------------------------------------------------------------

def call(fn, *args, **kwargs):
    """Run a learner's function; a stub (body `...`, returns None, or NotImplementedError) is 'not answered'."""
    if not callable(fn):
        raise TypeError(f"expected a function, got {type(fn).__name__}")
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        raise NotAnswered from None
    if out is None:
        raise NotAnswered
    return out


def number(answer) -> float:
    """A numeric answer as a float, or a clear error for anything else."""
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) and not hasattr(answer, "item"):
        raise TypeError(f"expected a number, got {type(answer).__name__}")
    value = float(answer.item() if hasattr(answer, "item") else answer)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value
