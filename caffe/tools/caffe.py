"""The `caffe` command: train, test, time and device_query, with BVLC's flags and log format.

    caffe train -solver s.prototxt [-weights a.caffemodel[,b.caffemodel]] [-snapshot x.solverstate]
                [-gpu 0|1,2|all] [-workers N] [-level N] [-stage a,b]
                [-sigint_effect stop|snapshot|none] [-sighup_effect stop|snapshot|none]
                [-log_dir DIR]
    caffe test -model m.prototxt -weights w.caffemodel [-iterations 50] [-gpu 0]
    caffe time -model m.prototxt [-iterations 50] [-phase TRAIN|TEST] [-gpu 0]
    caffe device_query [-gpu 0|all]

Flags are gflags-style: -flag value, --flag value, -flag=value and --flag=value all work.
Logs go to stderr in glog's format, so BVLC's log tools (and ours, parse_log) read them.
Training on several GPUs (-gpu 0,1 / all) or CPU workers (-workers N) runs one process per
device, data-parallel; under torchrun's variables each process is one worker (caffe.parallel).
"""
import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
import time

import torch

from .. import common, parallel
from ..errors import CaffeError
from ..layers.python_layer import python_layers_allowed, set_python_layers_allowed
from ..net import Net
from ..proto import caffe_pb2
from ..solvers import dashboard
from ..solvers.registry import get_solver, read_solver
from ..solvers.signals import ACTIONS, SignalHandler
from .glog import GlogFormatter, log_to_stderr

log = logging.getLogger("caffe.tools")

COMMANDS = {
    "train": "train or finetune a model",
    "test": "score a model",
    "device_query": "show GPU diagnostic information",
    "time": "benchmark model execution time",
}

# The other tools BVLC shipped as separate programs: `caffe <tool> ARGS` runs them too.
TOOLS = {
    "convert_imageset": ("convert_imageset", "main"),
    "compute_image_mean": ("compute_image_mean", "main"),
    "convert_mnist_data": ("convert_mnist_data", "main"),
    "extract_features": ("extract_features", "main"),
    "upgrade_net_proto_text": ("upgrade_tools", "upgrade_net_proto_text"),
    "upgrade_net_proto_binary": ("upgrade_tools", "upgrade_net_proto_binary"),
    "upgrade_solver_proto_text": ("upgrade_tools", "upgrade_solver_proto_text"),
    "parse_log": ("parse_log", "main"),
    "plot_training_log": ("plot_training_log", "main"),
    "draw_net": ("draw_net", "main"),
    "export": ("export", "main"),
}


# -- flags ----------------------------------------------------------------------------------
def _parser():
    p = argparse.ArgumentParser(
        prog="caffe", add_help=True,
        description="command line brew\nusage: caffe <command> <args>\n\ncommands:\n" +
        "\n".join(f"  {c:<14}{d}" for c, d in COMMANDS.items())
        + "\n\ntools (BVLC's separate programs): " + ", ".join(TOOLS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", help="one of: " + ", ".join(COMMANDS))
    p.add_argument("--gpu", default="", help="GPU ids separated by ',', or 'all' "
                   "(training runs one data-parallel worker on each); empty = CPU")
    p.add_argument("--workers", type=int, default=0, help="train with N data-parallel "
                   "worker processes (CPU: gloo); -gpu lists give one per GPU")
    p.add_argument("--solver", default="", help="the solver definition protocol buffer text file")
    p.add_argument("--model", default="", help="the model definition protocol buffer text file")
    p.add_argument("--phase", default="", help="network phase (TRAIN or TEST); for time only")
    p.add_argument("--level", type=int, default=0, help="network level")
    p.add_argument("--stage", default="", help="network stages, separated by ','")
    p.add_argument("--snapshot", default="", help="a .solverstate snapshot to resume training")
    p.add_argument("--weights", default="", help="pretrained weights to start from "
                   "(.caffemodel files separated by ','); not together with --snapshot")
    p.add_argument("--iterations", type=int, default=50, help="iterations to run")
    p.add_argument("--sigint_effect", default="stop", choices=ACTIONS,
                   help="what a SIGINT (Ctrl-C) does during training")
    p.add_argument("--sighup_effect", default="snapshot", choices=ACTIONS,
                   help="what a SIGHUP does during training")
    p.add_argument("--overwrite_snapshots", type=_flag, nargs="?", const=True, default=False,
                   help="let train replace snapshot files it did not write (by default it "
                   "refuses to start when the snapshots it would write already exist)")
    p.add_argument("--allow_python_layers", type=_flag, nargs="?", const=True, default=True,
                   help="false: refuse models with Python layers (they run code named by the "
                   "model); use for models you do not trust")
    p.add_argument("--log_dir", default="", help="also write the log into this folder as "
                   "glog does and, for train, the dashboards: train.csv, test.csv and "
                   "TensorBoard events (caffe.solvers.dashboard)")
    p.add_argument("--log_level", default="INFO", help=argparse.SUPPRESS)
    return p


def _flag(value):
    """A gflags boolean: true/false, 1/0, yes/no."""
    lowered = str(value).lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def _gflags_to_argparse(argv):
    """-flag and -flag=value (gflags) become --flag and --flag=value."""
    out = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2 and \
                arg[1].isalpha():
            arg = "-" + arg
        out.append(arg)
    return out


def _stages(args):
    return [s for s in args.stage.split(",") if s]


def _phase(name, default):
    if not name:
        return default
    if name not in ("TRAIN", "TEST"):
        raise CaffeError(f"unknown phase '{name}' (use TRAIN or TEST)")
    return caffe_pb2.TRAIN if name == "TRAIN" else caffe_pb2.TEST


def _gpus(spec):
    if not spec:
        return []
    if not torch.cuda.is_available():
        raise CaffeError(f"-gpu {spec}: no CUDA device is available to PyTorch on this machine")
    if spec == "all":
        return list(range(torch.cuda.device_count()))
    try:
        return [int(g) for g in spec.split(",") if g]
    except ValueError:
        raise CaffeError(f"-gpu {spec}: give device ids separated by ',' or 'all'") from None


def _select_device(gpus):
    if not gpus:
        log.info("Use CPU.")
        common.set_mode_cpu()
        return
    if len(gpus) > 1:
        log.warning("This command runs on one GPU; using GPU %d only", gpus[0])
    log.info("Using GPUs %s", ", ".join(map(str, gpus)))
    common.set_device(gpus[0])
    common.set_mode_gpu()


def _sync():
    if common.mode() == common.GPU:
        torch.cuda.synchronize()


# -- commands ----------------------------------------------------------------------------------
def train(args):
    if not args.solver:
        raise CaffeError("Need a solver definition to train (-solver).")
    if args.snapshot and args.weights:
        raise CaffeError("Give a snapshot to resume training or weights to finetune but not both.")
    param = read_solver(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(_stages(args))
    gpu = args.gpu
    if not gpu and param.HasField("solver_mode") and param.solver_mode == param.GPU:
        if torch.cuda.is_available():
            gpu = str(param.device_id)
        else:
            log.warning("The solver asks for GPU mode but no CUDA device is available; "
                        "training on the CPU")
    gpus = _gpus(gpu)
    if parallel.should_launch(args.workers, gpus):
        return parallel.launch(args.argv, args.workers, gpus)
    worker = parallel.worker_from_env(gpus)
    if worker is not None:
        gpus = [worker.gpu] if worker.gpu is not None else []
    _select_device(gpus)
    if args.snapshot:
        param.ClearField("weights")
    elif args.weights:
        del param.weights[:]
        param.weights.append(args.weights)
    with SignalHandler(args.sigint_effect, args.sighup_effect) as handler:
        solver = get_solver(param)
        solver.set_action_function(handler)
        if param.snapshot_after_train:
            solver.check_snapshot_prefix()
        if args.snapshot:
            log.info("Resuming from %s", args.snapshot)
            solver.restore(args.snapshot)
        if not args.overwrite_snapshots:
            _refuse_foreign_snapshots(solver, args.snapshot)
        if worker is not None:
            parallel.attach(solver)
        log.info("Starting Optimization")
        with _progress(solver), dashboard.logging_to(solver, args.log_dir), \
                parallel.exit_on_failure(worker):
            solver.solve()
    log.info("Optimization Done.")
    if worker is not None:
        worker.close()
    return 0


_SNAPSHOT_NAME = r"_iter_(\d+)\.(caffemodel|solverstate)(\.h5)?"


def _refuse_foreign_snapshots(solver, resumed=""):
    """Refuse to start when snapshot files this run would write exist already.

    They are another run's (or a finished run's) results. When resuming, the files of the
    interrupted run after the snapshot resumed from are ours to replace if they do not form a
    complete snapshot (weights and solver state both) and are newer than that snapshot;
    complete later snapshots are kept unless -overwrite_snapshots.
    """
    p = solver.param
    prefix = os.path.abspath(p.snapshot_prefix) if p.snapshot_prefix else ""
    folder, base = os.path.split(prefix)
    if not prefix or not os.path.isdir(folder):
        return
    start, end = solver.iter, p.max_iter
    pattern = re.compile(re.escape(base) + _SNAPSHOT_NAME)
    found = {}
    for name in os.listdir(folder):
        match = pattern.fullmatch(name)
        if match:
            found.setdefault(int(match.group(1)), []).append((name, match.group(2)))
    resumed_time = os.path.getmtime(resumed) if resumed and os.path.exists(resumed) else None
    clash = []
    for iteration, files in sorted(found.items()):
        if not (start < iteration <= end or (iteration == start == end and not resumed)):
            continue
        complete = {kind for _, kind in files} == {"caffemodel", "solverstate"}
        if resumed_time is not None and not complete and all(
                os.path.getmtime(os.path.join(folder, n)) >= resumed_time for n, _ in files):
            continue
        clash.extend(name for name, _ in files)
    if clash:
        raise CaffeError(f"refusing to overwrite snapshot files this run did not write in "
                         f"{folder}: {', '.join(clash[:6])}{' ...' if len(clash) > 6 else ''}. "
                         f"Resume from the last one (-snapshot), change snapshot_prefix, or "
                         f"pass -overwrite_snapshots to replace them.")


@contextlib.contextmanager
def _progress(solver):
    """A progress bar on an interactive terminal only; logs stay plain in files and pipes."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()) or not parallel.is_root():
        yield
        return
    try:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm
    except ImportError:
        yield
        return
    with tqdm(total=solver.param.max_iter, initial=solver.iter, unit="iter",
              dynamic_ncols=True) as bar, logging_redirect_tqdm([logging.getLogger("caffe")]):
        solver.add_callback(None, dashboard.ProgressPostfix(solver, bar))
        yield


def test(args):
    if not args.model:
        raise CaffeError("Need a model definition to score (-model).")
    if not args.weights:
        raise CaffeError("Need model weights to score (-weights).")
    _select_device(_gpus(args.gpu))
    net = Net(args.model, phase=_phase(args.phase, caffe_pb2.TEST), level=args.level,
              stages=_stages(args))
    for name in args.weights.split(","):
        net.copy_from(name.strip())
    log.info("Running for %d iterations.", args.iterations)
    sums, loss = None, 0.0
    names = [(net._blob_names[b], net._blob_loss_weights[b], net._blobs[b].count())
             for b in net.output_ids]
    for i in range(args.iterations):
        loss += float(net.forward_prefilled())
        values = [net._blobs[b].data.reshape(-1).double().cpu() for b in net.output_ids]
        values = torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)
        sums = values if sums is None else sums + values
        k = 0
        for name, _, count in names:
            for _ in range(count):
                log.info("Batch %d, %s = %s", i, name, _fmt(float(values[k])))
                k += 1
    iterations = max(args.iterations, 1)
    log.info("Loss: %s", _fmt(loss / iterations))
    k = 0
    for name, weight, count in names:
        for _ in range(count):
            mean = float(sums[k]) / iterations if sums is not None else 0.0
            note = f" (* {_fmt(weight)} = {_fmt(weight * mean)} loss)" if weight else ""
            log.info("%s = %s%s", name, _fmt(mean), note)
            k += 1
    return 0


def time_net(args):
    if not args.model:
        raise CaffeError("Need a model definition to time (-model).")
    _select_device(_gpus(args.gpu))
    net = Net(args.model, phase=_phase(args.phase, caffe_pb2.TRAIN), level=args.level,
              stages=_stages(args))
    # One untimed pass first: it sizes every blob and catches errors early.
    log.info("Performing Forward")
    log.info("Initial loss: %s", _fmt(float(net.forward_prefilled())))
    log.info("Performing Backward")
    net.backward_all()
    n = len(net._layers)
    forward_ms, backward_ms = [0.0] * n, [0.0] * n
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", args.iterations)
    total_start = time.perf_counter()
    forward_total = backward_total = 0.0
    for j in range(args.iterations):
        iter_start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            net.forward_from_to(i, i)
            _sync()
            forward_ms[i] += (time.perf_counter() - t) * 1e3
        forward_total += (time.perf_counter() - iter_start) * 1e3
        backward_start = time.perf_counter()
        for i in reversed(range(n)):
            t = time.perf_counter()
            net.backward_from_to(i, i)
            _sync()
            backward_ms[i] += (time.perf_counter() - t) * 1e3
        backward_total += (time.perf_counter() - backward_start) * 1e3
        log.info("Iteration: %d forward-backward time: %s ms.", j + 1,
                 _fmt((time.perf_counter() - iter_start) * 1e3))
    total_ms = (time.perf_counter() - total_start) * 1e3
    iterations = max(args.iterations, 1)
    log.info("Average time per layer: ")
    for i, name in enumerate(net._layer_names):
        log.info("%10s\tforward: %s ms.", name, _fmt(forward_ms[i] / iterations))
        log.info("%10s\tbackward: %s ms.", name, _fmt(backward_ms[i] / iterations))
    log.info("Average Forward pass: %s ms.", _fmt(forward_total / iterations))
    log.info("Average Backward pass: %s ms.", _fmt(backward_total / iterations))
    log.info("Average Forward-Backward: %s ms.", _fmt(total_ms / iterations))
    log.info("Total Time: %s ms.", _fmt(total_ms))
    log.info("*** Benchmark ends ***")
    return 0


def device_query(args):
    if not torch.cuda.is_available():
        log.info("No CUDA device is available to PyTorch %s; running on the CPU with %d "
                 "threads.", torch.__version__, torch.get_num_threads())
        return 0
    spec = args.gpu or "all"
    log.info("Querying GPUs %s", spec)
    for gpu in _gpus(spec):
        props = torch.cuda.get_device_properties(gpu)
        log.info("Device id:                     %d", gpu)
        log.info("Major revision number:         %d", props.major)
        log.info("Minor revision number:         %d", props.minor)
        log.info("Name:                          %s", props.name)
        log.info("Total global memory:           %d", props.total_memory)
        log.info("Number of multiprocessors:     %d", props.multi_processor_count)
        for field, label in (("warp_size", "Warp size"),
                             ("max_threads_per_multi_processor",
                              "Maximum threads per multiprocessor"),
                             ("L2_cache_size", "L2 cache size")):
            if hasattr(props, field):
                log.info("%-31s%s", label + ":", getattr(props, field))
    return 0


def _fmt(x):
    return f"{x:.6g}"


HANDLERS = {"train": train, "test": test, "time": time_net, "device_query": device_query}


def main(argv=None):
    """Run one command; returns the exit status (0 on success)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        module, function = TOOLS[argv[0]]
        tool = getattr(importlib.import_module(f"caffe.tools.{module}"), function)
        return tool(argv[1:])
    parser = _parser()
    args = parser.parse_args(_gflags_to_argparse(argv))
    args.argv = argv                    # parallel training reruns the command per worker
    log_to_stderr(getattr(logging, str(args.log_level).upper(), logging.INFO))
    if args.command not in HANDLERS:
        if args.command:
            print(f"caffe: unknown command '{args.command}'", file=sys.stderr)
        parser.print_help(sys.stderr)
        return 1
    allowed = python_layers_allowed()
    set_python_layers_allowed(args.allow_python_layers)
    glog_file = None
    try:
        if args.log_dir:
            glog_file = dashboard.add_glog_file(args.log_dir, GlogFormatter())
        return HANDLERS[args.command](args)
    except (CaffeError, OSError) as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        log.error("Interrupted.")
        return 130
    finally:
        dashboard.remove_glog_file(glog_file)
        common.set_mode_cpu()
        set_python_layers_allowed(allowed)


if __name__ == "__main__":
    sys.exit(main())
