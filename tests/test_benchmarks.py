"""The benchmark's PyTorch models compute what our nets compute (same weights, same outputs,
same update), so that its timings compare the same work."""
import pytest
import torch

from benchmarks import run
from tests.conftest import shared_path


@pytest.mark.parametrize("row", ["lenet-train", "cifar10-train", "caffenet-fwd"])
def test_pytorch_side_matches_ours(row):
    models = shared_path("models")
    torch.manual_seed(0)
    net, solver, x, y, _ = run.build_ours(row, str(models), run.ROWS[row][3])
    model, step = run.build_torch(row, net)
    step.x, step.y = x.clone(), y
    assert run.check(row, net, solver, model, step) < 1e-4


def test_jpeg_lmdb_holds_encoded_jpegs_and_its_mean(tmp_path):
    from benchmarks import datasets
    from caffe.data import open_db
    from caffe.data.db import parse_datum
    from caffe.data.transformer import load_mean
    db, mean = datasets.jpeg_lmdb(str(tmp_path), count=3, size=32)
    with open_db(db) as d:
        datums = [parse_datum(v, k) for k, v in d]
    assert len(datums) == 3 and all(x.encoded and x.data[:2] == b"\xff\xd8" for x in datums)
    assert load_mean(mean).shape == (3, 32, 32)


def test_bvlc_lenet_files_are_caffes_with_our_paths(tmp_path):
    from benchmarks import bench_bvlc
    if not (bench_bvlc.BVLC / "src" / "examples" / "mnist").exists():
        pytest.skip("BVLC's source tree (/opt/bvlc/src) is not here")
    from caffe.formats import read_net_param, read_solver_param
    solver = bench_bvlc.lenet_files(tmp_path / "run", tmp_path, max_iter=7)
    sp = read_solver_param(str(solver))
    assert sp.max_iter == 7 and sp.solver_mode == sp.CPU
    assert sp.snapshot_prefix == f"{tmp_path}/run/lenet"
    net = read_net_param(sp.net)
    sources = {lp.data_param.source for lp in net.layer if lp.type == "Data"}
    assert sources == {str(tmp_path / "mnist_lmdb")}
