"""tensorflow-datasets image data sets (--dataset=tfds:NAME, lsun/..., celeb_a): a stream of encoded records
(decoding skipped by tfds and done in the pipeline, after shuffling and skipping), labelled where the
builder has a ClassLabel feature named 'label'."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf.config import Config
from dcgan_tf.data.base import DataError, StreamSource


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


def tfds_source(cfg: Config, name: str, split: str) -> StreamSource:
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
        label_feature = dict(builder.info.features.items()).get('label')
        has_label = isinstance(label_feature, tfds.features.ClassLabel)
        class_names = tuple(label_feature.names) if has_label else None

        takes = _file_takes(builder, tfds_split)

        def by_file(num_pipelines: int) -> bool:
            return num_pipelines > 1 and len(takes) >= num_pipelines

        def stream_fn(shuffle: bool, seed: int, num_pipelines: int, pipeline_id: int) -> tf.data.Dataset:
            # With a file per pipeline at least, tfds hands each worker its own files, so no worker reads
            # (and throws away) the others' records; with fewer files each keeps every n-th record.
            context = (
                tf.distribute.InputContext(num_pipelines, pipeline_id) if by_file(num_pipelines) else None
            )
            ds = builder.as_dataset(
                split=tfds_split,
                shuffle_files=shuffle,
                decoders={image_key: tfds.decode.SkipDecoding()},  # Decoded later, after the skip.
                read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False, input_context=context),
            )
            if num_pipelines > 1 and context is None:
                ds = ds.shard(num_pipelines, pipeline_id)
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

    def share(num_pipelines: int, pipeline_id: int) -> int:
        if by_file(num_pipelines):
            return sum(takes[pipeline_id::num_pipelines])  # tfds shards its file list this way.
        return len(range(pipeline_id, size, num_pipelines))

    return StreamSource(
        name=f'tfds:{name}[{tfds_split}]',
        stream_fn=stream_fn,
        stream_size=size,
        share_fn=share,
        class_names=class_names,
        label_hint='' if has_label else 'its features have no ClassLabel named label',
    )


def _file_takes(builder, split: str) -> list[int]:
    """Records read from each file of a tfds split, in tfds' file order ([] where tfds has no file list)."""
    try:
        return [int(f.take) for f in builder.info.splits[split].file_instructions]
    except (KeyError, ValueError, AttributeError, TypeError):  # mock_data: no split info.
        return []
