"""Keras layers with the maths of Keras' own and faster training paths on a CPU.

Registered with Keras under package 'dcgan_tf' and their class names, which never change, so saved models
keep loading: fast_conv (Conv2D, Conv2DTranspose), dropout (Dropout), leaky_relu (LeakyReLU), fused_bn
(FusedBatchNormalization) and latent_code (CategoricalCode, InfoGAN's code read off z).
"""

from dcgan_tf.layers.dropout import Dropout
from dcgan_tf.layers.fast_conv import Conv2D, Conv2DTranspose
from dcgan_tf.layers.fused_bn import FusedBatchNormalization
from dcgan_tf.layers.latent_code import CategoricalCode
from dcgan_tf.layers.leaky_relu import LeakyReLU

__all__ = ['CategoricalCode', 'Conv2D', 'Conv2DTranspose', 'Dropout', 'FusedBatchNormalization', 'LeakyReLU']
