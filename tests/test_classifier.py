"""The MNIST / Fashion-MNIST feature classifier: its shape, a brief real training, its feature model."""

import json
import os

import numpy as np
import pytest

from dcgan_tf.config import Config, ConfigError, validate
from dcgan_tf.quality import classifier, features


def test_classifier_shapes_and_named_layers():
    model = classifier.build_classifier()
    assert model.output_shape == (None, 10)
    assert model.get_layer(classifier.FEATURES_LAYER).output.shape == (None, 256)


def test_to_classifier_input_resizes_and_greys():
    rgb = np.ones((2, 32, 32, 3), np.float32) * 0.5
    out = classifier.to_classifier_input(rgb)
    assert out.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(out, 0.5, atol=1e-5)


def test_brief_training_on_real_mnist_learns_and_saves(brief_mnist_classifier, mnist_dir):
    # 4,000 digits, 2 epochs: far from the 99% of the full run (benchmarks/classifier_accuracy.py),
    # but a broken model, loss or data path stays near chance (10%).
    result = brief_mnist_classifier
    assert result['test_accuracy'] > 0.85, result
    from dcgan_tf import data

    images, labels = data.load_idx_split(mnist_dir, 'test')
    assert result['num_train'] == 4000 and result['num_test'] == len(labels)
    assert os.path.isfile(result['path'])
    with open(os.path.splitext(result['path'])[0] + '.json') as f:
        assert json.load(f)['test_accuracy'] == result['test_accuracy']
    # The saved model is a feature net: 256-d features, probabilities summing to 1.
    net = features.classifier_net('mnist', result['path'])
    vectors, probabilities = net(images[:64].astype(np.float32) / 127.5 - 1.0)
    assert vectors.shape == (64, 256)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    assert (probabilities.argmax(1) == labels[:64]).mean() > 0.8


def test_missing_classifier_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match='train_classifier'):
        classifier.load_feature_model(str(tmp_path / 'nope.keras'))
    with pytest.raises(ConfigError, match='--classifier_path'):
        validate(Config(mode='evaluate', feature_net='mnist'))
    with pytest.raises(ConfigError, match='mnist or fashion_mnist'):
        validate(Config(mode='train_classifier', dataset='embedded'))
