"""gflags/glog conventions of the `caffe` command: every flag of BVLC's tools/caffe.cpp."""
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe
from caffe.tools import caffe as caffe_tool
from caffe.tools import gflags

ROOT = Path(__file__).resolve().parents[2]

NET = """name: "tiny"
layer { name: "data" type: "Parameter" top: "data" param { lr_mult: 0 }
        parameter_param { shape { dim: 2 dim: 4 } } }
layer { name: "label" type: "Parameter" top: "label" param { lr_mult: 0 }
        parameter_param { shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "staged" type: "Power" bottom: "ip" top: "staged" include { stage: "extra" } }
layer { name: "leveled" type: "Power" bottom: "ip" top: "leveled" include { min_level: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def parse(*argv):
    return caffe_tool.parse_flags(list(argv))


@pytest.fixture(autouse=True)
def _quiet_logger():
    logger = logging.getLogger("caffe")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers
    caffe_tool.log_to_stderr()


# -- spellings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", [["-iterations", "7"], ["--iterations", "7"],
                                      ["-iterations=7"], ["--iterations=7"]])
def test_value_spellings(spelling):
    assert parse("time", *spelling).iterations == 7


@pytest.mark.parametrize("argv, expected", [
    (["-overwrite_snapshots"], True), (["--overwrite_snapshots"], True),
    (["-overwrite_snapshots=true"], True), (["-overwrite_snapshots=1"], True),
    (["-nooverwrite_snapshots"], False), (["-overwrite_snapshots=false"], False),
    (["--overwrite_snapshots=no"], False), ([], False)])
def test_bool_spellings(argv, expected):
    assert parse("train", *argv).overwrite_snapshots is expected


def test_a_bool_never_takes_the_next_argument():
    args = parse("-allow_python_layers", "false", "train")
    assert args.allow_python_layers is True and args.command == "false"


def test_flags_before_and_after_the_command_and_double_dash():
    assert parse("-model", "m", "time").command == "time"
    assert parse("time", "-model", "m").model == "m"
    assert parse("time", "--", "-model").positional == ["-model"]


# Each flag of BVLC's tools/caffe.cpp: a command-line value -> the value the command uses.
BVLC_FLAGS = {
    "gpu": ("0,1", "0,1"), "solver": ("s.prototxt", "s.prototxt"),
    "model": ("m.prototxt", "m.prototxt"), "phase": ("TEST", "TEST"), "level": ("3", 3),
    "stage": ("a,b", "a,b"), "snapshot": ("x.solverstate", "x.solverstate"),
    "weights": ("a.caffemodel,b.caffemodel", "a.caffemodel,b.caffemodel"),
    "iterations": ("12", 12), "sigint_effect": ("snapshot", "snapshot"),
    "sighup_effect": ("none", "none"),
}
BVLC_DEFAULTS = {"gpu": "", "solver": "", "model": "", "phase": "", "level": 0, "stage": "",
                 "snapshot": "", "weights": "", "iterations": 50, "sigint_effect": "stop",
                 "sighup_effect": "snapshot"}


@pytest.mark.parametrize("name", sorted(BVLC_FLAGS))
def test_every_bvlc_flag(name):
    text, value = BVLC_FLAGS[name]
    assert getattr(parse("train", f"-{name}", text), name) == value
    assert getattr(parse("train", f"--{name}={text}"), name) == value
    assert getattr(parse("train"), name) == BVLC_DEFAULTS[name]


def test_signal_actions_match_the_solver():
    from caffe.solvers.signals import ACTIONS
    from caffe.tools.caffe_flags import ACTIONS as FLAG_ACTIONS
    assert set(FLAG_ACTIONS) == set(ACTIONS)
    assert caffe_tool.main(["train", "-sigint_effect", "explode"]) == 1


@pytest.mark.parametrize("abbreviation", ["-iter", "-wei", "--itera=3", "-sol"])
def test_no_prefix_abbreviations(capsys, abbreviation):
    assert caffe_tool.main(["time", abbreviation, "3"]) == 1
    name = abbreviation.lstrip("-").split("=")[0]
    assert f"ERROR: unknown command line flag '{name}'" in capsys.readouterr().err


def test_bad_values_are_gflags_errors(capsys):
    assert caffe_tool.main(["time", "-iterations", "many"]) == 1
    assert "illegal value 'many'" in capsys.readouterr().err
    assert caffe_tool.main(["time", "-model"]) == 1
    assert "missing its argument" in capsys.readouterr().err


# -- gflags' own flags ---------------------------------------------------------------------------
def test_version(capsys):
    assert caffe_tool.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("caffe version 1.0.0")


@pytest.mark.parametrize("flag", ["--help", "-help", "--helpfull"])
def test_help_lists_every_flag(capsys, flag):
    assert caffe_tool.main([flag]) == 1          # gflags exits 1 after help
    out = capsys.readouterr().out
    for name in list(BVLC_FLAGS) + ["minloglevel", "logtostderr", "v", "log_dir"]:
        assert f"-{name} (" in out
    assert "usage: caffe <command> <args>" in out


def test_helpshort_lists_the_program_flags_only(capsys):
    assert caffe_tool.main(["--helpshort"]) == 1
    out = capsys.readouterr().out
    assert "-iterations (" in out and "-minloglevel (" not in out


def test_flagfile(tmp_path):
    inner = tmp_path / "inner.flags"
    inner.write_text("--phase=TEST\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"# a comment\n--iterations=4\n-nooverwrite_snapshots\n"
                     f"--flagfile={inner}\n")
    args = parse("time", f"-flagfile={outer}", "-level", "2")
    assert (args.iterations, args.phase, args.level) == (4, "TEST", 2)
    assert caffe_tool.main(["time", "-flagfile", str(tmp_path / "absent")]) == 1


def test_fromenv_tryfromenv_undefok(monkeypatch):
    monkeypatch.setenv("FLAGS_iterations", "9")
    assert parse("time", "--fromenv=iterations").iterations == 9
    assert parse("time", "--tryfromenv=level").level == 0
    assert parse("time", "--undefok=fancy", "--fancy=1").command == "time"
    with pytest.raises(gflags.FlagError, match="FLAGS_level not found"):
        parse("time", "--fromenv=level")


# -- glog's flags and GLOG_ variables ---------------------------------------------------------
def _log_lines(capsys, argv, env=None, monkeypatch=None):
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    args = parse("time", *argv)
    caffe_tool._configure_logging(args)
    log = logging.getLogger("caffe.tools")
    log.debug("a debug line")
    log.info("an info line")
    log.warning("a warning line")
    log.error("an error line")
    return capsys.readouterr().err


def test_default_logs_info_to_stderr_with_glog_prefix(capsys):
    err = _log_lines(capsys, [])
    assert "an info line" in err and "a debug line" not in err
    assert err.splitlines()[0].startswith("I") and "] an info line" in err


@pytest.mark.parametrize("argv, env, shown, hidden", [
    (["-minloglevel", "1"], {}, ["a warning line"], ["an info line"]),
    (["-minloglevel=2"], {}, ["an error line"], ["a warning line"]),
    ([], {"GLOG_minloglevel": "2"}, ["an error line"], ["a warning line", "an info line"]),
    (["-minloglevel=0"], {"GLOG_minloglevel": "2"}, ["an info line"], []),  # flag wins
    (["-v", "1"], {}, ["a debug line"], []),
    (["-logtostderr"], {}, ["an info line"], []),
    (["-alsologtostderr=false"], {}, ["an error line"], ["a warning line", "an info line"]),
    (["-alsologtostderr=false", "-stderrthreshold=0"], {}, ["an info line"], []),
])
def test_glog_flags(capsys, monkeypatch, argv, env, shown, hidden):
    err = _log_lines(capsys, argv, env, monkeypatch)
    assert all(line in err for line in shown), err
    assert not any(line in err for line in hidden), err


def test_log_prefix_false_prints_bare_messages(capsys):
    err = _log_lines(capsys, ["-log_prefix=false"])
    assert "an info line\n" in err and not err.startswith("I")


def test_every_glog_flag_is_accepted():
    for name, kind, _, _ in gflags.GLOG_FLAGS:
        value = {bool: "true", int: "1", str: "x"}[kind]
        parse("time", f"-{name}={value}")


# -- the flags at work -------------------------------------------------------------------------
@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    net = caffe.Net("net.prototxt", caffe.TRAIN)
    net.params["data"][0].data[...] = np.eye(2, 4)
    net.params["label"][0].data[...] = [0, 1]
    net.save("w.caffemodel")
    return tmp_path


def test_time_flags_at_work(tiny, capsys):
    assert caffe_tool.main(["time", "-model", "net.prototxt", "-iterations=2", "-phase",
                            "TEST", "-stage", "extra", "-level", "2"]) == 0
    err = capsys.readouterr().err
    assert "Testing for 2 iterations." in err and "Iteration: 3 " not in err
    for layer in ("accuracy", "staged", "leveled"):      # -phase TEST, -stage, -level
        assert f"{layer}\tforward:" in err, layer


def test_test_flags_at_work(tiny, capsys):
    assert caffe_tool.main(["test", "--model=net.prototxt", "--weights=w.caffemodel",
                            "-iterations", "3"]) == 0
    err = capsys.readouterr().err
    assert "Batch 2, accuracy = " in err and "Batch 3," not in err
    assert "staged" not in err        # not in stage "extra" by default


def test_gpu_flag_on_a_cpu_machine(tiny, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert caffe_tool.main(["time", "-model", "net.prototxt", "-gpu", "0"]) == 1
    assert "-gpu 0: no CUDA device" in capsys.readouterr().err


def test_python_m_caffe_is_the_caffe_command(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    module = subprocess.run([sys.executable, "-m", "caffe", "--version"], env=env,
                            capture_output=True, text=True, cwd=tmp_path)
    assert module.returncode == 0 and module.stdout.startswith("caffe version 1.0.0")
    bad = subprocess.run([sys.executable, "-m", "caffe", "-iter", "3"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and "unknown command line flag 'iter'" in bad.stderr
