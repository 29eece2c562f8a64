"""Stochastic gradient descent with momentum, plain and Nesterov's."""
import torch

from .base import Solver, register_solver


@register_solver
class SGDSolver(Solver):
    """v = momentum * v + lr * g;  w -= v."""

    type = "SGD"

    def compute_update_value(self, diffs, rates):
        history = self.history_tensors()
        torch._foreach_mul_(history, self.param.momentum)
        torch._foreach_add_(history, torch._foreach_mul(diffs, rates))
        torch._foreach_copy_(diffs, history)


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
