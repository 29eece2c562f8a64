"""caffe.spark: a solver trained on Spark (local mode, 2 barrier tasks) equals `-workers 2`."""
import io
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from caffe.data import datum_to_array, open_db, parse_datum
from tests.parallel.helpers import (COMMON, NET, SOLVERS, assert_weights_close, caffe_train,
                                    clean_env, finish, make_folder)

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
    session = (SparkSession.builder.master("local[2]").appName("pycaffe-test")
               .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def snapshots(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("s_iter_"))


def test_spark_tasks_train_as_two_workers(spark, tmp_path):
    from caffe.spark import train
    folder = make_folder(tmp_path, "sgd")
    workers = caffe_train(folder, "-solver", "sgd3.prototxt", "-workers", "2")
    cwd = os.getcwd()
    os.chdir(folder)            # the solver's paths are relative, as a user's would be
    try:
        last = train("sgd3.prototxt", num_tasks=2, snapshot_prefix="spark/s", spark=spark)
    finally:
        os.chdir(cwd)
    code, log = finish(workers, folder)
    assert code == 0, log
    assert last == (str(folder / "spark/s_iter_6.caffemodel"),
                    str(folder / "spark/s_iter_6.solverstate"))
    assert snapshots(folder / "spark") == snapshots(folder / "out3")
    for i in range(1, 7):
        assert_weights_close(folder / f"out3/s_iter_{i}.caffemodel",
                             folder / f"spark/s_iter_{i}.caffemodel")


def test_spark_trains_on_a_dataframe_of_image_bytes(spark, tmp_path):
    from caffe.spark import train
    rng = np.random.default_rng(1)
    rows, images = [], []
    for i in range(24):
        img = rng.integers(0, 60, size=(4, 4), dtype=np.uint8)
        img[i % 3] += 150
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        rows.append((buf.getvalue(), i % 3))
        images.append(img)
    df = spark.createDataFrame(rows, ["image", "label"]).repartition(2)
    folder = tmp_path
    # Pixels scaled to [0, 1]; the train source is what data= replaces, the test net reads
    # the DataFrame's LMDB once it exists.
    net = NET.replace('data_param { source: "db"', 'transform_param { scale: 0.0039 } '
                      'data_param { source: "unused"', 1)
    net = net.replace('data_param { source: "db"', 'transform_param { scale: 0.0039 } '
                      f'data_param {{ source: "{folder / "df"}"')
    (folder / "net3.prototxt").write_text(net % {"batch": 3, "hidden": 8})
    (folder / "sgd3.prototxt").write_text(
        COMMON % {"net": str(folder / "net3.prototxt"), "out": str(folder / "spark")} +
        SOLVERS["sgd"] + "\n")
    (folder / "spark").mkdir()
    last = train(str(folder / "sgd3.prototxt"), num_tasks=2, spark=spark,
                 data=df, data_path=str(folder / "df"))
    assert last[0] == str(folder / "spark/s_iter_6.caffemodel")
    # The DataFrame became an LMDB of encoded Datums holding the very images, in row order
    # of the collected DataFrame.
    with open_db(folder / "df", "lmdb") as db:
        decoded = {}
        for key, value in db:
            datum = parse_datum(value)
            assert datum.encoded
            decoded[datum_to_array(datum)[0].tobytes()] = datum.label
    assert decoded == {img.tobytes(): i % 3 for i, img in enumerate(images)}
    # `-workers 2` reading that LMDB steps the same way.
    (folder / "net_ref.prototxt").write_text((folder / "net3.prototxt").read_text()
                                             .replace('"unused"', f'"{folder / "df"}"'))
    (folder / "ref").mkdir()
    (folder / "ref.prototxt").write_text(
        COMMON % {"net": "net_ref.prototxt", "out": "ref"} + SOLVERS["sgd"] + "\n")
    code, log = finish(caffe_train(folder, "-solver", "ref.prototxt", "-workers", "2"), folder)
    assert code == 0, log
    for i in range(1, 7):
        assert_weights_close(folder / f"ref/s_iter_{i}.caffemodel",
                             folder / f"spark/s_iter_{i}.caffemodel")
