"""Training: `train_and_evaluate` and its outer loop, around the Trainer (trainer.py).

The loop trains in calls of several steps that end exactly where something is due, then does each
periodic action (log, sample grid, checkpoint, evaluation, stop) in its own "is it due?" block.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf import config as config_lib
from dcgan_tf import data, distribute, hparams, images, models, safety
from dcgan_tf import export as export_lib
from dcgan_tf import workdir as workdir_lib
from dcgan_tf.config import MODEL_FLAGS, NOT_RECORDED, Config, ConfigError, to_flagfile, validate
from dcgan_tf.progress import Progress
from dcgan_tf.quality import evaluate
from dcgan_tf.trainer import METRIC_KEYS, Trainer, fixed_inputs, fixed_noise, grid_rows
from dcgan_tf.workdir import checkpoints as workdir_checkpoints
from dcgan_tf.workdir import lock as workdir_lock
from dcgan_tf.workdir import ownership

__all__ = ['METRIC_KEYS', 'ConfigError', 'Trainer', 'final_metrics', 'fixed_noise', 'train_and_evaluate']


# --- helpers of the loop ---


def _write_sample_grid(trainer: Trainer, grid_inputs: tuple, writer) -> np.ndarray:
    step = int(trainer.step)
    rows = grid_rows(trainer.cfg)  # One row per class or code.
    path = workdir_lib.sample_grid_path(trainer.workdir, step)
    grid = images.save_grid(path, trainer.generate(*grid_inputs), rows)
    with writer.as_default(step=step):
        tf.summary.image('samples/fixed_z', grid[None], max_outputs=1)
        if trainer.ema_generator is not None:  # Beside the raw grid: same z, averaged weights.
            ema_grid = images.make_grid(trainer.generate(*grid_inputs, ema=True), rows)
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


def _due(step: int, every: int) -> bool:
    """Whether a periodic action of period `every` falls on `step`."""
    return step % every == 0


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
            float(trainer.g_optimizer.learning_rate.numpy()),
            float(trainer.d_optimizer.learning_rate.numpy()),
            rollbacks + 1,
            cfg.max_rollbacks,
        )
        return rollbacks + 1
    raise safety.NumericalError(
        safety.nan_message(*bad, step + 1, step + num_steps, latest, rollbacks=rollbacks)
    )


def _check_diversity(
    trainer: Trainer, grid_inputs: tuple, real: np.ndarray, writer, step: int, was_diverse: bool
) -> bool:
    """Logs the fixed-z samples' diversity; warns (log and TensorBoard) when it looks like mode collapse.

    A freshly initialised G draws near-identical pictures, so only a fall below the threshold after
    the samples were once above it counts as collapse. Returns whether they have been above it.
    """
    ratio = safety.diversity_ratio(trainer.generate(*grid_inputs), real)
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
    if cfg.conditional:  # --num_classes comes from the data: known before the recorded flags are compared.
        source = source or data.load_source(cfg)
        cfg = data.resolve_classes(cfg, source)
    if cfg.overwrite and chief:  # Under the lock: never the folder of a trainer still running.
        ownership.clear(workdir)
    tf.io.gfile.makedirs(workdir)
    recorded = None
    if not cfg.overwrite:  # Every task checks the model flags (with --overwrite the chief deletes them).
        recorded = workdir_lib.check_config(workdir, cfg)
        _refuse_lost_checkpoints(workdir, recorded or cfg)
    trainer = Trainer(cfg, workdir, strategy=strategy, source=source)
    if recorded is not None and trainer.restored_from is not None:
        _apply_changed_rates(trainer, recorded)
        _log_changed_flags(trainer, recorded)
    if trainer.is_chief:
        workdir_lib.write_config(workdir, cfg)
        if cfg.conditional:
            workdir_lib.write_class_names(workdir, trainer.source.class_names)
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
    step = int(trainer.step)
    if trainer.restored_from is not None and step >= trainer.total_steps:
        logging.info(
            'The run in %s is already at step %d, at or past its length of %d steps: nothing to train '
            '(raise --train_steps or --epochs to train further).',
            workdir,
            step,
            trainer.total_steps,
        )
    else:
        logging.info(
            'Training steps %d to %d at global batch %d in %s.',
            step,
            trainer.total_steps,
            cfg.batch_size,
            workdir,
        )
    return trainer


def _refuse_lost_checkpoints(workdir: str, cfg: Config) -> None:
    """A run folder whose checkpoints are gone is refused, not silently retrained from step 0 (which would
    replace its export and metrics), as a folder of checkpoints none of which restores is."""
    directory = workdir_lib.checkpoint_dir(workdir)
    if workdir_checkpoints.checkpoints_to_try(directory)[0]:
        return
    evidence = workdir_lib.progress_without_checkpoint(workdir, cfg.checkpoint_every)
    if evidence:
        raise ConfigError(
            f'--workdir={workdir} holds a run that trained past a checkpoint ({evidence}), but no '
            f'checkpoint to resume it from ({directory} is missing or empty); restore the checkpoints, start '
            f'afresh with --overwrite, or use another --workdir.'
        )


# Flags a resume is expected to change (the length), or that are handled on their own.
_RESUME_FLAGS = ('workdir', 'train_steps', 'epochs', 'g_lr', 'd_lr')


def _log_changed_flags(trainer: Trainer, recorded: Config) -> None:
    """Says which recorded flags a resume changes (other data, another batch size, ...): they apply from
    the restored step on, and config.cfg records them now."""
    changed = [
        f'--{name}={getattr(trainer.cfg, name)} ({getattr(recorded, name)} before)'
        for name in config_lib.FIELDS
        if name not in (*NOT_RECORDED, *MODEL_FLAGS, *_RESUME_FLAGS)
        and getattr(trainer.cfg, name) != getattr(recorded, name)
    ]
    if changed:
        logging.warning(
            'Resuming at step %d with flags other than the run recorded, which apply from here on: %s.',
            int(trainer.step),
            ', '.join(changed),
        )


def _apply_changed_rates(trainer: Trainer, recorded: Config) -> None:
    """--g_lr/--d_lr given anew on resume (e.g. lowered after a NaN) replace the checkpoint's peak rates;
    unchanged flags keep them, so a rollback's halving survives a resume."""
    for name, flag in (('g', 'g_lr'), ('d', 'd_lr')):
        old, new = getattr(recorded, flag), getattr(trainer.cfg, flag)
        if old != new:
            trainer.set_peak_rate(name, new)
            logging.info(
                '--%s=%g on resume (the run recorded %g): training goes on at %g.', flag, new, old, new
            )


class _Window:
    """The train/* metrics since the last log: Keras Means, reset at each log, and the window's rate."""

    def __init__(self):
        self.metrics = {k: keras.metrics.Mean(name=k) for k in METRIC_KEYS}
        self.reset()

    def reset(self) -> None:
        for m in self.metrics.values():
            m.reset_state()
        self.start, self.steps = time.perf_counter(), 0

    def update(self, values: dict[str, float], num_steps: int) -> None:
        for k, v in values.items():
            self.metrics[k].update_state(v, sample_weight=num_steps)
        self.steps += num_steps

    def result(self, batch_size: int) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        logged = {k: float(m.result()) for k, m in self.metrics.items()}
        logged['images_per_second'] = self.steps * batch_size / elapsed
        logged['steps_per_second'] = self.steps / elapsed
        return logged


def _log(trainer: Trainer, window: _Window, writer, step: int, metrics_log, progress: Progress) -> None:
    """train/* and data/skipped_images to TensorBoard, metrics.jsonl and the console; a new window."""
    logged = window.result(trainer.cfg.batch_size)
    # The rates of the latest update: with --lr_decay they fall over the run, and a rollback halves them.
    # (.numpy(): float() refuses a MirroredVariable.)
    logged['g_lr'] = float(trainer.g_optimizer.learning_rate.numpy())
    logged['d_lr'] = float(trainer.d_optimizer.learning_rate.numpy())
    with writer.as_default(step=step):
        for k, v in logged.items():
            tf.summary.scalar(f'train/{k}', v)
        # Undecodable files skipped so far (folder and LMDB sources); 0 for in-memory data.
        tf.summary.scalar('data/skipped_images', data.num_skipped(trainer.source))
    metrics_log.append(step, logged)
    progress.log(
        step, logged['images_per_second'], {k: logged[k] for k in METRIC_KEYS}, logged['steps_per_second']
    )
    window.reset()


def _summary_writer(trainer: Trainer):
    """Side effects happen on the chief only; workers write to a scratch place (TF's guide)."""
    if not trainer.is_chief:
        return tf.summary.create_noop_writer()
    writer = tf.summary.create_file_writer(workdir_lib.summary_dir(trainer.workdir))
    if trainer.restored_from is None:
        with writer.as_default(step=0):
            tf.summary.text('config', '```\n' + to_flagfile(trainer.cfg) + '```')
        hparams.write_session(trainer.cfg, trainer.workdir)  # One HParams row per run, not one per resume.
    return writer


def _train_loop(trainer: Trainer, stop: safety.GracefulStop, metrics_log: workdir_lib.MetricsLog) -> None:
    """Trains to the last step (or a stop signal) in calls that end where something is due."""
    cfg = trainer.cfg
    writer = _summary_writer(trainer)
    z_grid = fixed_inputs(cfg, cfg.num_grid)
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
    window = _Window()
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
                step = int(trainer.step)
                window.reset()
                continue
            step += num_steps
            progress.advance(step, num_steps)
            window.update(values, num_steps)
            last = step >= trainer.total_steps
            if _due(step, cfg.log_every) or last:
                _log(trainer, window, writer, step, metrics_log, progress)
            if trainer.is_chief and (_due(step, cfg.sample_every) or last):
                _write_sample_grid(trainer, z_grid, writer)
                if real_grid is not None and len(real_grid) > 1:
                    was_diverse = _check_diversity(trainer, z_grid, real_grid, writer, step, was_diverse)
            # Read once, and agreed among workers: a signal arriving later is handled after the next call.
            stopping = trainer.agree_to_stop(stop.requested)
            if _due(step, cfg.checkpoint_every) or last or stopping:
                trainer.save()
            if evaluator is not None and (_due(step, cfg.eval_every) or last) and not stopping:
                evaluator(step)
            if stopping:
                trainer.stopped_by = stop.signal_name or 'a stop signal to another worker'
                logging.info(
                    'Stopped by %s at step %d with a checkpoint; the same command resumes from here.',
                    trainer.stopped_by,
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
        if not cfg.export_best and workdir_lib.export_step(path) == int(trainer.step):
            logging.info('The export in %s is of step %d already.', path, int(trainer.step))
            return
        if cfg.export_best and trainer.evaluator is not None:
            evaluate.export_best(workdir)
        else:
            generator = _float32_copy(cfg, trainer.generator, models.build_generator)
            ema = trainer.ema_generator
            ema = _float32_copy(cfg, ema, models.build_generator) if ema is not None else None
            export_lib.save(
                path,
                generator,
                cfg,
                int(trainer.step),
                ema,
                class_names=trainer.source.class_names,
                target=f'--workdir={workdir}: {path}',
            )
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
    the run with a checkpoint, or at once during start-up (safety.GracefulStop). `cfg` is validated
    first (ConfigError, one sentence): `Config.create` and `config.from_flagfile` make valid ones.
    """
    cfg = validate(cfg)
    workdir_lib.check_layout(workdir)
    if cfg.export_at_end:  # Refused now rather than after the training.
        export_lib.check_target(
            workdir_lib.export_path(workdir), f'--workdir={workdir}: {workdir_lib.export_path(workdir)}'
        )
    strategy = strategy or distribute.create_strategy(cfg)
    # A worker of a multi-worker job that left during start-up would leave the others waiting in the
    # first collective; it stays, and the job stops together after its first call.
    alone = not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with workdir_lock.RunLock(workdir, enabled=distribute.is_chief(strategy)) as lock:
        with safety.GracefulStop(interrupt_start_up=alone, cleanup=lock.release) as stop:
            trainer = _start_up(cfg, workdir, strategy, source)
            metrics_log = workdir_lib.MetricsLog(
                workdir, resume_step=int(trainer.step), write=trainer.is_chief
            )
            _train_loop(trainer, stop, metrics_log)
        trainer.stopped_by = trainer.stopped_by or stop.signal_name  # None when the run reached its end.
        _finish(trainer, metrics_log)
    return trainer


def final_metrics(workdir: str) -> dict[str, Any]:
    """The last logged metrics of a run (for tests and notebooks)."""
    history = workdir_lib.read_metrics(workdir)
    return history[-1] if history else {}
