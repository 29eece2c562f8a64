"""caffe.proto: wire and text compatibility with the files BVLC Caffe wrote."""

import ast
import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, text_format
from google.protobuf.unknown_fields import UnknownFieldSet

from caffe.proto import caffe_pb2
from caffe.proto.compat import is_repeated

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PROTO_DIR = Path(caffe_pb2.__file__).resolve().parent


def shared_files(*patterns):
    """Paths under ../shared matching the globs, relative to it, for parametrize.

    When ../shared is absent one placeholder keeps the test in the run so that
    the `shared` fixture reports the skip (or the failure CI asks for).
    """
    found = sorted({p.relative_to(SHARED).as_posix()
                    for pattern in patterns for p in SHARED.glob(pattern)})
    return found or ["<shared missing>"]


def unknown_fields(message, path="msg"):
    """Paths of every (sub)message holding fields the schema does not know."""
    found = [path] if len(UnknownFieldSet(message)) else []
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if is_repeated(field):
            for i, item in enumerate(value):
                found += unknown_fields(item, f"{path}.{field.name}[{i}]")
        else:
            found += unknown_fields(value, f"{path}.{field.name}")
    return found


# --- the schema itself -----------------------------------------------------

# A sample of BVLC's numbering, where a typo would silently break old files.
FIELD_NUMBERS = {
    "BlobProto": {"num": 1, "channels": 2, "height": 3, "width": 4, "data": 5,
                  "diff": 6, "shape": 7, "double_data": 8, "double_diff": 9},
    "Datum": {"channels": 1, "height": 2, "width": 3, "data": 4, "label": 5,
              "float_data": 6, "encoded": 7},
    "NetParameter": {"name": 1, "layers": 2, "input": 3, "input_dim": 4,
                     "force_backward": 5, "state": 6, "debug_info": 7,
                     "input_shape": 8, "layer": 100},
    "SolverParameter": {"train_net": 1, "test_net": 2, "test_iter": 3,
                        "base_lr": 5, "lr_policy": 8, "snapshot_prefix": 15,
                        "solver_mode": 17, "random_seed": 20, "net": 24,
                        "net_param": 25, "regularization_type": 29,
                        "solver_type": 30, "delta": 31, "stepvalue": 34,
                        "clip_gradients": 35, "iter_size": 36,
                        "snapshot_format": 37, "rms_decay": 38, "momentum2": 39,
                        "type": 40, "layer_wise_reduce": 41, "weights": 42},
    "SolverState": {"iter": 1, "learned_net": 2, "history": 3, "current_step": 4},
    "LayerParameter": {
        "name": 1, "type": 2, "bottom": 3, "top": 4, "loss_weight": 5,
        "param": 6, "blobs": 7, "include": 8, "exclude": 9, "phase": 10,
        "propagate_down": 11, "transform_param": 100, "loss_param": 101,
        "accuracy_param": 102, "argmax_param": 103, "concat_param": 104,
        "contrastive_loss_param": 105, "convolution_param": 106,
        "data_param": 107, "dropout_param": 108, "dummy_data_param": 109,
        "eltwise_param": 110, "exp_param": 111, "hdf5_data_param": 112,
        "hdf5_output_param": 113, "hinge_loss_param": 114,
        "image_data_param": 115, "infogain_loss_param": 116,
        "inner_product_param": 117, "lrn_param": 118, "memory_data_param": 119,
        "mvn_param": 120, "pooling_param": 121, "power_param": 122,
        "relu_param": 123, "sigmoid_param": 124, "softmax_param": 125,
        "slice_param": 126, "tanh_param": 127, "threshold_param": 128,
        "window_data_param": 129, "python_param": 130, "prelu_param": 131,
        "spp_param": 132, "reshape_param": 133, "log_param": 134,
        "flatten_param": 135, "reduction_param": 136, "embed_param": 137,
        "tile_param": 138, "batch_norm_param": 139, "elu_param": 140,
        "bias_param": 141, "scale_param": 142, "input_param": 143,
        "crop_param": 144, "parameter_param": 145, "recurrent_param": 146,
        "swish_param": 147, "clip_param": 148},
    "V1LayerParameter": {
        "layer": 1, "bottom": 2, "top": 3, "name": 4, "type": 5, "blobs": 6,
        "blobs_lr": 7, "weight_decay": 8, "concat_param": 9,
        "convolution_param": 10, "data_param": 11, "inner_product_param": 17,
        "pooling_param": 19, "include": 32, "exclude": 33, "loss_weight": 35,
        "transform_param": 36, "loss_param": 42, "param": 1001,
        "blob_share_mode": 1002},
    "V0LayerParameter": {"name": 1, "type": 2, "num_output": 3, "pad": 7,
                         "kernelsize": 8, "k": 22, "blobs": 50,
                         "blobs_lr": 51, "concat_dim": 65,
                         "hdf5_output_param": 1001},
}


@pytest.mark.parametrize("message", sorted(FIELD_NUMBERS))
def test_field_numbers(message):
    fields = getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name
    assert {name: fields[name].number for name in FIELD_NUMBERS[message]} \
        == FIELD_NUMBERS[message]


def test_defaults_and_enums():
    assert caffe_pb2.FillerParameter().type == "constant"
    assert caffe_pb2.FillerParameter().std == 1.0
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    assert caffe_pb2.ParamSpec().lr_mult == 1.0
    solver = caffe_pb2.SolverParameter()
    assert (solver.type, solver.solver_mode, solver.random_seed) == ("SGD", 1, -1)
    assert solver.clip_gradients == -1.0 and solver.test_initialization
    assert caffe_pb2.PoolingParameter().round_mode == caffe_pb2.PoolingParameter.CEIL
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    assert caffe_pb2.DataParameter().prefetch == 4
    assert caffe_pb2.V1LayerParameter.DECONVOLUTION == 39
    assert caffe_pb2.V1LayerParameter.ABSVAL == 35
    assert caffe_pb2.ReductionParameter.SUM == 1
    # Clip is the one layer whose settings are required.
    clip = caffe_pb2.ClipParameter()
    assert not clip.IsInitialized()


def _embedded_descriptor(module_path):
    """The serialized schema a generated *_pb2.py embeds."""
    text = module_path.read_text()
    match = re.search(r"AddSerializedFile\((b'.*?')\)\n", text, re.S)
    return ast.literal_eval(match.group(1))


def test_generated_module_is_current(tmp_path):
    """caffe_pb2.py must be regenerated (`make proto`) after every caffe.proto edit."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the [test] extra) compiles caffe.proto")
    from caffe.proto.generate import generate

    # Compared on the embedded schema, not the text: the [test] extra's protoc is newer than
    # the one the committed module is made with (checked below).
    fresh = _embedded_descriptor(generate(tmp_path, any_protoc=True))
    assert fresh == _embedded_descriptor(PROTO_DIR / "caffe_pb2.py"), \
        "caffe.proto changed: run `make proto`"


def test_generated_module_runs_on_old_and_new_protobuf():
    """Made by protoc 25 (protobuf 4.25's), with no runtime pin, in the private pool."""
    text = (PROTO_DIR / "caffe_pb2.py").read_text()
    assert "# Protobuf Python Version: 4.25." in text, "regenerate with `make proto`"
    assert "runtime_version" not in text
    assert "_descriptor_pool.Default()" not in text
    assert caffe_pb2.DESCRIPTOR.pool is not descriptor_pool.Default()


def test_generate_refuses_an_installed_copy(tmp_path, monkeypatch, capsys):
    from caffe.proto import generate
    monkeypatch.setattr(generate, "source_checkout", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        generate.main([])
    assert "installed copy" in str(exit_.value) and "--out" in str(exit_.value)


def test_generate_names_what_it_needs(tmp_path, monkeypatch):
    import builtins

    from caffe.proto import generate
    real_import = builtins.__import__

    def no_grpc_tools(name, *args, **kwargs):
        if name.startswith("grpc_tools"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_grpc_tools)
    with pytest.raises(SystemExit) as exit_:
        generate.main(["--out", str(tmp_path)])
    assert "grpcio-tools==1.62.3" in str(exit_.value) and "make proto" in str(exit_.value)
    assert not (tmp_path / "caffe_pb2.py").exists()


def test_unknown_field_check_sees_unknown_fields():
    # Field 99 of BlobProto does not exist; the check must not miss it.
    blob = caffe_pb2.BlobProto(data=[1.0])
    layer = caffe_pb2.LayerParameter(name="l")
    layer.blobs.add().MergeFromString(blob.SerializeToString() + b"\x98\x06\x01")
    assert unknown_fields(layer) == ["msg.blobs[0]"]


# --- the reference files -----------------------------------------------------

PROTOTXTS = shared_files("models/*.prototxt", "golden/**/*.prototxt")


@pytest.mark.parametrize("name", PROTOTXTS)
def test_prototxt_parses(shared, name):
    path = shared / name
    # Solver definitions are named solver.prototxt / *_solver.prototxt.
    cls = caffe_pb2.SolverParameter if "solver" in path.name else caffe_pb2.NetParameter
    message = text_format.Parse(path.read_text(), cls())
    assert message.ListFields()
    # Text output reads back to the same message.
    assert text_format.Parse(text_format.MessageToString(message), cls()) == message


def test_reference_files_are_covered(shared):
    names = set(PROTOTXTS)
    assert "golden/formats/lenet.prototxt" in names
    assert "golden/formats/bvlc_lenet_run/lenet_solver.prototxt" in names
    assert any(n.startswith("golden/layers/") for n in names)
    assert any(n.startswith("golden/solvers/") and n.endswith("/solver.prototxt")
               for n in names)


@pytest.mark.parametrize("name", shared_files("golden/**/*.caffemodel"))
def test_caffemodel_round_trip(shared, name):
    raw = (shared / name).read_bytes()
    net = caffe_pb2.NetParameter.FromString(raw)
    assert unknown_fields(net) == []
    assert net.SerializeToString() == raw
    assert len(net.layer) + len(net.layers) > 0


@pytest.mark.parametrize("name", shared_files("golden/**/*.solverstate"))
def test_solverstate_round_trip(shared, name):
    raw = (shared / name).read_bytes()
    state = caffe_pb2.SolverState.FromString(raw)
    assert unknown_fields(state) == []
    assert state.SerializeToString() == raw
    assert state.iter > 0 and state.learned_net.endswith(".caffemodel")


@pytest.mark.parametrize("name", shared_files("golden/**/*.binaryproto"))
def test_binaryproto_round_trip(shared, name):
    raw = (shared / name).read_bytes()
    blob = caffe_pb2.BlobProto.FromString(raw)
    assert unknown_fields(blob) == []
    assert blob.SerializeToString() == raw
    assert len(blob.data) == blob.num * blob.channels * blob.height * blob.width
