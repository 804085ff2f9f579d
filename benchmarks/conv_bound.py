"""How fast can a training step get? Times every convolution one DCGAN step runs, alone, in two or four forms.

    python benchmarks/conv_bound.py --flagfile=configs/bench64.cfg
    python benchmarks/conv_bound.py --flagfile=configs/bench_mnist.cfg

For each convolution layer of the configured G and D it times the forward op, the input gradient and the
kernel gradient (each as many times as one step of train.py runs it: D sees a real and a fake batch, and
both tapes go back through D's fake pass), in float32 with TensorFlow's ops (what the baseline step
runs) and with the fast_conv rewrites `auto` picks, and, where oneDNN has bfloat16 convolutions, the
same two in bfloat16. The sums bound the step's speed-up: even if everything else in the step were free,
a form could not beat the baseline's convolutions by more than their ratio. Prints a Markdown table.
"""

from __future__ import annotations

import statistics
import sys
import time

from absl import app, flags

from dcgan_tf import main as cli

FLAGS = flags.FLAGS
flags.DEFINE_integer('repeats', 7, 'Timed calls per op; the median is kept.')


def _time(fn, *args, repeats: int) -> float:
    fn(*args).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _ops(layer, batch: int, dtype, rewrites: bool):
    """(name, how many per step, fn, args, GFLOP) for the three ops of one convolution layer."""
    import tensorflow as tf  # noqa: PLC0415

    from dcgan_tf.layers import fast_conv  # noqa: PLC0415

    transpose = isinstance(layer, fast_conv.Conv2DTranspose)
    k, s, padding = layer.kernel_size[0], layer.strides[0], layer.padding.upper()
    h_in, c_in = layer.input.shape[1], layer.input.shape[-1]
    h_out, c_out = layer.output.shape[1], layer.output.shape[-1]
    # Every op is phrased on the equivalent forward convolution from the big map to the small one.
    big, small = ((h_out, c_out), (h_in, c_in)) if transpose else ((h_in, c_in), (h_out, c_out))
    rng = tf.random.Generator.from_seed(0)
    x = tf.cast(rng.normal([batch, big[0], big[0], big[1]]), dtype)
    y = tf.cast(rng.normal([batch, small[0], small[0], small[1]]), dtype)
    w = tf.cast(rng.normal([k, k, big[1], small[1]]), dtype)
    mode = 'auto' if rewrites else 'off'
    forward_grad = fast_conv.use_forward_grad(mode, dtype, small[0])
    subpixel = fast_conv.use_subpixel(mode, big[1], s, padding, big[0], small[0])
    gflop = 2 * batch * small[0] ** 2 * k * k * big[1] * small[1] / 1e9
    big_shape = [batch, big[0], big[0], big[1]]

    def down(x, w):  # small <- big: Conv2D's forward, Conv2DTranspose's input gradient.
        return tf.nn.conv2d(x, w, s, padding)

    def up(y, w):  # big <- small: Conv2DTranspose's forward, Conv2D's input gradient.
        if subpixel:
            return fast_conv.subpixel_conv_transpose(y, w, s)
        return tf.nn.conv2d_transpose(y, w, big_shape, s, padding)

    def kernel_grad(x, y):
        if forward_grad:
            return fast_conv.filter_gradient(x, y, k, s, padding)
        return tf.raw_ops.Conv2DBackpropFilter(
            input=x,
            filter_sizes=[k, k, big[1], small[1]],
            out_backprop=y,
            strides=[1, s, s, 1],
            padding=padding,
        )

    name = f'{layer.name} {h_in}x{h_in}x{c_in}->{h_out}x{h_out}x{c_out}'
    if transpose:  # G: one forward, one input gradient, one kernel gradient per step.
        return [
            (f'{name} forward', 1, up, (y, w), gflop),
            (f'{name} input grad', 1, down, (x, w), gflop),
            (f'{name} kernel grad', 1, kernel_grad, (x, y), gflop),
        ]
    # D: real and fake forward and kernel gradients; input gradients for the real and fake passes of
    # the D tape (not for the first layer: nothing needs the images' gradient there) and the G tape.
    input_grads = 1 if layer.name == 'conv0' else 3
    return [
        (f'{name} forward', 2, down, (x, w), gflop),
        (f'{name} input grad', input_grads, up, (y, w), gflop),
        (f'{name} kernel grad', 2, kernel_grad, (x, y), gflop),
    ]


def _bfloat16_convolutions() -> bool:
    # oneDNN has no bfloat16 convolution below AVX512 (e.g. under ONEDNN_MAX_CPU_ISA=AVX2): it fails.
    import tensorflow as tf  # noqa: PLC0415

    try:
        x = tf.ones([1, 4, 4, 2], tf.bfloat16)
        tf.nn.conv2d_transpose(x, tf.ones([3, 3, 1, 2], tf.bfloat16), [1, 8, 8, 1], 2, 'SAME').numpy()
    except tf.errors.OpError:
        return False
    return True


def main(argv) -> None:
    del argv
    import tensorflow as tf  # noqa: PLC0415

    from dcgan_tf import models  # noqa: PLC0415
    from dcgan_tf.layers import fast_conv  # noqa: PLC0415

    cfg = cli.build_config()
    layers = [
        layer
        for model in (models.build_generator(cfg), models.build_discriminator(cfg))
        for layer in model.layers
        if isinstance(layer, (fast_conv.Conv2D, fast_conv.Conv2DTranspose))
    ]
    forms = {'float32, TF ops': (tf.float32, False), 'float32, fast_conv': (tf.float32, True)}
    if _bfloat16_convolutions():
        forms.update({'bfloat16, TF ops': (tf.bfloat16, False), 'bfloat16, fast_conv': (tf.bfloat16, True)})
    else:
        print('No bfloat16 convolutions on this CPU (as oneDNN sees it): float32 only.', file=sys.stderr)
    totals = {form: 0.0 for form in forms}
    rows = []
    for layer in layers:
        per_form = [_ops(layer, cfg.batch_size, dtype, rewrites) for dtype, rewrites in forms.values()]
        for variants in zip(*per_form, strict=True):
            name, count, gflop = variants[0][0], variants[0][1], variants[0][4]
            cells = []
            for form, (_, _, fn, args, _) in zip(forms, variants, strict=True):
                ms = _time(tf.function(fn), *args, repeats=FLAGS.repeats)
                totals[form] += count * ms
                cells.append(f'{ms:.1f} ms ({gflop / ms * 1000:.0f})')
            rows.append(f'| {name} | {count} | ' + ' | '.join(cells) + ' |')
            print(rows[-1], file=sys.stderr, flush=True)
    print(f'Convolutions of one training step, batch {cfg.batch_size} (ms per op, GFLOP/s in brackets):\n')
    print('| op | per step | ' + ' | '.join(forms) + ' |')
    print('|---|---:|' + '---:|' * len(forms))
    print('\n'.join(rows))
    print(
        '| **all convolutions of a step** | | '
        + ' | '.join(f'**{t:.0f} ms**' for t in totals.values())
        + ' |'
    )
    base = totals['float32, TF ops']
    bounds = ', '.join(f'{form} {base / t:.2f}x' for form, t in totals.items() if form != 'float32, TF ops')
    print(f'\nBound on the speed-up over a float32 step from convolutions alone: {bounds}.')


if __name__ == '__main__':
    app.run(main)
