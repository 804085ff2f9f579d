"""The Python API a notebook uses: a validated Config, train, export, load; twice in one process."""

import os

import keras
import numpy as np
import pytest
from tiny import TINY_VALUES

import dcgan_tf
from dcgan_tf import config, export, train


def test_create_and_from_flagfile_validate_with_one_sentence():
    with pytest.raises(dcgan_tf.ConfigError, match='--batch_size=0'):
        dcgan_tf.Config.create(train_steps=2, batch_size=0)
    with pytest.raises(dcgan_tf.ConfigError, match='Set --train_steps or --epochs'):
        dcgan_tf.Config.create()
    with pytest.raises(dcgan_tf.ConfigError, match="no setting 'batchsize'"):
        dcgan_tf.Config.create(train_steps=2, batchsize=8)
    with pytest.raises(dcgan_tf.ConfigError, match="batch_size='8' is not an int"):
        dcgan_tf.Config.create(train_steps=2, batch_size='8')
    cfg = config.from_flagfile('mnist_tutorial', train_steps=3)  # a shipped config, nested flagfile too
    assert (cfg.arch, cfg.dataset, cfg.train_steps) == ('tutorial', 'mnist', 3)
    with pytest.raises(dcgan_tf.ConfigError, match='neither a flagfile nor a shipped config'):
        config.from_flagfile('no_such_config')


def test_train_and_evaluate_validates_its_config(tmp_path):
    with pytest.raises(dcgan_tf.ConfigError, match='--train_steps or --epochs'):
        train.train_and_evaluate(dcgan_tf.Config(**{**TINY_VALUES, 'train_steps': 0}), str(tmp_path))
    assert not os.path.exists(tmp_path / 'checkpoints')


def test_a_notebook_trains_exports_and_loads_twice_leaving_no_global_state(tmp_path):
    policy = keras.mixed_precision.global_policy().name
    samples = []
    for run in ('a', 'b'):
        cfg = dcgan_tf.Config.create(**{**TINY_VALUES, 'train_steps': 2, 'export_at_end': True})
        trainer = train.train_and_evaluate(cfg, str(tmp_path / run))
        assert int(trainer.step) == 2
        loaded = export.load(str(tmp_path / run / 'saved_model'))
        samples.append(loaded.generate(np.zeros((2, cfg.z_dim), np.float32)))
        assert keras.mixed_precision.global_policy().name == policy
        assert os.getcwd() != str(tmp_path / run)
    np.testing.assert_array_equal(samples[0], samples[1])  # the same seed, the same model: nothing leaked
