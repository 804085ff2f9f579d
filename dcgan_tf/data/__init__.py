"""Training data: sources, and the tf.data pipeline that turns one into [-1, 1] float32 NHWC batches.

A Source is one of four kinds. `memory`: a uint8 array already at the target resolution (embedded,
synthetic, mnist, fashion_mnist, prepared TFRecords that fit in --cache_mb). `files`: image files
decoded on the fly (folder, the img_align_celeba folder). `lmdb`: encoded images under keys of an
LMDB database (the official LSUN downloads). `stream`: records read in a fixed order (any
tensorflow-datasets image data set, prepared TFRecords too large for memory).

The pipeline shuffles lightweight keys (indices, file names, LMDB keys, or for streams the still
encoded records) before any decoding, so resuming at step N skips N batches without decoding them,
and the order is a pure function of --seed. Images that cannot be decoded are skipped and counted
in `Source.skipped`; a resumed run is then shifted by the number skipped before its checkpoint
(prepared TFRecords, where bad files are dropped once, have none). A pass that yields no image at
all, and prepared shards that do not match their manifest, stop the run with one sentence.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import hashlib
import json
import os
import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf.config import Config, ConfigError, is_url, parse_crop
from dcgan_tf.data import image_headers

ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp')
IDX_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
# CelebA's list_eval_partition.txt numbers its splits.
CELEBA_PARTITIONS = {'train': 0, 'validation': 1, 'test': 2}
MANIFEST = 'manifest.json'
# Version 2 records each shard's byte length and SHA-256 beside its count; version 1 only counts.
MANIFEST_FORMAT = 'dcgan_tf.prepared/2'
MANIFEST_FORMAT_V1 = 'dcgan_tf.prepared/1'
TFRECORD_FRAMING = 16  # Bytes around each record: its length, the length's CRC32C, the data's CRC32C.
DIGEST_CHUNK = 16 * 2**20
SHARD_COUNT_BATCH = 256  # Streamed records are counted per batch of this many (per record costs more).
# Brackets around the sentence of a check that fails inside tf.data (see pipeline_error_message).
PIPELINE_ERROR = ('<<dcgan_tf data error: ', ' :dcgan_tf data error>>')
# Streams shuffle encoded records, not keys: 16k records of ~12-20 kB is a few hundred MB of memory.
STREAM_SHUFFLE_CAP = 16384
LMDB_FETCH_BATCH = 64  # Keys looked up per Python call: amortises numpy_function's overhead.
AUTOTUNE = tf.data.AUTOTUNE
# Plain Python called while tracing map functions: autograph must not rewrite it.
_parse_crop = tf.autograph.experimental.do_not_convert(parse_crop)


class DataError(ConfigError):
    """Data that cannot be read; the message says what is wrong and what to do.

    A ConfigError, so the command line reports it as bad input (one sentence, exit 2) without
    importing this module (and TensorFlow) for modes that never read training data.
    """


class SkipCounter:
    """Images skipped because they could not be decoded; thread-safe, read by the Trainer.

    The same bad file counts again on every epoch that reaches it. The first skip, and every
    tenfold after it (1, 10, 100, ...), is also logged.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def add(self, num: int) -> None:
        with self._lock:
            before, self._value = self._value, self._value + int(num)
            after = self._value
        if num > 0 and (before == 0 or len(str(after)) > len(str(before))):
            logging.warning('Skipped %d image(s) so far that could not be decoded.', after)

    @property
    def value(self) -> int:
        return self._value


@dataclasses.dataclass(frozen=True)
class Source:
    """One data set split (see the module docstring for the four kinds)."""

    name: str
    images: np.ndarray | None = None  # memory: uint8 [N, H, W, C] at the target resolution.
    labels: np.ndarray | None = None
    files: tuple[str, ...] = ()  # files: paths to decode.
    keys: np.ndarray | None = None  # lmdb: bytes keys (object array) of `lmdb_path`.
    lmdb_path: str = ''
    # stream: (shuffle, seed, num_pipelines, pipeline_id) -> Dataset of (encoded bytes, int64 label),
    # or of serialized prepared tf.Examples when `prepared` is true; holds `stream_size` records.
    stream_fn: Callable[[bool, int, int, int], tf.data.Dataset] | None = None
    stream_size: int = 0
    prepared: bool = False
    skipped: SkipCounter = dataclasses.field(default_factory=SkipCounter, compare=False, repr=False)

    @property
    def kind(self) -> str:
        if self.images is not None:
            return 'memory'
        if self.keys is not None:
            return 'lmdb'
        if self.stream_fn is not None:
            return 'stream'
        return 'files'

    @property
    def num_examples(self) -> int:
        return {
            'memory': lambda: len(self.images),
            'lmdb': lambda: len(self.keys),
            'stream': lambda: self.stream_size,
            'files': lambda: len(self.files),
        }[self.kind]()


def num_skipped(source: Source) -> int:
    """Undecodable images skipped so far while reading `source` (for logs and TensorBoard)."""
    return source.skipped.value


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
    if data_dir and not is_url(data_dir) and _find_idx(data_dir, IDX_FILES[split][0]):
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


def fit_image(image: tf.Tensor, crop: str, resolution: int) -> tf.Tensor:
    """Crops ([H, W, C] or [N, H, W, C]) as --crop says and resizes to a uint8 square.

    `center:N` takes the N x N centred square (the whole short side if it is smaller), as the
    classic CelebA recipe (108, then resize to 64). Rounding to uint8 here makes reading a source
    directly and reading its prepared TFRecords give the very same bytes.
    """
    kind, size = _parse_crop(crop)
    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]
    if kind == 'center':
        side = tf.minimum(height, width)
        if size:
            side = tf.minimum(side, size)
        image = tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2, side, side)
    image = tf.image.resize(
        tf.cast(image, tf.float32), [resolution, resolution], method='bilinear', antialias=True
    )
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Any decoded image (gray, gray+alpha, RGB, RGBA) -> `channels` (1 or 3); alpha is dropped."""
    num = tf.shape(image)[-1]
    if channels == 1:

        def gray() -> tf.Tensor:
            rgb = tf.cast(image[..., :3], tf.float32)
            return tf.cast(tf.round(tf.image.rgb_to_grayscale(rgb)), tf.uint8)

        out = tf.cond(num < 3, lambda: image[..., :1], gray)
    else:
        out = tf.cond(num < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])
    out.set_shape([None, None, channels])
    return out


def decode_and_fit(raw: tf.Tensor, crop: str, resolution: int, channels: int) -> tf.Tensor:
    """Encoded bytes (JPEG, PNG, GIF, BMP, WebP) -> uint8 [resolution, resolution, channels].

    TF 2.21's decode_image reads WebP (LSUN's LMDB format) but converts channels only for some
    formats, so it decodes as stored and `to_channels` converts. Raises on bytes that are no image.
    """
    # An enormous image (e.g. 20000x20000) fails here, from its header, before it can fill memory.
    raw = image_headers.guard_size(raw)
    # expand_animations=False: the first frame of a GIF, so every file gives one 3-D image.
    image = tf.io.decode_image(raw, channels=0, expand_animations=False)
    image.set_shape([None, None, None])
    return fit_image(to_channels(image, channels), crop, resolution)


def to_unit_range(image: tf.Tensor) -> tf.Tensor:
    """uint8-valued [0, 255] -> float32 [-1, 1], the range of G's tanh."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def _fit_array(images: np.ndarray, resolution: int, channels: int, crop: str = 'center') -> np.ndarray:
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
            fit_image(tf.constant(chunk), crop, resolution).numpy()
            for chunk in np.array_split(images, max(1, len(images) // 4096))
        ]
        images = np.concatenate(resized)
    return images


# --- splits ---


def _hold_out(items, split: str, holdout: int, what: str):
    """--eval_holdout: the last `holdout` items (a fixed slice) are the test split, the rest train."""
    if not holdout:
        return items
    if holdout >= len(items):
        raise DataError(f'--eval_holdout={holdout} leaves no training data: {what} has {len(items)}.')
    return items[:-holdout] if split == 'train' else items[-holdout:]


# --- folders (and the img_align_celeba folder) ---


def _local_image_files(data_dir: str) -> tuple[list[str], int]:
    """Image files under a local folder, following symlinks but reaching each folder and file once.

    Returns the files (sorted) and how many folders or files were left out as second names of ones
    already listed: a link back up the tree (sub/loop -> ..) would otherwise be walked until the path
    grew too long, counting every file dozens of times.
    """

    def identity(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)  # Follows links: a link and its target are one folder or file.
        except OSError:
            return None  # A dangling link: listed, then skipped (and counted) like any unreadable file.
        return st.st_dev, st.st_ino

    seen_dirs, left_out, candidates = {identity(data_dir)}, 0, []
    for root, dirs, names in os.walk(data_dir, followlinks=True):
        kept = []
        for name in sorted(dirs):  # Sorted, so which of two names for a folder is kept never varies.
            key = identity(os.path.join(root, name))
            if key is None or key in seen_dirs:
                left_out += key is not None
                continue
            seen_dirs.add(key)
            kept.append(name)
        dirs[:] = kept
        candidates.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    files, seen_files = [], set()
    for path in sorted(candidates):
        key = identity(path)
        if key is not None and key in seen_files:
            left_out += 1
            continue
        seen_files.add(key)
        files.append(path)
    return files, left_out


def list_image_files(data_dir: str) -> list[str]:
    """Every image file under `data_dir`, recursively, in a stable (sorted) order.

    Symlinked files and folders are followed, but a folder or file reached under a second name (a
    symlink loop, an alias, a hard link) is listed once, with a warning. URL-style paths go to gfile.
    """
    if is_url(data_dir):
        files = []
        for root, _, names in tf.io.gfile.walk(data_dir):
            files.extend(os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
        return sorted(files)
    files, left_out = _local_image_files(data_dir)
    if left_out:
        logging.warning(
            '--data_dir=%s: left out %d symlinked folder(s) or file(s) that lead to ones already listed '
            '(a symlink loop or a second name); each image is read once.',
            data_dir,
            left_out,
        )
    return files


def _check_some_decode(cfg: Config, sample: list, read: Callable[[object], bytes], what: str) -> None:
    """Fails before training when none of a few evenly spaced items gives an image.

    Each item goes through the pipeline's own decode (size guard, crop, resize), so an item that
    passes here is one the pipeline uses: the pipeline cannot then skip every item, forever.
    """
    too_large = 0
    for item in sample:
        try:
            decode_and_fit(read(item), cfg.crop, cfg.resolution, cfg.channels)
            return
        except (tf.errors.OpError, OSError) as e:
            too_large += image_headers.TOO_LARGE in str(e)
    if too_large:
        raise DataError(
            f'No sampled item of {what} can be used: {too_large} of {len(sample)} are over the size limit '
            f'of {image_headers.MAX_PIXELS:,} pixels (which keeps a decompression bomb from filling memory) '
            f'and the rest do not decode; shrink the images below that limit.'
        )
    raise DataError(f'None of {len(sample)} sampled items of {what} decodes as an image: wrong data?')


def _sample(items, num: int = 16) -> list:
    return [items[i] for i in np.linspace(0, len(items) - 1, min(num, len(items))).astype(int)]


def _folder_source(
    cfg: Config, split: str, name: str = 'folder', partitions: dict[str, int] | None = None
) -> Source:
    files = list_image_files(cfg.data_dir)
    if not files:
        raise DataError(f'--data_dir={cfg.data_dir} holds no images ({", ".join(IMAGE_EXTENSIONS)}).')
    if partitions is not None:  # CelebA's official train/validation/test partition.
        wanted = CELEBA_PARTITIONS['train' if cfg.eval_holdout else split]
        files = [f for f in files if partitions.get(os.path.basename(f)) == wanted]
        if not files:
            raise DataError(f'No image of {cfg.data_dir} is in the {split} part of list_eval_partition.txt.')
    files = _hold_out(files, split, cfg.eval_holdout, cfg.data_dir)
    _check_some_decode(cfg, _sample(files), lambda f: tf.io.read_file(f), f'--data_dir={cfg.data_dir}')
    return Source(name=f'{name}:{cfg.data_dir}', files=tuple(files))


def _celeba_folder(cfg: Config, split: str) -> Source | None:
    """CelebA from its img_align_celeba/ folder (the usual escape when tfds' download fails)."""
    if not cfg.data_dir or is_url(cfg.data_dir) or not os.path.isdir(cfg.data_dir):
        return None
    image_dir = cfg.data_dir
    if os.path.isdir(os.path.join(cfg.data_dir, 'img_align_celeba')):
        image_dir = os.path.join(cfg.data_dir, 'img_align_celeba')
    if not any(n.lower().endswith('.jpg') for n in os.listdir(image_dir)):
        return None  # A tfds data_dir, not the folder.
    partitions = None
    for folder in (image_dir, os.path.dirname(os.path.abspath(image_dir))):
        path = os.path.join(folder, 'list_eval_partition.txt')
        if os.path.isfile(path):
            with open(path) as f:
                partitions = dict((n, int(p)) for n, p in (line.split() for line in f if line.strip()))
            break
    return _folder_source(cfg.replace(data_dir=image_dir), split, 'celeb_a folder', partitions)


# --- tensorflow-datasets ---


def find_image_feature(features) -> str:
    """The key of the top-level image feature of a tfds FeaturesDict ('image' when there are several)."""
    import tensorflow_datasets as tfds

    keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not keys:
        raise DataError(f'This tfds data set has no image feature (features: {", ".join(features)}).')
    return 'image' if 'image' in keys else keys[0]


def _tfds_split(builder, split: str, holdout: int) -> str:
    splits = dict(builder.info.splits)
    if holdout:
        return f'train[:-{holdout}]' if split == 'train' else f'train[-{holdout}:]'
    if not splits or split in splits:  # tfds.testing.mock_data reports no splits.
        return split
    for other in ('test', 'validation', 'train') if split != 'train' else ():
        if other in splits:
            logging.info('%s has no %s split; using %s.', builder.name, split, other)
            return other
    raise DataError(f'{builder.name} has no {split} split (it has {", ".join(splits)}).')


def _tfds_source(cfg: Config, name: str, split: str) -> Source:
    import tensorflow_datasets as tfds

    hint = (
        ' For CelebA, pass the folder holding img_align_celeba/ as --data_dir instead.'
        if name == 'celeb_a'
        else ''
    )
    try:
        builder = tfds.builder(name, data_dir=cfg.data_dir or None)
        if cfg.download:
            config = tfds.download.DownloadConfig(manual_dir=cfg.tfds_manual_dir or None)
            builder.download_and_prepare(download_config=config)
        image_key = find_image_feature(builder.info.features)
        tfds_split = _tfds_split(builder, split, cfg.eval_holdout)
        has_label = isinstance(dict(builder.info.features.items()).get('label'), tfds.features.ClassLabel)

        def stream_fn(shuffle: bool, seed: int, num_pipelines: int, pipeline_id: int) -> tf.data.Dataset:
            ds = builder.as_dataset(
                split=tfds_split,
                shuffle_files=shuffle,
                decoders={image_key: tfds.decode.SkipDecoding()},  # Decoded later, after the skip.
                read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
            )
            ds = ds.shard(num_pipelines, pipeline_id) if num_pipelines > 1 else ds
            no_label = tf.constant(-1, tf.int64)
            return ds.map(
                lambda ex: (ex[image_key], tf.cast(ex['label'], tf.int64) if has_label else no_label)
            )

        try:
            size = builder.info.splits[tfds_split].num_examples
        except (KeyError, ValueError):  # mock_data: no split info, so count (keys only, no decoding).
            size = int(stream_fn(False, 0, 1, 0).reduce(np.int64(0), lambda n, *_: n + 1))
    except DataError:
        raise
    except Exception as e:  # tfds raises many types for "not downloaded and no network".
        first = str(e).splitlines()[0] if str(e) else ''
        raise DataError(
            f'Could not load {name} through tensorflow-datasets ({type(e).__name__}: {first}).{hint}'
        ) from e
    if not size:
        raise DataError(f'{name} split {tfds_split} is empty.')
    return Source(name=f'tfds:{name}[{tfds_split}]', stream_fn=stream_fn, stream_size=size)


# --- LMDB (the official LSUN downloads) ---

_LMDB_ENVS: dict[str, object] = {}
_LMDB_LOCK = threading.Lock()


def _open_lmdb(path: str):
    import lmdb  # Only the lsun_lmdb source needs it.

    with _LMDB_LOCK:
        if path not in _LMDB_ENVS:
            try:
                _LMDB_ENVS[path] = lmdb.open(
                    path, readonly=True, lock=False, readahead=False, meminit=False, max_readers=512
                )
            except lmdb.Error as e:
                raise DataError(f'Cannot open LMDB database {path}: {e}.') from e
        return _LMDB_ENVS[path]


def _lmdb_fetch(path: bytes, keys: np.ndarray) -> np.ndarray:
    """Values of `keys` (b'' for a missing one, which then fails to decode and is skipped)."""
    with _open_lmdb(path.decode()).begin() as txn:
        # b'' (a pass end) is no LMDB key: LMDB refuses empty keys.
        return np.array([(txn.get(bytes(k)) if len(k) else None) or b'' for k in keys], dtype=object)


def _lmdb_source(cfg: Config, split: str) -> Source:
    env = _open_lmdb(cfg.data_dir)
    with env.begin() as txn:
        keys = np.array(list(txn.cursor().iternext(keys=True, values=False)), dtype=object)
    if not len(keys):
        raise DataError(f'The LMDB database {cfg.data_dir} is empty.')
    keys = _hold_out(keys, split, cfg.eval_holdout, cfg.data_dir)
    fetch_one = lambda k: _lmdb_fetch(cfg.data_dir.encode(), np.array([k], dtype=object))[0]  # noqa: E731
    _check_some_decode(cfg, _sample(keys), fetch_one, cfg.data_dir)
    return Source(name=f'lsun_lmdb:{cfg.data_dir}', keys=keys, lmdb_path=cfg.data_dir)


# --- prepared TFRecords (--mode=prepare) ---


def parse_prepared(serialized: tf.Tensor, resolution: int, channels: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of serialized prepared tf.Examples -> uint8 images [N, H, W, C] and int64 labels [N]."""
    features = tf.io.parse_example(
        serialized,
        {
            'image': tf.io.FixedLenFeature([], tf.string),
            'label': tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        },
    )
    pixels = tf.io.decode_raw(features['image'], tf.uint8)
    return tf.reshape(pixels, [-1, resolution, resolution, channels]), features['label']


def prepared_example(image: bytes, label: int) -> bytes:
    """One prepared record: a tf.Example of the raw uint8 pixels and the label (-1: none)."""
    feature = {
        'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def file_digest(path: str) -> tuple[int, str]:
    """Byte length and SHA-256 (hex) of a file, read through gfile (local, gs://) in chunks."""
    digest, length = hashlib.sha256(), 0
    with tf.io.gfile.GFile(path, 'rb') as f:
        while chunk := f.read(DIGEST_CHUNK):
            digest.update(chunk)  # hashlib releases the GIL: shards hash in parallel threads.
            length += len(chunk)
    return length, digest.hexdigest()


def _redo(folder: str) -> str:
    return f're-run --mode=prepare --out_dir={folder}'


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _manifest_problem(manifest: dict) -> str | None:
    """What makes a manifest unusable (missing or ill-typed fields, counts that do not add up), or None."""
    if not (_is_count(manifest.get('resolution')) and _is_count(manifest.get('channels'))):
        return 'no valid resolution and channels'
    splits = manifest.get('splits')
    if not isinstance(splits, dict) or not splits:
        return 'no splits'
    v2 = manifest['format'] == MANIFEST_FORMAT
    for name, entry in splits.items():
        shards = entry.get('shards') if isinstance(entry, dict) else None
        if not isinstance(shards, list) or not _is_count(entry.get('num_examples')):
            return f'its {name} split lacks a list of shards or a count'
        for shard in shards:
            file = shard.get('file') if isinstance(shard, dict) else None
            # A plain file name: a manifest cannot point at files outside its folder.
            if (
                not isinstance(file, str)
                or not file
                or os.path.basename(file) != file
                or file.startswith('.')
            ):
                return f'its {name} split names a shard that is not a file of the folder'
            if not _is_count(shard.get('num_examples')) or (
                v2 and not (_is_count(shard.get('bytes')) and isinstance(shard.get('sha256'), str))
            ):
                return f'shard {file} lacks its count{", length or checksum" if v2 else ""}'
        total = sum(shard['num_examples'] for shard in shards)
        if total != entry['num_examples']:
            return (
                f'its {name} split says {entry["num_examples"]:,} images but its shards add up to {total:,}'
            )
    return None


def read_manifest(folder: str) -> dict:
    """<folder>/manifest.json, its fields and counts checked (DataError naming what is wrong)."""
    path = os.path.join(folder, MANIFEST)
    if not tf.io.gfile.exists(path):
        raise DataError(f'{folder} holds no {MANIFEST}; write it with --mode=prepare --out_dir={folder}.')
    try:
        with tf.io.gfile.GFile(path) as f:
            manifest = json.load(f)
    except (ValueError, tf.errors.OpError) as e:  # UnicodeDecodeError is a ValueError.
        raise DataError(f'{path} is not readable JSON ({str(e).splitlines()[0]}); {_redo(folder)}.') from e
    if not isinstance(manifest, dict) or manifest.get('format') not in (MANIFEST_FORMAT, MANIFEST_FORMAT_V1):
        raise DataError(f'{path} is not a dcgan_tf prepared-data manifest ({MANIFEST_FORMAT}).')
    problem = _manifest_problem(manifest)
    if problem:
        raise DataError(f'{path} is damaged or was edited ({problem}); {_redo(folder)}.')
    return manifest


def _record_bytes(resolution: int, channels: int) -> tuple[int, int]:
    """Fewest and most bytes one prepared record takes in a shard (labels 0 and -1 bound the label's size)."""
    pixels = b'\0' * (resolution * resolution * channels)
    return tuple(TFRECORD_FRAMING + len(prepared_example(pixels, label)) for label in (0, -1))


def _file_length(path: str) -> int | None:
    try:
        return tf.io.gfile.stat(path).length
    except tf.errors.NotFoundError:
        return None


def _check_shard_files(folder: str, shards: list[dict], resolution: int, channels: int) -> list[str]:
    """The shards' paths, each found with the length its entry records and room for its count.

    One stat per shard (in parallel, for gs://), so it is cheap at start-up whatever the data's size.
    """
    paths = [os.path.join(folder, shard['file']) for shard in shards]
    with concurrent.futures.ThreadPoolExecutor(max(1, min(16, len(paths)))) as pool:
        lengths = list(pool.map(_file_length, paths))
    fewest, most = _record_bytes(resolution, channels)
    for path, shard, length in zip(paths, shards, lengths, strict=True):
        if length is None:
            raise DataError(f'Prepared shard {path} is missing; {_redo(folder)}.')
        if 'bytes' in shard and length != shard['bytes']:
            raise DataError(
                f'Prepared shard {path} holds {length:,} bytes, not the {shard["bytes"]:,} that its '
                f'{MANIFEST} records (truncated or changed since --mode=prepare wrote it); {_redo(folder)}.'
            )
        count = shard['num_examples']
        if not count * fewest <= length <= count * most:
            raise DataError(
                f'{MANIFEST} says prepared shard {path} holds {count:,} images, but at '
                f'{resolution}x{resolution}x{channels} those take {count * fewest:,} to {count * most:,} '
                f'bytes and the shard has {length:,} (the manifest was edited or the shard changed); '
                f'{_redo(folder)}.'
            )
    return paths


def _read_shard(folder: str, path: str, shard: dict, resolution: int, channels: int):
    """A whole shard as (uint8 images, int64 labels), checked against its checksum and count."""
    if 'sha256' in shard and file_digest(path)[1] != shard['sha256']:
        raise DataError(
            f'Prepared shard {path} does not match the SHA-256 checksum in its {MANIFEST} (changed since '
            f'--mode=prepare wrote it); {_redo(folder)}.'
        )
    ds = tf.data.TFRecordDataset(path).batch(1024)
    ds = ds.map(lambda s: parse_prepared(s, resolution, channels), num_parallel_calls=AUTOTUNE)
    try:
        parts = list(ds.as_numpy_iterator())
    except tf.errors.OpError as e:  # A bad CRC32C (DataLossError) or a record of another size.
        raise DataError(
            f'Prepared shard {path} is corrupt ({e.message.splitlines()[0]}); {_redo(folder)}.'
        ) from e
    images = np.zeros((0, resolution, resolution, channels), np.uint8)
    labels = np.zeros(0, np.int64)
    if parts:
        images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if len(images) != shard['num_examples']:
        raise DataError(
            f'Prepared shard {path} holds {len(images):,} images, not the {shard["num_examples"]:,} that its '
            f'{MANIFEST} records; {_redo(folder)}.'
        )
    return images, labels


def _counted_shard(folder: str, path: tf.Tensor, expected: tf.Tensor) -> tf.data.Dataset:
    """A shard's records, failing with a PIPELINE_ERROR sentence at its end unless it gave `expected`.

    TensorFlow checks each record's CRC32C; a corrupt record ends the shard early (ignore_errors),
    so the count names the shard either way. Counted per batch of records: a tf.data function run
    per record cut the streamed rate to about a quarter.
    """
    end = tf.data.Dataset.from_tensors((tf.constant([], tf.string), tf.constant(True)))
    batches = tf.data.TFRecordDataset(path).ignore_errors().batch(SHARD_COUNT_BATCH)
    batches = batches.map(lambda records: (records, tf.constant(False))).concatenate(end)

    def fail(count: tf.Tensor) -> tf.Tensor:
        message = tf.strings.join([
            PIPELINE_ERROR[0], 'Prepared shard ', path, ' gave ', tf.strings.as_string(count),
            ' readable images, not the ', tf.strings.as_string(expected), f' that its {MANIFEST} records '
            f'(corrupt or changed since --mode=prepare wrote it); {_redo(folder)}.', PIPELINE_ERROR[1],
        ])  # fmt: skip
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.constant(False)

    def count(total: tf.Tensor, batch) -> tuple[tf.Tensor, tf.Tensor]:
        records, is_end = batch
        ok = tf.logical_or(tf.logical_not(is_end), tf.equal(total, expected))
        checked = tf.cond(ok, lambda: tf.constant(True), lambda: fail(total))
        with tf.control_dependencies([checked]):
            return total + tf.size(records, tf.int64), tf.identity(records)

    return batches.scan(tf.constant(0, tf.int64), count).unbatch()


def _tfrecord_source(cfg: Config, folder: str, split: str) -> Source:
    """Prepared data, checked against its manifest.

    At start-up: the manifest's fields and sums, and each shard's presence, byte length and room for
    its count (a stat per shard). Read into memory: each shard's SHA-256 and record count too.
    Streamed: TensorFlow's per-record CRC32C and each shard's count, whenever a shard has been read
    through (the SHA-256 would cost a full read of data too large for memory at every start).
    """
    manifest = read_manifest(folder)
    if (manifest['resolution'], manifest['channels']) != (cfg.resolution, cfg.channels):
        raise DataError(
            f'{folder} was prepared at resolution {manifest["resolution"]} with {manifest["channels"]} '
            f'channel(s), not --resolution={cfg.resolution} --channels={cfg.channels}: match those flags.'
        )
    if manifest['format'] == MANIFEST_FORMAT_V1:
        logging.warning(
            '%s was written by an earlier --mode=prepare that recorded no shard lengths or checksums, so '
            'its shards are checked only for presence and counts; %s to have them verified.',
            os.path.join(folder, MANIFEST),
            _redo(folder),
        )
    if split not in manifest['splits']:
        logging.info('%s has no %s split; using train.', folder, split)
        split = 'train'
    entry = manifest['splits'][split]
    size = entry['num_examples']
    if not size:
        raise DataError(f'{folder} holds no {split} images.')
    res, ch = cfg.resolution, cfg.channels
    files = _check_shard_files(folder, entry['shards'], res, ch)
    name = f'tfrecord:{folder} ({split}, from {manifest.get("source", "?")})'
    if size * res * res * ch <= cfg.cache_mb * 2**20:
        # Fits: read once into memory; batches are then gathered by index (fastest, exact resume).
        read = lambda job: _read_shard(folder, *job, res, ch)  # noqa: E731
        with concurrent.futures.ThreadPoolExecutor(max(1, min(len(files), os.cpu_count() or 1, 8))) as pool:
            parts = list(pool.map(read, zip(files, entry['shards'], strict=True)))
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return Source(name=name, images=images, labels=labels if (labels >= 0).any() else None)
    counts = [shard['num_examples'] for shard in entry['shards']]
    counted = lambda path, expected: _counted_shard(folder, path, expected)  # noqa: E731

    def stream_fn(shuffle: bool, seed: int, num_pipelines: int, pipeline_id: int) -> tf.data.Dataset:
        shards = tf.data.Dataset.from_tensor_slices((files, tf.constant(counts, tf.int64)))
        if num_pipelines > 1 and len(files) >= num_pipelines:
            shards = shards.shard(num_pipelines, pipeline_id)  # Each worker reads its own files.
        if shuffle:
            shards = shards.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
            ds = shards.interleave(counted, cycle_length=min(8, len(files)), num_parallel_calls=AUTOTUNE)
        else:
            ds = shards.flat_map(counted)
        if num_pipelines > 1 and len(files) < num_pipelines:
            ds = ds.shard(num_pipelines, pipeline_id)
        return ds

    return Source(name=name, stream_fn=stream_fn, stream_size=size, prepared=True)


# --- all sources ---


def load_source(cfg: Config, split: str = 'train') -> Source:
    """The configured data set split ('train' or 'test'), fitted to --resolution/--channels in memory."""
    dataset = cfg.dataset
    if dataset == 'folder':
        return _folder_source(cfg, split)
    if dataset == 'celeb_a':
        return _celeba_folder(cfg, split) or _tfds_source(cfg, 'celeb_a', split)
    if dataset == 'lsun_lmdb':
        return _lmdb_source(cfg, split)
    if dataset.startswith('lsun/'):
        return _tfds_source(cfg, dataset, split)
    if dataset.startswith('tfds:'):
        return _tfds_source(cfg, dataset[len('tfds:') :], split)
    if dataset.startswith('tfrecord:'):
        return _tfrecord_source(cfg, dataset[len('tfrecord:') :], split)
    labels = None
    if dataset == 'synthetic':
        images = make_shapes(
            cfg.synthetic_examples, cfg.resolution, cfg.channels, cfg.seed + (split != 'train')
        )
    elif dataset == 'embedded':
        images, labels = load_embedded(split)
    elif dataset in ('mnist', 'fashion_mnist'):
        images, labels = load_mnist_like(dataset, cfg.data_dir, split, cfg.download)
    else:
        raise DataError(f'Unknown --dataset={dataset}.')
    if cfg.eval_holdout and dataset != 'synthetic':
        labels = _hold_out(labels, split, cfg.eval_holdout, dataset)
        images = _hold_out(images, split, cfg.eval_holdout, dataset)
    return Source(
        name=dataset, images=_fit_array(images, cfg.resolution, cfg.channels, cfg.crop), labels=labels
    )


# --- the pipeline ---


def _raw_records(source: Source, keys: tf.data.Dataset) -> tf.data.Dataset:
    """Keys (file names or LMDB keys) -> encoded image bytes, in the same order."""
    if source.kind == 'files':
        return keys.map(tf.io.read_file, num_parallel_calls=AUTOTUNE)
    path = source.lmdb_path.encode()
    fetch = lambda k: tf.numpy_function(_lmdb_fetch, [path, k], tf.string, stateful=False)  # noqa: E731
    return keys.batch(LMDB_FETCH_BATCH).map(fetch, num_parallel_calls=AUTOTUNE).unbatch()


def _fetch_marked(source: Source, keys: tf.data.Dataset) -> tf.data.Dataset:
    """(key, is pass end) -> (encoded bytes, is pass end); a pass end reads nothing."""
    if source.kind == 'files':

        def read(key: tf.Tensor, end: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return tf.cond(end, lambda: tf.constant(b''), lambda: tf.io.read_file(key)), end

        return keys.map(read, num_parallel_calls=AUTOTUNE)
    path = source.lmdb_path.encode()

    def fetch(batch: tf.Tensor, ends: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.numpy_function(_lmdb_fetch, [path, batch], tf.string, stateful=False), ends

    return keys.batch(LMDB_FETCH_BATCH).map(fetch, num_parallel_calls=AUTOTUNE).unbatch()


def pipeline_error_message(error: BaseException) -> str | None:
    """The sentence of a data check that failed inside tf.data (carried by an OpError), else None.

    tf.data can only raise an OpError, so the checks that run while training (a pass that gave no
    image, a prepared shard that changed) wrap their sentence in PIPELINE_ERROR tags; the caller
    shows just the sentence, as it would a DataError.
    """
    text = str(error)
    start, end = text.find(PIPELINE_ERROR[0]), text.find(PIPELINE_ERROR[1])
    if start < 0 or end < start:
        return None
    return text[start + len(PIPELINE_ERROR[0]) : end]


def _pipeline_error(sentence: str) -> str:
    return f'{PIPELINE_ERROR[0]}{sentence}{PIPELINE_ERROR[1]}'


def _pipeline_share(num: int, num_pipelines: int, pipeline_id: int) -> int:
    """Items that Dataset.shard(num_pipelines, pipeline_id) keeps of `num`."""
    return len(range(pipeline_id, num, num_pipelines))


def _with_pass_ends(keys: tf.data.Dataset) -> tf.data.Dataset:
    """(key, False) for each key of one pass, then ('', True): the end of the pass, repeated forever.

    Appended after the shuffle, the marker leaves the keys' order exactly as `keys.repeat()` has it.
    """
    end = tf.data.Dataset.from_tensors((tf.constant(b''), tf.constant(True)))
    return keys.map(lambda key: (key, tf.constant(False))).concatenate(end).repeat()


def decode_counted(
    cfg: Config, source: Source, records: tf.data.Dataset, per_pass: int = 0, whole_first_pass: bool = False
) -> tf.data.Dataset:
    """(encoded bytes, is pass end) -> (uint8 image, skipped before it), in order.

    Undecodable images are dropped and counted (a gap in the positions of the survivors). A pass
    end that follows a whole pass without one image fails with a PIPELINE_ERROR sentence: every
    item became unreadable (a folder deleted mid-run, a network mount gone) or this input
    pipeline's share holds no image, and skipping on would wait for an image forever.
    """
    res, ch = cfg.resolution, cfg.channels
    blank = tf.zeros([res, res, ch], tf.uint8)

    def decode(i: tf.Tensor, record: tf.Tensor, end: tf.Tensor):
        image = tf.cond(end, lambda: blank, lambda: decode_and_fit(record, cfg.crop, res, ch))
        return i, image, end

    ds = records.enumerate().map(lambda i, el: decode(i, *el), num_parallel_calls=AUTOTUNE)
    ds = ds.ignore_errors()  # A corrupt image is skipped, not fatal (DESIGN.md section 5).
    message = _pipeline_error(
        f'No image of {source.name} could be read and decoded in a whole pass over its {per_pass} items '
        f'(deleted, moved or unreadable since the start?); fix the data and rerun the same command to '
        f'resume from the last checkpoint.'
    )

    def count(state, element):
        last, pending, images, ends = state  # last position seen, skips not yet reported
        i, image, end = element
        empty_pass = tf.logical_and(end, tf.logical_and(ends > 0, tf.equal(images, 0)))
        check = tf.debugging.Assert(tf.logical_not(empty_pass), [message])
        gap = pending + i - last - 1
        with tf.control_dependencies([check]):
            state = (
                tf.identity(i),
                tf.where(end, gap, tf.constant(0, tf.int64)),
                tf.where(end, tf.constant(0, tf.int64), images + 1),
                ends + tf.cast(end, tf.int64),
            )
        return state, (image, tf.where(end, tf.constant(0, tf.int64), gap), end)

    zero = tf.constant(0, tf.int64)
    # A resumed run may start inside a pass: the first pass end is then checked only if its pass was whole.
    ends = tf.constant(int(whole_first_pass), tf.int64)
    ds = ds.scan((tf.constant(-1, tf.int64), zero, zero, ends), count)
    images_only = lambda image, gap, end: tf.logical_not(end)  # noqa: E731
    drop_end = lambda image, gap, end: (image, gap)  # noqa: E731
    return ds.filter(images_only).map(drop_end)


def _drop_label(raw: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
    """Training needs images only; labels ride along in streams for --mode=prepare."""
    del label
    return raw


def _count_and_scale(counter: SkipCounter, images: tf.Tensor, gaps: tf.Tensor) -> tf.Tensor:
    """Adds a batch's skipped images to `counter` (one Python call, only when there are some); scales."""
    skipped = tf.reduce_sum(gaps)

    def record() -> tf.Tensor:
        return tf.numpy_function(lambda n: (counter.add(n), n)[1], [skipped], tf.int64)

    done = tf.cond(skipped > 0, record, lambda: skipped)
    with tf.control_dependencies([done]):
        return to_unit_range(images)


def make_dataset(
    cfg: Config,
    source: Source,
    input_context: tf.distribute.InputContext | None = None,
    start_step: int = 0,
    repeat: bool = True,
) -> tf.data.Dataset:
    """Batches of float32 images [per-replica batch, H, W, C] in [-1, 1].

    Args:
      cfg: the run's Config (batch size, seed, resolution, channels, crop, shuffle buffer).
      source: from `load_source`.
      input_context: given by `strategy.distribute_datasets_from_function`; each input pipeline
        reads its own shard and batches for one replica.
      start_step: global steps already trained; their batches are skipped (before decoding) so a
        resumed run sees exactly the data an uninterrupted run would.
      repeat: False for one pass in the source's order (evaluation, prepare), True for training.
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

    # --- keys (or still encoded records): shard, shuffle, repeat, skip ---
    kind = source.kind
    decoded = kind in ('files', 'lmdb') or (kind == 'stream' and not source.prepared)
    if kind == 'stream':
        keys = source.stream_fn(repeat, cfg.seed, num_pipelines, pipeline_id)
        keys = keys if source.prepared else keys.map(_drop_label)
        buffer = min(cfg.shuffle_buffer, STREAM_SHUFFLE_CAP)
    else:
        if kind == 'memory':
            keys = tf.data.Dataset.range(source.num_examples)
        elif kind == 'files':
            keys = tf.data.Dataset.from_tensor_slices(list(source.files))
        else:
            keys = tf.data.Dataset.from_tensor_slices(tf.constant(list(source.keys), tf.string))
        keys = keys.shard(num_pipelines, pipeline_id)
        # Shuffling keys is cheap, so the buffer spans the whole (sharded) data set up to a cap.
        buffer = cfg.shuffle_buffer
    per_pass = _pipeline_share(source.num_examples, num_pipelines, pipeline_id)
    skip = start_step * per_pipeline_batch
    if repeat:
        buffer = max(1, min(source.num_examples // num_pipelines, buffer))
        keys = keys.shuffle(buffer, seed=cfg.seed, reshuffle_each_iteration=True)
        if decoded:
            # Each pass ends with a marker (skipped with the keys), so a pass without one image is noticed.
            keys = _with_pass_ends(keys)
            skip += skip // max(1, per_pass)
        elif kind == 'memory':  # Prepared streams repeat their file list.
            keys = keys.repeat()
        keys = keys.skip(skip)
    elif decoded:
        keys = keys.map(lambda key: (key, tf.constant(False)))

    # --- fetch and decode ---
    if kind == 'memory':
        images = tf.constant(source.images)
        # Gather whole batches from memory: one op per batch instead of one per image.
        ds = keys.batch(per_replica_batch, drop_remainder=True)
        ds = ds.map(lambda idx: to_unit_range(tf.gather(images, idx)), num_parallel_calls=AUTOTUNE)
    elif not decoded:  # prepared records
        # Batch first, then parse and decode_raw whole batches: one op per batch.
        res, ch = cfg.resolution, cfg.channels
        ds = keys.batch(per_replica_batch, drop_remainder=True)
        ds = ds.map(lambda s: to_unit_range(parse_prepared(s, res, ch)[0]), num_parallel_calls=AUTOTUNE)
    else:
        records = keys if kind == 'stream' else _fetch_marked(source, keys)
        whole = skip % (per_pass + 1) == 0  # The first pass end follows a whole pass.
        ds = decode_counted(cfg, source, records, per_pass, whole).batch(
            per_replica_batch, drop_remainder=True
        )
        ds = ds.map(lambda x, gaps: _count_and_scale(source.skipped, x, gaps), num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)


def fitted_examples(cfg: Config, source: Source, start: int = 0, stop: int | None = None) -> tf.data.Dataset:
    """Examples [start, stop) of `source` in order, as (uint8 [H, W, C], int64 label); bad ones dropped.

    What --mode=prepare writes: the very pixels `make_dataset` would scale to [-1, 1].
    """
    stop = source.num_examples if stop is None else stop
    kind = source.kind
    if kind == 'memory':
        labels = source.labels if source.labels is not None else np.full(source.num_examples, -1)
        return tf.data.Dataset.from_tensor_slices(
            (source.images[start:stop], labels[start:stop].astype(np.int64))
        )
    if kind == 'stream':
        records = source.stream_fn(False, cfg.seed, 1, 0).skip(start).take(stop - start)
        if source.prepared:
            parse = lambda s: parse_prepared(s, cfg.resolution, cfg.channels)  # noqa: E731
            return records.batch(1024).map(parse).unbatch()
    else:
        if kind == 'files':
            keys = tf.data.Dataset.from_tensor_slices(list(source.files[start:stop]))
        else:
            keys = tf.data.Dataset.from_tensor_slices(tf.constant(list(source.keys[start:stop]), tf.string))
        records = _raw_records(source, keys).map(lambda r: (r, tf.constant(-1, tf.int64)))
    fit = lambda r, label: (decode_and_fit(r, cfg.crop, cfg.resolution, cfg.channels), label)  # noqa: E731
    return records.map(fit, num_parallel_calls=AUTOTUNE).ignore_errors()


def take_images(source: Source, num: int, cfg: Config) -> np.ndarray:
    """The first `num` images of a source as float32 [-1, 1] (for grids and evaluation)."""
    if source.images is not None:
        return source.images[:num].astype(np.float32) / 127.5 - 1.0
    ds = fitted_examples(cfg, source, 0, min(source.num_examples, num * 2 + 16)).take(num)
    images = [x for x, _ in ds.as_numpy_iterator()]
    if len(images) < num:  # Many bad files near the start: take the whole source.
        images = [x for x, _ in fitted_examples(cfg, source).take(num).as_numpy_iterator()]
    return np.stack(images).astype(np.float32) / 127.5 - 1.0


def steps_for_epochs(epochs: int, num_examples: int, batch_size: int) -> int:
    """Whole batches in `epochs` passes (drop_remainder batching drops the partial one)."""
    return max(1, epochs * num_examples // batch_size)


def describe(source: Source) -> str:
    kind = {
        'memory': 'in memory',
        'files': 'decoded from files',
        'lmdb': 'decoded from LMDB',
        'stream': 'streamed' + (' prepared records' if source.prepared else ', decoded on the fly'),
    }[source.kind]
    return f'{source.name}: {source.num_examples} images ({kind})'
