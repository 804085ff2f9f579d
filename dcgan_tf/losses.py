"""GAN losses, per example, so the train step can average them over the global batch.

Each function returns a [batch] float32 vector; `tf.nn.compute_average_loss` then divides by the
global batch size, which keeps gradients independent of the number of replicas.
"""

from __future__ import annotations

import tensorflow as tf


def _bce_from_logits(logits: tf.Tensor, label: float) -> tf.Tensor:
    logits = tf.cast(tf.reshape(logits, [-1]), tf.float32)
    # From logits, not from a sigmoid: the fused form stays finite when D is very sure.
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), label), logits=logits)


def discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """-log D(x) - log(1 - D(G(z))), per example; real and fake come from separate D calls."""
    return _bce_from_logits(real_logits, 1.0) + _bce_from_logits(fake_logits, 0.0)


def generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """Non-saturating G loss, -log D(G(z)): strong gradients early, when D rejects every fake."""
    return _bce_from_logits(fake_logits, 1.0)
