"""Pictures for people: image grids, PNG and GIF files (imageio), loss plots (matplotlib).

Works on numpy arrays only, so the sampling tools can use it without the training code.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from collections.abc import Mapping, Sequence

import imageio.v3 as iio
import numpy as np

from dcgan_tf.paths import PNG_MARKER


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8-valued [0, 255] -> float32 [-1, 1], G's tanh range (the numpy twin of data's to_unit_range)."""
    return np.asarray(images).astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats (G's tanh range) -> uint8 [0, 255]; uint8 input passes through."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(
    images: np.ndarray, rows: int | None = None, padding: int = 2, pad_value: int = 0
) -> np.ndarray:
    """Tiles [N, H, W, C] images into one uint8 [rows*(H+p)+p, cols*(W+p)+p, C] picture."""
    images = to_uint8(images)
    n, h, w, c = images.shape
    rows = rows or max(1, int(math.floor(math.sqrt(n))))
    cols = int(math.ceil(n / rows))
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def _squeeze_gray(picture: np.ndarray) -> np.ndarray:
    return picture[..., 0] if picture.ndim == 3 and picture.shape[-1] == 1 else picture


def _png_chunk(kind_and_data: bytes) -> bytes:
    return (
        struct.pack('>I', len(kind_and_data) - 4)
        + kind_and_data
        + struct.pack('>I', zlib.crc32(kind_and_data))
    )


def encode_png(picture: np.ndarray) -> bytes:
    """PNG bytes carrying a tEXt chunk that says this program wrote them (see paths.is_own_output)."""
    png = iio.imwrite('<bytes>', _squeeze_gray(to_uint8(picture)), extension='.png')
    end_of_header = 8 + 4 + 4 + 13 + 4  # Signature, then IHDR's length, type, 13 data bytes and CRC.
    return png[:end_of_header] + _png_chunk(PNG_MARKER) + png[end_of_header:]


def write_file(path: str, data: bytes) -> None:
    """Writes bytes through a temporary name and a rename, so a reader never sees half a file."""
    import tensorflow as tf  # tf.io.gfile for gs:// paths; imported here to keep this module light.

    tf.io.gfile.makedirs(os.path.dirname(path) or '.')
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with tf.io.gfile.GFile(tmp, 'wb') as f:
            f.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        # A failed write (a full disk, a folder at `path`) leaves no temporary file behind.
        try:
            if tf.io.gfile.exists(tmp) and not tf.io.gfile.isdir(tmp):
                tf.io.gfile.remove(tmp)
        except (tf.errors.OpError, OSError):
            pass
        raise


def save_png(path: str, picture: np.ndarray) -> None:
    write_file(path, encode_png(picture))


def save_grid(path: str, images: np.ndarray, rows: int | None = None) -> np.ndarray:
    grid = make_grid(images, rows)
    save_png(path, grid)
    return grid


def save_gif(path: str, frames: Sequence[np.ndarray], fps: float = 4.0) -> None:
    """An animated GIF that loops forever (e.g. the fixed-z grids over training)."""
    frames = [_squeeze_gray(to_uint8(f)) for f in frames]
    write_file(
        path, iio.imwrite('<bytes>', np.stack(frames), extension='.gif', duration=1000.0 / fps, loop=0)
    )


def plot_losses(
    path: str, history: Mapping[str, Sequence[tuple[int, float]]], title: str = 'Training losses'
) -> None:
    """One line per series of (step, value) pairs, saved as a PNG."""
    import matplotlib

    matplotlib.use('Agg')  # No display on servers; must precede pyplot's import.
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for name, points in history.items():
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=name, linewidth=1.2)
    ax.set_xlabel('step')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    plt.close(fig)
    write_file(path, buffer.getvalue())
