"""Honest progress: it starts at the restored step, its rate counts this process's steps only, and a log
that is not a terminal gets plain lines without control codes."""

import io
import logging

from dcgan_tf import progress


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_file_gets_plain_lines_with_this_process_rate(monkeypatch, caplog):
    clock = _Clock()
    monkeypatch.setattr(progress.time, 'perf_counter', clock)
    stream = io.StringIO()
    bar = progress.Progress(total=1000, start=600, stream=stream)  # Resumed at step 600.
    clock.now += 30  # The first call traces: not part of the rate.
    bar.advance(610, 10)
    clock.now += 10  # 90 more steps in 10 s: 9 steps/s.
    bar.advance(700, 90)
    with caplog.at_level(logging.INFO, logger='absl'):
        bar.log(700, 288.0, {'d_loss': 1.25, 'g_loss': 0.75}, window_rate=1.0)
    bar.close()
    (line,) = [r.getMessage() for r in caplog.records]
    # 300 steps left at 9 steps/s of this process (not 700 / 40 s since it started): 33 s.
    assert line == 'step 700/1000 (70%), 288 images/s, ETA 0:00:33, d_loss 1.25, g_loss 0.75'
    assert stream.getvalue() == ''  # No bar, no carriage returns or colour codes.


def test_a_terminal_gets_a_bar_that_starts_at_the_restored_step(monkeypatch):
    stream = _Terminal()
    bar = progress.Progress(total=100, start=50, stream=stream)
    assert bar.is_terminal and '50/100' in stream.getvalue()
    bar.advance(60, 10)
    bar.log(60, 1.0, {'d_loss': 1.0}, window_rate=1.0)
    meter = bar._bar.format_dict
    # tqdm's rate is (n - initial) / elapsed: the 10 steps of this process.
    assert meter['n'] == 60 and meter['initial'] == 50
    assert '60/100' in stream.getvalue() and 'd_loss=1' in stream.getvalue()
    bar.close()
