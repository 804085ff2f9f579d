"""Shipped configs by name (--flagfile=demo), `python -m dcgan_tf`, --version, and the wheel with them."""

import glob
import os
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO_ROOT

import dcgan_tf
from dcgan_tf import flagfiles


def test_a_shipped_config_by_name_expands_in_place_with_its_nested_flagfiles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # No configs/ here: only the package's copies can answer.
    for spelling in ('mnist_tutorial', 'mnist_tutorial.cfg', 'configs/mnist_tutorial.cfg'):
        argv = flagfiles.expand(['prog', '--seed=3', f'--flagfile={spelling}', '--train_steps=2'])
        assert argv[:2] == ['prog', '--seed=3'] and argv[-1] == '--train_steps=2'
        assert '--dataset=mnist' in argv  # from mnist.cfg, which mnist_tutorial.cfg names
        assert '--arch=tutorial' in argv
        assert not any(a.startswith('--flagfile') for a in argv)
    # A file that exists here, or a path elsewhere, is absl's to read as given.
    (tmp_path / 'demo').write_text('--seed=5\n')
    assert flagfiles.expand(['prog', '--flagfile=demo']) == ['prog', '--flagfile=demo']
    assert flagfiles.expand(['prog', '--flagfile=/no/such/demo.cfg']) == [
        'prog',
        '--flagfile=/no/such/demo.cfg',
    ]
    assert 'demo' in flagfiles.shipped_names()


def _run(args, cwd, timeout=120):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_python_m_dcgan_tf_prints_the_version(tmp_path):
    result = _run(['-m', 'dcgan_tf', '--version'], tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f'dcgan_tf {dcgan_tf.__version__}', result


def test_a_bad_flag_through_python_m_dcgan_tf_is_one_sentence(tmp_path):
    result = _run(['-m', 'dcgan_tf', '--flagfile=demo', '--batch_size=0'], tmp_path)
    assert result.returncode == 2 and '--batch_size=0' in result.stderr and result.stderr.count('\n') == 1


@pytest.mark.benchmark  # Builds a wheel and a venv: about a minute.
def test_the_wheel_ships_the_configs_and_runs_the_demo_outside_the_repository(tmp_path):
    wheel_dir, venv = tmp_path / 'wheel', tmp_path / 'venv'
    subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', REPO_ROOT, '--no-deps', '-q', '-w', str(wheel_dir)], check=True
    )
    (wheel,) = glob.glob(str(wheel_dir / '*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    assert 'dcgan_tf/configs/demo.cfg' in names and 'dcgan_tf/__main__.py' in names
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)], check=True)
    python = str(venv / 'bin' / 'python')
    subprocess.run([python, '-m', 'pip', 'install', '-q', '--no-deps', wheel], check=True)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}

    def run(*args):
        return subprocess.run(
            [python, '-m', 'dcgan_tf', *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    version = run('--version')
    assert version.returncode == 0 and dcgan_tf.__version__ in version.stdout, version
    where = subprocess.run(
        [python, '-c', 'import dcgan_tf; print(dcgan_tf.__file__)'],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert str(venv) in where.stdout  # the installed copy, not the checkout
    trained = run(
        '--flagfile=demo',
        '--train_steps=2',
        '--batch_size=8',
        '--log_every=1',
        '--sample_every=2',
        '--checkpoint_every=2',
        '--num_grid=4',
        '--export_at_end=false',
        f'--workdir={tmp_path / "run"}',
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert os.path.exists(tmp_path / 'run' / 'checkpoints' / 'checkpoint')
