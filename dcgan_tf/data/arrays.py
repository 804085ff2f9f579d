"""In-memory sources: the embedded MNIST test digits, MNIST-format IDX files (or tensorflow-datasets'
mnist / fashion_mnist) and synthetic shapes. Each loads its whole split as uint8 into a MemorySource.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from dcgan_tf.config import Config, is_url
from dcgan_tf.data.base import DataError, MemorySource, hold_out
from dcgan_tf.data.preprocess import fit_array

ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets')
IDX_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
# --dataset values this module loads.
DATASETS = ('synthetic', 'embedded', 'mnist', 'fashion_mnist')
DIGITS = tuple(str(d) for d in range(10))
# The names of the labels 0-9 (Xiao et al. 2017).
FASHION_MNIST_CLASSES = (
    'T-shirt/top',
    'Trouser',
    'Pullover',
    'Dress',
    'Coat',
    'Sandal',
    'Shirt',
    'Sneaker',
    'Bag',
    'Ankle boot',
)
CLASS_NAMES = {'embedded': DIGITS, 'mnist': DIGITS, 'fashion_mnist': FASHION_MNIST_CLASSES}


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (gzipped or raw): a big-endian header of dimensions, then uint8 data."""
    opener = gzip.open if path.endswith('.gz') else open
    try:
        with opener(path, 'rb') as f:
            data = f.read(MAX_IDX_BYTES + 1)  # Bounded: a gzip bomb cannot fill memory.
    except (OSError, EOFError) as e:
        raise DataError(f'Cannot read IDX file {path}: {e}.') from e
    if len(data) > MAX_IDX_BYTES:
        raise DataError(
            f'{path} holds more than {MAX_IDX_BYTES // 2**30} GiB: not an IDX file of a data set.'
        )
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f'{path} is not an IDX file of unsigned bytes.')
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], 'big') for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f'{path} is truncated: header says {shape}, found {body.size} bytes.')
    return body.reshape(shape)


# MNIST's training images are 47 MB; the largest IDX data sets (EMNIST) under 1 GB.
MAX_IDX_BYTES = 2 * 2**30


def _find_idx(data_dir: str, stem: str) -> str | None:
    for name in (stem, stem + '.gz', stem.replace('-idx', '.idx'), stem.replace('-idx', '.idx') + '.gz'):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    return None


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes uint8 `array` as an IDX file (gzipped where `path` ends in .gz), the format read_idx reads."""
    header = bytes([0, 0, 8, array.ndim]) + b''.join(int(n).to_bytes(4, 'big') for n in array.shape)
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'wb') as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def load_idx_split(data_dir: str, split: str = 'train') -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 28, 28, 1] uint8 and labels [N] of one MNIST-format split in `data_dir`."""
    image_stem, label_stem = IDX_FILES[split]
    image_path, label_path = _find_idx(data_dir, image_stem), _find_idx(data_dir, label_stem)
    if image_path is None or label_path is None:
        raise DataError(f'{data_dir} lacks {image_stem}[.gz] or {label_stem}[.gz].')
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f'{image_path} and {label_path} do not hold matching images and labels.')
    return images[..., None], labels


def load_embedded(split: str = 'test') -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test digits shipped in the package (CC BY-SA 3.0, LeCun, Cortes, Burges)."""
    del split  # Only the test split ships; it is the demo's training data.
    return load_idx_split(ASSETS_DIR, 'test')


def _load_tfds(name: str, data_dir: str, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds  # Slow to import and absent on some machines: only here.

    try:
        ds = tfds.load(
            name, split=split, data_dir=data_dir or None, as_supervised=True, batch_size=-1, download=download
        )
    except Exception as e:  # tfds raises many types for "not downloaded and no network".
        raise DataError(
            f'Could not load {name} through tensorflow-datasets ({type(e).__name__}: '
            f'{str(e).splitlines()[0] if str(e) else ""}); with no network, put the four IDX files '
            f'(train-images-idx3-ubyte.gz, ...) in a folder and pass it as --data_dir.'
        ) from e
    images, labels = tfds.as_numpy(ds)
    return images, labels


def load_mnist_like(
    name: str, data_dir: str, split: str = 'train', download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """mnist / fashion_mnist: the IDX files in `data_dir` when there, tensorflow-datasets otherwise."""
    if data_dir and not is_url(data_dir) and _find_idx(data_dir, IDX_FILES[split][0]):
        return load_idx_split(data_dir, split)
    return _load_tfds(name, data_dir, split, download)


def make_shapes(num: int, resolution: int, channels: int, seed: int = 0) -> np.ndarray:
    """Filled discs and squares of random size, place and colour on black: uint8 [N, H, W, C]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:resolution, :resolution].astype(np.float32)
    images = np.zeros((num, resolution, resolution, channels), np.uint8)
    for i in range(num):
        radius = rng.uniform(0.15, 0.35) * resolution
        cy, cx = rng.uniform(radius, resolution - radius, size=2)
        if rng.integers(2):
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        else:
            mask = (np.abs(yy - cy) <= radius * 0.8) & (np.abs(xx - cx) <= radius * 0.8)
        images[i][mask] = rng.integers(128, 256, size=channels)
    return images


def array_source(cfg: Config, split: str) -> MemorySource:
    """The configured in-memory data set's split, fitted to --resolution/--channels once."""
    dataset, labels = cfg.dataset, None
    if dataset == 'synthetic':
        images = make_shapes(
            cfg.synthetic_examples, cfg.resolution, cfg.channels, cfg.seed + (split != 'train')
        )
    elif dataset == 'embedded':
        images, labels = load_embedded(split)
    else:
        images, labels = load_mnist_like(dataset, cfg.data_dir, split, cfg.download)
    if cfg.eval_holdout and dataset != 'synthetic':
        labels = hold_out(labels, split, cfg.eval_holdout, dataset)
        images = hold_out(images, split, cfg.eval_holdout, dataset)
    return MemorySource(
        name=dataset,
        images=fit_array(images, cfg.resolution, cfg.channels, cfg.crop),
        labels=labels,
        class_names=CLASS_NAMES.get(dataset),
    )
