"""The paper's uses of a trained generator: sample grids, latent walks, z arithmetic, filter ablation.

Everything but `ablate` runs from an exported SavedModel through `export.load`, so it needs neither the
training code nor the run's flags. `ablate` must reach inside the generator's layers, so it rebuilds the
generator from a checkpoint (importing the model builders inside the function).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from dcgan_tf import export, images, paths, sample_folder
from dcgan_tf.config import MAX_SAMPLES, Config, ConfigError, parse_indices

GRID_CELLS = 9  # The paper's 3x3 arithmetic result: A - B + C in the centre, 8 perturbed copies around it.


# --- helpers ---


def _out_path(cfg: Config) -> str:
    return cfg.out or f'{cfg.mode}.png'


def _outputs(cfg: Config) -> list[str]:
    """Every file the mode writes beside --out: the picture, its z's (and labels), the walk's GIF."""
    out = _out_path(cfg)
    written = [out, _beside(out, '.npy')]
    if cfg.mode == 'sample':
        written.append(labels_file(_beside(out, '.npy')))
    if cfg.mode == 'interpolate':
        written.append(_beside(out, '.gif'))
    return written


def check_outputs(cfg: Config) -> None:
    """One sentence, before any model loads, when an output would replace a folder, a FIFO or a file this
    program did not write (`--mode=sample --out_dir` without --out writes no grid here)."""
    if cfg.mode == 'sample' and cfg.out_dir and not cfg.out:
        return
    flag = '--out' if cfg.out else f'the default --out ({_out_path(cfg)})'
    for path in _outputs(cfg):
        paths.check_output(path, flag if path == _out_path(cfg) else f'{flag}, beside it', 'sample.png')


def _beside(path: str, suffix: str) -> str:
    """'dir/grid.png' -> 'dir/grid<suffix>' (the .npy of z or the GIF next to a picture)."""
    return os.path.splitext(path)[0] + suffix


def _save_npy(path: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    images.write_file(path, buffer.getvalue())


def _saved_model_path(cfg: Config) -> str:
    return cfg.saved_model or os.path.join(cfg.workdir, export.EXPORT_DIR)


def _side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 6) -> np.ndarray:
    """Two uint8 pictures next to each other (top-aligned), with a white gap between them."""
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + gap + right.shape[1], left.shape[2]), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap :] = right
    return canvas


def _check_indices(indices: list[int], size: int, flag: str, what: str) -> list[int]:
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        raise ConfigError(f'--{flag} index {bad[0]} is out of range: {what} (valid: 0 to {size - 1}).')
    return indices


def perturbed_sum(a: np.ndarray, b: np.ndarray, c: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """z [9, z_dim]: mean(A) - mean(B) + mean(C) in the centre (index 4), and 8 copies with uniform noise.

    The paper: "uniform noise sampled with scale +-0.25 was added to Y to produce the 8 other samples".
    a, b, c are the groups' z's, [n, z_dim] each.
    """
    result = a.mean(axis=0) - b.mean(axis=0) + c.mean(axis=0)
    noise = np.random.default_rng(seed).uniform(-scale, scale, (GRID_CELLS, len(result)))
    noise[GRID_CELLS // 2] = 0.0
    return (result[None] + noise).astype(np.float32)


# --- from a SavedModel ---


def _sampler(cfg: Config):
    """The generator --mode=sample draws from: the --model TFLite file, else the SavedModel."""
    if cfg.model:
        from dcgan_tf import tflite  # noqa: PLC0415 - only this path needs the TFLite interpreter.

        return tflite.load(cfg.model)
    return export.load(_saved_model_path(cfg), cfg.sampler)


def _num_classes(generator) -> int:
    return getattr(generator, 'num_classes', 0)


def _check_label(cfg: Config, generator) -> None:
    """--label against the generator: one sentence for a label it cannot draw."""
    export.check_labels(None if cfg.label < 0 else cfg.label, _num_classes(generator), 1, '--label')


def _label_rows(num: int, generator, label: int) -> int | None:
    """Grid rows: a conditional generator's samples of every class in turn get one column per class."""
    classes = _num_classes(generator)
    return -(-num // classes) if classes and label < 0 else None


def _read_z_file(cfg: Config, generator) -> np.ndarray:
    """--z_file's z's as float32 [N, z_dim] (an interpolate .npy's walks one after the other)."""
    try:
        with tf.io.gfile.GFile(cfg.z_file, 'rb') as f:
            bank = np.load(io.BytesIO(f.read()))
    except (OSError, ValueError, EOFError, tf.errors.OpError) as e:
        reason = str(getattr(e, 'message', e)).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ConfigError(f'--z_file={cfg.z_file} is not a readable .npy file ({reason}).') from None
    if not isinstance(bank, np.ndarray):  # np.load gives an archive for a .npz.
        raise ConfigError(f'--z_file={cfg.z_file} is a .npz archive; give the .npy written by --mode=sample.')
    if bank.ndim > 2:  # An interpolate .npy [walks, steps, z_dim]: indices count row-major.
        bank = bank.reshape(-1, bank.shape[-1])
    return generator.check_z(bank, f'--z_file={cfg.z_file}')


def _sample_z_file(cfg: Config, generator) -> tuple[np.ndarray, np.ndarray]:
    """(images, z) of the z's in --z_file, each in its class for a conditional generator."""
    bank = _read_z_file(cfg, generator)
    if not 0 < len(bank) <= MAX_SAMPLES:
        raise ConfigError(
            f'--z_file={cfg.z_file} holds {len(bank)} z; --mode=sample draws 1 to {MAX_SAMPLES}.'
        )
    labels = _bank_labels(cfg, generator, len(bank))
    pictures = generator.generate(bank) if labels is None else generator.generate(bank, labels=labels)
    return pictures, bank


def sample(cfg: Config) -> dict[str, Any]:
    """`--mode=sample`: `--num` images from `--seed` (or the z's of `--z_file`) -> a grid PNG, their z's as
    .npy beside it; with `--out_dir`, one PNG per sample there instead, streamed and resumable
    (sample_folder), and then `--num` may exceed one call's MAX_SAMPLES (the grid too only with --out). A
    conditional generator draws class --label, or with -1 sample i of class i mod its classes (one grid
    column per class); their labels go beside the z's (`_labels.npy`).

    Returns:
      {'images': uint8 [N, H, W, C], 'z': float32 [N, z_dim], 'grid': path, 'z_file': path}; 'grid' and
      'z' are None for a folder without --out, 'images' too for a folder of more than MAX_SAMPLES.
    """
    if cfg.z_file and cfg.out_dir:
        raise ConfigError(
            "--z_file draws the z's it holds and --out_dir a folder of seeded samples; give one of them."
        )
    check_outputs(cfg)
    generator = _sampler(cfg)
    _check_label(cfg, generator)
    if cfg.z_file:
        pictures, z = _sample_z_file(cfg, generator)
    elif cfg.out_dir:
        model = {'generator': generator.fingerprint, 'made_from': cfg.model or _saved_model_path(cfg)}
        folder = sample_folder.write(
            generator, cfg.out_dir, cfg.num, cfg.seed, model, keep=cfg.num <= MAX_SAMPLES, label=cfg.label
        )
        if folder['images'] is None or not cfg.out:  # The folder is the output; no grid here unasked.
            return {'images': folder['images'], 'z': None, 'grid': None, 'z_file': folder['z_file']}
        # The same images and z as the folder's (the first block of its z's is `sample`'s).
        pictures, z = folder['images'], sample_folder.z_rows(cfg.seed, 0, cfg.num, generator.z_dim)
    elif _num_classes(generator):
        pictures, z = generator.sample(cfg.num, cfg.seed, label=cfg.label)
    else:
        pictures, z = generator.sample(cfg.num, cfg.seed)
    out = _out_path(cfg)
    images.save_grid(out, pictures, _label_rows(len(pictures), generator, cfg.label))
    z_file = _beside(out, '.npy')
    _save_npy(z_file, z)
    if _num_classes(generator):
        labels = _bank_labels(cfg, generator, len(z)) if cfg.z_file else cfg.label
        _save_npy(labels_file(z_file), export.check_labels(labels, _num_classes(generator), len(z)))
    logging.info(
        'Wrote %d samples to %s and their z to %s (row-major: index = row * columns + column).',
        len(pictures),
        out,
        z_file,
    )
    return {'images': pictures, 'z': z, 'grid': out, 'z_file': z_file}


def labels_file(z_file: str) -> str:
    """Where --mode=sample keeps a conditional generator's labels: beside the z's, `<z>_labels.npy`."""
    return z_file[: -len('.npy')] + '_labels.npy' if z_file.endswith('.npy') else z_file + '_labels.npy'


def _walk_classes(generator, label: int, walk: int) -> dict[str, int]:
    """A walk's end classes: --label at both ends, or with -1 walk k from class k to class k + 1."""
    classes = _num_classes(generator)
    if not classes:
        return {}
    if label >= 0:
        return {'label0': label, 'label1': label}
    return {'label0': walk % classes, 'label1': (walk + 1) % classes}


def interpolate(cfg: Config) -> dict[str, Any]:
    """`--mode=interpolate`: `--num_walks` walks between random z pairs, one grid row each, and a GIF.
    A conditional generator's walks keep class --label, or with -1 go from class k to class k + 1.

    Returns:
      {'images': uint8 [walks, steps, H, W, C], 'z': [walks, steps, z_dim], 'grid': path, 'gif': path}.
    """
    generator = export.load(_saved_model_path(cfg), cfg.sampler)
    _check_label(cfg, generator)
    _, ends = generator.sample(2 * cfg.num_walks, cfg.seed)
    walks, zs = [], []
    for k in range(cfg.num_walks):
        pictures, z = generator.interpolate(
            ends[2 * k],
            ends[2 * k + 1],
            cfg.interp_steps,
            cfg.interpolation == 'slerp',
            **_walk_classes(generator, cfg.label, k),
        )
        walks.append(pictures)
        zs.append(z)
    walks, zs = np.stack(walks), np.stack(zs)
    out = _out_path(cfg)
    images.save_grid(out, walks.reshape(-1, *walks.shape[2:]), rows=cfg.num_walks)
    _save_npy(_beside(out, '.npy'), zs)
    # One frame per step: the walks' t-th images in a column, played there and back.
    frames = [images.make_grid(walks[:, t], rows=cfg.num_walks) for t in range(cfg.interp_steps)]
    gif = _beside(out, '.gif')
    images.save_gif(gif, frames + frames[-2:0:-1], fps=8)
    logging.info('Wrote %d %s walks to %s and %s.', cfg.num_walks, cfg.interpolation, out, gif)
    return {'images': walks, 'z': zs, 'grid': out, 'gif': gif}


def arithmetic(cfg: Config) -> dict[str, Any]:
    """`--mode=arithmetic`: mean(A) - mean(B) + mean(C) over z's picked from `--z_file` (the paper's
    "smiling woman - neutral woman + neutral man"), shown as a 3x3 grid of small perturbations.

    The picture: one row per group (its members, then the image of the group's mean z), and beside it
    the 3x3 result with the unperturbed A - B + C in the centre. A conditional generator draws each z
    in its class (--label, or the labels --mode=sample wrote beside --z_file), each mean in its group's
    first member's class, and the result in group C's.

    Returns:
      {'z': float32 [9, z_dim] (centre at index 4), 'images': uint8 [9, H, W, C], 'grid': path}.
    """
    generator = export.load(_saved_model_path(cfg), cfg.sampler)
    _check_label(cfg, generator)
    bank = _read_z_file(cfg, generator)
    groups = {}
    for name in ('group_a', 'group_b', 'group_c'):
        indices = parse_indices(getattr(cfg, name), name)
        groups[name] = _check_indices(indices, len(bank), name, f'--z_file holds {len(bank)} z')
    means = {name: bank[idx].mean(axis=0) for name, idx in groups.items()}
    z = perturbed_sum(*(bank[idx] for idx in groups.values()), cfg.perturb_scale, cfg.seed)
    bank_labels = _bank_labels(cfg, generator, len(bank))
    # The result's class: --label, or that of group C's first member (A - B is a change of style,
    # and C the thing it is applied to).
    result_label = None if bank_labels is None else int(bank_labels[groups['group_c'][0]])
    pictures = generator.generate(z, labels=_repeat(result_label, len(z)))

    # The groups: members, a blank, then the mean's image; rows padded with blanks to one width.
    width = max(len(idx) for idx in groups.values()) + 2
    rows = []
    for name, idx in groups.items():
        members = generator.generate(bank[idx], labels=None if bank_labels is None else bank_labels[idx])
        mean_label = None if bank_labels is None else int(bank_labels[idx[0]])
        mean_image = generator.generate(means[name][None].astype(np.float32), labels=_repeat(mean_label, 1))
        blank = np.zeros((width - len(idx) - 1, *members.shape[1:]), np.uint8)
        rows.append(np.concatenate([members, blank, mean_image]))
    left = images.make_grid(np.concatenate(rows), rows=3, pad_value=255)
    right = images.make_grid(pictures, rows=3, pad_value=255)
    out = _out_path(cfg)
    images.save_png(out, _side_by_side(left, right))
    _save_npy(_beside(out, '.npy'), z)
    logging.info('Wrote A - B + C (groups of %s) to %s.', '/'.join(str(len(i)) for i in groups.values()), out)
    return {'z': z, 'images': pictures, 'grid': out}


def _repeat(label: int | None, num: int) -> np.ndarray | None:
    return None if label is None else np.full(num, label, np.int32)


def _bank_labels(cfg: Config, generator, num: int) -> np.ndarray | None:
    """The class of each z of --z_file for a conditional generator: --label, else the labels that
    --mode=sample wrote beside it; None for an unconditional generator."""
    if not _num_classes(generator):
        return None
    if cfg.label >= 0:
        return np.full(num, cfg.label, np.int32)
    path = labels_file(cfg.z_file)
    if not tf.io.gfile.exists(path):
        raise ConfigError(
            f'This generator is conditional: give --label, the class to draw, or keep {path} (written by '
            f'--mode=sample beside its z) next to --z_file.'
        )
    with tf.io.gfile.GFile(path, 'rb') as f:
        labels = np.load(io.BytesIO(f.read()))
    if labels.shape != (num,):
        raise ConfigError(f'{path} holds {labels.shape} labels, not one for each of the {num} z of --z_file.')
    return export.check_labels(labels, generator.num_classes, num, path)


# --- from a checkpoint ---


def _feature_layer(generator, name: str):
    """The layer whose output is zeroed: the named block's activation (after BatchNorm, which would
    otherwise shift the zeros back), or the named layer itself."""
    by_name = {layer.name: layer for layer in generator.layers}
    hidden = [
        layer.name
        for layer in generator.layers
        if layer.name.endswith(('_relu', '_lrelu')) and len(layer.output.shape) == 4
    ]
    if not name:
        return by_name[hidden[-1]]  # The paper drops filters of the second-highest layer.
    # Hidden feature maps only: the output convolution and tanh make the image itself.
    inner = {layer.name for layer in generator.layers[:-2] if len(layer.output.shape) == 4}
    for candidate in (f'{name}_relu', f'{name}_lrelu', name):
        if candidate in inner:
            return by_name[candidate]
    choices = ', '.join(n.rsplit('_', 1)[0] for n in hidden)
    raise ConfigError(
        f'--ablate_layer={name} is not a feature-map layer of this generator; use one of: {choices}.'
    )


def ablate_images(
    generator, z: np.ndarray, layer_name: str, filters: list[int] | str | None = None
) -> dict[str, Any]:
    """Renders z with all of `layer_name`'s feature maps and with `filters` zeroed.

    Args:
      generator: a Keras Sequential generator.
      z: float32 [N, z_dim].
      layer_name: a block name such as 'deconv1' ('' for the last hidden one).
      filters: channel indices, or 'top:K' for the K maps with the largest mean activation over z;
        None: the most active quarter.

    Returns:
      {'original', 'ablated': uint8 images, 'layer': the zeroed layer's name, 'filters': the indices}.
    """
    target = _feature_layer(generator, layer_name)
    num_maps = target.output.shape[-1]
    x = tf.constant(z, tf.float32)
    activations = None
    for layer in generator.layers:
        x = layer(x, training=False)
        if layer is target:
            activations = x
    original = images.to_uint8(x.numpy())
    if filters is None:
        filters = f'top:{max(1, num_maps // 4)}'
    if isinstance(filters, str):
        try:
            k = int(filters.split(':', 1)[1])
        except (IndexError, ValueError):
            raise ConfigError(f'--ablate_filters={filters} must be indices like 0,5,7 or top:N.') from None
        if not 0 < k <= num_maps:
            raise ConfigError(
                f'--ablate_filters=top:{k} must name between 1 and {num_maps} maps of {target.name}.'
            )
        strength = tf.reduce_mean(activations, axis=[0, 1, 2]).numpy()
        filters = sorted(np.argsort(-strength)[:k].tolist())
    _check_indices(filters, num_maps, 'ablate_filters', f'{target.name} has {num_maps} feature maps')
    mask = np.ones(num_maps, np.float32)
    mask[filters] = 0.0
    x = tf.constant(z, tf.float32)
    for layer in generator.layers:
        x = layer(x, training=False)
        if layer is target:
            x = x * mask
    return {
        'original': original,
        'ablated': images.to_uint8(x.numpy()),
        'layer': target.name,
        'filters': filters,
    }


def ablate(cfg: Config) -> dict[str, Any]:
    """`--mode=ablate`: the paper's "forgetting" experiment on the run in `--workdir`: the same `--num` z's
    rendered with all feature maps (left) and with `--ablate_filters` of `--ablate_layer` zeroed (right).
    Uses the moving-average generator when the run trained one (`--sampler=raw` for the plain one).

    Returns:
      ablate_images' dict plus 'grid' (the PNG path) and 'z'.
    """
    export.require_unconditional(export.run_config(cfg.workdir), cfg.workdir, 'ablate')
    run_cfg, generator, ema_generator, step = export.restore_generators(cfg.workdir)
    if cfg.sampler == 'ema' and ema_generator is not None:
        generator = ema_generator
    z = tf.random.stateless_normal([cfg.num, run_cfg.z_dim], seed=[cfg.seed, 0]).numpy()
    filters = cfg.ablate_filters or None
    if filters and not filters.startswith('top:'):
        filters = parse_indices(filters, 'ablate_filters')
    result = ablate_images(generator, z, cfg.ablate_layer, filters)
    out = _out_path(cfg)
    images.save_png(
        out,
        _side_by_side(
            images.make_grid(result['original'], pad_value=255),
            images.make_grid(result['ablated'], pad_value=255),
        ),
    )
    logging.info(
        'Step %d: zeroed %d maps of %s (%s); wrote with (left) / without (right) to %s.',
        step,
        len(result['filters']),
        result['layer'],
        ','.join(map(str, result['filters'])),
        out,
    )
    return {**result, 'grid': out, 'z': z}


def run(cfg: Config) -> dict[str, Any]:
    """The entry point of the sampling modes: one call per `--mode` from main.py."""
    if cfg.mode != 'sample':
        check_outputs(cfg)
    tools = {'sample': sample, 'interpolate': interpolate, 'arithmetic': arithmetic, 'ablate': ablate}
    return tools[cfg.mode](cfg)
