"""Synchronous data-parallel training on torch.distributed, as BVLC's multi-GPU Caffe does it.

Every worker (one process per device) holds the whole solver and trains on its own part of the
data. After backward the learned blobs' gradients are summed over the workers and divided by
their number (BVLC's P2PSync and NCCL classes do the same), before clipping, weight decay and the
update, so N workers with batch B step as one worker with batch N x B. With the solver's
`layer_wise_reduce` (BVLC's default) a bucket of gradients is all-reduced as soon as backward
has passed every layer that owns one of them, overlapping communication with the rest of
backward. Worker 0 is BVLC's root solver: it alone builds and runs the test nets, logs and writes
snapshots; its learned blobs, solver history and iteration are broadcast to the others first.

    caffe train -solver s.prototxt -gpu 0,1,2,3      one worker per GPU, over NCCL
    caffe train -solver s.prototxt -gpu all
    caffe train -solver s.prototxt -workers 4         four CPU workers, over gloo
    torchrun --nnodes 2 --nproc-per-node 4 -m caffe.tools.caffe train -solver s.prototxt -gpu all

Under torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK) the caffe
command is one worker; -gpu then lists one machine's devices, LOCAL_RANK picking among them.
pycaffe's multi-GPU API (BVLC's python/train.py) works too: set_solver_count, set_solver_rank,
NCCL(solver, uid), nccl.bcast(), solver.add_callback(nccl), solver.net.after_backward(nccl).

Data layers consult data_shard(): worker r of N keeps records r, r + N, r + 2N, ... of a
database (BVLC's DataLayer::Skip); ImageData and HDF5Data stride through their list and rows the
same way. Test-phase data layers read everything, as only worker 0 tests.

Failures end every worker with an error that names the lost one, in bounded time:
- joining waits CAFFE_RDZV_TIMEOUT seconds (default 300) for all workers to turn up;
- a worker that dies makes the others fail at their next exchange (a few seconds);
- a worker that is stopped, hung or cut off (its host gone, the link down) stops beating in
  the rendezvous store and the others stop after CAFFE_DIST_HEARTBEAT seconds (default 60);
- any collective gives up after CAFFE_DIST_TIMEOUT seconds (default 1800). Worker 0's testing
  is waited for without that limit (the heartbeat still watches it).
A resumed snapshot keeps its effective batch on another number of workers (resume.py).

The package: world (rank, count, sharding, settings), comm (rendezvous, process groups,
failures), allreduce (bucketed gradients, DataParallel), nccl (pycaffe's API), launch (the
caffe command's side), heartbeat (silent workers), resume (the effective batch on resume).
"""
from .world import (DEFAULT_BUCKET_MB, DEFAULT_TIMEOUT_S, LAUNCH_GRACE_S, PATIENT_TIMEOUT,
                    WorkerError, world_state, current_worker, data_shard, env_world, is_root,
                    multiprocess, set_multiprocess, set_solver_count, set_solver_rank,
                    solver_count, solver_rank, timeout)  # noqa: F401  (world_state: tests)
from .comm import Worker, init_worker
from .allreduce import DataParallel, plan_buckets
from .nccl import NCCL
from .resume import keep_effective_batch
from .launch import (attach, exit_on_failure, launch, should_launch, worker_count,
                     worker_from_env, free_port)  # noqa: F401

__all__ = ["DEFAULT_BUCKET_MB", "DEFAULT_TIMEOUT_S", "LAUNCH_GRACE_S", "PATIENT_TIMEOUT",
           "WorkerError", "current_worker", "data_shard", "env_world", "is_root",
           "multiprocess", "set_multiprocess", "set_solver_count", "set_solver_rank",
           "solver_count", "solver_rank", "timeout", "Worker", "init_worker", "DataParallel",
           "plan_buckets", "NCCL", "attach", "exit_on_failure", "launch", "should_launch",
           "worker_count", "worker_from_env", "keep_effective_batch"]
