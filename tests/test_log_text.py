"""caffe.log_text: names in log lines cannot start a new line."""
from caffe.log_text import printable


def test_ordinary_names_print_unchanged():
    for name in ("conv1/7x7_s2", "loss", "caf\u00e9", "a b", "{{DATA}}", "x\\ny"):
        assert printable(name) is name or printable(name) == name


def test_control_characters_are_escaped():
    assert printable("a\nb") == "a\\nb"
    assert printable("a\rb\tc") == "a\\rb\\tc"
    assert printable("\x1b[31mred") == "\\x1b[31mred"
    assert printable("\x00\x7f\x85") == "\\x00\\x7f\\x85"
    assert printable("a\u2028b\u2029") == "a\\u2028b\\u2029"
    assert "\n" not in printable("".join(map(chr, range(0x20))))


def test_any_object_is_shown_by_str():
    assert printable(3) == "3"
