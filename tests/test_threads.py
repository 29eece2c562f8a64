"""caffe.threads: the CPU set read from affinity and cgroup files, and the variables chosen."""
import os
import subprocess
import sys

from caffe import threads


def _cgroup(tmp_path, proc_lines, files):
    """A fake /proc/self/cgroup and cgroup mount under tmp_path."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "cgroup"
    proc.write_text("\n".join(proc_lines) + "\n")
    root = tmp_path / "fs"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root), str(proc)


def test_cgroup_v2_quota(tmp_path):
    root, proc = _cgroup(tmp_path, ["0::/job/step"], {"job/step/cpu.max": "150000 100000\n"})
    assert threads.cgroup_cpus(root, proc) == 1.5
    assert threads.cpu_budget(root, proc, affinity=8) == 1


def test_cgroup_v2_unlimited_and_parent_limit(tmp_path):
    root, proc = _cgroup(tmp_path, ["0::/a/b"], {"a/b/cpu.max": "max 100000\n",
                                                 "a/cpu.max": "300000 100000\n"})
    assert threads.cgroup_cpus(root, proc) == 3.0
    assert threads.cpu_budget(root, proc, affinity=2) == 2     # affinity is smaller
    assert threads.cpu_budget(root, proc, affinity=16) == 3


def test_cgroup_v2_max_everywhere(tmp_path):
    root, proc = _cgroup(tmp_path, ["0::/a"], {"a/cpu.max": "max 100000\n"})
    assert threads.cgroup_cpus(root, proc) is None
    assert threads.cpu_budget(root, proc, affinity=6) == 6


def test_cgroup_v1_cfs_quota(tmp_path):
    root, proc = _cgroup(tmp_path, ["4:memory:/x", "2:cpu,cpuacct:/docker/abc"], {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert threads.cgroup_cpus(root, proc) == 2.0


def test_cgroup_v1_unlimited_and_container_mount(tmp_path):
    # -1 is v1's "no limit"; inside a container the group path is absent under the mount,
    # whose top folder holds the container's own limit.
    root, proc = _cgroup(tmp_path, ["3:cpu:/docker/abc"], {
        "cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert threads.cgroup_cpus(root, proc) == 0.5
    assert threads.cpu_budget(root, proc, affinity=4) == 1      # never below one thread
    root, proc = _cgroup(tmp_path / "u", ["3:cpu:/"], {
        "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert threads.cgroup_cpus(root, proc) is None


def test_no_cgroup_files(tmp_path):
    assert threads.cgroup_cpus(str(tmp_path / "none"), str(tmp_path / "none")) is None
    assert threads.cpu_budget(str(tmp_path), str(tmp_path / "none"), affinity=3) == 3


def test_choose_defaults_and_workers():
    env = {}
    chosen = threads.choose(env, 8)
    assert chosen["OMP_WAIT_POLICY"] == "PASSIVE" and chosen["KMP_BLOCKTIME"] == "0"
    assert chosen["OMP_NUM_THREADS"] == "8"
    assert threads.choose({"LOCAL_WORLD_SIZE": "3"}, 8)["OMP_NUM_THREADS"] == "2"
    assert threads.choose({"LOCAL_WORLD_SIZE": "4"}, 2)["OMP_NUM_THREADS"] == "1"


def test_choose_respects_the_users_settings():
    env = {"OMP_WAIT_POLICY": "ACTIVE", "MKL_NUM_THREADS": "3", "KMP_BLOCKTIME": "200"}
    assert threads.choose(env, 8) == {}
    assert "OMP_NUM_THREADS" not in threads.choose({"OMP_NUM_THREADS": "5"}, 8)


def test_chosen_again_for_a_worker_but_not_the_users():
    env = threads.choose({}, 4)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert threads.configure(dict(env)) == {}   # torch is imported here: hands off
    # A worker inherits our choice: it is ours, so it is chosen again for its share.
    child = dict(env, LOCAL_WORLD_SIZE="2")
    again = threads.choose(child, 4)
    assert again["OMP_NUM_THREADS"] == "2"
    # for_children() strips our choices and keeps the user's.
    child = threads.for_children(dict(env, OMP_WAIT_POLICY="PASSIVE", FOO="1"))
    assert "OMP_NUM_THREADS" not in child and threads.CHOSEN not in child
    assert child["FOO"] == "1"


def test_import_caffe_sets_env_before_torch_and_leaves_torch_users_alone():
    code = ("import os, sys; import caffe, torch; "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('OMP_NUM_THREADS'), "
            "torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMP_", "MKL_", "KMP_")) and k != threads.CHOSEN}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    budget = threads.cpu_budget()
    assert out == ["PASSIVE", str(budget), str(budget)]
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["PASSIVE", "1", "1"]
    # torch first (and its own set_num_threads): caffe changes nothing.
    code = ("import os, torch; torch.set_num_threads(1); import caffe; "
            "print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())")
    del env["OMP_NUM_THREADS"]
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["None", "1"]
