"""The quality metrics' maths, the streaming accumulators, the feature nets' plumbing, --mode=evaluate."""

import json

import numpy as np
import pytest
import scipy.linalg

from dcgan_tf.quality import classifier, evaluate, features, metrics


def _covariance(rng, dim, rank=None):
    a = rng.standard_normal((dim, rank or dim))
    return a @ a.T / (rank or dim)


# --- matrix square root and Frechet distance ---


@pytest.mark.parametrize('dim', [2, 16, 64])
def test_sqrtm_psd_matches_scipy(dim):
    rng = np.random.default_rng(dim)
    sigma = _covariance(rng, dim)
    ours = metrics.sqrtm_psd(sigma)
    np.testing.assert_allclose(ours, scipy.linalg.sqrtm(sigma).real, atol=1e-8)
    np.testing.assert_allclose(ours @ ours, sigma, atol=1e-8)


def test_trace_sqrt_product_matches_scipy_on_the_nonsymmetric_product():
    rng = np.random.default_rng(1)
    s1, s2 = _covariance(rng, 32), _covariance(rng, 32)
    expected = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert metrics.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-8)


def test_near_singular_covariances_stay_finite():
    # 5 samples in 64 dimensions: rank 4, eigenvalues ~1e-17 and rounding-negative.
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, 64)), rng.standard_normal((5, 64))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    assert np.linalg.eigvalsh(s1).min() < 1e-10
    root = metrics.sqrtm_psd(s1)
    assert np.isfinite(root).all() and np.isrealobj(root)
    fid = metrics.frechet_distance(x.mean(0), s1, y.mean(0), s2)
    assert np.isfinite(fid) and fid > 0


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(3)
    features = rng.standard_normal((2000, 16)) @ rng.standard_normal((16, 16))
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    distances = []
    for scale in (0.1, 0.3, 1.0, 3.0):
        noisy = features + scale * rng.standard_normal(features.shape)
        distances.append(metrics.frechet_distance(mu, sigma, noisy.mean(0), np.cov(noisy, rowvar=False)))
    assert all(a < b for a, b in zip(distances, distances[1:], strict=False)), distances


def test_frechet_distance_of_known_gaussians():
    # Means 3 apart in one coordinate, identical covariances: the distance is |dmu|^2 = 9.
    sigma = np.diag([1.0, 2.0, 3.0])
    assert metrics.frechet_distance(np.zeros(3), sigma, np.array([3.0, 0, 0]), sigma) == pytest.approx(9.0)
    # 1-D: (s1 - s2)^2 for standard deviations s1 = 1, s2 = 2.
    assert metrics.frechet_distance([0.0], [[1.0]], [0.0], [[4.0]]) == pytest.approx(1.0)


# --- streaming ---


def test_streaming_moments_equal_numpy_on_the_whole_set():
    rng = np.random.default_rng(4)
    features = rng.standard_normal((1003, 8)) * 5 + 100  # An offset that would hurt a float32 sum.
    moments = metrics.GaussianMoments()
    for chunk in np.array_split(features, 7):
        moments.update(chunk)
    mean, covariance = moments.mean_and_covariance()
    np.testing.assert_allclose(mean, features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(covariance, np.cov(features, rowvar=False), rtol=1e-8, atol=1e-8)


def test_reservoir_keeps_a_uniform_sample_of_bounded_size():
    reservoir = metrics.Reservoir(capacity=500, seed=0)
    rows = np.arange(20000, dtype=np.float32)[:, None]
    for chunk in np.array_split(rows, 40):
        reservoir.update(chunk)
    kept = reservoir.sample()[:, 0]
    assert kept.shape == (500,) and len(set(kept)) == 500
    # Uniform over the stream: the mean index is ~10000 (std of the mean ~260), not skewed to the start.
    assert 9000 < kept.mean() < 11000


# --- KID ---


def test_kid_of_one_distribution_is_zero_in_expectation_and_positive_for_two():
    rng = np.random.default_rng(5)
    values = [
        metrics.kernel_distance(
            rng.standard_normal((200, 8)), rng.standard_normal((200, 8)), 10, 100, seed=i
        )[0]
        for i in range(20)
    ]
    _, spread = metrics.kernel_distance(rng.standard_normal((200, 8)), rng.standard_normal((200, 8)), 10, 100)
    # Unbiased: the mean over repetitions is ~0 and some single values are negative (a biased one never is).
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values)) + 1e-4
    assert min(values) < 0
    assert spread > 0
    shifted, _ = metrics.kernel_distance(
        rng.standard_normal((200, 8)), rng.standard_normal((200, 8)) + 1, 10, 100
    )
    assert shifted > 10 * max(abs(np.mean(values)), np.std(values))


def test_mmd2_unbiased_by_hand():
    # d = 1: k(a, b) = (ab + 1)^3. x = {0, 1}, y = {0, 2}.
    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
    within_x = 2 * 1 / 2  # off-diagonal k(0,1) = 1, twice, over m(m-1) = 2
    within_y = 2 * 1 / 2
    cross = (1 + 1 + 1 + 27) / 4  # k(0,0), k(0,2), k(1,0), k(1,2)
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(within_x + within_y - 2 * cross)


# --- score and coverage ---


def test_score_and_coverage_on_hand_made_tables():
    confident_all_classes = np.eye(4)
    assert metrics.inception_score(confident_all_classes) == pytest.approx(4.0)
    assert metrics.class_coverage(confident_all_classes) == pytest.approx(1.0)
    one_class = np.tile([[1.0, 0, 0, 0]], (5, 1))
    assert metrics.inception_score(one_class) == pytest.approx(1.0)
    assert metrics.class_coverage(one_class) == pytest.approx(0.0)
    uniform = np.full((3, 4), 0.25)
    assert metrics.inception_score(uniform) == pytest.approx(1.0)
    # Two rows [0.5, 0.5] and [1, 0]: p(y) = [0.75, 0.25]; H(p(y)) = 0.5623, mean H(p(y|x)) = ln2 / 2.
    table = np.array([[0.5, 0.5], [1.0, 0.0]])
    h_marginal = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert metrics.inception_score(table) == pytest.approx(np.exp(h_marginal - np.log(2) / 2))
    # Predicted classes 0, 0, 0, 1: histogram [0.75, 0.25] over log(2).
    assert metrics.class_coverage(np.array([[1, 0], [1, 0], [0.9, 0.1], [0.2, 0.8]])) == pytest.approx(
        h_marginal / np.log(2)
    )


def test_confident_share_and_entropy_bits_on_hand_made_tables():
    # Top probabilities 0.95, 0.9 (not above), 0.6, 1.0: two of four are confident.
    table = np.array([[0.95, 0.05], [0.9, 0.1], [0.4, 0.6], [0.0, 1.0]])
    assert metrics.confident_share(table) == pytest.approx(0.5)
    # Predicted classes 0, 0, 1, 1: one bit.
    assert metrics.histogram_entropy_bits(table) == pytest.approx(1.0)
    # Ten classes equally often: log2(10) bits, all confident; one class: 0 bits.
    assert metrics.histogram_entropy_bits(np.eye(10)) == pytest.approx(np.log2(10))
    assert metrics.confident_share(np.eye(10)) == 1.0
    assert metrics.histogram_entropy_bits(np.tile(np.eye(10)[3], (7, 1))) == 0.0
    # Classes 0, 0, 0, 1 (three quarters and one quarter): 0.8113 bits, streamed in two updates.
    moments = metrics.ProbabilityMoments()
    moments.update(np.array([[0.99, 0.01], [0.7, 0.3]]))
    moments.update(np.array([[0.8, 0.2], [0.05, 0.95]]))
    assert moments.entropy_bits() == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))
    assert moments.confident() == pytest.approx(0.5)


def test_is_better_knows_each_metrics_direction():
    assert metrics.is_better('fid', 3.0, None)
    assert metrics.is_better('fid', 3.0, 4.0) and not metrics.is_better('fid', 5.0, 4.0)
    assert metrics.is_better('kid', 0.01, 0.02)
    assert metrics.is_better('score', 9.0, 8.0) and not metrics.is_better('coverage', 0.5, 0.9)


# --- feature nets and the mode ---


def test_inception_net_shapes_with_random_weights():
    # weights='none': no download; only the plumbing (resize, grey to RGB, both outputs) is checked.
    net = features.inception_net('none')
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 1)).astype(np.float32)
    vectors, probabilities = net(images)
    assert vectors.shape == (2, 2048)
    assert probabilities.shape == (2, 1000)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)


def test_compare_on_streamed_features_with_a_fake_net():
    # A 'net' that returns the pixels themselves and a 2-class softmax of the mean brightness.
    def fn(images):
        flat = images.reshape(len(images), -1)
        bright = flat.mean(1, keepdims=True) * 5
        logits = np.concatenate([bright, -bright], 1)
        return flat, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    net = features.FeatureNet('pixels', 'none', fn)
    rng = np.random.default_rng(0)
    same = [rng.uniform(-1, 1, (50, 4, 4, 1)).astype(np.float32) for _ in range(6)]
    other = [rng.uniform(-1, 1, (50, 4, 4, 1)).astype(np.float32) for _ in range(6)]
    shifted = [b * 0.5 + 0.4 for b in other]
    a, b, c = (features.accumulate(net, iter(x)) for x in (same, other, shifted))
    close, far = metrics.compare(b, a, 10, 100), metrics.compare(c, a, 10, 100)
    assert a.count == 300
    assert close['fid'] < far['fid'] and close['kid'] < far['kid']
    per_set = ('score', 'coverage', 'confident', 'entropy_bits')
    assert set(close) == {'fid', 'kid', 'kid_std', *per_set, *(f'{k}_real' for k in per_set)}
    # The shifted (generated) set is mostly 'bright'; the real one covers both classes.
    assert far['coverage'] < close['coverage'] and far['coverage_real'] == close['coverage_real']


def test_evaluate_mode_untrained_vs_real(tmp_path, capsys):
    from tests.conftest import tiny_config

    path = str(tmp_path / 'tiny.keras')
    classifier.build_classifier().save(path)
    cfg = tiny_config(
        mode='evaluate',
        dataset='synthetic',
        feature_net='mnist',
        classifier_path=path,
        eval_source='untrained',
        eval_samples=40,
        kid_subsets=5,
        kid_subset_size=20,
    )
    result = evaluate.run(cfg, str(tmp_path))
    printed = capsys.readouterr().out.splitlines()
    assert json.loads(printed[0]) == json.loads(json.dumps(result))
    assert 'fid' in printed[2] or any(line.strip().startswith('fid') for line in printed)
    assert result['protocol']['num_generated'] == 40 and result['protocol']['num_real'] == 40
    metrics = result['metrics']
    assert metrics['fid'] > 0 and 0 <= metrics['coverage'] <= 1
    # The untrained G draws one class (the coverage test above); the table names the new figures.
    assert 0 <= metrics['confident'] <= 1 and 0 <= metrics['entropy_bits'] <= np.log2(10) + 1e-9
    assert metrics['entropy_bits'] == pytest.approx(metrics['coverage'] * np.log2(10))
    assert any(line.split()[:1] == ['confident'] for line in printed)
    assert any(line.split()[:1] == ['entropy_bits'] for line in printed)
    assert result['seconds'] >= 0


def _scalars(event_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(event_dir, size_guidance={'tensors': 0})
    accumulator.Reload()
    return {
        tag: [(e.step, float(tf_make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
        for tag in accumulator.Tags()['tensors']
    }


def tf_make_ndarray(proto):
    import tensorflow as tf

    return tf.make_ndarray(proto)


def test_eval_during_training_logs_and_keeps_the_best_checkpoint(tmp_path):
    import os

    from dcgan_tf import export, train
    from tests.conftest import tiny_config

    path = str(tmp_path / 'net.keras')
    classifier.build_classifier().save(path)
    workdir = str(tmp_path / 'run')
    cfg = tiny_config(
        train_steps=6,
        eval_every=2,
        eval_samples=24,
        kid_subsets=4,
        kid_subset_size=12,
        feature_net='mnist',
        classifier_path=path,
        keep_checkpoints=1,
        export_best=True,
        export_at_end=True,
    )
    train.train_and_evaluate(cfg, workdir)
    curve = _scalars(os.path.join(workdir, 'tensorboard', 'eval'))['eval/fid']
    assert [step for step, _ in curve] == [2, 4, 6]
    best = evaluate.read_best(os.path.join(workdir, 'checkpoints', 'best'))
    best_step, best_fid = min(curve, key=lambda point: point[1])
    assert best['step'] == best_step and best['metric'] == 'fid'
    assert best['value'] == pytest.approx(best_fid, rel=1e-5)
    # The best checkpoint survives the rolling ones (only the last is kept) and is what was exported.
    assert os.path.exists(best['checkpoint'] + '.index')
    assert export.load(os.path.join(workdir, 'saved_model')).metadata['step'] == best_step
    _, _, _, step = evaluate.restore_best_generators(workdir)
    assert step == best_step
