"""Solver: Caffe's training loop around a train net and its test nets.

Per iteration (Caffe's Solver::Step): clear the param diffs, maybe test, run
forward/backward `iter_size` times, smooth the loss over `average_loss`
iterations, then ApplyUpdate: learning rate from the policy, clip gradients by
their global L2 norm, normalize by iter_size, add weight decay, turn the
gradient into the update (the solver type's rule), and data -= diff.

Every solver of the six keeps `history` blobs and snapshots them, with the
iteration and the position in a step schedule, to a `.solverstate` (binary
SolverState) or `.solverstate.h5` (HDF5) beside the `.caffemodel[.h5]`, in
the reference's layouts, so each side can resume from the other's files.
"""
import difflib
import logging
import math
import os
import signal
import time

import numpy as np
import torch

from .. import common, formats, parallel
from ..formats import h5py
from ..blob import Blob, checked_count
from ..errors import CaffeError, SolverError
from ..layer import blob_to_proto, proto_shape, proto_values
from ..net import Net
from ..proto import caffe_pb2

log = logging.getLogger("caffe.solver")

SOLVER_REGISTRY: dict = {}
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
# What a SIGINT/SIGHUP asks of a running solver (Caffe's SolverAction).
NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"
ACTIONS = (NONE, STOP, SNAPSHOT)


def register_solver(cls):
    """Class decorator: make `cls` creatable by its Caffe type string (SolverParameter.type)."""
    SOLVER_REGISTRY[cls.type] = cls
    return cls


def solver_type_list():
    return sorted(SOLVER_REGISTRY)


def read_solver(path):
    """A solver file as Caffe's ReadSolverParamsFromTextFileOrDie reads it."""
    param = formats.read_solver_param(path)
    upgrade_snapshot_prefix(param, str(path))
    return param


def upgrade_snapshot_prefix(param, solver_path):
    """Caffe's default prefix: the solver file's name; a folder prefix gets that name inside."""
    stem = os.path.splitext(solver_path)[0]
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = stem
        log.info("snapshot_prefix was not specified and is set to %s", stem)
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem))
        log.info("snapshot_prefix is a directory and is set to %s", param.snapshot_prefix)


def get_solver(param, **kwargs):
    """The solver named by the definition's `type` (Caffe's SolverRegistry::CreateSolver)."""
    if not isinstance(param, caffe_pb2.SolverParameter):
        param = read_solver(param)
    cls = SOLVER_REGISTRY.get(param.type)
    if cls is None:
        close = difflib.get_close_matches(param.type, SOLVER_REGISTRY, n=1, cutoff=0.5)
        close += [t for t in SOLVER_REGISTRY if t.lower() == param.type.lower() and t not in close]
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SolverError(f"unknown solver type '{param.type}' (known types: "
                          f"{', '.join(solver_type_list())}){hint}")
    return cls(param, **kwargs)


class SignalHandler:
    """Turn SIGINT/SIGHUP into solver actions, read once per iteration (Caffe's SignalHandler).

    Use as a context manager and pass it to Solver.set_action_function. A second
    SIGINT before the first one was acted on interrupts at once (KeyboardInterrupt).
    """

    def __init__(self, sigint_effect=STOP, sighup_effect=SNAPSHOT):
        for name, effect in (("sigint_effect", sigint_effect), ("sighup_effect", sighup_effect)):
            if effect not in ACTIONS:
                raise SolverError(f"invalid {name} '{effect}' (choose from {', '.join(ACTIONS)})")
        self.sigint_effect, self.sighup_effect = sigint_effect, sighup_effect
        self.got_sigint = self.got_sighup = False
        self._previous = {}

    def _on_sigint(self, signum, frame):
        if self.got_sigint:
            raise KeyboardInterrupt
        self.got_sigint = True

    def _on_sighup(self, signum, frame):
        self.got_sighup = True

    def __enter__(self):
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        if hasattr(signal, "SIGHUP"):
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_sighup)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __call__(self):
        if self.got_sigint:
            self.got_sigint = False
            return self.sigint_effect
        if self.got_sighup:
            self.got_sighup = False
            return self.sighup_effect
        return NONE


class _Callback:
    def __init__(self, on_start, on_gradients_ready):
        self.on_start, self.on_gradients_ready = on_start, on_gradients_ready


class Solver:
    """Caffe's Solver + SGDSolver machinery shared by all six solver types.

    Solver(param) takes a SolverParameter or a solver prototxt path. Nets are
    built in `dtype` on `device` (default: caffe's current mode).
    Subclasses set `type`, `num_history_sets` and implement compute_update_value.
    """

    type = ""
    num_history_sets = 1  # AdaDelta and Adam keep a second set after the first
    data_parallel = None  # caffe.parallel.DataParallel when this is one of several workers

    def __init__(self, param, dtype=torch.float32, device=None):
        if not isinstance(param, caffe_pb2.SolverParameter):
            param = read_solver(param)
        self.param = caffe_pb2.SolverParameter()
        self.param.CopyFrom(param)
        self.dtype = dtype
        self.device = torch.device(device if device is not None else common.device())
        self.check_param()
        self.check_snapshot_prefix(only_if_periodic=True)
        if self.param.random_seed >= 0:
            common.set_random_seed(self.param.random_seed)
        self.net = self._init_train_net()
        # As BVLC, only the root solver (worker 0 of a parallel run) tests.
        self.test_nets = self._init_test_nets() if parallel.is_root() else []
        log.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.callbacks = []
        self.loggers = []   # add_logger: told of each display and each test
        self.action_request_function = None
        self.requested_early_exit = False
        self.losses, self.smoothed_loss = [], 0.0
        self.learning_rate = 0.0
        self.mean_scores = [[] for _ in self.test_nets]
        self.history = [Blob(p.shape, self.dtype, self.device)
                        for _ in range(self.num_history_sets)
                        for p in self.net.learnable_params]

    # -- checks ----------------------------------------------------------------
    def check_param(self):
        """Caffe checks most of these on first use; we check before any work is done."""
        p = self.param
        if p.average_loss < 1:
            raise SolverError(f"average_loss must be >= 1, got {p.average_loss}")
        if p.iter_size < 1:
            raise SolverError(f"iter_size must be >= 1, got {p.iter_size}")
        if p.lr_policy not in LR_POLICIES:
            close = difflib.get_close_matches(p.lr_policy, LR_POLICIES, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SolverError(f"unknown learning rate policy '{p.lr_policy}' (known policies: "
                              f"{', '.join(LR_POLICIES)}){hint}")
        if p.lr_policy in ("step", "sigmoid") and p.stepsize <= 0:
            raise SolverError(f"lr_policy '{p.lr_policy}' needs stepsize > 0, got {p.stepsize}")
        if p.lr_policy in ("step", "exp", "inv", "multistep", "sigmoid") and p.gamma < 0:
            raise SolverError(f"lr_policy '{p.lr_policy}' needs gamma >= 0, got {p.gamma}")
        if p.lr_policy == "poly" and p.max_iter <= 0:
            raise SolverError(f"lr_policy 'poly' needs max_iter > 0, got {p.max_iter}")
        if p.regularization_type not in ("L1", "L2"):
            raise SolverError(f"unknown regularization type '{p.regularization_type}' "
                              f"(known types: L1, L2)")

    def check_snapshot_prefix(self, only_if_periodic=False):
        """Fail before training if snapshots cannot be written (CheckSnapshotWritePermissions)."""
        p = self.param
        if (only_if_periodic and not p.snapshot) or not parallel.is_root():
            return
        if p.snapshot and not p.HasField("snapshot_prefix"):
            raise SolverError("snapshot is specified but snapshot_prefix is not")
        folder = os.path.dirname(os.path.abspath(p.snapshot_prefix or "x"))
        if not os.path.isdir(folder):
            raise SolverError(f"cannot write to snapshot prefix '{p.snapshot_prefix}': the "
                              f"directory '{folder}' does not exist. Make sure that the "
                              f"directory exists and is writeable.")
        if not os.access(folder, os.W_OK):
            raise SolverError(f"cannot write to snapshot prefix '{p.snapshot_prefix}': the "
                              f"directory '{folder}' is not writeable")

    # -- nets --------------------------------------------------------------------
    def _read_net(self, path, field):
        if not os.path.exists(path):
            raise SolverError(f"{field}: net file '{path}' not found (relative paths are "
                              f"resolved against the current directory, {os.getcwd()}, as "
                              f"in Caffe)")
        return formats.read_net_param(path)

    def _build_net(self, net_param, phase, state_override, source):
        state = caffe_pb2.NetState(phase=phase)
        state.MergeFrom(net_param.state)
        if state_override is not None:
            state.MergeFrom(state_override)
        net_param.state.CopyFrom(state)
        log.info("Creating %s net from %s", "training" if phase == caffe_pb2.TRAIN else "test",
                 source)
        net = Net(net_param, dtype=self.dtype, device=self.device)
        for models in self.param.weights:
            load_net_weights(net, models)
        return net

    def _init_train_net(self):
        p = self.param
        fields = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if not fields:
            raise SolverError("the solver must specify a train net using one of these fields: "
                              "net, net_param, train_net, train_net_param")
        if len(fields) > 1:
            raise SolverError(f"the solver specifies more than one train net: "
                              f"{', '.join(fields)} (give exactly one)")
        field = fields[0]
        if field.endswith("_param"):
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(getattr(p, field))
            source = field
        else:
            net_param = self._read_net(getattr(p, field), field)
            source = f"{field} file: {getattr(p, field)}"
        train_state = p.train_state if p.HasField("train_state") else None
        return self._build_net(net_param, caffe_pb2.TRAIN, train_state, source)

    def _init_test_nets(self):
        p = self.param
        if p.HasField("net") and p.HasField("net_param"):
            raise SolverError("both net_param and net may not be specified")
        generic = p.HasField("net") or p.HasField("net_param")
        specific = len(p.test_net_param) + len(p.test_net)
        if (len(p.test_iter) < specific) if generic else (len(p.test_iter) != specific):
            raise SolverError(f"test_iter must be specified for each test network "
                              f"({specific} test nets, {len(p.test_iter)} test_iter)")
        count = max(len(p.test_iter), specific)
        if len(p.test_state) and len(p.test_state) != count:
            raise SolverError(f"test_state must be unspecified or specified once per test net "
                              f"({count} test nets, {len(p.test_state)} test_state)")
        if count and p.test_interval <= 0:
            raise SolverError(f"{count} test net(s) given, so test_interval must be > 0")
        sources = []
        for net_param in p.test_net_param:
            sources.append((caffe_pb2.NetParameter.FromString(net_param.SerializeToString()),
                            "test_net_param"))
        for path in p.test_net:
            sources.append((self._read_net(path, "test_net"), f"test_net file: {path}"))
        for _ in range(count - specific):
            if p.HasField("net_param"):
                sources.append((caffe_pb2.NetParameter.FromString(
                    p.net_param.SerializeToString()), "net_param"))
            else:
                sources.append((self._read_net(p.net, "net"), f"net file: {p.net}"))
        nets = []
        for i, (net_param, source) in enumerate(sources):
            state = p.test_state[i] if len(p.test_state) else None
            nets.append(self._build_net(net_param, caffe_pb2.TEST, state,
                                        f"{source} (test net #{i})"))
        return nets

    # -- pycaffe's surface ----------------------------------------------------------
    def add_callback(self, on_start, on_gradients_ready=None):
        """Call on_start() before each iteration's forward and on_gradients_ready() before
        its update; an object with both methods (pycaffe's NCCL) may be given alone."""
        if on_gradients_ready is None and hasattr(on_start, "on_gradients_ready"):
            on_start, on_gradients_ready = on_start.on_start, on_start.on_gradients_ready
        self.callbacks.append(_Callback(on_start or (lambda: None),
                                        on_gradients_ready or (lambda: None)))

    def add_logger(self, logger):
        """Give `logger` what Caffe's log shows: logger.on_display(solver, [(name, value,
        loss weight)]) after a displayed iteration's update, logger.on_test(solver,
        test_net_id, [(name, mean)]) after each test (caffe.solvers.dashboard)."""
        self.loggers.append(logger)

    def set_action_function(self, function):
        """function() -> 'none' | 'stop' | 'snapshot', asked once per iteration."""
        self.action_request_function = function

    def share_weights(self, net):
        net.share_trained_layers_with(self.net)

    def requested_action(self):
        if self.action_request_function is None:
            return NONE
        return self.action_request_function()

    # -- training ------------------------------------------------------------------
    def solve(self, resume_file=None):
        """Train to max_iter (resuming from a .solverstate first if given)."""
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", self.param.lr_policy)
        self.requested_early_exit = False
        if self.param.snapshot_after_train:
            self.check_snapshot_prefix()
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(self.param.max_iter - self.iter)
        p = self.param
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        # One more forward pass only to display the loss of the final weights.
        if p.display and self.iter % p.display == 0:
            loss = float(self.net.forward_prefilled())
            if self.data_parallel is not None:
                loss = self.data_parallel.mean_loss(loss)
            self._update_smoothed_loss(loss, start_iter)
            log.info("Iteration %d, loss = %s", self.iter, fmt(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def step(self, iters):
        """Run `iters` training iterations (fewer if a stop is requested)."""
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        self.losses, self.smoothed_loss = [], 0.0
        timer, iterations_last = time.perf_counter(), self.iter
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and \
                    (self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.data_parallel is not None:
                    self.requested_early_exit = self.data_parallel.agree_after_test(
                        self.requested_early_exit)
                if self.requested_early_exit:
                    break
            for callback in self.callbacks:
                callback.on_start()
            display = bool(p.display) and self.iter % p.display == 0
            loss = 0.0
            for _ in range(p.iter_size):
                loss += float(self._forward_backward(display and p.debug_info))
            loss /= p.iter_size
            if self.data_parallel is not None:
                loss = self.data_parallel.mean_loss(loss)
            if math.isnan(loss) or math.isinf(loss):
                raise SolverError(f"Iteration {self.iter}: the loss is {loss}; training "
                                  f"stopped (try a lower base_lr or clip_gradients)")
            self._update_smoothed_loss(loss, start_iter)
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - iterations_last) / (lapse or 1)
                log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter,
                         fmt(per_s), fmt(lapse), p.display, fmt(self.smoothed_loss))
                timer, iterations_last = time.perf_counter(), self.iter
                outputs = output_values(self.net)
                if self.data_parallel is not None:
                    outputs = self.data_parallel.mean_outputs(outputs)
                for i, (name, value, weight) in enumerate(outputs):
                    log.info("    Train net output #%d: %s = %s%s", i, name, fmt(value),
                             loss_note(weight, value))
            for callback in self.callbacks:
                callback.on_gradients_ready()
            self.apply_update()
            if display:
                for logger in self.loggers:
                    logger.on_display(self, outputs)
            self.iter += 1  # the number of updates applied so far
            request = self.requested_action()
            if self.data_parallel is not None:
                request = self.data_parallel.agree_action(request)
            if (p.snapshot and self.iter % p.snapshot == 0) or request == SNAPSHOT:
                self.snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break

    def _update_smoothed_loss(self, loss, start_iter):
        n = self.param.average_loss
        if len(self.losses) < n:
            self.losses.append(loss)
            self.smoothed_loss = (self.smoothed_loss * (len(self.losses) - 1) + loss) / \
                len(self.losses)
        else:
            i = (self.iter - start_iter) % n
            self.smoothed_loss += (loss - self.losses[i]) / n
            self.losses[i] = loss

    def _forward_backward(self, debug):
        net = self.net
        if not debug:
            return net.forward_backward()
        loss = torch.zeros((), dtype=net.dtype, device=net.device)
        for i in range(len(net._layers)):
            loss = loss + net.forward_from_to(i, i)
            forward_debug_info(net, i)
        for i in reversed(range(len(net._layers))):
            net.backward_from_to(i, i)
            if net.layer_need_backward[i]:
                backward_debug_info(net, i)
        return loss

    # -- testing ---------------------------------------------------------------------
    def test_all(self):
        """Test every test net; returns each one's [(output name, mean value)]."""
        results = []
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            results.append(self.test(i))
        return results

    def test(self, test_net_id=0):
        """Run test_iter batches of a test net; log and return the mean of each output."""
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        net.share_trained_layers_with(self.net)
        iterations = p.test_iter[test_net_id]
        sums, loss = None, 0.0
        for _ in range(iterations):
            request = self.requested_action()
            while request != NONE:
                if request == SNAPSHOT:
                    self.snapshot()
                elif request == STOP:
                    self.requested_early_exit = True
                request = self.requested_action()
            if self.requested_early_exit:
                log.info("Test interrupted.")
                return []
            iter_loss = net.forward_prefilled()
            if p.test_compute_loss:
                loss += float(iter_loss)
            values = torch.cat([net._blobs[b].data.reshape(-1).to(torch.float64)
                                for b in net.output_ids]) if net.output_ids else torch.zeros(0)
            sums = values if sums is None else sums + values
        if p.test_compute_loss:
            log.info("Test loss: %s", fmt(loss / max(iterations, 1)))
        scores = []
        if sums is not None:
            means = (sums / iterations).tolist()
            k = 0
            for bid in net.output_ids:
                name, weight = net._blob_names[bid], net._blob_loss_weights[bid]
                for _ in range(net._blobs[bid].count()):
                    log.info("    Test net output #%d: %s = %s%s", k, name, fmt(means[k]),
                             loss_note(weight, means[k]))
                    scores.append((name, means[k]))
                    k += 1
        self.mean_scores[test_net_id] = scores
        for logger in self.loggers:
            logger.on_test(self, test_net_id, scores)
        return scores

    # -- the update ------------------------------------------------------------------
    def get_learning_rate(self):
        """The rate for the current iteration under lr_policy (SGDSolver::GetLearningRate)."""
        p, it = self.param, self.iter
        policy = p.lr_policy
        if policy == "fixed":
            return p.base_lr
        if policy == "step":
            self.current_step = it // p.stepsize
            return p.base_lr * p.gamma ** self.current_step
        if policy == "exp":
            return p.base_lr * p.gamma ** it
        if policy == "inv":
            return p.base_lr * (1.0 + p.gamma * it) ** (-p.power)
        if policy == "multistep":
            # One step per call, as Caffe: stepvalues must be increasing.
            if self.current_step < len(p.stepvalue) and it >= p.stepvalue[self.current_step]:
                self.current_step += 1
                log.info("MultiStep Status: Iteration %d, step = %d", it, self.current_step)
            return p.base_lr * p.gamma ** self.current_step
        if policy == "poly":
            return p.base_lr * (1.0 - it / p.max_iter) ** p.power
        if policy == "sigmoid":
            return p.base_lr / (1.0 + math.exp(-p.gamma * (it - p.stepsize)))
        raise SolverError(f"unknown learning rate policy '{policy}'")

    def apply_update(self):
        """Turn the accumulated gradients into an update and apply it (ApplyUpdate)."""
        p = self.param
        rate = self.get_learning_rate()
        self.learning_rate = rate
        if p.display and self.iter % p.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, fmt(rate))
        params = self.net.learnable_params
        if params:
            diffs = [b.diff for b in params]
            self.clip_gradients(diffs)
            if p.iter_size > 1:
                torch._foreach_mul_(diffs, 1.0 / p.iter_size)
            if not self.fused_update(params, diffs, rate):
                self.regularize(params, diffs)
                self.compute_update_value(diffs, [rate * lr for lr in self.net.params_lr])
                torch._foreach_sub_([b.data for b in params], diffs)
        if p.display and p.debug_info and self.iter % p.display == 0:
            update_debug_info(self.net)

    def clip_gradients(self, diffs):
        limit = self.param.clip_gradients
        if limit < 0:
            return
        norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs))))
        if norm > limit:
            scale = limit / norm
            log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale "
                     "factor %s", fmt(norm), fmt(limit), fmt(scale))
            torch._foreach_mul_(diffs, scale)

    def regularize(self, params, diffs):
        decay = self.param.weight_decay
        picked = [(b.data, d, decay * m) for b, d, m in
                  zip(params, diffs, self.net.params_weight_decay) if decay * m]
        if not picked:
            return
        datas, targets, decays = zip(*picked)
        if self.param.regularization_type == "L1":
            datas = torch._foreach_sign(list(datas))
        torch._foreach_add_(list(targets), torch._foreach_mul(list(datas), list(decays)))

    def fused_update(self, params, diffs, rate):
        """Regularize, compute_update_value and data -= diff in fewer passes; False where the
        solver has no fused form (then the three steps run one after the other)."""
        return False

    def compute_update_value(self, diffs, rates):
        """Replace each diff by the step to subtract from its param; rates[i] = lr * lr_mult."""
        raise NotImplementedError(f"{type(self).__name__}.compute_update_value")

    def history_tensors(self, which=0):
        n = len(self.net.learnable_params)
        return [b.data for b in self.history[which * n:(which + 1) * n]]

    # -- snapshots ---------------------------------------------------------------------
    def snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self):
        """Write <prefix>_iter_N.caffemodel[.h5] and the matching .solverstate[.h5]."""
        if not parallel.is_root():
            return None             # the root solver (worker 0) alone writes snapshots
        hdf5 = self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        model = self.snapshot_filename(".caffemodel.h5" if hdf5 else ".caffemodel")
        log.info("Snapshotting to %s file %s", "HDF5" if hdf5 else "binary proto", model)
        self.net.save(model, write_diff=self.param.snapshot_diff)
        state = self.snapshot_filename(".solverstate.h5" if hdf5 else ".solverstate")
        log.info("Snapshotting solver state to %s file %s", "HDF5" if hdf5 else "binary proto",
                 state)
        if hdf5:
            self._write_state_hdf5(state, model)
        else:
            formats.write_binary_proto(state, self.state_proto(model))
        return model, state

    def state_proto(self, learned_net=""):
        state = caffe_pb2.SolverState(iter=self.iter, current_step=self.current_step)
        if learned_net:
            state.learned_net = learned_net
        for blob in self.history:
            blob_to_proto(blob, state.history.add())
        return state

    def _write_state_hdf5(self, path, learned_net):
        def write(f):
            with h5py.File(f, "w") as h5:
                h5.create_dataset("iter", data=np.array([self.iter], np.int32))
                h5.create_dataset("learned_net", data=np.bytes_(learned_net.encode()))
                h5.create_dataset("current_step", data=np.array([self.current_step], np.int32))
                group = h5.create_group("history")
                for i, blob in enumerate(self.history):
                    group.create_dataset(str(i), data=blob.data.cpu().numpy())
        formats.atomic_write(path, write)

    def restore(self, path):
        """Resume from a .solverstate (binary) or .solverstate.h5, ours or the reference's."""
        path = str(path)
        if path.endswith(".h5"):
            iteration, learned_net, step, history = _read_state_hdf5(path)
        else:
            state = formats.read_binary_proto(path, caffe_pb2.SolverState())
            iteration, step = state.iter, state.current_step
            learned_net = state.learned_net if state.HasField("learned_net") else ""
            history = [(proto_shape(h), h) for h in state.history]
        if len(history) != len(self.history):
            raise SolverError(f"{path}: incorrect length of history blobs: the file has "
                              f"{len(history)}, this {self.type} solver needs "
                              f"{len(self.history)} (a state saved by another solver type or "
                              f"for another net?)")
        if learned_net:
            self.net.copy_from(_find_learned_net(learned_net, path))
        for i, (blob, (shape, value)) in enumerate(zip(self.history, history)):
            if tuple(shape) != blob.shape and \
                    checked_count(shape, f"{path}: history blob {i}", SolverError) != blob.count():
                raise SolverError(f"{path}: history blob {i} has shape {tuple(shape)}, the "
                                  f"net's param has {blob.shape}")
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            else:
                value = proto_values(value, blob.count())
            blob.data.copy_(value.reshape(blob.shape))
        self.iter, self.current_step = int(iteration), int(step)
        log.info("Restored solver state from %s at iteration %d", path, self.iter)


def _read_state_hdf5(path):
    try:
        with h5py.File(path, "r") as h5:
            for key in ("iter", "current_step", "history"):
                if key not in h5:
                    raise SolverError(f"{path}: not a solver state: no '{key}' in the HDF5 file")
            iteration, step = (_hdf5_scalar(h5, key, path) for key in ("iter", "current_step"))
            learned_net = ""
            if "learned_net" in h5:
                learned_net = h5["learned_net"][()]
                if isinstance(learned_net, np.ndarray) and learned_net.size == 1:
                    learned_net = learned_net.reshape(-1)[0]
                if isinstance(learned_net, bytes):
                    learned_net = learned_net.decode()
                if not isinstance(learned_net, str):
                    raise SolverError(f"{path}: learned_net is not a file name")
            group = h5["history"]
            history = []
            for i in range(len(group)):
                if str(i) not in group:
                    raise SolverError(f"{path}: history blob {i} is missing")
                value = formats.read_hdf5_array(group[str(i)], path, np.float64, SolverError)
                history.append((value.shape, value))
            return iteration, learned_net, step, history
    except CaffeError:
        raise
    except formats.H5_ERRORS as e:
        raise SolverError(f"{path}: not a readable HDF5 solver state: {e}") from None


def _hdf5_scalar(h5, key, path):
    value = h5[key]
    if not isinstance(value, h5py.Dataset) or value.size != 1 or value.dtype.kind not in "iuf":
        raise SolverError(f"{path}: '{key}' is not a single number")
    return int(np.asarray(value[()]).reshape(-1)[0])


def _find_learned_net(learned_net, state_path):
    """Caffe opens learned_net relative to the current directory; we also try the state's own."""
    if os.path.exists(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(state_path)),
                          os.path.basename(learned_net))
    if os.path.exists(beside):
        log.info("learned_net %s not found from %s; using %s beside the solver state",
                 learned_net, os.getcwd(), beside)
        return beside
    raise SolverError(f"{state_path}: its weights file '{learned_net}' was found neither from "
                      f"the current directory ({os.getcwd()}) nor beside the solver state")


def load_net_weights(net, models):
    """Copy weights from a comma-separated list of model files (Caffe's LoadNetWeights)."""
    for name in models.split(","):
        name = name.strip()
        log.info("Finetuning from %s", name)
        net.copy_from(name)


# -- log formatting --------------------------------------------------------------------
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
    name = net._layer_names[i]
    for bid in net.top_ids[i]:
        log.info("    [Forward] Layer %s, top blob %s data: %s", name, net._blob_names[bid],
                 _abs_mean(net._blobs[bid].data))
    for pid in net.param_id_vecs[i]:
        log.info("    [Forward] Layer %s, param blob %s data: %s", name,
                 net.param_display_names[pid], _abs_mean(net._params[pid].data))


def backward_debug_info(net, i):
    name = net._layer_names[i]
    for j, bid in enumerate(net.bottom_ids[i]):
        if net.bottom_need_backward[i][j]:
            log.info("    [Backward] Layer %s, bottom blob %s diff: %s", name,
                     net._blob_names[bid], _abs_mean(net._blobs[bid].diff))
    layer = net._layers[i]
    for j, pid in enumerate(net.param_id_vecs[i]):
        if j < len(layer.param_propagate_down) and layer.param_propagate_down[j]:
            log.info("    [Backward] Layer %s, param blob %d diff: %s", name, j,
                     _abs_mean(net._params[pid].diff))


def update_debug_info(net):
    for pid, blob in enumerate(net._params):
        layer = net._layer_names[net.param_layer_indices[pid][0]]
        owner = net.param_owners[pid]
        if owner < 0:
            log.info("    [Update] Layer %s, param %s data: %s; diff: %s", layer,
                     net.param_display_names[pid], _abs_mean(blob.data), _abs_mean(blob.diff))
        else:
            owner_layer = net._layer_names[net.param_layer_indices[owner][0]]
            log.info("    [Update] Layer %s, param blob %s (owned by layer %s, param %s) "
                     "diff: %s", layer, net.param_display_names[pid], owner_layer,
                     net.param_display_names[owner], _abs_mean(blob.diff))
