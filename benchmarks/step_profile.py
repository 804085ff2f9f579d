"""Where does a training step's time go? Profiles our step (the Trainer's, as training runs it) by op kind.

    python benchmarks/step_profile.py --flagfile=configs/demo.cfg --precision=float32
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/step_profile.py --flagfile=configs/bench64.cfg \
        --precision=float32

Warms the step up, then records `--profile_steps` steps with TensorFlow's profiler and sums the time of
every TensorFlow op on the host by kind: convolutions (forward, input and kernel gradients), BatchNorm,
matrix multiplies, elementwise ops (activations, casts, adds, the optimizer's updates), the input
pipeline, and the rest. Op times are summed over threads, so their total can exceed the wall time on
several cores; the shares are what matter. Prints a Markdown table and the wall time per step.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import shutil
import sys
import tempfile
import time

from absl import app, flags

from dcgan_tf import main as cli

FLAGS = flags.FLAGS
flags.DEFINE_integer('profile_steps', 10, 'Steps recorded by the profiler.')
flags.DEFINE_integer('profile_top', 25, 'Op types (and ops) listed one by one (the rest are summed by kind).')
flags.DEFINE_bool('profile_ops', False, 'Also list the slowest ops by name (which layer, which pass).')

# Op type -> kind; checked in order, by substring of the op type.
KINDS = (
    ('kernel grad', ('BackpropFilter',)),
    ('input grad', ('BackpropInput',)),
    ('convolution', ('Conv2D', 'DepthToSpace', 'SpaceToDepth')),
    ('BatchNorm', ('FusedBatchNorm', 'BatchNorm')),
    ('matmul', ('MatMul', 'Einsum')),
    ('input pipeline', ('Iterator', 'Dataset', 'GatherV2', 'ResourceGather')),
    ('optimizer', ('ResourceApply', 'AssignVariable', 'AssignSub', 'AssignAdd', 'ReadVariable')),
    (
        'elementwise',
        (
            'Relu',
            'Tanh',
            'Sigmoid',
            'Cast',
            'Add',
            'Mul',
            'Sub',
            'Div',
            'Sqrt',
            'Rsqrt',
            'Square',
            'Pow',
            'Maximum',
            'Minimum',
            'Neg',
            'Select',
            'Exp',
            'Log',
            'BiasAdd',
            'Reciprocal',
            'Abs',
            'Sign',
            'Greater',
            'Less',
            'Equal',
            'Sum',
            'Mean',
            'Prod',
            'Pad',
            'Transpose',
            'Reshape',
            'Tile',
            'Fill',
            'ZerosLike',
            'OnesLike',
            'StatelessRandom',
            'Identity',
        ),
    ),
)


# oneDNN's kernels are registered as _MklNativeConv2D, _MklFusedBatchNormV3, ...: named by what they do.
_ONEDNN_PREFIX = re.compile(r'^_*(MklNative|Mkl)?')


def _kind(op_type: str) -> str:
    for kind, needles in KINDS:
        if any(n in op_type for n in needles):
            return kind
    return 'other'


def _op_times(logdir: str, by_name: bool = False) -> dict[str, float]:
    """Summed duration (ms) of every TensorFlow op type (or op name and type) in the recorded host plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: PLC0415

    totals: dict[str, float] = collections.defaultdict(float)
    for path in glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, 'rb') as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith('/host:CPU'):
                continue
            for line in plane.lines:
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    # TensorFlow op events are named 'op_name:OpType'; the executor's are 'Class::method'.
                    if ':' not in name or '::' in name or ' ' in name:
                        continue
                    op_name, op_type = name.rsplit(':', 1)
                    op_type = _ONEDNN_PREFIX.sub('', op_type)
                    if op_type and op_type[0].isupper():
                        totals[f'{op_name} ({op_type})' if by_name else op_type] += event.duration_ps / 1e9
    return totals


def main(argv) -> None:
    del argv
    import tensorflow as tf  # noqa: PLC0415

    from dcgan_tf import bench, train  # noqa: PLC0415

    cfg = cli.build_config()
    workdir = tempfile.mkdtemp(prefix='dcgan_profile_')
    logdir = tempfile.mkdtemp(prefix='dcgan_profile_log_')
    try:
        trainer = train.Trainer(cfg, workdir, source=bench._in_memory_source(cfg))
        trainer.train_steps(2)
        trainer.train_steps(2)
        start = time.perf_counter()
        trainer.train_steps(FLAGS.profile_steps)
        unprofiled = (time.perf_counter() - start) / FLAGS.profile_steps
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        trainer.train_steps(FLAGS.profile_steps)
        profiled = (time.perf_counter() - start) / FLAGS.profile_steps
        tf.profiler.experimental.stop()
        totals = _op_times(logdir)
        by_name = _op_times(logdir, by_name=True) if FLAGS.profile_ops else {}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(logdir, ignore_errors=True)
    steps = FLAGS.profile_steps
    per_step = {op: ms / steps for op, ms in totals.items()}
    all_ops = sum(per_step.values())
    by_kind: dict[str, float] = collections.defaultdict(float)
    for op, ms in per_step.items():
        by_kind[_kind(op)] += ms
    print(
        f'Step of {bench.model_name(cfg)}, batch {cfg.batch_size}, precision {trainer.precision}: '
        f'{unprofiled * 1000:.1f} ms wall per step ({cfg.batch_size / unprofiled:.0f} images/s; '
        f'{profiled * 1000:.1f} ms while profiled); op time summed over threads {all_ops:.1f} ms per step.\n'
    )
    print('| kind | ms per step | share |\n|---|---:|---:|')
    for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f'| {kind} | {ms:.1f} | {100 * ms / all_ops:.1f}% |')
    print('\n| op type | kind | ms per step | share |\n|---|---|---:|---:|')
    for op, ms in sorted(per_step.items(), key=lambda kv: -kv[1])[: FLAGS.profile_top]:
        print(f'| {op} | {_kind(op)} | {ms:.2f} | {100 * ms / all_ops:.1f}% |')
    if by_name:
        print('\n| op | ms per step |\n|---|---:|')
        for op, ms in sorted(by_name.items(), key=lambda kv: -kv[1])[: FLAGS.profile_top]:
            print(f'| {op} | {ms / steps:.2f} |')
    sys.stdout.flush()


if __name__ == '__main__':
    app.run(main)
