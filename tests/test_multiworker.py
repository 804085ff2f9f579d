"""A real two-process MultiWorkerMirroredStrategy job on 127.0.0.1, driven by TF_CONFIG."""

import json
import os
import socket
import subprocess
import sys

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


def _run_job(tmp_path, overrides: dict) -> list[dict]:
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
