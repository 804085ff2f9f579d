"""What every source shares: the error types, the skip counter, and the Source classes the pipeline reads.

A Source is one split, of one of four runtime kinds, each an explicit class that knows its keys and
how to turn a key into an image: `MemorySource` (uint8 arrays at the target resolution: embedded,
synthetic, IDX / mnist-like, prepared TFRecords that fit in --cache_mb), `KeyedSource` subclasses
(FolderSource: image files; LmdbSource: encoded images under LMDB keys), `StreamSource` (records in a
fixed order from tensorflow-datasets) and its prepared-TFRecord cousin in prepared.py.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf.config import Config, ConfigError
from dcgan_tf.data import image_headers
from dcgan_tf.data.preprocess import decode_and_fit, to_unit_range

AUTOTUNE = tf.data.AUTOTUNE
# Brackets around the sentence of a check that fails inside tf.data (see pipeline_error_message).
PIPELINE_ERROR = ('<<dcgan_tf data error: ', ' :dcgan_tf data error>>')
# Streams shuffle encoded records, not keys: 16k records of ~12-20 kB is a few hundred MB of memory.
STREAM_SHUFFLE_CAP = 16384


class DataError(ConfigError):
    """Data that cannot be read; the message says what is wrong and what to do.

    A ConfigError, so the command line reports it as bad input (one sentence, exit 2) without
    importing this module (and TensorFlow) for modes that never read training data.
    """


class SkipCounter:
    """Items that could not be decoded, each counted once; thread-safe, read by the Trainer.

    Every pass over the data reads every item once, so the pipeline reports the most it skipped in one
    pass, not the skips of every epoch again. The first, and every tenfold after it (1, 10, 100, ...),
    is also logged, with `name` (the source) and its number of items.
    """

    def __init__(self, name: str = '', num_items: int = 0) -> None:
        self._lock = threading.Lock()
        self._value = 0
        self.name, self.num_items = name, num_items

    def add(self, skipped: int) -> None:
        """Records that a pass skips `skipped` items (a count below the known one changes nothing)."""
        with self._lock:
            before, self._value = self._value, max(self._value, int(skipped))
            after = self._value
        if after > before and (before == 0 or len(str(after)) > len(str(before))):
            of = f' of the {self.num_items:,} of {self.name}' if self.num_items else ''
            logging.warning(
                'Skipped %s item(s) so far%s that could not be decoded (every pass skips them again: '
                '--mode=prepare drops them once).',
                f'{after:,}',
                of,
            )

    @property
    def value(self) -> int:
        return self._value


@dataclasses.dataclass(frozen=True)
class Source:
    """One data set split. Subclasses say what a key is and how one becomes an image.

    `decoded`: images are decoded inside the pipeline, so undecodable ones are skipped and counted and
    each pass ends with a marker (a pass without one image stops the run). `repeats_itself`: the key
    stream is already endless (prepared shards repeat their file list), so the pipeline adds no repeat.
    """

    name: str
    skipped: SkipCounter = dataclasses.field(
        default_factory=SkipCounter, compare=False, repr=False, kw_only=True
    )
    # Why an unlabelled source has no labels and how to give it some ('' where there is nothing to say).
    label_hint: str = dataclasses.field(default='', compare=False, repr=False, kw_only=True)

    kind: ClassVar[str] = ''
    decoded: ClassVar[bool] = True
    repeats_itself: ClassVar[bool] = False
    shuffle_cap: ClassVar[int | None] = None  # None: shuffling keys is cheap, the buffer may span the set.
    images: ClassVar[np.ndarray | None] = None  # Only in-memory sources hold their pixels.
    labels: ClassVar[np.ndarray | None] = None
    # The name of each class label, in label order; None where the source has no labels.
    class_names: ClassVar[tuple[str, ...] | None] = None

    @property
    def num_examples(self) -> int:
        raise NotImplementedError

    def pass_share(self, num_pipelines: int, pipeline_id: int) -> int:
        """Examples one pass of input pipeline `pipeline_id` holds (Dataset.shard's share by default)."""
        return len(range(pipeline_id, self.num_examples, num_pipelines))

    def describe(self) -> str:
        raise NotImplementedError

    def key_dataset(
        self, shuffle: bool, seed: int, num_pipelines: int, pipeline_id: int, labelled: bool = False
    ) -> tf.data.Dataset:
        """This input pipeline's share of the keys (or still encoded records), in the source's order.

        `labelled`: (key, int64 label) pairs, so a label is shuffled and skipped with its own key.
        """
        raise NotImplementedError

    def fetch_marked(self, keys: tf.data.Dataset) -> tf.data.Dataset:
        """(key, is pass end[, label]) -> (encoded bytes, is pass end[, label]), in order; a pass end
        reads nothing."""
        raise NotImplementedError

    def batches(self, cfg: Config, keys: tf.data.Dataset, batch: int) -> tf.data.Dataset:
        """Keys -> float32 [-1, 1] batches, for sources that are not decoded in the pipeline."""
        raise NotImplementedError

    def records(self, cfg: Config, start: int, stop: int) -> tf.data.Dataset:
        """(encoded bytes, int64 label) of examples [start, stop) in order."""
        raise NotImplementedError

    def examples(self, cfg: Config, start: int, stop: int) -> tf.data.Dataset:
        """(uint8 [H, W, C], int64 label) of examples [start, stop) in order; undecodable ones dropped."""

        def fit(raw: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return decode_and_fit(raw, cfg.crop, cfg.resolution, cfg.channels), label

        return self.records(cfg, start, stop).map(fit, num_parallel_calls=AUTOTUNE).ignore_errors()


@dataclasses.dataclass(frozen=True)
class MemorySource(Source):
    """uint8 images [N, H, W, C] already at the target resolution; keys are indices."""

    images: np.ndarray
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None

    kind: ClassVar[str] = 'memory'
    decoded: ClassVar[bool] = False

    @property
    def num_examples(self) -> int:
        return len(self.images)

    def describe(self) -> str:
        return 'in memory'

    def key_dataset(
        self, shuffle: bool, seed: int, num_pipelines: int, pipeline_id: int, labelled: bool = False
    ) -> tf.data.Dataset:
        del shuffle, seed, labelled  # An index finds the label too (see batches).
        return tf.data.Dataset.range(self.num_examples).shard(num_pipelines, pipeline_id)

    def batches(self, cfg: Config, keys: tf.data.Dataset, batch: int) -> tf.data.Dataset:
        images = tf.constant(self.images)
        # Gather whole batches from memory: one op per batch instead of one per image.
        ds = keys.batch(batch, drop_remainder=True)
        if cfg.conditional:
            labels = tf.constant(self.labels, tf.int32)
            return ds.map(
                lambda idx: (to_unit_range(tf.gather(images, idx)), tf.gather(labels, idx)),
                num_parallel_calls=AUTOTUNE,
            )
        return ds.map(lambda idx: to_unit_range(tf.gather(images, idx)), num_parallel_calls=AUTOTUNE)

    def examples(self, cfg: Config, start: int, stop: int) -> tf.data.Dataset:
        labels = self.labels if self.labels is not None else np.full(self.num_examples, -1)
        return tf.data.Dataset.from_tensor_slices(
            (self.images[start:stop], labels[start:stop].astype(np.int64))
        )


@dataclasses.dataclass(frozen=True)
class KeyedSource(Source):
    """Encoded images looked up by lightweight keys (file names, LMDB keys), shuffled before any decoding."""

    def key_list(self) -> list:
        raise NotImplementedError

    @property
    def num_examples(self) -> int:
        return len(self.key_list())

    def key_dataset(
        self, shuffle: bool, seed: int, num_pipelines: int, pipeline_id: int, labelled: bool = False
    ) -> tf.data.Dataset:
        del shuffle, seed
        keys = tf.constant(list(self.key_list()), tf.string)
        items = (keys, tf.constant(self.labels, tf.int64)) if labelled else keys
        return tf.data.Dataset.from_tensor_slices(items).shard(num_pipelines, pipeline_id)

    def fetch(self, keys: tf.data.Dataset) -> tf.data.Dataset:
        """Keys -> encoded image bytes, in the same order."""
        raise NotImplementedError

    def records(self, cfg: Config, start: int, stop: int) -> tf.data.Dataset:
        keys = tf.data.Dataset.from_tensor_slices(tf.constant(list(self.key_list()[start:stop]), tf.string))
        if self.labels is None:
            return self.fetch(keys).map(lambda r: (r, tf.constant(-1, tf.int64)))
        labels = tf.data.Dataset.from_tensor_slices(tf.constant(self.labels[start:stop], tf.int64))
        return tf.data.Dataset.zip(self.fetch(keys), labels)


@dataclasses.dataclass(frozen=True)
class StreamSource(Source):
    """Records read in a fixed order, encoded images with labels (any tensorflow-datasets image set).

    `stream_fn(shuffle, seed, num_pipelines, pipeline_id)` gives the Dataset of (encoded bytes, int64
    label); it holds `stream_size` records. The still encoded records are what is shuffled and skipped.
    `class_names` names the labels where the records have them.
    """

    stream_fn: Callable[[bool, int, int, int], tf.data.Dataset]
    stream_size: int
    # (num_pipelines, pipeline_id) -> records of that pipeline's stream, where it reads whole files.
    share_fn: Callable[[int, int], int] | None = None
    # Keyword-only: a field named like a class attribute of Source takes its place, before stream_fn.
    class_names: tuple[str, ...] | None = dataclasses.field(default=None, kw_only=True)

    kind: ClassVar[str] = 'stream'
    shuffle_cap: ClassVar[int | None] = STREAM_SHUFFLE_CAP

    @property
    def num_examples(self) -> int:
        return self.stream_size

    def describe(self) -> str:
        return 'streamed, decoded on the fly'

    def key_dataset(
        self, shuffle: bool, seed: int, num_pipelines: int, pipeline_id: int, labelled: bool = False
    ) -> tf.data.Dataset:
        records = self.stream_fn(shuffle, seed, num_pipelines, pipeline_id)
        return records if labelled else records.map(_drop_label)

    def pass_share(self, num_pipelines: int, pipeline_id: int) -> int:
        if self.share_fn is not None:
            return self.share_fn(num_pipelines, pipeline_id)
        return super().pass_share(num_pipelines, pipeline_id)

    def fetch_marked(self, keys: tf.data.Dataset) -> tf.data.Dataset:
        return keys  # The records are the encoded images.

    def records(self, cfg: Config, start: int, stop: int) -> tf.data.Dataset:
        return self.stream_fn(False, cfg.seed, 1, 0).skip(start).take(stop - start)


def _drop_label(raw: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
    """An unconditional run needs images only; labels ride along in streams for --mode=prepare."""
    del label
    return raw


def check_labelled(cfg: Config, source: Source) -> None:
    """--conditional needs a label in [0, --num_classes) for every example; DataError before training."""
    if not cfg.conditional:
        return
    if source.class_names is None:
        hint = f' ({source.label_hint})' if source.label_hint else ''
        raise DataError(
            f'--conditional needs class labels, and {source.name} has none{hint}; use a labelled data set '
            f'(embedded, mnist, fashion_mnist, a folder with one subfolder per class, a tfds set with a '
            f'label feature, or TFRecords prepared from one of those).'
        )
    if cfg.num_classes and cfg.num_classes != len(source.class_names):
        raise DataError(
            f'--num_classes={cfg.num_classes}, but {source.name} has {len(source.class_names)} classes; '
            f"leave --num_classes at 0 to take the data set's."
        )
    labels = source.labels
    if labels is not None and len(labels) and not 0 <= labels.min() <= labels.max() < len(source.class_names):
        raise DataError(
            f'{source.name} has labels from {labels.min()} to {labels.max()}, outside its '
            f'{len(source.class_names)} classes 0 to {len(source.class_names) - 1}.'
        )


def resolve_classes(cfg: Config, source: Source) -> Config:
    """`cfg` with --num_classes set to the source's class count (a conditional run), after check_labelled."""
    if not cfg.conditional:
        return cfg
    check_labelled(cfg, source)
    return dataclasses.replace(cfg, num_classes=len(source.class_names))


def num_skipped(source: Source) -> int:
    """Undecodable images skipped so far while reading `source` (for logs and TensorBoard)."""
    return source.skipped.value


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


def pipeline_error(sentence: str) -> str:
    return f'{PIPELINE_ERROR[0]}{sentence}{PIPELINE_ERROR[1]}'


def hold_out(items, split: str, holdout: int, what: str):
    """--eval_holdout: the last `holdout` items (a fixed slice) are the test split, the rest train."""
    if not holdout:
        return items
    if holdout >= len(items):
        raise DataError(f'--eval_holdout={holdout} leaves no training data: {what} has {len(items)}.')
    return items[:-holdout] if split == 'train' else items[-holdout:]


def check_some_decode(cfg: Config, sample: list, read: Callable[[object], bytes], what: str) -> None:
    """Fails before training when none of a few evenly spaced items gives an image, and warns when most
    do not (every pass then reads and skips them again, which slows training to a crawl).

    Each item goes through the pipeline's own decode (size guard, crop, resize), so an item that
    passes here is one the pipeline uses: the pipeline cannot then skip every item, forever.
    """
    too_large = good = 0
    for item in sample:
        try:
            decode_and_fit(read(item), cfg.crop, cfg.resolution, cfg.channels)
            good += 1
        except (tf.errors.OpError, OSError) as e:
            too_large += image_headers.TOO_LARGE in str(e)
    if good:
        if good * 2 < len(sample):
            logging.warning(
                'Only %d of %d sampled items of %s decode as images: most of it is skipped on every pass, '
                'which slows training down; --mode=prepare reads it once and keeps only the images.',
                good,
                len(sample),
                what,
            )
        return
    if too_large:
        raise DataError(
            f'No sampled item of {what} can be used: {too_large} of {len(sample)} are over the size limit '
            f'of {image_headers.MAX_PIXELS:,} pixels (which keeps a decompression bomb from filling memory) '
            f'and the rest do not decode; shrink the images below that limit.'
        )
    raise DataError(f'None of {len(sample)} sampled items of {what} decodes as an image: wrong data?')


def sample_evenly(items, num: int = 16) -> list:
    return [items[i] for i in np.linspace(0, len(items) - 1, min(num, len(items))).astype(int)]
