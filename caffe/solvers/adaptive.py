"""Solvers that scale each weight's step by its own gradient statistics."""
import math

import torch

from ..errors import SolverError
from .lr_policy import c_pow, check_rate
from .registry import register_solver
from .sgd import SGDSolver


def _no_momentum(solver):
    if solver.param.momentum != 0:
        raise SolverError(f"momentum cannot be used with {solver.type} (got momentum "
                          f"{solver.param.momentum:g}; leave it unset)")


def _divide_by_root(diffs, history, delta, rates):
    """diff = rate * diff / (sqrt(history) + delta): AdaGrad's and RMSProp's step."""
    denom = torch._foreach_sqrt(history)
    torch._foreach_add_(denom, delta)
    torch._foreach_div_(diffs, denom)
    torch._foreach_mul_(diffs, rates)


@register_solver
class AdaGradSolver(SGDSolver):
    """h += g^2;  w -= lr * g / (sqrt(h) + delta)."""

    type = "AdaGrad"

    def check_param(self):
        super().check_param()
        _no_momentum(self)

    def compute_update_value(self, diffs, rates):
        history = self.history_tensors()
        torch._foreach_addcmul_(history, diffs, diffs)
        _divide_by_root(diffs, history, self.param.delta, rates)


@register_solver
class RMSPropSolver(SGDSolver):
    """h = rms_decay * h + (1 - rms_decay) * g^2;  w -= lr * g / (sqrt(h) + delta)."""

    type = "RMSProp"

    def check_param(self):
        super().check_param()
        _no_momentum(self)
        if not 0 <= self.param.rms_decay <= 1:
            raise SolverError(f"rms_decay must be in [0, 1], got {self.param.rms_decay:g}")

    def compute_update_value(self, diffs, rates):
        decay = self.param.rms_decay
        history = self.history_tensors()
        torch._foreach_mul_(history, decay)
        torch._foreach_addcmul_(history, diffs, diffs, value=1.0 - decay)
        _divide_by_root(diffs, history, self.param.delta, rates)


@register_solver
class AdaDeltaSolver(SGDSolver):
    """h = m*h + (1-m)*g^2;  s = g * sqrt((u + delta) / (h + delta));  u = m*u + (1-m)*s^2;
    w -= lr * s.  History holds the h blobs, then the u blobs, as Caffe's."""

    type = "AdaDelta"
    num_history_sets = 2

    def compute_update_value(self, diffs, rates):
        m, delta = self.param.momentum, self.param.delta
        grad_sq, step_sq = self.history_tensors(0), self.history_tensors(1)
        torch._foreach_mul_(grad_sq, m)
        torch._foreach_addcmul_(grad_sq, diffs, diffs, value=1.0 - m)
        scale = torch._foreach_add(step_sq, delta)
        torch._foreach_div_(scale, torch._foreach_add(grad_sq, delta))
        torch._foreach_sqrt_(scale)
        torch._foreach_mul_(diffs, scale)
        torch._foreach_mul_(step_sq, m)
        torch._foreach_addcmul_(step_sq, diffs, diffs, value=1.0 - m)
        torch._foreach_mul_(diffs, rates)


@register_solver
class AdamSolver(SGDSolver):
    """m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
    w -= lr * sqrt(1-b2^t) / (1-b1^t) * m / (sqrt(v) + delta), t = iter + 1.
    History holds the m blobs, then the v blobs, as Caffe's."""

    type = "Adam"
    num_history_sets = 2

    def compute_update_value(self, diffs, rates):
        b1, b2 = self.param.momentum, self.param.momentum2
        t = self.iter + 1
        # C's arithmetic (momentum 1 divides by zero, momentum2 > 1 takes a negative root):
        # an inf or nan correction is refused as a rate would be, not applied.
        denominator = 1.0 - c_pow(b1, t)
        correction = c_pow(1.0 - c_pow(b2, t), 0.5) / denominator if denominator else math.inf
        check_rate(self.param, self.iter, correction,
                   f"Adam bias correction sqrt(1 - momentum2^t) / (1 - momentum^t) (momentum "
                   f"{b1:g}, momentum2 {b2:g}, t {t})")
        m, v = self.history_tensors(0), self.history_tensors(1)
        torch._foreach_mul_(m, b1)
        torch._foreach_add_(m, diffs, alpha=1.0 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, diffs, diffs, value=1.0 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, self.param.delta)
        torch._foreach_copy_(diffs, m)
        torch._foreach_div_(diffs, denom)
        torch._foreach_mul_(diffs, [r * correction for r in rates])
