"""Stopping a run between two steps: a signal asks, the loop saves a checkpoint after the step it
is in, then stops (`Interrupted`)."""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from l2rw.errors import Interrupted, StoppedAtOnce

# Ctrl-C, and what schedulers send before they stop a job: SIGTERM (preemption, scancel, and
# SLURM's time limit) and SIGUSR2 (submitit's, and sbatch --signal's usual choice, ahead of it).
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class DeferredInterrupt:
    """DEFERRED_SIGNALS only set `requested` and `signum`, so the loop stops after a whole step and
    saves a consistent checkpoint; a second signal acts at once: the handlers from before are back,
    but a default one, which would end the process without a word, raises StoppedAtOnce instead,
    so the run ends as after a second Ctrl-C. When the loop stops that way (Interrupted), a Python
    handler that was there before is called last, as if the signal had just come: submitit's
    requeues the job, which resumes from the checkpoint. Signals reach the main thread only, so
    elsewhere (or when not `enabled`) this does nothing."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __enter__(self) -> DeferredInterrupt:
        self.requested = False
        self.signum = None
        self.previous = {}
        if self.enabled and threading.current_thread() is threading.main_thread():
            # None: a handler not set from Python, which cannot be set back; the default is the nearest
            self.previous = {s: signal.signal(s, self._request) or signal.SIG_DFL for s in DEFERRED_SIGNALS}
        return self

    def _request(self, signum, frame) -> None:
        self.requested = True
        self.signum = signum
        for number, handler in self.previous.items():
            signal.signal(number, stop_at_once if handler is signal.SIG_DFL else handler)

    def _restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def __exit__(self, exception_type, exception, traceback) -> None:
        self._restore()
        handler = self.previous.get(self.signum)
        if isinstance(exception, Interrupted) and callable(handler) and handler not in (signal.default_int_handler, stop_at_once):
            handler(self.signum, None)


def stop_at_once(signum, frame) -> None:
    raise StoppedAtOnce(signum)


@contextmanager
def stopping_at_once() -> Iterator[None]:
    """Before the loop defers them (while the data loads, the model is built): SIGTERM and SIGUSR2
    whose handler is the default, which would end the process without a word, raise StoppedAtOnce,
    so the run ends in one line as Ctrl-C's KeyboardInterrupt ends it. A Python handler set before
    (submitit's) is left as it is; off the main thread, where signals never arrive, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in DEFERRED_SIGNALS if s != signal.SIGINT}
    for signum, handler in previous.items():
        if handler is signal.SIG_DFL:
            signal.signal(signum, stop_at_once)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: not set from Python, so never replaced either
                signal.signal(signum, handler)
