"""Training a Caffe solver on a Spark cluster (CaffeOnSpark's place), with PySpark's TorchDistributor.

    from caffe.spark import train
    train("solver.prototxt", num_tasks=4, snapshot_prefix="/shared/run1/caffenet")
    train("solver.prototxt", num_tasks=4, snapshot_prefix="/shared/run1/caffenet",
          data=df)                         # df: a DataFrame of (image bytes, label) rows

TorchDistributor starts a barrier stage of `num_tasks` tasks (all run at once, or none), one
pycaffe worker in each, joined by torch.distributed (gloo on CPUs, NCCL with use_gpu=True).
Every task runs what `caffe train` runs under torchrun: worker r reads records r, r + N, ...
of the net's data sources, gradients are averaged over the tasks, and worker 0 alone tests,
logs and writes the snapshots, to `snapshot_prefix`, a path the driver names. Training on
N tasks is the same as `caffe train -workers N` on one machine.

Data: the net's own LMDB/LevelDB/HDF5/image-list sources, at paths every task can read
(shared storage), or `data=`, a DataFrame of rows (encoded image bytes, integer label): the
driver streams it (toLocalIterator, never collect) into an LMDB of encoded Datums at
`data_path` (default: beside the snapshots), as convert_imageset would write it, and the
train net's first Data layer reads that.

Needs `pip install pycaffe[spark]` (pyspark, with pandas and pyarrow for TorchDistributor).
"""
import glob
import os
import re
import tempfile

from google.protobuf import text_format

from .errors import CaffeError
from .formats import parse_text
from .proto import caffe_pb2


def train(solver, num_tasks=2, snapshot_prefix=None, *, data=None, data_path=None,
          columns=None, weights=None, snapshot=None, use_gpu=False, spark=None):
    """Train the solver prototxt `solver` on `num_tasks` Spark tasks; returns the paths of the
    last snapshot (caffemodel, solverstate), or None when none was written."""
    try:
        from pyspark.ml.torch.distributor import TorchDistributor
        from pyspark.sql import SparkSession
    except ImportError as e:
        raise CaffeError(f"caffe.spark needs pyspark (pip install pycaffe[spark]): {e}") from None
    from .solvers import read_solver
    if int(num_tasks) < 1:
        raise CaffeError(f"caffe.spark.train: num_tasks must be >= 1, got {num_tasks}")
    param = read_solver(str(solver))
    if snapshot_prefix:
        param.snapshot_prefix = os.path.abspath(snapshot_prefix)
    elif param.snapshot_prefix:
        param.snapshot_prefix = os.path.abspath(param.snapshot_prefix)
    else:
        raise CaffeError(f"{solver}: caffe.spark.train needs a snapshot prefix (the solver's "
                         f"snapshot_prefix or snapshot_prefix=) where every task can write")
    # The driver names the path: it makes the folder (on storage the tasks share).
    os.makedirs(os.path.dirname(param.snapshot_prefix), exist_ok=True)
    if data is not None:
        data_path = os.path.abspath(data_path or param.snapshot_prefix + "_train_lmdb")
        dataframe_to_lmdb(data, data_path, columns)
        _point_train_data_at(param, str(solver), data_path)
    spark = spark or SparkSession.builder.getOrCreate()
    argv = []
    if weights:
        argv += ["-weights", ",".join(os.path.abspath(w) for w in str(weights).split(","))]
    if snapshot:
        argv += ["-snapshot", os.path.abspath(snapshot)]
    distributor = TorchDistributor(num_processes=int(num_tasks), local_mode=False,
                                   use_gpu=bool(use_gpu))
    distributor.spark = spark
    return distributor.run(_task, text_format.MessageToString(param), os.getcwd(), argv,
                           bool(use_gpu))


def _task(solver_text, cwd, argv, use_gpu):
    """One Spark task: `caffe train` as one of the workers (torchrun's variables are set)."""
    from .tools.caffe import main
    os.chdir(cwd)                     # the solver's relative paths mean what they did there
    with tempfile.TemporaryDirectory(prefix="caffe_spark_") as tmp:
        path = os.path.join(tmp, "solver.prototxt")
        with open(path, "w") as f:
            f.write(solver_text)
        gpu = ["-gpu", os.environ.get("LOCAL_RANK", "0")] if use_gpu else []
        code = main(["train", "-solver", path, *gpu, *argv])
    if code:
        raise CaffeError(f"caffe train failed with status {code} on task "
                         f"{os.environ.get('RANK', '?')}")
    param = parse_text(solver_text, caffe_pb2.SolverParameter())
    return last_snapshot(param.snapshot_prefix)


def last_snapshot(prefix):
    """(caffemodel, solverstate) of the highest iteration under `prefix`, or None."""
    found = {}
    for path in glob.glob(glob.escape(prefix) + "_iter_*"):
        m = re.fullmatch(re.escape(prefix) + r"_iter_(\d+)\.(caffemodel|solverstate)(\.h5)?",
                         path)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = path
    complete = [i for i, kinds in found.items() if len(kinds) == 2]
    if not complete:
        return None
    kinds = found[max(complete)]
    return kinds["caffemodel"], kinds["solverstate"]


# -- a DataFrame as the training data ---------------------------------------------------------
def dataframe_to_lmdb(df, path, columns=None):
    """Write rows (encoded image bytes, label) of `df` to a new LMDB of encoded Datums.

    Streams the rows to the driver partition by partition; returns how many were written.
    Keys are the row numbers (%08d), as convert_imageset numbers its lines."""
    from .data import open_db
    image_col, label_col = columns or df.columns[:2]
    if os.path.exists(path):
        raise CaffeError(f"{path} exists already: give data_path= a new folder for the "
                         f"DataFrame's LMDB")
    n = 0
    with open_db(path, "lmdb", "new") as db:
        for row in df.select(image_col, label_col).toLocalIterator():
            image, label = row[0], row[1]
            if not isinstance(image, (bytes, bytearray)):
                raise CaffeError(f"DataFrame row {n}: column '{image_col}' holds "
                                 f"{type(image).__name__}, not image bytes")
            try:
                label = int(label)
            except (TypeError, ValueError):
                raise CaffeError(f"DataFrame row {n}: label {label!r} in column '{label_col}' "
                                 f"is not an integer") from None
            datum = caffe_pb2.Datum(encoded=True, data=bytes(image), label=label)
            db.put(f"{n:08d}", datum.SerializeToString())
            n += 1
    if not n:
        raise CaffeError("the training DataFrame has no rows")
    return n


def _point_train_data_at(param, solver_path, source):
    """Embed the train net in `param`, its first TRAIN Data layer reading LMDB `source`."""
    net = _train_net_param(param)
    for layer in net.layer:
        if layer.type == "Data" and _in_train(layer):
            layer.data_param.source = source
            layer.data_param.backend = caffe_pb2.DataParameter.LMDB
            break
    else:
        raise CaffeError(f"{solver_path}: data= needs a Data layer in the train net to feed")
    # Where the train net came from decides where the test nets come from: keep the kind.
    separate = param.HasField("train_net_param") or bool(param.train_net)
    for field in ("net", "net_param", "train_net", "train_net_param"):
        param.ClearField(field)
    (param.train_net_param if separate else param.net_param).CopyFrom(net)


def _train_net_param(param):
    """A copy of the solver's train net (BVLC's order: train_net_param, train_net, net_param,
    net)."""
    from .formats import read_net_param
    net = caffe_pb2.NetParameter()
    if param.HasField("train_net_param"):
        net.CopyFrom(param.train_net_param)
    elif param.train_net:
        net.CopyFrom(read_net_param(param.train_net))
    elif param.HasField("net_param"):
        net.CopyFrom(param.net_param)
    elif param.net:
        net.CopyFrom(read_net_param(param.net))
    else:
        raise CaffeError("the solver names no train net")
    return net


def _in_train(layer):
    if any(rule.phase == caffe_pb2.TEST for rule in layer.include if rule.HasField("phase")):
        return False
    if layer.HasField("phase") and layer.phase == caffe_pb2.TEST:
        return False
    return True
