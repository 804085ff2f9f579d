"""Picks the tf.distribute strategy every training run goes through."""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from dcgan_tf.config import Config


def choose_strategy_name(requested: str, num_gpus: int, tpu_address: str) -> str:
    """Resolves `auto`: a TPU when one is named, several GPUs mirrored, else one device."""
    if requested != 'auto':
        return requested
    if tpu_address:
        return 'tpu'
    return 'mirrored' if num_gpus > 1 else 'one_device'


def _tpu_address(cfg: Config) -> str:
    # Only an explicit name or the variables TPU VMs and Colab set: probing a resolver with no hint
    # contacts the GCE metadata server, which hangs on machines outside Google Cloud.
    return cfg.tpu or os.environ.get('TPU_NAME', '') or os.environ.get('COLAB_TPU_ADDR', '')


def _device_list(cfg: Config) -> list[str]:
    return [d.strip() for d in cfg.devices.split(',') if d.strip()]


def create_strategy(cfg: Config) -> tf.distribute.Strategy:
    """The strategy named by --strategy (auto by default), logged with its devices."""
    gpus = tf.config.list_physical_devices('GPU')
    name = choose_strategy_name(cfg.strategy, len(gpus), _tpu_address(cfg))
    devices = _device_list(cfg)
    if name == 'tpu':
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=_tpu_address(cfg) or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    elif name == 'multi_worker':
        # Cluster layout comes from TF_CONFIG, as on Kubernetes / Vertex AI.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == 'mirrored':
        strategy = tf.distribute.MirroredStrategy(devices or None)
    elif name == 'one_device':
        device = devices[0] if devices else ('/gpu:0' if gpus else '/cpu:0')
        strategy = tf.distribute.OneDeviceStrategy(device)
    else:
        strategy = tf.distribute.get_strategy()
    logging.info(
        'Strategy: %s (%s requested), %d replica(s)%s.',
        type(strategy).__name__,
        cfg.strategy,
        strategy.num_replicas_in_sync,
        f' on {", ".join(devices)}' if devices else '',
    )
    return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes checkpoints, summaries and samples in a multi-worker job."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, 'chief') or (
        task_type == 'worker' and task_id == 0 and 'chief' not in resolver.cluster_spec().as_dict()
    )


def device_kind() -> str:
    """'TPU', 'GPU' or 'CPU': what the step will run on (picks the XLA default)."""
    if tf.config.list_logical_devices('TPU'):
        return 'TPU'
    return 'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'
