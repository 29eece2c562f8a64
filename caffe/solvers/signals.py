"""What SIGINT/SIGHUP ask of a running solver (Caffe's SolverAction and SignalHandler)."""
import signal

from ..errors import SolverError

NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"
ACTIONS = (NONE, STOP, SNAPSHOT)


class SignalHandler:
    """Turn SIGINT/SIGHUP into solver actions, read once per iteration (Caffe's SignalHandler).

    Use as a context manager and pass it to Solver.set_action_function. A second
    SIGINT before the first one was acted on interrupts at once (KeyboardInterrupt).
    """

    def __init__(self, sigint_effect=STOP, sighup_effect=SNAPSHOT):
        for name, effect in (("sigint_effect", sigint_effect), ("sighup_effect", sighup_effect)):
            if effect not in ACTIONS:
                raise SolverError(f"invalid {name} '{effect}' (choose from {', '.join(ACTIONS)})")
        self.sigint_effect, self.sighup_effect = sigint_effect, sighup_effect
        self.got_sigint = self.got_sighup = False
        self._previous = {}

    def _on_sigint(self, signum, frame):
        if self.got_sigint:
            raise KeyboardInterrupt
        self.got_sigint = True

    def _on_sighup(self, signum, frame):
        self.got_sighup = True

    def __enter__(self):
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        if hasattr(signal, "SIGHUP"):
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_sighup)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __call__(self):
        if self.got_sigint:
            self.got_sigint = False
            return self.sigint_effect
        if self.got_sighup:
            self.got_sighup = False
            return self.sighup_effect
        return NONE
