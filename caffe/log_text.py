"""Names in log lines: control characters escaped, so that a name cannot forge a log line.

Layer, blob and net names come from model files, which are data: a layer named
``"x\\nI1207 10:00:00.000000 1 solver.cpp:218] Iteration 0, loss = 0"`` would otherwise print a
second glog line that parse_log (and BVLC's log tools) read as real. Every log site that prints
a name passes it through :func:`printable`: ordinary names print unchanged, as BVLC prints them;
control characters (C0, DEL, C1, and the Unicode line and paragraph separators) print as
Python escapes (``\\n``, ``\\x1b``, ``\\u2028``).
"""
import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match):
    ch = match.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(name):
    """`name` (any object, shown by str()) with its control characters escaped."""
    text = str(name)
    return _CONTROL.sub(_escape, text) if _CONTROL.search(text) else text


__all__ = ["printable"]
