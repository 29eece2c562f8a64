"""Speed and memory of caffe.Net / caffe.SGDSolver against hand-written PyTorch eager models.

    .venv/bin/python -m benchmarks.run [--quick] [--threads N] [--rows lenet-train,...]
                                       [--models ../shared/models] [--no-memory]

Each row times one iteration of one net on both sides, in ONE process, alternating ours and
PyTorch's iterations (ABBA order) so that load from other processes hits both alike, with
torch.set_num_threads(N) for both. Forward rows run caffe.Net.forward_prefilled() on the
deploy net in TEST against model.eval() under torch.inference_mode(), softmax included;
train rows run solver.step(1) (SGD, momentum 0.9, weight_decay 5e-4, Caffe's lr_mult /
decay_mult per parameter) against zero_grad / forward / cross_entropy / backward /
torch.optim.SGD.step with the same settings. Inputs are set once through Input layers (no
data-layer I/O is timed). Our weights are copied into the PyTorch model and both sides' outputs
(forward rows) or loss and updated weights after one step (train rows without dropout) are
compared before timing ("check" column, largest relative difference).

Peak memory is measured for every row and side in a fresh child process: ru_maxrss after a
few iterations minus ru_maxrss after the imports, i.e. weights, gradients, solver history,
activations and any transient peak. Train rows let intermediate blobs share diff storage
(Net.recycle_diffs; --keep-diffs keeps Caffe's every-blob diffs). The measuring processes run
with OMP_WAIT_POLICY=PASSIVE (both sides alike) unless told otherwise; see README.md.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# name: (title, prototxt, batch, train?)
ROWS = {
    "lenet-train": ("LeNet train", "lenet.prototxt", 64, True),
    "cifar10-train": ("CIFAR-10 quick train", "cifar10_quick.prototxt", 100, True),
    "caffenet-fwd": ("CaffeNet forward", "bvlc_reference_caffenet.prototxt", 10, False),
    "caffenet-train": ("CaffeNet train", "bvlc_reference_caffenet.prototxt", 10, True),
    "googlenet-fwd": ("GoogLeNet forward", "bvlc_googlenet.prototxt", 10, False),
    "resnet50-fwd": ("ResNet-50 forward", "ResNet-50-deploy.prototxt", 8, False),
    "resnet50-train": ("ResNet-50 train", "ResNet-50-deploy.prototxt", 8, True),
}
TORCH_MODEL = {"lenet.prototxt": "lenet", "cifar10_quick.prototxt": "cifar10_quick",
               "bvlc_reference_caffenet.prototxt": "caffenet",
               "bvlc_googlenet.prototxt": "googlenet", "ResNet-50-deploy.prototxt": "resnet50"}
# Measured by the author on a 2-core AVX-512 machine (ms per iteration).
REFERENCE = {"lenet-train": (53.3, 27.3), "caffenet-fwd": (333.6, 278.1),
             "caffenet-train": (670.0, 730.0)}
SOLVER = {"base_lr": 0.001, "momentum": 0.9, "weight_decay": 5e-4}
RECYCLE_DIFFS = True


# -- the two sides ---------------------------------------------------------------------
def caffe_net_param(path, batch, train):
    """The deploy net at `batch`; for training, softmax replaced by a label input and a
    SoftmaxWithLoss, BatchNorm on batch statistics, Caffe's usual lr/decay multipliers
    (weights 1/1, biases 2/0) where the prototxt gives none, and MSRA fillers where it gives
    none (deploy files carry no fillers; zero weights would make the timing meaningless)."""
    from caffe import formats
    param = formats.read_net_param(path)
    data = param.layer[0]
    data.input_param.shape[0].dim[0] = batch
    for lp in param.layer:
        if lp.type in ("Convolution", "InnerProduct"):
            sub = lp.convolution_param if lp.type == "Convolution" else lp.inner_product_param
            if not sub.HasField("weight_filler"):
                sub.weight_filler.type = "msra"
            if train and not len(lp.param):
                lp.param.add(lr_mult=1, decay_mult=1)
                if sub.bias_term:
                    lp.param.add(lr_mult=2, decay_mult=0)
        if lp.type == "BatchNorm" and train:
            lp.batch_norm_param.ClearField("use_global_stats")
    if train:
        last = param.layer[-1]
        if last.type == "Softmax":
            logits = last.bottom[0]
            del param.layer[-1]
        else:
            logits = last.top[0]
        label = param.layer.add(name="label", type="Input", top=["label"])
        label.input_param.shape.add(dim=[batch])
        param.layer.add(name="loss", type="SoftmaxWithLoss", bottom=[logits, "label"],
                        top=["loss"])
    return param


def build_ours(row, models, train, precision=None):
    """Our net (and solver); precision "bf16"/"fp16" builds it in half precision, the
    solver with float32 master weights (caffe.solvers.precision)."""
    import torch
    import caffe
    from caffe.proto import caffe_pb2
    from caffe.solvers.precision import compute_dtype
    _, proto, batch, _ = ROWS[row]
    param = caffe_net_param(str(Path(models) / proto), batch, train)
    if train:
        sp = caffe_pb2.SolverParameter(type="SGD", lr_policy="fixed", max_iter=10 ** 9,
                                       display=0, **SOLVER)
        sp.net_param.CopyFrom(param)
        solver = caffe.get_solver(sp, precision=precision)
        net = solver.net
        # A training loop reads only the learned blobs' gradients: let the intermediate
        # blobs' diffs share storage (see Net.recycle_diffs).
        net.recycle_diffs = RECYCLE_DIFFS
    else:
        solver, net = None, caffe.Net(param, caffe.TEST, dtype=compute_dtype(precision))
    for name, layer in zip(net._layer_names, net._layers):
        if layer.type == "BatchNorm":   # unit variance, zero mean, scale factor 1
            layer.blobs[1].data.fill_(1)
            layer.blobs[2].data.fill_(1)
        if layer.type == "Scale" and "branch2c" in name:
            layer.blobs[0].data.fill_(0.2)   # keeps the residual sums from growing (ResNet)
    x = torch.randn(net._blobs[net.input_ids[0]].shape, generator=torch.Generator().manual_seed(1))
    net._blobs[net.input_ids[0]].data.copy_(x)
    y = None
    if train:
        classes = net.bottom_vecs[-1][0].shape[1]
        y = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(2))
        net._blobs[net.blob_index["label"]].data.copy_(y.to(torch.float32))
    step = (lambda: solver.step(1)) if train else net.forward_prefilled
    return net, solver, x, y, step


def build_torch(row, net=None):
    """The PyTorch model (with our net's weights when given) and its step function."""
    import torch
    import torch.nn.functional as F
    from benchmarks import torch_models
    _, proto, batch, train = ROWS[row]
    model = torch_models.MODELS[TORCH_MODEL[proto]]()
    settings = torch_models.copy_weights(net, model) if net is not None else {}
    if not train:
        model.eval()

        def step():
            with torch.inference_mode():
                return F.softmax(model(step.x), 1)
        return model, step
    model.train()
    optimizer = torch_models.sgd(model, settings, **SOLVER)

    def step():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(step.x), step.y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())
    return model, step


def check(row, net, solver, model, tstep):
    """Relative difference between the two sides: of the outputs (forward rows), or of the loss
    and the whole update (norm over all parameters) after one step (train rows); None where
    dropout draws different masks on the two sides."""
    _, _, _, train = ROWS[row]
    if not train:
        net.forward_prefilled()
        ours, theirs = net._blobs[net.output_ids[0]].data, tstep()
        return float((ours - theirs).abs().max() / theirs.abs().max())
    if any(layer.type == "Dropout" for layer in net._layers):
        return None
    from benchmarks.torch_models import learned_modules
    layers = [layer for layer in net._layers if layer.blobs and layer.type != "BatchNorm"]
    pairs = []
    for layer, module in zip(layers, learned_modules(model)):
        params = [module.weight] + ([module.bias] if module.bias is not None else [])
        pairs += [(blob, p, p.detach().clone()) for blob, p in zip(layer.blobs, params)]
    if solver.master is not None:
        # Half precision: the update is in the float32 masters; the net holds their rounding.
        masters = dict(zip(map(id, net.learnable_params), solver.master.params))
        pairs = [(masters.get(id(blob), blob), p, before) for blob, p, before in pairs]
    solver.step(1)
    ours_loss = float(net._blobs[net.blob_index["loss"]].data)
    theirs_loss = tstep()
    error = total = 0.0
    for blob, p, before in pairs:
        theirs = p.detach() - before
        error += float(((blob.data.reshape(p.shape) - before) - theirs).square().sum())
        total += float(theirs.square().sum())
    return max(abs(ours_loss - theirs_loss) / abs(theirs_loss), (error / total) ** 0.5)


# -- children ------------------------------------------------------------------------------
def child_time(args):
    import torch
    torch.set_num_threads(args.threads)
    row = args.row
    net, solver, x, y, ostep = build_ours(row, args.models, ROWS[row][3])
    model, tstep = build_torch(row, net)
    tstep.x, tstep.y = x.clone(), y
    result = {"check": check(row, net, solver, model, tstep)}
    # Warm-up, then choose a repeat count that fits the time budget.
    for _ in range(args.warmup):
        ostep()
        tstep()
    start = time.perf_counter()
    ostep()
    tstep()
    per_pair = time.perf_counter() - start
    reps = max(args.min_reps, min(args.max_reps, int(args.budget / max(per_pair, 1e-6))))
    times = {"ours": [], "torch": []}

    def timed(side, fn):
        t = time.perf_counter()
        fn()
        times[side].append(time.perf_counter() - t)
    for r in range(reps):
        pair = (("ours", ostep), ("torch", tstep))
        for side, fn in (pair if r % 2 == 0 else pair[::-1]):
            timed(side, fn)
    result.update({side: statistics.median(v) for side, v in times.items()})
    result["reps"] = reps
    print(json.dumps(result))


def child_memory(args):
    import torch
    import caffe  # noqa: F401  (imported before the baseline on both sides)
    import benchmarks.torch_models  # noqa: F401
    torch.set_num_threads(args.threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = args.row
    _, _, batch, train = ROWS[row]
    if args.side == "ours":
        _, _, _, _, step = build_ours(row, args.models, train)
    else:
        net = None
        _, step = build_torch(row, net)
        x = torch.randn((batch,) + INPUT_SHAPE[TORCH_MODEL[ROWS[row][1]]])
        step.x, step.y = x, torch.randint(0, 10 if "lenet" in row or "cifar" in row else 1000,
                                          (batch,))
    for _ in range(3):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": (peak - base) / 1024}))


INPUT_SHAPE = {"lenet": (1, 28, 28), "cifar10_quick": (3, 32, 32), "caffenet": (3, 227, 227),
               "googlenet": (3, 224, 224), "resnet50": (3, 224, 224)}


def run_child(args, *extra):
    cmd = [sys.executable, "-m", "benchmarks.run", "--threads", str(args.threads),
           "--models", args.models, *extra]
    if args.quick:
        cmd.append("--quick")
    env = dict(os.environ)
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"child {' '.join(extra)} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the table -----------------------------------------------------------------------------
def main(argv=None):
    global RECYCLE_DIFFS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a few minutes)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads for both sides (default: all cores)")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    ap.add_argument("--models", default=str(ROOT.parent / "shared" / "models"))
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    ap.add_argument("--keep-diffs", action="store_true",
                    help="train rows: keep every blob's diff (Caffe's default) instead of "
                         "recycling intermediate diffs (Net.recycle_diffs)")
    ap.add_argument("--omp-wait-policy", default="PASSIVE",
                    help="OMP_WAIT_POLICY for the measuring processes (both sides share it); "
                         "PASSIVE keeps multi-threaded runs sane on a loaded machine, '' leaves "
                         "the OpenMP runtime's default")
    ap.add_argument("--child", choices=("time", "memory"), help=argparse.SUPPRESS)
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.warmup, args.min_reps, args.max_reps, args.budget = \
        (2, 5, 30, 6.0) if args.quick else (3, 11, 100, 30.0)
    RECYCLE_DIFFS = not args.keep_diffs
    if args.child == "time":
        return child_time(args)
    if args.child == "memory":
        return child_memory(args)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in rows:
        if r not in ROWS:
            raise SystemExit(f"unknown row '{r}' (choose from {', '.join(ROWS)})")
    import torch
    keep = ("--keep-diffs",) if args.keep_diffs else ()
    print(f"torch {torch.__version__}, {args.threads} thread(s) both sides, OMP_WAIT_POLICY="
          f"{args.omp_wait_policy or '(default)'}, {'quick' if args.quick else 'full'} mode, "
          f"train rows {'keep all diffs' if args.keep_diffs else 'recycle intermediate diffs'}")
    print("time: median per iteration, ours and PyTorch alternated in one process; "
          "MB: peak RSS growth, one fresh process per cell")
    head = (f"{'row':<21}{'batch':>5} {'ours ms':>8}{'torch ms':>9}{'ratio':>6} "
            f"{'ours im/s':>9}{'torch im/s':>10} {'ours MB':>8}{'torch MB':>9}{'ratio':>6}"
            f"{'check':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        title, _, batch, _ = ROWS[r]
        t = run_child(args, "--child", "time", "--row", r, *keep)
        mem = {}
        if not args.no_memory:
            for side in ("ours", "torch"):
                mem[side] = run_child(args, "--child", "memory", "--row", r, "--side",
                                      side, *keep)["peak_mb"]
        ours, theirs = t["ours"] * 1e3, t["torch"] * 1e3
        mem_txt = (f"{mem['ours']:>8.0f}{mem['torch']:>9.0f}{mem['ours'] / mem['torch']:>6.2f}"
                   if mem else f"{'-':>8}{'-':>9}{'-':>6}")
        chk = "dropout" if t["check"] is None else f"{t['check']:.1e}"
        print(f"{title:<21}{batch:>5} {ours:>8.1f}{theirs:>9.1f}{ours / theirs:>6.2f} "
              f"{batch / t['ours']:>9.1f}{batch / t['torch']:>10.1f} {mem_txt}{chk:>9}",
              flush=True)
    print("check: largest relative difference of outputs (forward) or of loss and update "
          "(train, one step); dropout rows draw different masks")
    refs = [r for r in rows if r in REFERENCE]
    if refs:
        print("\nReference (issue author, 2-core AVX-512 machine), ms per iteration:")
        for r in refs:
            print(f"  {ROWS[r][0]:<20} BVLC Caffe CPU {REFERENCE[r][0]:>7.1f}   "
                  f"PyTorch {REFERENCE[r][1]:>7.1f}")


if __name__ == "__main__":
    main()
