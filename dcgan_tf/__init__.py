"""dcgan_tf: Deep Convolutional GANs (Radford, Metz & Chintala, 2016) in TensorFlow 2 / Keras.

From Python: `cfg = dcgan_tf.Config.create(train_steps=100)` or `dcgan_tf.config.from_flagfile('demo')`
(validated), `dcgan_tf.train.train_and_evaluate(cfg, workdir)`, `dcgan_tf.export.load(path)`.
"""

__version__ = '0.2.0'

from dcgan_tf.config import Config, ConfigError  # noqa: E402

__all__ = ['Config', 'ConfigError', '__version__']
