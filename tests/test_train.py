"""The Trainer learns, checkpoints, and resumes exactly where an uninterrupted run would be."""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from dcgan_tf import train, workdir
from dcgan_tf import trainer as trainer_lib


@pytest.fixture
def deterministic():
    tf.config.experimental.enable_op_determinism()
    yield
    # No public API switches it off; left on, unseeded random ops in later tests would fail.
    from tensorflow.python.framework import config as tf_config  # noqa: PLC0415

    tf_config.disable_op_determinism()


def _weights(trainer):
    return [v.numpy() for v in trainer.generator.weights + trainer.discriminator.weights]


@pytest.mark.parametrize('arch', ['dcgan', 'tutorial'])
def test_resume_equals_uninterrupted_run(tmp_path, deterministic, arch):
    extra = dict(arch='tutorial', resolution=28, z_dim=8) if arch == 'tutorial' else {}
    cfg = tiny_config(train_steps=6, checkpoint_every=3, sample_every=100, **extra)
    straight = train.train_and_evaluate(cfg, str(tmp_path / 'straight'))
    # "Interrupted" after 3 steps (a checkpoint is written there), then the same command again.
    train.train_and_evaluate(cfg.replace(train_steps=3), str(tmp_path / 'resumed'))
    resumed = train.train_and_evaluate(cfg, str(tmp_path / 'resumed'))
    assert resumed.restored_from.endswith('ckpt-3')
    assert int(resumed.step) == int(straight.step) == 6
    for a, b in zip(_weights(straight), _weights(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(straight.rng.state.numpy(), resumed.rng.state.numpy())


def test_loss_moves_and_d_learns(tmp_path):
    cfg = tiny_config(
        train_steps=30,
        log_every=10,
        sample_every=100,
        checkpoint_every=100,
        batch_size=16,
        d_lr=1e-3,
        g_lr=1e-4,
    )
    train.train_and_evaluate(cfg, str(tmp_path))
    history = workdir.read_metrics(str(tmp_path))
    assert [h['step'] for h in history] == [10, 20, 30]
    # D starts at chance (D(x) ~ D(G(z)) ~ 0.5) and learns to tell real from fake.
    assert history[0]['d_loss'] > history[-1]['d_loss']
    assert history[-1]['d_real'] > history[-1]['d_fake']
    # D's accuracy (logit sign) is a share of each log window's images, and better than chance by then.
    for h in history:
        assert 0.0 <= h['d_acc_real'] <= 1.0 and 0.0 <= h['d_acc_fake'] <= 1.0
    assert history[-1]['d_acc_real'] + history[-1]['d_acc_fake'] > 1.0


def test_workdir_outputs(tmp_path):
    cfg = tiny_config(train_steps=4, steps_per_call=2)
    trainer = train.train_and_evaluate(cfg, str(tmp_path))
    samples = sorted(os.listdir(tmp_path / 'samples'))
    assert samples == [
        'losses.png',
        'progress.gif',
        'step_0000000.png',
        'step_0000002.png',
        'step_0000004.png',
    ]
    assert (tmp_path / 'config.cfg').read_text().count('--resolution=16') == 1
    assert trainer.manager.latest_checkpoint.endswith('ckpt-4')
    events = os.listdir(tmp_path / 'tensorboard' / 'train')
    tags = set()
    for event in tf.compat.v1.train.summary_iterator(str(tmp_path / 'tensorboard' / 'train' / events[0])):
        tags.update(v.tag for v in event.summary.value)
    assert {
        'train/d_loss',
        'train/g_loss',
        'train/d_real',
        'train/d_fake',
        'train/d_acc_real',
        'train/d_acc_fake',
        'train/images_per_second',
        'train/g_lr',
        'train/d_lr',
        'samples/fixed_z',
    } <= tags


def test_steps_per_call_gives_the_same_training(tmp_path, deterministic):
    cfg = tiny_config(train_steps=4, checkpoint_every=4, sample_every=100, log_every=4)
    one = train.train_and_evaluate(cfg, str(tmp_path / 'one'))
    four = train.train_and_evaluate(cfg.replace(steps_per_call=4), str(tmp_path / 'four'))
    for a, b in zip(_weights(one), _weights(four), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_eager_and_graph_steps_agree(tmp_path, deterministic):
    cfg = tiny_config(train_steps=2, checkpoint_every=2, sample_every=100)
    graph = train.train_and_evaluate(cfg, str(tmp_path / 'graph'))
    eager = train.train_and_evaluate(cfg.replace(run_eagerly=True), str(tmp_path / 'eager'))
    for a, b in zip(_weights(graph), _weights(eager), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_alternating_update_scores_g_against_the_updated_d(tmp_path, deterministic):
    cfg = tiny_config(train_steps=1)
    trainers = {}
    for update in ('simultaneous', 'alternating'):
        trainers[update] = train.Trainer(cfg.replace(update=update), str(tmp_path / update))
        trainers[update].train_steps(1)
    simultaneous, alternating = trainers['simultaneous'], trainers['alternating']
    # D's update is the same maths in both orders (same data, noise and initial weights) ...
    for a, b in zip(
        simultaneous.discriminator.trainable_weights, alternating.discriminator.trainable_weights, strict=True
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    # ... G's is not: alternating scores the fakes with the D that has already stepped.
    pairs = zip(
        simultaneous.generator.trainable_weights, alternating.generator.trainable_weights, strict=True
    )
    differences = [np.abs(a.numpy() - b.numpy()).max() for a, b in pairs]
    assert max(differences) > 1e-6


def test_ema_warmup_of_2_is_the_plain_mean_of_the_steps(tmp_path):
    # decay_t = (1 + t) / (2 + t): after t steps the average is (2 w_0 + w_1 + ... + w_t) / (t + 2).
    trainer = train.Trainer(tiny_config(ema_warmup=2.0, ema_decay=0.999), str(tmp_path))
    history = [[v.numpy() for v in trainer.generator.trainable_variables]]
    for _ in range(3):
        trainer.train_steps(1)
        history.append([v.numpy() for v in trainer.generator.trainable_variables])
    for i, ema in enumerate(trainer.ema_generator.trainable_variables):
        expected = (2 * history[0][i] + sum(h[i] for h in history[1:])) / 5
        np.testing.assert_allclose(ema.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_linear_lr_decay_sets_the_rate_of_each_update_and_logs_it(tmp_path):
    # 8 steps decaying from the middle: updates 0-4 at the peak, then 3/4, 2/4, 1/4 of it.
    cfg = tiny_config(
        train_steps=8,
        lr_decay='linear',
        lr_decay_start=0.5,
        g_lr=4e-4,
        d_lr=2e-4,
        log_every=2,
        sample_every=100,
    )
    assert [float(trainer_lib.lr_factor(cfg, step, 8)) for step in range(8)] == [
        1,
        1,
        1,
        1,
        1,
        0.75,
        0.5,
        0.25,
    ]
    assert float(trainer_lib.lr_factor(cfg.replace(lr_decay='none'), 7, 8)) == 1.0
    trainer = train.train_and_evaluate(cfg, str(tmp_path))
    # Each log shows the rates of the step's last update (update step - 1).
    logged = [(h['step'], h['g_lr'], h['d_lr']) for h in workdir.read_metrics(str(tmp_path))]
    expected = [(2, 4e-4, 2e-4), (4, 4e-4, 2e-4), (6, 3e-4, 1.5e-4), (8, 1e-4, 5e-5)]
    for (step, g_lr, d_lr), (want_step, want_g, want_d) in zip(logged, expected, strict=True):
        assert step == want_step
        assert g_lr == pytest.approx(want_g) and d_lr == pytest.approx(want_d)
    assert float(trainer.g_optimizer.learning_rate) == pytest.approx(1e-4)
    assert _scalars(tmp_path / 'tensorboard' / 'train', 'train/g_lr') == pytest.approx(
        [4e-4, 4e-4, 3e-4, 1e-4]
    )


def test_resume_mid_decay_goes_on_at_the_same_rates(tmp_path, deterministic):
    cfg = tiny_config(train_steps=8, lr_decay='linear', lr_decay_start=0.25, sample_every=100)
    straight = train.Trainer(cfg, str(tmp_path / 'straight'))
    straight.train_steps(8)
    first = train.Trainer(cfg, str(tmp_path / 'resumed'))
    first.train_steps(5)
    first.save()
    resumed = train.Trainer(cfg, str(tmp_path / 'resumed'))
    # The rate of the next update, from the restored step: peak * (8 - 5) / (8 - 2).
    assert float(resumed.g_optimizer.learning_rate) == pytest.approx(cfg.g_lr / 2)
    resumed.train_steps(3)
    assert float(resumed.d_optimizer.learning_rate) == pytest.approx(cfg.d_lr / 6)
    for a, b in zip(_weights(straight), _weights(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_epochs_set_the_length(tmp_path):
    cfg = tiny_config(
        train_steps=0,
        epochs=2,
        synthetic_examples=40,
        batch_size=8,
        checkpoint_every=100,
        sample_every=100,
        log_every=100,
    )
    assert int(train.train_and_evaluate(cfg, str(tmp_path)).step) == 10


def test_refuses_a_workdir_of_another_model(tmp_path):
    train.train_and_evaluate(tiny_config(train_steps=2), str(tmp_path))
    with pytest.raises(train.ConfigError, match='--gf_dim=8 there, 16 now'):
        train.train_and_evaluate(tiny_config(train_steps=2, gf_dim=16), str(tmp_path))


def _scalars(event_dir, tag):
    values = []
    for name in os.listdir(event_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(event_dir, name)):
            values += [tf.make_ndarray(v.tensor).item() for v in event.summary.value if v.tag == tag]
    return values


def test_skipped_files_are_counted_in_tensorboard(tmp_path):
    import imageio.v3 as iio

    folder = tmp_path / 'images'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        iio.imwrite(folder / f'{i}.png', rng.integers(0, 255, (20, 20), dtype=np.uint8))
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    cfg = tiny_config(
        dataset='folder',
        data_dir=str(folder),
        batch_size=2,
        train_steps=6,
        log_every=6,
        sample_every=100,
        checkpoint_every=100,
    )
    train.train_and_evaluate(cfg, str(tmp_path / 'run'))
    counts = _scalars(str(tmp_path / 'run' / 'tensorboard' / 'train'), 'data/skipped_images')
    assert counts and counts[-1] >= 1
