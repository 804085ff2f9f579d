"""InfoGAN's categorical latent code (Chen et al. 2016), read off z itself (`--info_code`).

The code of a sample is the index of the largest of z's first K entries: uniform over the K values
when z is standard normal, and a function of z alone, so the generator keeps its one input and every
tool that feeds it z (sampling, walks, arithmetic, the export's signatures) works unchanged. The
generator sees z and the code's one-hot vector; the discriminator learns to tell the code back from the
image, and the generator is rewarded when it can, which sorts the samples into K distinct kinds.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def codes_of(z: tf.Tensor, num_codes: int) -> tf.Tensor:
    """int32 [B]: the categorical code each row of z carries (argmax of its first `num_codes`)."""
    return tf.argmax(z[:, :num_codes], axis=-1, output_type=tf.int32)


def with_codes(z: tf.Tensor, codes: tf.Tensor, num_codes: int) -> tf.Tensor:
    """z whose rows carry `codes`: in each row the entry at the code swaps places with the largest of the
    first `num_codes`, so the row keeps its values in another order (a standard normal row becomes one
    drawn given that code)."""
    head = z[:, :num_codes]
    current = codes_of(z, num_codes)[:, None]
    wanted = tf.cast(codes, tf.int32)[:, None]
    index = tf.range(num_codes)[None]
    order = tf.where(index == current, wanted, tf.where(index == wanted, current, index))
    return tf.concat([tf.gather(head, order, batch_dims=1), z[:, num_codes:]], axis=-1)


@keras.saving.register_keras_serializable(package='dcgan_tf')
class CategoricalCode(keras.layers.Layer):
    """z [B, D] -> [z, one_hot(code)] [B, D + num_codes]; no weights."""

    def __init__(self, num_codes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_codes = num_codes

    def call(self, z):
        one_hot = tf.one_hot(codes_of(z, self.num_codes), self.num_codes, dtype=z.dtype)
        return tf.concat([z, one_hot], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.num_codes)

    def get_config(self):
        return {**super().get_config(), 'num_codes': self.num_codes}
