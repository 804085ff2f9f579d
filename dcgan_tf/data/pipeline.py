"""The tf.data pipeline: a source's keys -> shuffled, repeated, skipped -> images -> [-1, 1] batches.

Keys (indices, file names, LMDB keys, or for streams the still encoded records) are shuffled and
skipped before any decoding, so resuming at step N skips N batches without decoding them and the
order is a pure function of --seed. Undecodable images are skipped and counted in `Source.skipped`;
a resumed run is then shifted by the number skipped before its checkpoint. For --conditional each key
carries its label through all of it, so an image and its label never part.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dcgan_tf import images as images_lib
from dcgan_tf.config import Config
from dcgan_tf.data import arrays, folder, lmdb, prepared, tfds
from dcgan_tf.data.base import AUTOTUNE, DataError, SkipCounter, Source, check_labelled, pipeline_error
from dcgan_tf.data.preprocess import decode_and_fit, to_unit_range


def load_source(cfg: Config, split: str = 'train') -> Source:
    """The configured data set split ('train' or 'test'), fitted to --resolution/--channels in memory."""
    dataset = cfg.dataset
    if dataset == 'folder':
        return folder.folder_source(cfg, split)
    if dataset == 'celeb_a':
        return folder.celeba_folder(cfg, split) or tfds.tfds_source(cfg, 'celeb_a', split)
    if dataset == 'lsun_lmdb':
        return lmdb.lmdb_source(cfg, split)
    if dataset.startswith('lsun/'):
        return tfds.tfds_source(cfg, dataset, split)
    if dataset.startswith('tfds:'):
        return tfds.tfds_source(cfg, dataset[len('tfds:') :], split)
    if dataset.startswith('tfrecord:'):
        return prepared.tfrecord_source(cfg, dataset[len('tfrecord:') :], split)
    if dataset in arrays.DATASETS:
        return arrays.array_source(cfg, split)
    raise DataError(f'Unknown --dataset={dataset}.')


def _with_pass_ends(keys: tf.data.Dataset, labelled: bool) -> tf.data.Dataset:
    """(key, False[, label]) for each key of one pass, then ('', True[, -1]): the end of the pass, forever.

    Appended after the shuffle, the marker leaves the keys' order exactly as `keys.repeat()` has it.
    """
    end = (tf.constant(b''), tf.constant(True)) + ((tf.constant(-1, tf.int64),) if labelled else ())
    marked = keys.map(lambda key, *label: (key, tf.constant(False), *label))
    return marked.concatenate(tf.data.Dataset.from_tensors(end)).repeat()


def decode_counted(
    cfg: Config, source: Source, records: tf.data.Dataset, per_pass: int = 0, whole_first_pass: bool = False
) -> tf.data.Dataset:
    """(encoded bytes, is pass end[, label]) -> (uint8 image, items a pass skips[, label]), in order.

    Undecodable images are dropped and counted (a gap in the positions of the survivors); every pass
    reads every item once, so the most skipped in one whole pass (or in this pass so far, if more) is
    how many bad items there are, each counted once however many epochs run; a label
    travels in the same element as its image, so it is dropped with it. A pass end that follows a
    whole pass without one image fails with a PIPELINE_ERROR sentence: every item became unreadable
    (a folder deleted mid-run, a network mount gone) or this input pipeline's share holds no image,
    and skipping on would wait for an image forever.
    """
    res, ch = cfg.resolution, cfg.channels
    blank = tf.zeros([res, res, ch], tf.uint8)

    def decode(i: tf.Tensor, record: tf.Tensor, end: tf.Tensor, *label: tf.Tensor):
        image = tf.cond(end, lambda: blank, lambda: decode_and_fit(record, cfg.crop, res, ch))
        return i, image, end, *label

    ds = records.enumerate().map(lambda i, el: decode(i, *el), num_parallel_calls=AUTOTUNE)
    ds = ds.ignore_errors()  # A corrupt image is skipped and counted, not fatal.
    message = pipeline_error(
        f'No image of {source.name} could be read and decoded in a whole pass over its {per_pass} items '
        f'(deleted, moved or unreadable since the start?); fix the data and rerun the same command to '
        f'resume from the last checkpoint.'
    )

    def count(state, element):
        # last position seen, images in this pass, pass ends seen, skips in this pass, most in a whole pass
        last, images, ends, pass_skips, whole = state
        i, image, end, *label = element
        empty_pass = tf.logical_and(end, tf.logical_and(ends > 0, tf.equal(images, 0)))
        check = tf.debugging.Assert(tf.logical_not(empty_pass), [message])
        so_far = pass_skips + i - last - 1  # The items between two positions belong to this pass.
        zero = tf.constant(0, tf.int64)
        # A pass end closes a pass, whose skips are then those of every item it holds.
        whole = tf.where(tf.logical_and(end, ends > 0), tf.maximum(whole, so_far), whole)
        with tf.control_dependencies([check]):
            state = (
                tf.identity(i),
                tf.where(end, zero, images + 1),
                ends + tf.cast(end, tf.int64),
                tf.where(end, zero, so_far),
                whole,
            )
        return state, (image, tf.maximum(whole, state[3]), end, *label)

    zero = tf.constant(0, tf.int64)
    # A resumed run may start inside a pass: the first pass end is then checked only if its pass was whole.
    ends = tf.constant(int(whole_first_pass), tf.int64)
    ds = ds.scan((tf.constant(-1, tf.int64), zero, ends, zero, zero), count)
    images_only = lambda image, skipped, end, *label: tf.logical_not(end)  # noqa: E731
    drop_end = lambda image, skipped, end, *label: (image, skipped, *label)  # noqa: E731
    return ds.filter(images_only).map(drop_end)


def _count_and_scale(
    counter: SkipCounter, images: tf.Tensor, skipped: tf.Tensor, *labels: tf.Tensor
) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """Tells `counter` how many items a pass skips, as far as this batch shows (one Python call, only when
    there are some); scales.

    Returns the [-1, 1] images, or (images, int32 labels) for a labelled batch.
    """
    most = tf.reduce_max(skipped)

    def record() -> tf.Tensor:
        return tf.numpy_function(lambda n: (counter.add(n), n)[1], [most], tf.int64)

    done = tf.cond(most > 0, record, lambda: most)
    with tf.control_dependencies([done]):
        images = to_unit_range(images)
    return (images, tf.cast(labels[0], tf.int32)) if labels else images


def make_dataset(
    cfg: Config,
    source: Source,
    input_context: tf.distribute.InputContext | None = None,
    start_step: int = 0,
    repeat: bool = True,
) -> tf.data.Dataset:
    """Batches of float32 images [per-replica batch, H, W, C] in [-1, 1]; with --conditional, pairs of
    those and their int32 class labels [per-replica batch].

    Args:
      cfg: the run's Config (batch size, seed, resolution, channels, crop, shuffle buffer).
      source: from `load_source`.
      input_context: given by `strategy.distribute_datasets_from_function`; each input pipeline
        reads its own shard and batches for one replica.
      start_step: global steps already trained; their batches are skipped (before decoding) so a
        resumed run sees exactly the data an uninterrupted run would.
      repeat: False for one pass in the source's order (evaluation, prepare), True for training.

    Raises:
      DataError: --conditional, and the source has no labels (or not --num_classes of them).
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

    # Keys (or still encoded records), each with its label for a conditional run: shard, shuffle, repeat,
    # skip. A label rides with its key from here on, so shuffles, skips and dropped images keep pairs whole.
    check_labelled(cfg, source)
    keys = source.key_dataset(repeat, cfg.seed, num_pipelines, pipeline_id, labelled=cfg.conditional)
    buffer = cfg.shuffle_buffer if source.shuffle_cap is None else min(cfg.shuffle_buffer, source.shuffle_cap)
    per_pass = source.pass_share(num_pipelines, pipeline_id)
    skip = start_step * per_pipeline_batch
    if repeat:
        buffer = max(1, min(source.num_examples // num_pipelines, buffer))
        keys = keys.shuffle(buffer, seed=cfg.seed, reshuffle_each_iteration=True)
        if source.decoded:
            # Each pass ends with a marker (skipped with the keys), so a pass without one image is noticed.
            keys = _with_pass_ends(keys, cfg.conditional)
            skip += skip // max(1, per_pass)
        elif not source.repeats_itself:
            keys = keys.repeat()
        keys = keys.skip(skip)
    elif source.decoded:
        keys = keys.map(lambda key, *label: (key, tf.constant(False), *label))

    # Fetch and decode.
    source.skipped.name, source.skipped.num_items = source.name, source.num_examples
    if source.decoded:
        whole = skip % (per_pass + 1) == 0  # The first pass end follows a whole pass.
        records = source.fetch_marked(keys)
        ds = decode_counted(cfg, source, records, per_pass, whole).batch(
            per_replica_batch, drop_remainder=True
        )
        ds = ds.map(lambda *el: _count_and_scale(source.skipped, *el), num_parallel_calls=AUTOTUNE)
    else:
        ds = source.batches(cfg, keys, per_replica_batch)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)


def fitted_examples(cfg: Config, source: Source, start: int = 0, stop: int | None = None) -> tf.data.Dataset:
    """Examples [start, stop) of `source` in order, as (uint8 [H, W, C], int64 label); bad ones dropped.

    What --mode=prepare writes: the very pixels `make_dataset` would scale to [-1, 1].
    """
    return source.examples(cfg, start, source.num_examples if stop is None else stop)


def take_images(source: Source, num: int, cfg: Config) -> np.ndarray:
    """The first `num` images of a source as float32 [-1, 1] (for grids and evaluation)."""
    if source.images is not None:
        return images_lib.to_unit_range(source.images[:num])
    ds = fitted_examples(cfg, source, 0, min(source.num_examples, num * 2 + 16)).take(num)
    images = [x for x, _ in ds.as_numpy_iterator()]
    if len(images) < num:  # Many bad files near the start: take the whole source.
        images = [x for x, _ in fitted_examples(cfg, source).take(num).as_numpy_iterator()]
    return images_lib.to_unit_range(np.stack(images))


def steps_for_epochs(epochs: int, num_examples: int, batch_size: int) -> int:
    """Whole batches in `epochs` passes (drop_remainder batching drops the partial one)."""
    return max(1, epochs * num_examples // batch_size)


def describe(source: Source) -> str:
    return f'{source.name}: {source.num_examples} images ({source.describe()})'
