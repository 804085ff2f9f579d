"""Every source gives float32 NHWC batches in [-1, 1]; the order is a function of the seed."""

import gzip

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import HAVE_SHARED_MNIST, SHARED_MNIST, tiny_config

from dcgan_tf import data


def _batches(cfg, source, n=2, **kwargs):
    return [b.numpy() for b in data.make_dataset(cfg, source, **kwargs).take(n)]


def test_embedded_digits_ship_with_the_package():
    images, labels = data.load_embedded()
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
    assert sorted(np.unique(labels)) == list(range(10))
    cfg = tiny_config(dataset='embedded', resolution=28, batch_size=16)
    batch = _batches(cfg, data.load_source(cfg), 1)[0]
    assert batch.shape == (16, 28, 28, 1) and batch.dtype == np.float32
    assert batch.min() == -1.0 and batch.max() == 1.0  # MNIST has pure black and pure white.


def test_embedded_resized_to_rgb_32():
    cfg = tiny_config(dataset='embedded', resolution=32, channels=3, batch_size=4)
    batch = _batches(cfg, data.load_source(cfg), 1)[0]
    assert batch.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])  # gray copied into RGB


def test_read_idx_raw_and_gzip_agree(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b''.join(d.to_bytes(4, 'big') for d in array.shape)
    (tmp_path / 'a').write_bytes(header + array.tobytes())
    with gzip.open(tmp_path / 'a.gz', 'wb') as f:
        f.write(header + array.tobytes())
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / 'a')), array)
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / 'a.gz')), array)
    (tmp_path / 'short').write_bytes(header + array.tobytes()[:-3])
    with pytest.raises(data.DataError, match='truncated'):
        data.read_idx(str(tmp_path / 'short'))


@pytest.mark.skipif(not HAVE_SHARED_MNIST, reason='the full MNIST IDX files are not beside this checkout')
def test_mnist_from_local_idx_files():
    images, labels = data.load_mnist_like('mnist', SHARED_MNIST, 'train')
    assert images.shape == (60000, 28, 28, 1) and labels.shape == (60000,)


def test_mnist_without_files_or_network_says_what_to_do(tmp_path):
    (tmp_path / 'unrelated.txt').write_text('x')
    with pytest.raises(data.DataError, match='IDX files'):
        data.load_mnist_like('mnist', str(tmp_path / 'tfds_cache'), 'train', download=False)


def test_synthetic_shapes():
    images = data.make_shapes(10, 16, 3, seed=1)
    assert images.shape == (10, 16, 16, 3)
    assert (images.reshape(10, -1).max(1) >= 128).all()  # each image holds a shape
    np.testing.assert_array_equal(images, data.make_shapes(10, 16, 3, seed=1))


def test_folder_of_mixed_images(tmp_path):
    rng = np.random.default_rng(0)
    iio.imwrite(tmp_path / 'gray.png', rng.integers(0, 255, (40, 30), dtype=np.uint8))
    iio.imwrite(tmp_path / 'rgb.jpg', rng.integers(0, 255, (20, 50, 3), dtype=np.uint8))
    (tmp_path / 'sub').mkdir()
    iio.imwrite(tmp_path / 'sub' / 'rgba.png', rng.integers(0, 255, (33, 33, 4), dtype=np.uint8))
    iio.imwrite(tmp_path / 'sub' / 'x.bmp', rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    (tmp_path / 'notes.txt').write_text('not an image')
    (tmp_path / 'broken.png').write_bytes(b'\x89PNG garbage')
    cfg = tiny_config(dataset='folder', data_dir=str(tmp_path), channels=3, batch_size=4)
    source = data.load_source(cfg)
    assert source.num_examples == 5  # the text file is not listed
    batch = _batches(cfg, source, 1)[0]
    assert batch.shape == (4, 16, 16, 3) and batch.min() >= -1 and batch.max() <= 1


def test_center_crop_keeps_the_middle():
    image = np.zeros((10, 30, 1), np.uint8)
    image[:, 10:20] = 255  # a white centre square flanked by black
    out = data.fit_image(image, 'center', 5).numpy()
    assert out.shape == (5, 5, 1) and out.dtype == np.uint8 and out.min() == 255
    assert data.fit_image(image, 'none', 5).numpy().min() < 255  # squashed, the black flanks come in


def test_order_is_seeded_and_resumable():
    cfg = tiny_config(batch_size=4, synthetic_examples=20)
    source = data.load_source(cfg)
    straight = _batches(cfg, source, 7)
    np.testing.assert_array_equal(np.stack(straight), np.stack(_batches(cfg, source, 7)))
    resumed = _batches(cfg, source, 4, start_step=3)
    np.testing.assert_array_equal(np.stack(straight[3:]), np.stack(resumed))
    other = _batches(cfg.replace(seed=1), source, 7)
    assert not np.array_equal(np.stack(straight), np.stack(other))


def test_every_image_seen_once_per_epoch():
    cfg = tiny_config(batch_size=4, synthetic_examples=20)
    source = data.load_source(cfg)
    epoch = np.concatenate(_batches(cfg, source, 5)).reshape(20, -1)
    expected = source.images.reshape(20, -1).astype(np.float32) / 127.5 - 1
    assert sorted(map(bytes, epoch.astype(np.float32))) == sorted(map(bytes, expected))
