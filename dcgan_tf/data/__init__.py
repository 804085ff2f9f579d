"""Training data: sources, and the tf.data pipeline that turns one into [-1, 1] float32 NHWC batches.

One module per source kind (arrays: embedded, IDX / mnist-like, synthetic; folder: image folders and
CelebA's; lmdb; tfds; prepared: TFRecords written by prepare), `preprocess` (decode with the header
size guard, crop/resize, range) and `pipeline` (keys shuffled and skipped before decoding, so a
resumed run sees exactly the data an uninterrupted one would). A pass that yields no image at all,
and prepared shards that do not match their manifest, stop the run with one sentence.
"""

from dcgan_tf.data.arrays import (
    load_embedded,
    load_idx_split,
    load_mnist_like,
    make_shapes,
    read_idx,
    write_idx,
)
from dcgan_tf.data.base import (
    DataError,
    KeyedSource,
    MemorySource,
    SkipCounter,
    Source,
    StreamSource,
    check_labelled,
    num_skipped,
    pipeline_error_message,
    resolve_classes,
)
from dcgan_tf.data.folder import FolderSource, list_image_files
from dcgan_tf.data.lmdb import LmdbSource
from dcgan_tf.data.pipeline import (
    describe,
    fitted_examples,
    load_source,
    make_dataset,
    steps_for_epochs,
    take_images,
)
from dcgan_tf.data.prepared import (
    MANIFEST,
    MANIFEST_FORMAT,
    PreparedStream,
    file_digest,
    parse_prepared,
    prepared_example,
    read_manifest,
)
from dcgan_tf.data.preprocess import decode_and_fit, fit_array, fit_image, to_unit_range
from dcgan_tf.data.tfds import find_image_feature

__all__ = [
    'MANIFEST',
    'MANIFEST_FORMAT',
    'DataError',
    'FolderSource',
    'KeyedSource',
    'LmdbSource',
    'MemorySource',
    'PreparedStream',
    'SkipCounter',
    'Source',
    'StreamSource',
    'check_labelled',
    'decode_and_fit',
    'describe',
    'file_digest',
    'find_image_feature',
    'fit_array',
    'fit_image',
    'fitted_examples',
    'list_image_files',
    'load_embedded',
    'load_idx_split',
    'load_mnist_like',
    'load_source',
    'make_dataset',
    'make_shapes',
    'num_skipped',
    'parse_prepared',
    'pipeline_error_message',
    'prepared_example',
    'read_idx',
    'read_manifest',
    'resolve_classes',
    'steps_for_epochs',
    'take_images',
    'to_unit_range',
    'write_idx',
]
