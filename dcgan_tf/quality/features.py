"""Feature networks of the quality metrics: InceptionV3, or the project's MNIST / Fashion-MNIST classifier.

Each maps [-1, 1] images to (features for the distances, class probabilities for the score or None).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dcgan_tf.config import Config, ConfigError
from dcgan_tf.paths import error_text
from dcgan_tf.quality import classifier
from dcgan_tf.quality.metrics import FeatureStats

INCEPTION_SIZE = 299


@dataclasses.dataclass
class FeatureNet:
    """images [N, H, W, C] float32 in [-1, 1] -> (features [N, D], class probabilities [N, K] or None)."""

    name: str
    resizer: str
    fn: Callable[[Any], tuple[Any, Any]]

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        features, probabilities = self.fn(images)
        return np.asarray(features), None if probabilities is None else np.asarray(probabilities)


def _load_weights(model: keras.Model, weights: str) -> None:
    try:
        model.load_weights(weights)
    except Exception as e:  # noqa: BLE001 - h5py, Keras and zip errors alike: the file is not these weights.
        raise ConfigError(
            f'--inception_weights={weights} cannot be loaded into InceptionV3 ({error_text(e)}); give '
            f"Keras' inception_v3_weights_tf_dim_ordering_tf_kernels(_notop).h5."
        ) from None


def _inception_model(weights: str):
    notop = weights not in ('imagenet', 'none') and 'notop' in os.path.basename(weights)
    if weights == 'imagenet':
        try:
            model = keras.applications.InceptionV3(weights='imagenet')
        except Exception as e:  # Keras raises URL/OS/HTTP errors of several kinds offline.
            raise ConfigError(
                f'Could not get the ImageNet InceptionV3 weights ({type(e).__name__}); on a machine without '
                f'internet download inception_v3_weights_tf_dim_ordering_tf_kernels.h5 elsewhere and pass it '
                f'as --inception_weights=FILE.'
            ) from e
    elif notop:
        model = keras.applications.InceptionV3(include_top=False, weights=None, pooling='avg')
        _load_weights(model, weights)
        return model, False
    else:
        model = keras.applications.InceptionV3(weights=None)
        if weights != 'none':
            _load_weights(model, weights)
    # The 2048-d pool features for the distances and the 1000-way softmax for score and coverage.
    return keras.Model(model.inputs, [model.get_layer('avg_pool').output, model.output]), True


def inception_net(weights: str = 'imagenet') -> FeatureNet:
    """InceptionV3's pool features at 299x299 (grey repeated to RGB; [-1, 1] is its own input range)."""
    model, has_top = _inception_model(weights)

    @tf.function(reduce_retracing=True)
    def fn(images):
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape[-1] == 1:
            images = tf.repeat(images, 3, axis=-1)
        images = tf.image.resize(images, [INCEPTION_SIZE, INCEPTION_SIZE], method='bilinear')
        outputs = model(images, training=False)
        return (outputs[0], outputs[1]) if has_top else (outputs, None)

    return FeatureNet('inception', f'bilinear to {INCEPTION_SIZE}x{INCEPTION_SIZE}, grey as RGB', fn)


def classifier_net(name: str, path: str) -> FeatureNet:
    """The project's MNIST / Fashion-MNIST classifier: 256-d penultimate features and its softmax."""
    model = classifier.load_feature_model(path)

    @tf.function(reduce_retracing=True)
    def fn(images):
        return model(classifier.to_classifier_input(images), training=False)

    return FeatureNet(name, 'none at 28x28 (else bilinear to 28x28, grey by channel mean)', fn)


def build_feature_net(cfg: Config) -> FeatureNet:
    """The --feature_net of the config."""
    if cfg.feature_net == 'inception':
        return inception_net(cfg.inception_weights)
    return classifier_net(cfg.feature_net, cfg.classifier_path)


def accumulate(net: FeatureNet, batches: Iterator, seed: int = 0) -> FeatureStats:
    """Feeds batches of [-1, 1] images, or (images, requested labels) pairs, through the net into a
    FeatureStats."""
    stats = FeatureStats(seed)
    for batch in batches:
        images, labels = batch if isinstance(batch, tuple) else (batch, None)
        stats.update(*net(images), labels)
    return stats
