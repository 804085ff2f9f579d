"""lock.json of a workdir: one trainer at a time."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

import tensorflow as tf
from absl import logging

from dcgan_tf.config import ConfigError
from dcgan_tf.workdir import error_line, lock_path, read_bytes, write_file

# A lock on another host cannot be checked by its PID: its holder rewrites it every LOCK_HEARTBEAT_S,
# and one not rewritten for LOCK_STALE_S (ten heartbeats: a loaded host or a slow bucket, not a live
# process) belongs to a process that is gone.
LOCK_HEARTBEAT_S = 30.0
LOCK_STALE_S = 300.0
# Two trainers that create the lock in the same instant both write it; the one whose lock is read back
# after this pause wins, the other refuses.
_LOCK_SETTLE_S = 0.2


def _process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), on Linux; None where /proc cannot tell."""
    try:
        with open('/proc/stat') as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith('btime'))
        with open(f'/proc/{pid}/stat') as f:
            ticks = int(f.read().rsplit(')', 1)[1].split()[19])
        return boot + ticks / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _stale_reason(holder: dict[str, Any]) -> str | None:
    """Why a lock's holder is gone, or None when it may still be running."""
    pid, started = holder.get('pid'), holder.get('started')
    if not isinstance(pid, int) or not isinstance(started, (int, float)) or 'host' not in holder:
        return 'the lock file is not one this program writes'
    if holder['host'] != socket.gethostname():
        heartbeat = holder.get('heartbeat', started)
        if isinstance(heartbeat, (int, float)) and time.time() - heartbeat > LOCK_STALE_S:
            return f'host {holder["host"]} has not renewed it for {time.time() - heartbeat:.0f} s'
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f'PID {pid} is gone'
    except PermissionError:
        pass  # Another user's live process.
    begun = _process_start_time(pid)
    if begun is not None and begun > started + 2.0:  # /proc's boot time is whole seconds.
        return f'PID {pid} now belongs to a process started after the lock was taken'
    return None


class RunLock:
    """lock.json in the workdir: refuses a second trainer of the same run folder with one sentence.

    The file holds the holder's host, PID, start time and a heartbeat, written whole (a temporary name
    and a rename) through gfile, so it works on gs:// too. It is stale, and taken over with a warning,
    when its holder is gone: on the same host, when that PID is not running (or was reused by a process
    started later); on another host, where a PID says nothing, when the heartbeat that a thread of the
    holder renews every LOCK_HEARTBEAT_S is older than LOCK_STALE_S. Released on every exit path of a
    `with` block (and by safety.GracefulStop's exit at start-up); a SIGKILL leaves a stale lock, which
    the next run takes over.

    Args:
      workdir: the run folder.
      enabled: False on the non-chief tasks of a multi-worker job (the chief holds it for the job).
    """

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.workdir = workdir
        self.path = lock_path(workdir)
        self.enabled = enabled
        self._token = uuid.uuid4().hex
        self._held = False
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _read(self) -> dict[str, Any] | None:
        try:
            value = json.loads(read_bytes(self.path).decode('utf-8', errors='replace'))
        except tf.errors.NotFoundError:
            return None
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _write(self, info: dict[str, Any]) -> None:
        write_file(self.path, json.dumps(info).encode())

    def _refusal(self, holder: dict[str, Any]) -> ConfigError:
        started = holder.get('started')
        since = 'an unknown time'
        if isinstance(started, (int, float)):
            since = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))
        return ConfigError(
            f'--workdir={self.workdir} is in use by another trainer (host {holder.get("host")}, '
            f'PID {holder.get("pid")}, since {since}); wait for it to end or stop it, or use another '
            f'--workdir (if that process is gone, delete {self.path}).'
        )

    def acquire(self) -> RunLock:
        if not self.enabled:
            return self
        tf.io.gfile.makedirs(self.workdir)
        holder = self._read()
        if holder is not None:
            reason = _stale_reason(holder)
            if reason is None:
                raise self._refusal(holder)
            logging.warning('Took over the stale lock %s (%s).', self.path, reason)
            tf.io.gfile.remove(self.path)
        now = time.time()
        info = {'host': socket.gethostname(), 'pid': os.getpid(), 'started': now, 'heartbeat': now}
        # Not `lock.json.tmp...`: ram:// reports a path as existing when another path starts with it.
        tmp = os.path.join(self.workdir, f'.lock.tmp{os.getpid()}')
        with tf.io.gfile.GFile(tmp, 'w') as f:
            f.write(json.dumps({**info, 'token': self._token}))
        try:
            tf.io.gfile.rename(tmp, self.path, overwrite=False)
        except tf.errors.AlreadyExistsError:
            tf.io.gfile.remove(tmp)
            raise self._refusal(self._read() or {}) from None
        time.sleep(_LOCK_SETTLE_S)
        holder = self._read() or {}
        if holder.get('token') != self._token:
            raise self._refusal(holder)
        self._held = True
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._renew, args=(info,), name='workdir-lock', daemon=True)
        self._heartbeat.start()
        return self

    def _renew(self, info: dict[str, Any]) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            try:
                with self._mutex:
                    if self._held and (self._read() or {}).get('token') == self._token:
                        self._write({**info, 'heartbeat': time.time(), 'token': self._token})
            except (tf.errors.OpError, OSError) as e:
                logging.warning('Could not renew the lock %s (%s).', self.path, error_line(e))

    def release(self) -> None:
        """Deletes the lock if this trainer holds it; safe to call twice and from another thread."""
        self._stop.set()
        with self._mutex:
            if not self._held:
                return
            self._held = False
            try:
                if (self._read() or {}).get('token') == self._token:
                    tf.io.gfile.remove(self.path)
            except (tf.errors.OpError, OSError) as e:
                logging.warning('Could not remove the lock %s (%s).', self.path, error_line(e))

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
