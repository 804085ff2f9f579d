"""--conditional: each labelled source gives every image its own label, through shuffles, skips and resumes.

Every test image says its class in its top half (one grey level per class) and who it is in its bottom
half (a grey level of its own), so a label that strayed from its image shows.
"""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import tiny_config

from dcgan_tf import data
from dcgan_tf.data import prepare

# Class subfolders, created in an unsorted order, and the grey level of each class.
LEVELS = {'zebra': 200, 'ant': 40, 'moth': 120}
NAMES = ('ant', 'moth', 'zebra')  # sorted: label 0, 1, 2
COUNTS = {'zebra': 3, 'ant': 4, 'moth': 5}
RES = 8


def _image(level: int, ident: int) -> np.ndarray:
    image = np.full((RES, RES), level, np.uint8)
    image[RES // 2 :] = ident
    return image


def _class_folder(root, corrupt: bool = True) -> int:
    """Folders of 3, 4 and 5 images (one moth deeper down); with `corrupt`, a broken zebra file too."""
    ident = 10
    for name in LEVELS:
        (root / name / 'deeper').mkdir(parents=True)
        for i in range(COUNTS[name]):
            where = root / name / 'deeper' if name == 'moth' and i == 0 else root / name
            iio.imwrite(where / f'{i}.png', _image(LEVELS[name], ident))
            ident += 3
    if corrupt:
        (root / 'zebra' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not a picture')
    return sum(COUNTS.values())


def _pairs(batches) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, H, W], labels [N]) of (images, labels) batches."""
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in batches], strict=True)
    pixels = np.round((np.concatenate(images) + 1) * 127.5).astype(np.uint8)[..., 0]
    return pixels, np.concatenate(labels)


def _check_labels(pixels, labels, names=NAMES):
    assert labels.dtype == np.int32
    wanted = np.array([LEVELS[names[label]] for label in labels])
    np.testing.assert_array_equal(pixels[:, 0, 0], wanted)  # each image shows its label's grey
    assert (pixels[:, : RES // 2] == pixels[:, :1, :1]).all()


def _conditional(**overrides):
    values = dict(resolution=RES, batch_size=3, conditional=True) | overrides
    return tiny_config(**values)


# --- folders ---


def test_a_folder_of_class_subfolders_labels_each_image_with_its_subfolder(tmp_path):
    num_good = _class_folder(tmp_path)
    cfg = _conditional(dataset='folder', data_dir=str(tmp_path))
    source = data.load_source(cfg)
    assert source.class_names == NAMES and source.num_examples == num_good + 1
    data.check_labelled(cfg, source)
    batches = list(data.make_dataset(cfg, source).take(12))  # 36 images: three passes
    pixels, labels = _pairs(batches)
    _check_labels(pixels, labels)
    assert data.num_skipped(source) == 1  # the broken file, skipped with its label, counted once
    # Each pass gives every good image once, with its own label.
    first = sorted(zip(pixels[:num_good, -1, 0], labels[:num_good], strict=True))
    expected = sorted((ident, NAMES.index(name)) for ident, name in _idents().items())
    assert [(int(i), int(label)) for i, label in first] == expected
    # The labels do not change which images an unconditional run reads, nor their order.
    plain = [b.numpy() for b in data.make_dataset(cfg.replace(conditional=False), source).take(12)]
    np.testing.assert_array_equal(np.concatenate(plain), np.concatenate([x.numpy() for x, _ in batches]))


def _idents() -> dict[int, str]:
    """Each image's own grey level -> its class, in the order _class_folder writes them."""
    ident, out = 10, {}
    for name in LEVELS:
        for _ in range(COUNTS[name]):
            out[ident], ident = name, ident + 3
    return out


def test_a_resumed_conditional_run_sees_the_same_pairs(tmp_path):
    _class_folder(tmp_path, corrupt=False)
    cfg = _conditional(dataset='folder', data_dir=str(tmp_path))
    source = data.load_source(cfg)
    straight = _pairs(data.make_dataset(cfg, source).take(9))  # 27 images: over two passes
    _check_labels(*straight)
    for start in (2, 5):  # mid-pass, and past a pass end
        resumed = _pairs(data.make_dataset(cfg, source, start_step=start).take(9 - start))
        np.testing.assert_array_equal(resumed[0], straight[0][start * 3 :])
        np.testing.assert_array_equal(resumed[1], straight[1][start * 3 :])


def test_a_folder_with_images_outside_class_subfolders_is_unlabelled(tmp_path):
    flat = tmp_path / 'flat'
    flat.mkdir()
    for i in range(3):
        iio.imwrite(flat / f'{i}.png', _image(50, 60))
    cfg = _conditional(dataset='folder', data_dir=str(flat))
    source = data.load_source(cfg)
    assert source.class_names is None and source.labels is None
    with pytest.raises(data.DataError, match='lie directly in --data_dir, not in one subfolder per class'):
        data.check_labelled(cfg, source)
    with pytest.raises(data.DataError, match='needs class labels'):
        data.make_dataset(cfg, source)
    mixed = tmp_path / 'mixed'
    _class_folder(mixed, corrupt=False)
    iio.imwrite(mixed / 'stray.png', _image(50, 60))
    source = data.load_source(_conditional(dataset='folder', data_dir=str(mixed)))
    assert source.class_names is None
    with pytest.raises(data.DataError, match='1 of its images lie directly in --data_dir'):
        data.check_labelled(cfg, source)


# --- prepared TFRecords ---


def test_prepared_records_keep_labels_and_class_names(tmp_path):
    _class_folder(tmp_path / 'photos')
    cfg = _conditional(dataset='folder', data_dir=str(tmp_path / 'photos'), eval_holdout=2)
    manifest = prepare.prepare(cfg, str(tmp_path / 'prepared'), examples_per_shard=4)
    assert manifest['class_names'] == list(NAMES)
    prepared = cfg.replace(dataset=f'tfrecord:{tmp_path / "prepared"}')
    direct = _pairs(data.make_dataset(cfg, data.load_source(cfg), repeat=False))
    for cache_mb in (4096, 0):  # read into memory, and streamed
        source = data.load_source(prepared.replace(cache_mb=cache_mb))
        assert source.class_names == NAMES
        data.check_labelled(prepared, source)
        np.testing.assert_array_equal(_pairs(data.make_dataset(prepared, source, repeat=False))[1], direct[1])
        _check_labels(*_pairs(data.make_dataset(prepared, source).take(8)))
    # The held-out split numbers the classes as the training split does.
    assert data.load_source(prepared, 'test').class_names == NAMES
    # A manifest written before class names were recorded still reads, unlabelled.
    path = tmp_path / 'prepared' / 'manifest.json'
    old = json.loads(path.read_text())
    del old['class_names']
    path.write_text(json.dumps(old))
    for cache_mb in (4096, 0):
        source = data.load_source(prepared.replace(cache_mb=cache_mb))
        assert source.class_names is None
        with pytest.raises(data.DataError, match='names no classes: re-run --mode=prepare'):
            data.check_labelled(prepared, source)
    old['class_names'] = 'ant'
    path.write_text(json.dumps(old))
    with pytest.raises(data.DataError, match='class_names that are not a list of names'):
        data.load_source(prepared)


# --- streams (tensorflow-datasets) ---


def _continues(straight, resumed, position: int) -> bool:
    """Whether the resumed pairs are the unbroken run's from `position`, less a skip or two before it
    (a resumed run is shifted by the corrupt images skipped before its checkpoint)."""
    size = len(resumed[1])
    return any(
        np.array_equal(straight[0][at : at + size], resumed[0])
        and np.array_equal(straight[1][at : at + size], resumed[1])
        for at in range(position - 2, position + 1)
    )


def test_a_stream_of_labelled_records_carries_each_label_with_its_image():
    idents = _idents()
    records = [
        iio.imwrite('<bytes>', _image(LEVELS[name], ident), extension='.png')
        for ident, name in idents.items()
    ]
    labels = [NAMES.index(name) for name in idents.values()]
    records[4], labels[4] = b'not a PNG', 2  # a corrupt record, skipped with its label

    def stream_fn(shuffle, seed, num_pipelines, pipeline_id):
        ds = tf.data.Dataset.from_tensor_slices((records, tf.constant(labels, tf.int64)))
        return ds.shard(num_pipelines, pipeline_id)

    source = data.StreamSource(
        name='stream', stream_fn=stream_fn, stream_size=len(records), class_names=NAMES
    )
    cfg = _conditional()
    straight = _pairs(data.make_dataset(cfg, source).take(12))
    _check_labels(*straight)
    assert data.num_skipped(source) == 1  # One corrupt record, however many passes skip it.
    assert sorted(straight[0][:11, -1, 0].tolist()) == sorted(set(idents) - {22})  # 22: the corrupt one
    for start in (2, 5):
        resumed = _pairs(data.make_dataset(cfg, source, start_step=start).take(6))
        _check_labels(*resumed)
        assert _continues(straight, resumed, start * 3)


class DcganLabelledShades(tfds.core.GeneratorBasedBuilder):
    """A tfds set written to disk here, the test folder's images as records with named classes."""

    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
        features = {
            'image': tfds.features.Image(shape=(RES, RES, 1)),
            'label': tfds.features.ClassLabel(names=list(NAMES)),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {'train': self._generate_examples()}

    def _generate_examples(self):
        for ident, name in _idents().items():
            image = _image(LEVELS[name], ident)[..., None]
            yield ident, {'image': image, 'label': NAMES.index(name)}


def test_tfds_sets_name_their_classes_from_the_label_feature(tmp_path):
    DcganLabelledShades(data_dir=str(tmp_path)).download_and_prepare()
    cfg = _conditional(dataset='tfds:dcgan_labelled_shades', data_dir=str(tmp_path))
    source = data.load_source(cfg)
    assert source.class_names == NAMES
    data.check_labelled(cfg, source)
    pixels, labels = _pairs(data.make_dataset(cfg, source).take(8))
    _check_labels(pixels, labels)
    assert sorted(pixels[:12, -1, 0].tolist()) == sorted(_idents())
    with tfds.testing.mock_data(num_examples=4):
        celeb_a = data.load_source(cfg.replace(dataset='celeb_a', data_dir='', resolution=16, channels=3))
    assert celeb_a.class_names is None  # attributes, but no ClassLabel called label
    with pytest.raises(data.DataError, match='no ClassLabel named label'):
        data.check_labelled(cfg, celeb_a)
