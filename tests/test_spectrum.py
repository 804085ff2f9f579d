"""The checkerboard measure: the Nyquist share of spectral energy."""

import numpy as np
import pytest

from dcgan_tf.quality import spectrum


def test_a_two_pixel_checkerboard_is_all_nyquist_and_smooth_images_almost_none():
    rows, cols = np.indices((28, 28))
    board = np.where((rows + cols) % 2, 1.0, -1.0)[None]
    assert spectrum.nyquist_share(board) == pytest.approx(1.0)
    stripes = np.where(cols % 2, 1.0, 0.0)[None, ..., None].repeat(3, axis=-1)  # colour, one direction
    assert spectrum.nyquist_share(stripes) == pytest.approx(1.0)
    smooth = np.sin(2 * np.pi * rows / 28.0)[None]
    assert spectrum.nyquist_share(smooth) < 1e-12
    # Adding a faint checkerboard to a smooth image raises the share by its share of the energy.
    mixed = smooth + 0.1 * board
    energy = (0.1**2 * 28 * 28) / ((smooth[0] - smooth.mean()) ** 2 + 0.1**2).sum()
    assert spectrum.nyquist_share(mixed) == pytest.approx(energy, rel=1e-6)


def test_noise_spreads_evenly_and_odd_sizes_are_refused():
    noise = np.random.default_rng(0).normal(size=(64, 28, 28))
    # White noise: the Nyquist row and column are 55 of the 783 non-DC frequencies.
    assert spectrum.nyquist_share(noise) == pytest.approx(55 / 783, rel=0.1)
    with pytest.raises(ValueError, match='even H and W'):
        spectrum.nyquist_share(np.zeros((2, 27, 27)))
