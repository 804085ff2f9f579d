"""--mode=bench prints one honest JSON line per measured step (fields checked, not speed)."""

import json
import os
import platform

import pytest
import tensorflow as tf
from conftest import requires_bfloat16, tiny_config
from test_main import TINY, run_cli

from dcgan_tf import bench, distribute
from dcgan_tf.config import ConfigError, validate
from dcgan_tf.inside import summary

FIELDS = {
    'bench',
    'images_per_second',
    'ms_per_step',
    'window_images_per_second',
    'model',
    'batch_size',
    'precision',
    'jit_compile',
    'steps_per_call',
    'steps_per_window',
    'warmup_s',
    'onednn',
    'tensorflow',
    'device',
    'peak_memory_mb',
}


def _bench_cfg(**overrides):
    values = dict(mode='bench', bench_steps=2, bench_windows=3, bench_warmup_steps=1)
    values.update(overrides)
    return tiny_config(**values)


def test_step_and_baseline_reports(capsys):
    reports = bench.run(_bench_cfg(bench_baseline=True, steps_per_call=2))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == reports
    baseline, ours = reports
    assert baseline['bench'] == 'baseline' and ours['bench'] == 'step'
    for report in reports:
        assert FIELDS <= report.keys()
        assert len(report['window_images_per_second']) == 3
        # The median window, and ms/step its inverse at the batch size.
        assert report['images_per_second'] == sorted(report['window_images_per_second'])[1]
        assert report['ms_per_step'] == pytest.approx(1000 * 8 / report['images_per_second'], rel=1e-3)
        assert report['model'] == 'dcgan-16x16x1 (gf 8, df 8, z 16, kernel 5)'
        assert report['tensorflow'] == tf.__version__
        assert report['peak_memory_mb'] > 50  # TensorFlow alone takes hundreds of MiB.
        assert report['device'].startswith(('CPU', 'GPU'))
    # The baseline is the straightforward step whatever ours uses.
    options = ('precision', 'steps_per_call', 'jit_compile', 'fused_batch_norm', 'fast_conv')
    assert [baseline[k] for k in options] == ['float32', 1, False, False, 'off']
    # Fused BatchNorm where it measured faster: anywhere but a CPU running TensorFlow's Eigen kernels.
    fused = not (distribute.device_kind() == 'CPU' and not distribute.onednn_enabled())
    assert [ours[k] for k in options] == ['float32', 2, False, fused, 'auto']
    assert ours['speedup_vs_baseline'] == pytest.approx(
        ours['images_per_second'] / baseline['images_per_second'], rel=1e-2
    )


def test_xla_baseline_report_and_flops(capsys):
    baseline, xla, ours = bench.run(_bench_cfg(bench_baseline=True, bench_xla_baseline=True))
    assert [r['bench'] for r in (baseline, xla, ours)] == ['baseline', 'baseline_xla', 'step']
    assert xla['jit_compile'] is True and baseline['jit_compile'] is False
    for name, ref in (('baseline', baseline), ('baseline_xla', xla)):
        assert ours[f'speedup_vs_{name}'] == pytest.approx(
            ours['images_per_second'] / ref['images_per_second'], rel=1e-2
        )
    flops = bench.train_flops_per_image(_bench_cfg())
    for r in (baseline, xla, ours):
        assert r['train_gflop_per_image'] == pytest.approx(flops / 1e9, rel=1e-3)
        assert r['achieved_tflop_per_second'] == pytest.approx(
            flops * r['images_per_second'] / 1e12, rel=1e-3
        )


def test_train_flops_grow_with_the_square_of_the_width():
    # Convolutions dominate and cost width_in x width_out, so doubling both widths about quadruples them.
    small = bench.train_flops_per_image(tiny_config(gf_dim=8, df_dim=8))
    large = bench.train_flops_per_image(tiny_config(gf_dim=16, df_dim=16))
    assert 3.0 < large / small < 4.2
    # Three times the forward work of G and of D's two passes.
    described = summary.summarize(tiny_config(gf_dim=8, df_dim=8))
    forward = sum(r.flops for r in described['generator']) + 2 * sum(
        r.flops for r in described['discriminator']
    )
    assert small == 3 * forward


@requires_bfloat16
def test_whole_calls_and_precision_reported(capsys):
    # 3 steps per window do not divide into calls of 2: the window is rounded down to whole calls.
    (report,) = bench.run(_bench_cfg(bench_steps=3, steps_per_call=2, precision='mixed_bfloat16'))
    assert report['steps_per_window'] == 2
    assert report['precision'] == 'mixed_bfloat16'
    assert 'speedup_vs_baseline' not in report


def test_input_pipeline_alone(capsys):
    (report,) = bench.run(_bench_cfg(bench='input'))
    assert report['bench'] == 'input'
    assert report['dataset'].startswith('synthetic: 64 images')
    assert report['images_per_second'] > 0


@pytest.mark.parametrize('flag', ['bench_steps', 'bench_windows'])
def test_bad_window_flags_are_refused(flag):
    with pytest.raises(ConfigError, match=f'--{flag}=0 must be a positive integer'):
        validate(_bench_cfg(**{flag: 0}))


def test_cli_prints_one_json_line(tmp_path):
    result = run_cli(
        '--mode=bench',
        '--dataset=synthetic',
        *TINY,
        '--bench_steps=1',
        '--bench_windows=1',
        '--bench_warmup_steps=0',
        f'--workdir={tmp_path}',
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    report = json.loads(line)
    assert FIELDS <= report.keys()
    assert report['batch_size'] == 8 and report['steps_per_window'] == 1
    # The command line runs TensorFlow on oneDNN on any x86 CPU, AVX2-only ones included.
    if platform.machine().lower() in ('x86_64', 'amd64') and 'TF_ENABLE_ONEDNN_OPTS' not in os.environ:
        assert report['onednn'] is True


def test_auto_precision_follows_the_device():
    assert distribute.resolve_precision(tiny_config(precision='mixed_float16')) == 'mixed_float16'
    with open('/proc/cpuinfo') as f:
        flags = f.read()
    capped = os.environ.get('ONEDNN_MAX_CPU_ISA', '').upper().startswith(('SSE', 'AVX2', 'AVX512_CORE_VNNI'))
    bf16_cpu = ('avx512_bf16' in flags or 'amx_bf16' in flags) and not capped
    if tf.config.list_physical_devices('GPU'):
        expected = 'mixed_float16'
    else:
        expected = 'mixed_bfloat16' if bf16_cpu else 'float32'
    assert distribute.resolve_precision(tiny_config(precision='auto')) == expected


def test_an_isa_cap_below_avx512_bf16_means_no_bfloat16(monkeypatch):
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX2')
    assert not distribute.cpu_has_bfloat16()
    assert distribute.resolve_precision(tiny_config(precision='auto')) in ('float32', 'mixed_float16')


def test_bfloat16_refused_where_onednn_has_no_bfloat16_kernels(monkeypatch):
    monkeypatch.setattr(distribute, 'device_kind', lambda: 'CPU')
    monkeypatch.setattr(distribute, 'cpu_has_bfloat16', lambda: False)
    monkeypatch.setattr(distribute, 'onednn_enabled', lambda: True)
    with pytest.raises(ConfigError, match='mixed_bfloat16 needs a CPU'):
        distribute.resolve_precision(tiny_config(precision='mixed_bfloat16'))
    # On TensorFlow's Eigen kernels bfloat16 runs (slowly) on any CPU.
    monkeypatch.setattr(distribute, 'onednn_enabled', lambda: False)
    assert distribute.resolve_precision(tiny_config(precision='mixed_bfloat16')) == 'mixed_bfloat16'
