"""`--mode=visualize`: pictures of what a trained discriminator learned, each beside a random D's, and the
memorisation check of its generator.

Writes into --out_dir: guided backpropagation of the most active features of D's last convolution on the
real images that excite them most (the paper's Fig. 5), the first layer's filters, feature maps of a few
real images layer by layer, and generated samples beside their nearest training images (pixels, and the
project classifier's features with --classifier_path); the numbers go to visualize.json.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from absl import logging

from dcgan_tf import images
from dcgan_tf.config import Config, ConfigError
from dcgan_tf.inside import neighbours

IMAGES_PER_FEATURE = 6  # The paper's Fig. 5 shows 6 features; we show 6 images of each.
FEATURE_POOL = 2000  # Real images searched for each feature's strongest responses.
MAP_IMAGES = 3  # Real images whose feature maps are shown.
MAPS_PER_LAYER = 8  # The most active maps of each layer for that image.
NEIGHBOUR_ROWS = 8  # Samples shown beside their neighbours (the numbers use --num samples).
NEIGHBOURS = 5
MAX_STREAMED = 10000  # Training images read from a source that is not in memory.
DISPLAY_CELL = 84  # Cells are enlarged by whole pixels to about this size.
GAP = 12  # White columns between the trained (left) and random (right) pictures.


# --- drawing ---


def _enlarge(pictures: np.ndarray, size: int = DISPLAY_CELL) -> np.ndarray:
    factor = max(1, size // pictures.shape[1])
    return np.repeat(np.repeat(pictures, factor, axis=1), factor, axis=2)


def _beside(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + GAP + right.shape[1], left.shape[2]), 255, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + GAP :] = right
    return canvas


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Each map [N, H, W, C] stretched to 0..255 on its own (a constant map is black)."""
    flat = maps.reshape(len(maps), -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    scaled = (maps - low[:, None, None, None]) / np.maximum(high - low, 1e-12)[:, None, None, None]
    return np.round(255 * scaled).astype(np.uint8)


def _resize_nearest(maps: np.ndarray, size: int) -> np.ndarray:
    rows = (np.arange(size) * maps.shape[1]) // size
    cols = (np.arange(size) * maps.shape[2]) // size
    return maps[:, rows][:, :, cols]


# --- the pictures (one discriminator each) ---


def guided_picture(discriminator, pool: np.ndarray, num_features: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Guided backpropagation maps, one row per feature of D's last convolution, one column per image.

    Args:
      discriminator: a Keras D.
      pool: float real images [N, H, W, C] in [-1, 1] to find each feature's strongest responses in.
      num_features: how many of the most active features.

    Returns:
      (uint8 picture, {'layer', 'features', 'images' [F, K] indices into pool, 'responses', 'coherence'}).
    """
    from dcgan_tf.inside import guided_backprop  # noqa: PLC0415 - TensorFlow only when drawing.

    layer = guided_backprop.feature_layers(discriminator)[-1]
    responses = guided_backprop.spatial_maxima(discriminator, pool, layer)
    features, top = guided_backprop.most_active(responses, num_features, min(IMAGES_PER_FEATURE, len(pool)))
    maps = np.concatenate(
        [
            guided_backprop.guided_maps(discriminator, pool[i], layer, int(f))
            for f, i in zip(features, top, strict=True)
        ]
    )
    picture = images.make_grid(_enlarge(guided_backprop.to_picture(maps)), rows=len(features), pad_value=255)
    facts = {
        'layer': layer,
        'features': [int(f) for f in features],
        'images': top.tolist(),
        'responses': [float(responses[i, f].mean()) for f, i in zip(features, top, strict=True)],
        'coherence': float(np.mean(guided_backprop.coherence(maps))),
    }
    return picture, facts


def filters_picture(discriminator) -> tuple[np.ndarray, dict[str, float]]:
    """The first convolution's kernels [K, K, C, F] as a tile of F small images, mid-grey = 0, and their
    {'std', 'coherence'} (the weights start at std 0.02 and coherence about 0: noise)."""
    from dcgan_tf.inside import guided_backprop  # noqa: PLC0415

    kernel = np.asarray(discriminator.layers[0].kernel, np.float32)
    if kernel.ndim != 4:
        raise ConfigError(
            f'{discriminator.layers[0].name} is not a convolution; there are no filters to draw.'
        )
    tiles = np.transpose(kernel, (3, 0, 1, 2))  # [F, K, K, C]
    facts = {'std': float(kernel.std()), 'coherence': float(np.mean(guided_backprop.coherence(tiles)))}
    scale = np.abs(tiles).reshape(len(tiles), -1).max(axis=1)
    tiles = np.round(127.5 + 127.5 * tiles / np.maximum(scale, 1e-12)[:, None, None, None]).astype(np.uint8)
    rows = max(1, int(np.sqrt(len(tiles) / 2)))  # About twice as wide as tall.
    return images.make_grid(_enlarge(tiles, 40), rows=rows, pad_value=255), facts


def feature_maps_picture(discriminator, real: np.ndarray) -> np.ndarray:
    """For each real image, one row per D layer: the image, then that layer's most active maps for it."""
    from dcgan_tf.inside import guided_backprop  # noqa: PLC0415

    size = real.shape[1]
    cells = []
    for image in real:
        for row, layer in enumerate(guided_backprop.feature_layers(discriminator)):
            maps = guided_backprop.forward_to(discriminator, image[None], layer).numpy()[0]  # [h, w, c]
            strongest = np.argsort(-maps.mean(axis=(0, 1)))[:MAPS_PER_LAYER]
            shown = _normalise(np.transpose(maps[..., strongest], (2, 0, 1))[..., None])
            shown = _resize_nearest(shown, size)
            if image.shape[-1] == 3:
                shown = np.repeat(shown, 3, axis=-1)
            first = images.to_uint8(image) if row == 0 else np.full_like(images.to_uint8(image), 255)
            cells.extend([first, *shown])
            cells.extend(np.full((MAPS_PER_LAYER - len(shown), *first.shape), 255, np.uint8))
    rows = len(cells) // (MAPS_PER_LAYER + 1)
    return images.make_grid(_enlarge(np.stack(cells), 56), rows=rows, pad_value=255)


def neighbours_picture(samples: np.ndarray, train: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """One row per sample: the sample, a white cell, then its nearest training images, closest first."""
    blank = np.full_like(samples[:1], 255)
    cells = [
        np.concatenate([sample[None], blank, train[row]])
        for sample, row in zip(samples, indices, strict=True)
    ]
    return images.make_grid(_enlarge(np.concatenate(cells)), rows=len(samples), pad_value=255)


# --- inputs ---


def _training_images(run_cfg: Config) -> np.ndarray:
    """The run's training images as uint8 [N, H, W, C] (a source not in memory: its first MAX_STREAMED)."""
    from dcgan_tf import data  # noqa: PLC0415

    source = data.load_source(run_cfg, 'train')
    if source.images is not None:
        return source.images
    logging.info('Reading the first %d training images of %s.', MAX_STREAMED, data.describe(source))
    return images.to_uint8(data.take_images(source, min(MAX_STREAMED, source.num_examples), run_cfg))


def _samples(workdir: str, sampler: str, num: int, seed: int) -> tuple[np.ndarray, int]:
    import tensorflow as tf  # noqa: PLC0415

    from dcgan_tf import export  # noqa: PLC0415

    run_cfg, generator, ema_generator, step = export.restore_generators(workdir)
    if sampler == 'ema' and ema_generator is not None:
        generator = ema_generator
    z = tf.random.stateless_normal([num, run_cfg.z_dim], seed=[seed, 0])  # As --mode=sample draws them.
    return images.to_uint8(generator(z, training=False).numpy()), step


# --- the mode ---


def run(cfg: Config, workdir: str, out_dir: str) -> dict[str, Any]:
    """`--mode=visualize`: the pictures of the run in `workdir`, written into `out_dir`.

    Uses the run's config.cfg for its data and model, `--num_features`, `--num` samples for the
    neighbour statistics (drawn from `--seed`), `--sampler` and `--classifier_path` from `cfg`.

    Returns:
      {'files': {name: path}, 'trained': guided facts, 'random': guided facts, 'neighbours': {'pixels':
       ..., 'classifier': ...} (statistics without the index arrays), 'step': int}; also written to
      `out_dir`/visualize.json.
    """
    from dcgan_tf import models  # noqa: PLC0415
    from dcgan_tf.quality import probe  # noqa: PLC0415

    run_cfg, trained, step = probe.restore_discriminator(workdir, 'visualize')
    # A D that never saw data: the same shape, another seed (as --mode=probe compares with).
    random_d = models.build_discriminator(run_cfg.replace(seed=run_cfg.seed + 1))
    train = _training_images(run_cfg)
    pool = images.to_unit_range(train[:FEATURE_POOL])
    files, result = {}, {'step': step}

    def save(name: str, picture: np.ndarray) -> None:
        files[name] = os.path.join(out_dir, f'{name}.png')
        images.save_png(files[name], picture)

    left, result['trained'] = guided_picture(trained, pool, cfg.num_features)
    right, result['random'] = guided_picture(random_d, pool, cfg.num_features)
    save('guided_backprop', _beside(left, right))
    (left, result['trained']['filters']), (right, result['random']['filters']) = map(
        filters_picture, (trained, random_d)
    )
    save('first_layer_filters', _beside(left, right))
    real = pool[:MAP_IMAGES]
    save('feature_maps', _beside(feature_maps_picture(trained, real), feature_maps_picture(random_d, real)))

    samples, _ = _samples(workdir, cfg.sampler, cfg.num, cfg.seed)
    spaces = {'pixels': (neighbours.pixel_vectors(samples), neighbours.pixel_vectors(train))}
    if cfg.classifier_path:
        spaces['classifier'] = tuple(
            neighbours.classifier_vectors(cfg.classifier_path, x) for x in (samples, train)
        )
    result['neighbours'] = {}
    for space, (sample_vectors, train_vectors) in spaces.items():
        check = neighbours.memorisation(sample_vectors, train_vectors, cfg.num, NEIGHBOURS)
        rows = min(NEIGHBOUR_ROWS, len(samples))
        save(f'neighbours_{space}', neighbours_picture(samples[:rows], train, check['indices'][:rows]))
        result['neighbours'][space] = {k: v for k, v in check.items() if k not in ('indices', 'distances')}
        logging.info(
            'Nearest training image (%s): samples at median %.3f, training images to each other %.3f '
            '(ratio %.2f; %.0f%% of samples closer than the closest training pair).',
            space,
            check['sample_median'],
            check['train_median'],
            check['ratio'],
            100 * check['closer_than_train_min'],
        )
    result['files'] = files
    images.write_file(os.path.join(out_dir, 'visualize.json'), (json.dumps(result, indent=1) + '\n').encode())
    logging.info(
        'Step %d: guided-backprop coherence %.3f (trained D) vs %.3f (random D); wrote %s.',
        step,
        result['trained']['coherence'],
        result['random']['coherence'],
        ', '.join(files.values()),
    )
    return result
