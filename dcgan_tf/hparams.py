"""TensorBoard's HParams dashboard: each training run is one session, a row of its flags and metrics.

The session is `<workdir>/tensorboard`, written once, when a run starts afresh (a resumed run adds no
second row). Its metrics are the scalars the run already logs in the subfolders: the dashboard shows each
one's last value, so `train/d_loss`, `train/g_loss`, `train/d_real`, `train/d_fake` and
`train/images_per_second` (group `train`) are the final ones and `eval/best_<metric>` (group `eval`, with
--eval_every) is the best evaluation. No experiment summary is written: TensorBoard infers the hparams'
types and values from all the sessions under its --logdir, which one run alone cannot know.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from dcgan_tf import workdir as workdir_lib
from dcgan_tf.config import Config

# The flags that make two runs differ in what they learn: data, model, optimisation.
HPARAM_FLAGS = (
    'dataset',
    'resolution',
    'channels',
    'crop',
    'eval_holdout',
    'arch',
    'z_dim',
    'gf_dim',
    'df_dim',
    'kernel_size',
    'upsample',
    'g_extra_layers',
    'd_extra_layers',
    'conditional',
    'conditional_d',
    'info_code',
    'info_weight',
    'augment',
    'batch_size',
    'g_lr',
    'd_lr',
    'beta_1',
    'beta_2',
    'update',
    'lr_decay',
    'lr_decay_start',
    'train_steps',
    'epochs',
    'ema_decay',
    'ema_warmup',
    'precision',
    'seed',
)


def session_dir(workdir: str) -> str:
    """The run's HParams session: the folder above its train/ and eval/ summaries."""
    return os.path.join(workdir, workdir_lib.TENSORBOARD_DIR)


def hparams_of(cfg: Config) -> dict[str, Any]:
    """The run's hparams: {flag name: value} for HPARAM_FLAGS."""
    return {name: getattr(cfg, name) for name in HPARAM_FLAGS}


def write_session(cfg: Config, workdir: str) -> dict[str, Any]:
    """Writes the run's session start (its hparams) to `<workdir>/tensorboard`; call once, on the chief,
    when the run starts afresh. Returns the hparams written.

    The trial id is the workdir, so two runs with the same flags (e.g. a rerun to check a result) stay
    two rows rather than one averaged group.
    """
    values = hparams_of(cfg)
    writer = tf.summary.create_file_writer(session_dir(workdir))
    try:
        with writer.as_default():
            hp.hparams(values, trial_id=workdir.rstrip('/'))
    finally:
        writer.close()
    return values
