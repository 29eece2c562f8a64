"""Train Caffe's CIFAR-10 nets, quick or full, with `caffe train` (BVLC's train_quick.sh).

    python examples/cifar10/train_cifar10.py [--net quick|full] [--iters N] [--data DIR]

The nets are written with NetSpec into cifar10_{quick,full}_train_test.prototxt with a
solver beside them; the data are create_cifar10.py's LMDBs and mean. quick runs BVLC's two
stages (lr 0.001, then 0.0001 resumed from the snapshot: 4,000 + 1,000 iterations by
default); full runs one stage of its schedule. The last snapshot is scored by `caffe test`.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import caffe  # noqa: E402
from caffe import layers as L, params as P  # noqa: E402
from caffe.tools.caffe import main as caffe_main  # noqa: E402

HERE = Path(__file__).resolve().parent


def _conv(bottom, n, std):
    return L.Convolution(bottom, num_output=n, pad=2, kernel_size=5, stride=1,
                         param=[dict(lr_mult=1), dict(lr_mult=2)],
                         weight_filler=dict(type="gaussian", std=std),
                         bias_filler=dict(type="constant"))


def _data(n, data_dir, batch, test_batch, phase):
    mean = str(Path(data_dir) / "mean.binaryproto")
    split = "train" if phase == caffe.TRAIN else "test"
    n.data, n.label = L.Data(source=str(Path(data_dir) / f"cifar10_{split}_lmdb"),
                             backend=P.Data.LMDB, ntop=2, transform_param=dict(mean_file=mean),
                             batch_size=batch if phase == caffe.TRAIN else test_batch,
                             include=dict(phase=phase))


def _train_test(build, data_dir, batch, test_batch, name):
    """BVLC's train_test layout: a TRAIN and a TEST Data layer feeding one net."""
    train = caffe.NetSpec()
    _data(train, data_dir, batch, test_batch, caffe.TRAIN)
    n = caffe.NetSpec()
    _data(n, data_dir, batch, test_batch, caffe.TEST)
    build(n)
    proto = caffe.proto.caffe_pb2.NetParameter(name=name)
    proto.layer.extend(train.to_proto().layer)
    proto.layer.extend(n.to_proto().layer)
    return proto


def quick(data_dir, batch=100, test_batch=100):
    """cifar10_quick_train_test: three conv/pool stages, two InnerProducts."""
    return _train_test(_quick, data_dir, batch, test_batch, "CIFAR10_quick")


def _quick(n):
    n.conv1 = _conv(n.data, 32, 0.0001)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.relu1 = L.ReLU(n.pool1, in_place=True)
    n.conv2 = _conv(n.pool1, 32, 0.01)
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.conv3 = _conv(n.pool2, 64, 0.01)
    n.relu3 = L.ReLU(n.conv3, in_place=True)
    n.pool3 = L.Pooling(n.conv3, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.ip1 = L.InnerProduct(n.pool3, num_output=64, param=[dict(lr_mult=1), dict(lr_mult=2)],
                           weight_filler=dict(type="gaussian", std=0.1),
                           bias_filler=dict(type="constant"))
    n.ip2 = L.InnerProduct(n.ip1, num_output=10, param=[dict(lr_mult=1), dict(lr_mult=2)],
                           weight_filler=dict(type="gaussian", std=0.1),
                           bias_filler=dict(type="constant"))
    n.accuracy = L.Accuracy(n.ip2, n.label, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)


def full(data_dir, batch=100, test_batch=100):
    """cifar10_full_train_test: quick's stages with LRN after pooling, one InnerProduct."""
    return _train_test(_full, data_dir, batch, test_batch, "CIFAR10_full")


def _full(n):
    lrn = dict(local_size=3, alpha=5e-05, beta=0.75, norm_region=P.LRN.WITHIN_CHANNEL)
    n.conv1 = _conv(n.data, 32, 0.0001)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.relu1 = L.ReLU(n.pool1, in_place=True)
    n.norm1 = L.LRN(n.pool1, **lrn)
    n.conv2 = _conv(n.norm1, 32, 0.01)
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.norm2 = L.LRN(n.pool2, **lrn)
    n.conv3 = _conv(n.norm2, 64, 0.01)
    n.relu3 = L.ReLU(n.conv3, in_place=True)
    n.pool3 = L.Pooling(n.conv3, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.ip1 = L.InnerProduct(n.pool3, num_output=10,
                           param=[dict(lr_mult=1, decay_mult=250), dict(lr_mult=2, decay_mult=0)],
                           weight_filler=dict(type="gaussian", std=0.01),
                           bias_filler=dict(type="constant"))
    n.accuracy = L.Accuracy(n.ip1, n.label, include=dict(phase=caffe.TEST))
    n.loss = L.SoftmaxWithLoss(n.ip1, n.label)


SOLVER = """net: "{net}"
test_iter: {test_iter}
test_interval: {test_interval}
base_lr: {lr}
momentum: 0.9
weight_decay: 0.004
lr_policy: "fixed"
display: {display}
max_iter: {max_iter}
snapshot: {max_iter}
snapshot_prefix: "{prefix}"
random_seed: 1701
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", choices=("quick", "full"), default="quick")
    p.add_argument("--iters", type=int, default=0, help="first-stage iterations "
                   "(default: quick 4000, full 60000)")
    p.add_argument("--data", default=str(HERE), help="create_cifar10.py's output folder")
    p.add_argument("--out", default=None, help="where prototxts and snapshots go")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--test_iter", type=int, default=100)
    args = p.parse_args(argv)
    out = Path(args.out or HERE)
    out.mkdir(parents=True, exist_ok=True)
    net = (quick if args.net == "quick" else full)(args.data, args.batch, args.batch)
    net_file = out / f"cifar10_{args.net}_train_test.prototxt"
    net_file.write_text(str(net))
    iters = args.iters or (4000 if args.net == "quick" else 60000)
    prefix = out / f"cifar10_{args.net}"
    stages = [(0.001, iters)] + ([(0.0001, iters + max(iters // 4, 1))]
                                 if args.net == "quick" else [])
    snapshot = ""
    for stage, (lr, max_iter) in enumerate(stages):
        solver = out / f"cifar10_{args.net}_solver{'_lr1' if stage else ''}.prototxt"
        solver.write_text(SOLVER.format(net=net_file, test_iter=args.test_iter,
                                        test_interval=max(max_iter // 4, 1), lr=lr,
                                        display=max(max_iter // 20, 1), max_iter=max_iter,
                                        prefix=prefix))
        command = ["train", "-solver", str(solver)] + (["-snapshot", snapshot] if snapshot
                                                        else [])
        print("caffe " + " ".join(command), flush=True)
        if caffe_main(command) != 0:
            return 1
        snapshot = f"{prefix}_iter_{max_iter}.solverstate"
    weights = f"{prefix}_iter_{stages[-1][1]}.caffemodel"
    print(f"caffe test -model {net_file} -weights {weights}", flush=True)
    return caffe_main(["test", "-model", str(net_file), "-weights", weights,
                       "-iterations", str(args.test_iter)])


if __name__ == "__main__":
    sys.exit(main())
