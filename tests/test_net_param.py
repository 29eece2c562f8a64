"""caffe/net_param.py against BVLC's own log: the Split layers it inserts, their names and
their blobs' names, are BVLC's (util/insert_splits.cpp), layer by layer."""
import re
from pathlib import Path

import pytest
from google.protobuf import text_format

from caffe.net_param import filter_net, insert_splits
from caffe.proto import caffe_pb2

LOG = Path(__file__).parent / "golden" / "parse_log" / "bvlc_lenet.log"
GLOG = re.compile(r"^[IWEF]\d{4} ")
LINK = re.compile(r"net\.cpp:\d+\] (\S+) (<-|->) (\S+)( \(in-place\))?$")


def bvlc_nets():
    """(NetParameter as BVLC printed it, [(layer, bottoms, tops)] as BVLC built it) per net."""
    lines, nets = LOG.read_text().splitlines(), []
    for i, line in enumerate(lines):
        if not line.endswith("Initializing net from parameters: "):
            continue
        end = next(j for j in range(i + 1, len(lines)) if GLOG.match(lines[j]))
        param = text_format.Parse("\n".join(lines[i + 1:end]), caffe_pb2.NetParameter())
        built = []
        for later in lines[end:]:
            if "Network initialization done" in later:
                break
            if "] Creating Layer " in later:
                built.append((later.rsplit(" ", 1)[1], [], []))
            link = LINK.search(later)
            if link:
                layer, arrow, blob, _ = link.groups()
                assert built[-1][0] == layer
                built[-1][1 if arrow == "<-" else 2].append(blob)
        nets.append((param, built))
    return nets


@pytest.mark.parametrize("index", [0, 1], ids=["train", "test"])
def test_splits_are_named_as_bvlc_names_them(index):
    param, built = bvlc_nets()[index]
    ours = insert_splits(filter_net(param))
    assert [(lp.name, list(lp.bottom), list(lp.top)) for lp in ours.layer] == built
    if index == 1:     # the TEST net shares label and ip2 between accuracy and loss
        assert [lp.name for lp in ours.layer if lp.type == "Split"] == \
            ["label_mnist_1_split", "ip2_ip2_0_split"]
