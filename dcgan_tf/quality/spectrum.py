"""Checkerboard artifacts as a number: the share of an image's spectral energy at the stride's frequency.

A stride-2 upsampling that gives neighbouring pixels unequal numbers of kernel taps (Odena et al. 2016)
leaves a pattern that repeats every 2 pixels: energy at the Nyquist frequency, the last row and column
of the 2-D spectrum. Natural images hold little there, so the share, next to real images', says how much
of it G adds. Pure numpy.
"""

from __future__ import annotations

import numpy as np


def nyquist_share(images: np.ndarray) -> float:
    """Mean over images of the spectral energy on the Nyquist row or column over all non-DC energy.

    Args:
      images: [N, H, W] or [N, H, W, C] in any range (uint8 or floats); H and W even; colour
        images are averaged to grey first.
    """
    x = np.asarray(images, np.float64)
    if x.ndim == 4:
        x = x.mean(axis=-1)
    if x.ndim != 3 or x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f'images of shape {images.shape}: need [N, H, W(, C)] with even H and W')
    x = x - x.mean(axis=(1, 2), keepdims=True)  # No DC energy.
    power = np.abs(np.fft.fft2(x)) ** 2
    h, w = x.shape[1] // 2, x.shape[2] // 2
    nyquist = power[:, h, :].sum(axis=1) + power[:, :, w].sum(axis=1) - power[:, h, w]
    total = power.sum(axis=(1, 2))
    return float(np.mean(np.where(total > 0, nyquist / np.maximum(total, 1e-30), 0.0)))
