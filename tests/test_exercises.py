"""Every exercise's checker: its worked answer is right, a typical wrong answer gets its hint, and the
placeholder `...` is 'not answered yet' (which is what the saved notebooks show)."""
import pytest

from omni_ref import exercises

ALL = exercises.registry()


def test_every_numbered_notebook_has_exercises():
    notebooks = {key.split(".")[0] for key in ALL}
    assert {"00", "01", "02", "03", "04", "05", "06", "07", "08", "09"} <= notebooks, sorted(notebooks)
    for nb in notebooks:
        assert sum(k.startswith(nb + ".") for k in ALL) >= 2, f"notebook {nb} has fewer than two exercises"


@pytest.mark.parametrize("key", sorted(ALL))
def test_right_answer_passes(key):
    verdict = exercises.check(key, ALL[key].right())
    assert verdict.status == exercises.RIGHT, verdict


@pytest.mark.parametrize("key", sorted(ALL))
def test_wrong_answer_gets_its_hint(key):
    verdict = exercises.check(key, ALL[key].wrong())
    assert verdict.status == exercises.WRONG, verdict
    assert verdict.message and verdict.message != ALL[key].praise


@pytest.mark.parametrize("key", sorted(ALL))
def test_placeholder_is_not_answered(key):
    assert exercises.check(key, ...).status == exercises.NOT_ANSWERED
    assert repr(exercises.check(key)) == f"{key} not answered yet: replace the ... with your answer"


def test_a_stub_function_is_not_answered_and_a_crash_is_wrong():
    def stub(*args):
        ...

    def crash(*args):
        raise ZeroDivisionError("oops")

    for key, ex in ALL.items():
        if callable(ex.right()):
            assert exercises.check(key, stub).status == exercises.NOT_ANSWERED, key
            crashed = exercises.check(key, crash)
            assert crashed.status == exercises.WRONG and "ZeroDivisionError" in crashed.message, key


def test_unknown_key_names_the_known_ones():
    with pytest.raises(KeyError, match="the exercises are"):
        exercises.check("99.9", 1)
