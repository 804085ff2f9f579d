"""`--mode=summary`: G and D layer by layer, with the convolution shape arithmetic worked out per layer.

For each layer: input and output shapes, kernel, stride, padding, parameters, FLOPs per image and the
shape formula with the layer's own numbers (conv: out = floor((I - K + 2P) / S) + 1; transposed conv:
out = (I - 1) * S - 2P + K + output_padding). Builds the models from a Config only: no data, no weights.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from dcgan_tf.config import Config, ConfigError

PADDING_NOTE = (
    "Padding: 'valid' is P = 0. Keras' 'same' makes a convolution's out = ceil(I / S) and pads\n"
    '  2P = max((out - 1) * S + K - I, 0) pixels in all, the odd one after (bottom/right); a transposed\n'
    "  convolution's 'same' is the gradient of that convolution, out = I * S: 2P = max(K - S, 0), and\n"
    '  output_padding = out - ((I - 1) * S - 2P + K) (0 for K=5, S=2; PyTorch writes that layer as\n'
    '  padding=2, output_padding=1).\n'
    'FLOPs per image at inference: 2 per multiply-add of convolutions and dense layers, plus 1 per\n'
    '  output element for biases and activations and 2 for BatchNorm (scale and shift).'
)


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One layer as the summary prints it."""

    name: str
    kind: str
    input_shape: tuple
    output_shape: tuple
    kernel: str
    stride: str
    padding: str
    params: int
    flops: int
    formula: str


# --- the arithmetic ---


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) pixels that Keras' 'same' pads a convolution's input with (the odd one after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_output_size(size: int, kernel: int, stride: int, padding_total: int) -> int:
    """floor((I - K + 2P) / S) + 1, with 2P the total padding of both sides."""
    return (size - kernel + padding_total) // stride + 1


def conv_transpose_output_size(
    size: int, kernel: int, stride: int, padding_total: int, output_padding: int = 0
) -> int:
    """(I - 1) * S - 2P + K + output_padding."""
    return (size - 1) * stride - padding_total + kernel + output_padding


def _pair(value) -> int:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if values[0] != values[1]:
        raise ValueError(f'non-square {values} is not supported by the summary')
    return int(values[0])


def _elements(shape: tuple) -> int:
    return math.prod(int(d) for d in shape[1:])


def _padding_text(before: int, after: int, mode: str) -> tuple[str, int]:
    total = before + after
    if mode == 'valid':
        return 'valid, 2P=0', 0
    return f'same, 2P={total} ({before}+{after})', total


def _conv_row(layer, inputs: tuple, outputs: tuple) -> tuple[str, str, str, int, str]:
    import keras  # noqa: PLC0415

    k, s = _pair(layer.kernel_size), _pair(layer.strides)
    size, out = int(inputs[1]), int(outputs[1])
    c_in, c_out = int(inputs[-1]), int(outputs[-1])
    bias = _elements(outputs) if layer.use_bias else 0
    if isinstance(layer, keras.layers.Conv2DTranspose):
        if layer.padding == 'same':
            total = max(k - s, 0)
            before, after = total // 2, total - total // 2
        else:
            before = after = 0
        padding, total = _padding_text(before, after, layer.padding)
        explicit = layer.output_padding
        op = _pair(explicit) if explicit is not None else out - conv_transpose_output_size(size, k, s, total)
        formula = f'(I - 1) * S - 2P + K + output_padding = ({size} - 1) * {s} - {total} + {k} + {op}'
        formula += f' = {conv_transpose_output_size(size, k, s, total, op)}'
        flops = 2 * k * k * c_in * c_out * int(inputs[1]) * int(inputs[2]) + bias
    else:
        before, after = same_padding(size, k, s) if layer.padding == 'same' else (0, 0)
        padding, total = _padding_text(before, after, layer.padding)
        formula = f'floor((I - K + 2P) / S) + 1 = floor(({size} - {k} + {total}) / {s}) + 1'
        formula += f' = {conv_output_size(size, k, s, total)}'
        flops = 2 * k * k * c_in * c_out * int(outputs[1]) * int(outputs[2]) + bias
    return f'{k}x{k}', str(s), padding, flops, formula


def describe_model(model) -> list[LayerRow]:
    """One LayerRow per layer of a built Keras Sequential (Input layers excluded, as model.summary does)."""
    import keras  # noqa: PLC0415

    rows = []
    for layer in model.layers:
        inputs = tuple(layer.input.shape)
        outputs = tuple(layer.output.shape)
        kind = type(layer).__name__
        kernel = stride = padding = ''
        flops, formula = 0, ''
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            kernel, stride, padding, flops, formula = _conv_row(layer, inputs, outputs)
        elif isinstance(layer, keras.layers.Dense):
            units, fan_in = int(outputs[-1]), int(inputs[-1])
            flops = 2 * fan_in * units + (units if layer.use_bias else 0)
            biases = f' + {units} biases' if layer.use_bias else ''
            formula = f'{fan_in} * {units} weights{biases}'
        elif isinstance(layer, (keras.layers.Reshape, keras.layers.Flatten)):
            formula = f'{" * ".join(map(str, inputs[1:]))} -> {" * ".join(map(str, outputs[1:]))}'
        elif isinstance(layer, keras.layers.BatchNormalization):
            flops = 2 * _elements(outputs)
        elif not isinstance(layer, keras.layers.Dropout):  # Activations: one op per element.
            flops = _elements(outputs)
        rows.append(
            LayerRow(
                name=layer.name,
                kind=kind,
                input_shape=inputs,
                output_shape=outputs,
                kernel=kernel,
                stride=stride,
                padding=padding,
                params=int(layer.count_params()),
                flops=int(flops),
                formula=formula,
            )
        )
    return rows


# --- printing ---


def _shape(shape: tuple) -> str:
    return str(tuple(shape))  # '(None, 14, 14, 64)', as model.summary() writes it.


def format_table(title: str, rows: list[LayerRow]) -> str:
    """A fixed-width table of the rows, then the totals."""
    header = ('layer', 'type', 'input', 'output', 'kernel', 'stride', 'padding', 'params', 'FLOPs', 'shape')
    cells = [
        (
            r.name,
            r.kind,
            _shape(r.input_shape),
            _shape(r.output_shape),
            r.kernel,
            r.stride,
            r.padding,
            f'{r.params:,}',
            f'{r.flops:,}',
            r.formula,
        )
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header) - 1)]
    right = {7, 8}  # Numbers align right.

    def line(values) -> str:
        parts = [
            str(v).rjust(w) if i in right else str(v).ljust(w)
            for i, (v, w) in enumerate(zip(values[:-1], widths, strict=True))
        ]
        return '  '.join(parts + [values[-1]]).rstrip()

    total_params = sum(r.params for r in rows)
    total_flops = sum(r.flops for r in rows)
    lines = [title, line(header), *(line(c) for c in cells)]
    lines.append(
        f'total: {total_params:,} parameters, {total_flops:,} FLOPs per image ({total_flops / 1e6:.1f} M)'
    )
    return '\n'.join(lines)


def summarize(cfg: Config) -> dict[str, Any]:
    """The generator and discriminator of `cfg` described layer by layer.

    Returns:
      {'generator': [LayerRow], 'discriminator': [LayerRow], 'text': the printable tables,
       'params': {'generator': int, 'discriminator': int}}.
    """
    from dcgan_tf import models  # noqa: PLC0415

    generator = models.build_generator(cfg)
    discriminator = models.build_discriminator(cfg)
    result = {'params': {}}
    tables = []
    for model in (generator, discriminator):
        rows = describe_model(model)
        result[model.name] = rows
        result['params'][model.name] = int(model.count_params())
        tables.append(
            format_table(
                f'{model.name} ({cfg.arch}, {cfg.resolution}x{cfg.resolution}x{cfg.channels}):', rows
            )
        )
    result['text'] = '\n\n'.join([*tables, PADDING_NOTE])
    return result


def run(cfg: Config, workdir: str | None = None) -> dict[str, Any]:
    """`--mode=summary`: prints the tables for the run in `workdir` (its config.cfg) when it holds one,
    else for the model the flags describe; returns summarize's dict plus 'source'."""
    import tensorflow as tf  # noqa: PLC0415

    from dcgan_tf import export  # noqa: PLC0415

    source = 'the flags'
    if workdir and tf.io.gfile.exists(os.path.join(workdir, 'config.cfg')):
        cfg = export.run_config(workdir)
        source = os.path.join(workdir, 'config.cfg')
    if cfg.conditional and not cfg.num_classes:
        raise ConfigError(
            '--mode=summary of a --conditional model needs --num_classes (or --workdir of a conditional run).'
        )
    result = summarize(cfg)
    result['source'] = source
    print(f'Model from {source}.\n\n{result["text"]}', flush=True)
    return result
