"""Training progress for people: a tqdm bar on a terminal, one plain log line per log step elsewhere.

Both start at the step the run resumed from and count only this process's steps in their rate, so a
resumed run's ETA is honest; a log file gets no carriage returns or colour codes.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Mapping
from typing import TextIO

from absl import logging


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """Progress of one training process.

    Args:
      total: the run's last step.
      start: the step it resumed from (0 for a fresh run).
      stream: where the bar goes (default stderr); when it is not a terminal, log lines replace the bar.
      unit: what is counted ('step'; 'image' for a sampler writing files).
    """

    def __init__(self, total: int, start: int, stream: TextIO | None = None, unit: str = 'step'):
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.is_terminal = bool(getattr(self.stream, 'isatty', lambda: False)())
        self._bar = None
        if self.is_terminal:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=start, unit=unit, file=self.stream, dynamic_ncols=True, smoothing=0.1
            )
        # The rate for the ETA is measured from the end of the first call, which includes tracing.
        self._since: tuple[int, float] | None = None

    def advance(self, step: int, num_steps: int) -> None:
        """After a call that trained `num_steps` steps and reached `step`."""
        if self._bar is not None:
            self._bar.update(num_steps)
        if self._since is None:
            self._since = (step, time.perf_counter())

    def steps_per_second(self, step: int) -> float | None:
        """This process's rate since its first call (None until there is one to measure)."""
        if self._since is None or step <= self._since[0]:
            return None
        return (step - self._since[0]) / max(time.perf_counter() - self._since[1], 1e-9)

    def line(self, step: int, images_per_second: float, metrics: Mapping[str, float], rate: float) -> str:
        """'step 400/1000 (40%), 512 images/s, ETA 0:01:10, d_loss 1.234, ...': no control codes."""
        eta = _duration((self.total - step) / rate) if rate > 0 else '?'
        values = ''.join(f', {k} {v:.4g}' for k, v in metrics.items())
        return (
            f'{self.unit} {step}/{self.total} ({100 * step // max(self.total, 1)}%), {images_per_second:.0f} '
            f'images/s, ETA {eta}{values}'
        )

    def log(
        self, step: int, images_per_second: float, metrics: Mapping[str, float], window_rate: float
    ) -> None:
        """At a log step: the bar's figures, or one log line (its ETA from this process's rate)."""
        if self._bar is not None:
            self._bar.set_postfix({k: f'{v:.4g}' for k, v in metrics.items()}, refresh=True)
            return
        rate = self.steps_per_second(step) or window_rate
        logging.info('%s', self.line(step, images_per_second, metrics, rate))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
