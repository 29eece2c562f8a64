"""Learning-rate policies (caffe/solvers/lr_policy.py), through a solver on a tiny net."""
import math

import pytest

from caffe.solvers import SolverError
from tests.solvers.nets import make_solver


POLICIES = [
    ('lr_policy: "fixed"', lambda it: 0.1),
    ('lr_policy: "step" gamma: 0.5 stepsize: 3', lambda it: 0.1 * 0.5 ** (it // 3)),
    ('lr_policy: "exp" gamma: 0.9', lambda it: 0.1 * 0.9 ** it),
    ('lr_policy: "inv" gamma: 0.1 power: 0.75', lambda it: 0.1 * (1 + 0.1 * it) ** -0.75),
    ('lr_policy: "multistep" gamma: 0.3 stepvalue: 2 stepvalue: 5',
     lambda it: 0.1 * 0.3 ** ((it >= 2) + (it >= 5))),
    ('lr_policy: "poly" power: 2', lambda it: 0.1 * (1 - it / 10) ** 2),
    ('lr_policy: "sigmoid" gamma: 0.5 stepsize: 4',
     lambda it: 0.1 / (1 + math.exp(-0.5 * (it - 4)))),
]


@pytest.mark.parametrize("text,expected", POLICIES, ids=[p[0].split('"')[1] for p in POLICIES])
def test_lr_policy(text, expected):
    solver = make_solver(f"base_lr: 0.1 max_iter: 10 {text}")
    for it in range(10):
        solver.iter = it
        # float32 settings: compare at float32 precision
        assert solver.get_learning_rate() == pytest.approx(expected(it), rel=1e-6), it


def test_step_policy_records_current_step():
    solver = make_solver('base_lr: 1 lr_policy: "step" gamma: 0.1 stepsize: 4')
    solver.iter = 9
    solver.get_learning_rate()
    assert solver.current_step == 2


def test_unknown_lr_policy_lists_known():
    with pytest.raises(SolverError, match=r"unknown learning rate policy 'stepp'.*fixed, step, "
                                          r"exp, inv, multistep, poly, sigmoid"):
        make_solver('base_lr: 0.1 lr_policy: "stepp"')
    with pytest.raises(SolverError, match="learning rate policy ''"):
        make_solver('base_lr: 0.1')
