"""Shared test set-up: quiet TensorFlow, two logical CPU devices, tiny configs."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from dcgan_tf.config import Config  # noqa: E402

# Two logical CPUs let MirroredStrategy tests run two replicas on this machine. Must happen before
# TensorFlow initialises its devices, hence here, at collection time.
_cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

# ONEDNN_MAX_CPU_ISA=AVX2 (how a bigger CPU plays an AVX2-only one) limits oneDNN but not TensorFlow, which
# still reads bfloat16 support from the CPU and sends bfloat16 ops to oneDNN, which then fails or crashes.
# A real AVX2 CPU runs them on TensorFlow's Eigen kernels instead.
_ISA = os.environ.get('ONEDNN_MAX_CPU_ISA', '').upper()
requires_bfloat16 = pytest.mark.skipif(
    _ISA.startswith(('SSE', 'AVX2')) or _ISA == 'AVX',
    reason=f'ONEDNN_MAX_CPU_ISA={_ISA} leaves oneDNN without the bfloat16 ops TensorFlow sends it',
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.path.join(REPO_ROOT, '..', 'shared', 'data', 'mnist')
# The smallest model for tests that run the command line in a subprocess (kill, NaN, signals).
TINY_CLI = [
    '--dataset=synthetic',
    '--resolution=16',
    '--gf_dim=4',
    '--df_dim=4',
    '--z_dim=8',
    '--batch_size=4',
]


def tiny_config(**overrides) -> Config:
    """A model small enough for a 2-core CPU: 16x16, widths 8, batch 8, synthetic data."""
    values = dict(
        dataset='synthetic',
        resolution=16,
        channels=1,
        gf_dim=8,
        df_dim=8,
        z_dim=16,
        batch_size=8,
        train_steps=4,
        log_every=2,
        sample_every=2,
        checkpoint_every=2,
        num_grid=4,
        synthetic_examples=64,
        strategy='one_device',
        devices='/cpu:0',
        # The end-of-training export costs seconds per run; tests/test_export.py turns it on.
        export_at_end=False,
    )
    values.update(overrides)
    return Config(**values)


@pytest.fixture
def tiny_cfg():
    return tiny_config()
