"""Net-level input / input_shape / input_dim fields -> an Input layer."""
from ..errors import UpgradeError
from ..proto import caffe_pb2


def net_needs_input_upgrade(net):
    return len(net.input) > 0


def upgrade_net_input(net):
    """Replace ``input`` / ``input_shape`` / ``input_dim`` with a leading Input layer.

    Inputs without any shape (old .caffemodel files list them that way) are
    simply dropped: the weights file never needed them.
    """
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape or has_dim:
        n = len(net.input)
        if has_shape and len(net.input_shape) < n:
            raise UpgradeError(f"{n} net inputs but only {len(net.input_shape)} "
                               "input_shape entries")
        if not has_shape and len(net.input_dim) < 4 * n:
            raise UpgradeError(f"{n} net inputs need {4 * n} input_dim values, "
                               f"got {len(net.input_dim)}")
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(net.input):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        # First, so that every consumer comes after it.
        net.layer.insert(0, layer)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")
