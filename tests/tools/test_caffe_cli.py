"""The `caffe` command (train / test / time / device_query) and the log tools.

The tiny net keeps its batch in two Parameter layers with lr_mult 0, so the data travels
inside the .caffemodel: `-weights init.caffemodel` feeds it (and exercises fine-tuning).
"""
import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import caffe
from caffe.solvers import SignalHandler, get_solver
from caffe.tools import caffe as caffe_tool
from caffe.tools import parse_log, plot_training_log
from tests.conftest import shared_path
from tests.tools.conftest import BVLC_LOG, NET, SOLVER

ROOT = Path(__file__).resolve().parents[2]
GLOG_LINE = r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] "


def run(capsys, *argv):
    code = caffe_tool.main(list(argv))
    return code, capsys.readouterr().err


def test_train_test_and_time(workdir, capsys):
    code, err = run(capsys, "train", "-solver", "solver.prototxt", "-weights", "init.caffemodel")
    assert code == 0, err
    assert "Finetuning from init.caffemodel" in err
    assert "Iteration 15 (" in err and "Iteration 15, lr = " in err
    assert "Iteration 10, Testing net (#0)" in err
    assert "    Test net output #0: accuracy = 1\n" in err
    assert "Optimization Done." in err
    for name in ("tiny_iter_10.caffemodel", "tiny_iter_20.caffemodel", "tiny_iter_20.solverstate"):
        assert (workdir / name).exists()
    for line in err.splitlines():
        assert re.match(GLOG_LINE, line), line

    code, err = run(capsys, "test", "--model=net.prototxt", "--weights=tiny_iter_20.caffemodel",
                    "-iterations", "3")
    assert code == 0, err
    assert "Running for 3 iterations." in err
    assert "Batch 2, accuracy = 1" in err
    assert "] accuracy = 1\n" in err
    assert "] loss = " in err and "(* 1 = " in err

    code, err = run(capsys, "time", "-model", "net.prototxt", "-iterations", "2")
    assert code == 0, err
    for layer in ("data", "label", "ip", "loss"):
        assert f"{layer:>10}\tforward: " in err and f"{layer:>10}\tbackward: " in err
    assert "Average Forward-Backward: " in err and "*** Benchmark ends ***" in err


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_flag(workdir, capsys, precision):
    code, err = run(capsys, "train", "-solver", "solver.prototxt", "-weights", "init.caffemodel",
                    "-precision", precision)
    assert code == 0, err
    name = {"bf16": "bfloat16", "fp16": "float16"}[precision]
    assert f"Computing in {name} with float32 master weights" in err
    assert "    Test net output #0: accuracy = 1\n" in err
    # The snapshot holds float32 masters, which a float32 net reads as they were.
    net = caffe.Net("net.prototxt", "tiny_iter_20.caffemodel", caffe.TEST)
    assert net.params["ip"][0].data.dtype == np.float32
    code, err = run(capsys, "test", "-model", "net.prototxt", "-weights",
                    "tiny_iter_20.caffemodel", "-iterations", "2", "-precision", precision)
    assert code == 0 and "] accuracy = 1\n" in err, err
    code, err = run(capsys, "time", "-model", "net.prototxt", "-iterations", "1",
                    "-precision", precision)
    assert code == 0 and "*** Benchmark ends ***" in err, err


def test_unknown_precision_flag(workdir, capsys):
    code, err = run(capsys, "train", "-solver", "solver.prototxt", "-precision", "fp8")
    assert code != 0 and "precision" in err and "fp8" in err, err


def test_resume_from_snapshot(workdir, capsys):
    code, err = run(capsys, "train", "-solver", "solver.prototxt", "-weights", "init.caffemodel")
    assert code == 0, err
    final = caffe.Net("net.prototxt", "tiny_iter_20.caffemodel", caffe.TEST)
    (workdir / "tiny_iter_20.caffemodel").unlink()
    code, err = run(capsys, "train", "-solver=solver.prototxt",
                    "-snapshot=tiny_iter_10.solverstate")
    assert code == 0, err
    assert "Resuming from tiny_iter_10.solverstate" in err
    assert "Iteration 5 (" not in err  # it went on from iteration 10
    again = caffe.Net("net.prototxt", "tiny_iter_20.caffemodel", caffe.TEST)
    np.testing.assert_allclose(again.params["ip"][0].data, final.params["ip"][0].data,
                               rtol=1e-6)


@pytest.mark.parametrize("argv,message", [
    (["train"], "Need a solver definition"),
    (["train", "-solver", "solver.prototxt", "-weights", "a", "-snapshot", "b"],
     "Give a snapshot to resume training or weights to finetune but not both"),
    (["test", "-model", "net.prototxt"], "Need model weights"),
    (["train", "-solver", "absent.prototxt"], "absent.prototxt: cannot read"),
    (["train", "-solver", "solver.prototxt", "-gpu", "0"], "no CUDA device"),
    (["test", "-model", "init.caffemodel", "-weights", "net.prototxt"],
     "model 'init.caffemodel' is a binary .caffemodel holding trained weights, not a net "
     "definition; the net definition (.prototxt) comes first"),
    (["test", "-model", "net.prototxt", "-weights", "net.prototxt"],
     "net.prototxt: a text file (a prototxt net definition?), not a binary .caffemodel"),
])
def test_bad_invocations(workdir, capsys, argv, message):
    if "-gpu" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, err = run(capsys, *argv)
    assert code == 1 and message in err, err


def test_help_lists_every_command_and_tool():
    text = caffe_tool.parse_flags([]) and caffe_tool.FLAGS.help_text()
    commands = text.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    for name in ["train", "test", "device_query", "time", "export", "zoo", "vis", "view"]:
        assert re.search(rf"^  {name} +\S", commands, re.M), name
    for name in caffe_tool.TOOLS:
        assert re.search(rf"\b{name}\b", text), name


def test_every_console_script_is_a_caffe_tool():
    """pyproject.toml's programs are all reachable (and listed) as `caffe NAME` too."""
    import tomllib
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) - {"caffe"} <= set(caffe_tool.TOOLS)


@pytest.mark.parametrize("name", sorted(caffe_tool.TOOLS))
def test_every_tool_help_names_the_tool(capsys, name):
    """`caffe NAME --help` (and the NAME program) print NAME, not "caffe" or "__main__"."""
    try:
        code = caffe_tool.main([name, "--help"])
    except SystemExit as e:       # argparse exits after printing help
        code = e.code
    out = capsys.readouterr().out
    assert code == 0, out
    first = out.lstrip().splitlines()[0]
    if first.startswith("usage:"):
        assert re.match(rf"usage: (caffe )?{name}( |$)", first), first
    else:
        assert name in "\n".join(out.splitlines()[:5]), out
    assert "__main__" not in out


@pytest.mark.parametrize("argv,flag", [
    (["train", "-solver", "typo.prototxt"], "solver"),
    (["train", "-solver", "{solver}", "-weights", "{solver},typo.caffemodel"], "weights"),
    (["train", "-solver", "{solver}", "-snapshot", "typo.solverstate"], "snapshot"),
    (["test", "-model", "{solver}", "-weights", "typo.caffemodel"], "weights"),
    (["time", "-model", "typo.prototxt"], "model"),
])
def test_missing_file_is_reported_before_torch_loads(tmp_path, argv, flag):
    """A mistyped file flag fails at once: torch (seconds to import) is never loaded."""
    (tmp_path / "solver.prototxt").write_text("")
    argv = [a.format(solver=tmp_path / "solver.prototxt") for a in argv]
    code = ("import sys\nfrom caffe.tools.caffe import main\n"
            f"status = main({argv!r})\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n"
            "sys.exit(status)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert proc.returncode == 1 and proc.stdout.strip() == "no torch", proc.stdout + proc.stderr
    typo = next(p for a in argv for p in a.split(",") if "typo" in p)
    assert f"{typo}: cannot read: No such file or directory (-{flag})" in proc.stderr


def test_unknown_command_prints_usage(capsys):
    code, err = run(capsys, "fly")
    assert code == 1 and "Unknown action: fly" in err and "device_query" in err


def test_weights_of_another_net_reach_the_user(workdir, capsys):
    (workdir / "other.prototxt").write_text(NET.replace("num_output: 3", "num_output: 7"))
    caffe.Net("other.prototxt", caffe.TRAIN).save("other.caffemodel")
    code, err = run(capsys, "train", "-solver", "solver.prototxt", "-weights", "other.caffemodel")
    assert code == 1
    assert "other.caffemodel: layer 'ip': cannot copy param 0" in err


def test_missing_snapshot_folder_fails_before_training(workdir, capsys):
    (workdir / "solver.prototxt").write_text(SOLVER.replace('"tiny"', '"no/such/dir/tiny"'))
    code, err = run(capsys, "train", "-solver", "solver.prototxt")
    assert code == 1 and "does not exist" in err and "Iteration 0" not in err


def test_device_query(capsys):
    code, err = run(capsys, "device_query")
    assert code == 0 and ("CPU" in err or "Device id" in err)


def test_signals_stop_and_snapshot(workdir):
    """SIGHUP snapshots and SIGINT stops, read once per iteration (Caffe's defaults)."""
    solver = get_solver("solver.prototxt")
    solver.net.copy_from("init.caffemodel")
    sent = {3: signal.SIGHUP, 6: signal.SIGINT}
    solver.add_callback(lambda: None, lambda: sent.get(solver.iter) and
                        os.kill(os.getpid(), sent[solver.iter]))
    with SignalHandler("stop", "snapshot") as handler:
        solver.set_action_function(handler)
        solver.solve()
    assert solver.iter == 7 and solver.requested_early_exit
    assert (workdir / "tiny_iter_4.solverstate").exists()
    assert (workdir / "tiny_iter_7.solverstate").exists()  # snapshot_after_train
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_progress_bar_only_on_a_terminal(workdir, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert caffe_tool.main(["train", "-solver", "solver.prototxt"]) == 0
    text = terminal.getvalue()
    assert "20/20" in text and "Optimization Done." in text


def test_command_line_subprocess(workdir):
    """The real entry point: flags after the command, glog lines on stderr, exit status."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "caffe.tools.caffe", "train",
                           "--solver", "solver.prototxt", "--weights", "init.caffemodel",
                           "--sigint_effect", "none"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Test net output #0: accuracy = 1" in proc.stderr
    assert proc.stdout == ""
    (workdir / "caffe.log").write_text(proc.stderr)


# -- parse_log / plot_training_log --------------------------------------------------
def test_parse_log_on_our_log(workdir, capsys):
    code, err = run(capsys, "train", "-solver", "solver.prototxt", "-weights", "init.caffemodel")
    assert code == 0
    (workdir / "train.log").write_text(err)
    assert parse_log.main(["train.log", "."]) == 0
    with open("train.log.train") as f:
        train = list(csv.DictReader(f))
    with open("train.log.test") as f:
        test = list(csv.DictReader(f))
    assert list(train[0]) == ["NumIters", "Seconds", "LearningRate", "loss"]
    assert [int(float(r["NumIters"])) for r in train] == [0, 5, 10, 15]
    # Caffe logs "lr =" after the outputs, so a row carries the rate of the display before
    assert float(train[2]["LearningRate"]) == pytest.approx(0.5 * (1 + 0.1 * 5) ** -0.75,
                                                            rel=1e-5)
    assert list(test[0]) == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]
    assert [int(float(r["NumIters"])) for r in test] == [0, 10, 20]
    assert float(test[-1]["accuracy"]) == 1.0
    assert all(float(r["Seconds"]) >= 0 for r in train + test)

    assert plot_training_log.main(["6", "loss.png", "train.log"]) == 0
    assert plot_training_log.main(["0", "acc.png", "train.log"]) == 0
    assert (workdir / "loss.png").stat().st_size > 0 and (workdir / "acc.png").exists()


def test_parse_log_on_a_bvlc_log(tmp_path):
    (tmp_path / "bvlc.log").write_text(BVLC_LOG)
    train, test = parse_log.parse_log(str(tmp_path / "bvlc.log"))
    assert train == [
        {"NumIters": 0, "Seconds": 1.1, "LearningRate": 0.01, "loss": 2.31},
        {"NumIters": 100, "Seconds": 3.0, "LearningRate": 0.01, "loss": 0.2}]
    # BVLC's parse_log drops the unfinished last row: here the only test row.
    assert test == []
    _, test = parse_log.parse_log(str(tmp_path / "bvlc.log"), keep_unfinished=True)
    assert test[0]["accuracy"] == 0.0825 and test[0]["loss"] == 2.30


# -- the reference's own LeNet run, resumed from its snapshot ------------------------------
@pytest.mark.slow
def test_bvlc_lenet_run_resumes(tmp_path, monkeypatch, capsys):
    from caffe.tools import convert_mnist_data as convert
    source = shared_path("golden", "formats", "bvlc_lenet_run")
    mnist = shared_path("data", "mnist")
    work = tmp_path / "run"
    shutil.copytree(source, work)
    monkeypatch.chdir(work)
    convert.build_mnist_lmdbs(str(mnist), str(work))
    code, err = run(capsys, "train", "--solver", "lenet_solver.prototxt",
                    "--snapshot", "lenet_iter_1000.solverstate")
    assert code == 0, err[-3000:]
    accuracy = [float(line.rsplit("=", 1)[1]) for line in err.splitlines()
                if "Test net output #0: accuracy" in line]
    assert "Iteration 2000, Testing net (#0)" in err
    assert accuracy[-1] >= 0.975, accuracy
    code, err = run(capsys, "test", "--model", "lenet_train_test.prototxt",
                    "--weights", "lenet_iter_2000.caffemodel", "--iterations", "20")
    assert code == 0, err[-3000:]
    scored = [float(line.rsplit("=", 1)[1]) for line in err.splitlines()
              if "] accuracy = " in line]
    assert scored and abs(scored[-1] - accuracy[-1]) < 1e-6


def test_test_and_time_run_the_inference_program(workdir, capsys, monkeypatch):
    from caffe import net_inference
    runs = []
    real_run = net_inference.Program.run

    def counted(self):
        runs.append(self.net.name)
        return real_run(self)
    monkeypatch.setattr(net_inference.Program, "run", counted)
    code, err = run(capsys, "test", "--model=net.prototxt", "--weights=init.caffemodel",
                    "-iterations", "2")
    assert code == 0, err
    assert len(runs) == 2 and "] loss = " in err
    code, err = run(capsys, "time", "-model", "net.prototxt", "-phase", "TEST",
                    "-iterations", "2")
    assert code == 0, err
    assert "Average Forward pass (whole net, inference program): " in err
    assert len(runs) == 5          # the untimed first pass and the two timed ones
