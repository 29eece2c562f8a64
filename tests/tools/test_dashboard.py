"""Training dashboards: -log_dir's CSV tables and TensorBoard events, plot_training_log's
charts from logs and CSVs, and the progress bar's loss / lr / images/s."""
import csv
import io
import math
import sys

import pytest
from PIL import Image

from caffe.solvers import dashboard, get_solver
from caffe.tools import caffe as caffe_tool
from caffe.tools import plot_training_log
from tests.tools.conftest import BVLC_LOG

# 20 iterations, display every 5, test (2 batches) every 10 and at the start and the end.
TRAIN_ITERS, TEST_ITERS = [0, 5, 10, 15], [0, 10, 20]
TRAIN_COLUMNS = ["NumIters", "Seconds", "LearningRate", "loss", "SmoothedLoss"]
TEST_COLUMNS = ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]


def read_table(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def inv_rate(iteration):
    return 0.5 * (1 + 0.1 * iteration) ** -0.75   # SOLVER's lr policy


def test_cli_log_dir_writes_the_tables(workdir, capsys):
    code = caffe_tool.main(["train", "-solver", "solver.prototxt", "-weights", "init.caffemodel",
                            "-log_dir", "runs"])
    assert code == 0, capsys.readouterr().err
    columns, train = read_table(workdir / "runs" / "train.csv")
    assert columns == TRAIN_COLUMNS
    assert [int(r["NumIters"]) for r in train] == TRAIN_ITERS
    # A train row has the rate its own update used (Caffe logs it after the outputs).
    for row in train:
        assert float(row["LearningRate"]) == pytest.approx(inv_rate(int(row["NumIters"])))
    seconds = [float(r["Seconds"]) for r in train]
    assert seconds == sorted(seconds) and seconds[0] >= 0
    assert all(math.isfinite(float(r["loss"])) and float(r["SmoothedLoss"]) > 0 for r in train)

    columns, test = read_table(workdir / "runs" / "test.csv")
    assert columns == TEST_COLUMNS
    assert [int(r["NumIters"]) for r in test] == TEST_ITERS
    assert test[0]["LearningRate"] == ""                # no update before the first test
    assert float(test[1]["LearningRate"]) == pytest.approx(inv_rate(9))
    assert float(test[-1]["accuracy"]) == 1.0
    assert float(test[-1]["loss"]) < float(test[0]["loss"])
    # glog's own -log_dir: the text log, which parse_log and plot_training_log read too.
    log_text = (workdir / "runs" / "caffe.INFO").read_text()
    assert "Test net output #0: accuracy = 1" in log_text
    assert plot_training_log.chart_series(6, str(workdir / "runs" / "caffe.INFO"))[0] == \
        TRAIN_ITERS


def test_pycaffe_attach_resume_and_multi_element_outputs(workdir):
    solver = get_solver("solver.prototxt")
    solver.net.copy_from("init.caffemodel")
    with dashboard.attach(solver, "runs", tensorboard=False):
        solver.step(10)
    solver.snapshot()
    _, first = read_table(workdir / "runs" / "train.csv")
    assert [int(r["NumIters"]) for r in first] == [0, 5]

    # A resumed run keeps the earlier rows before its first iteration and replaces the rest.
    (workdir / "runs" / "train.csv").write_text(
        (workdir / "runs" / "train.csv").read_text() + "10,9.0,0.1,7.0,7.0\n")
    again = get_solver("solver.prototxt")
    again.restore("tiny_iter_10.solverstate")
    with dashboard.attach(again, "runs", tensorboard=False):
        again.solve()
    _, train = read_table(workdir / "runs" / "train.csv")
    assert [int(r["NumIters"]) for r in train] == TRAIN_ITERS
    assert float(train[2]["loss"]) != 7.0

    assert dashboard.named_values([("acc", 1.0), ("loss", 2.0), ("acc", 3.0)]) == \
        {"acc_0": 1.0, "loss": 2.0, "acc_1": 3.0}


def test_tensorboard_scalars(workdir):
    if dashboard.tensorboard_writer_class() is None:
        pytest.skip("the tensorboard package is not installed: TensorBoard output is off "
                    "(pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    solver = get_solver("solver.prototxt")
    solver.net.copy_from("init.caffemodel")
    with dashboard.attach(solver, "runs", tensorboard=True):
        solver.solve()
    events = EventAccumulator(str(workdir / "runs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/smoothed_loss", "test/accuracy",
            "test/loss"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == TRAIN_ITERS
    assert [e.step for e in events.Scalars("test/accuracy")] == TEST_ITERS
    assert events.Scalars("test/accuracy")[-1].value == 1.0
    rates = [e.value for e in events.Scalars("train/learning_rate")]
    assert rates == pytest.approx([inv_rate(i) for i in TRAIN_ITERS], rel=1e-6)


def test_missing_tensorboard_is_a_clear_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(dashboard, "tensorboard_writer_class", lambda: None)
    with caplog.at_level("WARNING", logger="caffe.dashboard"):
        dashboard.TrainingLog(tmp_path / "runs").close()
    assert "TensorBoard output is unavailable" in caplog.text
    with pytest.raises(ImportError, match=r"pip install .pycaffe\[tensorboard\]"):
        dashboard.TrainingLog(tmp_path / "runs", tensorboard=True)


# -- plot_training_log -------------------------------------------------------------------------
def assert_png(path, min_size=(300, 200)):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        # Curves and text: the picture is not one flat colour.
        assert len(image.convert("RGB").getcolors(1 << 20)) > 10


@pytest.fixture
def trained(workdir):
    """A run's -log_dir (CSV tables) and its glog text log."""
    solver = get_solver("solver.prototxt")
    solver.net.copy_from("init.caffemodel")
    with dashboard.attach(solver, "runs", tensorboard=False):
        solver.solve()
    return workdir / "runs"


def test_series_from_csv_tables(trained):
    for source in (trained, trained / "train.csv", trained / "test.csv"):
        series = plot_training_log.standard_series(str(source))
        assert sorted(series) == list(range(8))
        for chart_type, (x, y) in series.items():
            assert len(x) == len(y) > 0
            assert all(math.isfinite(v) for v in x + y)
        assert series[6][0] == TRAIN_ITERS and series[0][0] == TEST_ITERS
        assert series[0][1][-1] == 1.0
        assert series[4][1] == pytest.approx([inv_rate(i) for i in TRAIN_ITERS])
        # The train loss chart is the net's loss output, not the smoothed one.
        _, train = read_table(trained / "train.csv")
        assert series[6][1] == [float(r["loss"]) for r in train]


def test_series_from_a_bvlc_log(tmp_path):
    (tmp_path / "bvlc.log").write_text(BVLC_LOG)
    series = plot_training_log.standard_series(str(tmp_path / "bvlc.log"))
    assert series[6] == ([0, 100], [2.31, 0.2])
    assert series[7] == ([1.1, 3.0], [2.31, 0.2])
    assert series[0][1][0] == 0.0825 and series[2][1][0] == 2.30
    assert series[4] == ([0, 100], [0.01, 0.01])


def test_plot_all_and_one_chart_are_pngs(trained, tmp_path):
    (tmp_path / "bvlc.log").write_text(BVLC_LOG)
    drawn = plot_training_log.plot_all(str(tmp_path / "all.png"),
                                       [str(trained), str(tmp_path / "bvlc.log")])
    assert drawn == {t: 2 for t in range(8)}
    assert_png(tmp_path / "all.png", (1500, 600))
    for chart_type in ("1", "7"):
        out = tmp_path / f"chart{chart_type}.png"
        assert plot_training_log.main([chart_type, str(out), str(trained / "test.csv")]) == 0
        assert_png(out)


def test_plot_errors(tmp_path, capsys):
    (tmp_path / "empty.log").write_text("nothing here\n")
    assert plot_training_log.main(["all", str(tmp_path / "x.png"), str(tmp_path / "empty.log")]) \
        == 1
    assert "no training curves" in capsys.readouterr().err
    assert plot_training_log.main(["9", "x.png", str(tmp_path / "empty.log")]) == 1


# -- the progress bar ---------------------------------------------------------------------------
def test_progress_bar_shows_loss_lr_and_images_per_second(workdir, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert caffe_tool.main(["train", "-solver", "solver.prototxt"]) == 0
    final = terminal.getvalue().split("\r")[-1]
    assert "20/20" in final
    # Shown after the last iteration's step: its smoothed loss and the rate it used before.
    loss, rate, speed = (final.split(f"{key}=")[1].split(",")[0].split("]")[0].strip()
                         for key in ("loss", "lr", "images/s"))
    assert float(loss) > 0 and float(speed) > 0
    assert float(rate) == pytest.approx(inv_rate(18), rel=1e-3)


def test_images_per_iteration(workdir):
    solver = get_solver("solver.prototxt")
    assert dashboard.images_per_iteration(solver) == 6      # the Parameter "data" batch
    solver.param.iter_size = 3
    assert dashboard.images_per_iteration(solver) == 18
