"""Nothing lost: graceful stop on SIGINT/SIGTERM (also while TensorFlow blocks the main thread), the
NaN/Inf check and the mode-collapse measure (paths.py turns I/O errors into one sentence).

Pure helpers the training loop calls between `tf.function` calls; no TensorFlow needed, so they are
cheap to test and never run inside the step.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import numpy as np
from absl import logging

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How long a training call may go on after a stop signal before the watchdog gives up on it: this many
# times the longest call so far, and at least MIN_GRACE_S (a call that only finishes slowly is not hung).
GRACE_FACTOR = 5.0
MIN_GRACE_S = 60.0
# During start-up, how long the main thread has to unwind after a stop signal before the watchdog ends
# the process for it (it is blocked inside TensorFlow then).
START_UP_UNWIND_S = 3.0


class NumericalError(RuntimeError):
    """A loss became NaN or Inf; the message names the step and the loss, and what to do."""


class StoppedDuringStartUp(BaseException):  # noqa: N818 - a stop, like KeyboardInterrupt, not an error.
    """A stop signal before training began: nothing to save. Not an Exception, so no handler swallows it."""


class GracefulStop:
    """SIGINT/SIGTERM end training cleanly: with a checkpoint mid-run, at once during start-up.

    Cloud VMs announce preemption with SIGTERM and people press Ctrl-C. Mid-run, the first signal asks the
    loop to stop after the `tf.function` call it is in, write a checkpoint and return normally; the handler
    then puts the default action back, so a second signal ends the process at once. During start-up
    (`interrupt_start_up`: until the first `call()` block returns) nothing has been trained that a
    checkpoint could keep, so the handler raises StoppedDuringStartUp, which unwinds every `with` and
    `finally` on its way out.

    Python runs signal handlers only between bytecodes, and a main thread blocked inside TensorFlow (a
    first call that traces for minutes, a data pipeline that never yields) runs none. So the C-level
    handler also writes the signal number to a pipe (`signal.set_wakeup_fd`), and a watchdog thread,
    which waits on that pipe, acts for a blocked main thread:
      - during start-up, if the main thread has not unwound within START_UP_UNWIND_S, it prints one line,
        runs `cleanup` (e.g. releasing the workdir lock) and ends the process with status 0, as a
        graceful stop does;
      - inside a later `call()` block it waits for the call to return, up to GRACE_FACTOR times the
        longest call so far (at least MIN_GRACE_S); a call still running then, or a second signal while
        it waits, ends the process with one line and status 1 (the steps since the last checkpoint are
        lost, which the same command trains again).
    Otherwise it does nothing: the main thread runs Python and handles the signal itself.

    A context manager (or `install()` / `uninstall()`), scoped to the training: it puts back the handlers
    and the wakeup fd it found on every exit path. Outside the main thread (where Python cannot install
    handlers) it does nothing. Each process catches its own signals; in a multi-worker job the trainer
    shares each worker's answer after every call (Trainer.agree_to_stop), so all stop at the same step.

    Args:
      interrupt_start_up: stop at once on a signal before the first `call()` block returned.
      cleanup: run before the watchdog ends the process (which skips `finally` blocks).
    """

    def __init__(self, *, interrupt_start_up: bool = False, cleanup: Callable[[], None] | None = None):
        self.signal_name: str | None = None
        self.cleanup = cleanup
        self._starting = interrupt_start_up
        self._previous: dict[int, object] = {}
        self._previous_fd: int | None = None
        self._pipe: tuple[int, int] | None = None
        self._watchdog: threading.Thread | None = None
        self._call_started: float | None = None
        self._longest_call = 0.0
        self._closing = False

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame) -> None:
        del frame
        self.signal_name = signal.Signals(signum).name
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_DFL)  # The second signal is not caught: the OS ends us now.
        if self._starting:
            raise StoppedDuringStartUp(start_up_message(self.signal_name))
        logging.warning(
            '%s received: stopping after the current step with a checkpoint (send it again to quit '
            'at once, losing the steps since the last checkpoint).',
            self.signal_name,
        )

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Marks a training call: what the watchdog waits for after a signal; the first one ends start-up."""
        self._call_started = time.monotonic()
        try:
            yield
        finally:
            self._longest_call = max(self._longest_call, time.monotonic() - self._call_started)
            self._call_started = None
        self._starting = False

    def _exit(self, status: int, message: str) -> None:
        """Ends the process from the watchdog thread: one line, the cleanup, then os._exit."""
        print(message, file=sys.stderr, flush=True)
        if self.cleanup is not None:
            worker = threading.Thread(target=self.cleanup, daemon=True)
            worker.start()
            worker.join(timeout=10.0)  # A hung file system must not keep us alive.
        os._exit(status)

    def _watch(self, read_fd: int) -> None:
        signals = 0
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if self._closing or not data:
                return
            received = [b for b in data if b in STOP_SIGNALS]
            if not received:
                continue
            signals += len(received)
            name = signal.Signals(received[0]).name
            if self._starting:
                # The main thread unwinds (StoppedDuringStartUp) and uninstall() wakes us: nothing to do.
                # Still blocked, or a second signal: end the process for it.
                ready = select.select([read_fd], [], [], START_UP_UNWIND_S)[0]
                if not (ready and self._closing):
                    self._exit(0, start_up_message(name))
                return
            started = self._call_started
            if started is None:
                continue  # The main thread runs Python: its handler acts.
            grace = max(MIN_GRACE_S, GRACE_FACTOR * self._longest_call)
            signalled = time.monotonic()
            while self._call_started == started and time.monotonic() - signalled < grace and signals < 2:
                time.sleep(0.05)
                signals += self._drain(read_fd)
            if self._call_started == started:
                why = 'a second signal came' if signals >= 2 else f'it ran {grace:.0f} s past the signal'
                self._exit(
                    1,
                    f'error: stopped by {name} inside a training call that did not return ({why}); '
                    'no checkpoint was written: the same command resumes from the last one.',
                )

    def _drain(self, read_fd: int) -> int:
        """Signals that arrived meanwhile (the pipe is read without blocking here)."""
        count = 0
        try:
            while select.select([read_fd], [], [], 0)[0]:
                data = os.read(read_fd, 64)
                if not data:
                    break
                count += sum(b in STOP_SIGNALS for b in data)
        except OSError:
            pass
        return count

    def install(self) -> GracefulStop:
        if threading.current_thread() is not threading.main_thread():
            return self
        for s in STOP_SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # set_wakeup_fd's requirement: a handler never blocks.
        self._pipe = (read_fd, write_fd)
        self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._closing = False
        self._watchdog = threading.Thread(
            target=self._watch, args=(read_fd,), name='stop-watchdog', daemon=True
        )
        self._watchdog.start()
        return self

    def uninstall(self) -> None:
        """Puts back the handlers and the wakeup fd found at install time; stops the watchdog."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        if self._pipe is None:
            return
        read_fd, write_fd = self._pipe
        signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
        self._closing = True
        os.write(write_fd, b'\0')  # Wakes the watchdog, which sees _closing and returns.
        if self._watchdog is not None:
            self._watchdog.join(timeout=5.0)
        os.close(write_fd)
        os.close(read_fd)
        self._pipe = self._watchdog = None

    def __enter__(self) -> GracefulStop:
        return self.install()

    def __exit__(self, *exc_info) -> None:
        self.uninstall()


def start_up_message(signal_name: str) -> str:
    return (
        f'Stopped by {signal_name} during start-up, before the first training step ended; nothing to '
        'save: the same command starts again from the last checkpoint.'
    )


def non_finite(values: Mapping[str, float]) -> tuple[str, float] | None:
    """The first (name, value) that is NaN or Inf, or None when all are finite."""
    for name, value in values.items():
        if not math.isfinite(value):
            return name, value
    return None


def nan_message(
    name: str, value: float, first_step: int, last_step: int, checkpoint: str | None, rollbacks: int = 0
) -> str:
    """One sentence for the user: where it went wrong, what was kept and what to try."""
    where = f'step {last_step}' if first_step == last_step else f'steps {first_step}-{last_step}'
    kept = f'the last good checkpoint {checkpoint} is kept' if checkpoint else 'no checkpoint was written yet'
    advice = (
        f'after {rollbacks} rollback(s) with halved learning rates; lower --g_lr/--d_lr further'
        if rollbacks
        else 'lower --g_lr/--d_lr, or rerun with --on_nan=rollback to restore it and halve them'
    )
    return f'The loss {name} became {value} at {where}; stopped without saving that state ({kept}); {advice}.'


def pairwise_distance(images: np.ndarray) -> float:
    """Mean L2 distance between all pairs of images, per pixel (RMS), so resolutions compare."""
    flat = np.asarray(images, np.float64).reshape(len(images), -1)
    if len(flat) < 2:
        return 0.0
    squared = np.sum(flat**2, axis=1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2.0 * flat @ flat.T, 0.0)
    upper = np.triu_indices(len(flat), k=1)
    return float(np.mean(np.sqrt(d2[upper])) / math.sqrt(flat.shape[1]))


def diversity_ratio(fake: np.ndarray, real: np.ndarray) -> float:
    """Fixed-z samples' pairwise distance relative to real images' (~1 healthy, ~0 collapsed).

    Relative, so one threshold fits digits and faces alike: a collapsed generator draws the same
    picture for every z, whatever the data set.
    """
    return pairwise_distance(fake) / max(pairwise_distance(real), 1e-12)
