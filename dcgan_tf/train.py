"""Training: the Trainer (models, optimizers, checkpoint, distributed step) and the outer loop.

The step follows tf.distribute's custom-loop recipe: a per-replica function run by `strategy.run`,
losses per example averaged over the GLOBAL batch, gradients summed across replicas by the optimizer,
several steps per `tf.function` call. Everything with a side effect (summaries, grids, checkpoints)
happens between calls, in `train_and_evaluate`.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf import data, distribute, images, losses, models, safety
from dcgan_tf import export as export_lib
from dcgan_tf import workdir as workdir_lib
from dcgan_tf.config import Config, ConfigError, to_flagfile
from dcgan_tf.progress import Progress
from dcgan_tf.quality import evaluate
from dcgan_tf.workdir import checkpoints as workdir_checkpoints
from dcgan_tf.workdir import lock as workdir_lock

METRIC_KEYS = ('d_loss', 'g_loss', 'd_real', 'd_fake')


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


def fixed_noise(cfg: Config, num: int) -> tf.Tensor:
    """The same z every time for this seed: the sample grids show one set of images evolving."""
    return tf.random.stateless_normal([num, cfg.z_dim], seed=[cfg.seed, 7919])


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
        self.cfg = cfg
        self.workdir = workdir
        self.precision = distribute.resolve_precision(cfg)
        self.strategy = strategy or distribute.create_strategy(cfg)
        self.source = source or data.load_source(cfg)
        self.num_replicas = self.strategy.num_replicas_in_sync
        if cfg.batch_size % self.num_replicas:
            raise ConfigError(
                f'--batch_size ({cfg.batch_size}) must be divisible by the number '
                f'of replicas ({self.num_replicas}).'
            )
        self.total_steps = cfg.train_steps or data.steps_for_epochs(
            cfg.epochs, self.source.num_examples, cfg.batch_size
        )

        # Its own step counter: two optimizers, so neither's `iterations` is "the" step. A plain
        # host variable outside the strategy's scope (only updated in cross-replica context), so
        # int(step) works under every strategy and its checkpoint is the same under all of them.
        with tf.device('/cpu:0'):
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
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
        self.checkpoint = tf.train.Checkpoint(**self._parts)
        self.is_chief = distribute.is_chief(self.strategy)
        # Every task restores from the chief's checkpoints (a shared workdir, e.g. gs://); the others
        # must save too (collectives) but into a local scratch folder, as in TF's multi-worker guide.
        self.checkpoint_dir = workdir_lib.checkpoint_dir(workdir)
        # Before the manager exists: it reads checkpoints/checkpoint, which a fallback rewrites.
        self.restored_from = self.restore()
        checkpoint_dir = self.checkpoint_dir
        if not self.is_chief:
            checkpoint_dir = distribute.worker_scratch_dir(self.strategy)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, checkpoint_dir, max_to_keep=cfg.keep_checkpoints, step_counter=self.step
        )
        self.use_jit = distribute.use_jit(cfg, self.strategy)
        self._replica_step_fn = (
            self._replica_step
            if cfg.run_eagerly or not self.use_jit or isinstance(self.strategy, tf.distribute.TPUStrategy)
            else tf.function(self._replica_step, jit_compile=True)
        )
        # Graph mode is decided once, here (STYLE rule 10), not by rebinding methods later.
        self._train_fn = self._train_steps if cfg.run_eagerly else tf.function(self._train_steps)
        self._iterator = None
        self.stopped_by: str | None = None  # The signal that ended train_and_evaluate early, if any.
        self.evaluator = None  # The periodic evaluator of train_and_evaluate (--eval_every), if any.

    # --- state ---

    def _restore_from(self, prefix: str) -> None:
        """Restores one checkpoint; raises (workdir.restore_newest tells the reasons apart) if it cannot."""
        names = workdir_checkpoints.checkpoint_objects(prefix)
        parts = dict(self._parts)
        # A run checkpointed before the EMA existed resumes too: its average starts at the restored weights.
        ema_later = self.ema_generator is not None and 'ema_generator' not in names
        if ema_later:
            del parts['ema_generator']
        status = tf.train.Checkpoint(**parts).restore(prefix).assert_existing_objects_matched()
        status.expect_partial()  # Values of parts this run lacks (an EMA with --ema_decay=0) are fine.
        if ema_later:
            self.ema_generator.set_weights(self.generator.get_weights())

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
        # Halve the rates in force now, not the checkpoint's: a second rollback to the same
        # checkpoint must not undo the first one's halving.
        rates = [float(o.learning_rate) * 0.5 for o in (self.g_optimizer, self.d_optimizer)]
        latest = self.manager.latest_checkpoint
        self._restore_from(latest)
        self.g_optimizer.learning_rate, self.d_optimizer.learning_rate = rates
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

    def _replica_step(self, real: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """One D and one G update on this replica's slice of the global batch."""
        global_batch = self.cfg.batch_size
        context = tf.distribute.get_replica_context()
        # Every replica draws the step's whole z from one seed and keeps row block `replica_id`:
        # no two replicas share noise, and the global batch's z does not depend on the replica
        # count, just as replica r's images are slice r of the global batch (the data pipeline
        # deals consecutive per-replica batches in order). Drawing B x z_dim normals is negligible.
        all_z = tf.random.stateless_normal([global_batch, self.cfg.z_dim], seed=seed)
        z = tf.reshape(all_z, [context.num_replicas_in_sync, -1, self.cfg.z_dim])[
            context.replica_id_in_sync_group
        ]
        alternating = self.cfg.update == 'alternating'
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = self.generator(z, training=True)
            # Separate D calls for real and fake: each BatchNorm call sees one kind only,
            # as in the paper's code (mixing them lets D tell them apart by batch statistics).
            real_logits = self.discriminator(real, training=True)
            # Alternating: D's tape need not reach into G (its gradient comes from a second D call).
            fake_logits = self.discriminator(tf.stop_gradient(fake) if alternating else fake, training=True)
            d_loss = tf.nn.compute_average_loss(
                losses.discriminator_loss(real_logits, fake_logits), global_batch_size=global_batch
            )
            d_loss_scaled = self._scale(self.d_optimizer, d_loss)
            d_vars = self.discriminator.trainable_variables
            if alternating:
                # The paper's Algorithm 1 (and pytorch/examples): D steps first, then G is scored by the
                # updated D on the same fakes; one more D forward pass per step.
                self.d_optimizer.apply(d_tape.gradient(d_loss_scaled, d_vars), d_vars)
                g_logits = self.discriminator(fake, training=True)
            else:
                g_logits = fake_logits
            g_loss = tf.nn.compute_average_loss(
                losses.generator_loss(g_logits), global_batch_size=global_batch
            )
            g_loss_scaled = self._scale(self.g_optimizer, g_loss)
        g_vars = self.generator.trainable_variables
        if not alternating:
            # Both gradients come from the same forward pass (the tutorial's simultaneous update).
            self.d_optimizer.apply(d_tape.gradient(d_loss_scaled, d_vars), d_vars)
        self.g_optimizer.apply(g_tape.gradient(g_loss_scaled, g_vars), g_vars)
        if context.num_replicas_in_sync > 1 and not self.cfg.sync_bn:
            _average_moving_statistics(context, self.generator, self.discriminator)
        # Divided by the global batch, so the SUM over replicas is the global mean.
        return {
            'd_loss': d_loss,
            'g_loss': g_loss,
            'd_real': tf.reduce_sum(tf.sigmoid(tf.cast(real_logits, tf.float32))) / global_batch,
            'd_fake': tf.reduce_sum(tf.sigmoid(tf.cast(fake_logits, tf.float32))) / global_batch,
        }

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

    def generate(self, z: tf.Tensor) -> np.ndarray:
        """Images in [-1, 1] for z, with BatchNorm in inference mode (moving statistics)."""
        return self.generator(z, training=False).numpy()

    def num_params(self) -> tuple[int, int]:
        return self.generator.count_params(), self.discriminator.count_params()


# --- helpers of the loop ---


def _write_sample_grid(trainer: Trainer, z: tf.Tensor, writer) -> np.ndarray:
    step = int(trainer.step)
    grid = images.save_grid(workdir_lib.sample_grid_path(trainer.workdir, step), trainer.generate(z))
    with writer.as_default(step=step):
        tf.summary.image('samples/fixed_z', grid[None], max_outputs=1)
        if trainer.ema_generator is not None:  # Beside the raw grid: same z, averaged weights.
            ema_grid = images.make_grid(trainer.ema_generator(z, training=False).numpy())
            tf.summary.image('samples/fixed_z_ema', ema_grid[None], max_outputs=1)
    return grid


def _float32_copy(cfg: Config, model: keras.Model, build) -> keras.Model:
    """The same weights in a float32 model: an export computes in float32 whatever the run trained in."""
    if model.dtype_policy.name == 'float32':
        return model
    with distribute.dtype_policy('float32'):
        copy = build(cfg)
    copy.set_weights(model.get_weights())
    return copy


def _next_stop(step: int, total: int, cfg: Config) -> int:
    """The next step at which something is due, so each call ends exactly on it."""
    stops = [total, step + cfg.steps_per_call]
    for every in (cfg.log_every, cfg.sample_every, cfg.checkpoint_every, cfg.eval_every or total):
        stops.append((step // every + 1) * every)
    return min(stops)


def _roll_back_or_raise(
    trainer: Trainer, bad: tuple[str, float], step: int, num_steps: int, rollbacks: int
) -> int:
    """A NaN/Inf loss: restore the last good checkpoint (--on_nan=rollback) or stop with one sentence.

    Returns the new rollback count; raises safety.NumericalError when the run must stop. Nothing of the
    bad state is saved either way.
    """
    cfg, latest = trainer.cfg, trainer.manager.latest_checkpoint
    if cfg.on_nan == 'rollback' and latest and rollbacks < cfg.max_rollbacks:
        trainer.roll_back()
        logging.warning(
            '%s became %s by step %d: rolled back to %s (step %d) with learning rates G %.3g, D %.3g '
            '(rollback %d of at most %d).',
            *bad,
            step + num_steps,
            latest,
            int(trainer.step),
            float(trainer.g_optimizer.learning_rate),
            float(trainer.d_optimizer.learning_rate),
            rollbacks + 1,
            cfg.max_rollbacks,
        )
        return rollbacks + 1
    raise safety.NumericalError(
        safety.nan_message(*bad, step + 1, step + num_steps, latest, rollbacks=rollbacks)
    )


def _check_diversity(
    trainer: Trainer, z: tf.Tensor, real: np.ndarray, writer, step: int, was_diverse: bool
) -> bool:
    """Logs the fixed-z samples' diversity; warns (log and TensorBoard) when it looks like mode collapse.

    A freshly initialised G draws near-identical pictures, so only a fall below the threshold after
    the samples were once above it counts as collapse. Returns whether they have been above it.
    """
    ratio = safety.diversity_ratio(trainer.generate(z), real)
    threshold = trainer.cfg.collapse_threshold
    with writer.as_default(step=step):
        tf.summary.scalar('train/sample_diversity', ratio)
        if ratio < threshold and was_diverse:
            message = (
                f'Possible mode collapse at step {step}: the fixed-z samples differ only {ratio:.3f} as much '
                f'as real images do (--collapse_threshold={threshold}); look at samples/ and consider lower '
                f'learning rates or resuming from an earlier checkpoint.'
            )
            logging.warning(message)
            tf.summary.text('warnings/mode_collapse', message)
    return was_diverse or ratio >= threshold


# --- the outer loop ---


def _start_up(
    cfg: Config, workdir: str, strategy: tf.distribute.Strategy, source: data.Source | None
) -> Trainer:
    """The Trainer of the run in `workdir`, restored; config.cfg is written only once that succeeded, so
    a refused resume (another model, no checkpoint that restores) leaves every file as it was."""
    chief = distribute.is_chief(strategy)
    if cfg.overwrite and chief:  # Under the lock: never the folder of a trainer still running.
        workdir_lib.clear(workdir)
    tf.io.gfile.makedirs(workdir)
    if not cfg.overwrite:  # Every task checks the model flags (with --overwrite the chief deletes them).
        workdir_lib.check_config(workdir, cfg)
    trainer = Trainer(cfg, workdir, strategy=strategy, source=source)
    if trainer.is_chief:
        workdir_lib.write_config(workdir, cfg)
    g_params, d_params = trainer.num_params()
    logging.info(
        'Data: %s, resolution %d, %d channel(s).', data.describe(trainer.source), cfg.resolution, cfg.channels
    )
    logging.info(
        'Models: %s generator %s params, discriminator %s params; precision %s, XLA %s.',
        cfg.arch,
        f'{g_params:,}',
        f'{d_params:,}',
        trainer.precision,
        'on' if trainer.use_jit else 'off',
    )
    logging.info('Training %d steps at global batch %d in %s.', trainer.total_steps, cfg.batch_size, workdir)
    return trainer


def _train_loop(trainer: Trainer, stop: safety.GracefulStop, metrics_log: workdir_lib.MetricsLog) -> None:
    """Trains to the last step (or a stop signal) in calls that end where something is due."""
    cfg = trainer.cfg
    # Side effects happen on the chief only; workers write to a scratch place (TF's guide).
    writer = (
        tf.summary.create_file_writer(workdir_lib.summary_dir(trainer.workdir))
        if trainer.is_chief
        else tf.summary.create_noop_writer()
    )
    if trainer.is_chief and trainer.restored_from is None:
        with writer.as_default(step=0):
            tf.summary.text('config', '```\n' + to_flagfile(cfg) + '```')
    z_grid = fixed_noise(cfg, cfg.num_grid)
    metrics = {k: keras.metrics.Mean(name=k) for k in METRIC_KEYS}
    step = int(trainer.step)
    if step == 0 and trainer.is_chief:
        _write_sample_grid(trainer, z_grid, writer)
    # Reference spread of real images for the mode-collapse warning (a ratio fits every data set).
    real_grid = data.take_images(trainer.source, cfg.num_grid, cfg) if cfg.collapse_threshold else None
    rollbacks, was_diverse = 0, False
    # --eval_every: real statistics once, now; then quality metrics, eval/* and checkpoints/best.
    evaluator = evaluate.PeriodicEvaluator(cfg, trainer, trainer.workdir) if cfg.eval_every else None
    trainer.evaluator = evaluator
    progress = Progress(trainer.total_steps, step)
    window_start, window_steps = time.perf_counter(), 0
    first_call = True
    try:
        while step < trainer.total_steps:
            num_steps = _next_stop(step, trainer.total_steps, cfg) - step
            if first_call:
                logging.info('Tracing the train step (the first call is slow).')
            with stop.call():  # SIGINT/SIGTERM: a stop after this call, or at once during start-up.
                values = trainer.train_steps(num_steps)
            if first_call:
                logging.info('First call done.')
                first_call = False
            bad = safety.non_finite(values)
            if bad is not None:  # Checked before anything is saved: the bad state never reaches disk.
                rollbacks = _roll_back_or_raise(trainer, bad, step, num_steps, rollbacks)
                step, window_steps = int(trainer.step), 0
                for m in metrics.values():
                    m.reset_state()
                continue
            step += num_steps
            window_steps += num_steps
            progress.advance(step, num_steps)
            for k, v in values.items():
                metrics[k].update_state(v, sample_weight=num_steps)
            last = step >= trainer.total_steps

            if step % cfg.log_every == 0 or last:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                logged = {k: float(m.result()) for k, m in metrics.items()}
                logged['images_per_second'] = window_steps * cfg.batch_size / elapsed
                logged['steps_per_second'] = window_steps / elapsed
                with writer.as_default(step=step):
                    for k, v in logged.items():
                        tf.summary.scalar(f'train/{k}', v)
                    # Undecodable files skipped so far (folder and LMDB sources); 0 for in-memory data.
                    tf.summary.scalar('data/skipped_images', data.num_skipped(trainer.source))
                metrics_log.append(step, logged)
                progress.log(
                    step,
                    logged['images_per_second'],
                    {k: logged[k] for k in METRIC_KEYS},
                    logged['steps_per_second'],
                )
                for m in metrics.values():
                    m.reset_state()
                window_start, window_steps = time.perf_counter(), 0
            if trainer.is_chief and (step % cfg.sample_every == 0 or last):
                _write_sample_grid(trainer, z_grid, writer)
                if real_grid is not None and len(real_grid) > 1:
                    was_diverse = _check_diversity(trainer, z_grid, real_grid, writer, step, was_diverse)
            stopping = stop.requested  # Read once: a signal arriving later is handled after the next call.
            if step % cfg.checkpoint_every == 0 or last or stopping:
                trainer.save()
            if evaluator is not None and (step % cfg.eval_every == 0 or last) and not stopping:
                evaluator(step)
            if stopping:
                logging.info(
                    'Stopped by %s at step %d with a checkpoint; the same command resumes from here.',
                    stop.signal_name,
                    step,
                )
                break
    finally:
        progress.close()
        writer.flush()


def _finish(trainer: Trainer, metrics_log: workdir_lib.MetricsLog) -> None:
    """After the loop: the worker's scratch copies go; the chief draws the final pictures and exports."""
    cfg, workdir = trainer.cfg, trainer.workdir
    if not trainer.is_chief:  # A worker's checkpoint copies were only there for the collectives.
        tf.io.gfile.rmtree(trainer.manager.directory)
        return
    workdir_lib.write_final_pictures(workdir, metrics_log.records)
    if cfg.export_at_end and trainer.stopped_by is None:  # A stop leaves time only for the checkpoint.
        path = workdir_lib.export_path(workdir)
        if cfg.export_best and trainer.evaluator is not None:
            evaluate.export_best(workdir, path)
        else:
            generator = _float32_copy(cfg, trainer.generator, models.build_generator)
            ema = trainer.ema_generator
            ema = _float32_copy(cfg, ema, models.build_generator) if ema is not None else None
            export_lib.save(path, generator, cfg, int(trainer.step), ema)
        logging.info('Exported the generator to %s.', path)


def train_and_evaluate(
    cfg: Config,
    workdir: str,
    *,
    strategy: tf.distribute.Strategy | None = None,
    source: data.Source | None = None,
) -> Trainer:
    """Trains (or resumes) the run in `workdir` to its last step; returns the Trainer.

    Writes config.cfg, checkpoints/, tensorboard/train, samples/ (fixed-z grids every
    --sample_every steps, progress.gif and losses.png at the end), metrics.jsonl and saved_model/.
    The chief holds the workdir's lock throughout (a second trainer is refused); SIGINT/SIGTERM stop
    the run with a checkpoint, or at once during start-up (safety.GracefulStop).
    """
    strategy = strategy or distribute.create_strategy(cfg)
    with workdir_lock.RunLock(workdir, enabled=distribute.is_chief(strategy)) as lock:
        with safety.GracefulStop(interrupt_start_up=True, cleanup=lock.release) as stop:
            trainer = _start_up(cfg, workdir, strategy, source)
            metrics_log = workdir_lib.MetricsLog(
                workdir, resume_step=int(trainer.step), write=trainer.is_chief
            )
            _train_loop(trainer, stop, metrics_log)
        trainer.stopped_by = stop.signal_name  # None when the run reached its last step.
        _finish(trainer, metrics_log)
    return trainer


def final_metrics(workdir: str) -> dict[str, Any]:
    """The last logged metrics of a run (for tests and notebooks)."""
    history = workdir_lib.read_metrics(workdir)
    return history[-1] if history else {}
