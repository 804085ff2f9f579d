"""A real two-process MultiWorkerMirroredStrategy job on 127.0.0.1, driven by TF_CONFIG."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

TASK = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'multiworker_task.py')
TIMEOUT_S = 300  # Two TensorFlow start-ups and traces share the machine's cores.


def _free_ports(num: int) -> list[int]:
    sockets = [socket.socket() for _ in range(num)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_job(tmp_path, overrides: dict, signal_worker: int | None = None) -> list[dict]:
    """Runs both tasks to their end; with `signal_worker`, sends that task SIGTERM once training runs."""
    workdir = tmp_path / 'workdir'
    cluster = {'worker': [f'127.0.0.1:{p}' for p in _free_ports(2)]}
    procs, logs = [], []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': index}}),
            CUDA_VISIBLE_DEVICES='',
        )
        log = open(tmp_path / f'task{index}.log', 'w')  # noqa: SIM115 - closed below
        logs.append(log)
        cmd = [sys.executable, TASK, str(workdir), str(tmp_path / f'task{index}.npz'), json.dumps(overrides)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        if signal_worker is not None:
            deadline = time.monotonic() + TIMEOUT_S
            # The chief's first log line: both tasks are past start-up and in the training loop.
            while not (workdir / 'metrics.jsonl').exists() and time.monotonic() < deadline:
                if any(p.poll() is not None for p in procs):
                    break
                time.sleep(0.2)
            procs[signal_worker].send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    tails = '\n'.join((tmp_path / f'task{i}.log').read_text()[-3000:] for i in range(2))
    assert codes == [0, 0], f'tasks ended with {codes}:\n{tails}'
    return [dict(np.load(tmp_path / f'task{i}.npz')) for i in range(2)]


def test_two_workers_train_one_model_and_only_the_chief_writes(tmp_path):
    steps = 2
    chief, worker = _run_job(tmp_path, {'train_steps': steps, 'export_at_end': False})
    assert chief['num_replicas'] == worker['num_replicas'] == 2  # One CPU replica per process.
    assert bool(chief['is_chief']) and not bool(worker['is_chief'])
    assert chief['step'] == worker['step'] == steps
    # Gradients are all-reduced and BatchNorm statistics averaged: one model, not two.
    weights = sorted((k for k in chief if k.startswith('arr_')), key=lambda k: int(k[4:]))
    assert weights
    for key in weights:
        np.testing.assert_array_equal(chief[key], worker[key])

    workdir = tmp_path / 'workdir'
    assert sorted(os.listdir(workdir / 'checkpoints')) == [
        'checkpoint',
        f'ckpt-{steps}.data-00000-of-00001',
        f'ckpt-{steps}.index',
    ]
    # Nothing of the worker's in the workdir; its scratch checkpoints are gone too.
    assert str(chief['scratch']) == str(workdir / 'checkpoints')
    assert not str(worker['scratch']).startswith(str(workdir))
    assert not os.path.exists(str(worker['scratch']))
    chief_outputs = {'config.cfg', 'checkpoints', 'tensorboard', 'samples', 'metrics.jsonl'}
    assert set(os.listdir(workdir)) <= chief_outputs
    assert len(os.listdir(workdir / 'tensorboard' / 'train')) == 1  # One event file: the chief's.


@pytest.mark.benchmark
def test_two_workers_resume_from_the_chief_checkpoint(tmp_path):
    # A restarted job (e.g. after a preemption) resumes on every task from the chief's checkpoint.
    _run_job(tmp_path, {'train_steps': 2, 'export_at_end': False})
    chief, worker = _run_job(tmp_path, {'train_steps': 4, 'export_at_end': False})
    assert chief['step'] == worker['step'] == 4
    for key in (k for k in chief if k.startswith('arr_')):
        np.testing.assert_array_equal(chief[key], worker[key])
    assert sorted(os.listdir(tmp_path / 'workdir' / 'checkpoints'))[-1] == 'ckpt-4.index'


def test_sigterm_to_one_worker_stops_the_whole_job_at_one_step(tmp_path):
    # A preempted worker does not stop alone (the other would wait forever in its next all-reduce):
    # both checkpoint the same step and exit cleanly, and the job resumes from there.
    long_run = {'train_steps': 100_000, 'log_every': 2, 'sample_every': 100_000, 'checkpoint_every': 100_000}
    chief, worker = _run_job(tmp_path, long_run, signal_worker=1)
    assert chief['step'] == worker['step'] < 100_000
    assert str(worker['stopped_by']) == 'SIGTERM'
    assert str(chief['stopped_by']) == 'a stop signal to another worker'
    for key in (k for k in chief if k.startswith('arr_')):
        np.testing.assert_array_equal(chief[key], worker[key])
    workdir = tmp_path / 'workdir'
    assert (workdir / 'checkpoints' / f'ckpt-{int(chief["step"])}.index').exists()
    assert not (workdir / 'saved_model').exists()  # A stop leaves time only for the checkpoint.
