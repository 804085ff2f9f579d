"""Conv2D / Conv2DTranspose layers that train with faster formulations of oneDNN's slow ops (`--fast_conv`).

Two ops of the DCGAN step run far below the CPU's speed for their FLOPs; each has an exact rewrite that
runs on oneDNN's fast forward-convolution kernel:

* The bfloat16 kernel gradient (Conv2DBackpropFilter) uses an older JIT kernel, about half as fast as the
  forward convolution of the same shape. The same sum,
      dkernel[i, j, c, o] = sum over n, y, x of inputs[n, s*y + i, s*x + j, c] * out_grad[n, y, x, o],
  is a forward convolution with the roles swapped (channels as the batch, the batch as the channels,
  out_grad as a kernel dilated by the stride): faster for small output maps, slower for large ones and
  in float32, hence used for bfloat16 maps at most FORWARD_GRAD_MAX_SIZE wide.
* A strided transposed convolution to few channels (G's RGB output, and D's input gradient) runs far
  below the CPU's speed. Each output phase (y mod s, x mod s) is a stride-1 convolution of the input with a
  slice of the kernel, so all s*s phases are one convolution to s*s*C channels and a depth_to_space
  ("sub-pixel" form): several times faster in float32 and bfloat16 for <= SUBPIXEL_MAX_CHANNELS channels.

Only training uses them (inference goes through the Keras layer untouched), and only on a CPU whose
TensorFlow runs on oneDNN: GPUs and TPUs were not measured, and TensorFlow's Eigen kernels (used where
oneDNN is off) ran the plain ops faster. Same variables, same maths up to float rounding: checkpoints and
exported models do not change.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dcgan_tf import distribute

MODES = ('auto', 'off', 'all')  # all: every rewrite a layer supports, where measured faster or not (tests).
FORWARD_GRAD_MAX_SIZE = 8  # Widest smaller map (a Conv2D's output, a Conv2DTranspose's input).
SUBPIXEL_MAX_CHANNELS = 4


# --- the rewrites ---


def filter_gradient(inputs: tf.Tensor, out_grad: tf.Tensor, kernel_size: int, stride: int, padding: str):
    """d loss / d kernel of conv2d(inputs, kernel, stride, padding), given out_grad = d loss / d output.

    NHWC, square kernel and stride, dilation 1; the result has the kernel's shape [k, k, C_in, C_out].
    """
    k, s = kernel_size, stride
    pads = []
    for axis in (1, 2):
        size, out_size = inputs.shape[axis], out_grad.shape[axis]
        needed = (out_size - 1) * s + k  # Input rows the convolution reads, padding included.
        before = max(needed - size, 0) // 2 if padding == 'SAME' else 0
        pads.append((before, max(needed - size - before, 0), needed))
    (top, bottom, height), (left, right, width) = pads
    padded = tf.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]])
    if padded.shape[1] != height or padded.shape[2] != width:  # 'VALID' rows no window reads.
        padded = padded[:, :height, :width, :]
    # Channels become the batch and the batch the channels; out_grad is the (dilated) kernel.
    swapped = tf.nn.conv2d(
        tf.transpose(padded, [3, 1, 2, 0]),
        tf.transpose(out_grad, [1, 2, 0, 3]),
        strides=1,
        padding='VALID',
        dilations=s,
    )  # [C_in, k, k, C_out]
    return tf.transpose(swapped, [1, 2, 0, 3])


def _phase_kernel(kernel: tf.Tensor, stride: int, before: int) -> tuple[tf.Tensor, int, int]:
    """A conv2d_transpose kernel [k, k, out, in] as one stride-1 kernel [T, T, in, s*s*out] over all phases.

    Output row s*u + a (phase a) sums inputs u + t times kernel row a + before - s*t; t runs over
    [t_min, t_max] for all phases together, and a row outside the kernel contributes zero.
    """
    k, s = kernel.shape[0], stride
    t_min, t_max = -((k - 1 - before) // s), (s - 1 + before) // s
    taps = t_max - t_min + 1
    rows = np.array([[a + before - s * t for a in range(s)] for t in range(t_min, t_max + 1)])
    rows = np.where((rows >= 0) & (rows < k), rows, k).reshape(-1)  # Row k: the zero row padded below.
    padded = tf.pad(kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])
    gathered = tf.gather(tf.gather(padded, rows, axis=0), rows, axis=1)  # [(t, a), (t', b), out, in]
    out, cin = kernel.shape[2], kernel.shape[3]
    phases = tf.transpose(tf.reshape(gathered, [taps, s, taps, s, out, cin]), [0, 2, 5, 1, 3, 4])
    return tf.reshape(phases, [taps, taps, cin, s * s * out]), t_min, t_max


def subpixel_conv_transpose(inputs: tf.Tensor, kernel: tf.Tensor, stride: int) -> tf.Tensor:
    """conv2d_transpose(inputs, kernel, [N, s*H, s*W, out], stride, 'SAME') as conv2d + depth_to_space."""
    k, s = kernel.shape[0], stride
    before = max(k - s, 0) // 2  # The padding above the forward convolution's input ('SAME', s*H rows).
    phases, t_min, t_max = _phase_kernel(kernel, s, before)
    padded = tf.pad(inputs, [[0, 0], [-t_min, t_max], [-t_min, t_max], [0, 0]])
    return tf.nn.depth_to_space(tf.nn.conv2d(padded, phases, 1, 'VALID'), s)


# --- when to use them ---


def onednn_cpu() -> bool:
    """Whether the step runs on a CPU through oneDNN, whose slow ops the rewrites replace.

    On TensorFlow's Eigen kernels (a CPU without oneDNN) the rewrites measured slower than the plain ops.
    """
    return distribute.device_kind() == 'CPU' and distribute.onednn_enabled()


def use_forward_grad(mode: str, dtype: tf.DType, smaller_map: int, on_onednn_cpu: bool | None = None) -> bool:
    """Whether a layer computes its kernel gradient with `filter_gradient` (`on_onednn_cpu` None: probed)."""
    if mode != 'auto':
        return mode == 'all'
    if dtype != tf.bfloat16 or smaller_map > FORWARD_GRAD_MAX_SIZE:
        return False
    return onednn_cpu() if on_onednn_cpu is None else on_onednn_cpu


def use_subpixel(
    mode: str,
    channels: int,
    stride: int,
    padding: str,
    big: int,
    small: int,
    on_onednn_cpu: bool | None = None,
) -> bool:
    """Whether a transposed convolution from `small` to `big` maps with `channels` outputs goes sub-pixel."""
    if padding != 'SAME' or stride == 1 or big != small * stride or mode == 'off':
        return False
    if mode == 'all':
        return True
    if channels > SUBPIXEL_MAX_CHANNELS:
        return False
    return onednn_cpu() if on_onednn_cpu is None else on_onednn_cpu


# --- the two ops with their gradients ---


def _conv_transpose(x, w, out_shape, stride: int, padding: str, subpixel: bool):
    if subpixel:
        return subpixel_conv_transpose(x, w, stride)
    return tf.nn.conv2d_transpose(x, w, out_shape, stride, padding)


def _kernel_gradient(big, small_grad, w, stride: int, padding: str, forward: bool):
    if forward:
        return filter_gradient(big, small_grad, w.shape[0], stride, padding)
    return tf.raw_ops.Conv2DBackpropFilter(
        input=big,
        filter_sizes=tf.shape(w),
        out_backprop=small_grad,
        strides=[1, stride, stride, 1],
        padding=padding,
    )


def conv2d(x, w, stride: int, padding: str, forward_grad: bool, subpixel_grad: bool):
    """tf.nn.conv2d whose gradients may use the rewrites (the input gradient is a transposed convolution)."""

    @tf.custom_gradient
    def conv(x, w):
        def grad(dy):
            dx = _conv_transpose(dy, w, tf.shape(x), stride, padding, subpixel_grad)
            return dx, _kernel_gradient(x, dy, w, stride, padding, forward_grad)

        return tf.nn.conv2d(x, w, stride, padding), grad

    return conv(x, w)


def conv2d_transpose(x, w, out_shape, stride: int, padding: str, forward_grad: bool, subpixel: bool):
    """tf.nn.conv2d_transpose, maybe sub-pixel, whose kernel gradient may be `filter_gradient`."""

    @tf.custom_gradient
    def conv_transpose(x, w):
        def grad(dy):
            dx = tf.nn.conv2d(dy, w, stride, padding)
            return dx, _kernel_gradient(dy, x, w, stride, padding, forward_grad)

        return _conv_transpose(x, w, out_shape, stride, padding, subpixel), grad

    return conv_transpose(x, w)


# --- the layers ---


class _FastConvMixin:
    """What both layers share: the `fast_conv` argument, its checks, its config, bias and activation."""

    def __init__(self, *args, fast_conv: str = 'auto', **kwargs):
        super().__init__(*args, **kwargs)
        self.fast_conv = fast_conv
        if fast_conv not in MODES:
            raise ValueError(f'{self.name}: fast_conv must be one of {MODES}, not {fast_conv!r}.')
        square = self.kernel_size[0] == self.kernel_size[1] and self.strides[0] == self.strides[1]
        plain = self.data_format == 'channels_last' and tuple(self.dilation_rate) == (1, 1)
        if fast_conv != 'off' and not (square and plain):
            raise ValueError(f'{self.name}: fast_conv needs square NHWC kernels and strides, no dilation.')

    def get_config(self):
        return {**super().get_config(), 'fast_conv': self.fast_conv}

    def _finish(self, outputs):
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.convert_to_tensor(self.bias))
        return self.activation(outputs) if self.activation is not None else outputs


@keras.saving.register_keras_serializable(package='dcgan_tf')
class Conv2D(_FastConvMixin, keras.layers.Conv2D):
    """keras.layers.Conv2D that trains with the rewrites chosen by `fast_conv` (one of MODES)."""

    def call(self, inputs, training=None):
        if not training or self.fast_conv == 'off':
            return super().call(inputs)
        stride, padding = self.strides[0], self.padding.upper()
        big, small = inputs.shape[1], self.compute_output_shape(inputs.shape)[1]
        forward = use_forward_grad(self.fast_conv, inputs.dtype, small)
        subpixel = use_subpixel(self.fast_conv, inputs.shape[-1], stride, padding, big, small)
        if not (forward or subpixel):  # Keras' ops keep grappler's fusions (convolution + bias).
            return super().call(inputs)
        kernel = tf.convert_to_tensor(self.kernel)  # Cast to the compute dtype under mixed precision.
        return self._finish(conv2d(inputs, kernel, stride, padding, forward, subpixel))


@keras.saving.register_keras_serializable(package='dcgan_tf')
class Conv2DTranspose(_FastConvMixin, keras.layers.Conv2DTranspose):
    """keras.layers.Conv2DTranspose that trains with the rewrites chosen by `fast_conv` (one of MODES)."""

    def __init__(self, *args, fast_conv: str = 'auto', **kwargs):
        super().__init__(*args, fast_conv=fast_conv, **kwargs)
        if self.output_padding is not None and fast_conv != 'off':
            raise ValueError(f'{self.name}: fast_conv does not support output_padding.')

    def call(self, inputs, training=None):
        if not training or self.fast_conv == 'off':
            return super().call(inputs)
        stride, padding = self.strides[0], self.padding.upper()
        out = self.compute_output_shape(inputs.shape)
        forward = use_forward_grad(self.fast_conv, inputs.dtype, inputs.shape[1])
        subpixel = use_subpixel(self.fast_conv, self.filters, stride, padding, out[1], inputs.shape[1])
        if not (forward or subpixel):
            return super().call(inputs)
        kernel = tf.convert_to_tensor(self.kernel)
        out_shape = tf.stack([tf.shape(inputs)[0], out[1], out[2], out[3]])
        return self._finish(conv2d_transpose(inputs, kernel, out_shape, stride, padding, forward, subpixel))
