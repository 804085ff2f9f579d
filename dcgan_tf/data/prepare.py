"""--mode=prepare: decode, crop and resize a source once into sharded TFRecords of raw uint8 pixels.

Training then reads `--dataset=tfrecord:<out_dir>` without decoding a JPEG again: parsing raw pixels
in whole batches is fast enough that a GPU, not the input, sets the pace. Shards hold contiguous
ranges of the source in its order and are written in parallel; manifest.json records each shard's
count, byte length and SHA-256, the resolution, channels, crop, the source and its class names (when
it has labels), and is written last, so a folder with a manifest is complete (prepared.py's reader
checks the shards against it).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time

import tensorflow as tf
from absl import logging

from dcgan_tf import data
from dcgan_tf.config import Config


def _write_shard(cfg: Config, source: data.Source, path: str, start: int, stop: int) -> dict:
    """Writes examples [start, stop) of `source` that decode; returns the shard's manifest entry."""
    written = 0
    tmp = path + '.tmp'
    with tf.io.TFRecordWriter(tmp) as writer:
        # Batched: one Python step per 256 images, not per image (Python per image is the bottleneck).
        batches = data.fitted_examples(cfg, source, start, stop).batch(256).prefetch(2)
        for images, labels in batches.as_numpy_iterator():
            for image, label in zip(images, labels, strict=True):
                writer.write(data.prepared_example(image.tobytes(), int(label)))
            written += len(images)
    # Read back once: the length and checksum are of the bytes that reached the disk.
    length, sha256 = data.file_digest(tmp)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return {'file': os.path.basename(path), 'num_examples': written, 'bytes': length, 'sha256': sha256}


def prepare_split(
    cfg: Config, source: data.Source, out_dir: str, split: str, examples_per_shard: int | None = None
) -> dict:
    """Writes one split as <split>-NNNNN-of-MMMMM.tfrecord files; returns its manifest entry."""
    bytes_per_image = cfg.resolution * cfg.resolution * cfg.channels
    per_shard = examples_per_shard or max(1, cfg.shard_mb * 2**20 // bytes_per_image)
    total = source.num_examples
    ranges = [(a, min(a + per_shard, total)) for a in range(0, total, per_shard)]
    names = [f'{split}-{i:05d}-of-{len(ranges):05d}.tfrecord' for i in range(len(ranges))]
    # Threads suffice: decoding and writing run in TensorFlow ops that release the GIL.
    workers = max(1, min(len(ranges), os.cpu_count() or 1, 8))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        shards = list(
            pool.map(
                lambda job: _write_shard(cfg, source, os.path.join(out_dir, job[0]), *job[1]),
                zip(names, ranges, strict=True),
            )
        )
    counts = [shard['num_examples'] for shard in shards]
    return {'num_examples': sum(counts), 'skipped': total - sum(counts), 'shards': shards}


def prepare(cfg: Config, out_dir: str, examples_per_shard: int | None = None) -> dict:
    """Prepares the train split (and the test split with --eval_holdout) of cfg's source in `out_dir`.

    Args:
      cfg: the source (--dataset, --data_dir), --resolution, --channels, --crop and --shard_mb.
      out_dir: local folder or gs:// path; created if needed.
      examples_per_shard: overrides --shard_mb (tests).

    Returns:
      The manifest written to <out_dir>/manifest.json.

    Raises:
      data.DataError: the source cannot be read, or no image of it decodes.
    """
    tf.io.gfile.makedirs(out_dir)
    manifest = {
        'format': data.MANIFEST_FORMAT,
        'source': cfg.dataset
        if cfg.dataset in ('synthetic', 'embedded')
        else f'{cfg.dataset}:{cfg.data_dir}',
        'resolution': cfg.resolution,
        'channels': cfg.channels,
        'crop': cfg.crop,
        'eval_holdout': cfg.eval_holdout,
        'splits': {},
    }
    for split in ('train', 'test') if cfg.eval_holdout else ('train',):
        source = data.load_source(cfg, split)
        logging.info(
            'Preparing %s (%s) at %dx%dx%d ...',
            data.describe(source),
            split,
            cfg.resolution,
            cfg.resolution,
            cfg.channels,
        )
        start = time.perf_counter()
        entry = prepare_split(cfg, source, out_dir, split, examples_per_shard)
        seconds = time.perf_counter() - start
        if not entry['num_examples']:
            raise data.DataError(f'No image of {source.name} could be decoded; nothing was prepared.')
        entry['seconds'] = round(seconds, 1)
        manifest['splits'][split] = entry
        if source.class_names is not None:  # Every split of a source names its classes alike.
            manifest['class_names'] = list(source.class_names)
        logging.info(
            '%s: wrote %d images in %d shards (%d skipped as undecodable) in %.1f s (%.0f images/s).',
            split,
            entry['num_examples'],
            len(entry['shards']),
            entry['skipped'],
            seconds,
            entry['num_examples'] / max(seconds, 1e-9),
        )
    tmp = os.path.join(out_dir, data.MANIFEST + '.tmp')
    with tf.io.gfile.GFile(tmp, 'w') as f:
        json.dump(manifest, f, indent=1)
    tf.io.gfile.rename(tmp, os.path.join(out_dir, data.MANIFEST), overwrite=True)
    logging.info('Train from it with --dataset=tfrecord:%s', out_dir)
    return manifest
