"""dcgan_tf: Deep Convolutional GANs (Radford, Metz & Chintala, 2016) in TensorFlow 2 / Keras."""

__version__ = '0.1.0'
