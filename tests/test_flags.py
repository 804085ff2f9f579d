"""Flag safety for every flag: a bad value exits with status 2 and one sentence, before TensorFlow loads.

The table is derived from the Config fields, so a flag added later is covered without editing this file:
every int rejects a non-integer, a negative value and one beyond int64, every float a non-number, NaN,
Inf and a negative value, every bool a non-boolean, every enum an unknown choice. Explicit cases cover
zero where it means nothing, strings and contradictory combinations. The CLI runs in this process
(absl's parser and `main.main`, stopped where TensorFlow would be imported); two cases also run as real
processes.
"""

import dataclasses
import os
import subprocess
import sys
import time

import pytest
from absl import flags
from conftest import REPO_ROOT

from dcgan_tf import config
from dcgan_tf import main as main_lib
from dcgan_tf.config import Config
from dcgan_tf.workdir import ownership

FIELDS = {f.name: f for f in dataclasses.fields(Config)}
BASE = ['--train_steps=5']  # The smallest valid command line: train needs a length.


class _ReachedTensorFlowError(Exception):
    """The command line passed validation: main.py went on to import TensorFlow."""


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int | None, str]:
    """(exit status, stderr) of `python -m dcgan_tf.main *args`; status None when it got past the flags."""

    def reached():
        raise _ReachedTensorFlowError

    monkeypatch.setattr(main_lib, '_quiet_tensorflow', reached)
    flags.FLAGS.unparse_flags()
    capsys.readouterr()
    try:
        main_lib.main(main_lib._parse_flags(['dcgan_tf', *BASE, *args]))
    except SystemExit as e:
        return e.code, capsys.readouterr().err
    except _ReachedTensorFlowError:
        return None, capsys.readouterr().err
    finally:
        flags.FLAGS.unparse_flags()
    raise AssertionError('main returned without reaching TensorFlow')


def _just_outside(bound: config.Bound, is_int: bool) -> list[str]:
    """Values just outside each end of a bound (the limit itself where it is open)."""
    step = 1 if is_int else 1e-6
    values = []
    if bound.low is not None:
        values.append(bound.low if bound.low_open else bound.low - step)
    if bound.high is not None:
        values.append(bound.high if bound.high_open else bound.high + step)
    return [str(int(v)) if is_int else repr(float(v)) for v in values]


def _just_inside(bound: config.Bound, is_int: bool) -> list[str]:
    step = 1 if is_int else 1e-6
    values = []
    if bound.low is not None:
        values.append(bound.low + step if bound.low_open else bound.low)
    if bound.high is not None:
        values.append(bound.high - step if bound.high_open else bound.high)
    return [str(int(v)) if is_int else repr(float(v)) for v in values]


def _bad_values() -> list[tuple[str, str]]:
    """Every flag's bad values, derived from its field: choices, type, and the bound in its metadata."""
    cases = []
    for name, field in FIELDS.items():
        bound = config.bound_of(field)
        if field.metadata['choices']:
            cases.append((name, 'no_such_choice'))
        elif field.type == 'int':
            cases += [(name, 'abc'), (name, '1.5'), (name, str(2**64))]
            cases += [(name, v) for v in _just_outside(bound, True)]
            if name in ('resolution', 'channels'):  # Checked as choices of a model: 0 is not one.
                cases.append((name, '0'))
        elif field.type == 'float':
            cases += [(name, 'abc'), (name, 'nan'), (name, 'inf')]
            cases += [(name, v) for v in _just_outside(bound, False)]
        elif field.type == 'bool':
            cases.append((name, 'maybe'))
    return cases


def _first_field_of_each_bound_kind() -> list[tuple[str, config.Bound]]:
    seen, kinds = set(), []
    for name, field in FIELDS.items():
        bound = config.bound_of(field)
        if bound is None or name in ('resolution', 'channels'):  # Those two are checked as choices.
            continue
        kind = (field.type, bound.low is None, bound.low_open, bound.high is None, bound.high_open)
        if kind not in seen:
            seen.add(kind)
            kinds.append((name, bound))
    return kinds


@pytest.mark.parametrize('name, bound', _first_field_of_each_bound_kind())
def test_each_kind_of_bound_refuses_just_outside_and_accepts_just_inside(name, bound):
    is_int = FIELDS[name].type == 'int'
    parse = int if is_int else float
    base = Config(train_steps=5)
    for value in _just_outside(bound, is_int):
        with pytest.raises(config.ConfigError, match=f'--{name}='):
            config.validate(base.replace(**{name: parse(value)}))
    for value in _just_inside(bound, is_int):
        config.validate(base.replace(**{name: parse(value)}))


def _assert_one_sentence_exit_2(status, stderr, mentions: str) -> None:
    assert status == 2, f'accepted (status {status}); stderr: {stderr!r}'
    assert stderr.startswith('error: ') and stderr.strip().count('\n') == 0, stderr  # No stack trace.
    assert mentions in stderr, stderr


@pytest.mark.parametrize('name, value', _bad_values())
def test_every_flag_rejects_a_bad_value(name, value, monkeypatch, capsys):
    status, stderr = _cli([f'--{name}={value}'], monkeypatch, capsys)
    _assert_one_sentence_exit_2(status, stderr, f'--{name}')


def test_the_table_covers_every_flag():
    # Strings have free-form values: the explicit cases below cover those that can be wrong.
    covered = {name for name, _ in _bad_values()}
    strings = {n for n, f in FIELDS.items() if f.type == 'str' and not f.metadata['choices']}
    assert covered | strings == set(FIELDS)
    assert len(covered) >= 40


def test_good_values_pass(monkeypatch, capsys):
    # The harness itself: a valid command line gets as far as importing TensorFlow.
    assert _cli([], monkeypatch, capsys)[0] is None
    assert (
        _cli(['--on_nan=rollback', '--max_rollbacks=0', '--collapse_threshold=0'], monkeypatch, capsys)[0]
        is None
    )


@pytest.mark.parametrize(
    'args, mentions',
    [
        (['--workdir='], '--workdir'),
        (['--dataset=folder'], '--dataset=folder needs --data_dir'),
        (['--dataset=folder', '--data_dir=/does/not/exist'], '--data_dir=/does/not/exist'),
        (['--dataset=mnist', '--data_dir=/does/not/exist'], '--data_dir=/does/not/exist'),
        (['--train_steps=0'], '--train_steps or --epochs'),
        (['--arch=tutorial', '--resolution=64'], '--arch=tutorial'),
        (['--arch=tutorial', '--channels=3'], '--arch=tutorial'),
        (['--resolution=48'], '--resolution=48'),
        (['--channels=2'], '--channels=2'),
        (['--g_lr=0'], '--g_lr=0'),
        (['--beta_1=1'], '--beta_1=1'),
        (['--collapse_threshold=1'], '--collapse_threshold=1'),
        (['--max_rollbacks=1000'], '--max_rollbacks=1000'),
        (['--kernel_size=1'], '--kernel_size=1'),
        (['--lr_decay=cosine'], '--lr_decay='),
        (['--lr_decay_start=1'], '--lr_decay_start=1'),
        (['--kernel_size=10'], '--kernel_size=10'),
        # The embedded digits are one split: their floor would be a set measured against itself.
        (['--mode=evaluate', '--eval_source=real'], '--dataset=mnist'),
        (['--no_such_flag=1'], 'no_such_flag'),
        (['stray_argument'], 'unexpected arguments'),
    ],
)
def test_explicit_bad_values_and_combinations(args, mentions, monkeypatch, capsys):
    status, stderr = _cli(args, monkeypatch, capsys)
    _assert_one_sentence_exit_2(status, stderr, mentions)


@pytest.mark.parametrize('args, mentions', [(['--seed=-3'], '--seed=-3'), (['--g_lr=nan'], '--g_lr=nan')])
def test_a_real_process_fails_fast_the_same_way(args, mentions):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, '-m', 'dcgan_tf.main', *BASE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )
    _assert_one_sentence_exit_2(result.returncode, result.stderr, mentions)
    assert 'tensorflow' not in result.stderr.lower()
    assert time.monotonic() - started < 30  # Importing TensorFlow alone takes longer than that here.


def test_overwrite_deletes_only_a_run_folder(tmp_path):
    project = tmp_path / 'project'
    project.mkdir()
    (project / 'precious.txt').write_text('not a run')
    with pytest.raises(SystemExit) as error:
        main_lib._check_workdir_writable(Config(workdir=str(project), overwrite=True, train_steps=1))
    assert error.value.code == 2 and (project / 'precious.txt').exists()
    run = tmp_path / 'run'
    run.mkdir()
    header = '# Resolved flags of this run; re-run it with --flagfile=<this file>.\n'
    (run / 'config.cfg').write_text(f'{header}--resolution=16\n')
    (run / 'metrics.jsonl').write_text('{}\n')
    main_lib._check_workdir_writable(Config(workdir=str(run), overwrite=True, train_steps=1))
    # Accepted; training deletes it, under the workdir's lock, so never under a running trainer.
    assert sorted(os.listdir(run)) == ['config.cfg', 'metrics.jsonl']
    ownership.clear(str(run))
    assert os.listdir(run) == []
