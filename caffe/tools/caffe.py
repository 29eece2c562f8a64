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
import contextlib
import gc
import importlib
import logging
import os
import sys
import time

from ..errors import CaffeError
from ..log_text import printable
from . import caffe_flags, gflags
from .glog import GlogFormatter, log_to_stderr  # noqa: F401  (also the data tools' import)

# torch, the net and the solvers load when a command runs (_load_engine): `caffe --help`
# needs none of them.
torch = common = parallel = caffe_pb2 = dashboard = Net = net_inference = None
SignalHandler = get_solver = read_solver = compute_dtype = None


def _load_engine():
    global torch, common, parallel, caffe_pb2, dashboard, Net, net_inference
    global SignalHandler, get_solver, read_solver, compute_dtype
    import torch
    from .. import common, net_inference, parallel
    from ..net import Net
    from ..proto import caffe_pb2
    from ..solvers import dashboard
    from ..solvers.precision import compute_dtype
    from ..solvers.registry import get_solver, read_solver
    from ..solvers.signals import SignalHandler

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
    "zoo": ("zoo", "main"),
    "vis": ("vis", "main"),
    "view": ("view", "main"),
    "convert_mnist_siamese_data": ("convert_mnist_siamese_data", "main"),
    "convert_cifar_data": ("convert_cifar_data", "main"),
    "classify": ("classify", "main"),
    "detect": ("detect", "main"),
    "create_annoset": ("create_annoset", "main"),
}

# pycaffe's own commands among the tools: `caffe --help` lists them beside BVLC's four.
TOOL_COMMANDS = {
    "export": "write a trained net as ONNX and/or a PyTorch program",
    "zoo": "list, describe, download and verify model-zoo models",
    "vis": "PNGs of a net's filters, activations and predictions",
    "view": "a net's graph in the browser",
}


def register_tool(name, module, function="main", help=None):
    """Make `caffe NAME ARGS` run caffe.tools.MODULE.FUNCTION(ARGS) (a program of its own);
    with `help`, `caffe --help` lists it among the commands."""
    TOOLS[name] = (module, function)
    if help:
        TOOL_COMMANDS[name] = help


def register_command(name, handler, help):
    """Make `caffe NAME [flags]` call handler(args) with the parsed flags (define new flags
    with FLAGS.define)."""
    COMMANDS[name] = help
    HANDLERS[name] = handler


def parse_flags(argv):
    """The command line as a namespace of flag values plus ``command`` and ``argv``."""
    global FLAGS
    args, FLAGS = caffe_flags.parse(argv, {**COMMANDS, **TOOL_COMMANDS},
                                    [t for t in TOOLS if t not in TOOL_COMMANDS])
    return args


FLAGS = None        # the FlagSet of the last parsed command line


def _configure_logging(args):
    caffe_flags.configure_logging(args)


# The flags that name input files, per command (-weights: a comma-separated list).
FILE_FLAGS = {"train": ("solver", "snapshot", "weights"), "test": ("model", "weights"),
              "time": ("model",)}


def check_command_line(args):
    """BVLC's checks of a command's flags, then that the files they name exist.

    All run before torch loads (seconds on a busy machine), so that a missing flag or a
    mistyped file name is reported at once.
    """
    if args.command == "train":
        if not args.solver:
            raise CaffeError("Need a solver definition to train (-solver).")
        if args.snapshot and args.weights:
            raise CaffeError("Give a snapshot to resume training or weights to finetune "
                             "but not both.")
    elif args.command in ("test", "time") and not args.model:
        verb = "score" if args.command == "test" else "time"
        raise CaffeError(f"Need a model definition to {verb} (-model).")
    if args.command == "test" and not args.weights:
        raise CaffeError("Need model weights to score (-weights).")
    for flag in FILE_FLAGS.get(args.command, ()):
        value = getattr(args, flag)
        for path in value.split(",") if flag == "weights" else [value]:
            path = path.strip()
            if path and not os.path.exists(path):
                raise CaffeError(f"{path}: cannot read: No such file or directory (-{flag})")


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
        solver = get_solver(param, precision=args.precision)
        # No one reads intermediate blobs' diffs in this loop (debug_info prints them): let
        # them share storage. pycaffe's Solver keeps Caffe's every-blob diffs for scripts.
        solver.net.recycle_diffs = not param.debug_info
        solver.set_action_function(handler)
        if param.snapshot_after_train:
            solver.check_snapshot_prefix()
        if args.snapshot:
            log.info("Resuming from %s", args.snapshot)
            solver.restore(args.snapshot)
            parallel.keep_effective_batch(solver)
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
    _select_device(_gpus(args.gpu))
    net = Net(args.model, phase=_phase(args.phase, caffe_pb2.TEST), level=args.level,
              stages=_stages(args), dtype=compute_dtype(args.precision))
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
                log.info("Batch %d, %s = %s", i, printable(name), _fmt(float(values[k])))
                k += 1
    iterations = max(args.iterations, 1)
    log.info("Loss: %s", _fmt(loss / iterations))
    k = 0
    for name, weight, count in names:
        for _ in range(count):
            mean = float(sums[k]) / iterations if sums is not None else 0.0
            note = f" (* {_fmt(weight)} = {_fmt(weight * mean)} loss)" if weight else ""
            log.info("%s = %s%s", printable(name), _fmt(mean), note)
            k += 1
    return 0


def _timed_backward(net, i):
    """Layer i's backward as BVLC's `caffe time` runs it: called on every layer, so
    parameter gradients are computed even where no loss needs them (a deploy net); bottom
    diffs only where the net needs them."""
    layer = net._layers[i]
    if net.layer_need_backward[i] or any(layer.param_propagate_down):
        layer.backward(net.top_vecs[i], net.bottom_need_backward[i], net.bottom_vecs[i])


def time_net(args):
    _select_device(_gpus(args.gpu))
    net = Net(args.model, phase=_phase(args.phase, caffe_pb2.TRAIN), level=args.level,
              stages=_stages(args), dtype=compute_dtype(args.precision))
    # BVLC's `caffe time` runs every layer's Backward: layers must keep what their backward
    # reads (an in-place Scale's input) even in a deploy net that needs no backward.
    for layer in net._layers:
        layer.need_backward = True
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
            _timed_backward(net, i)
            _sync()
            backward_ms[i] += (time.perf_counter() - t) * 1e3
        backward_total += (time.perf_counter() - backward_start) * 1e3
        log.info("Iteration: %d forward-backward time: %s ms.", j + 1,
                 _fmt((time.perf_counter() - iter_start) * 1e3))
    total_ms = (time.perf_counter() - total_start) * 1e3
    iterations = max(args.iterations, 1)
    log.info("Average time per layer: ")
    for i, name in enumerate(net._layer_names):
        log.info("%10s\tforward: %s ms.", printable(name), _fmt(forward_ms[i] / iterations))
        log.info("%10s\tbackward: %s ms.", printable(name), _fmt(backward_ms[i] / iterations))
    log.info("Average Forward pass: %s ms.", _fmt(forward_total / iterations))
    if net_inference.why_not(net, 0, n - 1) is None:
        # BVLC times layer by layer; a whole TEST-phase forward runs as the inference
        # program (caffe.net_inference), which is what deployed nets run: time it too.
        start = time.perf_counter()
        for _ in range(iterations):
            net.forward_prefilled()
            _sync()
        log.info("Average Forward pass (whole net, inference program): %s ms.",
                 _fmt((time.perf_counter() - start) * 1e3 / iterations))
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
    try:
        args = parse_flags(argv)
    except (gflags.FlagError, gflags.HelpRequested) as e:
        return gflags.exit_on(e)
    _configure_logging(args)
    if args.command in HANDLERS and args.positional:
        # BVLC's caffe runs a command only when gflags leaves exactly one word (argc == 2)
        # and prints usage otherwise: a stray word is most often a bool flag's value given
        # after a space (-allow_python_layers false), which gflags does not take.
        extra = args.positional[0]
        hint = ""
        previous = args.argv[args.argv.index(extra) - 1] if extra in args.argv[1:] else ""
        flag = FLAGS.flags.get(previous.lstrip("-"))
        if flag is not None and flag.kind is bool:
            hint = (f" (a bool flag takes its value after '=': {previous}={extra}; "
                    f"'{previous} {extra}' sets it to true)")
        log.error("Unexpected argument '%s'%s", extra, hint)
        print(FLAGS.help_text(modules={"main"}), file=sys.stderr)
        return 1
    if args.command not in HANDLERS:
        if args.command:
            log.error("Unknown action: %s", args.command)
        print(FLAGS.help_text(modules={"main"}), file=sys.stderr)
        return 1
    try:
        check_command_line(args)
    except CaffeError as e:
        log.error("%s", e)
        return 1
    _load_engine()
    from ..layers.python_layer import python_layers_allowed, set_python_layers_allowed
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


def program(argv=None):
    """The `caffe` program: main(), then a quick exit.

    Python's last garbage collection at exit walks torch's whole object graph, about 0.5 s on
    a 2-core machine (BVLC's binary exits at once); frozen objects are skipped, and their
    memory goes back with the process. Only for the program: main() called from Python code
    leaves the caller's collector alone.
    """
    status = main(argv)
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(program())
