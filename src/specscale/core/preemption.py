"""Stopping on a preemption signal: SIGTERM or SIGUSR1 (what SLURM sends before it kills a job)
ends any specscale command with exit 75 (EX_TEMPFAIL), and the same command, rerun, resumes.

:func:`stop_signals` installs the handlers for a whole command; the CLI does so first thing, so a
signal during start-up, setup or output writing is caught too. There the first signal raises
:class:`Preempted` wherever the main thread is: the command unwinds (temporary files removed, writer
locks released, nothing half-written left) and the next run starts that phase again. Inside
:func:`deferred_stops` (a training loop) a signal only records the request: the loop polls
:func:`stop_requested` at the end of each step, checkpoints and raises; leaving the block with the
request still pending raises :class:`Preempted` there. Only the first signal acts: a second one
while the command unwinds is recorded and ignored, so clean-up code is never interrupted.

Preempted is a BaseException (like KeyboardInterrupt): an ``except Exception`` that turns errors
into messages must not turn a preemption into "bad input".
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a batch script requeues on it (`[ $rc -eq 75 ] && scontrol requeue`)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(BaseException):
    """The command was stopped by SIGTERM/SIGUSR1; whatever it had finished is saved, rerun it to
    go on. The message says where it stopped."""


_installed = False  # stop_signals() handlers in place
_deferring = 0  # depth of deferred_stops() blocks: signals only record
_pending: int | None = None  # the first stop signal received, not yet cleared


def _on_signal(signum, frame) -> None:
    global _pending
    first = _pending is None
    if first:
        _pending = signum
    if first and not _deferring:
        raise Preempted(f"stopped by {signal.Signals(signum).name}; rerun the same command to start again")


def stop_requested() -> str | None:
    """The name of the stop signal received (e.g. "SIGTERM"), None when there was none."""
    return None if _pending is None else signal.Signals(_pending).name


@contextmanager
def stop_signals() -> Iterator[None]:
    """Catch SIGTERM/SIGUSR1 for the block (see the module docstring); the previous handlers come
    back afterwards and the request is forgotten. Nested blocks and threads other than the main
    one (where Python cannot install handlers) leave the handlers as they are."""
    global _installed, _pending
    if _installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    _installed = True
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _installed, _pending = False, None


@contextmanager
def deferred_stops() -> Iterator[None]:
    """Inside the block a stop signal only records the request (poll :func:`stop_requested` at
    safe points); leaving it normally with the request pending raises :class:`Preempted`.
    Installs the handlers when no :func:`stop_signals` block is active (library use)."""
    global _deferring
    with stop_signals():
        _deferring += 1
        try:
            yield
        finally:
            _deferring -= 1
        if _pending is not None:
            raise Preempted(f"stopped by {stop_requested()}; rerun the same command to go on")
