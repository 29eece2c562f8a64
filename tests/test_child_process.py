"""caffe.child_process: Python children import nothing from the working folder."""
import subprocess
import sys

from caffe import child_process


def test_module_command_on_this_python(tmp_path):
    command = child_process.python_module_command("pkg.mod", "--x", "y")
    assert command[0] == sys.executable and command[-3:] == ["pkg.mod", "--x", "y"]
    if sys.version_info >= (3, 11):
        assert command[1:3] == ["-P", "-m"]
    else:
        assert command[1] == "-c"


def test_child_env_sets_safe_path_and_keeps_the_rest():
    env = child_process.child_env({"PYTHONPATH": "/x", "HOME": "/h"})
    assert env == {"PYTHONPATH": "/x", "HOME": "/h", "PYTHONSAFEPATH": "1"}


def test_both_forms_leave_the_working_folder_off_sys_path(tmp_path, monkeypatch):
    """-P (3.11+) and the 3.10 bootstrap: a planted json.py is not imported, and the module
    gets its arguments as `python -m` gives them."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "probe_mod.py").write_text(
        "import json, sys\nprint(json.dumps({'argv': sys.argv[1:], 'path': sys.path}))\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "json.py").write_text("raise SystemExit('planted json imported')\n")
    for safe in (True, False):
        if safe and sys.version_info < (3, 11):
            continue
        monkeypatch.setattr(child_process, "SAFE_PATH_FLAG", safe)
        env = child_process.child_env()
        env["PYTHONPATH"] = str(lib)
        done = subprocess.run(child_process.python_module_command("probe_mod", "a", "-b"),
                              cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        import json
        report = json.loads(done.stdout)
        assert report["argv"] == ["a", "-b"]
        assert str(work) not in report["path"] and "" not in report["path"]
