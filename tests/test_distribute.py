"""Scaling out: the strategy choice, training that does not depend on the replica count, precision,
and checkpoints that move between strategies. Two replicas are the two logical CPUs of conftest.py.
"""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import requires_bfloat16, tiny_config
from keras import layers

from dcgan_tf import config as config_lib
from dcgan_tf import data, distribute, train

TWO_REPLICAS = dict(strategy='mirrored', devices='CPU:0,CPU:1')


def _cfg(**overrides):
    # Smaller than conftest's tiny model: each Trainer here traces a distributed step.
    values = dict(gf_dim=4, df_dim=4, z_dim=8, batch_size=4)
    values.update(overrides)
    return tiny_config(**values)


@pytest.fixture(scope='module')
def two_replicas():
    """One MirroredStrategy over the two logical CPUs for the whole module.

    Each strategy numbers its collective ops from the same start, and TensorFlow's runtime keeps them
    per process: a second strategy's all-reduce would meet the first one's and fail on a shape
    mismatch. A real run has one strategy per process; tests share one.
    """
    return distribute.create_strategy(tiny_config(**TWO_REPLICAS))


def _two(cfg, workdir, strategy):
    """A Trainer on two replicas."""
    return train.Trainer(cfg.replace(**TWO_REPLICAS), str(workdir), strategy=strategy)


def _weights(trainer):
    """Every weight of G and D, BatchNorm moving statistics included (replica 0's copy)."""
    return [v.numpy() for v in trainer.generator.weights + trainer.discriminator.weights]


def _assert_weights_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.fixture
def float32_policy_after():
    yield
    keras.mixed_precision.set_global_policy('float32')  # The Trainer sets it globally.


@pytest.fixture
def sgd(monkeypatch):
    """Plain SGD instead of Adam: Adam's first steps are ~lr*sign(g), blind to how gradients are scaled."""
    monkeypatch.setattr(keras.optimizers, 'Adam', lambda lr, beta_1, beta_2: keras.optimizers.SGD(lr))


# --- choosing the strategy ---


@pytest.mark.parametrize(
    'requested, num_gpus, tpu, num_workers, expected',
    [
        ('auto', 0, '', 1, 'one_device'),
        ('auto', 1, '', 1, 'one_device'),
        ('auto', 8, '', 1, 'mirrored'),
        ('auto', 8, 'my-tpu', 1, 'tpu'),
        ('auto', 0, 'grpc://10.0.0.2:8470', 2, 'tpu'),
        ('auto', 8, '', 2, 'multi_worker'),
        ('mirrored', 0, 'my-tpu', 2, 'mirrored'),
        ('default', 8, '', 1, 'default'),
    ],
)
def test_choose_strategy_name(requested, num_gpus, tpu, num_workers, expected):
    assert distribute.choose_strategy_name(requested, num_gpus, tpu, num_workers) == expected


def test_cluster_size_reads_tf_config():
    assert distribute.cluster_size('') == 1
    two_hosts = '{"cluster": {"worker": ["h0:2222", "h1:2222"]}, "task": {"type": "worker", "index": 1}}'
    assert distribute.cluster_size(two_hosts) == 2
    with_chief = '{"cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"], "evaluator": ["e:1"]}}'
    assert distribute.cluster_size(with_chief) == 3


@pytest.mark.parametrize(
    'cluster, task_type, task_id, chief',
    [
        ({'worker': ['h0:1', 'h1:1']}, 'worker', 0, True),
        ({'worker': ['h0:1', 'h1:1']}, 'worker', 1, False),
        ({'chief': ['c:1'], 'worker': ['h0:1']}, 'chief', 0, True),
        ({'chief': ['c:1'], 'worker': ['h0:1']}, 'worker', 0, False),
    ],
)
def test_is_chief(cluster, task_type, task_id, chief):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    assert distribute.is_chief(types.SimpleNamespace(cluster_resolver=resolver)) is chief
    assert distribute.is_chief(tf.distribute.get_strategy())  # No cluster: the only task writes.


def test_device_flags():
    assert distribute.device_list('GPU:0, /gpu:1') == ['/device:GPU:0', '/device:GPU:1']
    bad = {
        'devices=gpu0': dict(devices='gpu0'),
        'one_device with two': dict(strategy='one_device', devices='GPU:0,GPU:1'),
        'devices with multi_worker': dict(strategy='multi_worker', devices='GPU:0'),
        'tpu with mirrored': dict(strategy='mirrored', tpu='my-tpu'),
    }
    for name, overrides in bad.items():
        with pytest.raises(config_lib.ConfigError):
            config_lib.validate(tiny_config(**overrides))
            pytest.fail(name)
    config_lib.validate(tiny_config(strategy='mirrored', devices='GPU:0,/job:worker/task:1/device:GPU:0'))


def test_create_strategy_on_two_devices(two_replicas):
    assert isinstance(two_replicas, tf.distribute.MirroredStrategy)
    assert two_replicas.num_replicas_in_sync == 2
    devices = [d.rsplit('/', 1)[-1] for d in two_replicas.extended.worker_devices]
    assert devices == ['device:CPU:0', 'device:CPU:1']


def test_single_device_strategies():
    one = distribute.create_strategy(tiny_config(strategy='one_device', devices='CPU:1'))
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.extended.worker_devices[0].endswith('CPU:1')
    default = distribute.create_strategy(tiny_config(strategy='default', devices=''))
    assert default is tf.distribute.get_strategy() and default.num_replicas_in_sync == 1


def test_a_device_this_host_lacks_is_one_sentence():
    with pytest.raises(config_lib.ConfigError, match='--devices names /device:GPU:3, which this machine'):
        distribute.create_strategy(tiny_config(strategy='mirrored', devices='CPU:0,GPU:3'))


@pytest.mark.parametrize(
    'update, augment, info_code', [('simultaneous', 'none', 4), ('alternating', 'diffaugment', 0)]
)
def test_xla_per_replica_trains_like_the_uncompiled_step(tmp_path, two_replicas, update, augment, info_code):
    # Several replicas: XLA compiles each replica's gradients (a compiled strategy.run step would read
    # the other replica's variables); the updates, all-reduce and statistics stay outside.
    cfg = _cfg(train_steps=3, update=update, augment=augment, info_code=info_code)
    plain = _two(cfg.replace(jit_compile='false'), tmp_path / 'plain', two_replicas)
    xla = _two(cfg.replace(jit_compile='true'), tmp_path / 'xla', two_replicas)
    assert xla.use_jit and xla._compiled_updates is not None and plain._compiled_updates is None
    before = _weights(plain)
    metrics_plain, metrics_xla = plain.train_steps(3), xla.train_steps(3)
    for k in train.METRIC_KEYS:
        assert metrics_xla[k] == pytest.approx(metrics_plain[k], rel=1e-4, abs=1e-5)
    _assert_weights_close(plain, xla, rtol=1e-4, atol=1e-5)
    assert max(np.abs(a - b).max() for a, b in zip(before, _weights(plain), strict=True)) > 1e-4
    assert not _two(cfg, tmp_path / 'auto', two_replicas).use_jit  # auto: no XLA on a CPU.


def test_a_conditional_pair_trains_alike_on_one_replica_two_and_two_under_xla(tmp_path, two_replicas):
    # Each replica's labels must stay with its slice of the images, and its fakes drawn for them.
    # One replica and two agree with synchronized BatchNorm, which XLA per replica cannot hold; the
    # compiled step is compared with the uncompiled one without it.
    cfg = _cfg(train_steps=3, dataset='embedded', resolution=28, conditional=True)
    synced = cfg.replace(sync_bn=True)
    one = train.Trainer(synced, str(tmp_path / 'one'))
    two = _two(synced, tmp_path / 'two', two_replicas)
    plain = _two(cfg.replace(jit_compile='false'), tmp_path / 'plain', two_replicas)
    xla = _two(cfg.replace(jit_compile='true'), tmp_path / 'xla', two_replicas)
    assert one.cfg.num_classes == 10 and xla._compiled_updates is not None
    metrics = [trainer.train_steps(3) for trainer in (one, two, plain, xla)]
    for k in train.METRIC_KEYS:
        assert metrics[1][k] == pytest.approx(metrics[0][k], rel=1e-5, abs=1e-6)
        assert metrics[3][k] == pytest.approx(metrics[2][k], rel=1e-4, abs=1e-5)
    _assert_weights_close(one, two)
    _assert_weights_close(plain, xla, rtol=1e-4, atol=1e-5)
    with pytest.raises(config_lib.ConfigError, match='--sync_bn with several replicas'):
        _two(synced.replace(jit_compile='true'), tmp_path / 'refused', two_replicas)


# --- one global batch, however many replicas ---


def test_replica_r_reads_slice_r_of_the_global_batch(two_replicas):
    cfg = _cfg(batch_size=6)
    source = data.load_source(cfg)
    strategy = two_replicas
    distributed = iter(
        strategy.distribute_datasets_from_function(lambda ctx: data.make_dataset(cfg, source, ctx))
    )
    single = iter(data.make_dataset(cfg, source))
    for _ in range(3):
        halves = [t.numpy() for t in strategy.experimental_local_results(next(distributed))]
        assert [len(h) for h in halves] == [3, 3]
        np.testing.assert_array_equal(np.concatenate(halves), next(single).numpy())


def test_two_replicas_train_like_one_with_sync_bn(tmp_path, two_replicas):
    # Same losses and weights need the same z for the global batch: replica r must use rows r*B/2..
    # of the one-replica z. Were the replicas to share noise (or draw their own streams), the global
    # batch's z would differ from the single replica's and so would every weight.
    cfg = _cfg(sync_bn=True, train_steps=3)
    one = train.Trainer(cfg, str(tmp_path / 'one'))
    two = _two(cfg, tmp_path / 'two', two_replicas)
    assert (one.num_replicas, two.num_replicas) == (1, 2)
    before = _weights(one)
    metrics_one, metrics_two = one.train_steps(3), two.train_steps(3)
    for k in train.METRIC_KEYS:
        assert metrics_two[k] == pytest.approx(metrics_one[k], rel=1e-5)
    _assert_weights_close(one, two)
    assert max(np.abs(a - b).max() for a, b in zip(before, _weights(one), strict=True)) > 1e-4
    np.testing.assert_array_equal(one.rng.state.numpy(), two.rng.state.numpy())


def test_per_replica_batch_norm_keeps_replica_copies_equal(tmp_path, two_replicas):
    # Without --sync_bn each replica normalises with its own slice's statistics; the moving averages
    # are then averaged over replicas so that every copy (what a checkpoint or a worker holds) agrees.
    trainer = _two(_cfg(train_steps=1), tmp_path, two_replicas)
    trainer.train_steps(1)
    stats = [
        v
        for m in (trainer.generator, trainer.discriminator)
        for v in m.non_trainable_variables
        if 'moving' in v.path
    ]
    assert stats
    for var in stats:
        first, second = (t.numpy() for t in trainer.strategy.experimental_local_results(var.value))
        np.testing.assert_allclose(first, second, rtol=1e-6)
        assert not np.allclose(first, np.zeros_like(first) if 'mean' in var.path else np.ones_like(first))


def _bn_free_generator(cfg):
    init = keras.initializers.RandomNormal(0.0, 0.2, seed=1)
    return keras.Sequential(
        [
            keras.Input(shape=(cfg.z_dim,)),
            layers.Dense(4 * 4 * 4, kernel_initializer=init),
            layers.Reshape((4, 4, 4)),
            layers.Conv2DTranspose(cfg.channels, 5, strides=4, padding='same', kernel_initializer=init),
            layers.Activation('tanh', dtype='float32'),
        ],
        name='generator',
    )


def _bn_free_discriminator(cfg):
    init = keras.initializers.RandomNormal(0.0, 0.2, seed=2)
    return keras.Sequential(
        [
            keras.Input(shape=(cfg.resolution, cfg.resolution, cfg.channels)),
            layers.Conv2D(4, 5, strides=4, padding='same', kernel_initializer=init),
            layers.LeakyReLU(0.2),
            layers.Flatten(),
            layers.Dense(1, kernel_initializer=init, dtype='float32'),
        ],
        name='discriminator',
    )


def test_loss_scaling_without_batch_norm(tmp_path, monkeypatch, sgd, two_replicas):
    # No BatchNorm, so nothing couples a replica to its batch slice: the summed per-replica
    # gradients equal the single replica's only if each loss is divided by the GLOBAL batch.
    # (Dividing by the per-replica batch would double every SGD update with two replicas.)
    monkeypatch.setattr(train.models, 'build_generator', _bn_free_generator)
    monkeypatch.setattr(train.models, 'build_discriminator', _bn_free_discriminator)
    cfg = _cfg(g_lr=0.2, d_lr=0.2, train_steps=2)
    one = train.Trainer(cfg, str(tmp_path / 'one'))
    two = _two(cfg, tmp_path / 'two', two_replicas)
    before = _weights(one)
    one.train_steps(2), two.train_steps(2)
    moved = [np.abs(a - b).max() for a, b in zip(before, _weights(one), strict=True)]
    assert min(moved) > 1e-4  # Every weight moved, so the comparison below means something.
    _assert_weights_close(one, two)


# --- checkpoints across strategies ---


def test_checkpoint_moves_between_two_replicas_and_one(tmp_path, two_replicas):
    cfg = _cfg(sync_bn=True, train_steps=4)
    straight = train.Trainer(cfg, str(tmp_path / 'straight'))
    straight.train_steps(4)

    # Two replicas for steps 1-2, then one replica resumes for steps 3-4.
    first = _two(cfg, tmp_path / 'moved', two_replicas)
    first.train_steps(2)
    first.save()
    second = train.Trainer(cfg, str(tmp_path / 'moved'))
    assert second.restored_from.endswith('ckpt-2') and int(second.step) == 2
    _assert_weights_close(first, second, rtol=0, atol=0)
    second.train_steps(2)
    _assert_weights_close(straight, second)

    # And back: the one-replica checkpoint restores into every replica's copy.
    second.save()
    back = _two(cfg, tmp_path / 'moved', two_replicas)
    assert int(back.step) == 4
    np.testing.assert_array_equal(back.rng.state.numpy(), straight.rng.state.numpy())
    for var in back.generator.weights:
        for copy in back.strategy.experimental_local_results(var.value):
            np.testing.assert_array_equal(copy.numpy(), var.numpy())
    _assert_weights_close(straight, back)


# --- precision ---


@requires_bfloat16
def test_mixed_bfloat16_trains_with_float32_outputs(tmp_path, float32_policy_after):
    trainer = train.Trainer(_cfg(precision='mixed_bfloat16'), str(tmp_path))
    assert trainer.generator.get_layer(index=0).compute_dtype == 'bfloat16'
    assert {v.dtype for v in trainer.generator.trainable_variables} == {'float32'}
    metrics = trainer.train_steps(2)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    z = tf.random.normal([2, trainer.cfg.z_dim])
    images = trainer.generator(z, training=False)
    assert images.dtype == tf.float32
    assert trainer.discriminator(images, training=False).dtype == tf.float32
    assert not isinstance(trainer.g_optimizer, keras.optimizers.LossScaleOptimizer)  # bfloat16 needs none.


def test_mixed_float16_scales_and_unscales_the_loss(tmp_path, sgd, float32_policy_after):
    cfg = _cfg(g_lr=0.1, d_lr=0.1, train_steps=2)
    reference = train.Trainer(cfg, str(tmp_path / 'f32'))
    half = train.Trainer(cfg.replace(precision='mixed_float16'), str(tmp_path / 'f16'))
    assert isinstance(half.d_optimizer, keras.optimizers.LossScaleOptimizer)
    start = _weights(half)
    reference.train_steps(1)
    half.train_steps(1)
    # The gradients went through float16 scaled by 2**15 and came out unscaled: one SGD step moves
    # the weights as float32's does (float16 rounding aside), not 32768 times as far.
    ref_delta = np.concatenate([(w - s).ravel() for w, s in zip(_weights(reference), start, strict=True)])
    half_delta = np.concatenate([(w - s).ravel() for w, s in zip(_weights(half), start, strict=True)])
    assert np.linalg.norm(half_delta - ref_delta) < 0.05 * np.linalg.norm(ref_delta)
    assert float(half.d_optimizer.dynamic_scale) == 2.0**15

    # A scale that overflows float16: the step is skipped (no weight changes) and the scale halves.
    for optimizer in (half.g_optimizer, half.d_optimizer):
        optimizer.dynamic_scale.assign(2.0**40)
    trainable = half.generator.trainable_variables + half.discriminator.trainable_variables
    before = [v.numpy() for v in trainable]
    half.train_steps(1)
    for a, v in zip(before, trainable, strict=True):
        np.testing.assert_array_equal(a, v.numpy())
    assert float(half.g_optimizer.dynamic_scale) == float(half.d_optimizer.dynamic_scale) == 2.0**39
