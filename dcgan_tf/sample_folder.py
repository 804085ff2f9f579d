"""A folder of samples for external metrics (clean-fid, torch-fidelity): PNGs streamed in chunks, resumable.

Sample i's z depends only on the seed and i: z's are drawn in blocks of MAX_SAMPLES rows, block b from the
stateless seed (seed, b), so the first block holds exactly the z's of the `sample` signature for the same
seed. A rerun after an interruption therefore writes the very images it had not written yet and skips the
others; images are generated in fixed, aligned batches, so a PNG's pixels never depend on which of its
neighbours were already there. Every file is written under a temporary name and renamed, so a killed
process leaves whole PNGs and `*.tmp<pid>` leftovers, which the next run removes.

The folder: sample_000000.png ... (six digits, in z order), z.npy ([num, z_dim] float32, written at the
end, block by block) and samples.json (what made them: seed, num, the model; a rerun must match it).
"""

from __future__ import annotations

import io
import json
import os
import re
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf import images
from dcgan_tf import workdir as workdir_lib
from dcgan_tf.config import MAX_SAMPLES, ConfigError
from dcgan_tf.progress import Progress

BLOCK = MAX_SAMPLES  # Rows of z per stateless draw.
BATCH = 256  # Images per generator call, aligned to multiples of BATCH.
CHUNK = 1024  # Images per progress update.
NAME = 'sample_{:06d}.png'
Z_FILE = 'z.npy'
MANIFEST = 'samples.json'
_OURS = re.compile(r'sample_\d{6}\.png$')
_INFORMATIVE = ('made_from',)  # Recorded for people; a moved model still resumes its folder.
_LEFTOVER = re.compile(r'(sample_\d{6}\.png|z\.npy|samples\.json)\.tmp(\d+)$')


def z_rows(seed: int, start: int, stop: int, z_dim: int) -> np.ndarray:
    """z of samples start..stop-1 (float32 [stop - start, z_dim]): block by block, from the seed alone."""
    parts = []
    for block in range(start // BLOCK, -(-stop // BLOCK)):
        z = tf.random.stateless_normal([BLOCK, z_dim], seed=tf.constant([seed, block], tf.int64)).numpy()
        lo, hi = max(start - block * BLOCK, 0), min(stop - block * BLOCK, BLOCK)
        parts.append(z[lo:hi])
    return np.concatenate(parts) if parts else np.zeros((0, z_dim), np.float32)


def _check_writable(out_dir: str) -> None:
    workdir_lib.ensure_writable(out_dir, '--out_dir', '; give a folder you can write')


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(out_dir: str, names: list[str]) -> None:
    """The temporary files of killed writers (never those of a process still running)."""
    for name in names:
        match = _LEFTOVER.match(name)
        pid = int(match.group(2)) if match else None
        if pid is not None and pid != os.getpid() and (workdir_lib.is_url(out_dir) or not _pid_alive(pid)):
            tf.io.gfile.remove(os.path.join(out_dir, name))


def _check_manifest(out_dir: str, manifest: dict[str, Any], names: set[str]) -> None:
    path = os.path.join(out_dir, MANIFEST)
    if MANIFEST in names:
        try:
            old = json.loads(workdir_lib.read_bytes(path).decode())
        except ValueError:
            old = None
        differing = [k for k in manifest if k not in _INFORMATIVE and (old or {}).get(k) != manifest[k]]
        if not isinstance(old, dict) or differing:
            differing = (
                ', '.join(f'{k} {old.get(k)!r} there, {manifest[k]!r} now' for k in differing)
                if isinstance(old, dict)
                else 'it is not readable'
            )
            raise ConfigError(
                f'--out_dir={out_dir} holds samples made otherwise ({MANIFEST}: {differing}); use an empty '
                f'folder, or the same --num, --seed and model to resume.'
            )
    elif any(_OURS.match(n) for n in names):
        raise ConfigError(
            f'--out_dir={out_dir} holds sample PNGs but no {MANIFEST}, so nothing says how they were made; '
            f'use an empty folder.'
        )
    else:
        images.write_file(path, (json.dumps(manifest, indent=2) + '\n').encode())


def _write_z(path: str, seed: int, num: int, z_dim: int) -> None:
    """z.npy for all `num` samples, written one block at a time (a .npy header, then the raw rows)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {
            'descr': np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            'fortran_order': False,
            'shape': (num, z_dim),
        },
    )
    tmp = f'{path}.tmp{os.getpid()}'
    with tf.io.gfile.GFile(tmp, 'wb') as f:
        f.write(header.getvalue())
        for start in range(0, num, BLOCK):
            f.write(z_rows(seed, start, min(num, start + BLOCK), z_dim).astype('<f4').tobytes())
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _labels(label: int, start: int, stop: int, num_classes: int) -> np.ndarray | None:
    """The classes of samples [start, stop) of a conditional generator (None: an unconditional one)."""
    if not num_classes:
        return None
    if label >= 0:
        return np.full(stop - start, label, np.int32)
    return (np.arange(start, stop) % num_classes).astype(np.int32)


def _read_png(path: str, channels: int) -> np.ndarray:
    import imageio.v3 as iio  # noqa: PLC0415

    picture = iio.imread(workdir_lib.read_bytes(path))
    return picture[..., None] if picture.ndim == 2 and channels == 1 else picture


def write(
    generator,
    out_dir: str,
    num: int,
    seed: int,
    model: dict[str, Any],
    keep: bool = False,
    label: int = -1,
) -> dict[str, Any]:
    """Writes (or completes) `num` sample PNGs and their z.npy into `out_dir`.

    Args:
      generator: export.LoadedGenerator or tflite.TFLiteGenerator (`generate(z)`, `z_dim`, `metadata`).
      out_dir: the folder (local, gs://, ...); created if missing.
      num: images in all.
      seed: draws the z's.
      model: what identifies the generator in samples.json (a rerun with another one is refused).
      keep: also return the images (uint8 [num, H, W, C]): for small folders that get a grid too.
      label: the class a conditional generator draws (-1: sample i of class i mod its classes).

    Returns:
      {'out_dir', 'num', 'written' (new this call), 'skipped' (there already), 'z_file', 'images' or None}.
    """
    _check_writable(out_dir)
    names = [n.rstrip('/') for n in tf.io.gfile.listdir(out_dir)]
    _remove_leftovers(out_dir, names)
    present = set(names)
    manifest = {
        'num': num,
        'seed': seed,
        'z_dim': generator.z_dim,
        'z_scheme': f'stateless blocks of {BLOCK}',
        **model,
    }
    conditional = getattr(generator, 'num_classes', 0)
    if conditional:
        manifest['label'] = label
    _check_manifest(out_dir, manifest, present)
    channels = int(generator.metadata['channels'])
    done = sum(NAME.format(i) in present for i in range(num))
    kept = [] if keep else None
    progress = Progress(num, done, unit='image')
    written = 0
    try:
        for start in range(0, num, BATCH):
            stop = min(num, start + BATCH)
            missing = [i for i in range(start, stop) if NAME.format(i) not in present]
            pictures = None
            if missing:
                z = z_rows(seed, start, stop, generator.z_dim)
                labels = _labels(label, start, stop, conditional)
                pictures = generator.generate(z) if labels is None else generator.generate(z, labels=labels)
            for i in missing:
                images.save_png(os.path.join(out_dir, NAME.format(i)), pictures[i - start])
            if kept is not None:
                kept.extend(
                    pictures[i - start]
                    if pictures is not None
                    else _read_png(os.path.join(out_dir, NAME.format(i)), channels)
                    for i in range(start, stop)
                )
            if missing:
                written += len(missing)
                progress.advance(done + written, len(missing))
            if missing and (stop % CHUNK == 0 or stop == num):
                rate = progress.steps_per_second(done + written) or 0.0
                progress.log(done + written, rate, {}, rate)
    finally:
        progress.close()
    z_file = os.path.join(out_dir, Z_FILE)
    _write_z(z_file, seed, num, generator.z_dim)
    logging.info(
        'Wrote %d sample PNGs to %s (%d were there already) and their z to %s.',
        written,
        out_dir,
        done,
        z_file,
    )
    return {
        'out_dir': out_dir,
        'num': num,
        'written': written,
        'skipped': done,
        'z_file': z_file,
        'images': np.stack(kept) if kept else None,
    }
