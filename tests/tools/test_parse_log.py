"""parse_log writes what BVLC's tools/extra/parse_log.py writes, byte for byte.

Golden files (tests/golden/parse_log): bvlc_lenet.log is the log of BVLC's `caffe train` of
LeNet (300 iterations, display 25, test every 100, on LMDBs made by our convert_mnist_data
from the MNIST test images; GLOG_log_year_in_prefix=false so its glog 0.6 writes BVLC 1.0's
line format); ours_lenet.log is this project's `caffe train` of the same solver; edge.log is
part of the BVLC log with lines BVLC skips (a year-prefixed line, a line without a time, a
"nan" value), an unfinished last test row and a new year. Each LOG.train / LOG.test beside
them is the output of BVLC's parse_log.py (run unchanged by Python 2.7) on that log.
"""
import shutil
from pathlib import Path

import pytest

from caffe.tools import parse_log

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "parse_log"


@pytest.mark.parametrize("log", ["bvlc_lenet.log", "ours_lenet.log", "edge.log"])
def test_output_equals_bvlc_byte_for_byte(tmp_path, log):
    # A fresh copy: the year comes from the file's creation time, as in BVLC.
    shutil.copy(GOLDEN / log, tmp_path / log)
    out = tmp_path / "out"
    out.mkdir()
    assert parse_log.main([str(tmp_path / log), str(out)]) == 0
    for suffix in (".train", ".test"):
        expected = (GOLDEN / (log + suffix)).read_bytes()
        assert (out / (log + suffix)).read_bytes() == expected, suffix


def test_bvlc_conventions(tmp_path):
    train, test = parse_log.parse_log(GOLDEN / "edge.log")
    assert list(train[0]) == ["NumIters", "Seconds", "LearningRate", "loss"]
    assert isinstance(train[0]["NumIters"], float)          # written 0.0
    assert (GOLDEN / "edge.log.train").read_bytes().splitlines()[1].startswith(b"0.0,")
    assert b"\r\n" in (GOLDEN / "edge.log.train").read_bytes()   # csv's excel dialect
    assert [r["NumIters"] for r in test][-1] == 300.0       # the unfinished row is dropped
    assert all(r["loss"] != 9.99 and r["loss"] != 7.0 for r in train)  # skipped lines
    assert train[-1]["NumIters"] == 350.0 and train[-1]["Seconds"] > 31 * 86400 - 86400


def test_empty_table_is_not_written(tmp_path, capsys):
    log = tmp_path / "short.log"
    log.write_text("I0101 00:00:00.000000 1 solver.cpp:1] Solving X\n"
                   "I0101 00:00:01.000000 1 solver.cpp:1] Iteration 0, loss = 1\n"
                   "I0101 00:00:01.000000 1 solver.cpp:1]     Train net output #0: loss = 1\n"
                   "I0101 00:00:02.000000 1 solver.cpp:1] Iteration 1, loss = 1\n"
                   "I0101 00:00:02.000000 1 solver.cpp:1]     Train net output #0: loss = 2\n")
    assert parse_log.main([str(log), str(tmp_path), "--verbose"]) == 0
    assert (tmp_path / "short.log.train").read_bytes() == \
        b"NumIters,Seconds,LearningRate,loss\r\n0.0,1.0,nan,1.0\r\n1.0,2.0,nan,2.0\r\n"
    assert not (tmp_path / "short.log.test").exists()
    assert "Not writing" in capsys.readouterr().out
