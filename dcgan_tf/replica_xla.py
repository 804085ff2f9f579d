"""The train step's per-replica work compiled with XLA, for strategies with several replicas.

XLA cannot compile a step that touches mirrored variables under `strategy.run` with several replicas
(tensorflow#53140): the compiled function reads other replicas' copies. So here XLA compiles a pure
function of the variables' current values, built with Keras' `stateless_call`: G's and D's forward passes,
the losses and the gradients, the bulk of the work. The all-reduce of the gradients (inside each
optimizer's `apply`), the updates and the BatchNorm statistics' assigns stay outside, where
tf.distribute handles them as in the uncompiled step. The maths is the uncompiled step's.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from dcgan_tf import augment, losses


def _values(variables: list) -> list[tf.Tensor]:
    # This replica's copy of each variable, as a tensor on its device.
    return [tf.identity(v.value) for v in variables]


def _assign(variables: list, values: list[tf.Tensor]) -> None:
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def _loss_scale(optimizer: keras.optimizers.Optimizer) -> tf.Tensor:
    """The factor the optimizer's loss scale multiplies a loss by (1 without loss scaling)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
    return tf.constant(1.0)


class CompiledReplicaStep:
    """Callable(real, z, aug_seed) -> losses and logits: one D and one G update on this replica.

    Args:
      generator, discriminator: the trainer's models (built in the strategy's scope).
      d_optimizer, g_optimizer: their optimizers; `apply` all-reduces the gradients over replicas.
      global_batch: the global batch size, which each replica's loss is divided by.
      alternating: the paper's update (D first, then G scored by the updated D) instead of both at once.
      augment: (images, seed) -> what D sees of them (the identity without augmentation).
      info: (--info_code, --info_weight): the categorical code D reads back from the fakes, if any.
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        d_optimizer: keras.optimizers.Optimizer,
        g_optimizer: keras.optimizers.Optimizer,
        global_batch: int,
        alternating: bool,
        augment: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
        info: tuple[int, float] = (0, 0.0),
    ):
        self.generator, self.discriminator = generator, discriminator
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.global_batch = global_batch
        self.alternating = alternating
        self.augment = augment
        self.info = info
        compiled = lambda fn: tf.function(fn, jit_compile=True, reduce_retracing=True)  # noqa: E731
        self._both_grads: Callable = compiled(self._both_gradients)
        self._d_grads: Callable = compiled(self._d_gradients)
        self._g_grads: Callable = compiled(self._g_gradients)

    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)

    def _d_call(self, d_tv, d_ntv, images, seed, classes, z):
        """(logits, the per-example --info_code loss or 0, D's new non-trainable values)."""
        images = self.augment(images, seed)
        inputs = images if classes is None else [images, classes]
        outputs, d_ntv = self.discriminator.stateless_call(d_tv, d_ntv, inputs, training=True)
        return *losses.split_info(outputs, z, *self.info), d_ntv

    def _g_call(self, g_tv, g_ntv, z, classes):
        inputs = z if classes is None else [z, classes]
        return self.generator.stateless_call(g_tv, g_ntv, inputs, training=True)

    def _forward(self, g_tv, g_ntv, d_tv, d_ntv, real, z, seeds, classes, fake_for_d=None):
        fake, g_ntv = self._g_call(g_tv, g_ntv, z, classes)
        # Separate D calls for real and fake, as in the uncompiled step.
        real_logits, _, d_ntv = self._d_call(d_tv, d_ntv, real, seeds[0], classes, z)
        fake_in = fake if fake_for_d is None else fake_for_d(fake)
        fake_logits, info, d_ntv = self._d_call(d_tv, d_ntv, fake_in, seeds[1], classes, z)
        d_loss = self._average(losses.discriminator_loss(real_logits, fake_logits) + info)
        return real_logits, fake_logits, info, d_loss, g_ntv, d_ntv

    def _both_gradients(self, g_tv, g_ntv, d_tv, d_ntv, real, z, seeds, classes, d_scale, g_scale):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(g_tv + d_tv)
            real_logits, fake_logits, info, d_loss, g_ntv, d_ntv = self._forward(
                g_tv, g_ntv, d_tv, d_ntv, real, z, seeds, classes
            )
            g_loss = self._average(losses.generator_loss(fake_logits) + info)
            d_scaled, g_scaled = d_loss * d_scale, g_loss * g_scale
        d_grads = tape.gradient(d_scaled, d_tv)
        g_grads = tape.gradient(g_scaled, g_tv)
        return d_grads, g_grads, g_ntv, d_ntv, d_loss, g_loss, real_logits, fake_logits

    def _d_gradients(self, g_tv, g_ntv, d_tv, d_ntv, real, z, seeds, classes, d_scale):
        with tf.GradientTape() as tape:
            tape.watch(d_tv)
            real_logits, fake_logits, _, d_loss, g_ntv, d_ntv = self._forward(
                g_tv, g_ntv, d_tv, d_ntv, real, z, seeds, classes, fake_for_d=tf.stop_gradient
            )
            d_scaled = d_loss * d_scale
        return tape.gradient(d_scaled, d_tv), g_ntv, d_ntv, d_loss, real_logits, fake_logits

    def _g_gradients(self, g_tv, g_ntv, d_tv, d_ntv, z, seed, classes, g_scale):
        # G's forward pass again (the first one's graph stayed in the other compiled function); its
        # BatchNorm statistics are the first pass's, so they advance once per step.
        with tf.GradientTape() as tape:
            tape.watch(g_tv)
            fake, _ = self._g_call(g_tv, g_ntv, z, classes)
            g_logits, info, d_ntv = self._d_call(d_tv, d_ntv, fake, seed, classes, z)
            g_loss = self._average(losses.generator_loss(g_logits) + info)
            g_scaled = g_loss * g_scale
        return tape.gradient(g_scaled, g_tv), d_ntv, g_loss

    def __call__(
        self, real: tf.Tensor, z: tf.Tensor, aug_seed: tf.Tensor, classes: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Returns (d_loss, g_loss, real_logits, fake_logits) of this replica, after both updates.

        `classes`: the one-hot classes of a conditional pair, the real images' and the fakes' alike.
        """
        seeds = tf.random.experimental.stateless_split(
            aug_seed, 3, alg=augment.ALG
        )  # As the uncompiled step splits it.
        g, d = self.generator, self.discriminator
        g_tv, g_ntv = _values(g.trainable_variables), _values(g.non_trainable_variables)
        d_tv, d_ntv = _values(d.trainable_variables), _values(d.non_trainable_variables)
        d_scale, g_scale = _loss_scale(self.d_optimizer), _loss_scale(self.g_optimizer)
        if self.alternating:
            d_grads, new_g_ntv, d_ntv, d_loss, real_logits, fake_logits = self._d_grads(
                g_tv, g_ntv, d_tv, d_ntv, real, z, seeds[:2], classes, d_scale
            )
            self.d_optimizer.apply(d_grads, d.trainable_variables)
            d_tv = _values(d.trainable_variables)
            g_grads, d_ntv, g_loss = self._g_grads(g_tv, g_ntv, d_tv, d_ntv, z, seeds[2], classes, g_scale)
            g_ntv = new_g_ntv
        else:
            d_grads, g_grads, g_ntv, d_ntv, d_loss, g_loss, real_logits, fake_logits = self._both_grads(
                g_tv, g_ntv, d_tv, d_ntv, real, z, seeds[:2], classes, d_scale, g_scale
            )
            self.d_optimizer.apply(d_grads, d.trainable_variables)
        self.g_optimizer.apply(g_grads, g.trainable_variables)
        _assign(g.non_trainable_variables, g_ntv)
        _assign(d.non_trainable_variables, d_ntv)
        return d_loss, g_loss, real_logits, fake_logits
