"""srun's variables become torchrun's: `srun caffe train ...` runs one worker per task."""
import os

import pytest

from caffe import parallel
from caffe.errors import CaffeError
from caffe.parallel.world import first_host

SLURM = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID",
         "SLURM_NODELIST", "SLURM_JOB_NODELIST", "SLURM_STEP_NODELIST", "SLURM_JOB_ID",
         "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "CAFFE_SLURM")


@pytest.fixture
def env():
    # env_world() writes torchrun's variables into os.environ: put everything back after.
    saved = dict(os.environ)
    for name in SLURM:
        os.environ.pop(name, None)
    try:
        yield os.environ.update
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("nodelist, host", [
    ("node7", "node7"), ("a,b", "a"), ("gpu[03-08,11],cpu1", "gpu03"),
    ("rack[2,5]-n[1-4]", "rack2-n[1-4]"), ("x[10-12].ib", "x10.ib"),
])
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


def test_srun_variables_make_a_worker(env):
    env(SLURM_PROCID="3", SLURM_NTASKS="4", SLURM_LOCALID="1", SLURM_JOB_ID="1234",
        SLURM_NODELIST="gpu[07-08]")
    assert parallel.env_world() == (3, 4, 1)
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["MASTER_PORT"] == str(29500 + 1234)
    assert not parallel.should_launch(0, [])


def test_torchrun_variables_win_and_single_tasks_stay_alone(env):
    env(SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_NODELIST="n1")
    assert parallel.env_world() is None
    env(SLURM_NTASKS="2", CAFFE_SLURM="0")
    assert parallel.env_world() is None
    env(CAFFE_SLURM="1", WORLD_SIZE="2", RANK="1", MASTER_ADDR="h", MASTER_PORT="1")
    assert parallel.env_world() == (1, 2, 1)


def test_bad_slurm_values_say_so(env):
    env(SLURM_PROCID="0", SLURM_NTASKS="two", SLURM_NODELIST="n1")
    with pytest.raises(CaffeError, match="SLURM_NTASKS='two'"):
        parallel.env_world()
