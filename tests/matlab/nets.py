"""Small nets and solvers the Octave tests share (written by Python, read by both sides)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LENET = ROOT / "examples" / "mnist" / "lenet_train_test.prototxt"


def lenet_body():
    """LeNet's layers after its data layers (conv1 ... loss and accuracy)."""
    text = LENET.read_text()
    start = text.index('layer {\n  name: "conv1"')
    return text[start:]


def lenet_deploy(batch=4):
    """LeNet for inference: an Input layer, the body up to ip2, and a Softmax."""
    body = lenet_body()
    body = body[:body.index('layer {\n  name: "accuracy"')]
    body += 'layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }\n'
    return (f'name: "LeNet" force_backward: true\n'
            f'layer {{ name: "data" type: "Input" top: "data"\n'
            f'  input_param {{ shape {{ dim: {batch} dim: 1 dim: 28 dim: 28 }} }} }}\n' + body)


def lenet_hdf5(train_list, test_list, train_batch=64, test_batch=100):
    """LeNet's train/test net reading HDF5 files (the Input layers replaced)."""
    return (f'name: "LeNet"\n'
            f'layer {{ name: "mnist" type: "HDF5Data" top: "data" top: "label"\n'
            f'  include {{ phase: TRAIN }}\n'
            f'  hdf5_data_param {{ source: "{train_list}" batch_size: {train_batch} }} }}\n'
            f'layer {{ name: "mnist" type: "HDF5Data" top: "data" top: "label"\n'
            f'  include {{ phase: TEST }}\n'
            f'  hdf5_data_param {{ source: "{test_list}" batch_size: {test_batch} }} }}\n'
            + lenet_body())


# A regression net whose data comes from seeded fillers: a solver's run is then fixed by its
# random_seed alone, in Python and in Octave alike.
DUMMY_NET = '''name: "dummy" force_backward: true
layer { name: "data" type: "DummyData" top: "data" top: "target"
  dummy_data_param { shape { dim: 8 dim: 3 dim: 5 dim: 5 } shape { dim: 8 dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "xavier" }
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
'''


def dummy_solver(net_file, prefix, max_iter=100000, display=0):
    return (f'net: "{net_file}"\nbase_lr: 0.05 momentum: 0.9 weight_decay: 0.0005\n'
            f'lr_policy: "step" gamma: 0.5 stepsize: 3\nmax_iter: {max_iter} display: {display}\n'
            f'random_seed: 7 snapshot_after_train: false snapshot_prefix: "{prefix}"\n')
