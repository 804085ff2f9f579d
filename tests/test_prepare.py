"""Prepared data is checked against its manifest: counts, lengths and checksums, in memory and streamed."""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT, TINY_CLI, tiny_config

from dcgan_tf import data
from dcgan_tf.data import prepare

NUM, PER_SHARD = 200, 50  # four shards; with 16x16x1 records an edit by one image still fits a shard's length
BOTH_PATHS = pytest.mark.parametrize('cache_mb', [4096, 0], ids=['in_memory', 'streamed'])


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp('prepared')
    cfg = tiny_config(synthetic_examples=NUM, batch_size=8)
    prepare.prepare(cfg, str(folder), examples_per_shard=PER_SHARD)
    return cfg, folder


@pytest.fixture
def copy(prepared, tmp_path):
    """A fresh copy of the prepared folder to damage, and the Config that trains from it."""
    cfg, folder = prepared
    shutil.copytree(folder, tmp_path / 'prepared')
    return cfg.replace(dataset=f'tfrecord:{tmp_path / "prepared"}'), tmp_path / 'prepared'


def _edit_manifest(folder, edit):
    manifest = json.loads((folder / 'manifest.json').read_text())
    edit(manifest)
    (folder / 'manifest.json').write_text(json.dumps(manifest))


def _shard(folder, index):
    return folder / f'train-{index:05d}-of-00004.tfrecord'


def _read_through(cfg, cache_mb):
    """Loads the source and reads every shard (streamed: a little over one epoch of training)."""
    source = data.load_source(cfg.replace(cache_mb=cache_mb))
    return [b.numpy() for b in data.make_dataset(cfg, source).take(NUM // cfg.batch_size + 5)]


def _pipeline_error(cfg, cache_mb) -> str:
    with pytest.raises(tf.errors.OpError) as error:
        _read_through(cfg, cache_mb)
    message = data.pipeline_error_message(error.value)
    assert message is not None, str(error.value)[:500]
    return message


def test_each_shard_is_recorded_with_its_length_and_checksum(copy):
    cfg, folder = copy
    manifest = json.loads((folder / 'manifest.json').read_text())
    assert manifest['format'] == 'dcgan_tf.prepared/2'
    for shard in manifest['splits']['train']['shards']:
        content = (folder / shard['file']).read_bytes()
        assert shard['bytes'] == len(content) and shard['sha256'] == hashlib.sha256(content).hexdigest()
    for cache_mb in (4096, 0):
        source = data.load_source(cfg.replace(cache_mb=cache_mb))
        assert sum(len(b) for b in data.make_dataset(cfg, source, repeat=False)) == NUM


@BOTH_PATHS
@pytest.mark.parametrize('cut', ['3 records', 'mid-record'])
def test_a_truncated_shard_is_refused_at_start_up(copy, cache_mb, cut):
    cfg, folder = copy
    path = _shard(folder, 1)
    content = path.read_bytes()
    record = len(content) // PER_SHARD  # unlabelled records all have one size
    path.write_bytes(content[: len(content) - (3 * record if cut == '3 records' else record // 2)])
    with pytest.raises(data.DataError, match='re-run --mode=prepare') as error:
        data.load_source(cfg.replace(cache_mb=cache_mb))
    assert f'Prepared shard {path} holds' in str(error.value) and 'truncated' in str(error.value)


@BOTH_PATHS
def test_an_edited_total_is_refused(copy, cache_mb):
    cfg, folder = copy
    _edit_manifest(folder, lambda m: m['splits']['train'].update(num_examples=10**9))
    with pytest.raises(
        data.DataError, match='train split says 1,000,000,000 images but its shards add up to 200'
    ):
        data.load_source(cfg.replace(cache_mb=cache_mb))


@BOTH_PATHS
def test_an_edited_shard_count_is_refused(copy, cache_mb):
    cfg, folder = copy

    def add(num):
        def edit(manifest):
            manifest['splits']['train']['shards'][2]['num_examples'] += num
            manifest['splits']['train']['num_examples'] += num

        return edit

    _edit_manifest(folder, add(PER_SHARD * 1000))  # far more than the shard's bytes can hold
    with pytest.raises(data.DataError, match=f'says prepared shard {_shard(folder, 2)} holds 50,050 images'):
        data.load_source(cfg.replace(cache_mb=cache_mb))
    _edit_manifest(folder, add(1 - PER_SHARD * 1000))  # one more: plausible from the length alone
    expected = f'Prepared shard {_shard(folder, 2)} '
    if cache_mb:  # Read into memory: every record is counted before training.
        with pytest.raises(data.DataError, match='holds 50 images, not the 51') as error:
            data.load_source(cfg.replace(cache_mb=cache_mb))
        assert str(error.value).startswith(expected)
    else:  # Streamed: counted when the shard has been read through.
        assert _pipeline_error(cfg, cache_mb).startswith(expected + 'gave 50 readable images, not the 51')


@BOTH_PATHS
def test_a_changed_byte_is_caught(copy, cache_mb):
    cfg, folder = copy
    path = _shard(folder, 3)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF  # in the image bytes of record 25: the length stays right
    path.write_bytes(bytes(content))
    if cache_mb:  # Read into memory: the shard's SHA-256 no longer matches.
        with pytest.raises(
            data.DataError, match=f'Prepared shard {path} does not match the SHA-256 checksum'
        ):
            data.load_source(cfg.replace(cache_mb=cache_mb))
    else:  # Streamed: TensorFlow's per-record CRC32C ends the shard early, and the count says so.
        message = _pipeline_error(cfg, cache_mb)
        assert message.startswith(f'Prepared shard {path} gave 25 readable images, not the 50')
        assert message.endswith(f're-run --mode=prepare --out_dir={folder}.')


@BOTH_PATHS
def test_a_missing_shard_is_refused(copy, cache_mb):
    cfg, folder = copy
    _shard(folder, 0).unlink()
    with pytest.raises(data.DataError, match=f'Prepared shard {_shard(folder, 0)} is missing; re-run'):
        data.load_source(cfg.replace(cache_mb=cache_mb))


def test_a_damaged_manifest_is_refused_in_one_sentence(copy):
    cfg, folder = copy
    original = (folder / 'manifest.json').read_text()
    manifest = json.loads(original)
    shard = manifest['splits']['train']['shards'][0]
    damages = {
        'not JSON': original[: len(original) // 2],
        'not an object': '[1, 2]',
        'no splits': json.dumps({**manifest, 'splits': {}}),
        'a path for a file': json.dumps(manifest).replace(shard['file'], '../elsewhere.tfrecord'),
        'a negative count': json.dumps(manifest).replace('"num_examples": 50', '"num_examples": -50', 1),
        'no checksum': json.dumps(manifest).replace(shard['sha256'], 'x').replace(', "sha256": "x"', ''),
    }
    for what, text in damages.items():
        (folder / 'manifest.json').write_text(text)
        with pytest.raises(data.DataError) as error:
            data.load_source(cfg)
        message = str(error.value)
        assert str(folder) in message and message.count('\n') == 0, what
        assert 're-run --mode=prepare' in message or 'not a dcgan_tf prepared-data manifest' in message, what


def test_a_manifest_of_the_first_format_loads_with_a_warning_and_counts_checked(copy, caplog):
    cfg, folder = copy

    def first_format(manifest):
        manifest['format'] = 'dcgan_tf.prepared/1'
        for shard in manifest['splits']['train']['shards']:
            del shard['bytes'], shard['sha256']

    _edit_manifest(folder, first_format)
    with caplog.at_level(logging.WARNING):
        source = data.load_source(cfg)
    assert 'recorded no shard lengths or checksums' in caplog.text
    np.testing.assert_array_equal(source.images, data.load_source(cfg.replace(dataset='synthetic')).images)
    path = _shard(folder, 1)
    path.write_bytes(path.read_bytes()[: -(len(path.read_bytes()) // PER_SHARD) * 3])
    with pytest.raises(data.DataError, match=f'says prepared shard {path} holds 50 images'):
        data.load_source(cfg)


def test_the_command_line_stops_on_a_truncated_shard(copy):
    cfg, folder = copy
    path = _shard(folder, 0)
    path.write_bytes(path.read_bytes()[:-100])
    result = subprocess.run(
        [sys.executable, '-m', 'dcgan_tf.main', *TINY_CLI, f'--dataset=tfrecord:{folder}', '--train_steps=2']
        + [f'--workdir={folder.parent / "run"}'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: Prepared shard {path} holds') and last.endswith(f'--out_dir={folder}.')
    assert not os.path.exists(folder.parent / 'run' / 'checkpoints')


def test_the_command_line_stops_mid_run_on_a_changed_streamed_shard(copy):
    cfg, folder = copy
    path = _shard(folder, 3)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF  # the length stays right: only reading the shard finds it
    path.write_bytes(bytes(content))
    result = subprocess.run(
        [sys.executable, '-m', 'dcgan_tf.main', *TINY_CLI, f'--dataset=tfrecord:{folder}', '--cache_mb=0']
        + ['--train_steps=200', '--checkpoint_every=1000', f'--workdir={folder.parent / "run"}'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    # The sentence the pipeline carried out of TensorFlow, not a traceback.
    assert result.returncode == 2, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: Prepared shard {path} gave 25 readable images'), last
