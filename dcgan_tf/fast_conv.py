"""Conv2D / Conv2DTranspose layers whose kernel gradient is one forward convolution (`--conv_filter_grad`).

On a CPU, oneDNN computes the bfloat16 kernel gradient (Conv2DBackpropFilter) with an older JIT kernel
that ran at a third to a half of the speed of the forward convolution of the same shape, while its
float32 one ran at full speed: bfloat16 gained nothing on a third of the step's FLOPs. The same sum,

    dkernel[i, j, c, o] = sum over n, y, x of inputs[n, s*y + i, s*x + j, c] * out_grad[n, y, x, o],

is a forward convolution with the roles swapped (channels as the batch, the batch as the channels,
out_grad as a kernel dilated by the stride), which oneDNN runs on its fast kernel. Measured on a 2-core
AVX512_BF16 CPU at batch 128: 2.4x faster for a 4x4 output map, 1.3x for 8x8, but slower for 16x16 and
up (and in float32 almost never faster), hence `auto`: the swap for bfloat16 on a CPU when the smaller
map of the layer is at most FORWARD_MAX_SIZE pixels wide. Same variables, same maths (up to rounding),
so checkpoints and exported models are unchanged; inference goes through the Keras layer untouched.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dcgan_tf import distribute

FILTER_GRAD_MODES = ('auto', 'native', 'forward')
# Widest smaller map (output of a Conv2D, input of a Conv2DTranspose) for which `auto` swaps.
FORWARD_MAX_SIZE = 8


def filter_gradient(inputs: tf.Tensor, out_grad: tf.Tensor, kernel_size: int, stride: int, padding: str):
    """d loss / d kernel of conv2d(inputs, kernel, stride, padding), given out_grad = d loss / d output.

    NHWC, square kernel and stride, dilation 1; the result has the kernel's shape [k, k, C_in, C_out].
    """
    k, s = kernel_size, stride
    rows = []
    for axis in (1, 2):
        size, out_size = inputs.shape[axis], out_grad.shape[axis]
        needed = (out_size - 1) * s + k  # Input rows the convolution reads, padding included.
        before = max(needed - size, 0) // 2 if padding.upper() == 'SAME' else 0
        rows.append((before, max(needed - size - before, 0), needed))
    (top, bottom, height), (left, right, width) = rows
    padded = tf.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]])[:, :height, :width, :]
    # Channels become the batch and the batch the channels; out_grad is the (dilated) kernel.
    swapped = tf.nn.conv2d(
        tf.transpose(padded, [3, 1, 2, 0]),
        tf.transpose(out_grad, [1, 2, 0, 3]),
        strides=1,
        padding='VALID',
        dilations=s,
    )  # [C_in, k, k, C_out]
    return tf.transpose(swapped, [1, 2, 0, 3])


def use_forward(mode: str, dtype: tf.DType, smaller_map: int | None) -> bool:
    """Whether a layer computes its kernel gradient with `filter_gradient` (see the module docstring)."""
    if mode == 'native' or smaller_map is None:
        return False
    if mode == 'forward':
        return True
    return dtype == tf.bfloat16 and smaller_map <= FORWARD_MAX_SIZE and distribute.device_kind() == 'CPU'


def _conv2d(inputs, kernel, stride: int, padding: str):
    """tf.nn.conv2d whose kernel gradient is `filter_gradient`; the input gradient is TensorFlow's."""

    @tf.custom_gradient
    def conv(x, w):
        def grad(dy):
            dx = tf.nn.conv2d_transpose(dy, w, tf.shape(x), stride, padding)
            return dx, filter_gradient(x, dy, w.shape[0], stride, padding)

        return tf.nn.conv2d(x, w, stride, padding), grad

    return conv(inputs, kernel)


def _conv2d_transpose(inputs, kernel, output_shape, stride: int, padding: str):
    """tf.nn.conv2d_transpose whose kernel gradient is `filter_gradient` (the output is the conv's input)."""

    @tf.custom_gradient
    def conv_transpose(x, w):
        def grad(dy):
            dx = tf.nn.conv2d(dy, w, stride, padding)
            return dx, filter_gradient(dy, x, w.shape[0], stride, padding)

        return tf.nn.conv2d_transpose(x, w, output_shape, stride, padding), grad

    return conv_transpose(inputs, kernel)


def _check_supported(layer: keras.layers.Layer) -> None:
    if layer.filter_grad not in FILTER_GRAD_MODES:
        raise ValueError(
            f'{layer.name}: filter_grad must be one of {FILTER_GRAD_MODES}, not {layer.filter_grad!r}.'
        )
    if layer.filter_grad == 'native':
        return
    square = layer.kernel_size[0] == layer.kernel_size[1] and layer.strides[0] == layer.strides[1]
    if not square or layer.data_format != 'channels_last' or tuple(layer.dilation_rate) != (1, 1):
        raise ValueError(f'{layer.name}: the forward filter gradient needs square NHWC kernels, no dilation.')


def _finish(layer: keras.layers.Layer, outputs):
    if layer.use_bias:
        outputs = tf.nn.bias_add(outputs, tf.convert_to_tensor(layer.bias))
    return layer.activation(outputs) if layer.activation is not None else outputs


@keras.saving.register_keras_serializable(package='dcgan_tf')
class Conv2D(keras.layers.Conv2D):
    """keras.layers.Conv2D with `filter_grad` in FILTER_GRAD_MODES (training only)."""

    def __init__(self, *args, filter_grad: str = 'auto', **kwargs):
        super().__init__(*args, **kwargs)
        self.filter_grad = filter_grad
        _check_supported(self)

    def call(self, inputs, training=None):
        if not training or not use_forward(
            self.filter_grad, inputs.dtype, self.compute_output_shape(inputs.shape)[1]
        ):
            return super().call(inputs)
        kernel = tf.convert_to_tensor(self.kernel)  # Cast to the compute dtype under mixed precision.
        return _finish(self, _conv2d(inputs, kernel, self.strides[0], self.padding.upper()))

    def get_config(self):
        return {**super().get_config(), 'filter_grad': self.filter_grad}


@keras.saving.register_keras_serializable(package='dcgan_tf')
class Conv2DTranspose(keras.layers.Conv2DTranspose):
    """keras.layers.Conv2DTranspose with `filter_grad` in FILTER_GRAD_MODES (training only)."""

    def __init__(self, *args, filter_grad: str = 'auto', **kwargs):
        super().__init__(*args, **kwargs)
        self.filter_grad = filter_grad
        _check_supported(self)
        if self.output_padding is not None and filter_grad != 'native':
            raise ValueError(f'{self.name}: the forward filter gradient does not support output_padding.')

    def call(self, inputs, training=None):
        if not training or not use_forward(self.filter_grad, inputs.dtype, inputs.shape[1]):
            return super().call(inputs)
        kernel = tf.convert_to_tensor(self.kernel)
        out = self.compute_output_shape(inputs.shape)
        output_shape = tf.stack([tf.shape(inputs)[0], out[1], out[2], out[3]])
        return _finish(
            self, _conv2d_transpose(inputs, kernel, output_shape, self.strides[0], self.padding.upper())
        )

    def get_config(self):
        return {**super().get_config(), 'filter_grad': self.filter_grad}
