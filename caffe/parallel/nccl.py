"""pycaffe's multi-GPU API (BVLC's python/train.py): caffe.NCCL over torch.distributed."""
import os
import tempfile
import uuid

from .allreduce import DataParallel
from .comm import init_worker
from .world import world_state, solver_count, solver_rank


class NCCL(DataParallel):
    """pycaffe's caffe.NCCL(solver, uid) for BVLC's python/train.py flow.

        caffe.set_solver_count(n); caffe.set_solver_rank(rank)     # before the solver
        nccl = caffe.NCCL(solver, uid)      # uid = NCCL.new_uid(), made once, given to all
        nccl.bcast(); solver.add_callback(nccl)
        if solver.param.layer_wise_reduce: solver.net.after_backward(nccl)
    """

    def __init__(self, solver, uid):
        if isinstance(uid, bytes):
            uid = uid.decode()
        if world_state["worker"] is None:
            init_worker(solver_rank(), solver_count(), device=solver.device, init_method=uid)
        super().__init__(solver, register=False)

    @staticmethod
    def new_uid():
        """A rendezvous for the workers of one machine (a fresh file:// address), as bytes
        like BVLC's NCCL uid on Python 3."""
        return ("file://" + os.path.join(tempfile.gettempdir(),
                                         f"caffe_nccl_{uuid.uuid4().hex}")).encode()
