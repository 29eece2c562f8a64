"""Rewrite old-format Caffe definitions into the current one, as Caffe does on load.

Caffe's files went through several formats, and Caffe upgrades each of them in
memory when it reads a net or solver; pycaffe does the same, with the same
results, so that old model zoo files keep loading:

* V0 nets: ``layers { layer { type: "conv" ... } }`` with every setting in one
  flat message and explicit "padding" layers in front of conv/pool layers.
* data layers that carry scale / mean_file / crop_size / mirror themselves
  instead of in ``transform_param``.
* V1 nets: ``layers { type: CONVOLUTION ... }`` with enum types and per-blob
  ``blobs_lr`` / ``weight_decay`` / ``param`` lists.
* net-level ``input`` / ``input_shape`` / ``input_dim`` fields instead of an
  Input layer.
* BatchNorm layers that still declare their three statistics as ParamSpecs.
* solvers with the ``solver_type`` enum instead of the ``type`` string.

The functions change the message they are given in place and return whether
the upgrade was complete.  A setting that has no place in the new format is
logged and dropped (the upgrade carries on, as Caffe's does); a definition that
cannot be upgraded at all raises :class:`caffe.errors.UpgradeError`.

One module per generation: v0.py (V0 -> V1), v1.py (V1 data transformation fields, V1 -> V2),
input.py, batchnorm.py and solver.py; this module runs them in Caffe's order.
"""
import logging

from ..proto import caffe_pb2
from .batchnorm import net_needs_batch_norm_upgrade, upgrade_net_batch_norm
from .input import net_needs_input_upgrade, upgrade_net_input
from .solver_type import (solver_needs_type_upgrade, solver_needs_upgrade, upgrade_solver_as_needed,
                     upgrade_solver_type)
from .v0 import (net_needs_v0_to_v1_upgrade, upgrade_v0_layer_parameter, upgrade_v0_layer_type,
                 upgrade_v0_net, upgrade_v0_padding_layers)
from .v1 import (net_needs_data_upgrade, net_needs_v1_to_v2_upgrade,
                 upgrade_net_data_transformation, upgrade_v1_layer_parameter,
                 upgrade_v1_layer_type, upgrade_v1_net)

log = logging.getLogger("caffe")

__all__ = [
    "net_needs_upgrade", "upgrade_net_as_needed",
    "net_needs_v0_to_v1_upgrade", "upgrade_v0_net", "upgrade_v0_padding_layers",
    "upgrade_v0_layer_parameter", "upgrade_v0_layer_type",
    "net_needs_data_upgrade", "upgrade_net_data_transformation",
    "net_needs_v1_to_v2_upgrade", "upgrade_v1_net", "upgrade_v1_layer_parameter",
    "upgrade_v1_layer_type",
    "net_needs_input_upgrade", "upgrade_net_input",
    "net_needs_batch_norm_upgrade", "upgrade_net_batch_norm",
    "solver_needs_upgrade", "upgrade_solver_as_needed",
    "solver_needs_type_upgrade", "upgrade_solver_type",
]


def net_needs_upgrade(net):
    """True if ``net`` uses any deprecated form that upgrade_net_as_needed rewrites."""
    return (net_needs_v0_to_v1_upgrade(net) or net_needs_v1_to_v2_upgrade(net)
            or net_needs_data_upgrade(net) or net_needs_input_upgrade(net)
            or net_needs_batch_norm_upgrade(net))


def upgrade_net_as_needed(net, source_name="<net>"):
    """Bring ``net`` (a NetParameter) to the current format in place.

    ``source_name`` only names the net in log messages.  Returns False when some
    setting could not be carried over (each one is logged); raises UpgradeError
    when the net cannot be upgraded at all.
    """
    success = True
    if net_needs_v0_to_v1_upgrade(net):
        success &= _upgrade_layers(net, upgrade_v0_net, "V0", source_name)
        log.warning("V0 net definitions are deprecated; save %s in the "
                    "current format (caffe.upgrade)", source_name)
    if net_needs_data_upgrade(net):
        log.info("Attempting to move data transformation settings of %s "
                 "into transform_param", source_name)
        upgrade_net_data_transformation(net)
        log.info("Moved data transformation settings of %s", source_name)
        log.warning("Transformation settings belong in transform_param; "
                    "the data layer fields are deprecated")
    if net_needs_v1_to_v2_upgrade(net):
        success &= _upgrade_layers(net, upgrade_v1_net, "V1", source_name)
    if net_needs_input_upgrade(net):
        log.info("Attempting to turn the input fields of %s into an Input "
                 "layer", source_name)
        upgrade_net_input(net)
        log.info("Turned the input fields of %s into an Input layer", source_name)
        log.warning("Net-level input fields are deprecated; use an Input layer")
    if net_needs_batch_norm_upgrade(net):
        log.info("Attempting to upgrade BatchNorm layers of %s that declare "
                 "their statistics as params", source_name)
        upgrade_net_batch_norm(net)
        log.info("Upgraded the BatchNorm layers of %s", source_name)
    return success


def _upgrade_layers(net, upgrade, version, source_name):
    """Rewrite net's layers with upgrade(original, net); False (logged) if settings were lost."""
    log.info("Attempting to upgrade %s layer definitions in %s", version, source_name)
    original = caffe_pb2.NetParameter()
    original.CopyFrom(net)
    if upgrade(original, net):
        log.info("Upgraded %s layer definitions in %s", version, source_name)
        return True
    log.error("Problems upgrading the %s layers of %s (see above); continuing anyway", version,
              source_name)
    return False
