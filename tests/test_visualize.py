"""--mode=visualize: the guided gradient by hand, the pictures of a short real run, the memorisation check."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from test_flags import _cli

from dcgan_tf import train
from dcgan_tf.inside import guided_backprop, neighbours, visualize
from dcgan_tf.quality import classifier


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """60 steps on the embedded digits at 28x28, widths 8: (cfg, workdir). D learns strokes by then."""
    workdir = str(tmp_path_factory.mktemp('run'))
    cfg = tiny_config(
        dataset='embedded',
        resolution=28,
        batch_size=32,
        train_steps=60,
        log_every=60,
        sample_every=60,
        checkpoint_every=60,
        ema_decay=0.0,
    )
    train.train_and_evaluate(cfg, workdir)
    return cfg, workdir


def test_guided_leaky_relu_gradient_by_hand():
    x = tf.constant([-2.0, -0.5, 0.5, 2.0])
    dy = tf.constant([1.0, -1.0, 1.0, -1.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        guided = guided_backprop.guided_leaky_relu(x, 0.2)
        plain = tf.nn.leaky_relu(x, 0.2)
    np.testing.assert_allclose(guided.numpy(), plain.numpy())  # The forward pass is LeakyReLU's.
    # Guided: only positive gradients pass, times the slope where x <= 0.
    np.testing.assert_allclose(tape.gradient(guided, x, output_gradients=dy).numpy(), [0.2, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(tape.gradient(plain, x, output_gradients=dy).numpy(), [0.2, -0.2, 1.0, -1.0])


def test_guided_gradient_through_two_layers_by_hand():
    # y = v . g(W x): h = W x = [-1, -1, 1.5]; guided signal max(v, 0) * slope' = [1, 0, 2] * [.2, .2, 1]
    # = [0.2, 0, 2]; d y / d x = W^T [0.2, 0, 2] = [1.2, 0.8] (the ordinary gradient is [2.4, 0.5]).
    w = tf.constant([[1.0, -1.0], [-2.0, 0.5], [0.5, 0.5]])
    v = tf.constant([1.0, -3.0, 2.0])
    x = tf.constant([1.0, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(v * guided_backprop.guided_leaky_relu(tf.linalg.matvec(w, x), 0.2))
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [1.2, 0.8], rtol=1e-6)


def test_nearest_matches_brute_force(monkeypatch):
    monkeypatch.setattr(neighbours, 'CHUNK', 64)  # Several blocks, and queries that straddle them.
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 12)).astype(np.float32)
    queries = rng.normal(size=(7, 12)).astype(np.float32)
    indices, distances = neighbours.nearest(queries, bank, 3)
    brute = np.linalg.norm(queries[:, None] - bank[None], axis=2)
    np.testing.assert_array_equal(indices, np.argsort(brute, axis=1)[:, :3])
    np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :3], rtol=1e-4)
    own, own_distances = neighbours.nearest(bank[:100], bank, 1, exclude_self=True)
    self_brute = np.linalg.norm(bank[:100, None] - bank[None], axis=2)
    self_brute[np.arange(100), np.arange(100)] = np.inf
    np.testing.assert_array_equal(own[:, 0], self_brute.argmin(axis=1))


def test_memorisation_flags_copies():
    train_vectors = np.random.default_rng(1).normal(size=(500, 20)).astype(np.float32)
    copies = neighbours.memorisation(train_vectors[:50] + 1e-3, train_vectors, 100, 2)
    new = neighbours.memorisation(np.random.default_rng(2).normal(size=(50, 20)), train_vectors, 100, 2)
    assert copies['closer_than_train_min'] == 1.0 and copies['ratio'] < 0.01
    assert new['closer_than_train_min'] < 0.1 and 0.7 < new['ratio'] < 1.5
    np.testing.assert_array_equal(copies['indices'][:, 0], np.arange(50))


@pytest.fixture(scope='module')
def pictures(run, tmp_path_factory):
    cfg, workdir = run
    folder = tmp_path_factory.mktemp('pictures')
    # An untrained classifier is enough to exercise the feature-space neighbours.
    classifier_path = str(folder / 'classifier.keras')
    classifier.build_classifier(0).save(classifier_path)
    out_dir = str(folder / 'out')
    # The first 2,000 training digits: the classifier's features of all 10,000 would cost seconds.
    first = visualize._training_images
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(visualize, '_training_images', lambda run_cfg: first(run_cfg)[:2000])
        result = visualize.run(cfg.replace(num=32, classifier_path=classifier_path), workdir, out_dir)
    return result, out_dir


def test_trained_guided_maps_are_more_coherent_than_random(pictures):
    result, _ = pictures
    trained, random_d = result['trained'], result['random']
    assert trained['layer'] == random_d['layer'] == 'conv1_lrelu'
    assert len(trained['features']) == 6 and np.shape(trained['images']) == (6, 6)
    # Random D's maps are pixel noise (coherence 0.07 here); 60 steps of training give strokes (0.35; 0.19
    # after 100 steps, 0.46 after 150 at batch 16: it moves with the features picked, far above noise).
    assert trained['coherence'] > random_d['coherence'] + 0.06, (trained['coherence'], random_d['coherence'])
    assert min(trained['responses']) > max(random_d['responses'])
    assert abs(random_d['filters']['std'] - 0.02) < 0.004  # N(0, 0.02), as initialised.


def test_pictures_are_written_trained_beside_random(pictures):
    result, out_dir = pictures
    names = {
        'guided_backprop',
        'first_layer_filters',
        'feature_maps',
        'neighbours_pixels',
        'neighbours_classifier',
    }
    assert set(result['files']) == names
    guided = iio.imread(result['files']['guided_backprop'])
    # Two 6 x 6 grids of 84-pixel cells (28 enlarged 3x) with 2-pixel padding, 12 white columns between.
    side = 6 * (84 + 2) + 2
    assert guided.shape[:2] == (side, 2 * side + visualize.GAP)
    left, right = guided[:, :side], guided[:, side + visualize.GAP :]
    assert not np.array_equal(left, right) and np.all(guided[:, side : side + visualize.GAP] == 255)
    filters = iio.imread(result['files']['first_layer_filters'])
    assert filters.ndim == 2 and filters.shape[1] > filters.shape[0]  # 8 filters, 2 rows of 4.
    rows = iio.imread(result['files']['neighbours_pixels']).shape[0]
    assert rows == visualize.NEIGHBOUR_ROWS * (84 + 2) + 2
    saved = json.loads(open(f'{out_dir}/visualize.json').read())
    assert saved['trained']['coherence'] == result['trained']['coherence']
    for space in ('pixels', 'classifier'):
        check = saved['neighbours'][space]
        assert (
            check['sample_median'] > 0
            and check['train_median'] > 0
            and 0 <= check['closer_than_train_min'] <= 1
        )


def test_bad_flags(monkeypatch, capsys):
    status, err = _cli(['--mode=visualize'], monkeypatch, capsys)
    assert status == 2 and '--out_dir' in err
    status, err = _cli(
        ['--mode=visualize', '--out_dir=x', '--classifier_path=/no/such.keras'], monkeypatch, capsys
    )
    assert status == 2 and 'classifier_path' in err
    status, err = _cli(['--num_features=0'], monkeypatch, capsys)
    assert status == 2 and 'num_features' in err
