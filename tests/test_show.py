"""omni_ref.show: the package's own source, with its file and line numbers, never a pasted copy."""
import inspect

import pytest

import omni_ref
from omni_ref import moe
from omni_ref.tools.source import ShowError


def test_show_is_the_live_source_with_file_and_line_numbers():
    src = omni_ref.show(moe.route)
    lines, first = inspect.getsourcelines(moe.route)
    assert src.path == "omni_ref/moe.py" and src.first == first
    assert src.text == "".join(lines).rstrip("\n")
    text = str(src)
    assert text.splitlines()[0] == f"omni_ref/moe.py:{first}-{src.last}  (route)"
    assert text.splitlines()[1].lstrip().startswith(f"{first}  def route")


def test_show_a_method_and_a_class():
    method = omni_ref.show(moe.Experts.forward)
    assert method.name == "Experts.forward" and method.text.lstrip().startswith("def forward")
    cls = omni_ref.show(moe.Experts)
    assert cls.text.startswith("class Experts") and method.text in cls.text


def test_line_ranges_by_number_and_by_text():
    whole = omni_ref.show(moe.route)
    part = omni_ref.show(moe.route, lines=(2, 4))
    assert part.first == whole.first + 1 and part.lines == whole.lines[1:4]
    first_line = whole.lines[1].strip()
    by_text = omni_ref.show(moe.route, lines=(first_line, first_line))
    assert by_text.lines == [whole.lines[1]]


def test_html_is_highlighted_and_numbered():
    html = omni_ref.show(moe.route)._repr_html_()
    assert "omni_ref/moe.py" in html and "route" in html and "<span" in html
    assert str(omni_ref.show(moe.route).first) in html


@pytest.mark.parametrize("bad, match", [
    ((0, 3), "counted from 1"), ((5, 2), "counted from 1"), (("no such text", "return"), "no line contains"),
    ((1, 2, 3), "give \\(first, last\\)"),
])
def test_bad_line_ranges_are_explained(bad, match):
    with pytest.raises(ShowError, match=match if "counted" not in match else "lines="):
        omni_ref.show(moe.route, lines=bad)


def test_code_outside_the_package_is_refused():
    with pytest.raises(ShowError, match="not part of omni_ref"):
        omni_ref.show(inspect.getsourcelines)
    with pytest.raises(ShowError, match="no Python source"):
        omni_ref.show(len)
