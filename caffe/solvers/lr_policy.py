"""Learning rate policies: the rate for an iteration (SGDSolver::GetLearningRate).

    fixed      base_lr
    step       base_lr * gamma ^ floor(iter / stepsize)
    exp        base_lr * gamma ^ iter
    inv        base_lr * (1 + gamma * iter) ^ (-power)
    multistep  base_lr * gamma ^ (the number of stepvalues reached)
    poly       base_lr * (1 - iter / max_iter) ^ power
    sigmoid    base_lr / (1 + exp(-gamma * (iter - stepsize)))
"""
import difflib
import logging
import math

from ..errors import SolverError

log = logging.getLogger("caffe.solver")

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_lr_policy(p):
    """Caffe checks these on first use; we check before any work is done."""
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


def learning_rate(p, it, current_step):
    """(rate, current_step) at iteration `it` of SolverParameter `p`; step and multistep move
    the position in the step schedule, which the solver keeps (and snapshots)."""
    policy = p.lr_policy
    if policy == "fixed":
        return p.base_lr, current_step
    if policy == "step":
        current_step = it // p.stepsize
        return p.base_lr * p.gamma ** current_step, current_step
    if policy == "exp":
        return p.base_lr * p.gamma ** it, current_step
    if policy == "inv":
        return p.base_lr * (1.0 + p.gamma * it) ** (-p.power), current_step
    if policy == "multistep":
        # One step per call, as Caffe: stepvalues must be increasing.
        if current_step < len(p.stepvalue) and it >= p.stepvalue[current_step]:
            current_step += 1
            log.info("MultiStep Status: Iteration %d, step = %d", it, current_step)
        return p.base_lr * p.gamma ** current_step, current_step
    if policy == "poly":
        return p.base_lr * (1.0 - it / p.max_iter) ** p.power, current_step
    if policy == "sigmoid":
        return p.base_lr / (1.0 + math.exp(-p.gamma * (it - p.stepsize))), current_step
    raise SolverError(f"unknown learning rate policy '{policy}'")
