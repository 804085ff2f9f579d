"""The Trainer: models, optimizers and checkpoint built in `strategy.scope()`, and the distributed step.

The step follows tf.distribute's custom-loop recipe: a per-replica function run by `strategy.run`,
losses per example averaged over the GLOBAL batch, gradients summed across replicas by the optimizer,
several steps per `tf.function` call. Everything with a side effect (summaries, grids, checkpoints)
happens between calls, in the loop of train.py.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf import augment as augment_lib
from dcgan_tf import data, distribute, losses, models, replica_xla
from dcgan_tf import workdir as workdir_lib
from dcgan_tf.config import Config, ConfigError, parse_augment_policy
from dcgan_tf.layers import latent_code
from dcgan_tf.workdir import checkpoints as workdir_checkpoints

# d_real/d_fake: D's mean probability on real and fake images; d_acc_*: the share it classifies right
# (logit sign), which people read more easily than a loss.
METRIC_KEYS = ('d_loss', 'g_loss', 'd_real', 'd_fake', 'd_acc_real', 'd_acc_fake')


def _unchanged(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    del seed
    return images


def _build_optimizer(
    cfg: Config, learning_rate: float, variables: list, precision: str
) -> keras.optimizers.Optimizer:
    optimizer = keras.optimizers.Adam(learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2)
    if precision == 'mixed_float16':
        # float16 gradients underflow without a loss scale; bfloat16 has float32's range.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    # Slots exist before a restore, so a checkpoint loads at once rather than on first apply.
    optimizer.build(variables)
    return optimizer


def _seed_states(*models_: keras.Model) -> list[tf.Variable]:
    return [v.value for m in models_ for v in m.variables if 'seed_generator_state' in v.path]


def _build_ema_generator(cfg: Config, generator: keras.Model) -> keras.Model:
    ema_generator = models.build_generator(cfg)
    ema_generator.set_weights(generator.get_weights())  # The average starts at the initial weights.
    return ema_generator


def _average_moving_statistics(context: tf.distribute.ReplicaContext, *models_: keras.Model) -> None:
    """Per-replica BatchNorm: makes every replica's moving mean/variance their mean over replicas.

    Each replica updates its own copy from its slice of the batch; left alone the copies (and the
    workers of a multi-worker job) drift apart, and a checkpoint or export keeps only replica 0's.
    """
    stats = [v.value for m in models_ for v in m.non_trainable_variables if 'moving_' in v.path]
    local = []
    for var in stats:
        # Placed explicitly: the all-reduce sends each value back to its tensor's device, and a
        # one-device-per-host MultiWorkerMirroredStrategy leaves unplaced reads without one.
        with tf.device(var.device):
            local.append(tf.identity(var))
    if local:
        for var, mean in zip(stats, context.all_reduce(tf.distribute.ReduceOp.MEAN, local), strict=True):
            var.assign(mean)


def lr_factor(cfg: Config, step: tf.Tensor | int, total_steps: int) -> tf.Tensor:
    """The share of the peak learning rates in force for the update of `step` (counted from 0).

    --lr_decay=linear: 1 until --lr_decay_start of the run, then down in equal steps to 1/(steps left at the
    start) at the last update, so every update moves the weights and a longer run just decays later.
    """
    if cfg.lr_decay == 'none':
        return tf.constant(1.0)
    start = round(cfg.lr_decay_start * total_steps)
    steps_left = tf.cast(total_steps - tf.cast(step, tf.int64), tf.float32)
    return tf.clip_by_value(steps_left / max(total_steps - start, 1), 0.0, 1.0)


def fixed_noise(cfg: Config, num: int) -> tf.Tensor:
    """The same z every time for this seed: the sample grids show one set of images evolving."""
    return tf.random.stateless_normal([num, cfg.z_dim], seed=[cfg.seed, 7919])


def grid_columns(num: int) -> int:
    """Columns of a conditional grid of about `num` images: the side of the unconditional square."""
    return max(1, round(num**0.5))


def fixed_inputs(cfg: Config, num: int) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(z, one-hot classes or None) of the sample grids.

    A conditional grid has one row per class, every row the same z's: a column keeps its style and a
    row its class. An --info_code grid has one row per code, the same z's with their first entries
    reordered to carry it.
    """
    rows = grid_rows(cfg)
    if rows is None:
        return fixed_noise(cfg, num), None
    columns = grid_columns(num)
    z = tf.tile(fixed_noise(cfg, columns), [rows, 1])
    labels = tf.repeat(tf.range(rows), columns)
    if not cfg.conditional:
        return latent_code.with_codes(z, labels, cfg.info_code), None
    return z, tf.one_hot(labels, cfg.num_classes)


def grid_rows(cfg: Config) -> int | None:
    """Rows of the sample grids: one per class or code (None: a square of fixed z's)."""
    return cfg.num_classes if cfg.conditional else cfg.info_code or None


class Trainer:
    """Owns the mutable training state, built inside `strategy.scope()`, restored on construction.

    Args:
      cfg: the run's Config.
      workdir: run directory; checkpoints go to `<workdir>/checkpoints`.
      strategy: defaults to `distribute.create_strategy(cfg)`.
      source: the training data; defaults to `data.load_source(cfg)`.
    """

    def __init__(
        self,
        cfg: Config,
        workdir: str,
        *,
        strategy: tf.distribute.Strategy | None = None,
        source: data.Source | None = None,
    ):
        self.workdir = workdir
        self.precision = distribute.resolve_precision(cfg)
        self.strategy = strategy or distribute.create_strategy(cfg)
        self.source = source or data.load_source(cfg)
        # A conditional pair is as wide as the data set has classes (--num_classes 0).
        self.cfg = cfg = data.resolve_classes(cfg, self.source)
        self.num_replicas = self.strategy.num_replicas_in_sync
        if cfg.batch_size % self.num_replicas:
            raise ConfigError(
                f'--batch_size ({cfg.batch_size}) must be divisible by the number '
                f'of replicas ({self.num_replicas}).'
            )
        self.total_steps = cfg.train_steps or data.steps_for_epochs(
            cfg.epochs, self.source.num_examples, cfg.batch_size
        )
        self._build_state()
        self.checkpoint = tf.train.Checkpoint(**self._parts, peak_rates=self.peak_rates)
        self.is_chief = distribute.is_chief(self.strategy)
        self.checkpoint_dir = workdir_lib.checkpoint_dir(workdir)
        # Before the manager exists: it reads checkpoints/checkpoint, which a fallback rewrites.
        self.restored_from = self.restore()
        self.manager = self._checkpoint_manager()
        policy = parse_augment_policy(cfg.augment_policy) if cfg.augment == 'diffaugment' else ()
        self.augment = functools.partial(augment_lib.diff_augment, policy=policy) if policy else _unchanged
        self.use_jit = distribute.use_jit(cfg, self.strategy)
        self._compiled_updates = None
        self._replica_step_fn, self._train_fn = self._step_functions()
        self._iterator = None
        self.stopped_by: str | None = None  # The signal that ended train_and_evaluate early, if any.
        self._agree_fn = None
        self.evaluator = None  # The periodic evaluator of train_and_evaluate (--eval_every), if any.

    # --- construction ---

    def _build_state(self) -> None:
        """The models, optimizers, step counter and noise source, and `_parts`, what a checkpoint holds."""
        cfg = self.cfg
        # Its own step counter: two optimizers, so neither's `iterations` is "the" step. A plain
        # host variable outside the strategy's scope (only updated in cross-replica context), so
        # int(step) works under every strategy and its checkpoint is the same under all of them.
        with tf.device('/cpu:0'):
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
            # The rates before --lr_decay, halved by a rollback; each optimizer's own rate variable is the
            # one in force (peak * lr_factor), set before every update, so a resumed run goes on at the
            # same rate and TensorBoard shows the current one.
            self.peak_rates = {
                name: tf.Variable(rate, dtype=tf.float32, trainable=False, name=f'{name}_peak_lr')
                for name, rate in (('g', cfg.g_lr), ('d', cfg.d_lr))
            }
        # The precision reaches the models' layers only: Keras' global policy is as it was afterwards.
        with self.strategy.scope(), distribute.dtype_policy(self.precision):
            self.generator = models.build_generator(cfg)
            self.discriminator = models.build_discriminator(cfg)
            self.g_optimizer = _build_optimizer(
                cfg, cfg.g_lr, self.generator.trainable_variables, self.precision
            )
            self.d_optimizer = _build_optimizer(
                cfg, cfg.d_lr, self.discriminator.trainable_variables, self.precision
            )
            # The noise source, checkpointed: one seed per step is drawn from it in cross-replica
            # context and every replica takes its own slice of that step's global z (_replica_step).
            self.rng = tf.random.Generator.from_seed(cfg.seed)
            # A moving average of G's weights samples better than the last iterate (the export's default).
            self.ema_generator = _build_ema_generator(cfg, self.generator) if cfg.ema_decay > 0 else None
        self._parts = dict(
            generator=self.generator,
            discriminator=self.discriminator,
            g_optimizer=self.g_optimizer,
            d_optimizer=self.d_optimizer,
            step=self.step,
            rng=self.rng,
            # Keras leaves the seed state of Dropout layers (the tutorial's D) out of the models'
            # checkpoint; without it a resumed run would drop other units than an unbroken one.
            layer_seeds=_seed_states(self.generator, self.discriminator),
        )
        if self.ema_generator is not None:
            self._parts['ema_generator'] = self.ema_generator

    def _checkpoint_manager(self) -> tf.train.CheckpointManager:
        # Every task restores from the chief's checkpoints (a shared workdir, e.g. gs://); the others
        # must save too (collectives) but into a local scratch folder, as in TF's multi-worker guide.
        directory = self.checkpoint_dir if self.is_chief else distribute.worker_scratch_dir(self.strategy)
        return tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=self.cfg.keep_checkpoints, step_counter=self.step
        )

    def _step_functions(self):
        """(the replica step, XLA-compiled where it pays; the multi-step call, a tf.function unless eager).

        Graph mode is decided once, here, not by rebinding methods later.
        """
        cfg = self.cfg
        compile_here = self.use_jit and not (
            cfg.run_eagerly or isinstance(self.strategy, tf.distribute.TPUStrategy)
        )
        several = self.num_replicas > 1
        replica_step = self._replica_step
        if compile_here and not several:
            replica_step = tf.function(self._replica_step, jit_compile=True)
        elif compile_here:
            # Several replicas: XLA compiles each replica's gradients, and the updates stay outside.
            self._compiled_updates = replica_xla.CompiledReplicaStep(
                self.generator,
                self.discriminator,
                self.d_optimizer,
                self.g_optimizer,
                cfg.batch_size,
                alternating=cfg.update == 'alternating',
                augment=self.augment,
                info=(cfg.info_code, cfg.info_weight),
            )
        train_fn = self._train_steps if cfg.run_eagerly else tf.function(self._train_steps)
        return replica_step, train_fn

    # --- state ---

    def _optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        return {'g': self.g_optimizer, 'd': self.d_optimizer}

    def _restore_from(self, prefix: str) -> None:
        """Restores one checkpoint; raises (workdir.restore_newest tells the reasons apart) if it cannot."""
        status = tf.train.Checkpoint(**self._parts).restore(prefix).assert_existing_objects_matched()
        status.expect_partial()  # Values of parts this run lacks (an EMA with --ema_decay=0) are fine.
        if 'peak_rates' in workdir_checkpoints.checkpoint_objects(prefix):
            # expect_partial: the rest of the checkpoint is restored above, not by this object.
            tf.train.Checkpoint(peak_rates=self.peak_rates).restore(prefix).expect_partial()
        else:
            # Written before --lr_decay existed: the rates were constant, so the ones in force are the peaks.
            for name, optimizer in self._optimizers().items():
                self.peak_rates[name].assign(optimizer.learning_rate)
        self._set_learning_rates()

    def _set_learning_rates(self) -> None:
        """Each optimizer's rate <- its peak rate * lr_factor of the next update (cross-replica context)."""
        factor = lr_factor(self.cfg, self.step, self.total_steps)
        for name, optimizer in self._optimizers().items():
            optimizer.learning_rate.assign(self.peak_rates[name] * factor)

    def set_peak_rate(self, name: str, rate: float) -> None:
        """Replaces the peak learning rate of 'g' or 'd' (what --lr_decay and a rollback start from)."""
        self.peak_rates[name].assign(rate)
        self._set_learning_rates()

    def restore(self) -> str | None:
        """Restores the newest checkpoint that restores, if any; returns its path.

        A damaged latest checkpoint falls back to the one before, with a warning, and the chief points
        checkpoints/checkpoint at the one restored so the manager goes on from it. A checkpoint of another
        model, or checkpoints none of which restores, raise ConfigError with nothing changed.
        """
        restored, fallback = workdir_checkpoints.restore_newest(
            self.checkpoint_dir, self._restore_from, self.workdir
        )
        if restored is None:
            return None
        if self.is_chief:
            if fallback:
                workdir_checkpoints.write_checkpoint_state(self.checkpoint_dir, restored)
            workdir_checkpoints.remove_unfinished_saves(self.checkpoint_dir)
        logging.info('Resumed from %s at step %d.', restored, int(self.step))
        return restored

    def save(self) -> str:
        return self.manager.save(checkpoint_number=self.step)

    def roll_back(self) -> str:
        """Restores the last good checkpoint with both learning rates halved (--on_nan=rollback)."""
        # Halve the peak rates of now, not the checkpoint's: a second rollback to the same
        # checkpoint must not undo the first one's halving. --lr_decay goes on from the halved peaks.
        peaks = {name: float(rate) * 0.5 for name, rate in self.peak_rates.items()}
        latest = self.manager.latest_checkpoint
        self._restore_from(latest)
        for name, rate in peaks.items():
            self.peak_rates[name].assign(rate)
        self._set_learning_rates()
        self._iterator = None  # Skips again to the restored step: the data order of an unbroken run.
        return latest

    def dataset_fn(self, input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        return data.make_dataset(self.cfg, self.source, input_context, start_step=int(self.step))

    def iterator(self):
        """The distributed iterator, positioned after the batches already trained on."""
        if self._iterator is None:
            dataset = self.strategy.distribute_datasets_from_function(self.dataset_fn)
            self._iterator = iter(dataset)
        return self._iterator

    # --- the step ---

    def _replica_step(self, batch, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """One D and one G update on this replica's slice of the global batch (images, or images and
        labels for a conditional pair: the fakes are drawn for the real images' classes)."""
        global_batch = self.cfg.batch_size
        context = tf.distribute.get_replica_context()
        real, classes = batch, None
        if self.cfg.conditional:
            real, labels = batch
            classes = tf.one_hot(labels, self.cfg.num_classes)
        z = self._replica_noise(seed)
        updates = self._updates if self._compiled_updates is None else self._compiled_updates
        # The augmentations' seed: the step's, folded with the replica's index (each has its own images).
        aug_seed = tf.random.experimental.stateless_fold_in(
            seed, context.replica_id_in_sync_group, alg=augment_lib.ALG
        )
        d_loss, g_loss, real_logits, fake_logits = updates(real, z, aug_seed, classes)
        if context.num_replicas_in_sync > 1 and not self.cfg.sync_bn:
            _average_moving_statistics(context, self.generator, self.discriminator)
        # Divided by the global batch, so the SUM over replicas is the global mean.
        return {
            'd_loss': d_loss,
            'g_loss': g_loss,
            'd_real': tf.reduce_sum(tf.sigmoid(tf.cast(real_logits, tf.float32))) / global_batch,
            'd_fake': tf.reduce_sum(tf.sigmoid(tf.cast(fake_logits, tf.float32))) / global_batch,
            'd_acc_real': tf.reduce_sum(tf.cast(real_logits > 0, tf.float32)) / global_batch,
            'd_acc_fake': tf.reduce_sum(tf.cast(fake_logits < 0, tf.float32)) / global_batch,
        }

    def _replica_noise(self, seed: tf.Tensor) -> tf.Tensor:
        """This replica's rows of the step's z."""
        context = tf.distribute.get_replica_context()
        # Every replica draws the step's whole z from one seed and keeps row block `replica_id`:
        # no two replicas share noise, and the global batch's z does not depend on the replica
        # count, just as replica r's images are slice r of the global batch (the data pipeline
        # deals consecutive per-replica batches in order). Drawing B x z_dim normals is negligible.
        all_z = tf.random.stateless_normal([self.cfg.batch_size, self.cfg.z_dim], seed=seed)
        return tf.reshape(all_z, [context.num_replicas_in_sync, -1, self.cfg.z_dim])[
            context.replica_id_in_sync_group
        ]

    def _updates(
        self, real: tf.Tensor, z: tf.Tensor, aug_seed: tf.Tensor, classes: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Both updates on this replica; returns (d_loss, g_loss, real_logits, fake_logits)."""
        augment_seeds = tf.random.experimental.stateless_split(aug_seed, 3, alg=augment_lib.ALG)

        def d_input(images: tf.Tensor, seed: tf.Tensor):
            images = self.augment(images, seed)  # Every image D sees, real or fake, by its own seed.
            return images if classes is None else [images, classes]

        global_batch = self.cfg.batch_size
        alternating = self.cfg.update == 'alternating'

        def discriminate(images: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            # (logits, the per-example --info_code loss, which only a fake's means anything).
            outputs = self.discriminator(d_input(images, seed), training=True)
            return losses.split_info(outputs, z, self.cfg.info_code, self.cfg.info_weight)

        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = self.generator(z if classes is None else [z, classes], training=True)
            # Separate D calls for real and fake: each BatchNorm call sees one kind only,
            # as in the paper's code (mixing them lets D tell them apart by batch statistics).
            real_logits, _ = discriminate(real, augment_seeds[0])
            # Alternating: D's tape need not reach into G (its gradient comes from a second D call).
            d_fake = tf.stop_gradient(fake) if alternating else fake
            fake_logits, d_info = discriminate(d_fake, augment_seeds[1])
            d_loss = tf.nn.compute_average_loss(
                losses.discriminator_loss(real_logits, fake_logits) + d_info, global_batch_size=global_batch
            )
            d_loss_scaled = self._scale(self.d_optimizer, d_loss)
            d_vars = self.discriminator.trainable_variables
            if alternating:
                # The paper's Algorithm 1 (and pytorch/examples): D steps first, then G is scored by the
                # updated D on the same fakes; one more D forward pass per step.
                self.d_optimizer.apply(d_tape.gradient(d_loss_scaled, d_vars), d_vars)
                g_logits, g_info = discriminate(fake, augment_seeds[2])
            else:
                g_logits, g_info = fake_logits, d_info
            g_loss = tf.nn.compute_average_loss(
                losses.generator_loss(g_logits) + g_info, global_batch_size=global_batch
            )
            g_loss_scaled = self._scale(self.g_optimizer, g_loss)
        g_vars = self.generator.trainable_variables
        if not alternating:
            # Both gradients come from the same forward pass (the tutorial's simultaneous update).
            self.d_optimizer.apply(d_tape.gradient(d_loss_scaled, d_vars), d_vars)
        self.g_optimizer.apply(g_tape.gradient(g_loss_scaled, g_vars), g_vars)
        return d_loss, g_loss, real_logits, fake_logits

    @staticmethod
    def _scale(optimizer: keras.optimizers.Optimizer, loss: tf.Tensor) -> tf.Tensor:
        # float16 gradients underflow without the loss scale; other precisions pass the loss through.
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer.scale_loss(loss)
        return loss

    def _train_steps(self, iterator, num_steps: tf.Tensor) -> dict[str, tf.Tensor]:
        """`num_steps` steps in one call (a Tensor, so other counts do not retrace); mean metrics."""
        totals = {k: tf.constant(0.0) for k in METRIC_KEYS}
        for _ in tf.range(num_steps):
            # Cross-replica context: the checkpointed generator advances once per step, whatever
            # the number of replicas, so its state after N steps is the same under any strategy.
            seed = self.rng.make_seeds(1)[:, 0]
            if self.cfg.lr_decay != 'none':
                self._set_learning_rates()
            per_replica = self.strategy.run(self._replica_step_fn, args=(next(iterator), seed))
            # Rebinding (not item assignment) keeps `totals` a loop variable for AutoGraph.
            totals = {
                k: totals[k] + self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None)
                for k in METRIC_KEYS
            }
            self.step.assign_add(1)
            self._update_ema()
        return {k: v / tf.cast(num_steps, tf.float32) for k, v in totals.items()}

    def _update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * weights after each G update; BatchNorm statistics are copied."""
        if self.ema_generator is None:
            return
        # Cross-replica context: one assign updates every replica's copy. The warm-up (as in
        # tf.train.ExponentialMovingAverage's num_updates) keeps short runs from averaging in the init.
        step = tf.cast(self.step, tf.float32)
        decay = tf.minimum(self.cfg.ema_decay, (1.0 + step) / (self.cfg.ema_warmup + step))
        ema_model, model = self.ema_generator, self.generator
        for ema, weight in zip(ema_model.trainable_variables, model.trainable_variables, strict=True):
            ema.assign(weight + decay * (ema - weight))
        for ema, stat in zip(ema_model.non_trainable_variables, model.non_trainable_variables, strict=True):
            ema.assign(stat)

    def train_steps(self, num_steps: int) -> dict[str, float]:
        """Runs `num_steps` steps; returns their mean metrics as Python floats."""
        result = self._train_fn(self.iterator(), tf.constant(num_steps, tf.int32))
        return {k: float(v) for k, v in result.items()}

    def agree_to_stop(self, requested: bool) -> bool:
        """Whether any worker of the job asks to stop now (this one's answer where it trains alone).

        A signal reaches one worker of a multi-worker job (a preempted VM, a killed process); were it to
        stop alone, the others would wait forever in their next collective. So every worker shares its
        answer after each call, in one all-reduce, and all of them checkpoint the same step and stop.
        """
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return requested
        if self._agree_fn is None:
            self._agree_fn = tf.function(self._any_worker)
        return bool(self._agree_fn(tf.constant(float(requested))) > 0)

    def _any_worker(self, requested: tf.Tensor) -> tf.Tensor:
        # The step counter's device: the all-reduce returns each value to its tensor's device, and a
        # one-device-per-host MultiWorkerMirroredStrategy leaves an unplaced constant without one.
        with tf.device(self.step.device):
            flag = tf.identity(requested)
        per_replica = self.strategy.run(tf.identity, args=(flag,))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def generate(self, z: tf.Tensor, classes: tf.Tensor | None = None, ema: bool = False) -> np.ndarray:
        """Images in [-1, 1] for z (and one-hot classes of a conditional G), with BatchNorm in inference
        mode (moving statistics); `ema`: the moving-average generator's."""
        model = self.ema_generator if ema else self.generator
        return model(z if classes is None else [z, classes], training=False).numpy()

    def num_params(self) -> tuple[int, int]:
        return self.generator.count_params(), self.discriminator.count_params()
