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
# The files themselves, not the folder: tensorflow-datasets creates the folder when it tries to download.
HAVE_SHARED_MNIST = os.path.isfile(os.path.join(SHARED_MNIST, 'train-images-idx3-ubyte.gz'))
# The tiny models live in tiny.py (multiworker_task.py uses them without this module's devices).
from tiny import TINY_CLI, tiny_config  # noqa: E402, F401


@pytest.fixture
def tiny_cfg():
    return tiny_config()


@pytest.fixture(scope='session')
def mnist_dir(tmp_path_factory) -> str:
    """A folder of the four MNIST IDX files: the real ones where this checkout has them, else made from
    the digits the package ships (8,000 for train, the other 2,000 for test), so no test needs a download.
    """
    if HAVE_SHARED_MNIST:
        return SHARED_MNIST
    from dcgan_tf import data

    images, labels = data.load_embedded()
    folder = tmp_path_factory.mktemp('mnist_idx')
    for split, part in (('train', slice(0, 8000)), ('test', slice(8000, None))):
        image_stem, label_stem = data.arrays.IDX_FILES[split]
        data.write_idx(str(folder / f'{image_stem}.gz'), images[part, ..., 0])
        data.write_idx(str(folder / f'{label_stem}.gz'), labels[part])
    return str(folder)


@pytest.fixture(scope='session')
def brief_mnist_classifier(tmp_path_factory, mnist_dir) -> dict:
    """The project's MNIST classifier after a brief training (4,000 digits, 2 epochs: about 95% on the
    test split, where a broken model, loss or data path stays near chance): train_classifier's result."""
    from dcgan_tf.config import Config
    from dcgan_tf.quality import classifier

    cfg = Config(
        mode='train_classifier',
        dataset='mnist',
        data_dir=mnist_dir,
        batch_size=64,
        classifier_epochs=2,
        classifier_train_examples=4000,
    )
    return classifier.train_classifier(cfg, str(tmp_path_factory.mktemp('brief_classifier')))


@pytest.fixture(autouse=True, scope='module')
def _fresh_keras_state_per_module():
    """Frees the models, graphs and name counters a test module leaves behind once it is done: in one
    long process they pile up, and later modules' tracing and saving slowed down severalfold."""
    yield
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()
