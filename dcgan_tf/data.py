"""Training data: sources, and the tf.data pipeline that turns one into [-1, 1] float32 NHWC batches.

A Source is either a uint8 array already at the target resolution (embedded, synthetic, mnist,
fashion_mnist: small enough for memory) or a list of files decoded on the fly (folder). The pipeline
shuffles lightweight keys (indices or file names) before any decoding, so resuming at step N skips
N batches of keys instead of decoding them again, and the order is a pure function of the seed.
"""

from __future__ import annotations

import dataclasses
import gzip
import os

import numpy as np
import tensorflow as tf

from dcgan_tf.config import Config

ASSETS_DIR = os.path.join(os.path.dirname(__file__), 'assets')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
IDX_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
AUTOTUNE = tf.data.AUTOTUNE


class DataError(ValueError):
    """Data that cannot be read; the message says what is wrong and what to do."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One data set: in-memory uint8 images [N, H, W, C], or image files to decode on the fly."""

    name: str
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    files: tuple[str, ...] = ()

    @property
    def num_examples(self) -> int:
        return len(self.images) if self.images is not None else len(self.files)


# --- IDX (MNIST-format) files ---


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (gzipped or raw): a big-endian header of dimensions, then uint8 data."""
    opener = gzip.open if path.endswith('.gz') else open
    try:
        with opener(path, 'rb') as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f'Cannot read IDX file {path}: {e}.') from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f'{path} is not an IDX file of unsigned bytes.')
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], 'big') for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f'{path} is truncated: header says {shape}, found {body.size} bytes.')
    return body.reshape(shape)


def _find_idx(data_dir: str, stem: str) -> str | None:
    for name in (stem, stem + '.gz', stem.replace('-idx', '.idx'), stem.replace('-idx', '.idx') + '.gz'):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    return None


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
    if data_dir and not data_dir.startswith('gs://') and _find_idx(data_dir, IDX_FILES[split][0]):
        return load_idx_split(data_dir, split)
    return _load_tfds(name, data_dir, split, download)


# --- synthetic shapes ---


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


# --- image preprocessing (shared by every source) ---


def center_crop_and_resize(image: tf.Tensor, resolution: int) -> tf.Tensor:
    """Largest centred square, resized with antialiasing; float32, in the input's value range."""
    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]  # [H, W, C] or a batch [N, H, W, C]
    side = tf.minimum(height, width)
    image = tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2, side, side)
    image = tf.image.resize(
        tf.cast(image, tf.float32), [resolution, resolution], method='bilinear', antialias=True
    )
    return image


def to_unit_range(image: tf.Tensor) -> tf.Tensor:
    """uint8-valued [0, 255] -> float32 [-1, 1], the range of G's tanh."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def _fit_array(images: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """Resizes/retints a whole in-memory uint8 array once, so batches need no per-step work."""
    if images.shape[-1] != channels:
        images = (
            np.repeat(images, channels, axis=-1)
            if images.shape[-1] == 1
            else (
                np.round(images[..., :3].astype(np.float32) @ [0.299, 0.587, 0.114])[..., None].astype(
                    np.uint8
                )
            )
        )
    if images.shape[1:3] != (resolution, resolution):
        resized = [
            center_crop_and_resize(tf.constant(chunk), resolution).numpy()
            for chunk in np.array_split(images, max(1, len(images) // 4096))
        ]
        images = np.clip(np.round(np.concatenate(resized)), 0, 255).astype(np.uint8)
    return images


# --- sources ---


def list_image_files(data_dir: str) -> list[str]:
    """Every image file under `data_dir`, recursively, in a stable (sorted) order."""
    files = []
    for root, _, names in tf.io.gfile.walk(data_dir):
        files.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(files)


def load_source(cfg: Config, split: str = 'train') -> Source:
    """The configured data set, fitted to --resolution and --channels when it lives in memory."""
    if cfg.dataset == 'folder':
        files = list_image_files(cfg.data_dir)
        if not files:
            raise DataError(f'--data_dir={cfg.data_dir} holds no images ({", ".join(IMAGE_EXTENSIONS)}).')
        return Source(name=f'folder:{cfg.data_dir}', files=tuple(files))
    labels = None
    if cfg.dataset == 'synthetic':
        images = make_shapes(
            cfg.synthetic_examples, cfg.resolution, cfg.channels, cfg.seed + (split != 'train')
        )
    elif cfg.dataset == 'embedded':
        images, labels = load_embedded(split)
    elif cfg.dataset in ('mnist', 'fashion_mnist'):
        images, labels = load_mnist_like(cfg.dataset, cfg.data_dir, split, cfg.download)
    else:
        raise DataError(f'Unknown --dataset={cfg.dataset}.')
    return Source(name=cfg.dataset, images=_fit_array(images, cfg.resolution, cfg.channels), labels=labels)


def _decode_file(path: tf.Tensor, resolution: int, channels: int) -> tf.Tensor:
    raw = tf.io.read_file(path)
    # expand_animations=False: the first frame of a GIF, so every file gives one 3-D image.
    image = tf.io.decode_image(raw, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return to_unit_range(center_crop_and_resize(image, resolution))


# --- the pipeline ---


def make_dataset(
    cfg: Config,
    source: Source,
    input_context: tf.distribute.InputContext | None = None,
    start_step: int = 0,
    repeat: bool = True,
) -> tf.data.Dataset:
    """Batches of float32 images [per-replica batch, H, W, C] in [-1, 1].

    Args:
      cfg: the run's Config (batch size, seed, resolution, channels, shuffle buffer).
      source: from `load_source`.
      input_context: given by `strategy.distribute_datasets_from_function`; each input pipeline
        reads its own shard and batches for one replica.
      start_step: global steps already trained; their batches are skipped so a resumed run sees
        exactly the data an uninterrupted run would.
      repeat: False for one pass (evaluation), True for training.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    replicas = input_context.num_replicas_in_sync if input_context else 1
    if cfg.batch_size % replicas:
        raise ValueError(
            f'--batch_size ({cfg.batch_size}) must be divisible by the number of replicas ({replicas}).'
        )
    per_replica_batch = cfg.batch_size // replicas
    per_pipeline_batch = cfg.batch_size // num_pipelines

    keys = tf.data.Dataset.range(source.num_examples)
    if source.images is None:
        keys = tf.data.Dataset.from_tensor_slices(list(source.files))
    keys = keys.shard(num_pipelines, pipeline_id)
    if repeat:
        # Shuffling keys is cheap, so the buffer spans the whole (sharded) data set up to a cap.
        buffer = max(1, min(source.num_examples // num_pipelines, cfg.shuffle_buffer))
        keys = keys.shuffle(buffer, seed=cfg.seed, reshuffle_each_iteration=True).repeat()
        keys = keys.skip(start_step * per_pipeline_batch)

    if source.images is not None:
        images = tf.constant(source.images)
        # Gather whole batches from memory: one op per batch instead of one per image.
        ds = keys.batch(per_replica_batch, drop_remainder=True)
        ds = ds.map(lambda idx: to_unit_range(tf.gather(images, idx)), num_parallel_calls=AUTOTUNE)
    else:
        ds = keys.map(lambda p: _decode_file(p, cfg.resolution, cfg.channels), num_parallel_calls=AUTOTUNE)
        # A corrupt image is skipped, not fatal (DESIGN.md section 5).
        ds = ds.ignore_errors()
        ds = ds.batch(per_replica_batch, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)


def take_images(source: Source, num: int, cfg: Config) -> np.ndarray:
    """The first `num` images of a source as float32 [-1, 1] (for grids and evaluation)."""
    if source.images is not None:
        return source.images[:num].astype(np.float32) / 127.5 - 1.0
    one_pass = cfg.replace(batch_size=1)
    ds = make_dataset(one_pass, source, repeat=False).unbatch().take(num)
    return np.stack(list(ds.as_numpy_iterator()))


def steps_for_epochs(epochs: int, num_examples: int, batch_size: int) -> int:
    """Whole batches in `epochs` passes (drop_remainder batching drops the partial one)."""
    return max(1, epochs * num_examples // batch_size)


def describe(source: Source) -> str:
    kind = 'in memory' if source.images is not None else 'decoded from files'
    return f'{source.name}: {source.num_examples} images ({kind})'
