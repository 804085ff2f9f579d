"""GAN losses, per example, so the train step can average them over the global batch.

Each function returns a [batch] float32 vector; `tf.nn.compute_average_loss` then divides by the
global batch size, which keeps gradients independent of the number of replicas.
"""

from __future__ import annotations

import tensorflow as tf

from dcgan_tf.layers import latent_code


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


def info_loss(code_logits: tf.Tensor, codes: tf.Tensor) -> tf.Tensor:
    """Cross-entropy of D's reading of the categorical code against the code G was given, per example:
    the variational bound on their mutual information that InfoGAN maximises, up to a constant."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=codes, logits=tf.cast(code_logits, tf.float32)
    )


def split_info(
    outputs: tf.Tensor, z: tf.Tensor, info_code: int, weight: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """D's outputs on fakes of z -> (logits [B, 1], `weight` * info_loss per example, or 0).

    With --info_code D's last Dense gives 1 + N numbers: the logit, then its reading of the code (a linear
    head on D's features that shares all of D's convolutions, as InfoGAN's Q does).
    """
    if not info_code:
        return outputs, tf.constant(0.0)
    return outputs[:, :1], weight * info_loss(outputs[:, 1:], latent_code.codes_of(z, info_code))
