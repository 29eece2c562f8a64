"""Solver: Caffe's training loop around a train net and its test nets.

Per iteration (Caffe's Solver::Step): clear the param diffs, maybe test, run
forward/backward `iter_size` times, smooth the loss over `average_loss`
iterations, then ApplyUpdate: learning rate from the policy (lr_policy.py), clip
gradients by their global L2 norm, normalize by iter_size, add weight decay, turn
the gradient into the update (the solver type's rule: sgd.py, adaptive.py), and
data -= diff. Snapshots and resuming are in snapshot.py, SIGINT/SIGHUP in signals.py.
"""
import logging
import math
import os
import time

import torch

from .. import common, formats, parallel
from ..blob import Blob, note_weight_write
from ..errors import NetError, SolverError
from ..log_text import printable
from ..net import Net
from ..proto import caffe_pb2
from .debug_info import (backward_debug_info, fmt, forward_debug_info, loss_note,
                         output_values, update_debug_info)
from .detection_eval import check_eval, test_detection
from .lr_policy import check_lr_policy, check_rate, learning_rate
from .precision import MasterWeights, compute_dtype
from .registry import check_path_fields, read_solver
from .signals import NONE, SNAPSHOT, STOP, serve_requests
from .snapshot import SnapshotMixin

log = logging.getLogger("caffe.solver")


class _Callback:
    def __init__(self, on_start, on_gradients_ready):
        self.on_start, self.on_gradients_ready = on_start, on_gradients_ready


class Solver(SnapshotMixin):
    """Caffe's Solver + SGDSolver machinery shared by all six solver types.

    Solver(param) takes a SolverParameter or a solver prototxt path. Nets are
    built in `dtype` on `device` (default: caffe's current mode); precision="bf16" or
    "fp16" builds them in that half dtype with float32 master weights (precision.py).
    Subclasses set `type`, `num_history_sets` and implement compute_update_value.
    """

    type = ""
    num_history_sets = 1  # AdaDelta and Adam keep a second set after the first
    data_parallel = None  # caffe.parallel.DataParallel when this is one of several workers

    def __init__(self, param, dtype=torch.float32, device=None, precision=None):
        if not isinstance(param, caffe_pb2.SolverParameter):
            param = read_solver(param)
        self.param = caffe_pb2.SolverParameter()
        self.param.CopyFrom(param)
        self.dtype = dtype
        self.compute_dtype = compute_dtype(precision, dtype, device)
        self.device = torch.device(device if device is not None else common.device())
        self.check_param()
        self.check_snapshot_prefix(only_if_periodic=True)
        if self.param.random_seed >= 0:
            common.set_random_seed(self.param.random_seed)
        self.net = self._init_train_net()
        # As BVLC, only the root solver (worker 0 of a parallel run) tests.
        self.test_nets = self._init_test_nets() if parallel.is_root() else []
        self.master = MasterWeights.for_net(self.net, dtype)   # half precision's fp32 copies
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
        check_lr_policy(p)
        check_eval(p)
        check_path_fields(p)
        if p.regularization_type not in ("L1", "L2"):
            raise SolverError(f"unknown regularization type '{p.regularization_type}' "
                              f"(known types: L1, L2)")

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
                 printable(source))
        try:
            net = Net(net_param, dtype=self.compute_dtype, device=self.device)
        except NetError as e:
            # Name the solver field the net came from (an inline net has no file name).
            if "from the NetParameter given" in str(e):
                e.args = (str(e).replace("the NetParameter given", source),)
            raise
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
        try:
            self._solve(resume_file)
        finally:
            # The prefix is free again once training ends, for a rerun in this process too.
            self.release_snapshot_lock()

    def _solve(self, resume_file):
        log.info("Solving %s", printable(self.net.name))
        log.info("Learning Rate Policy: %s", self.param.lr_policy)
        self.requested_early_exit = False
        if self.param.snapshot_after_train:
            self.check_snapshot_prefix()
        self.lock_snapshot_prefix()
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
                    log.info("    Train net output #%d: %s = %s%s", i, printable(name), fmt(value),
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
        loss = torch.zeros((), dtype=torch.float32, device=net.device)
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
            detection = self.param.eval_type == "detection"    # SSD's mAP test
            results.append(test_detection(self, i) if detection else self.test(i))
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
            if serve_requests(self):
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
                    log.info("    Test net output #%d: %s = %s%s", k, printable(name), fmt(means[k]),
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
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        return rate

    # pycaffe's SGDSolver.lr: the rate of the current iteration (GetLearningRate).
    lr = property(lambda self: self.get_learning_rate())

    def apply_update(self):
        """Turn the accumulated gradients into an update and apply it (ApplyUpdate)."""
        p = self.param
        rate = check_rate(p, self.iter, self.get_learning_rate())
        self.learning_rate = rate
        if p.display and self.iter % p.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, fmt(rate))
        params = self.net.learnable_params if self.master is None else self.master.params
        if self.master is not None and not self.master.gradients():
            return                  # float16 overflowed: no update, a lower loss scale
        if params:
            diffs = [b.diff for b in params]
            self.clip_gradients(diffs)
            if p.iter_size > 1:
                torch._foreach_mul_(diffs, 1.0 / p.iter_size)
            if not self.fused_update(params, diffs, rate):
                self.regularize(params, diffs)
                self.compute_update_value(diffs, [rate * lr for lr in self.net.params_lr])
                torch._foreach_sub_([b.data for b in params], diffs)
            if self.master is not None:
                self.master.push(diffs=True)
            note_weight_write()     # the fused kernels leave torch's version counters
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


def load_net_weights(net, models):
    """Copy weights from a comma-separated list of model files (Caffe's LoadNetWeights)."""
    for name in models.split(","):
        name = name.strip()
        log.info("Finetuning from %s", printable(name))
        net.copy_from(name)
