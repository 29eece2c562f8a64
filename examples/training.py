"""What the example scripts share: a solver from text and a net, batches fed through Input
layers (the pycaffe way), scoring with a TEST net that shares the trained weights."""
import numpy as np

import caffe
from caffe.formats import parse_text
from caffe.proto import caffe_pb2


def make_solver(net_param, solver_text, max_iter, prefix=None):
    """A solver for net_param (a NetParameter) from SolverParameter text."""
    param = parse_text(solver_text, caffe_pb2.SolverParameter())
    param.net_param.CopyFrom(net_param)
    param.max_iter = max_iter
    if prefix:
        param.snapshot_prefix = str(prefix)
    else:
        param.snapshot_after_train = False
    return caffe.get_solver(param)


def feeder(net, arrays, seed=0):
    """An on_start callback putting the next shuffled batch of each array into the blob of
    the same name (all arrays share the first dimension)."""
    blobs = {name: net.blobs[name] for name in arrays}
    n = len(next(iter(arrays.values())))
    batch = next(iter(blobs.values())).data.shape[0]
    rng = np.random.default_rng(seed)
    state = {"order": rng.permutation(n), "pos": 0}

    def feed():
        picks, need = [], batch
        while need:                       # wrap around (and reshuffle) at the end of an epoch
            if state["pos"] >= n:
                state["order"], state["pos"] = rng.permutation(n), 0
            take = min(need, n - state["pos"])
            picks.append(state["order"][state["pos"]:state["pos"] + take])
            state["pos"] += take
            need -= take
        pick = np.concatenate(picks)
        for name, blob in blobs.items():
            blob.data[...] = arrays[name][pick].reshape(blob.data.shape)
    return feed


def train(solver, arrays, seed=0):
    solver.add_callback(feeder(solver.net, arrays, seed), None)
    solver.solve()
    return solver


def outputs(net, arrays, names):
    """Run net over arrays batch by batch; {name: stacked output rows} for names."""
    batch = net.blobs[next(iter(arrays))].data.shape[0]
    n = len(next(iter(arrays.values())))
    result = {name: [] for name in names}
    for i in range(0, n, batch):
        k = min(batch, n - i)
        for name, values in arrays.items():
            net.blobs[name].data[:k] = values[i:i + k].reshape((k,) +
                                                               net.blobs[name].data.shape[1:])
        net.forward()
        for name in names:
            data = net.blobs[name].data
            result[name].append(data[:k].copy() if data.ndim else data.reshape(1).copy())
    return {name: np.concatenate(v) for name, v in result.items()}


def test_net(solver, net_param=None):
    """A TEST-phase net sharing the solver's trained weights."""
    net = caffe.Net(net_param or solver.param.net_param, caffe.TEST)
    net.share_with(solver.net)
    return net
