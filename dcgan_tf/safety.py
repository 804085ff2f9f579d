"""Nothing lost: graceful stop on SIGINT/SIGTERM, the NaN/Inf check, the mode-collapse measure, and
one-sentence messages for a full disk or an unwritable workdir.

Pure helpers the training loop calls between `tf.function` calls; no TensorFlow needed, so they are
cheap to test and never run inside the step.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Mapping

import numpy as np
from absl import logging

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class NumericalError(RuntimeError):
    """A loss became NaN or Inf; the message names the step and the loss, and what to do."""


class GracefulStop:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current call.

    Cloud VMs announce preemption with SIGTERM and people press Ctrl-C: either way the loop finishes the
    `tf.function` call it is in (Python runs signal handlers only between calls anyway), writes a
    checkpoint and returns normally. The handler then puts the default action back, so a second signal
    ends the process at once, even in the middle of a long call.

    Use as a context manager, or `install()` before the loop and `uninstall()` after it; outside the
    main thread (where Python cannot install handlers) it does nothing. Each process decides alone:
    with --strategy=multi_worker every worker must receive the signal (as on preemption of the whole
    job), or the others wait in their next collective.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame) -> None:
        del frame
        self.signal_name = signal.Signals(signum).name
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_DFL)  # The second signal is not caught: the OS ends us now.
        logging.warning(
            '%s received: stopping after the current step with a checkpoint (send it again to quit '
            'at once, losing the steps since the last checkpoint).',
            self.signal_name,
        )

    def install(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self) -> None:
        """Puts back the handlers found at install time."""
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def __enter__(self) -> GracefulStop:
        return self.install()

    def __exit__(self, *exc_info) -> None:
        self.uninstall()


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


def io_error_message(error: BaseException, workdir: str) -> str | None:
    """One sentence for a full disk or an unwritable workdir met mid-run; None for other errors.

    TensorFlow reports these as OpErrors (checkpoint and summary writes) and Python as OSError (PNGs,
    metrics), so both are recognised by their text and errno without importing TensorFlow.
    """
    text = f'{getattr(error, "strerror", None) or ""} {error}'
    errno_ = getattr(error, 'errno', None)
    if errno_ == 28 or 'No space left on device' in text or 'Disk quota exceeded' in text:
        return (
            f'The disk holding --workdir={workdir} is full (No space left on device); free some space and '
            f'rerun the same command: it resumes from the last complete checkpoint.'
        )
    if errno_ in (1, 13, 30) or 'Permission denied' in text or 'Read-only file system' in text:
        return (
            f'--workdir={workdir} became unwritable during the run ({text.strip().splitlines()[0][:200]}); '
            f'fix its permissions and rerun the same command: it resumes from the last complete checkpoint.'
        )
    return None
