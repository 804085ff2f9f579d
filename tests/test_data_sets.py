"""CelebA, LSUN, any tfds set, LMDB, messy folders and prepared TFRecords."""

import io
import json
import os
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import REPO_ROOT, tiny_config
from PIL import Image

from dcgan_tf import config, data
from dcgan_tf.data import prepare

skimage_data = pytest.importorskip('skimage.data')
PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'camera')  # varied sizes; camera is grayscale


def _photo(name):
    return getattr(skimage_data, name)()


def _one_pass(cfg, source):
    return np.concatenate([b.numpy() for b in data.make_dataset(cfg, source, repeat=False)])


def _expected(image, crop, resolution, channels=3):
    """The reference: numpy crop arithmetic, then the same antialiased resize and rounding."""
    if image.ndim == 2:
        image = image[..., None]
    if channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    height, width = image.shape[:2]
    kind, size = config.parse_crop(crop)
    if kind == 'center':
        side = min(height, width, size or height)
        top, left = (height - side) // 2, (width - side) // 2
        image = image[top : top + side, left : left + side]
    resized = tf.image.resize(image.astype(np.float32), [resolution] * 2, antialias=True).numpy()
    return np.clip(np.round(resized), 0, 255).astype(np.uint8).astype(np.float32) / 127.5 - 1


def _messy_folder(root):
    """Six good images of mixed formats, modes and sizes, and five files that are no image."""
    (root / 'sub').mkdir(parents=True)
    iio.imwrite(root / 'a_astronaut.jpg', _photo('astronaut'))
    iio.imwrite(root / 'b_camera_gray.png', _photo('camera'))
    rgba = np.dstack([_photo('chelsea'), np.full(_photo('chelsea').shape[:2], 200, np.uint8)])
    iio.imwrite(root / 'c_chelsea_rgba.png', rgba)
    iio.imwrite(root / 'd_coffee.gif', _photo('coffee'))
    iio.imwrite(root / 'sub' / 'e_rocket.bmp', _photo('rocket'))
    Image.fromarray(_photo('chelsea')).save(root / 'sub' / 'f_chelsea.webp', lossless=True)
    (root / 'g_zero_bytes.jpg').write_bytes(b'')
    (root / 'h_text.jpg').write_text('this is not a JPEG')
    jpeg = (root / 'a_astronaut.jpg').read_bytes()
    (root / 'i_truncated.jpg').write_bytes(jpeg[: len(jpeg) // 3])
    (root / 'j_corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(200)))
    (root / 'notes.txt').write_text('not listed at all')
    return 6


# --- crops ---


def test_center_108_crop_arithmetic():
    # A CelebA-sized frame whose centred 108x108 square is white: (218-108)/2 = 55 rows and
    # (178-108)/2 = 35 columns are cut on each side, so what is left is all white.
    image = np.zeros((218, 178, 3), np.uint8)
    image[55:163, 35:143] = 255
    out = data.fit_image(image, 'center:108', 64).numpy()
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.min() == 255
    widest = data.fit_image(image, 'center', 64).numpy()  # 178x178: black bands come in
    assert widest.min() == 0
    squashed = data.fit_image(image, 'none', 64).numpy()
    assert squashed.shape == (64, 64, 3) and squashed[0, 0, 0] == 0
    native = data.fit_image(image, 'center:128', 128).numpy()  # celeba128: pixels kept 1:1
    np.testing.assert_array_equal(native, image[45:173, 25:153])


def test_crop_and_dataset_flags_are_validated():
    assert config.parse_crop('center:108') == ('center', 108)
    for bad in ('centre', 'center:0', 'center:x', 'none:3'):
        with pytest.raises(config.ConfigError, match='--crop'):
            config.validate(tiny_config(crop=bad))
    with pytest.raises(config.ConfigError, match='--dataset'):
        config.validate(tiny_config(dataset='tfds:'))
    with pytest.raises(config.ConfigError, match='manifest.json'):
        config.validate(tiny_config(dataset='tfrecord:/nonexistent'))
    with pytest.raises(config.ConfigError, match='--out_dir'):
        config.validate(tiny_config(mode='prepare'))
    config.validate(tiny_config(dataset='lsun/bedroom', crop='center:108'))


# --- tensorflow-datasets (mocked: no download) ---


def test_celeb_a_through_tfds_crops_108_and_resizes():
    cfg = tiny_config(dataset='celeb_a', channels=3, resolution=16, batch_size=2, crop='center:108')
    with tfds.testing.mock_data(num_examples=5):
        source = data.load_source(cfg)
        assert source.kind == 'stream' and source.num_examples == 5
        got = _one_pass(cfg, source)
        # The stored JPEGs, decoded by PIL (not TensorFlow) as an independent reference.
        skip = {'image': tfds.decode.SkipDecoding()}
        stored = tfds.builder('celeb_a').as_dataset(split='train', shuffle_files=False, decoders=skip)
        originals = [np.asarray(Image.open(io.BytesIO(ex['image']))) for ex in tfds.as_numpy(stored)]
    assert originals[0].shape == (218, 178, 3)
    assert got.shape == (4, 16, 16, 3) and got.min() >= -1 and got.max() <= 1
    expected = np.stack([_expected(im, 'center:108', 16) for im in originals[:4]])
    np.testing.assert_allclose(got, expected, atol=4 / 127.5)  # two JPEG decoders differ a little


def test_lsun_category_through_tfds():
    cfg = tiny_config(dataset='lsun/bedroom', channels=3, resolution=32, batch_size=4)
    with tfds.testing.mock_data(num_examples=12):
        source = data.load_source(cfg)
        batches = [b.numpy() for b in data.make_dataset(cfg, source).take(4)]
        again = [b.numpy() for b in data.make_dataset(cfg, source, start_step=2).take(2)]
    assert source.num_examples == 12 and batches[0].shape == (4, 32, 32, 3)
    assert batches[0].min() >= -1 and batches[0].max() <= 1 and batches[0].std() > 0.1
    np.testing.assert_array_equal(np.stack(batches[2:]), np.stack(again))  # exact resume


class DcganShardedDigits(tfds.core.GeneratorBasedBuilder):
    """A tfds set written to disk here, in several files, each image a solid shade that names it."""

    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
        features = {
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {'train': self._generate_examples(22)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {'image': np.full((8, 8, 1), 10 * i, np.uint8), 'label': i % 10}


def test_tfds_pipelines_read_only_their_own_files(tmp_path):
    builder = DcganShardedDigits(data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
    cfg = tiny_config(dataset='tfds:dcgan_sharded_digits', data_dir=str(tmp_path), resolution=8, batch_size=2)
    source = data.load_source(cfg)
    assert source.num_examples == 22
    takes = [int(f.take) for f in builder.info.splits['train'].file_instructions]
    assert len(takes) == 4 and sum(takes) == 22
    seen = []
    for pipeline_id in range(2):
        records = source.stream_fn(False, 0, 2, pipeline_id)
        shades = [int(np.asarray(Image.open(io.BytesIO(r)))[0, 0]) for r, _ in records.as_numpy_iterator()]
        # Whole files, every other one: tfds read no record of the other pipeline's files.
        assert len(shades) == sum(takes[pipeline_id::2]) == source.pass_share(2, pipeline_id)
        seen += shades
    assert sorted(seen) == [10 * i for i in range(22)]
    # More pipelines than files: every pipeline keeps every n-th record instead.
    assert source.pass_share(5, 1) == len(range(1, 22, 5))
    assert len(list(source.stream_fn(False, 0, 5, 1))) == len(range(1, 22, 5))


def test_any_tfds_image_set_by_name_with_labels():
    cfg = tiny_config(dataset='tfds:cifar10', channels=3, resolution=16, batch_size=4)
    with tfds.testing.mock_data(num_examples=8):
        assert data.find_image_feature(tfds.builder('cifar10').info.features) == 'image'
        source = data.load_source(cfg)
        examples = list(data.fitted_examples(cfg, source).as_numpy_iterator())
    assert len(examples) == 8 and examples[0][0].shape == (16, 16, 3)
    assert all(0 <= label < 10 for _, label in examples)
    with pytest.raises(data.DataError, match='no image feature'):
        data.find_image_feature({'label': tfds.features.ClassLabel(num_classes=2)})


# --- LMDB (LSUN's official format) ---


def test_lsun_lmdb_of_real_photographs(tmp_path):
    lmdb = pytest.importorskip('lmdb')
    photos = [_photo(n) for n in PHOTOS[:4]]
    env = lmdb.open(str(tmp_path / 'bedroom_train_lmdb'), map_size=2**28)
    with env.begin(write=True) as txn:
        for i, photo in enumerate(photos):
            buffer = io.BytesIO()
            # LSUN stores WebP; lossless here so decoded pixels can be compared with the originals.
            Image.fromarray(photo).save(buffer, 'webp' if i % 2 == 0 else 'png', lossless=True)
            txn.put(f'{i:040x}'.encode(), buffer.getvalue())  # LSUN keys are 40 hex digits
        txn.put(b'f' * 40, b'RIFF\x00\x00\x00\x00WEBPgarbage')  # a corrupt record, sorted last
    env.close()
    cfg = tiny_config(
        dataset='lsun_lmdb', data_dir=str(tmp_path / 'bedroom_train_lmdb'), channels=3, batch_size=2
    )
    config.validate(cfg)
    source = data.load_source(cfg)
    assert source.num_examples == 5
    got = _one_pass(cfg, source)
    np.testing.assert_allclose(got, np.stack([_expected(p, 'center', 16) for p in photos]), atol=1e-6)
    list(data.make_dataset(cfg, source).take(6))  # three epochs: the corrupt record is counted once
    assert data.num_skipped(source) == 1
    # A fixed slice of train held out for evaluation: disjoint, and the same every time.
    held = cfg.replace(eval_holdout=2)
    train, test = data.load_source(held, 'train'), data.load_source(held, 'test')
    assert list(train.keys) + list(test.keys) == list(source.keys)


# --- folders ---


def test_messy_folder_skips_and_counts_bad_files(tmp_path):
    num_good = _messy_folder(tmp_path)
    cfg = tiny_config(dataset='folder', data_dir=str(tmp_path), channels=3, batch_size=2)
    source = data.load_source(cfg)
    assert source.num_examples == num_good + 4  # every file with an image extension is listed
    got = _one_pass(cfg, source)
    assert got.shape == (num_good, 16, 16, 3)
    np.testing.assert_allclose(got[0], _expected(_photo('astronaut'), 'center', 16), atol=0.05)  # lossy
    np.testing.assert_allclose(got[1], _expected(_photo('camera'), 'center', 16), atol=1e-6)
    np.testing.assert_allclose(got[5], _expected(_photo('chelsea'), 'center', 16), atol=1e-6)  # webp
    assert data.num_skipped(source) >= 3  # those before the last good image in one pass
    gray = tiny_config(dataset='folder', data_dir=str(tmp_path), channels=1, batch_size=3)
    batch = next(iter(data.make_dataset(gray, data.load_source(gray)))).numpy()
    assert batch.shape == (3, 16, 16, 1)


def test_folder_order_is_seeded_and_resumes_exactly_across_epochs(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(8):
        iio.imwrite(tmp_path / f'{i}.png', rng.integers(0, 255, (8, 8), dtype=np.uint8))
    cfg = tiny_config(dataset='folder', data_dir=str(tmp_path), batch_size=3)
    source = data.load_source(cfg)
    straight = [b.numpy() for b in data.make_dataset(cfg, source).take(9)]  # 27 images: over 3 epochs
    for start in (2, 5, 8):  # mid-epoch, and 15 or 24 images in: past one or three epoch ends
        resumed = [b.numpy() for b in data.make_dataset(cfg, source, start_step=start).take(9 - start)]
        np.testing.assert_array_equal(np.stack(straight[start:]), np.stack(resumed))
    seen = np.concatenate(straight).reshape(27, -1)
    assert len({bytes(row) for row in seen[:8]}) == len({bytes(row) for row in seen[8:16]}) == 8
    other = [b.numpy() for b in data.make_dataset(cfg.replace(seed=1), source).take(9)]
    assert not np.array_equal(np.stack(straight), np.stack(other))


def test_folders_without_images_fail_before_training(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(data.DataError, match='holds no images'):
        data.load_source(tiny_config(dataset='folder', data_dir=str(tmp_path / 'empty')))
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'x.jpg').write_text('no')
    (tmp_path / 'bad' / 'y.png').write_bytes(b'')
    with pytest.raises(data.DataError, match='decodes as an image'):
        data.load_source(tiny_config(dataset='folder', data_dir=str(tmp_path / 'bad')))


def _tiny_pngs(*paths):
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, np.zeros((8, 8, 3), np.uint8))


def test_a_symlink_loop_is_walked_once(tmp_path):
    _tiny_pngs(tmp_path / 'a.png', tmp_path / 'b.png', tmp_path / 'sub' / 'c.png')
    os.symlink('..', tmp_path / 'sub' / 'loop')  # followed blindly: every file again until ELOOP
    source = data.load_source(tiny_config(dataset='folder', data_dir=str(tmp_path), channels=3))
    assert [os.path.relpath(f, tmp_path) for f in source.files] == ['a.png', 'b.png', 'sub/c.png']


def test_symlinks_are_followed_but_no_file_is_listed_twice(tmp_path):
    root, elsewhere = tmp_path / 'photos', tmp_path / 'elsewhere'
    _tiny_pngs(root / 'a.png', root / 'sub' / 'c.png', elsewhere / 'more' / 'd.png', elsewhere / 'e.png')
    os.symlink(root / 'sub', root / 'z_alias')  # a second name for a folder already listed
    os.symlink(root / 'a.png', root / 'sub' / 'same_as_a.png')  # a second name for a file
    os.link(root / 'a.png', root / 'hard_link_to_a.png')
    os.symlink(elsewhere / 'more', root / 'linked_folder')  # leads to a new file: followed
    os.symlink(elsewhere / 'e.png', root / 'linked.png')  # a new file: followed
    names = [os.path.relpath(f, root) for f in data.list_image_files(str(root))]
    assert names == ['a.png', 'linked.png', 'linked_folder/d.png', 'sub/c.png']
    # URL-style folders (gs://) have no symlinks and are listed through gfile.
    for name in ('ram://photos/sub/c.png', 'ram://photos/a.png'):
        tf.io.gfile.makedirs(os.path.dirname(name))
        tf.io.write_file(name, (root / 'a.png').read_bytes())
    assert data.list_image_files('ram://photos') == ['ram://photos/a.png', 'ram://photos/sub/c.png']


def test_a_folder_of_only_too_large_images_stops_before_training(tmp_path):
    # 8000 x 6400 = 51.2 megapixels: it decodes, but the pipeline's size guard refuses it, so a start-up
    # check that decoded it without the guard would pass and training would then wait for an image forever.
    Image.new('L', (8000, 6400)).save(tmp_path / 'huge.png')
    cfg = tiny_config(dataset='folder', data_dir=str(tmp_path))
    with pytest.raises(data.DataError, match='size limit of 50,000,000 pixels') as error:
        data.load_source(cfg)
    assert str(error.value).count('. ') == 0 and f'--data_dir={tmp_path}' in str(error.value)
    iio.imwrite(tmp_path / 'small.png', np.zeros((8, 8), np.uint8))  # one usable image is enough
    assert data.load_source(cfg).num_examples == 2


_NO_IMAGE_LEFT = """
import json, os, sys
import tensorflow as tf
sys.path.insert(0, 'tests')
from conftest import tiny_config
from dcgan_tf import data

folder = sys.argv[1]
cfg = tiny_config(dataset='folder', data_dir=folder, batch_size=1)
source = data.load_source(cfg)  # 0.png decodes, so the start-up check passes
results = {}
for start in range(8):  # resumed inside a pass whose rest holds no image: not an empty pass
    assert len(list(data.make_dataset(cfg, source, start_step=start).take(3))) == 3
try:  # a worker whose share of the folder (1.png and 3.png) holds no image
    next(iter(data.make_dataset(cfg.replace(batch_size=2), source, tf.distribute.InputContext(2, 1, 2))))
except tf.errors.OpError as e:
    results['share'] = data.pipeline_error_message(e)
for name in os.listdir(folder):  # the folder goes away mid-run
    os.remove(os.path.join(folder, name))
try:
    next(iter(data.make_dataset(cfg, source, start_step=5)))
except tf.errors.OpError as e:
    results['gone'] = data.pipeline_error_message(e)
print(json.dumps(results))
"""


def test_a_pass_without_one_image_stops_instead_of_waiting_forever(tmp_path):
    iio.imwrite(tmp_path / '0.png', np.zeros((8, 8), np.uint8))
    for i in (1, 2, 3):
        (tmp_path / f'{i}.png').write_bytes(b'not a PNG')
    result = subprocess.run(  # A subprocess: the code before this check spun here for ever.
        [sys.executable, '-c', _NO_IMAGE_LEFT, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    messages = json.loads(result.stdout.splitlines()[-1])
    assert messages['share'].startswith(
        f'No image of folder:{tmp_path} could be read and decoded in a whole pass'
    )
    assert 'its 2 items' in messages['share'] and 'its 4 items' in messages['gone']
    assert messages['gone'].endswith('rerun the same command to resume from the last checkpoint.')


def test_celeb_a_folder_with_official_partition(tmp_path):
    folder = tmp_path / 'img_align_celeba'
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        iio.imwrite(folder / f'{i + 1:06d}.jpg', rng.integers(0, 255, (218, 178, 3), dtype=np.uint8))
        lines.append(f'{i + 1:06d}.jpg {0 if i < 4 else 2}')
    (tmp_path / 'list_eval_partition.txt').write_text('\n'.join(lines) + '\n')
    cfg = tiny_config(dataset='celeb_a', data_dir=str(tmp_path), channels=3, crop='center:108')
    train, test = data.load_source(cfg, 'train'), data.load_source(cfg, 'test')
    assert [os.path.basename(f) for f in test.files] == ['000005.jpg', '000006.jpg']
    assert train.num_examples == 4 and train.kind == 'files'


# --- prepared TFRecords ---


def test_prepare_then_read_is_byte_identical(tmp_path):
    _messy_folder(tmp_path / 'photos')
    cfg = tiny_config(dataset='folder', data_dir=str(tmp_path / 'photos'), channels=3, batch_size=2)
    direct = _one_pass(cfg, data.load_source(cfg))
    manifest = prepare.prepare(cfg, str(tmp_path / 'prepared'), examples_per_shard=3)
    entry = manifest['splits']['train']
    assert (entry['num_examples'], entry['skipped'], len(entry['shards'])) == (6, 4, 4)
    assert json.loads((tmp_path / 'prepared' / 'manifest.json').read_text())['resolution'] == 16
    prepared = cfg.replace(dataset=f'tfrecord:{tmp_path / "prepared"}')
    in_memory = data.load_source(prepared)
    streamed = data.load_source(prepared.replace(cache_mb=0))
    assert (in_memory.kind, streamed.kind) == ('memory', 'stream')
    np.testing.assert_array_equal(_one_pass(prepared, in_memory), direct)
    np.testing.assert_array_equal(_one_pass(prepared, streamed), direct)
    # Streamed training order: seeded, and a resumed run sees exactly the unbroken run's batches.
    straight = [b.numpy() for b in data.make_dataset(prepared, streamed).take(7)]
    resumed = [b.numpy() for b in data.make_dataset(prepared, streamed, start_step=4).take(3)]
    np.testing.assert_array_equal(np.stack(straight[4:]), np.stack(resumed))
    with pytest.raises(data.DataError, match='resolution 16'):
        data.load_source(prepared.replace(resolution=32))


def test_prepared_shards_split_across_input_pipelines(tmp_path):
    cfg = tiny_config(synthetic_examples=24, batch_size=4)
    prepare.prepare(cfg, str(tmp_path), examples_per_shard=6)
    prepared = cfg.replace(dataset=f'tfrecord:{tmp_path}', cache_mb=0)
    source = data.load_source(prepared)
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        ds = data.make_dataset(prepared, source, context, repeat=False)
        seen.append(np.concatenate([b.numpy() for b in ds]).reshape(-1, 16 * 16))
    assert len(seen[0]) == len(seen[1]) == 12  # two of the four shards each
    pixels = np.round((np.concatenate(seen) + 1) * 127.5).astype(np.uint8)
    expected = data.load_source(cfg).images.reshape(24, -1)
    assert sorted(map(bytes, pixels)) == sorted(map(bytes, expected))  # every image exactly once


def test_prepare_from_the_command_line(tmp_path):
    out = tmp_path / 'prepared'
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'dcgan_tf.main',
            '--mode=prepare',
            '--dataset=synthetic',
            '--resolution=16',
            '--synthetic_examples=40',
            f'--out_dir={out}',
            '--eval_holdout=0',
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['splits']['train']['num_examples'] == 40 and manifest['channels'] == 1


@pytest.mark.benchmark
def test_prepared_64x64_rate(tmp_path):
    """Prepared 64x64 RGB TFRecords, streamed from disk, must outrun a GPU's need (>= 20k images/s)."""
    cfg = tiny_config(
        dataset='synthetic', synthetic_examples=20000, resolution=64, channels=3, batch_size=128
    )
    prepare.prepare(cfg, str(tmp_path))
    prepared = cfg.replace(dataset=f'tfrecord:{tmp_path}', cache_mb=0)
    iterator = iter(data.make_dataset(prepared, data.load_source(prepared)))
    for _ in range(20):
        next(iterator)
    start = time.perf_counter()
    for _ in range(200):
        next(iterator)
    rate = 200 * 128 / (time.perf_counter() - start)
    assert rate >= 20000, rate
