"""caffe.spark: a solver trained on Spark (local mode, 2 barrier tasks) equals `-workers 2`."""
import io
import os
import shutil
import signal
import sys

import numpy as np
import pytest
from PIL import Image

from caffe.data import datum_to_array, open_db, parse_datum
from tests.parallel.helpers import (COMMON, NET, SOLVERS, assert_weights_close, caffe_train,
                                    clean_env, finish)

REQUIRED = os.environ.get("PYCAFFE_REQUIRE_SPARK") == "1"     # CI installs Java
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    why = None
    try:
        from pyspark.sql import SparkSession
        import pandas  # noqa: F401,E401  (TorchDistributor's tasks need pandas and pyarrow)
        import pyarrow  # noqa: F401,E401
    except ImportError as e:
        why = f"pyspark with pandas and pyarrow is not installed (pycaffe[spark]): {e}"
    if why is None and shutil.which("java") is None:
        why = "Spark needs Java (default-jre-headless)"
    if why:
        if REQUIRED:
            pytest.fail(why + " (PYCAFFE_REQUIRE_SPARK=1)")
        pytest.skip(why)
    os.environ["PYTHONPATH"] = clean_env()["PYTHONPATH"]    # the tasks import this caffe
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYSPARK_PYTHON"] = sys.executable          # the tasks' Python: this venv's
    # SparkContext installs its own SIGINT handler and stop() leaves it: restore ours, so
    # that later tests of Ctrl-C handling see Python's default.
    sigint = signal.getsignal(signal.SIGINT)
    session = (SparkSession.builder.master("local[2]").appName("pycaffe-test")
               .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    signal.signal(signal.SIGINT, sigint)


def snapshots(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("s_iter_"))


def encoded_images(n=24):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        img = rng.integers(0, 60, size=(4, 4), dtype=np.uint8)
        img[i % 3] += 150
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        rows.append((buf.getvalue(), i % 3, img))
    return rows


def decoded(path):
    with open_db(path, "lmdb") as db:
        out = []
        for _, value in db:
            datum = parse_datum(value)
            assert datum.encoded
            out.append((datum_to_array(datum)[0].tobytes(), datum.label))
    return out


def test_spark_tasks_train_on_a_dataframe_as_two_workers(spark, tmp_path, monkeypatch):
    """One run covers both data paths: the DataFrame becomes an LMDB every task reads."""
    from caffe.spark import dataframe_to_lmdb, train
    rows = encoded_images()
    df = spark.createDataFrame([r[:2] for r in rows], ["image", "label"])     # 2 partitions
    folder = tmp_path
    monkeypatch.chdir(folder)       # the solver's paths are relative, as a user's would be
    # Pixels scaled to [0, 1]; the train source is what data= replaces.
    net = NET.replace('data_param { source: "db"', 'transform_param { scale: 0.0039 } '
                      'data_param { source: "unused"', 1)
    net = net.replace('data_param { source: "db"', 'transform_param { scale: 0.0039 } '
                      'data_param { source: "ref_lmdb"')
    (folder / "net3.prototxt").write_text(net % {"batch": 3, "hidden": 8})
    (folder / "ref.prototxt").write_text(net.replace('"unused"', '"ref_lmdb"') %
                                         {"batch": 3, "hidden": 8})
    for name, net_file in (("sgd3", "net3"), ("workers", "ref")):
        (folder / f"{name}.prototxt").write_text(
            COMMON % {"net": f"{net_file}.prototxt", "out": name} + SOLVERS["sgd"] + "\n")
    # The reference: `caffe train -workers 2` on the same rows, as an LMDB of encoded Datums.
    assert dataframe_to_lmdb(df, str(folder / "ref_lmdb")) == 24
    (folder / "workers").mkdir()
    workers = caffe_train(folder, "-solver", "workers.prototxt", "-workers", "2")
    last = train("sgd3.prototxt", num_tasks=2, snapshot_prefix="spark/s", spark=spark,
                 data=df, data_path="spark_lmdb")
    code, log = finish(workers, folder)
    assert code == 0, log
    assert last == (str(folder / "spark/s_iter_6.caffemodel"),
                    str(folder / "spark/s_iter_6.solverstate"))
    # The rows' very images and labels, in the DataFrame's order.
    images = decoded(folder / "spark_lmdb")
    assert images == decoded(folder / "ref_lmdb")
    assert sorted(images) == sorted((img.tobytes(), label) for _, label, img in rows)
    # Worker 0 alone wrote one set of snapshots, at the driver's path, as -workers 2 did.
    assert snapshots(folder / "spark") == snapshots(folder / "workers")
    for i in range(1, 7):
        assert_weights_close(folder / f"workers/s_iter_{i}.caffemodel",
                             folder / f"spark/s_iter_{i}.caffemodel")
