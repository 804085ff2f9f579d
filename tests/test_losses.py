"""The GAN losses match their definitions."""

import numpy as np
import pytest

from dcgan_tf import losses


def test_losses_match_log_sigmoid():
    real, fake = np.array([2.0, -1.0], 'float32'), np.array([0.5, -3.0], 'float32')
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    expected_d = -np.log(sig(real)) - np.log(1 - sig(fake))
    np.testing.assert_allclose(losses.discriminator_loss(real, fake).numpy(), expected_d, rtol=1e-5)
    np.testing.assert_allclose(losses.generator_loss(fake).numpy(), -np.log(sig(fake)), rtol=1e-5)


def test_losses_stay_finite_for_confident_logits():
    logits = np.array([[1e4], [-1e4]], 'float32')
    assert np.isfinite(losses.discriminator_loss(logits, -logits).numpy()).all()
    assert losses.generator_loss(np.array([-1e4], 'float32')).numpy()[0] == pytest.approx(1e4)
