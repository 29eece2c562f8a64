"""The solver's log lines: numbers as C++ prints them, outputs, and debug_info's summaries."""
import logging

from ..log_text import printable

log = logging.getLogger("caffe.solver")


def fmt(x):
    """A number as C++'s ostream prints a float (6 significant digits)."""
    return f"{x:.6g}"


def loss_note(weight, value):
    return f" (* {fmt(weight)} = {fmt(weight * value)} loss)" if weight else ""


def output_values(net):
    """(name, value, loss weight) for every element of every output blob."""
    out = []
    for bid in net.output_ids:
        name, weight = net._blob_names[bid], net._blob_loss_weights[bid]
        for value in net._blobs[bid].data.reshape(-1).tolist():
            out.append((name, value, weight))
    return out


def _abs_mean(t):
    return fmt(float(t.abs().mean())) if t.numel() else "0"


def forward_debug_info(net, i):
    name = printable(net._layer_names[i])
    for bid in net.top_ids[i]:
        log.info("    [Forward] Layer %s, top blob %s data: %s", name,
                 printable(net._blob_names[bid]),
                 _abs_mean(net._blobs[bid].data))
    for pid in net.param_id_vecs[i]:
        log.info("    [Forward] Layer %s, param blob %s data: %s", name,
                 printable(net.param_display_names[pid]), _abs_mean(net._params[pid].data))


def backward_debug_info(net, i):
    name = printable(net._layer_names[i])
    for j, bid in enumerate(net.bottom_ids[i]):
        if net.bottom_need_backward[i][j]:
            log.info("    [Backward] Layer %s, bottom blob %s diff: %s", name,
                     printable(net._blob_names[bid]), _abs_mean(net._blobs[bid].diff))
    layer = net._layers[i]
    for j, pid in enumerate(net.param_id_vecs[i]):
        if j < len(layer.param_propagate_down) and layer.param_propagate_down[j]:
            log.info("    [Backward] Layer %s, param blob %d diff: %s", name, j,
                     _abs_mean(net._params[pid].diff))


def update_debug_info(net):
    for pid, blob in enumerate(net._params):
        layer = printable(net._layer_names[net.param_layer_indices[pid][0]])
        owner = net.param_owners[pid]
        if owner < 0:
            log.info("    [Update] Layer %s, param %s data: %s; diff: %s", layer,
                     printable(net.param_display_names[pid]), _abs_mean(blob.data),
                     _abs_mean(blob.diff))
        else:
            owner_layer = printable(net._layer_names[net.param_layer_indices[owner][0]])
            log.info("    [Update] Layer %s, param blob %s (owned by layer %s, param %s) "
                     "diff: %s", layer, printable(net.param_display_names[pid]), owner_layer,
                     printable(net.param_display_names[owner]), _abs_mean(blob.diff))
