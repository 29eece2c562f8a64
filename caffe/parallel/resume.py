"""Resuming on another number of workers with the batch the snapshot was trained with.

A solver state written by pycaffe records the number of workers that trained and the
iter_size they ran with (SolverState.world_size, .iter_size): every iteration stepped on
world_size x iter_size batches of the net. Resumed on N workers, iter_size becomes that
product / N, so that, for example, 2 workers x batch 32 resume on 1 worker as iter_size 2 x
batch 32. When N does not divide it the effective batch changes, with a warning.
"""
import logging

from .world import solver_count

log = logging.getLogger("caffe.parallel")


def keep_effective_batch(solver):
    """Adjust solver.param.iter_size after solver.restore(); returns the iter_size in use."""
    recorded = solver.restored_batches
    p = solver.param
    if not recorded or min(recorded) < 1:
        return p.iter_size          # the reference's state, or an old one: nothing recorded
    world, iter_size = recorded
    batches, workers = world * iter_size, solver_count()
    if workers * p.iter_size == batches:
        return p.iter_size
    was = f"{world} worker{'s' * (world > 1)} x iter_size {iter_size}"
    if batches % workers == 0:
        log.info("The snapshot was trained by %s; on %d worker%s iter_size becomes %d to keep "
                 "the effective batch (%d batches of the net per iteration)", was, workers,
                 "s" * (workers > 1), batches // workers, batches)
        p.iter_size = batches // workers
    else:
        log.warning("Cannot keep the effective batch of the snapshot (%s = %d batches of the "
                    "net per iteration): %d workers cannot split it evenly. Continuing with "
                    "%d x iter_size %d = %d batches per iteration; the learning rate may need "
                    "scaling.", was, batches, workers, workers, p.iter_size,
                    workers * p.iter_size)
    return p.iter_size
