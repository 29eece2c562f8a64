"""Learning rate policies: the rate for an iteration (SGDSolver::GetLearningRate).

    fixed      base_lr
    step       base_lr * gamma ^ floor(iter / stepsize)
    exp        base_lr * gamma ^ iter
    inv        base_lr * (1 + gamma * iter) ^ (-power)
    multistep  base_lr * gamma ^ (the number of stepvalues reached)
    poly       base_lr * (1 - iter / max_iter) ^ power
    sigmoid    base_lr / (1 + exp(-gamma * (iter - stepsize)))

The arithmetic is C's, as in BVLC: a power or exponential too large for a double is inf (so a
sigmoid far from its step is 0 or base_lr), a negative base to a fractional power is nan;
Python's OverflowError, ZeroDivisionError and complex results never surface. A rate that
ends up inf or nan is refused by the solver (check_rate), naming the policy and iteration.
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


def c_pow(base, exponent):
    """pow() as C computes it on doubles: inf on overflow, nan for a negative base to a
    non-integer power, inf for 0 to a negative power (Python raises or goes complex)."""
    base, exponent = float(base), float(exponent)
    if base < 0 and not exponent.is_integer():
        return math.nan
    try:
        return math.pow(base, exponent)
    except OverflowError:
        # |result| too large: its sign is the base's for an odd integer exponent.
        negative = base < 0 and exponent.is_integer() and int(exponent) % 2 == 1
        return -math.inf if negative else math.inf
    except ValueError:          # 0 to a negative power: C's pole error
        return math.inf


def c_exp(x):
    """exp() as C computes it: inf past the largest double, not OverflowError."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def check_rate(p, it, rate, what=None):
    """Refuse an inf or nan rate before it turns every weight into nan (BVLC would apply it
    silently); the message names the policy and the fields it is computed from.
    `what` names another factor of the step (Adam's bias correction) instead of the rate."""
    if math.isfinite(rate):
        return rate
    if what is None:
        fields = {"step": "base_lr, gamma, stepsize", "exp": "base_lr, gamma",
                  "inv": "base_lr, gamma, power", "multistep": "base_lr, gamma, stepvalue",
                  "poly": "base_lr, power, max_iter", "sigmoid": "base_lr, gamma, stepsize",
                  }.get(p.lr_policy, "base_lr")
        what = (f"learning rate under lr_policy '{p.lr_policy}' (from {fields}: base_lr "
                f"{p.base_lr:g}, gamma {p.gamma:g}, power {p.power:g})")
    raise SolverError(f"Iteration {it}: the {what} is {rate}: the solver's values overflow "
                      f"a double there. Training stopped before the weights became nan.")


def learning_rate(p, it, current_step):
    """(rate, current_step) at iteration `it` of SolverParameter `p`; step and multistep move
    the position in the step schedule, which the solver keeps (and snapshots)."""
    policy = p.lr_policy
    if policy == "fixed":
        return p.base_lr, current_step
    if policy == "step":
        current_step = it // p.stepsize
        return p.base_lr * c_pow(p.gamma, current_step), current_step
    if policy == "exp":
        return p.base_lr * c_pow(p.gamma, it), current_step
    if policy == "inv":
        return p.base_lr * c_pow(1.0 + p.gamma * it, -p.power), current_step
    if policy == "multistep":
        # One step per call, as Caffe: stepvalues must be increasing.
        if current_step < len(p.stepvalue) and it >= p.stepvalue[current_step]:
            current_step += 1
            log.info("MultiStep Status: Iteration %d, step = %d", it, current_step)
        return p.base_lr * c_pow(p.gamma, current_step), current_step
    if policy == "poly":
        return p.base_lr * c_pow(1.0 - it / p.max_iter, p.power), current_step
    if policy == "sigmoid":
        return p.base_lr / (1.0 + c_exp(-p.gamma * (it - p.stepsize))), current_step
    raise SolverError(f"unknown learning rate policy '{policy}'")
