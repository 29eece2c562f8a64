"""How much memory this process may still take, so that allocations a file asks for fail early.

A blob or an array declared by a file is refused with a CaffeError naming it when it is larger
than what the machine can still give: the memory the kernel reports available (plus free swap)
and, under an address-space limit (ulimit -v, RLIMIT_AS), what is left below that limit.
Without this check the allocation either fails deep inside NumPy or torch with a bare
MemoryError/RuntimeError or, worse, succeeds lazily and the process is killed later.
"""
import os
import resource

# Allocations below this size are not checked: reading /proc costs more than they do.
CHECK_ABOVE_BYTES = 64 * 2 ** 20


def _meminfo():
    try:
        with open("/proc/meminfo", "rb") as f:
            fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
    except OSError:
        return None
    def kib(name):
        return int(fields.get(name, b"0 kB").split()[0]) * 1024
    if b"MemAvailable" not in fields:
        return None
    return kib(b"MemAvailable") + kib(b"SwapFree")


def _address_space_left():
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm", "rb") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None
    return max(0, soft - used)


def available_bytes():
    """What this process can still allocate, or None where the platform does not tell."""
    limits = [x for x in (_meminfo(), _address_space_left()) if x is not None]
    return min(limits) if limits else None


def check_allocation(nbytes, what, error):
    """Raise error(...) naming `what` if nbytes cannot be allocated on this machine now."""
    if nbytes <= CHECK_ABOVE_BYTES:
        return
    left = available_bytes()
    if left is not None and nbytes > left:
        raise error(f"{what} needs {nbytes} bytes ({nbytes / 2 ** 30:.1f} GiB) but only "
                    f"{left} bytes ({left / 2 ** 30:.1f} GiB) of memory are available")
