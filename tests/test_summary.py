"""--mode=summary: the printed shapes agree with model.summary() and the formulas, the counts with Keras."""

import contextlib
import io
import os
import re

import keras
import pytest
from conftest import REPO_ROOT

from dcgan_tf import models
from dcgan_tf.config import Config, to_flagfile
from dcgan_tf.inside import summary


def _bench64_cfg() -> Config:
    with open(os.path.join(REPO_ROOT, 'configs', 'bench64.cfg')) as f:
        values = {k: v for k, v in (line[2:].split('=', 1) for line in f if line.startswith('--'))}
    return Config(resolution=int(values['resolution']), channels=int(values['channels']))


@pytest.fixture(scope='module')
def printed():
    """What `--flagfile=configs/bench64.cfg --mode=summary` prints, run in this process (a subprocess
    would pay TensorFlow's import again) with the flags and log verbosity put back afterwards."""
    from absl import logging

    from dcgan_tf import main

    verbosity = logging.get_verbosity()
    out = io.StringIO()
    try:
        main.FLAGS(
            ['dcgan_tf', f'--flagfile={os.path.join(REPO_ROOT, "configs", "bench64.cfg")}', '--mode=summary']
        )
        with contextlib.redirect_stdout(out):
            main.main(['dcgan_tf'])
    finally:
        main.FLAGS.unparse_flags()
        logging.set_verbosity(verbosity)
    return out.getvalue()


def _keras_summary(model) -> dict[str, tuple[str, int]]:
    """{layer name: (output shape text, parameter count)} read from model.summary()'s table."""
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    rows = {}
    for line in '\n'.join(lines).splitlines():
        # '│ conv1_bn (FusedBatchNorm…)  │ (None, 16, 16, 128)  │  512 │' (the type may wrap).
        match = re.match(r'^│ (\w+)\b[^│]*│ (\([^)]*\))\s*│\s*([\d,]+) │', line)
        if match:
            rows[match.group(1)] = (match.group(2), int(match.group(3).replace(',', '')))
    return rows


def test_bench64_shapes_and_counts_match_keras(printed):
    cfg = _bench64_cfg()
    for model in (models.build_generator(cfg), models.build_discriminator(cfg)):
        expected = _keras_summary(model)
        assert len(expected) == len(model.layers) > 10
        section = printed.split(f'{model.name} (')[1].split('\n\n')[0]
        for name, (shape, params) in expected.items():
            line = next(line for line in section.splitlines() if line.startswith(f'{name} '))
            columns = re.split(r'\s{2,}', line)
            assert shape in columns, (name, shape, line)  # The output shape, as Keras prints it.
            assert f'{params:,}' in columns, (name, params, line)
        total = re.search(r'total: ([\d,]+) parameters', section).group(1)
        assert int(total.replace(',', '')) == model.count_params()


def test_bench64_formulas_evaluate_to_the_output_size(printed):
    formulas = re.findall(r'= (floor\(\(.*\) / \d+\) \+ 1|\(\d+ - 1\) \* .*) = (\d+)$', printed, re.M)
    assert len(formulas) == 8  # 4 transposed convolutions in G, 4 convolutions in D.
    for expression, value in formulas:
        assert eval(expression.replace('floor', ''), {}) // 1 == int(value), expression  # noqa: S307
    # 64 -> 32 with K=5, S=2: Keras' 'same' pads 3 pixels, 1 before and 2 after.
    assert 'same, 2P=3 (1+2)' in printed and 'floor((64 - 5 + 3) / 2) + 1 = 32' in printed
    assert '(32 - 1) * 2 - 3 + 5 + 0 = 64' in printed


@pytest.mark.parametrize(
    ('size', 'kernel', 'stride'), [(28, 5, 2), (7, 5, 1), (9, 3, 2), (64, 4, 2), (5, 5, 3), (3, 1, 2)]
)
def test_formulas_match_keras_layers(size, kernel, stride):
    inputs = keras.Input((size, size, 2))
    for padding in ('same', 'valid'):
        conv = keras.layers.Conv2D(3, kernel, strides=stride, padding=padding)(inputs)
        before, after = summary.same_padding(size, kernel, stride) if padding == 'same' else (0, 0)
        assert conv.shape[1] == summary.conv_output_size(size, kernel, stride, before + after)
        deconv = keras.layers.Conv2DTranspose(3, kernel, strides=stride, padding=padding)(inputs)
        rows = summary.describe_model(
            keras.Sequential([inputs, keras.layers.Conv2DTranspose(3, kernel, stride, padding)])
        )
        assert rows[0].output_shape[1] == deconv.shape[1]
        assert rows[0].formula.endswith(f'= {deconv.shape[1]}')


def test_reads_a_runs_config(tmp_path):
    workdir = tmp_path / 'run'
    workdir.mkdir()
    cfg = Config(resolution=32, channels=3, gf_dim=16, df_dim=8, z_dim=20)
    (workdir / 'config.cfg').write_text(to_flagfile(cfg))
    result = summary.run(Config(), str(workdir))
    assert result['source'].endswith('config.cfg')
    assert result['generator'][0].input_shape == (None, 20)
    assert result['discriminator'][0].input_shape == (None, 32, 32, 3)
    assert result['params']['generator'] == models.build_generator(cfg).count_params()
