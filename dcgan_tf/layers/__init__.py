"""Keras layers with the maths of Keras' own and faster training paths on a CPU.

Registered with Keras under package 'dcgan_tf' and their class names, which never change, so saved models
keep loading: fast_conv (Conv2D, Conv2DTranspose), dropout (Dropout), leaky_relu (LeakyReLU) and fused_bn
(FusedBatchNormalization).
"""

from dcgan_tf.layers.dropout import Dropout
from dcgan_tf.layers.fast_conv import Conv2D, Conv2DTranspose
from dcgan_tf.layers.fused_bn import FusedBatchNormalization
from dcgan_tf.layers.leaky_relu import LeakyReLU

__all__ = ['Conv2D', 'Conv2DTranspose', 'Dropout', 'FusedBatchNormalization', 'LeakyReLU']
