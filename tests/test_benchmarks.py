"""The benchmark's PyTorch models compute what our nets compute (same weights, same outputs,
same update), so that its timings compare the same work."""
import pytest
import torch

from benchmarks import run
from tests.conftest import shared_path


@pytest.mark.parametrize("row", ["lenet-train", "cifar10-train", "caffenet-fwd"])
def test_pytorch_side_matches_ours(row):
    models = shared_path("models")
    torch.manual_seed(0)
    net, solver, x, y, _ = run.build_ours(row, str(models), run.ROWS[row][3])
    model, step = run.build_torch(row, net)
    step.x, step.y = x.clone(), y
    assert run.check(row, net, solver, model, step) < 1e-4
