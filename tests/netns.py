"""Two "hosts" on one machine: network namespaces joined by a veth pair.

Each host has its own network stack, address (10.<n>.0.1 and .2) and host name (a UTS
namespace per command), so torch.distributed sees two machines that share a file system, as
cluster nodes do over NFS. Needs root and iproute2; `TwoHosts.create()` raises
NetnsUnavailable (saying why) where namespaces cannot be made. Used by the two-host tests and
benchmarks/bench_network.py.
"""
import os
import shutil
import signal
import subprocess
import time



class NetnsUnavailable(RuntimeError):
    """This machine (or user) cannot make network namespaces."""


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class TwoHosts:
    """Namespaces `<tag>0` and `<tag>1` with veth ends `<tag>v0` / `<tag>v1`."""

    def __init__(self, tag):
        self.tag = tag
        self.ns = [f"{tag}0", f"{tag}1"]
        self.dev = [f"{tag}v0", f"{tag}v1"]
        # A subnet of our own per pair, so that two test runs at once never meet.
        self.subnet = 16 + os.getpid() % 200
        self.addr = [f"10.{self.subnet}.0.1", f"10.{self.subnet}.0.2"]
        self.procs = []

    @classmethod
    def create(cls, tag=None):
        tag = tag or f"pc{os.getpid() % 100000}"
        why = None
        if shutil.which("ip") is None:
            why = "iproute2's `ip` is not installed"
        elif os.geteuid() != 0:
            why = "network namespaces need root"
        hosts = cls(tag)
        if why is None:
            try:
                hosts._setup()
            except subprocess.CalledProcessError as e:
                hosts.close()
                why = f"`{' '.join(e.cmd)}` failed: {e.stderr.strip()}"
        if why is not None:
            raise NetnsUnavailable(f"cannot make two network namespaces: {why}")
        return hosts

    def _setup(self):
        for ns in self.ns:
            _ip("netns", "add", ns)
            # `ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts: the hosts find each
            # other by name, as through a cluster's DNS (gloo binds to its host name's address).
            folder = f"/etc/netns/{ns}"
            os.makedirs(folder, exist_ok=True)
            with open(f"{folder}/hosts", "w") as f:
                f.write("127.0.0.1 localhost\n" + "".join(
                    f"{addr} host{i}\n" for i, addr in enumerate(self.addr)))
        _ip("link", "add", self.dev[0], "netns", self.ns[0], "type", "veth",
            "peer", "name", self.dev[1], "netns", self.ns[1])
        for ns, dev, addr in zip(self.ns, self.dev, self.addr):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    # -- running on a host -------------------------------------------------------------------
    def command(self, host, argv):
        """argv run on `host` (0 or 1), under the host name host<n>."""
        return ["ip", "netns", "exec", self.ns[host], "unshare", "--uts", "sh", "-c",
                f'hostname host{host} && exec "$@"', "sh", *argv]

    def popen(self, host, argv, **kwargs):
        proc = subprocess.Popen(self.command(host, argv), start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, host, argv, **kwargs):
        return subprocess.run(self.command(host, argv), **kwargs)

    def pids(self, host):
        out = _ip("netns", "pids", self.ns[host], check=False).stdout
        return [int(p) for p in out.split()]

    def kill(self, host, sig=signal.SIGKILL):
        """Signal every process of `host` (a power cut for SIGKILL)."""
        for pid in self.pids(host):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def link(self, up):
        for ns, dev in zip(self.ns, self.dev):
            _ip("-n", ns, "link", "set", dev, "up" if up else "down")

    def shape(self, rate=None, delay_ms=None):
        """Limit both directions of the veth: `tc netem` (rate and delay) where the kernel has
        it, else `tc tbf` (rate only). Returns the qdisc used, or None when neither exists."""
        for ns, dev in zip(self.ns, self.dev):
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"],
                           capture_output=True)
        if rate is None and delay_ms is None:
            return "none"
        netem = ["netem"] + (["rate", rate] if rate else []) + \
            (["delay", f"{delay_ms}ms"] if delay_ms else []) + ["limit", "100000"]
        tbf = ["tbf", "rate", rate or "100gbit", "burst", "1mb", "latency", "100ms"]
        for kind, qdisc in (("netem", netem), ("tbf", tbf)):
            done = [subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev,
                                    "root", *qdisc], capture_output=True).returncode == 0
                    for ns, dev in zip(self.ns, self.dev)]
            if all(done):
                return kind
        return None

    # -- clean-up ------------------------------------------------------------------------------
    def close(self):
        for host in (0, 1):
            self.kill(host)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        for ns in self.ns:
            while _ip("netns", "del", ns, check=False).returncode and \
                    ns in _ip("netns", "list", check=False).stdout and \
                    time.monotonic() < deadline:
                time.sleep(0.2)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
