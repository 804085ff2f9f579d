"""The explorer's logic without a page: sample grids, picks, latent walks, arithmetic, directions, image to z.

Everything works from an exported generator (`export.load`) with numpy in and out, so the page
(`app.py`) only wires widgets to these functions and the tests call them directly. Bad input raises
ConfigError with one sentence for the page to show.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dcgan_tf import images, sampling
from dcgan_tf.config import ConfigError
from dcgan_tf.export import LoadedGenerator

GRID_SIZE = 16
MAX_PICKS = 12
NUM_DIRECTIONS = 3
DIRECTION_SEED = 1234  # Fixed, so a slider means the same direction for every z and every visit.
DISPLAY_SIZE = 112  # Samples are enlarged by whole pixels to about this size, so they stay sharp.
# Image to z: Adam on z through the differentiable generator, from several random starts at once.
INVERT_STEPS = 200
INVERT_RESTARTS = 8
INVERT_LEARNING_RATE = 0.05
INVERT_SNAPSHOTS = 8
# A weak pull towards N(0, 1), where the generator was trained, so z does not wander off to reproduce
# pixels the generator can only fake from odd z's. The pixel error it competes with is about 1e-2.
PRIOR_WEIGHT = 1e-3


@dataclasses.dataclass(frozen=True)
class Pick:
    """One picked sample: where it came from (seed and grid index, or 'image') and its z."""

    key: str
    z: np.ndarray


# --- display ---


def enlarge(pictures: np.ndarray, size: int = DISPLAY_SIZE) -> np.ndarray:
    """uint8 [..., H, W, C] repeated by a whole factor to about `size` pixels; grey stays one channel."""
    factor = max(1, size // pictures.shape[-2])
    return np.repeat(np.repeat(pictures, factor, axis=-3), factor, axis=-2)


# --- grid and picks ---


def sample_grid(generator: LoadedGenerator, seed: int, num: int = GRID_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [num, H, W, C], z [num, z_dim]) from `seed`, as `--mode=sample --seed` draws them."""
    if not 0 <= seed < 2**63:
        raise ConfigError(f'The seed {seed} must be between 0 and 2**63 - 1.')
    return generator.sample(num, seed)


def toggle_pick(picks: list[Pick], key: str, z: np.ndarray) -> list[Pick]:
    """`picks` with the sample `key` added at the end, or removed if it was picked already."""
    if any(p.key == key for p in picks):
        return [p for p in picks if p.key != key]
    if len(picks) >= MAX_PICKS:
        raise ConfigError(f'At most {MAX_PICKS} picks: click a picked sample again, or clear the picks.')
    return [*picks, Pick(key, np.asarray(z, np.float32))]


def picked_z(picks: list[Pick], need: int, what: str) -> np.ndarray:
    """The z's of the picks [n, z_dim]; ConfigError saying what to do when fewer than `need`."""
    if len(picks) < need:
        raise ConfigError(
            f'{what} needs at least {need} picked sample(s); click samples in the grid to pick them.'
        )
    return np.stack([p.z for p in picks])


# --- walks, arithmetic, directions ---


def walk(
    generator: LoadedGenerator, picks: list[Pick], steps: int, spherical: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 frames [steps, H, W, C], z [steps, z_dim]) from the first pick to the second."""
    z = picked_z(picks, 2, 'A walk')
    if not 2 <= steps <= 64:
        raise ConfigError(f'A walk takes 2 to 64 steps, not {steps}.')
    return generator.interpolate(z[0], z[1], steps, spherical)


def write_gif(path: str, frames: np.ndarray, fps: float = 8.0) -> str:
    """The walk as a looping GIF, there and back, enlarged for viewing; returns `path`."""
    frames = list(enlarge(frames))
    images.save_gif(path, frames + frames[-2:0:-1], fps=fps)
    return path


def arithmetic(
    generator: LoadedGenerator, groups: dict[str, list[Pick]], scale: float = 0.25, seed: int = 0
) -> dict[str, Any]:
    """mean(A) - mean(B) + mean(C), the centre of a 3x3 grid of perturbed copies (as --mode=arithmetic).

    Returns:
      {'z': [9, z_dim] (centre at 4), 'images': uint8 [9, H, W, C], 'means': uint8 [3, H, W, C]}.
    """
    missing = [name for name in 'ABC' if not groups.get(name)]
    if missing:
        raise ConfigError(
            f'Group {", ".join(missing)} is empty: pick samples, then press "Set {missing[0]}" to fill it.'
        )
    members = [picked_z(groups[name], 1, f'Group {name}') for name in 'ABC']
    z = sampling.perturbed_sum(*members, scale, seed)
    means = np.stack([m.mean(axis=0) for m in members]).astype(np.float32)
    return {'z': z, 'images': generator.generate(z), 'means': generator.generate(means)}


def directions(z_dim: int, num: int = NUM_DIRECTIONS, seed: int = DIRECTION_SEED) -> np.ndarray:
    """`num` orthonormal random directions in z [num, z_dim], the same for a given seed."""
    gaussian = np.random.default_rng(seed).standard_normal((z_dim, num))
    q, _ = np.linalg.qr(gaussian)
    return q.T.astype(np.float32)


def move(z: np.ndarray, basis: np.ndarray, amounts: list[float]) -> np.ndarray:
    """z plus amounts[i] units along basis[i]; [z_dim] in, [1, z_dim] out."""
    amounts = np.asarray(amounts, np.float32)
    return (np.asarray(z, np.float32) + amounts @ basis)[None]


# --- image to z ---


def to_target(picture: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """An uploaded uint8 image -> float32 [1, H, W, C] in [-1, 1]; ConfigError naming what is wrong.

    Grey images serve an RGB generator (repeated); a colour image serves a grey one only if its three
    channels are equal, since any other conversion would be a choice made for the user.
    """
    picture = np.asarray(picture)
    if picture.ndim == 2:
        picture = picture[..., None]
    if picture.ndim != 3 or picture.shape[-1] not in (1, 3):
        mode = {2: 'grey with alpha', 4: 'with an alpha channel (RGBA)'}.get(
            picture.shape[-1], f'{picture.shape}'
        )
        raise ConfigError(f'The image is {mode}; save it as grayscale or RGB.')
    if picture.dtype != np.uint8:
        raise ConfigError(f'The image has {picture.dtype} pixels; save it with 8 bits per channel.')
    height, width = picture.shape[:2]
    if (height, width) != (resolution, resolution):
        raise ConfigError(
            f'The image is {width}x{height}, but this generator makes {resolution}x{resolution} images: '
            f'crop or resize it to {resolution}x{resolution} first.'
        )
    if picture.shape[-1] == 3 and channels == 1:
        if np.any(picture != picture[..., :1]):
            raise ConfigError(
                'The image is in colour, but this generator makes grayscale images: convert it.'
            )
        picture = picture[..., :1]
    elif picture.shape[-1] == 1 and channels == 3:
        picture = np.repeat(picture, 3, axis=-1)
    return images.to_unit_range(picture)[None]


def image_to_z(
    generator: LoadedGenerator,
    picture: np.ndarray,
    steps: int = INVERT_STEPS,
    restarts: int = INVERT_RESTARTS,
    seed: int = 0,
) -> dict[str, Any]:
    """The z whose sample is closest to `picture` (mean squared pixel error), by Adam on z through G.

    Args:
      generator: a loaded export with the differentiable `generate_float` (exports made before it
        existed raise ConfigError).
      picture: uint8 [H, W] or [H, W, C] at the generator's resolution.
      steps: Adam steps.
      restarts: random starting z's optimised together; the best one is kept.
      seed: draws the starting z's.

    Returns:
      {'z': [z_dim], 'image': uint8 [H, W, C], 'trajectory': uint8 [S, H, W, C] of the kept start at
       'snapshot_steps', 'errors': its pixel errors there, 'target': uint8 [H, W, C]}.
    """
    import tensorflow as tf  # noqa: PLC0415

    if generator.generate_float is None:
        raise ConfigError(
            'This export is older than image-to-z (it has no generate_float function); export the run '
            'again with --mode=export --workdir=RUN to use it.'
        )
    meta = generator.metadata
    target = tf.constant(to_target(picture, int(meta['resolution']), int(meta['channels'])))
    generate = generator.generate_float
    beta_1, beta_2, epsilon = 0.9, 0.999, 1e-8

    @tf.function
    def adam_step(z, m, v, t):
        with tf.GradientTape() as tape:
            tape.watch(z)
            error = tf.reduce_mean(tf.square(generate(z) - target), axis=[1, 2, 3])
            loss = tf.reduce_sum(error + PRIOR_WEIGHT * tf.reduce_mean(tf.square(z), axis=1))
        grad = tape.gradient(loss, z)
        m = beta_1 * m + (1 - beta_1) * grad
        v = beta_2 * v + (1 - beta_2) * tf.square(grad)
        step = INVERT_LEARNING_RATE * tf.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        return z - step * m / (tf.sqrt(v) + epsilon), m, v, error

    z = tf.constant(np.random.default_rng(seed).standard_normal((restarts, generator.z_dim)), tf.float32)
    m = v = tf.zeros_like(z)
    snapshot_steps = sorted({round(i * steps / (INVERT_SNAPSHOTS - 1)) for i in range(INVERT_SNAPSHOTS)})
    snapshots, errors = [], []
    for t in range(steps + 1):
        if t in snapshot_steps:
            snapshots.append(z.numpy())
            errors.append(tf.reduce_mean(tf.square(generate(z) - target), axis=[1, 2, 3]).numpy())
        if t < steps:
            z, m, v, _ = adam_step(z, m, v, tf.constant(t + 1, tf.float32))
    best = int(np.argmin(errors[-1]))
    path = np.stack([s[best] for s in snapshots])
    trajectory = generator.generate(path)
    return {
        'z': path[-1],
        'image': trajectory[-1],
        'trajectory': trajectory,
        'snapshot_steps': snapshot_steps,
        'errors': [float(e[best]) for e in errors],
        'target': images.to_uint8(target.numpy()[0]),
    }
