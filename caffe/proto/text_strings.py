"""Strings in protobuf text: one UTF-8 check for both prototxt parsers.

protobuf's Python text_format refuses a string whose escapes (\\377, \\xff) spell invalid
UTF-8; protoc's C++ parser (caffe.proto.fast_text, files of 1 MiB or more) accepts it for
proto2 and the name then breaks whatever saves or reloads the net. parse_text runs this
check before either parser, so both refuse the same text with the same message.
"""
import re

from google.protobuf import text_encoding


_STRING_ESCAPE = re.compile(r"\\(?:[0-7]|x[0-9A-Fa-f])")
_QUOTED = re.compile(r"""#.*|"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'""")


def _has_bytes_field(descriptor, seen=None):
    seen = set() if seen is None else seen
    if descriptor.full_name in seen:
        return False
    seen.add(descriptor.full_name)
    return any(f.type == f.TYPE_BYTES or (f.message_type is not None and
                                          _has_bytes_field(f.message_type, seen))
               for f in descriptor.fields)


def check_text_strings(text, msg, source, error):
    """Refuse a quoted string whose escapes (\\377, \\xff) spell invalid UTF-8, naming the
    line; messages with bytes fields (Datum) are left to the parser. Only lines holding an
    octal or hex escape are looked at, so large files cost one regex search."""
    if _has_bytes_field(msg.DESCRIPTOR):
        return
    checked = -1
    for found in _STRING_ESCAPE.finditer(text):
        start = text.rfind("\n", 0, found.start()) + 1
        if start == checked:
            continue
        checked = start
        end = text.find("\n", found.end())
        line = text[start:] if end < 0 else text[start:end]
        for literal in _string_runs(line):
            try:
                text_encoding.CUnescape(literal).decode("utf-8")
            except UnicodeDecodeError as e:
                number = text.count("\n", 0, start) + 1
                raise error(f"{source} line {number}: string \"{literal}\" is not UTF-8 "
                                 f"text (byte {e.start} of its value is {e.object[e.start]:#x}); "
                                 f"Caffe names and strings must be UTF-8") from None
            except ValueError:
                continue                    # a malformed escape: the parser names it


def _string_runs(line):
    """The string values of a line: adjacent literals ("a" "b") joined, comments skipped."""
    runs, current, last_end = [], None, None
    for m in _QUOTED.finditer(line):
        if m.group(0).startswith("#"):
            break
        literal = m.group(1) if m.group(1) is not None else m.group(2)
        if current is not None and line[last_end:m.start()].strip() == "":
            current += literal
        else:
            if current is not None:
                runs.append(current)
            current = literal
        last_end = m.end()
    if current is not None:
        runs.append(current)
    return [r for r in runs if "\\" in r]
