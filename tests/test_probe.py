"""The discriminator-feature probe: pooling, the labelled split, the probe on separable data, --mode=probe."""

import json

import numpy as np
import pytest
import tensorflow as tf

from dcgan_tf import models, train
from dcgan_tf.quality import probe
from tests.conftest import tiny_config


@pytest.mark.parametrize('height, expected', [(14, 4), (7, 4), (8, 4), (16, 4), (2, 2)])
def test_pool_to_grid_reaches_four_by_four(height, expected):
    maps = tf.random.stateless_normal([3, height, height, 5], seed=[0, height])
    pooled = probe.pool_to_grid(maps)
    assert pooled.shape == (3, expected * expected * 5)
    # Max pooling: the largest activation of each map survives.
    np.testing.assert_allclose(
        tf.reduce_max(tf.reshape(pooled, [3, -1, 5]), axis=1), tf.reduce_max(maps, axis=[1, 2])
    )


def test_split_labelled_is_balanced_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), 150)
    train_idx, validation_idx = probe.split_labelled(labels, 10, seed=0)
    assert len(train_idx) == 100 and len(validation_idx) == 10 * probe.VALIDATION_PER_CLASS
    assert not set(train_idx) & set(validation_idx)
    assert np.bincount(labels[train_idx]).tolist() == [10] * 10
    all_idx, _ = probe.split_labelled(labels, 0, seed=0)
    assert len(all_idx) == 1500 - 1000
    again, _ = probe.split_labelled(labels, 10, seed=0)
    other, _ = probe.split_labelled(labels, 10, seed=1)
    np.testing.assert_array_equal(train_idx, again)
    assert set(other) != set(train_idx)


def _two_class_images(num, rng):
    # Class 0: a bright left half; class 1: a bright right half; plus noise.
    labels = rng.integers(0, 2, num)
    images = rng.integers(0, 60, (num, 16, 16, 1))
    for i, label in enumerate(labels):
        images[i, :, label * 8 : label * 8 + 8] += 180
    return images.astype(np.uint8), labels


def test_probe_learns_separable_classes_from_a_random_discriminator():
    rng = np.random.default_rng(0)
    train_set, test_set = _two_class_images(400, rng), _two_class_images(100, rng)
    discriminator = models.build_discriminator(tiny_config())
    assert probe.trained_features_dim(discriminator) == 8 * 16 + 16 * 16  # conv0 8x8x8, conv1 4x4x16
    results = probe.probe_discriminator(discriminator, train_set, test_set, [5, 0], seed=0)
    assert set(results) == {'5', 'all'}
    assert results['5']['num_train'] == 10 and results['all']['num_train'] == 400 - 200
    assert results['all']['accuracy'] > 0.95
    assert results['all']['c'] in probe.C_GRID


def test_probe_mode_on_a_tiny_mnist_run(tmp_path, capsys, mnist_dir):
    cfg = tiny_config(dataset='mnist', data_dir=mnist_dir, train_steps=2, checkpoint_every=2)
    workdir = str(tmp_path / 'run')
    train.train_and_evaluate(cfg, workdir)
    probe_cfg = cfg.replace(mode='probe', probe_labels_per_class='3', probe_test_examples=200)
    result = probe.run(probe_cfg, workdir)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith('{')]
    assert json.loads(printed[-1])['trained'] == result['trained']
    for which in ('trained', 'random'):
        assert result[which]['3']['num_train'] == 30
        # Ten classes: a working probe beats chance (0.1) even on 3 labels per class.
        assert 0.2 < result[which]['3']['accuracy'] <= 1.0
    assert result['protocol']['num_test'] == 200 and 'step 2' in result['protocol']['discriminator']


def test_probe_restores_past_a_damaged_latest_checkpoint(tmp_path):
    # The probe takes D through the same checkpoint choice as every tool: a cut-short latest falls back.
    cfg = tiny_config(train_steps=4, checkpoint_every=2)
    workdir = tmp_path / 'run'
    trainer = train.train_and_evaluate(cfg, str(workdir))
    data_file = workdir / 'checkpoints' / 'ckpt-4.data-00000-of-00001'
    data_file.write_bytes(data_file.read_bytes()[:100])
    run_cfg, discriminator, step = probe.restore_discriminator(str(workdir))
    assert step == 2 and run_cfg.model_flags == cfg.model_flags
    assert discriminator.count_params() == trainer.discriminator.count_params()
