"""Fuzzing without atheris: hypothesis drives byte mutations of the seed corpora.

Not coverage-guided, but the mutations are the ones libFuzzer uses most (bit flips, byte and
integer overwrites with boundary values, insertions, deletions, block copies, splices of two
seeds), stacked a few at a time on a seed, so every input stays close to a valid file.
"""
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import targets

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF]
_INTERESTING_INTS = [0, 1, -1, 2 ** 31 - 1, -2 ** 31, 2 ** 32 - 1, 2 ** 63 - 1, 10 ** 12]


def corpus_files(name):
    folder = os.path.join(CORPUS, name)
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))]


def _seeds(name):
    seeds = []
    for path in corpus_files(name):
        with open(path, "rb") as f:
            seeds.append(f.read())
    return seeds or [b""]


@st.composite
def mutated(draw, seeds):
    """A seed with 1 to 8 random mutations applied."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.integers(0, 7))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == 0 and data:                                   # flip a bit
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1 and data:                                 # overwrite a byte
            data[pos] = draw(st.sampled_from(_INTERESTING) | st.integers(0, 255))
        elif kind == 2:                                          # insert bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == 3 and data:                                 # delete a run
            del data[pos:pos + draw(st.integers(1, 64))]
        elif kind == 4 and data:                                 # copy a block elsewhere
            n = draw(st.integers(1, 64))
            block = data[pos:pos + n]
            to = draw(st.integers(0, len(data)))
            data[to:to] = block
        elif kind == 5 and len(data) >= 4:                       # overwrite a boundary int
            value = draw(st.sampled_from(_INTERESTING_INTS))
            width = draw(st.sampled_from([1, 2, 4, 8]))
            raw = (value % 2 ** (8 * width)).to_bytes(width, draw(st.sampled_from(["little",
                                                                                   "big"])))
            data[pos:pos + width] = raw
        elif kind == 6:                                          # splice another seed
            other = draw(st.sampled_from(seeds))
            cut = draw(st.integers(0, len(other)))
            data = data[:pos] + bytearray(other[cut:])
        elif kind == 7 and data:                                 # ASCII digits (text files)
            data[pos:pos + 1] = str(draw(st.sampled_from(_INTERESTING_INTS))).encode()
    return bytes(data)


def fuzz_target(name, seconds, max_runs=0, workdir=None):
    """Fuzz one target for `seconds`; returns (inputs run, failure description or None)."""
    targets.setup()
    seeds = _seeds(name)
    count = [0]
    deadline = time.time() + seconds
    failure = [None]

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated(seeds))
    def check(data):
        count[0] += 1
        try:
            targets.run(name, data)
        except Exception:
            if workdir:
                os.makedirs(os.path.join(workdir, name), exist_ok=True)
                path = os.path.join(workdir, name, f"crash-{count[0]}")
                with open(path, "wb") as f:
                    f.write(data)
                failure[0] = path
            raise

    while time.time() < deadline and (not max_runs or count[0] < max_runs):
        try:
            check()
        except Exception as e:
            return count[0], failure[0] or f"{type(e).__name__}: {e}"
    return count[0], None
