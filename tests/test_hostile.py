"""What a hostile user tries: every case ends with the run going on correctly or one sentence (exit 2 for
bad input, 1 for a failed run); nothing this program did not write is ever deleted.

The command line runs in this process (absl's parser and `main.main`, TensorFlow already loaded), so
each case costs what its work costs; the cases that could hang run in a subprocess with a timeout.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl import logging as absl_logging
from conftest import REPO_ROOT, tiny_config

from dcgan_tf import data, export, images, paths, sampling, train, workdir
from dcgan_tf import main as main_lib
from dcgan_tf.config import Config, ConfigError
from dcgan_tf.data import folder as folder_lib
from dcgan_tf.quality import evaluate
from dcgan_tf.quality.features import FeatureNet
from dcgan_tf.workdir import ownership

STEPS = 4
MODEL = ['--dataset=synthetic', '--resolution=16', '--gf_dim=8', '--df_dim=8', '--z_dim=16', '--batch_size=8']
RUN = [*MODEL, '--log_every=1', '--sample_every=2', '--checkpoint_every=2', '--collapse_threshold=0']


def _cfg(**overrides) -> Config:
    values = dict(train_steps=STEPS, checkpoint_every=2, log_every=1, sample_every=2, collapse_threshold=0)
    return tiny_config(**{**values, **overrides})


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> str:
    """A run trained to step 4 with an export; tests work on copies."""
    path = str(tmp_path_factory.mktemp('hostile') / 'run')
    train.train_and_evaluate(_cfg(export_at_end=True), path)
    return path


def _copy(trained: str, tmp_path, name: str = 'run') -> str:
    path = str(tmp_path / name)
    shutil.copytree(trained, path)
    return path


def _tree(path) -> dict[str, str]:
    digests = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, 'rb') as f:
                digests[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """(exit status, stderr) of `python -m dcgan_tf *args`, run in this process to its end."""
    monkeypatch.setattr(sys, 'argv', ['dcgan_tf', *args])
    verbosity = absl_logging.get_verbosity()
    flags.FLAGS.unparse_flags()
    capsys.readouterr()
    try:
        main_lib.main(main_lib._parse_flags(['dcgan_tf', *args]))
        status = 0
    except SystemExit as e:
        status = e.code
    finally:
        flags.FLAGS.unparse_flags()
        absl_logging.set_verbosity(verbosity)
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    return status, err


def _one_sentence(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith('error: ')]
    assert len(lines) == 1, err
    return lines[0]


# --- data loss: only what this program wrote is ever deleted ---


def test_overwrite_refuses_a_folder_whose_config_cfg_is_not_ours(tmp_path, monkeypatch, capsys):
    project = tmp_path / 'myproj'
    (project / 'src').mkdir(parents=True)
    (project / 'config.cfg').write_text('[database]\nhost = localhost\n')
    (project / 'thesis.txt').write_text('chapter 1')
    (project / 'src' / 'main.py').write_text('print(1)')
    before = _tree(project)
    status, err = _cli([*RUN, f'--workdir={project}', '--train_steps=2', '--overwrite'], monkeypatch, capsys)
    assert status == 2 and 'config.cfg was not written by this program' in _one_sentence(err)
    monkeypatch.chdir(project)  # `--workdir=. --overwrite` from inside it.
    status, err = _cli([*RUN, '--workdir=.', '--train_steps=2', '--overwrite'], monkeypatch, capsys)
    assert status == 2 and '--overwrite refuses to delete --workdir=.' in _one_sentence(err)
    assert _tree(project) == before


def test_overwrite_refuses_a_run_folder_holding_a_users_file(trained, tmp_path, monkeypatch, capsys):
    run = _copy(trained, tmp_path)
    os.makedirs(os.path.join(run, 'samples', 'mine'))
    with open(os.path.join(run, 'notes.txt'), 'w') as f:
        f.write('my notes')
    status, err = _cli([*RUN, f'--workdir={run}', '--train_steps=2', '--overwrite'], monkeypatch, capsys)
    sentence = _one_sentence(err)
    assert status == 2 and 'notes.txt' in sentence and os.path.join('samples', 'mine') in sentence
    assert os.path.exists(os.path.join(run, 'notes.txt'))
    # Without them, the run folder is ours alone and --overwrite deletes all of it.
    os.remove(os.path.join(run, 'notes.txt'))
    os.rmdir(os.path.join(run, 'samples', 'mine'))
    assert ownership.foreign_entries(run) == []
    ownership.clear(run)
    assert os.listdir(run) == []


@pytest.mark.parametrize('target', ['checkpoints', 'victim', 'a_file'])
def test_an_export_never_replaces_what_is_not_an_export(trained, tmp_path, monkeypatch, capsys, target):
    run = _copy(trained, tmp_path)
    victim = tmp_path / 'victim'
    (victim / 'sub').mkdir(parents=True)
    (victim / 'thesis.txt').write_text('chapter 1')
    (tmp_path / 'a_file').write_text('data')
    path = {'checkpoints': os.path.join(run, 'checkpoints'), 'victim': str(victim)}.get(target)
    path = path or str(tmp_path / 'a_file')
    before = _tree(tmp_path)
    status, err = _cli(['--mode=export', f'--workdir={run}', f'--saved_model={path}'], monkeypatch, capsys)
    sentence = _one_sentence(err)
    assert status == 2 and f'--saved_model={path}' in sentence
    assert 'is a file' in sentence if target == 'a_file' else 'not an export of this program' in sentence
    assert _tree(tmp_path) == before


def test_an_export_replaces_its_own_export_and_fills_an_empty_folder(trained, tmp_path):
    run = _copy(trained, tmp_path)
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert export.export_from_checkpoint(run, str(empty)) == str(empty)
    assert export.load(str(empty)).metadata['step'] == STEPS
    export.export_from_checkpoint(run, str(empty))  # Ours now: replaced.
    assert ownership.is_own_export(str(empty)) and not ownership.is_own_export(
        os.path.join(run, 'checkpoints')
    )


def test_a_users_backup_beside_the_export_is_left_alone(trained, tmp_path, monkeypatch, capsys):
    run = _copy(trained, tmp_path)
    backups = {
        'saved_model.old': 'a user backup',
        'saved_model.tmp': 'a user folder',
        f'saved_model.old{os.getppid()}': "a live process's name",
        'saved_model.old99999999': 'not an export, although its process is gone',
    }
    for name, text in backups.items():
        os.makedirs(os.path.join(run, name))
        with open(os.path.join(run, name, 'NOTES.txt'), 'w') as f:
            f.write(text)
    # An export of ours moved aside by a process killed between its two renames is still put back.
    shutil.move(os.path.join(run, 'saved_model'), os.path.join(run, 'saved_model.old99999998'))
    status, err = _cli(['--mode=export', f'--workdir={run}'], monkeypatch, capsys)
    assert status == 0, err
    for name, text in backups.items():
        with open(os.path.join(run, name, 'NOTES.txt')) as f:
            assert f.read() == text
    assert not os.path.exists(os.path.join(run, 'saved_model.old99999998'))
    assert export.load(os.path.join(run, 'saved_model')).metadata['step'] == STEPS


def test_a_run_whose_checkpoints_are_gone_is_refused(trained, tmp_path, monkeypatch, capsys):
    run = _copy(trained, tmp_path)
    shutil.rmtree(os.path.join(run, 'checkpoints'))
    before = _tree(run)
    status, err = _cli([*RUN, f'--workdir={run}', f'--train_steps={STEPS + 2}'], monkeypatch, capsys)
    sentence = _one_sentence(err)
    assert status == 2 and 'no checkpoint to resume it from' in sentence and 'an export at step 4' in sentence
    assert _tree(run) == before
    # The evidence without an export: metrics past the first checkpoint step.
    shutil.rmtree(os.path.join(run, 'saved_model'))
    with pytest.raises(ConfigError, match=r'metrics up to step 4'):
        train.train_and_evaluate(_cfg(train_steps=6), run)


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path):
    # Metrics and a grid at step 1 of a run that checkpoints at 2: no checkpoint ever existed.
    run = str(tmp_path / 'run')
    train.train_and_evaluate(_cfg(train_steps=1), run)
    shutil.rmtree(os.path.join(run, 'checkpoints'))
    trainer = train.train_and_evaluate(_cfg(train_steps=2), run)
    assert trainer.restored_from is None and int(trainer.step) == 2


def test_sample_into_a_folder_writes_nothing_here(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'sample.png').write_bytes(b'the grid I picked indices from')
    (tmp_path / 'sample.npy').write_bytes(b'and its z bank')
    model = os.path.join(trained, 'saved_model')
    status, err = _cli(
        ['--mode=sample', f'--saved_model={model}', '--out_dir=D', '--num=3'], monkeypatch, capsys
    )
    assert status == 0, err
    assert sorted(os.listdir(tmp_path / 'D')) == [f'sample_{i:06d}.png' for i in range(3)] + [
        'samples.json',
        'z.npy',
    ]
    assert (tmp_path / 'sample.png').read_bytes() == b'the grid I picked indices from'
    assert (tmp_path / 'sample.npy').read_bytes() == b'and its z bank'
    # The default output is the user's file, not ours: refused rather than replaced.
    status, err = _cli(['--mode=sample', f'--saved_model={model}', '--num=3'], monkeypatch, capsys)
    assert status == 2 and 'not a file this program wrote' in _one_sentence(err)
    # A grid this program wrote is replaced by the next one.
    status, err = _cli(
        ['--mode=sample', f'--saved_model={model}', '--num=3', '--out=g.png'], monkeypatch, capsys
    )
    assert status == 0 and paths.is_own_output(str(tmp_path / 'g.png'))
    status, err = _cli(
        ['--mode=sample', f'--saved_model={model}', '--num=4', '--out=g.png'], monkeypatch, capsys
    )
    assert status == 0 and np.load(tmp_path / 'g.npy').shape == (4, 16)


# --- silent wrong results ---


def test_learning_rates_given_on_resume_apply(tmp_path, caplog):
    run = str(tmp_path / 'run')
    train.train_and_evaluate(_cfg(g_lr=2e-4, d_lr=2e-4), run)
    # The same flags keep the checkpoint's rates (a rollback's halving would survive); new ones apply.
    same = train.train_and_evaluate(_cfg(train_steps=STEPS + 2), run)
    assert float(same.peak_rates['g']) == pytest.approx(2e-4)
    with caplog.at_level(logging.INFO, logger='absl'):
        lowered = train.train_and_evaluate(_cfg(train_steps=STEPS + 4, g_lr=5e-5, d_lr=1e-4), run)
    assert float(lowered.peak_rates['g']) == pytest.approx(5e-5)
    assert float(lowered.d_optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    assert '--g_lr=5e-05 on resume' in caplog.text
    assert workdir.read_metrics(run)[-1]['g_lr'] == pytest.approx(5e-5)


def test_config_cfg_resumes_its_own_run_from_any_folder(trained, tmp_path, monkeypatch, capsys, caplog):
    run = _copy(trained, tmp_path, 'moved_run')  # Moved too: config.cfg records where it was trained.
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    flagfile = os.path.relpath(os.path.join(run, 'config.cfg'))
    with caplog.at_level(logging.INFO, logger='absl'):
        status, err = _cli([f'--flagfile={flagfile}', f'--train_steps={STEPS + 2}'], monkeypatch, capsys)
    assert status == 0, err
    assert os.listdir(elsewhere) == []
    assert os.path.exists(os.path.join(run, 'checkpoints', f'ckpt-{STEPS + 2}.index'))
    assert "is the run folder's own flagfile" in caplog.text
    with open(os.path.join(run, 'config.cfg')) as f:
        assert f'--workdir={os.path.abspath(run)}\n' in f.read()
    # --workdir after it starts another run from the same flags.
    status, err = _cli([f'--flagfile={flagfile}', '--workdir=copy', '--train_steps=2'], monkeypatch, capsys)
    assert status == 0 and sorted(os.listdir(elsewhere)) == ['copy']


def test_sample_draws_the_z_file_and_other_modes_refuse_it(trained, tmp_path, monkeypatch, capsys):
    model = os.path.join(trained, 'saved_model')
    bank = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    np.save(tmp_path / 'z.npy', bank)
    result = sampling.sample(
        Config(mode='sample', saved_model=model, z_file=str(tmp_path / 'z.npy'), out=str(tmp_path / 's.png'))
    )
    np.testing.assert_array_equal(result['images'], export.load(model).generate(bank))
    np.testing.assert_array_equal(np.load(tmp_path / 's.npy'), bank)
    args = ['--mode=interpolate', f'--saved_model={model}', f'--z_file={tmp_path / "z.npy"}']
    status, err = _cli(args, monkeypatch, capsys)
    assert status == 2 and '--z_file applies to --mode=sample or arithmetic, not --mode=interpolate' in err
    status, err = _cli(['--mode=sample', f'--saved_model={model}', '--train_steps=9'], monkeypatch, capsys)
    assert status == 2 and '--train_steps applies to --mode=train' in err
    with pytest.raises(ConfigError, match='--num_walks applies to --mode=interpolate'):
        Config.create(mode='sample', saved_model=model, num_walks=3)


def test_too_few_samples_for_fid_are_said_so(monkeypatch, capsys):
    assert evaluate.small_sample_warning(50_000, 2048) is None
    assert 'covariance is singular' in evaluate.small_sample_warning(2, 2048)
    assert 'biased upwards' in evaluate.small_sample_warning(500, 256)
    # --mode=evaluate's table and JSON carry it; a 4-d stand-in feature net keeps this fast.
    net = FeatureNet('stand-in', 'none', lambda x: (np.asarray(x).reshape(len(x), -1)[:, :4], None))
    monkeypatch.setattr(evaluate, 'build_feature_net', lambda cfg: net)
    cfg = tiny_config(mode='evaluate', eval_source='untrained', eval_samples=2, kid_subset_size=2)
    result = evaluate.run(cfg, '')
    assert result['warning'].startswith('only 2 samples, fewer than the 4 feature dimensions')
    assert result['protocol']['num_generated'] == 2
    assert 'warning: only 2 samples' in capsys.readouterr().out


# --- hangs: FIFOs, devices and huge files are never read ---


def test_fifos_devices_and_huge_files_in_an_image_folder_are_left_out(tmp_path, caplog):
    root = tmp_path / 'images'
    root.mkdir()
    images.save_png(str(root / 'a.png'), np.zeros((16, 16, 1), np.uint8))
    os.symlink('/dev/zero', root / 'x.png')
    os.mkfifo(root / 'pipe.png')
    with open(root / 'huge.png', 'wb') as f:  # Sparse: no disk space, but over the size limit.
        f.truncate(folder_lib.MAX_FILE_BYTES + 1)
    with caplog.at_level(logging.WARNING):
        files = data.list_image_files(str(root))
    assert files == [str(root / 'a.png')]
    assert 'left out 2 image name(s) that are not regular files' in caplog.text
    assert 'left out 1 file(s) over 256 MB' in caplog.text


def _subprocess_cli(args, cwd, timeout=60):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    return subprocess.run(
        [sys.executable, '-m', 'dcgan_tf', *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def test_a_flagfile_that_is_a_fifo_or_a_device_is_one_sentence(tmp_path):
    os.mkfifo(tmp_path / 'fifo.cfg')
    os.symlink('/dev/zero', tmp_path / 'zero.cfg')
    (tmp_path / 'nested.cfg').write_text('--train_steps=2\n--flagfile=fifo.cfg\n')
    for name, what in (('fifo.cfg', 'a FIFO'), ('zero.cfg', 'a device'), ('nested.cfg', 'a FIFO')):
        result = _subprocess_cli([f'--flagfile={name}'], tmp_path)
        assert result.returncode == 2, result.stderr
        assert f'is {what}, not a regular file' in result.stderr and 'Traceback' not in result.stderr
    result = _subprocess_cli(['--flagfile=celeba6'], tmp_path)
    assert result.returncode == 2 and 'is neither a file nor a shipped config (bench64' in result.stderr


def test_user_named_files_that_are_not_regular_files_are_refused(trained, tmp_path, monkeypatch, capsys):
    os.mkfifo(tmp_path / 'z.npy')
    os.symlink('/dev/zero', tmp_path / 'zero.keras')
    model = os.path.join(trained, 'saved_model')
    cases = [
        (
            [
                '--mode=arithmetic',
                f'--saved_model={model}',
                f'--z_file={tmp_path / "z.npy"}',
                '--group_a=0',
                '--group_b=1',
                '--group_c=2',
            ],
            '--z_file=',
            'a FIFO',
        ),
        (
            ['--mode=evaluate', '--feature_net=mnist', f'--classifier_path={tmp_path / "zero.keras"}'],
            '--classifier_path=',
            'a device',
        ),
        (['--mode=sample', f'--saved_model={model}', f'--out={tmp_path / "z.npy"}'], '--out=', 'a FIFO'),
    ]
    for args, flag, what in cases:
        status, err = _cli(args, monkeypatch, capsys)
        assert status == 2 and flag in _one_sentence(err) and what in err, err
    copy = _copy(model, tmp_path, 'sm')
    os.remove(os.path.join(copy, 'fingerprint.pb'))
    os.mkfifo(os.path.join(copy, 'fingerprint.pb'))
    status, err = _cli(['--mode=sample', f'--saved_model={copy}'], monkeypatch, capsys)
    assert status == 2 and 'fingerprint.pb, a FIFO where only files and folders belong' in err


# --- tracebacks: one sentence naming the path and its flag ---


def test_unwritable_or_impossible_export_paths_are_one_sentence(trained, tmp_path, monkeypatch, capsys):
    (tmp_path / 'a_file').write_text('x')
    for path, words in (('/sys/kernel/dcgan_x', 'cannot be written'), (f'{tmp_path}/a_file/sm', 'is a file')):
        status, err = _cli(
            ['--mode=export', f'--workdir={trained}', f'--saved_model={path}'], monkeypatch, capsys
        )
        sentence = _one_sentence(err)
        assert status == 1 and f'--saved_model={path}' in sentence and words in sentence, sentence
        assert 'resum' not in sentence


def test_outputs_that_are_folders_are_refused_and_leave_nothing(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.mkdir('out_folder')
    (tmp_path / 'a_file').write_text('x')
    model = os.path.join(trained, 'saved_model')
    cases = [
        (['--mode=sample', f'--saved_model={model}', '--out=out_folder'], '--out=out_folder is a folder'),
        (['--mode=export', f'--workdir={trained}', '--format=tflite', '--out=out_folder'], 'is a folder'),
        (['--mode=visualize', f'--workdir={trained}', '--out_dir=a_file'], '--out_dir=a_file is a file'),
    ]
    for args, words in cases:
        status, err = _cli(args, monkeypatch, capsys)
        assert status == 2 and words in _one_sentence(err)
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'out_folder'] and not os.listdir('out_folder')
    # Nor does a write that fails half-way leave its temporary file.
    with pytest.raises(tf.errors.OpError):
        images.write_file(str(tmp_path / 'out_folder'), b'data')
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'out_folder']


def test_a_classifier_that_is_not_one_is_one_sentence(tmp_path, monkeypatch, capsys):
    (tmp_path / 'random.keras').write_bytes(os.urandom(1000))
    args = ['--mode=evaluate', '--feature_net=mnist', f'--classifier_path={tmp_path / "random.keras"}']
    status, err = _cli([*args, '--eval_source=untrained', '--eval_samples=4'], monkeypatch, capsys)
    assert status == 2 and 'is not a .keras file' in _one_sentence(err)


@pytest.mark.parametrize(
    'entry, make, words',
    [
        ('lock.json', 'folder', 'lock.json is a folder where the run keeps a file'),
        ('checkpoints/checkpoint', 'folder', 'checkpoint is a folder where the run keeps a file'),
        ('metrics.jsonl', 'folder', 'metrics.jsonl is a folder where the run keeps a file'),
        ('samples', 'file', 'samples is a file where the run keeps a folder'),
        ('samples/step_0000002.png', 'fifo', 'a FIFO where only files and folders belong'),
    ],
)
def test_a_run_folder_entry_of_the_wrong_kind_stops_before_training(
    trained, tmp_path, monkeypatch, capsys, entry, make, words
):
    run = _copy(trained, tmp_path)
    path = os.path.join(run, entry)
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    {'folder': os.mkdir, 'fifo': os.mkfifo, 'file': lambda p: open(p, 'w').close()}[make](path)
    status, err = _cli([*RUN, f'--workdir={run}', f'--train_steps={STEPS + 2}'], monkeypatch, capsys)
    assert status == 2 and words in _one_sentence(err)
    assert not os.path.exists(os.path.join(run, 'checkpoints', f'ckpt-{STEPS + 2}.index'))


def test_io_errors_name_the_flag_and_path():
    named = {'--workdir': 'runs/w', '--saved_model': 'out/sm'}
    folder = tf.errors.FailedPreconditionError(None, None, 'runs/w/lock.json; Is a directory')
    assert paths.io_error_message(folder, named) == (
        '--workdir=runs/w: runs/w/lock.json is a folder where a file belongs (Is a directory); fix it or '
        'give another --workdir.'
    )
    denied = PermissionError(13, 'Permission denied', 'out/sm.tmp12')
    assert paths.io_error_message(denied, named).startswith('--saved_model=out/sm cannot be written')
    under_file = tf.errors.FailedPreconditionError(None, None, 'out is not a directory')
    assert paths.io_error_message(under_file, named).startswith('--saved_model=out/sm: out is a file where')
    full = OSError(28, 'No space left on device', 'runs/w/checkpoints/ckpt-2.index')
    assert 'resumes from the last complete checkpoint' in paths.io_error_message(
        full, named, resumable_workdir='runs/w'
    )
    assert paths.io_error_message(ValueError('shapes do not match'), named) is None


# --- unclear messages ---


@pytest.mark.parametrize(
    'name, words', [('g.tflite', 'goes to --model=g.tflite'), ('model.keras', 'Keras model')]
)
def test_a_file_given_as_saved_model_says_what_it_is(tmp_path, monkeypatch, capsys, name, words):
    (tmp_path / name).write_bytes(b'x')
    monkeypatch.chdir(tmp_path)
    status, err = _cli(['--mode=sample', f'--saved_model={name}'], monkeypatch, capsys)
    sentence = _one_sentence(err)
    assert status == 2 and 'is a file, not a SavedModel folder' in sentence and words in sentence


@pytest.fixture
def read_only(tmp_path):
    """A read-only tmpfs (needs root and mount rights, else the test is skipped)."""
    mount_point = tmp_path / 'ro'
    mount_point.mkdir()
    result = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', str(mount_point)],
        check=False,
        capture_output=True,
    )
    if result.returncode != 0:
        pytest.skip('cannot mount a read-only tmpfs here (needs root)')
    yield mount_point
    subprocess.run(['umount', '-l', str(mount_point)], check=False)


def test_an_export_to_a_read_only_folder_blames_saved_model(trained, read_only, monkeypatch, capsys):
    target = read_only / 'sm'
    status, err = _cli(
        ['--mode=export', f'--workdir={trained}', f'--saved_model={target}'], monkeypatch, capsys
    )
    sentence = _one_sentence(err)
    assert (
        status == 1
        and sentence.startswith(f'error: --saved_model={target}')
        and 'cannot be written' in sentence
    )
    assert '--workdir' not in sentence and 'resum' not in sentence


def test_turning_the_average_on_or_off_on_resume_is_refused_alike(tmp_path):
    for first, then in ((0.0, 0.999), (0.999, 0.0)):
        run = str(tmp_path / f'run{first}')
        train.train_and_evaluate(_cfg(ema_decay=first, train_steps=2), run)
        with pytest.raises(ConfigError) as error:
            train.train_and_evaluate(_cfg(ema_decay=then), run)
        message = str(error.value)
        assert f'(--ema_decay={first:g} there, {then:g} now); resume with --ema_decay={first:g}' in message
        assert message.count('.') >= 1 and '\n' not in message


def test_junk_files_are_counted_once_and_announced_early(tmp_path, caplog):
    root = tmp_path / 'junk'
    root.mkdir()
    for i in range(2):
        images.save_png(str(root / f'a{i}.png'), np.full((16, 16, 1), 100 * i, np.uint8))
    for i in range(30):
        (root / f'j{i:02d}.jpg').write_bytes(b'not an image')
    cfg = tiny_config(dataset='folder', data_dir=str(root), batch_size=2)
    with caplog.at_level(logging.WARNING):
        source = data.load_source(cfg)
        batches = data.make_dataset(cfg, source)
        for _ in batches.take(4):  # Four passes: each holds two images.
            pass
    assert data.num_skipped(source) == 30
    assert re.search(r'Only [12] of 16 sampled items of --data_dir=\S+ decode as images', caplog.text)
    assert re.search(r'Skipped \d+ item\(s\) so far of the 32 of folder:', caplog.text), caplog.text


def test_a_run_already_past_its_length_says_so_and_keeps_its_export(trained, tmp_path, caplog):
    run = _copy(trained, tmp_path)
    exported = _tree(os.path.join(run, 'saved_model'))
    with caplog.at_level(logging.INFO, logger='absl'):
        train.train_and_evaluate(_cfg(train_steps=2, export_at_end=True), run)
    assert 'already at step 4, at or past its length of 2 steps: nothing to train' in caplog.text
    assert _tree(os.path.join(run, 'saved_model')) == exported


def test_a_resume_logs_no_partial_restore_warnings(trained, tmp_path, caplog):
    run = _copy(trained, tmp_path)
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(_cfg(train_steps=STEPS + 1), run)
        export.export_from_checkpoint(run)
    assert 'could not be found' not in caplog.text and 'unrestored values' not in caplog.text


def test_an_empty_lock_only_folder_and_json_records_are_ours(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'lock.json').write_text(json.dumps({'host': 'h', 'pid': 1, 'started': 0}))
    assert ownership.foreign_entries(str(run)) == []
    assert ownership.foreign_entries(str(tmp_path / 'missing')) == []
