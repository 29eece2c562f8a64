"""BatchNorm layers that still declare their three statistics as ParamSpecs."""


def _is_legacy_batch_norm(layer):
    # Old BatchNorm definitions had to list three ParamSpecs (mean, variance,
    # scale factor) to keep the solver off the statistics.
    return layer.type == "BatchNorm" and len(layer.param) == 3


def net_needs_batch_norm_upgrade(net):
    return any(_is_legacy_batch_norm(layer) for layer in net.layer)


def upgrade_net_batch_norm(net):
    """Freeze the three statistics ParamSpecs of legacy BatchNorm layers.

    Caffe 1.0 keeps the specs (so their names still share statistics between
    layers) and only forces lr_mult and decay_mult to 0, which the BatchNorm
    layer requires.
    """
    for layer in net.layer:
        if _is_legacy_batch_norm(layer):
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0
