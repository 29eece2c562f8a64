"""The registry names every layer type BVLC Caffe 1.0 registers."""
import pytest

import caffe

BVLC_TYPES = """AbsVal Accuracy ArgMax BatchNorm BatchReindex Bias BNLL Clip Concat ContrastiveLoss
Convolution Crop Deconvolution Dropout Eltwise ELU Embed EuclideanLoss Exp Filter Flatten
HingeLoss Im2col InfogainLoss InnerProduct Input Log LRN LSTM LSTMUnit MultinomialLogisticLoss
MVN Parameter Pooling Power PReLU Python Reduction ReLU Reshape RNN Scale Sigmoid
SigmoidCrossEntropyLoss Silence Slice Softmax SoftmaxWithLoss Split SPP Swish TanH Threshold
Tile Data ImageData HDF5Data HDF5Output MemoryData DummyData WindowData""".split()


def test_layer_type_list_names_every_bvlc_type():
    missing = sorted(set(BVLC_TYPES) - set(caffe.layer_type_list()))
    assert not missing, f"unregistered layer types: {missing}"


def test_registering_a_type_twice_is_refused_unless_replacing(monkeypatch):
    from caffe.layer import LAYER_REGISTRY, NeuronLayer
    monkeypatch.setattr("caffe.layer.LAYER_REGISTRY", dict(LAYER_REGISTRY))
    registry = caffe.layer.LAYER_REGISTRY
    builtin = registry["ReLU"]

    class MyReLU(NeuronLayer):
        type = "ReLU"

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data.clamp(min=0)
    with pytest.raises(caffe.CaffeError, match="'ReLU' is already registered.*replace=True"):
        caffe.register_layer(MyReLU)
    assert registry["ReLU"] is builtin
    assert caffe.register_layer(replace=True)(MyReLU) is MyReLU
    assert registry["ReLU"] is MyReLU
    # The same class defined again (a module reloaded, a notebook cell run twice) replaces itself.
    again = type("MyReLU", (NeuronLayer,), {"type": "ReLU", "__module__": MyReLU.__module__,
                                             "__qualname__": MyReLU.__qualname__})
    assert caffe.register_layer(again) is again


def test_caffe_layers_is_the_catalog_and_netspecs_layer_factory():
    from caffe import layers as L
    from caffe.layers import bbox_util      # a catalog module not loaded by the package itself
    assert L.neuron.ReLULayer.type == "ReLU" and hasattr(bbox_util, "__file__")
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    n.relu = L.ReLU(n.data, in_place=True)
    assert 'type: "ReLU"' in str(n.to_proto())
