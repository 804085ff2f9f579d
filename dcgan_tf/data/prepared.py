"""Prepared TFRecords (--dataset=tfrecord:FOLDER, written by --mode=prepare): the record format, the
manifest and its checks, and the reader (into memory when it fits --cache_mb, else streamed).

A shard holds tf.Examples of raw uint8 pixels and a label; manifest.json records each shard's count,
byte length and SHA-256 (format 2; format 1 only counts), and the class names when the source had labels.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from typing import ClassVar

import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf.config import Config
from dcgan_tf.data.base import AUTOTUNE, PIPELINE_ERROR, DataError, MemorySource, Source, StreamSource
from dcgan_tf.data.preprocess import to_unit_range

MANIFEST = 'manifest.json'
# Version 2 records each shard's byte length and SHA-256 beside its count; version 1 only counts.
MANIFEST_FORMAT = 'dcgan_tf.prepared/2'

MANIFEST_FORMAT_V1 = 'dcgan_tf.prepared/1'

TFRECORD_FRAMING = 16  # Bytes around each record: its length, the length's CRC32C, the data's CRC32C.

DIGEST_CHUNK = 16 * 2**20

SHARD_COUNT_BATCH = 256  # Streamed records are counted per batch of this many (per record costs more).


@dataclasses.dataclass(frozen=True)
class PreparedStream(StreamSource):
    """Prepared shards too large for memory: serialized tf.Examples, shuffled as records and parsed in
    whole batches (the pixels are raw, so nothing is decoded or skipped); the stream repeats its files."""

    decoded: ClassVar[bool] = False
    repeats_itself: ClassVar[bool] = True

    def describe(self) -> str:
        return 'streamed prepared records'

    def key_dataset(
        self, shuffle: bool, seed: int, num_pipelines: int, pipeline_id: int, labelled: bool = False
    ) -> tf.data.Dataset:
        del labelled  # Each record holds its label: parsed with its image in batches.
        return self.stream_fn(shuffle, seed, num_pipelines, pipeline_id)

    def batches(self, cfg: Config, keys: tf.data.Dataset, batch: int) -> tf.data.Dataset:
        # Batch first, then parse and decode_raw whole batches: one op per batch.
        res, ch = cfg.resolution, cfg.channels
        ds = keys.batch(batch, drop_remainder=True)
        if cfg.conditional:

            def pairs(records: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                images, labels = parse_prepared(records, res, ch)
                return to_unit_range(images), tf.cast(labels, tf.int32)

            return ds.map(pairs, num_parallel_calls=AUTOTUNE)
        return ds.map(lambda s: to_unit_range(parse_prepared(s, res, ch)[0]), num_parallel_calls=AUTOTUNE)

    def examples(self, cfg: Config, start: int, stop: int) -> tf.data.Dataset:
        parse = lambda s: parse_prepared(s, cfg.resolution, cfg.channels)  # noqa: E731
        return self.records(cfg, start, stop).batch(1024).map(parse).unbatch()


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
    names = manifest.get('class_names')
    if names is not None and not (
        isinstance(names, list) and names and all(isinstance(n, str) for n in names)
    ):
        return 'class_names that are not a list of names'
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


def tfrecord_source(cfg: Config, folder: str, split: str) -> Source:
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
    # Manifests written before class names were recorded, or of an unlabelled source, have none.
    class_names = tuple(manifest['class_names']) if manifest.get('class_names') else None
    hint = '' if class_names else f'its {MANIFEST} names no classes: {_redo(folder)} from a labelled source'
    if size * res * res * ch <= cfg.cache_mb * 2**20:
        # Fits: read once into memory; batches are then gathered by index (fastest, exact resume).
        read = lambda job: _read_shard(folder, *job, res, ch)  # noqa: E731
        with concurrent.futures.ThreadPoolExecutor(max(1, min(len(files), os.cpu_count() or 1, 8))) as pool:
            parts = list(pool.map(read, zip(files, entry['shards'], strict=True)))
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        keep_labels = class_names is not None or (labels >= 0).any()
        return MemorySource(
            name=name,
            images=images,
            labels=labels if keep_labels else None,
            class_names=class_names,
            label_hint=hint,
        )
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

    return PreparedStream(
        name=name, stream_fn=stream_fn, stream_size=size, class_names=class_names, label_hint=hint
    )
