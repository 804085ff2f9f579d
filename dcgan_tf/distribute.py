"""Picks the tf.distribute strategy every training run goes through, who in a job is the chief, and the
device-dependent choices of a run: its precision and whether the step is XLA-compiled.

`auto` resolves to a TPU when one is named, `multi_worker` when TF_CONFIG describes a cluster of several
tasks, `mirrored` on a host with several GPUs, and one device otherwise; the choice is logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator

import keras
import tensorflow as tf
from absl import logging

from dcgan_tf.config import Config, ConfigError


def cluster_size(tf_config: str | None = None) -> int:
    """Tasks (chief + workers) in the TF_CONFIG cluster; 1 when there is none (or only evaluators)."""
    text = os.environ.get('TF_CONFIG', '') if tf_config is None else tf_config
    if not text.strip():
        return 1
    cluster = json.loads(text).get('cluster', {})
    return max(1, sum(len(cluster.get(kind, [])) for kind in ('chief', 'worker')))


def choose_strategy_name(requested: str, num_gpus: int, tpu_address: str, num_workers: int = 1) -> str:
    """Resolves `auto`: a named TPU, a TF_CONFIG cluster, several GPUs mirrored, else one device."""
    if requested != 'auto':
        return requested
    if tpu_address:
        return 'tpu'
    if num_workers > 1:
        # Without this, every host of a cluster would silently train its own model.
        return 'multi_worker'
    return 'mirrored' if num_gpus > 1 else 'one_device'


def _tpu_address(cfg: Config) -> str:
    # Only an explicit name or the variables TPU VMs and Colab set: probing a resolver with no hint
    # contacts the GCE metadata server, which hangs on machines outside Google Cloud.
    return cfg.tpu or os.environ.get('TPU_NAME', '') or os.environ.get('COLAB_TPU_ADDR', '')


def device_list(devices: str) -> list[str]:
    """'GPU:0, gpu:1' -> ['/device:GPU:0', '/device:GPU:1'] (TensorFlow's canonical names)."""
    return [tf.DeviceSpec.from_string(d.strip()).to_string() for d in devices.split(',') if d.strip()]


def _check_local_devices(devices: list[str]) -> None:
    """A named device this host lacks fails here in one sentence rather than deep in TensorFlow."""
    present = {d.name for d in tf.config.list_logical_devices()}
    for device in devices:
        spec = tf.DeviceSpec.from_string(device)
        if spec.job is None and f'/device:{spec.device_type}:{spec.device_index}' not in present:
            raise ConfigError(
                f'--devices names {device}, which this machine does not have (it has '
                f'{", ".join(sorted(present))}).'
            )


def _create_tpu_strategy(address: str) -> tf.distribute.TPUStrategy:
    # The standard three steps: find the TPU (a name, a grpc:// address or 'local' on a TPU VM),
    # connect this host's runtime to it, and initialise it (which wipes its memory) once per program.
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or None)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def create_strategy(cfg: Config) -> tf.distribute.Strategy:
    """The strategy named by --strategy (auto by default), logged with its replicas and devices."""
    gpus = tf.config.list_physical_devices('GPU')
    name = choose_strategy_name(cfg.strategy, len(gpus), _tpu_address(cfg), cluster_size())
    devices = device_list(cfg.devices)
    if name in ('mirrored', 'one_device'):
        _check_local_devices(devices)
    if name == 'tpu':
        strategy = _create_tpu_strategy(_tpu_address(cfg))
    elif name == 'multi_worker':
        # The cluster comes from TF_CONFIG (set by Kubernetes operators, Vertex AI, or by hand);
        # each worker uses all its local GPUs (or its CPU), gradients are all-reduced across hosts.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == 'mirrored':
        strategy = tf.distribute.MirroredStrategy(devices or None)
    elif name == 'one_device':
        device = devices[0] if devices else ('/gpu:0' if gpus else '/cpu:0')
        strategy = tf.distribute.OneDeviceStrategy(device)
    else:
        strategy = tf.distribute.get_strategy()
    logging.info(
        'Strategy: %s (--strategy=%s), %d replica(s) in sync, local devices %s.',
        type(strategy).__name__,
        cfg.strategy,
        strategy.num_replicas_in_sync,
        ', '.join(_local_devices(strategy)),
    )
    return strategy


def _local_devices(strategy: tf.distribute.Strategy) -> list[str]:
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:  # The default strategy places ops wherever TensorFlow would.
        return ['(TensorFlow default placement)']


def task_id(strategy: tf.distribute.Strategy) -> int:
    """This task's index in its job (0 outside a cluster)."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    return int(getattr(resolver, 'task_id', None) or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes checkpoints, summaries and samples in a multi-worker job.

    The chief is the `chief` task when the cluster has one, else worker 0 (TensorFlow's convention).
    """
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_index = resolver.task_type, resolver.task_id
    return task_type in (None, 'chief') or (
        task_type == 'worker' and task_index == 0 and 'chief' not in resolver.cluster_spec().as_dict()
    )


def worker_scratch_dir(strategy: tf.distribute.Strategy) -> str:
    """A fresh local folder for a non-chief task's checkpoint copies (deleted at the end of training).

    Under MultiWorkerMirroredStrategy every task must take part in saving (reading mirrored variables
    is collective), but only the chief's copy belongs in the workdir: the others go here.
    """
    return tempfile.mkdtemp(prefix=f'dcgan_tf_worker{task_id(strategy)}_')


def device_kind() -> str:
    """'TPU', 'GPU' or 'CPU': what the step will run on (picks the XLA default)."""
    if tf.config.list_logical_devices('TPU'):
        return 'TPU'
    return 'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'


# --- precision and XLA ---


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below which it has no bfloat16 kernels.
_ISA_WITHOUT_BFLOAT16 = (
    'SSE41',
    'AVX',
    'AVX2',
    'AVX2_VNNI',
    'AVX2_VNNI_2',
    'AVX512_CORE',
    'AVX512_CORE_VNNI',
)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions that oneDNN may use (ONEDNN_MAX_CPU_ISA can forbid them)."""
    if os.environ.get('ONEDNN_MAX_CPU_ISA', '').upper() in _ISA_WITHOUT_BFLOAT16:
        return False
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
    except OSError:
        return False
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def resolve_precision(cfg: Config) -> str:
    """The Keras policy for --precision; `auto` picks by device.

    mixed_bfloat16 trains the DCGAN step much faster than float32 on CPUs with bfloat16 instructions and
    learns as well; GPUs have fast float16 tensor cores.
    """
    kind = device_kind()
    if cfg.precision == 'mixed_bfloat16' and kind == 'CPU' and onednn_enabled() and not cpu_has_bfloat16():
        # oneDNN without bfloat16 kernels aborts the process on the first bfloat16 op.
        raise ConfigError(
            '--precision=mixed_bfloat16 needs a CPU with AVX512_BF16 or AMX (TensorFlow runs on oneDNN here, '
            'which has no bfloat16 kernels for this CPU); use --precision=auto or float32.'
        )
    if cfg.precision != 'auto':
        return cfg.precision
    if kind == 'GPU':
        return 'mixed_float16'
    return 'mixed_bfloat16' if kind == 'TPU' or cpu_has_bfloat16() else 'float32'


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras layers constructed inside take the `name` policy; the process's global one is put back.

    A layer reads Keras' global policy once, when it is constructed, so building the models inside this
    passes the run's precision to them and to nothing else (an export or the next model in a notebook).
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def use_jit(cfg: Config, strategy: tf.distribute.Strategy) -> bool:
    """Whether the train step is XLA-compiled (--jit_compile; `auto`: on accelerators).

    With one replica XLA compiles the whole step; with several, each replica's forward passes, losses and
    gradients (replica_xla), since a compiled step under strategy.run cannot touch mirrored variables.
    """
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True  # A TPU compiles the whole step with XLA whatever the flag says.
    if cfg.sync_bn and strategy.num_replicas_in_sync > 1:
        # Synchronized BatchNorm all-reduces inside the forward pass, which a per-replica XLA
        # function cannot hold (the replicas meet only outside it).
        if cfg.jit_compile == 'true':
            raise ConfigError(
                '--sync_bn with several replicas all-reduces inside BatchNorm, which XLA cannot compile '
                'per replica; use --jit_compile=auto or false, or drop --sync_bn.'
            )
        return False
    if cfg.jit_compile == 'auto':
        # XLA made the DCGAN step slower on CPUs and several times faster on GPUs.
        return device_kind() != 'CPU'
    return cfg.jit_compile == 'true'


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its CPU ops on oneDNN in this process (else on its Eigen kernels).

    TensorFlow decides once, at start-up, from TF_ENABLE_ONEDNN_OPTS or, unset, from the CPU (on Linux:
    on with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX); the command line sets it on for every x86 CPU.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415 - no public API says it.
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())
