"""Guided backpropagation (Springenberg et al., 2015) through a discriminator with LeakyReLU, as in the
paper's Fig. 5: which input pixels make one feature of D's last convolution respond.

Guided backpropagation passes a gradient back through a rectifier only where both the forward input and
the gradient arriving from above are positive. Libraries implement it for ReLU only; for LeakyReLU(a) the
same rule keeps the layer's own slope: d_in = max(d_out, 0) * (1 if x > 0 else a), so a = 0 is the
original rule. Everything else in D (convolutions, inference-mode BatchNorm) is linear and backpropagates
as usual.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

BATCH = 256


def guided_leaky_relu(x: tf.Tensor, slope: float) -> tf.Tensor:
    """LeakyReLU forward; guided gradient backward: max(dy, 0) * (1 where x > 0, else slope)."""

    @tf.custom_gradient
    def forward(x):
        def grad(dy):
            return tf.nn.relu(dy) * tf.where(x > 0, tf.ones_like(x), tf.fill(tf.shape(x), slope))

        return tf.nn.leaky_relu(x, slope), grad

    return forward(x)


def feature_layers(discriminator) -> list[str]:
    """Names of D's rectified convolution outputs (the LeakyReLU layers with 4-D outputs), input first."""
    return [
        layer.name
        for layer in discriminator.layers
        if isinstance(layer, (keras.layers.LeakyReLU, keras.layers.ReLU)) and len(layer.output.shape) == 4
    ]


def forward_to(discriminator, images: tf.Tensor, layer_name: str, guided: bool = False) -> tf.Tensor:
    """D's activations at `layer_name` for float images in [-1, 1] (BatchNorm with its moving statistics);
    with `guided`, every rectifier on the way gets the guided gradient."""
    x = images
    for layer in discriminator.layers:
        if guided and isinstance(layer, (keras.layers.LeakyReLU, keras.layers.ReLU)):
            x = guided_leaky_relu(x, float(layer.negative_slope))
        else:
            x = layer(x, training=False)
        if layer.name == layer_name:
            return x
    raise ValueError(f'{discriminator.name} has no layer {layer_name}')


def spatial_maxima(discriminator, images: np.ndarray, layer_name: str) -> np.ndarray:
    """Each feature's strongest response per image: [N, channels] for float images [N, H, W, C]."""
    parts = [
        tf.reduce_max(forward_to(discriminator, tf.constant(images[i : i + BATCH]), layer_name), axis=[1, 2])
        for i in range(0, len(images), BATCH)
    ]
    return np.concatenate([p.numpy() for p in parts])


def most_active(responses: np.ndarray, num_features: int, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(features [F], images [F, K]): the F features whose K strongest images respond most, and those
    images in decreasing order, from `responses` [N, channels] (spatial_maxima)."""
    top_images = np.argsort(-responses, axis=0)[:num_images]  # [K, channels]
    strength = np.take_along_axis(responses, top_images, axis=0).mean(axis=0)
    features = np.argsort(-strength)[:num_features]
    return features, top_images[:, features].T


def guided_maps(discriminator, images: np.ndarray, layer_name: str, feature: int) -> np.ndarray:
    """d (feature's strongest unit) / d image under guided backpropagation: float32 [N, H, W, C].

    For each image, the unit of channel `feature` that responds most (its axis-aligned maximal
    response, as the paper visualises) is the one traced back to the pixels.
    """
    x = tf.constant(images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        channel = forward_to(discriminator, x, layer_name, guided=True)[..., feature]
        strongest = tf.reduce_max(tf.reshape(channel, [tf.shape(channel)[0], -1]), axis=1)
    return tape.gradient(strongest, x).numpy()  # A vector target: the sum of its gradients.


def coherence(maps: np.ndarray) -> np.ndarray:
    """Per map, the correlation of each pixel with its right and lower neighbours (lag-1 spatial
    autocorrelation) over the pixels the map reaches: near 0 for pixel noise, higher for strokes. [N]."""
    values = []
    for m in maps.astype(np.float64).mean(axis=-1):
        a = np.concatenate([m[:-1].ravel(), m[:, :-1].ravel()])
        b = np.concatenate([m[1:].ravel(), m[:, 1:].ravel()])
        reached = (a != 0) | (b != 0)
        a, b = a[reached] - a[reached].mean(), b[reached] - b[reached].mean()
        values.append(float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-30)))
    return np.array(values)


def to_picture(maps: np.ndarray) -> np.ndarray:
    """Guided gradients [N, H, W, C] -> uint8 for viewing: mid-grey 0, each map scaled by its own
    largest magnitude (positive bright, negative dark)."""
    scale = np.abs(maps).reshape(len(maps), -1).max(axis=1)
    scaled = maps / np.maximum(scale, 1e-30)[:, None, None, None]
    return np.clip(np.round(127.5 + 127.5 * scaled), 0, 255).astype(np.uint8)
