"""The benchmarks compare the same work: the PyTorch models compute what our nets compute
(same weights, same outputs, same update), and bench_inference's corpus nets build, with the
small ones equal to OpenCV dnn and ONNX Runtime (its agreement check, run in CI)."""
import numpy as np
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


# -- bench_inference's corpus: every net builds; the small ones equal OpenCV dnn ------------
def _corpus():
    from benchmarks import inference_nets
    return inference_nets


@pytest.mark.parametrize("name", [e.name for e in _corpus().CORPUS])
def test_inference_corpus_net_builds(tmp_path, name):
    import caffe
    corpus = _corpus()
    entry = corpus.NETS[name]
    if entry.needs_shared:
        shared_path("models")
    proto = tmp_path / "net.prototxt"
    proto.write_text(entry.prototxt(batch=2))
    net = caffe.Net(str(proto), caffe.TEST)
    assert net.outputs and all(net.blobs[n].data.shape[0] == 2 for n in net.inputs)
    if "ssd" not in name:      # SSD's DetectionOutput rows are not per image
        assert all(net.blobs[n].data.shape[0] == 2 for n in net.outputs)


@pytest.mark.parametrize("name", [e.name for e in _corpus().CORPUS if e.small])
def test_inference_corpus_small_nets_equal_opencv(tmp_path, name):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer")
    from benchmarks.bench_inference import Engines
    corpus = _corpus()
    entry = corpus.NETS[name]
    if entry.needs_shared:
        shared_path("models")
    engines = Engines(entry, 1, tmp_path)
    errors = engines.check(tolerance=1e-4)
    assert "opencv" not in engines.refused, engines.refused
    assert errors["opencv"] <= 1e-4
    assert errors.get("ort", 0.0) <= 1e-4, engines.refused       # our own ONNX export
    # Outputs that mean something: not all zero, softmax rows not saturated.
    out = engines.runner("pycaffe", 1)()
    assert all(np.abs(v).max() > 0 for v in out.values())


def test_inference_tables_and_summaries_from_rows():
    from benchmarks import bench_inference as bench
    rows = [{"net": "a", "batch": 1, "threads": 1, "busy": False,
             "times": {"pycaffe": 0.002, "opencv": 0.001, "ort": 0.004}},
            {"net": "b", "batch": 1, "threads": 1, "busy": False,
             "times": {"pycaffe": 0.030, "opencv": 0.020}}]          # ORT refused the net
    table = bench.markdown(rows)
    assert "| a | 2.0 (1.0, 4.0) / 2.00 / 0.50 |" in table
    assert "| b | 30.0 (20.0, —) / 1.50 / — |" in table
    lines = bench.summarize(rows, "batch 1")
    assert "/opencv median 1.75 geomean 1.73 worst 2.00" in lines[0]
    assert "/ort median 0.50" in lines[0] and "/best median 1.75" in lines[0]   # a: x2, b: x1.5
