"""Nothing lost: NaN/Inf stops or rolls back, signals stop gracefully, mode collapse is flagged."""

import hashlib
import io
import logging
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT, TINY_CLI, tiny_config

from dcgan_tf import data, paths, safety, train, workdir
from dcgan_tf.data import image_headers

# --- helpers ---


def _poison_at(monkeypatch, at_step: int, times: int = 1_000_000) -> list[int]:
    """Makes D's last variable (the logit's bias) NaN before the call that starts at `at_step`.

    The logit feeds the losses directly, so they become NaN through the real step (a NaN deeper in a
    network can be flattened by a ReLU on some kernels).

    Returns a list that records the steps at which it struck.
    """
    original = train.Trainer.train_steps
    struck = []

    def train_steps(self, num_steps):
        if int(self.step) == at_step and len(struck) < times:
            struck.append(at_step)
            variable = self.discriminator.trainable_variables[-1]
            variable.assign(tf.fill(variable.shape, float('nan')))
        return original(self, num_steps)

    monkeypatch.setattr(train.Trainer, 'train_steps', train_steps)
    return struck


def _digest(folder) -> dict[str, str]:
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in sorted(os.listdir(folder))
        if os.path.isfile(folder / name)
    }


# --- the pure helpers ---


def test_non_finite_and_message():
    assert safety.non_finite({'d_loss': 1.0, 'g_loss': 2.0}) is None
    assert safety.non_finite({'d_loss': 1.0, 'g_loss': float('inf')}) == ('g_loss', float('inf'))
    message = safety.nan_message('g_loss', float('nan'), 5, 8, '/w/checkpoints/ckpt-4')
    assert 'g_loss became nan at steps 5-8' in message and 'ckpt-4 is kept' in message
    assert '--on_nan=rollback' in message and '\n' not in message


def test_diversity_ratio_tells_collapse_from_variety():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, size=(8, 16, 16, 1))
    collapsed = np.repeat(real[:1], 8, axis=0) + rng.normal(0, 1e-3, size=real.shape)
    assert safety.diversity_ratio(real, real) == pytest.approx(1.0)
    assert safety.diversity_ratio(collapsed, real) < 0.01
    # Two images at distance 2 everywhere: RMS distance per pixel is 2.
    assert safety.pairwise_distance(np.stack([np.ones((4, 4)), -np.ones((4, 4))])) == pytest.approx(2.0)


def test_first_signal_requests_a_stop_second_is_left_to_the_os():
    previous = signal.getsignal(signal.SIGINT)
    with safety.GracefulStop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)  # Handled at the next bytecode, in this thread.
        assert stop.requested and stop.signal_name == 'SIGINT'
        assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is previous


def test_second_sigint_ends_the_process_at_once():
    # A process busy in a long call (here: sleep) dies on the second SIGINT, without waiting.
    code = (
        'import os, signal, time\n'
        'from dcgan_tf import safety\n'
        'stop = safety.GracefulStop().install()\n'
        'os.kill(os.getpid(), signal.SIGINT)\n'
        'assert stop.requested\n'
        'os.kill(os.getpid(), signal.SIGINT)\n'
        'time.sleep(30)\n'
        'print("survived")\n'
    )
    result = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert result.returncode == -signal.SIGINT, result.stderr
    assert 'survived' not in result.stdout


def test_a_call_that_does_not_return_after_a_signal_ends_the_process(tmp_path):
    # The main thread sits in one call long past the signal (sleep stands in for a hung TensorFlow op):
    # the watchdog ends the process with one line and status 1 once the grace period is over.
    code = (
        'import os, signal, time\n'
        'from dcgan_tf import safety\n'
        'safety.MIN_GRACE_S = 1.0\n'
        'stop = safety.GracefulStop(cleanup=lambda: open("cleaned", "w").close()).install()\n'
        'with stop.call():\n'
        '    os.kill(os.getpid(), signal.SIGTERM)\n'
        '    time.sleep(60)\n'
        'print("survived")\n'
    )
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 30
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: stopped by SIGTERM inside a training call that did not return'), last
    assert 'survived' not in result.stdout and (tmp_path / 'cleaned').exists()


# --- NaN / Inf ---


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(train_steps=8, checkpoint_every=2, log_every=2, sample_every=100)
    _poison_at(monkeypatch, at_step=3)
    checkpoints = tmp_path / 'checkpoints'
    digests = {}
    original_save = train.Trainer.save

    def save(self):
        path = original_save(self)
        digests.update(_digest(checkpoints))
        return path

    monkeypatch.setattr(train.Trainer, 'save', save)
    with pytest.raises(safety.NumericalError, match=r'became nan at step 4; .*ckpt-2 is kept') as error:
        train.train_and_evaluate(cfg, str(tmp_path))
    assert '\n' not in str(error.value)
    # The bad state was not written: the last good checkpoint is the latest one, byte for byte.
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith('ckpt-2')
    assert _digest(checkpoints) == digests
    history = workdir.read_metrics(str(tmp_path))
    assert [h['step'] for h in history] == [2]
    # Signal handlers are put back and the workdir's lock released, though the run stopped with an error.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert not (tmp_path / 'lock.json').exists()
    # The same command resumes from the good checkpoint (the injected fault does not recur).
    monkeypatch.undo()
    resumed = train.train_and_evaluate(cfg, str(tmp_path))
    assert resumed.restored_from.endswith('ckpt-2') and int(resumed.step) == 8


def test_rollback_restores_halves_the_learning_rates_and_goes_on(tmp_path, monkeypatch, caplog):
    cfg = tiny_config(
        train_steps=6, checkpoint_every=2, log_every=2, sample_every=100, on_nan='rollback', g_lr=4e-4
    )
    struck = _poison_at(monkeypatch, at_step=3, times=1)
    with caplog.at_level(logging.WARNING):
        trainer = train.train_and_evaluate(cfg, str(tmp_path))
    assert struck == [3]
    assert int(trainer.step) == 6
    assert float(trainer.g_optimizer.learning_rate) == pytest.approx(2e-4)
    assert float(trainer.d_optimizer.learning_rate) == pytest.approx(cfg.d_lr / 2)
    assert 'rolled back to' in caplog.text and 'ckpt-2' in caplog.text
    history = workdir.read_metrics(str(tmp_path))
    assert [h['step'] for h in history] == [2, 4, 6]
    assert all(np.isfinite(h['d_loss']) and np.isfinite(h['g_loss']) for h in history)
    weights = [w.numpy() for w in trainer.generator.weights]
    assert all(np.isfinite(w).all() for w in weights)
    # The halved rates are part of the checkpoint: a resumed run keeps them.
    resumed = train.train_and_evaluate(cfg.replace(train_steps=7), str(tmp_path))
    assert float(resumed.g_optimizer.learning_rate) == pytest.approx(2e-4)


def test_rollback_halves_the_peak_rates_and_the_decay_goes_on_from_them(tmp_path, monkeypatch):
    cfg = tiny_config(
        train_steps=6,
        checkpoint_every=2,
        log_every=2,
        sample_every=100,
        on_nan='rollback',
        g_lr=4e-4,
        lr_decay='linear',
        lr_decay_start=0.5,
    )
    struck = _poison_at(monkeypatch, at_step=3, times=1)
    trainer = train.train_and_evaluate(cfg, str(tmp_path))
    assert struck == [3] and int(trainer.step) == 6
    assert float(trainer.peak_rates['g']) == pytest.approx(2e-4)
    # The last update (step 5 of 6, decaying from step 3) ran at a third of the halved peak.
    assert float(trainer.g_optimizer.learning_rate) == pytest.approx(2e-4 / 3)
    assert float(trainer.d_optimizer.learning_rate) == pytest.approx(cfg.d_lr / 2 / 3)
    # The halved peaks are part of the checkpoint too.
    resumed = train.Trainer(cfg.replace(train_steps=7), str(tmp_path))
    assert float(resumed.peak_rates['g']) == pytest.approx(2e-4)


def test_rollbacks_are_limited(tmp_path, monkeypatch):
    cfg = tiny_config(
        train_steps=6, checkpoint_every=2, log_every=2, sample_every=100, on_nan='rollback', max_rollbacks=2
    )
    struck = _poison_at(monkeypatch, at_step=3)  # Every time: the fault is not a learning-rate one.
    with pytest.raises(safety.NumericalError, match=r'after 2 rollback\(s\)'):
        train.train_and_evaluate(cfg, str(tmp_path))
    assert struck == [3, 3, 3]
    assert tf.train.latest_checkpoint(str(tmp_path / 'checkpoints')).endswith('ckpt-2')


# --- graceful stop ---


def test_sigint_mid_run_checkpoints_the_step_reached_and_resumes(tmp_path, monkeypatch):
    cfg = tiny_config(train_steps=20, checkpoint_every=10, log_every=10, sample_every=100)
    original = train.Trainer.train_steps

    def train_steps(self, num_steps):
        values = original(self, num_steps)
        if int(self.step) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Arrives while the loop is between calls.
        return values

    monkeypatch.setattr(train.Trainer, 'train_steps', train_steps)
    # Whatever was there before the run (Python's default, or SIG_IGN in a shell's background job).
    before = signal.getsignal(signal.SIGINT)
    trainer = train.train_and_evaluate(cfg, str(tmp_path))
    assert trainer.stopped_by == 'SIGINT'
    assert int(trainer.step) == 3
    # Not due by --checkpoint_every (10), saved anyway.
    assert trainer.manager.latest_checkpoint.endswith('ckpt-3')
    assert signal.getsignal(signal.SIGINT) is before
    monkeypatch.undo()
    resumed = train.train_and_evaluate(cfg, str(tmp_path))
    assert resumed.restored_from.endswith('ckpt-3') and resumed.stopped_by is None
    assert int(resumed.step) == 20


# --- mode collapse ---


def test_mode_collapse_warning_in_log_and_tensorboard(tmp_path, monkeypatch, caplog):
    # Varied samples first (steps 2, 4), then one picture for every z (step 6): a collapse.
    cfg = tiny_config(train_steps=6, sample_every=2, num_grid=8, collapse_threshold=0.5)
    rng = np.random.default_rng(0)
    varied = rng.uniform(-1, 1, size=(8, 16, 16, 1)).astype(np.float32)

    def generate(self, z, classes=None, ema=False):
        return varied if int(self.step) < 6 else np.repeat(varied[:1], len(z), axis=0)

    monkeypatch.setattr(train.Trainer, 'generate', generate)
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(cfg, str(tmp_path / 'warn'))
    assert caplog.text.count('Possible mode collapse') == 1
    assert 'Possible mode collapse at step 6' in caplog.text
    events = tmp_path / 'warn' / 'tensorboard' / 'train'
    diversity, warnings = {}, []
    for name in os.listdir(events):
        for event in tf.compat.v1.train.summary_iterator(str(events / name)):
            for v in event.summary.value:
                if v.tag == 'train/sample_diversity':
                    diversity[event.step] = float(tf.make_ndarray(v.tensor))
                if v.tag == 'warnings/mode_collapse':
                    warnings.append(event.step)
    assert diversity[6] == pytest.approx(0.0, abs=1e-6) and diversity[2] > 0.5
    assert warnings == [6]


def test_an_untrained_generator_is_not_called_collapsed(tmp_path, caplog):
    # At the start G draws near-identical pictures: low diversity, but not a fall, so no warning.
    cfg = tiny_config(train_steps=2, sample_every=2, num_grid=8, collapse_threshold=0.9)
    with caplog.at_level(logging.WARNING):
        trainer = train.train_and_evaluate(cfg, str(tmp_path))
    real = np.stack([trainer.source.images[i] / 127.5 - 1 for i in range(8)])
    assert safety.diversity_ratio(trainer.generate(train.fixed_noise(cfg, 8)), real) < 0.9
    assert 'mode collapse' not in caplog.text


# --- the command line: one sentence and status 1 for a failed run ---


def test_cli_nan_exits_1_with_one_sentence(tmp_path):
    # The real CLI with a fault injected before step 4 (the hook stands in for a diverging learning rate).
    code = (
        'import sys\n'
        'import tensorflow as tf\n'
        'from dcgan_tf import main, train\n'
        'original = train.Trainer.train_steps\n'
        'def train_steps(self, n):\n'
        '    if int(self.step) == 3:\n'
        '        v = self.discriminator.trainable_variables[-1]\n'
        '        v.assign(tf.fill(v.shape, float("inf")))\n'
        '    return original(self, n)\n'
        'train.Trainer.train_steps = train_steps\n'
        'sys.argv = ["dcgan_tf"] + sys.argv[1:]\n'
        'main.run()\n'
    )
    args = [*TINY_CLI, '--train_steps=8', '--checkpoint_every=2', '--log_every=2', '--collapse_threshold=0']
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, '-c', code, *args, f'--workdir={tmp_path}'],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
        env=env,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: The loss ') and ' at step 4; ' in last and 'ckpt-2 is kept' in last, last
    assert 'Traceback' not in result.stderr
    assert tf.train.latest_checkpoint(str(tmp_path / 'checkpoints')).endswith('ckpt-2')
    assert not (tmp_path / 'saved_model').exists()


# --- a full disk and a workdir that turns read-only mid-run ---


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount rights, else the test is skipped)."""
    mount_point = tmp_path / 'disk'
    mount_point.mkdir()
    result = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mount_point)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip('cannot mount a small tmpfs here (needs root)')
    yield mount_point
    subprocess.run(['umount', '-l', str(mount_point)], check=False)


def test_full_disk_and_read_only_workdir_are_one_sentence(small_disk):
    # 28x28 RGB widths 32: a checkpoint of a few MB, more than the 1 MiB disk holds.
    cfg = tiny_config(resolution=28, channels=3, gf_dim=32, df_dim=32, train_steps=2, checkpoint_every=2)
    with pytest.raises(Exception) as error:
        train.train_and_evaluate(cfg, str(small_disk / 'full'))
    message = paths.io_error_message(
        error.value, {'--workdir': str(small_disk / 'full')}, resumable_workdir='w'
    )
    assert message is not None, repr(error.value)
    assert message.startswith(f'The disk holding --workdir={small_disk / "full"} is full')
    subprocess.run(['rm', '-rf', str(small_disk / 'full')], check=True)
    # A workdir whose checkpoint folder is (or becomes) read-only: a read-only mount over it.
    checkpoints = small_disk / 'ro' / 'checkpoints'
    checkpoints.mkdir(parents=True)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', str(checkpoints)], check=True)
    try:
        with pytest.raises(Exception) as error:
            tiny = tiny_config(train_steps=2, checkpoint_every=2, sample_every=100, collapse_threshold=0)
            train.train_and_evaluate(tiny, str(small_disk / 'ro'))
    finally:
        subprocess.run(['umount', '-l', str(checkpoints)], check=False)
    message = paths.io_error_message(
        error.value, {'--workdir': str(small_disk / 'ro')}, resumable_workdir='w'
    )
    assert message is not None and 'became unwritable' in message, repr(error.value)
    assert '\n' not in message
    # Not every error is mistaken for a disk problem.
    assert paths.io_error_message(ValueError('shapes do not match'), {'--workdir': 'w'}) is None


# --- hostile input files ---


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


def _enormous_png(side: int = 20000) -> bytes:
    """A valid side x side grayscale PNG: ~0.4 MB on disk, side**2 bytes once decoded."""
    deflate = zlib.compressobj(1)
    rows = b''.join(deflate.compress(b'\0' * (side + 1) * 500) for _ in range(side // 500)) + deflate.flush()
    header = struct.pack('>IIBBBBB', side, side, 8, 0, 0, 0, 0)
    return (
        b'\x89PNG\r\n\x1a\n'
        + _png_chunk(b'IHDR', header)
        + _png_chunk(b'IDAT', rows)
        + _png_chunk(b'IEND', b'')
    )


def _hostile_folder(folder) -> tuple[int, int]:
    """Good, convertible and hostile files; returns (decodable, undecodable) counts."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(folder / f'good{i}.png')
    photo = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    # Converted, not skipped: a palette PNG, a 16-bit PNG, a CMYK JPEG, an animated GIF (first frame).
    photo.convert('P').save(folder / 'palette.png')
    Image.fromarray(rng.integers(0, 65536, (40, 40), dtype=np.uint16)).save(folder / 'sixteen_bit.png')
    photo.convert('CMYK').save(folder / 'cmyk.jpg')
    frames = [photo, photo.rotate(90)]
    frames[0].save(folder / 'animated.gif', save_all=True, append_images=frames[1:], duration=100, loop=0)
    # Skipped and counted.
    (folder / 'zero_bytes.png').write_bytes(b'')
    (folder / 'not_an_image.jpg').write_text('a text file with an image extension')
    (folder / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n' + rng.integers(0, 256, 500, np.uint8).tobytes())
    jpeg = io.BytesIO()
    photo.save(jpeg, format='JPEG')
    (folder / 'truncated.jpg').write_bytes(jpeg.getvalue()[:200])
    (folder / 'enormous.png').write_bytes(_enormous_png())
    (folder / 'readme.txt').write_text('not listed: no image extension')
    # data.py counts a skip when the next good image arrives: in a single pass (no repeat), skips after
    # the last good file would go uncounted, so a good file comes last in the (sorted) order.
    Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(folder / 'zz_last_good.png')
    return 13, 5


def test_enormous_image_is_refused_from_its_header():
    raw = tf.constant(_enormous_png())
    assert int(image_headers.header_pixels(raw)) == 20000 * 20000
    started = time.monotonic()
    with pytest.raises(tf.errors.InvalidArgumentError, match='larger than'):
        data.decode_and_fit(raw, 'center', 16, 3)
    assert time.monotonic() - started < 5  # Refused, not decoded (which allocates 1.2 GB first).


def test_hostile_folder_trains_and_counts_what_it_skips(tmp_path, caplog):
    folder = tmp_path / 'images'
    good, bad = _hostile_folder(folder)
    cfg = tiny_config(dataset='folder', data_dir=str(folder), channels=3, batch_size=4, train_steps=3)
    source = data.load_source(cfg)
    # One pass: every convertible file decodes, every hostile one is skipped and counted.
    one_pass = data.make_dataset(cfg.replace(batch_size=1), source, repeat=False)
    images = np.concatenate(list(one_pass.as_numpy_iterator()))
    assert images.shape == (good, 16, 16, 3)
    assert np.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert data.num_skipped(source) == bad
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with caplog.at_level(logging.WARNING):
        trainer = train.train_and_evaluate(cfg, str(tmp_path / 'run'))
    assert int(trainer.step) == 3
    assert 'Skipped' in caplog.text and 'could not be decoded' in caplog.text
    assert data.num_skipped(trainer.source) >= bad  # The run read the folder at least once.
    # No 20000x20000 decode happened (it alone would add >= 400 MB to the peak).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 300_000  # KiB


# --- serving safety ---


def test_exported_signatures_refuse_bad_input_and_never_return_nan_images(tmp_path):
    cfg = tiny_config(train_steps=2, sample_every=100, collapse_threshold=0, export_at_end=True)
    train.train_and_evaluate(cfg, str(tmp_path))
    # The plain SavedModel, as a serving system sees it (no dcgan_tf loader in between).
    signatures = tf.saved_model.load(str(tmp_path / 'saved_model')).signatures
    serve, sample = signatures['serving_default'], signatures['sample']
    good = serve(z=tf.zeros([2, cfg.z_dim]))['images']
    assert good.dtype == tf.uint8 and good.shape == (2, 16, 16, 1)
    refused = (ValueError, TypeError, tf.errors.InvalidArgumentError)
    for z in (tf.zeros([2, cfg.z_dim + 1]), tf.zeros([cfg.z_dim]), tf.zeros([2, cfg.z_dim], tf.float64)):
        with pytest.raises(refused):
            serve(z=z)
    with pytest.raises(refused):
        serve(z=tf.zeros([2, cfg.z_dim], tf.int32))
    with pytest.raises(refused):
        sample(num=tf.constant(4, tf.int64), seed=tf.constant(0, tf.int64))  # num is int32
    for num in (0, -1, 2**31 - 1):
        with pytest.raises(tf.errors.InvalidArgumentError, match='num must be'):
            sample(num=tf.constant(num), seed=tf.constant(0, tf.int64))
    # A NaN z gives NaN pixels: refused, never handed back as black uint8 images.
    z = np.zeros([2, cfg.z_dim], np.float32)
    z[1, 3] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match='NaN or Inf'):
        serve(z=tf.constant(z))
