"""The explorer's logic without a browser: the export's float output, picks, walks, arithmetic, directions,
image to z and the bad inputs the page reports; and the one-sentence failures of --mode=explore."""

import socket
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from test_flags import _cli

from dcgan_tf import export, models, sampling
from dcgan_tf.config import ConfigError
from dcgan_tf.explore import logic as explore


def make_export(path: str) -> str:
    """An export of an untrained tiny generator (16x16x1, z_dim 16) whose images vary with z: at N(0, 0.02)
    its pixels would differ by 1e-3 between z's; kernels 10x larger give a per-pixel std of about 0.3."""
    cfg = tiny_config()
    generator = models.build_generator(cfg)
    for variable in generator.trainable_variables:
        if 'kernel' in variable.path:
            variable.assign(variable * 10.0)
    return export.save(path, generator, cfg, step=0)


@pytest.fixture(scope='module')
def saved_model(tmp_path_factory):
    return make_export(str(tmp_path_factory.mktemp('export') / 'saved_model'))


@pytest.fixture(scope='module')
def generator(saved_model):
    return export.load(saved_model)


def _picks(generator, seed, indices):
    _, z = explore.sample_grid(generator, seed)
    return [explore.Pick(f'{seed}/{i}', z[i]) for i in indices]


def test_float_output_matches_the_uint8_signature(generator):
    z = np.random.default_rng(0).standard_normal((5, generator.z_dim)).astype(np.float32)
    floats = generator.generate_float(tf.constant(z)).numpy()
    assert floats.dtype == np.float32 and floats.min() >= -1 and floats.max() <= 1
    np.testing.assert_array_equal(np.round((floats + 1) * 127.5).astype(np.uint8), generator.generate(z))
    # Not a signature (test_export checks that the signatures are the ones they were).
    assert 'generate_float' not in generator.module.signatures and len(generator.module.signatures) == 7
    with tf.GradientTape() as tape:
        z_var = tf.constant(z)
        tape.watch(z_var)
        total = tf.reduce_sum(generator.generate_float(z_var))
    assert np.abs(tape.gradient(total, z_var).numpy()).sum() > 0


def test_older_export_says_image_to_z_is_unsupported(tmp_path):
    cfg = tiny_config()
    module = export._Export(
        models.build_generator(cfg), models.build_generator(cfg), export.make_metadata(cfg, 0, False)
    )
    for sampler in (module.ema, module.raw):
        del sampler.generate_float  # As every export before the float output was added.
    tf.saved_model.save(module, str(tmp_path / 'old'), signatures=module.signatures())
    old = export.load(str(tmp_path / 'old'))
    assert old.generate_float is None
    with pytest.raises(ConfigError, match='older than image-to-z.*--mode=export'):
        explore.image_to_z(old, np.zeros((16, 16), np.uint8))


def test_grid_is_the_sample_modes_and_changes_with_the_seed(generator):
    pictures, z = explore.sample_grid(generator, 3)
    same, same_z = generator.sample(explore.GRID_SIZE, 3)
    np.testing.assert_array_equal(pictures, same)
    assert not np.array_equal(explore.sample_grid(generator, 4)[1], z)
    with pytest.raises(ConfigError, match='seed'):
        explore.sample_grid(generator, -1)


def test_picks_toggle_and_are_bounded():
    z = np.ones(4, np.float32)
    picks = explore.toggle_pick([], 'a', z)
    picks = explore.toggle_pick(picks, 'b', 2 * z)
    assert [p.key for p in picks] == ['a', 'b']
    assert [p.key for p in explore.toggle_pick(picks, 'a', z)] == ['b']  # A second click drops it.
    many = []
    for i in range(explore.MAX_PICKS):
        many = explore.toggle_pick(many, str(i), z)
    with pytest.raises(ConfigError, match='At most'):
        explore.toggle_pick(many, 'one more', z)
    with pytest.raises(ConfigError, match='needs at least 2'):
        explore.picked_z(picks[:1], 2, 'A walk')


def test_walk_runs_from_the_first_pick_to_the_second(generator):
    picks = _picks(generator, 0, [2, 7])
    frames, z = explore.walk(generator, picks, 6)
    assert frames.shape == (6, 16, 16, 1)
    np.testing.assert_array_equal(z[0], picks[0].z)
    np.testing.assert_array_equal(z[-1], picks[1].z)
    np.testing.assert_array_equal(frames[[0, -1]], generator.generate(np.stack([picks[0].z, picks[1].z])))
    with pytest.raises(ConfigError, match='needs at least 2'):
        explore.walk(generator, picks[:1], 6)


def test_gif_loops_there_and_back(tmp_path):
    import imageio.v3 as iio

    frames = np.arange(4, dtype=np.uint8)[:, None, None, None] * np.ones((4, 16, 16, 1), np.uint8) * 60
    path = explore.write_gif(str(tmp_path / 'walk.gif'), frames)
    read = iio.imread(path, index=None)
    assert read.shape[0] == 6 and read.shape[1] == 112  # 4 frames, then 2 back; enlarged 7x.


def test_arithmetic_is_the_sampling_modes(generator):
    groups = {
        'A': _picks(generator, 0, [0, 1]),
        'B': _picks(generator, 0, [2]),
        'C': _picks(generator, 1, [3, 4, 5]),
    }
    result = explore.arithmetic(generator, groups, 0.25, seed=7)
    stacked = [np.stack([p.z for p in groups[k]]) for k in 'ABC']
    centre = stacked[0].mean(0) - stacked[1].mean(0) + stacked[2].mean(0)
    np.testing.assert_allclose(result['z'][4], centre, rtol=1e-6)
    np.testing.assert_allclose(result['z'], sampling.perturbed_sum(*stacked, 0.25, 7))
    assert np.abs(result['z'] - centre).max() <= 0.25 + 1e-6
    assert result['images'].shape == (9, 16, 16, 1) and result['means'].shape == (3, 16, 16, 1)
    with pytest.raises(ConfigError, match='Group B is empty'):
        explore.arithmetic(generator, {'A': groups['A'], 'C': groups['C']})


def test_directions_are_fixed_and_orthonormal():
    basis = explore.directions(16)
    np.testing.assert_allclose(basis @ basis.T, np.eye(explore.NUM_DIRECTIONS), atol=1e-6)
    np.testing.assert_array_equal(basis, explore.directions(16))
    z = np.zeros(16, np.float32)
    moved = explore.move(z, basis, [1.5, 0.0, -2.0])
    np.testing.assert_allclose(moved[0] @ basis.T, [1.5, 0.0, -2.0], atol=1e-6)


@pytest.mark.parametrize(
    ('picture', 'message'),
    [
        (np.zeros((20, 16), np.uint8), 'is 16x20, but this generator makes 16x16'),
        (np.zeros((16, 16, 4), np.uint8), 'alpha channel'),
        (np.zeros((16, 16), np.uint16), '8 bits'),
        (
            np.stack([np.zeros((16, 16)), np.ones((16, 16)), np.zeros((16, 16))], -1).astype(np.uint8),
            'in colour',
        ),
    ],
)
def test_bad_images_are_named(picture, message):
    with pytest.raises(ConfigError, match=message):
        explore.to_target(picture, 16, 1)


def test_grey_images_in_either_layout_are_accepted():
    grey = np.full((16, 16), 255, np.uint8)
    np.testing.assert_array_equal(explore.to_target(grey, 16, 1), np.ones((1, 16, 16, 1), np.float32))
    np.testing.assert_array_equal(explore.to_target(np.stack([grey] * 3, -1), 16, 1), np.ones((1, 16, 16, 1)))
    assert explore.to_target(grey, 16, 3).shape == (1, 16, 16, 3)


def test_image_to_z_finds_a_sample_of_the_generator(generator):
    target_z = np.random.default_rng(5).standard_normal((1, generator.z_dim)).astype(np.float32)
    target = generator.generate(target_z)[0]
    result = explore.image_to_z(generator, target, steps=60, restarts=4, seed=1)
    errors = result['errors']
    assert (
        len(result['trajectory']) == len(errors) == len(result['snapshot_steps'])
        and result['snapshot_steps'][-1] == 60
    )
    assert errors[-1] < 0.3 * errors[0], errors
    np.testing.assert_array_equal(result['image'], generator.generate(result['z'][None])[0])
    np.testing.assert_array_equal(result['target'], target)


def test_explore_without_gradio_is_one_sentence(saved_model, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'gradio', None)  # As if it were not installed.
    monkeypatch.setattr('dcgan_tf.main._quiet_tensorflow', lambda: None)
    from dcgan_tf import main

    status, err = _cli_through(main, ['--mode=explore', f'--saved_model={saved_model}'], capsys)
    assert (
        status == 2
        and err.strip()
        == "error: --mode=explore needs Gradio, which is not installed: pip install -e '.[explore]'."
    )


def _cli_through(main, args, capsys):
    from absl import flags

    flags.FLAGS.unparse_flags()
    try:
        main.main(main._parse_flags(['dcgan_tf', *args]))
    except SystemExit as e:
        return e.code, capsys.readouterr().err
    finally:
        flags.FLAGS.unparse_flags()
    return None, capsys.readouterr().err


def test_a_port_in_use_is_one_sentence():
    from dcgan_tf.explore import app as explore_app

    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f'--port={port} on 127.0.0.1 cannot be used'):
            explore_app.check_port('127.0.0.1', port)
    with pytest.raises(ConfigError, match='--host=no.such.host.invalid is not an address'):
        explore_app.check_port('no.such.host.invalid', 8000)


def test_bad_explore_flags(monkeypatch, capsys, tmp_path):
    status, err = _cli(['--mode=explore', f'--saved_model={tmp_path}/none'], monkeypatch, capsys)
    assert status == 2 and 'does not exist' in err
    status, err = _cli(['--port=70000'], monkeypatch, capsys)
    assert status == 2 and '--port=70000 must be between 1 and 65535' in err
    status, err = _cli(['--host= '], monkeypatch, capsys)
    assert status == 2 and '--host' in err


def test_the_explorer_imports_no_training_code():
    """Follows the dcgan_tf imports of explore.app (at module level, and inside its own functions)."""
    import ast
    import os

    from conftest import REPO_ROOT

    def source(name: str) -> str:  # 'workdir.lock' -> dcgan_tf/workdir/lock.py; a package's __init__.py
        path = os.path.join(REPO_ROOT, 'dcgan_tf', *name.split('.'))
        path = path + '.py' if os.path.exists(path + '.py') else os.path.join(path, '__init__.py')
        return open(path).read()

    seen, todo = set(), ['explore.app']
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse(source(name))
        # Every import of the explorer's own modules; module-level ones only for what they use (export
        # imports the model builders inside its checkpoint functions, which the explorer never calls).
        nodes = ast.walk(tree) if name.startswith('explore') else tree.body
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('dcgan_tf'):
                module = node.module.removeprefix('dcgan_tf').lstrip('.')
                for alias in node.names:  # `from dcgan_tf.workdir import lock` names a module or a symbol
                    candidate = '.'.join(filter(None, [module, alias.name]))
                    path = os.path.join(REPO_ROOT, 'dcgan_tf', *candidate.split('.'))
                    is_module = os.path.exists(path + '.py') or os.path.isdir(path)
                    todo.append(candidate if is_module else module)
    seen.discard('')
    assert 'export' in seen and 'explore.logic' in seen
    top = {name.split('.')[0] for name in seen}
    assert not top & {'train', 'models', 'data', 'losses', 'distribute'}, seen
