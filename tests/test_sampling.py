"""The sampling tools: files they write, the paper's arithmetic and ablation, and every bad input refused
with one sentence (ConfigError, exit status 2 on the command line)."""

import os
import subprocess
import sys
import textwrap

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import REPO_ROOT, tiny_config

from dcgan_tf import config, export, images, sampling, train


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A two-step run with its checkpoint and export: (trainer, workdir)."""
    workdir = str(tmp_path_factory.mktemp('run'))
    trainer = train.train_and_evaluate(tiny_config(train_steps=2, export_at_end=True), workdir)
    return trainer, workdir


def _cfg(workdir, tmp_path, mode, **overrides):
    return config.validate(
        tiny_config(mode=mode, workdir=workdir, out=str(tmp_path / f'{mode}.png'), **overrides)
    )


def test_sample_writes_grid_z_and_singles(run, tmp_path):
    _, workdir = run
    cfg = _cfg(workdir, tmp_path, 'sample', num=6, seed=11, out_dir=str(tmp_path / 'singles'))
    result = sampling.run(cfg)
    assert result['images'].shape == (6, 16, 16, 1)
    z = np.load(tmp_path / 'sample.npy')
    np.testing.assert_array_equal(z, result['z'])
    np.testing.assert_array_equal(np.load(tmp_path / 'singles' / 'z.npy'), z)
    # Two rows of three 16x16 images with 2-pixel padding.
    assert iio.imread(tmp_path / 'sample.png').shape == (2 * 18 + 2, 3 * 18 + 2)
    singles = sorted(os.listdir(tmp_path / 'singles'))
    # Six digits, so a folder for external metrics (50,000 and more) sorts in z order too.
    assert singles[:2] == ['sample_000000.png', 'sample_000001.png'] and len(singles) == 8
    assert singles[-2:] == ['samples.json', 'z.npy']
    np.testing.assert_array_equal(
        iio.imread(tmp_path / 'singles' / 'sample_000004.png'), result['images'][4, ..., 0]
    )
    # The saved z reproduce the samples: a person can point at one by index.
    loaded = export.load(os.path.join(workdir, 'saved_model'))
    np.testing.assert_array_equal(loaded.generate(z), result['images'])


def test_interpolate_rows_and_gif(run, tmp_path):
    _, workdir = run
    cfg = _cfg(workdir, tmp_path, 'interpolate', num_walks=3, interp_steps=5, interpolation='lerp')
    result = sampling.run(cfg)
    assert result['images'].shape == (3, 5, 16, 16, 1) and result['z'].shape == (3, 5, 16)
    assert iio.imread(tmp_path / 'interpolate.png').shape == (3 * 18 + 2, 5 * 18 + 2)
    frames = iio.imread(tmp_path / 'interpolate.gif', index=None)
    assert len(frames) == 2 * 5 - 2  # There and back, without repeating the ends.
    # Walks start at the z of `sample` with the same seed: pairs (0, 1), (2, 3), (4, 5).
    _, ends = export.load(os.path.join(workdir, 'saved_model')).sample(6, cfg.seed)
    np.testing.assert_array_equal(result['z'][:, 0], ends[0::2])
    np.testing.assert_array_equal(result['z'][:, -1], ends[1::2])
    np.testing.assert_allclose(result['z'][:, 2], (ends[0::2] + ends[1::2]) / 2, rtol=1e-5, atol=1e-6)


def test_arithmetic_is_a_minus_b_plus_c(run, tmp_path):
    _, workdir = run
    bank = np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32)
    np.save(tmp_path / 'bank.npy', bank)
    cfg = _cfg(
        workdir,
        tmp_path,
        'arithmetic',
        z_file=str(tmp_path / 'bank.npy'),
        group_a='0,1,2',
        group_b='3,4',
        group_c='9',
        perturb_scale=0.25,
    )
    result = sampling.run(cfg)
    expected = bank[[0, 1, 2]].mean(0) - bank[[3, 4]].mean(0) + bank[9]
    np.testing.assert_allclose(result['z'][4], expected, rtol=1e-6)
    others = np.delete(result['z'], 4, axis=0) - expected
    assert np.abs(others).max() <= 0.25 and np.abs(others).max() > 0.1
    loaded = export.load(os.path.join(workdir, 'saved_model'))
    np.testing.assert_array_equal(result['images'], loaded.generate(result['z']))
    picture = iio.imread(tmp_path / 'arithmetic.png')
    # Left: 3 rows of (3 members + blank + mean); right: the 3x3 grid, 6 pixels apart.
    assert picture.shape == (3 * 18 + 2, (5 * 18 + 2) + 6 + (3 * 18 + 2))


def test_ablation_zeroes_the_chosen_maps(run):
    trainer, _ = run
    generator = trainer.generator
    z = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    some = sampling.ablate_images(generator, z, 'deconv1', [0, 3])
    assert some['layer'] == 'deconv1_relu' and some['filters'] == [0, 3]
    np.testing.assert_array_equal(some['original'], images.to_uint8(generator(z, training=False).numpy()))
    assert not np.array_equal(some['original'], some['ablated'])
    # With every map of the last hidden layer gone, only the output bias is left: one image for all z.
    everything = sampling.ablate_images(generator, z, '', list(range(8)))
    assert everything['layer'] == 'deconv1_relu'
    assert (everything['ablated'] == everything['ablated'][:1]).all()
    top = sampling.ablate_images(generator, z, 'project', 'top:3')
    assert top['layer'] == 'project_relu' and len(top['filters']) == 3


def test_ablate_mode_writes_side_by_side(run, tmp_path):
    _, workdir = run
    result = sampling.run(_cfg(workdir, tmp_path, 'ablate', num=4, ablate_filters='1,2'))
    assert result['filters'] == [1, 2]
    assert iio.imread(tmp_path / 'ablate.png').shape == (2 * 18 + 2, 2 * (2 * 18 + 2) + 6)


def test_bad_inputs_get_one_sentence(run, tmp_path):
    trainer, workdir = run
    base = dict(workdir=workdir, out=str(tmp_path / 'x.png'))

    def refused(match, mode='sample', **overrides):
        with pytest.raises(config.ConfigError, match=match):
            sampling.run(config.validate(tiny_config(mode=mode, **{**base, **overrides})))

    refused('does not exist', saved_model=str(tmp_path / 'nowhere'))
    refused('not a SavedModel', saved_model=workdir)
    refused('--num=0', num=0)
    refused('--num=5000', num=5000)
    refused('--seed=-1', seed=-1)
    refused('--seed=', seed=2**63)
    np.save(tmp_path / 'narrow.npy', np.zeros((5, 15), np.float32))
    refused(
        'width|shape',
        'arithmetic',
        z_file=str(tmp_path / 'narrow.npy'),
        group_a='0',
        group_b='1',
        group_c='2',
    )
    np.save(tmp_path / 'bank.npy', np.zeros((5, 16), np.float32))
    in_bank = dict(z_file=str(tmp_path / 'bank.npy'), group_a='0', group_b='1')
    refused('--group_c index 5 is out of range', 'arithmetic', group_c='1,5', **in_bank)
    refused('negative', 'arithmetic', group_c='-1', **in_bank)
    refused('comma-separated', 'arithmetic', group_c='a,b', **in_bank)
    refused('--group_c is empty', 'arithmetic', group_c='', **in_bank)
    refused('needs --z_file', 'arithmetic', group_a='0', group_b='1', group_c='2')
    with pytest.raises(config.ConfigError, match='out of range'):
        sampling.ablate_images(trainer.generator, np.zeros((1, 16), np.float32), '', [8])
    with pytest.raises(config.ConfigError, match='not a feature-map layer'):
        sampling.ablate_images(trainer.generator, np.zeros((1, 16), np.float32), 'tanh', [0])


def test_cli_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'dcgan_tf.main', '--mode=sample', f'--saved_model={tmp_path}/none', '--num=4'],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'error: --saved_model={tmp_path}/none does not exist; export one with --mode=export --workdir=<run>.'
    ]


def test_sampling_does_not_import_training_code(run, tmp_path):
    _, workdir = run
    script = textwrap.dedent(
        f"""
        import sys
        from dcgan_tf import config, sampling
        cfg = config.Config(mode='sample', saved_model={os.path.join(workdir, 'saved_model')!r}, num=2,
                            out={str(tmp_path / 's.png')!r})
        sampling.run(cfg)
        heavy = [m for m in ('dcgan_tf.train', 'dcgan_tf.models', 'dcgan_tf.data', 'dcgan_tf.losses')
                 if m in sys.modules]
        assert not heavy, heavy
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    subprocess.run([sys.executable, '-c', script], check=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert os.path.exists(tmp_path / 's.png')
