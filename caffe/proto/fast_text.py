"""Parsing large prototxt files with protobuf's C++ text parser (protoc --encode).

protobuf's Python text_format parser is pure Python under every backend (upb included) and
reads about 0.5 MB/s: a 63 MB net definition takes minutes, which looks like a hang. BVLC
Caffe parsed prototxt with the C++ TextFormat parser; protoc, from the grpcio-tools package
(`pip install pycaffe[prototxt]`) or on PATH, runs that parser: it turns the text into the
binary message, which upb parses at memory speed. Small files keep text_format (starting protoc
costs more than they take). Without protoc, a large file is parsed by text_format after a
message saying how long it will take.
"""
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import threading

from ..child_process import child_env, python_module_command

log = logging.getLogger("caffe")

# Text of at least this many bytes goes to protoc when it is available.
FAST_TEXT_BYTES = 2 ** 20
# text_format's speed on a busy machine, for the message about slow parses.
_TEXT_FORMAT_BYTES_PER_S = 400_000

_PROTO_DIR = os.path.dirname(os.path.abspath(__file__))
_ERROR = re.compile(r"^input:(\d+):(\d+): (.*)$", re.M)


def _protoc_command():
    if importlib.util.find_spec("grpc_tools") is not None:
        # Run so that a grpc_tools/ folder in the working folder is not what runs.
        return python_module_command("grpc_tools.protoc")
    found = shutil.which("protoc")
    return [found] if found else None


class TextParseError(Exception):
    """protoc refused the text: line (or None) and its reason."""

    def __init__(self, line, reason):
        super().__init__(reason)
        self.line, self.reason = line, reason


def parse_large(text, msg, source):
    """Parse `text` into msg with protoc when it is large and protoc exists; False if not done.

    Raises TextParseError(line, reason) when protoc refuses the text.
    """
    data = text.encode("utf-8")
    if len(data) < FAST_TEXT_BYTES or not os.path.exists(os.path.join(_PROTO_DIR, "caffe.proto")):
        return False
    command = _protoc_command()
    if command is None:
        seconds = len(data) / _TEXT_FORMAT_BYTES_PER_S
        log.warning("Parsing %s (%.0f MB) with protobuf's Python text parser: this takes about "
                    "%.0f s (pip install grpcio-tools, or put protoc on PATH, for protobuf's "
                    "C++ parser)", source, len(data) / 1e6, seconds)
        return False
    chunks = _split_top_level(data, _jobs())
    if len(chunks) > 1:
        try:
            parts = _encode_all(command, chunks, msg)
            _check_singular_once(parts, msg)
        except (TextParseError, OSError):
            parts = None            # a split inside a message, or a real error: see below
        if parts is not None:
            msg.Clear()
            for part in parts:
                msg.MergeFrom(part)
            return True
    try:
        whole = _encode_all(command, [data], msg, raw=True)[0]
    except OSError as e:
        log.info("protoc could not run (%s); parsing %s with text_format", e, source)
        return False
    msg.Clear()
    msg.MergeFromString(whole)
    return True


def _jobs():
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:
        return max(1, min(8, os.cpu_count() or 1))


# A top-level `layer {` / `layers {` starts a line (strings cannot span lines, and a comment
# ends at its line), so a split there is right unless the line is nested in another message:
# then a chunk has unbalanced braces, protoc refuses it, and the text is parsed whole.
_LAYER_START = re.compile(rb"^layers?\s*\{", re.M)


def _split_top_level(data, parts):
    """data cut into about `parts` pieces at lines that start a layer."""
    if parts <= 1:
        return [data]
    cuts, step = [0], len(data) // parts
    for i in range(1, parts):
        found = _LAYER_START.search(data, max(i * step, cuts[-1] + 1))
        if found is None:
            break
        cuts.append(found.start())
    cuts.append(len(data))
    return [data[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def _encode_all(command, chunks, msg, raw=False):
    """protoc --encode on each chunk, all at once; messages (or bytes, raw=True), in order."""
    command = command + [f"--encode={msg.DESCRIPTOR.full_name}", f"-I{_PROTO_DIR}",
                         "caffe.proto"]
    procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=child_env()) for _ in chunks]
    outputs = [None] * len(chunks)
    # Feed and drain every process from threads: each blocks on its pipes.
    threads = [threading.Thread(target=lambda i=i: outputs.__setitem__(
        i, procs[i].communicate(chunks[i]))) for i in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results, line_offset = [], 0
    for chunk, proc, (out, err) in zip(chunks, procs, outputs):
        if proc.returncode != 0:
            errors = err.decode(errors="replace")
            found = _ERROR.search(errors)
            if found:
                raise TextParseError(line_offset + int(found.group(1)), found.group(3).strip())
            raise TextParseError(None, errors.strip()[:500] or f"protoc exit {proc.returncode}")
        line_offset += chunk.count(b"\n")
        if raw:
            results.append(out)
        else:
            part = type(msg)()
            part.MergeFromString(out)
            results.append(part)
    return results


def _check_singular_once(parts, msg):
    """A non-repeated field given twice is an error for the C++ parser, as for BVLC."""
    seen = set()
    for part in parts:
        for field, _ in part.ListFields():
            if field.is_repeated:
                continue
            if field.name in seen:
                raise TextParseError(None, f"non-repeated field \"{field.name}\" is specified "
                                           f"multiple times")
            seen.add(field.name)
