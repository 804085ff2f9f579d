"""Sample folders for external metrics: --mode=sample --out_dir streams PNGs (beyond one call's 4096),
a SIGKILLed run rerun ends with exactly the uninterrupted run's files, z.npy holds every sample's z, and
folders made otherwise, or unwritable, are refused with one sentence."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO_ROOT, tiny_config

from dcgan_tf import config, export, models, sample_folder, sampling
from dcgan_tf.config import MAX_SAMPLES, ConfigError

NUM = MAX_SAMPLES + 1904  # Two blocks of z, more than one call may hold.


@pytest.fixture(scope='module')
def saved_model(tmp_path_factory):
    """An untrained tiny generator with kernels large enough to draw varied pictures (no training needed)."""
    cfg = tiny_config()
    generator = models.build_generator(cfg)
    for layer in generator.layers:
        if hasattr(layer, 'kernel'):
            layer.kernel.assign(layer.kernel * 10.0)
    return export.save(str(tmp_path_factory.mktemp('export') / 'saved_model'), generator, cfg, step=0)


def _sample_cli(saved_model, out_dir, num=NUM, seed=5):
    args = [sys.executable, '-m', 'dcgan_tf.main', '--mode=sample', f'--saved_model={saved_model}']
    args += [f'--num={num}', f'--seed={seed}', f'--out_dir={out_dir}']
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL='2')
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=out_dir.parent
    )


def _pngs(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith('.png'))


def test_killed_midway_and_rerun_equals_an_uninterrupted_run(saved_model, tmp_path):
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    uninterrupted = _sample_cli(saved_model, whole)
    process = _sample_cli(saved_model, resumed)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if resumed.exists() and len(_pngs(resumed)) >= 500:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    written_before = len(_pngs(resumed))
    assert process.returncode == -signal.SIGKILL and 500 <= written_before < NUM, written_before
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stdout.read().decode()[-2000:]

    rerun = _sample_cli(saved_model, resumed)
    log = rerun.communicate(timeout=300)[0].decode()
    assert rerun.returncode == 0, log[-2000:]
    assert f'({written_before} were there already)' in log or f'{NUM - written_before} sample PNGs' in log
    assert re.search(rf'image {NUM}/{NUM} \(100%\)', log)  # The progress line, in a log (no terminal here).
    names = [f'sample_{i:06d}.png' for i in range(NUM)]
    assert sorted(os.listdir(resumed)) == sorted([*names, 'samples.json', 'z.npy'])  # No leftovers.
    assert sorted(os.listdir(whole)) == sorted(os.listdir(resumed))
    different = [n for n in names if (whole / n).read_bytes() != (resumed / n).read_bytes()]
    assert not different, different[:5]
    z = np.load(resumed / 'z.npy')
    assert z.shape == (NUM, 16) and z.dtype == np.float32
    np.testing.assert_array_equal(z, np.load(whole / 'z.npy'))
    # Sample i's z depends on the seed and i alone; the first block is the `sample` signature's draw.
    np.testing.assert_array_equal(z[4000:4200], sample_folder.z_rows(5, 4000, 4200, 16))
    np.testing.assert_array_equal(z[:10], export.load(saved_model).sample(10, 5)[1])


def test_a_rerun_of_a_complete_folder_writes_nothing_and_small_folders_keep_their_grid(saved_model, tmp_path):
    cfg = config.validate(
        tiny_config(mode='sample', saved_model=saved_model, num=300, seed=2, out_dir=str(tmp_path / 'd'))
    )
    first = sampling.run(cfg.replace(out=str(tmp_path / 'grid.png')))
    assert first['images'].shape == (300, 16, 16, 1) and os.path.exists(tmp_path / 'grid.png')
    loaded = export.load(saved_model)
    # The grid's images and z are the folder's, and the generator's for those z.
    np.testing.assert_array_equal(first['z'], np.load(tmp_path / 'd' / 'z.npy'))
    np.testing.assert_array_equal(first['images'], loaded.generate(first['z']))
    os.remove(tmp_path / 'd' / 'sample_000123.png')
    again = sample_folder.write(
        loaded, str(tmp_path / 'd'), 300, 2, {'generator': loaded.fingerprint}, keep=True
    )
    assert (again['written'], again['skipped']) == (1, 299)
    np.testing.assert_array_equal(again['images'], first['images'])  # Read back from the PNGs.


def test_folders_made_otherwise_and_unwritable_ones_are_refused(saved_model, tmp_path):
    loaded = export.load(saved_model)
    model = {'generator': loaded.fingerprint}
    folder = str(tmp_path / 'd')
    sample_folder.write(loaded, folder, 20, 1, model)
    with pytest.raises(ConfigError, match=r'samples made otherwise \(samples.json: seed 1 there, 2 now\)'):
        sample_folder.write(loaded, folder, 20, 2, model)
    with pytest.raises(ConfigError, match='num 20 there, 30 now'):
        sample_folder.write(loaded, folder, 30, 1, model)
    raw = export.LoadedGenerator(loaded.module, 'raw')
    with pytest.raises(ConfigError, match='generator'):
        sample_folder.write(raw, folder, 20, 1, {'generator': raw.fingerprint})
    os.remove(os.path.join(folder, 'samples.json'))
    with pytest.raises(ConfigError, match='holds sample PNGs but no samples.json'):
        sample_folder.write(loaded, folder, 20, 1, model)
    (tmp_path / 'a_file').write_text('x')
    with pytest.raises(ConfigError, match=r'--out_dir=.*a_file/sub is not writable'):
        sample_folder.write(loaded, str(tmp_path / 'a_file' / 'sub'), 20, 1, model)


def test_num_beyond_one_call_needs_out_dir():
    cfg = tiny_config(mode='sample', num=MAX_SAMPLES + 1)
    with pytest.raises(ConfigError, match='with --out_dir, streamed'):
        config.validate(cfg)
    with pytest.raises(ConfigError, match='between 1 and 1,000,000'):
        config.validate(cfg.replace(out_dir='d', num=1_000_001))


def test_the_fid_inception_graph_is_refused_with_a_pointer(tmp_path):
    # What pytorch-fid / clean-fid ship, and the TF1 graph published FIDs come from.
    for name in ('pt_inception-2015-12-05-6726825d.pth', 'classify_image_graph_def.pb'):
        (tmp_path / name).write_bytes(b'x')
        cfg = tiny_config(mode='evaluate', feature_net='inception', inception_weights=str(tmp_path / name))
        with pytest.raises(ConfigError, match='FID Inception graph.*--mode=sample --out_dir.*clean-fid'):
            config.validate(cfg)
