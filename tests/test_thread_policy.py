"""caffe.thread_policy: one thread for small nets, only the free cores on a busy machine
under "shared", torch's own count restored after every forward, and "fixed" leaving
everything alone."""
import importlib

import pytest
import torch
from google.protobuf import text_format

import caffe
from caffe import net_inference
from caffe import thread_policy as tp
from caffe.proto import caffe_pb2


def net_text(channels, size):
    return f"""
      layer {{ name: "in" type: "Input" top: "x"
               input_param {{ shape {{ dim: 1 dim: {channels} dim: {size} dim: {size} }} }} }}
      layer {{ name: "conv" type: "Convolution" bottom: "x" top: "y"
               convolution_param {{ num_output: {channels} kernel_size: 3 pad: 1
                                    weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
      layer {{ name: "relu" type: "ReLU" bottom: "y" top: "y" }}"""


def build(channels, size):
    return caffe.Net(text_format.Parse(net_text(channels, size), caffe_pb2.NetParameter()),
                     caffe.TEST)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
    tp.set_policy(None)


@pytest.fixture
def seen(monkeypatch):
    """The torch thread count each Convolution forward ran on."""
    vision = importlib.import_module("caffe.layers.vision")
    counts, forward = [], vision.ConvolutionLayer.forward

    def recording(self, bottom, top):
        counts.append(torch.get_num_threads())
        return forward(self, bottom, top)
    monkeypatch.setattr(vision.ConvolutionLayer, "forward", recording)
    # A whole TEST forward runs the convolution as the inference program's op.
    call = net_inference.FusedConvolution.__call__

    def recording_op(self, x):
        counts.append(torch.get_num_threads())
        return call(self, x)
    monkeypatch.setattr(net_inference.FusedConvolution, "__call__", recording_op)
    return counts


def quiet(monkeypatch, others=0):
    monkeypatch.setattr(tp, "_sampled_others", lambda now: others)
    monkeypatch.setattr(tp.os, "cpu_count", lambda: 2)


def test_small_net_runs_on_one_thread_and_restores_the_count(two_threads, seen, monkeypatch):
    quiet(monkeypatch)
    net = build(4, 8)             # 4 * 4 * 9 * 64 = 9216 multiply-adds
    net.forward()
    assert seen == [1] and torch.get_num_threads() == 2


def test_large_net_uses_the_threads_of_a_quiet_machine(two_threads, seen, monkeypatch):
    quiet(monkeypatch)
    net = build(32, 32)           # 32 * 32 * 9 * 1024 = 9.4M multiply-adds
    net.forward()
    assert seen == [2] and torch.get_num_threads() == 2


def test_one_layer_runs_take_the_whole_nets_count(two_threads, seen, monkeypatch):
    """`caffe time` runs forward_from_to(i, i) per layer: a small layer of a large net runs on
    the net's count, so that counts do not switch from layer to layer."""
    quiet(monkeypatch)
    net = caffe.Net(text_format.Parse(net_text(32, 32) + """
      layer { name: "head" type: "Convolution" bottom: "y" top: "z"
              convolution_param { num_output: 2 kernel_size: 1 } }""",
        caffe_pb2.NetParameter()), caffe.TEST)
    net.forward()
    for i in range(len(net.layers)):
        net.forward_from_to(i, i)
    assert seen == [2, 2, 2, 2] and torch.get_num_threads() == 2


def test_shared_policy_leaves_the_busy_cores(two_threads, seen, monkeypatch):
    quiet(monkeypatch, others=1)  # another runnable task on a 2-CPU machine
    net = build(32, 32)
    net.forward()                 # auto: the other task is not looked at
    tp.set_policy("shared")
    net.forward()
    assert seen == [2, 1] and torch.get_num_threads() == 2


@pytest.mark.parametrize("how", ["call", "env"])
def test_fixed_policy_leaves_torch_alone(two_threads, seen, monkeypatch, how):
    quiet(monkeypatch, others=1)
    if how == "call":
        tp.set_policy("fixed")
    else:
        monkeypatch.setenv(tp.POLICY_ENV, "fixed")
    net = build(4, 8)
    net.forward()
    assert seen == [2] and tp.policy() == "fixed"
    with pytest.raises(ValueError):
        tp.set_policy("greedy")


def test_count_restored_when_a_layer_fails(two_threads, monkeypatch):
    quiet(monkeypatch)
    net = build(4, 8)
    vision = importlib.import_module("caffe.layers.vision")

    def failing(self, *args):
        raise RuntimeError("boom")
    monkeypatch.setattr(vision.ConvolutionLayer, "forward", failing)
    monkeypatch.setattr(net_inference.FusedConvolution, "__call__", failing)
    with pytest.raises(RuntimeError):
        net.forward()
    assert torch.get_num_threads() == 2


def test_forward_threads_and_free_cpus(monkeypatch):
    monkeypatch.setattr(tp.os, "cpu_count", lambda: 8)
    big = tp.WORK_PER_LAYER * 3
    assert tp.forward_threads(4, big - 1, 3, 0) == 1          # small on average
    assert tp.forward_threads(4, big, 3, 0) == 4
    assert tp.forward_threads(4, big, 3, None) == 4            # unknown load: the budget
    assert tp.forward_threads(1, big, 3, 0) == 1
    assert tp.free_cpus(2, 1, machine_cpus=2) == 1
    assert tp.free_cpus(2, 5, machine_cpus=2) == 1             # never below one
    assert tp.free_cpus(2, 10, machine_cpus=64) == 2           # others fill the host first
    assert tp.free_cpus(8, 60, machine_cpus=64) == 4


def test_runnable_others_reads_loadavg(tmp_path):
    path = tmp_path / "loadavg"
    path.write_text("3.10 2.50 2.00 4/512 12345\n")
    assert tp.runnable_others(str(path)) == 3                  # the reader itself excluded
    path.write_text("garbage\n")
    assert tp.runnable_others(str(path)) is None
    assert tp.runnable_others(str(tmp_path / "absent")) is None


def test_layer_work_counts_multiply_adds():
    net = caffe.Net(text_format.Parse("""
      layer { name: "in" type: "Input" top: "x"
              input_param { shape { dim: 2 dim: 6 dim: 5 dim: 5 } } }
      layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
              convolution_param { num_output: 4 kernel_size: 3 group: 2 } }
      layer { name: "deconv" type: "Deconvolution" bottom: "c" top: "d"
              convolution_param { num_output: 3 kernel_size: 2 stride: 2 } }
      layer { name: "ip" type: "InnerProduct" bottom: "d" top: "f"
              inner_product_param { num_output: 7 } }
      layer { name: "bn" type: "BatchNorm" bottom: "f" top: "f" }""",
        caffe_pb2.NetParameter()), caffe.TEST)
    layers = {n: (lay, b, t) for n, lay, b, t in zip(net.layer_dict, net._layers,
                                                        net.bottom_vecs, net.top_vecs)}
    work = {n: tp.layer_work(*v) for n, v in layers.items()}
    assert work["conv"] == 2 * 4 * 3 * 3 * (3 * 3 * 3)       # outputs x (C / G) k^2
    assert work["deconv"] == 2 * 4 * 3 * 3 * (3 * 2 * 2)     # inputs x O k^2
    assert work["ip"] == 2 * 7 * (3 * 6 * 6)
    assert work["bn"] == 2 * 7 and not tp.is_weighted(layers["bn"][0])
    assert tp.is_weighted(layers["ip"][0])


@pytest.mark.parametrize("two_threads_time, expected", [(1.2, 1), (0.97, 1), (0.5, 2)])
def test_probe_keeps_the_faster_count_and_probes_again(two_threads_time, expected):
    probe = tp.Probe()
    picks = []
    for _ in range(tp.Probe.REPROBE + 20):
        threads = probe.pick(2)
        picks.append(threads)
        probe.record(threads, 1.0 if threads == 1 else two_threads_time)
    probes = 2 * (tp.Probe.PROBES + tp.Probe.WARMUP)
    assert picks[:probes] == [2] * (probes // 2) + [1] * (probes // 2)   # a block at each
    settled = picks[probes:probes + tp.Probe.REPROBE - 1]
    assert set(settled) == {expected}               # under GAIN x one thread's time only
    assert set(picks[probes + tp.Probe.REPROBE:][:probes]) == {1, 2}   # timed again
    assert probe.pick(1) == 1                       # a net the policy keeps on one thread


def test_the_program_runs_on_the_probes_choice(two_threads, monkeypatch):
    quiet(monkeypatch)
    net = build(32, 32)
    counts = []
    call = net_inference.FusedConvolution.__call__

    def recording(self, x):
        counts.append(torch.get_num_threads())
        return call(self, x)
    monkeypatch.setattr(net_inference.FusedConvolution, "__call__", recording)
    record = tp.Probe.record
    monkeypatch.setattr(tp.Probe, "record", lambda self, threads, seconds: record(
        self, threads, 1.0 if threads == 1 else 2.0))      # two threads: "slower"
    probes = 2 * (tp.Probe.PROBES + tp.Probe.WARMUP)
    for _ in range(probes + 3):
        net.forward()
    assert counts == [2] * (probes // 2) + [1] * (probes // 2) + [1, 1, 1]
    assert torch.get_num_threads() == 2


def test_nets_of_large_layers_keep_all_threads_unprobed(two_threads, seen, monkeypatch):
    quiet(monkeypatch)
    monkeypatch.setattr(tp, "PROBE_BELOW_WORK", 1_000_000)     # 9.4M per layer: "large"
    net = build(32, 32)
    for _ in range(2 * (tp.Probe.PROBES + tp.Probe.WARMUP)):
        net.forward()
    assert set(seen) == {2} and net.plan._program.probe.allowed is None
