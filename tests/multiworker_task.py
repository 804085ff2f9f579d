"""One task of the local two-worker job in test_multiworker.py (TF_CONFIG comes from the environment).

Usage: python tests/multiworker_task.py WORKDIR REPORT.npz '{"train_steps": 2, ...}'
Trains a tiny model through the real entry point, train.train_and_evaluate, with
--strategy=multi_worker, then writes this task's final weights and facts to REPORT.npz for the test.
"""

import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from dcgan_tf import train  # noqa: E402
from dcgan_tf.config import Config  # noqa: E402
from tests.tiny import SMALLEST_VALUES  # noqa: E402


def main(workdir: str, report: str, overrides: str) -> None:
    values = dict(
        SMALLEST_VALUES,
        channels=1,
        train_steps=2,
        log_every=2,
        sample_every=2,
        checkpoint_every=2,
        num_grid=4,
        synthetic_examples=32,
        strategy='multi_worker',
    )
    # Flags another version of Config may lack are left out rather than failing the job.
    values.update({k: v for k, v in json.loads(overrides).items() if k in Config.__dataclass_fields__})
    trainer = train.train_and_evaluate(Config(**values), workdir)
    weights = [v.numpy() for v in trainer.generator.weights + trainer.discriminator.weights]
    np.savez(
        report,
        *weights,
        num_replicas=trainer.num_replicas,
        is_chief=trainer.is_chief,
        step=int(trainer.step),
        scratch=trainer.manager.directory,
        stopped_by=str(trainer.stopped_by),
    )


if __name__ == '__main__':
    main(*sys.argv[1:4])
