"""Command line: `python -m dcgan_tf --flagfile=X --mode=...` (or `python -m dcgan_tf.main`, `dcgan-tf`).

Defines one absl flag per Config field, validates them before TensorFlow is imported, and makes
one library call per mode. The only module that reads FLAGS.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys

from absl import app, flags, logging

import dcgan_tf
from dcgan_tf import config as config_lib
from dcgan_tf import flagfiles, paths

FLAGS = flags.FLAGS
# What the last _parse_flags saw of the command line itself (not of its flagfiles): the names given, and
# the run folder whose own config.cfg it resumes.
_COMMAND_LINE: dict = {}
# Flags that name paths: an I/O error on one of them is reported naming the flag.
_PATH_FLAGS = (
    'workdir',
    'saved_model',
    'out',
    'out_dir',
    'data_dir',
    'z_file',
    'classifier_path',
    'model',
    'inception_weights',
    'tfds_manual_dir',
)
EXIT_USAGE = 2  # Bad flags or input: the convention of argparse and absl's usage errors.
EXIT_FAILURE = 1  # The run itself failed (NaN loss, full disk); the workdir keeps its last checkpoint.
EXIT_INTERRUPTED = 130  # The shell's convention for a process ended by SIGINT.

_DEFINE = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}


def _define_flags() -> None:
    types = {'bool': bool, 'int': int, 'float': float, 'str': str}
    for field in dataclasses.fields(config_lib.Config):
        help_text, choices = config_lib.field_help(field.name)
        if choices:
            flags.DEFINE_enum(field.name, field.default, choices, help_text)
        else:
            _DEFINE[types[field.type]](field.name, field.default, help_text)


_define_flags()


def _fail(message: str) -> None:
    print(f'error: {message}', file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag is one sentence and exit status 2 rather than a usage dump.

    `--version` prints the version; `--flagfile=NAME` may name a config shipped in the package.
    """
    if '--version' in argv[1:]:
        print(f'dcgan_tf {dcgan_tf.__version__}')
        sys.exit(0)
    _COMMAND_LINE.clear()
    try:
        flagfiles.check_flagfiles(argv[1:])  # Missing, a FIFO, a device: one sentence, never a read.
        _COMMAND_LINE['given'] = flagfiles.explicit_names(argv[1:])
        _COMMAND_LINE['run_folder'] = flagfiles.run_folder(argv[1:])
        argv = flagfiles.expand(argv)
    except config_lib.ConfigError as e:
        _fail(str(e))
    except ValueError as e:  # A loop of shipped configs.
        _fail(f'{e}.')
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(f'{e}. Run with --helpfull to list the flags.')
    except UnicodeDecodeError as e:  # absl reads flagfiles as text: a binary or damaged one.
        files = [a.split('=', 1)[1] for a in argv if a.startswith('--flagfile=')]
        _fail(
            f'a --flagfile ({", ".join(files) or "nested"}) is not a text file of flags (byte '
            f'{e.object[e.start : e.start + 1]!r} at position {e.start}); fix it or give the flags directly.'
        )
    return []


def _drop_library_info(record) -> bool:
    return record.levelno >= 30 or f'{os.sep}site-packages{os.sep}' not in record.pathname


def _use_onednn() -> None:
    """Runs TensorFlow's CPU ops on oneDNN on every x86 CPU, unless TF_ENABLE_ONEDNN_OPTS says otherwise.

    TensorFlow turns oneDNN on by itself only where the CPU has AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX;
    on an AVX2-only CPU (most laptops and many cloud VMs) it falls back to its Eigen kernels, which the
    wheel builds without AVX2 and FMA: the DCGAN step measured several times slower there.
    """
    if platform.machine().lower() in ('x86_64', 'amd64'):
        os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')


def _quiet_tensorflow() -> None:
    """Imports TensorFlow without its CUDA/oneDNN start-up chatter, unless --verbosity asks for it."""
    if FLAGS.verbosity > 0:
        return
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import warnings

    warnings.filterwarnings('ignore', module='keras')
    # TensorFlow's C++ logs lines before absl::InitializeLog() whatever TF_CPP_MIN_LOG_LEVEL says,
    # so the import runs with the stderr file descriptor pointed at /dev/null.
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices('GPU')  # Probes CUDA now, while stderr is still quiet.
        # TensorFlow's Python INFO lines (e.g. one per checkpoint save) go through absl too.
        logging.get_absl_handler().addFilter(_drop_library_info)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _given_names() -> list[str]:
    """The Config fields set on the command line itself (`--noflag` counts as `flag`)."""
    names = []
    for name in _COMMAND_LINE.get('given', []):
        if name not in config_lib.FIELDS and name.startswith('no') and name[2:] in config_lib.FIELDS:
            name = name[2:]
        names.append(name)
    return names


def build_config() -> config_lib.Config:
    """The Config from FLAGS, validated (ConfigError on a bad value).

    `--flagfile=<run>/config.cfg` resumes that run wherever the command runs: its folder is the workdir
    (config.cfg records --workdir as typed, relative to where the run started).
    """
    values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(config_lib.Config)}
    folder = _COMMAND_LINE.get('run_folder')
    if folder and os.path.realpath(values['workdir']) != os.path.realpath(folder):
        _COMMAND_LINE['note'] = (
            f"{os.path.join(folder, 'config.cfg')} is the run folder's own flagfile: using "
            f'--workdir={folder} (it records --workdir={values["workdir"]}, where the run was started).'
        )
        values['workdir'] = folder
    cfg = config_lib.validate(config_lib.Config(**values))
    config_lib.check_mode_flags(cfg, _given_names())
    return cfg


def named_paths(cfg: config_lib.Config) -> dict[str, str]:
    """{'--flag': path} of every path the command names, for one-sentence I/O errors."""
    return {f'--{name}': getattr(cfg, name) for name in _PATH_FLAGS if getattr(cfg, name)}


def main(argv: list[str]) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before training installs its own handler (e.g. while TF imports).
        print('Interrupted (Ctrl-C).', file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        _COMMAND_LINE.clear()  # Read once: a later call in this process starts from its own parse.


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f'unexpected arguments {" ".join(argv[1:])!r}; flags look like --name=value.')
    try:
        cfg = build_config()
    except config_lib.ConfigError as e:
        _fail(str(e))
    logging.set_verbosity(logging.INFO)
    if _COMMAND_LINE.get('note'):
        logging.info('%s', _COMMAND_LINE['note'])
    _use_onednn()
    _quiet_tensorflow()
    _check_workdir_writable(cfg)
    from dcgan_tf import safety  # No TensorFlow in it; the stop signals' exception is caught below.

    try:
        if cfg.mode == 'train':
            from dcgan_tf import train

            train.train_and_evaluate(cfg, cfg.workdir)
        elif cfg.mode == 'bench':
            from dcgan_tf import bench

            bench.run(cfg)
        elif cfg.mode == 'prepare':
            from dcgan_tf.data import prepare

            prepare.prepare(cfg, cfg.out_dir)
        elif cfg.mode == 'evaluate':
            from dcgan_tf.quality import evaluate

            evaluate.run(cfg, cfg.workdir)
        elif cfg.mode == 'train_classifier':
            from dcgan_tf.quality import classifier

            classifier.train_classifier(cfg, cfg.workdir)
        elif cfg.mode == 'probe':
            from dcgan_tf.quality import probe

            probe.run(cfg, cfg.workdir)
        elif cfg.mode == 'export':
            from dcgan_tf import export

            export.run(cfg)
        elif cfg.mode in ('sample', 'interpolate', 'arithmetic', 'ablate'):
            from dcgan_tf import sampling

            sampling.run(cfg)
        elif cfg.mode == 'summary':
            from dcgan_tf.inside import summary

            summary.run(cfg, cfg.workdir if FLAGS['workdir'].present else None)
        elif cfg.mode == 'visualize':
            from dcgan_tf.inside import visualize

            visualize.run(cfg, cfg.workdir, cfg.out_dir)
        elif cfg.mode == 'explore':
            from dcgan_tf.explore import app as explore_app

            explore_app.serve(cfg.saved_model or os.path.join(cfg.workdir, 'saved_model'), cfg)
    except config_lib.ConfigError as e:  # data.DataError included: bad input, not a bug.
        _fail(str(e))
    except safety.StoppedDuringStartUp as e:  # Nothing to save: status 0, as a graceful stop.
        print(e, file=sys.stderr)
        sys.exit(0)
    except Exception as e:  # A NaN loss, a full disk: one sentence and status 1, no stack trace.
        # A data check that failed inside tf.data arrives as an OpError carrying its sentence.
        data = sys.modules.get('dcgan_tf.data')
        sentence = data.pipeline_error_message(e) if data is not None else None
        if sentence:
            _fail(sentence)
        if isinstance(e, safety.NumericalError):
            message = str(e)
        else:
            resumable = cfg.workdir if cfg.mode == 'train' else None
            message = paths.io_error_message(e, named_paths(cfg), resumable_workdir=resumable)
        if message is None:
            raise
        print(f'error: {message}', file=sys.stderr)
        sys.exit(EXIT_FAILURE)


def _check_workdir_writable(cfg: config_lib.Config) -> None:
    """Training needs a workdir it can write; --overwrite deletes only a run folder (the deletion itself
    happens in training, under the workdir's lock)."""
    if cfg.mode != 'train':
        return
    from dcgan_tf import workdir
    from dcgan_tf.workdir import ownership

    _refuse_recorded_overwrite(cfg, sys.argv[1:])
    try:
        workdir.check_layout(cfg.workdir)
        if cfg.overwrite:
            ownership.check_overwrite(cfg.workdir)
        workdir.ensure_writable(cfg.workdir)
    except config_lib.ConfigError as e:
        _fail(str(e))


def _refuse_recorded_overwrite(cfg: config_lib.Config, args: list[str]) -> None:
    """Older versions recorded --overwrite=true in config.cfg: resuming with that file would delete the run.

    --overwrite counts only when given on the command line, or by a flagfile other than the run's own.
    """
    if not cfg.overwrite or any(a.split('=', 1)[0] in ('--overwrite', '-overwrite') for a in args):
        return
    own = os.path.realpath(os.path.join(cfg.workdir, 'config.cfg'))
    flagfiles = [a.split('=', 1)[1] for a in args if a.startswith(('--flagfile=', '-flagfile='))]
    if any(not config_lib.is_url(f) and os.path.realpath(f) == own for f in flagfiles):
        _fail(
            f'{own} (written by an older version) holds --overwrite=true, which would delete this run; '
            f'delete that line to resume, or pass --overwrite on the command line to start afresh.'
        )


def run() -> None:
    """Console-script entry point (`dcgan-tf`)."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
    run()
