"""Shared test set-up: quiet TensorFlow, two logical CPU devices, tiny configs."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

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
# The tiny models live in tiny.py (multiworker_task.py uses them without this module's devices).
from tiny import TINY_CLI, tiny_config  # noqa: E402, F401


@pytest.fixture
def tiny_cfg():
    return tiny_config()
