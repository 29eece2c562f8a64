"""The registry names every layer type BVLC Caffe 1.0 registers."""
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
