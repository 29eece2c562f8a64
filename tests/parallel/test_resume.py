"""The effective batch of a resumed snapshot on another number of workers (no processes)."""
import logging
from types import SimpleNamespace

import pytest

from caffe import parallel
from caffe.proto import caffe_pb2


def resumed(monkeypatch, recorded, workers, iter_size=1):
    monkeypatch.setitem(parallel.world_state, "count", workers)
    solver = SimpleNamespace(restored_batches=recorded,
                             param=caffe_pb2.SolverParameter(iter_size=iter_size))
    return parallel.keep_effective_batch(solver), solver


@pytest.mark.parametrize("recorded, workers, iter_size, expected", [
    ((2, 1), 1, 1, 2),      # 2 hosts -> 1: accumulate two batches
    ((4, 2), 2, 1, 4),
    ((1, 2), 2, 1, 1),      # 1 x iter_size 2 -> 2 workers
    ((2, 1), 2, 1, 1),      # same world: unchanged
    (None, 3, 2, 2),        # BVLC's state records nothing: unchanged
])
def test_iter_size_keeps_the_batches_per_iteration(monkeypatch, caplog, recorded, workers,
                                                   iter_size, expected):
    with caplog.at_level(logging.INFO, "caffe.parallel"):
        got, solver = resumed(monkeypatch, recorded, workers, iter_size)
    assert got == expected == solver.param.iter_size
    assert ("iter_size becomes" in caplog.text) == (expected != iter_size)


def test_warns_when_the_workers_cannot_split_the_batch(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, "caffe.parallel"):
        got, _ = resumed(monkeypatch, (1, 1), 2)
    assert got == 1
    assert "Cannot keep the effective batch of the snapshot (1 worker x iter_size 1 = 1 " \
           "batches of the net per iteration): 2 workers cannot split it evenly. Continuing " \
           "with 2 x iter_size 1 = 2 batches per iteration" in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING
