"""What SIGINT/SIGHUP ask of a running solver (Caffe's SolverAction and SignalHandler)."""
import logging
import signal

from ..errors import SolverError

log = logging.getLogger("caffe.solver")

NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"
# The SIGINT that gives up on the stop snapshot: BVLC finishes it whatever the user presses;
# we let a user who insists (a third Ctrl-C) quit without it.
ABORT_AFTER = 3
ACTIONS = (NONE, STOP, SNAPSHOT)


class SignalHandler:
    """Turn SIGINT/SIGHUP into solver actions, read once per iteration (Caffe's SignalHandler).

    Use as a context manager and pass it to Solver.set_action_function. With the stop
    effect, a second SIGINT only says that the stop snapshot is being written; a third one
    interrupts at once (KeyboardInterrupt), without it. With the other effects the count
    starts afresh once a SIGINT has been acted on.
    """

    def __init__(self, sigint_effect=STOP, sighup_effect=SNAPSHOT):
        for name, effect in (("sigint_effect", sigint_effect), ("sighup_effect", sighup_effect)):
            if effect not in ACTIONS:
                raise SolverError(f"invalid {name} '{effect}' (choose from {', '.join(ACTIONS)})")
        self.sigint_effect, self.sighup_effect = sigint_effect, sighup_effect
        self.got_sigint = self.got_sighup = False
        self.sigint_count = 0
        self._previous = {}

    def _on_sigint(self, signum, frame):
        self.sigint_count += 1
        if self.sigint_count >= ABORT_AFTER:
            raise KeyboardInterrupt
        if self.sigint_count > 1:
            log.warning("Finishing the %s first; press Ctrl-C %d more time%s to quit "
                        "without it", "stop snapshot" if self.sigint_effect == STOP else
                        "current iteration", ABORT_AFTER - self.sigint_count,
                        "s" if ABORT_AFTER - self.sigint_count > 1 else "")
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
            if self.sigint_effect != STOP:
                self.sigint_count = 0
            return self.sigint_effect
        if self.got_sighup:
            self.got_sighup = False
            return self.sighup_effect
        return NONE


def serve_requests(solver):
    """Between test batches: snapshot or stop as asked until no request is left (Caffe's
    Test loop); True when the solver is to stop."""
    request = solver.requested_action()
    while request != NONE:
        if request == SNAPSHOT:
            solver.snapshot()
        elif request == STOP:
            solver.requested_early_exit = True
        request = solver.requested_action()
    return solver.requested_early_exit
