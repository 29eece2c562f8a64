"""Half precision: the nets compute in bfloat16 or float16, the solver keeps float32 masters.

No BVLC Caffe computes in half precision (NVCaffe, frozen, did); here it is an opt-in:
`Solver(..., precision="bf16")`, `caffe.get_solver(path, precision="fp16")` or
`caffe train -precision bf16`. The train and test nets are then built in the half dtype (every
blob, so every layer's forward and backward runs in it and activations take half the memory),
while the solver keeps a float32 copy of each learnable param ("master weights", as in
mixed-precision training): the half gradients are copied up, the whole update (clipping,
iter_size, weight decay, momentum, Adam's moments) runs in float32 on the masters, and the
result is rounded down into the net. Snapshots hold the masters, so they are float32
.caffemodel files that BVLC reads, and a resumed run starts from the exact masters.

float16's range is narrow: small gradients underflow to zero. Its loss is scaled (the loss
layers' top diff is loss_weight x scale, the gradients are divided by it before the update) by
a dynamic scale, as torch.amp.GradScaler does: start at 2^15, halve it and skip the update when
a gradient overflows (inf or NaN), double it after 2000 steps without overflow. bfloat16 has
float32's range and needs none.
"""
import logging

import torch

from .. import common
from ..blob import Blob
from ..blob_proto import proto_values
from ..errors import CaffeError

log = logging.getLogger("caffe.solver")

PRECISIONS = {"fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
              "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
              "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}

# 2^15: the loss layers' top diff is itself a float16 blob, whose largest value is 65504.
INIT_SCALE, GROWTH_INTERVAL = 2.0 ** 15, 2000


# Half precision on the CPU is checked from torch 2.13 on (`make compat`): torch 2.1 has no
# float16 CPU convolution, and torch 2.4's bfloat16 CPU kernels train LeNet far from float32.
HALF_CPU_TORCH = "2.13"


def compute_dtype(precision, master=torch.float32, device=None):
    """The dtype the nets compute in for `precision` (a name of PRECISIONS, a dtype or None)
    on `device` (default: caffe's current mode)."""
    if precision is None:
        return master
    if isinstance(precision, torch.dtype):
        dtype = precision
    else:
        dtype = PRECISIONS.get(str(precision).lower())
        if dtype is None:
            raise CaffeError(f"unknown precision '{precision}' (known: fp32, bf16, fp16)")
    if dtype != master and master != torch.float32:
        raise CaffeError(f"precision {precision} needs float32 master weights, not {master}")
    on_cpu = torch.device(device if device is not None else common.device()).type == "cpu"
    if dtype != master and on_cpu and \
            torch.torch_version.TorchVersion(torch.__version__) < HALF_CPU_TORCH:
        raise CaffeError(f"precision {precision} on the CPU needs torch>={HALF_CPU_TORCH} (this is "
                         f"torch {torch.__version__}): use fp32, a GPU or a newer torch")
    return dtype


class MasterWeights:
    """Float32 copies of a half-precision net's learnable params, and float16's loss scale."""

    def __init__(self, net):
        self.net = net
        self.params = [Blob(p.shape, torch.float32, p.device) for p in net.learnable_params]
        for master in self.params:
            master.name = None
        self.dynamic = net.dtype == torch.float16
        self.scale, self.good_steps = (INIT_SCALE if self.dynamic else 1.0), 0
        self._versions = [None] * len(self.params)
        self.pull()
        net.set_loss_scale(self.scale)

    @classmethod
    def for_net(cls, net, master_dtype):
        """The masters of a net built in a half dtype; None for a net in the masters' dtype."""
        if net.dtype == master_dtype:
            return None
        master = cls(net)
        log.info("Computing in %s with float32 master weights%s",
                 str(net.dtype).replace("torch.", ""),
                 f" (loss scale {master.scale:g})" if master.dynamic else "")
        return master

    def pull(self, changed_only=False):
        """Masters take the net's values (all, or those changed since the last push: weights
        loaded or set through pycaffe, BatchNorm's running statistics)."""
        for i, (master, param) in enumerate(zip(self.params, self.net.learnable_params)):
            if not changed_only or param.data._version != self._versions[i]:
                master.data.copy_(param.data)
                self._versions[i] = param.data._version

    def push(self, diffs=False):
        """The net takes the masters' values, rounded to its dtype (and their diffs: after an
        update the diff holds the step taken, as Caffe leaves it)."""
        params = self.net.learnable_params
        if params:
            torch._foreach_copy_([p.data for p in params], [m.data for m in self.params])
            if diffs:
                torch._foreach_copy_([p.diff for p in params], [m.diff for m in self.params])
        self._versions = [p.data._version for p in params]

    def gradients(self):
        """Copy the net's gradients into the masters' diffs, unscaled; False if float16's
        overflowed (the update is then skipped and the scale lowered)."""
        self.pull(changed_only=True)
        diffs = [m.diff for m in self.params]
        if not diffs:
            return True
        torch._foreach_copy_(diffs, [p.diff for p in self.net.learnable_params])
        if self.scale != 1.0:
            torch._foreach_mul_(diffs, 1.0 / self.scale)
        if not self.dynamic:
            return True
        finite = bool(torch.stack(torch._foreach_norm(diffs)).isfinite().all())
        if not finite:
            self.scale, self.good_steps = max(self.scale / 2, 1.0), 0
            log.info("Gradient overflow in float16: update skipped, loss scale lowered to %g",
                     self.scale)
        else:
            self.good_steps += 1
            if self.good_steps == GROWTH_INTERVAL:
                self.scale, self.good_steps = self.scale * 2, 0
        self.net.set_loss_scale(self.scale)
        return finite

    def load(self, layers):
        """Masters from a weights file's layers [(name, [BlobProto or array])], so that a
        resumed half-precision run starts from the float32 values, not their rounding."""
        net = self.net
        for name, blobs in layers:
            i = net.layer_index.get(name)
            if i is None:
                continue
            for j, value in enumerate(blobs):
                if j >= len(net.param_id_vecs[i]):
                    break
                pid = net.param_id_vecs[i][j]
                if net.param_owners[pid] >= 0:
                    continue            # a sharer: the owner's master holds it
                master = self.params[net.learnable_param_ids[pid]]
                if not isinstance(value, torch.Tensor):
                    value = (torch.from_numpy(value) if hasattr(value, "dtype")
                             else proto_values(value, master.count()))
                master.data.copy_(value.reshape(master.shape))
        self.push()
