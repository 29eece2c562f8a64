"""Stochastic gradient descent with momentum, plain and Nesterov's."""
import torch

from .registry import register_solver
from .solver import Solver


@register_solver
class SGDSolver(Solver):
    """v = momentum * v + lr * g;  w -= v."""

    type = "SGD"

    def compute_update_value(self, diffs, rates):
        history = self.history_tensors()
        torch._foreach_mul_(history, self.param.momentum)
        torch._foreach_add_(history, torch._foreach_mul(diffs, rates))
        torch._foreach_copy_(diffs, history)

    def fused_update(self, params, diffs, rate):
        # torch's fused SGD kernel computes b = m b + (1 - dampening) (g + wd w); w -= lr b in
        # one pass; with lr 1 and dampening 1 - lr_mult * rate, b is Caffe's history.
        p = self.param
        if type(self).compute_update_value is not SGDSolver.compute_update_value or \
                p.regularization_type != "L2" or p.momentum == 0 or \
                not hasattr(torch, "_fused_sgd_"):
            return False   # another rule (subclasses), L1, or no history to keep
        history, groups = self.history_tensors(), {}
        for blob, diff, hist, lr_mult, decay_mult in zip(
                params, diffs, history, self.net.params_lr, self.net.params_weight_decay):
            group = groups.setdefault((rate * lr_mult, p.weight_decay * decay_mult),
                                      ([], [], []))
            for tensors, t in zip(group, (blob.data, diff, hist)):
                tensors.append(t)
        for (local_rate, local_decay), (datas, grads, hists) in groups.items():
            torch._fused_sgd_(datas, grads, hists, weight_decay=local_decay,
                              momentum=p.momentum, lr=1.0, dampening=1.0 - local_rate,
                              nesterov=False, maximize=False, is_first_step=False)
        torch._foreach_copy_(diffs, history)   # Caffe leaves the update in the diff
        return True


@register_solver
class NesterovSolver(SGDSolver):
    """v' = momentum * v + lr * g;  w -= (1 + momentum) * v' - momentum * v."""

    type = "Nesterov"

    def compute_update_value(self, diffs, rates):
        momentum = self.param.momentum
        history = self.history_tensors()
        previous = torch._foreach_mul(history, momentum)
        torch._foreach_mul_(history, momentum)
        torch._foreach_add_(history, torch._foreach_mul(diffs, rates))
        torch._foreach_copy_(diffs, history)
        torch._foreach_mul_(diffs, 1.0 + momentum)
        torch._foreach_sub_(diffs, previous)
