"""pytorch/examples' DCGAN training step with the same layers as dcgan_tf, timed like `--mode=bench`.

Not part of the package or its tests: install its own requirements first
(`pip install -r benchmarks/requirements-torch.txt`), then

    python benchmarks/torch_dcgan.py --model=dcgan64 --batch_size=128
    python benchmarks/torch_dcgan.py --model=tutorial --batch_size=256

The step is the one in github.com/pytorch/examples dcgan/main.py: D on a real batch, D on the detached fake
batch, D step; then D on the fake batch again with "real" labels, G step (BCEWithLogits here, as our losses
take logits). The layers are dcgan_tf's (5x5 kernels, a bias-free projection of z; or the TF tutorial's pair)
so the comparison is of frameworks and steps, not of architectures. Prints one JSON line like the bench.
With `--interleave=configs/bench64.cfg` (run from the repo root, PYTHONPATH=., a Python with both torch and
TensorFlow) it also times dcgan_tf's step in the same process, windows alternating, and adds the ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch
from torch import nn


def _init(module: nn.Module) -> None:
    # DCGAN's N(0, 0.02) weights and N(1, 0.02) BatchNorm scales, as pytorch/examples' weights_init.
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class _Project(nn.Module):
    """Dense z -> size x size x width, reshaped to NCHW (keras Dense + Reshape)."""

    def __init__(self, z_dim: int, size: int, width: int):
        super().__init__()
        self.size, self.width = size, width
        self.linear = nn.Linear(z_dim, size * size * width, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).view(-1, self.width, self.size, self.size)


def _up(cin: int, cout: int, stride: int = 2, bias: bool = False) -> nn.ConvTranspose2d:
    # Keras Conv2DTranspose(5, strides=2, padding='same'): output = 2 x input.
    return nn.ConvTranspose2d(cin, cout, 5, stride, padding=2, output_padding=stride - 1, bias=bias)


def dcgan_pair(resolution: int = 64, channels: int = 3, z_dim: int = 100, width: int = 64):
    """dcgan_tf's `dcgan` generator and discriminator at 64x64: G 512-256-128-64 -> 3, D 64-128-256-512."""
    n = {32: 3, 64: 4, 128: 5}[resolution]
    g_width = width * 2 ** (n - 1)
    layers: list[nn.Module] = [_Project(z_dim, 4, g_width), nn.BatchNorm2d(g_width), nn.ReLU()]
    for _ in range(1, n):
        layers += [_up(g_width, g_width // 2), nn.BatchNorm2d(g_width // 2), nn.ReLU()]
        g_width //= 2
    layers += [_up(g_width, channels, bias=True), nn.Tanh()]
    generator = nn.Sequential(*layers)
    layers, cin = [], channels
    for i in range(n):
        cout = width * 2**i
        layers.append(nn.Conv2d(cin, cout, 5, 2, padding=2, bias=i == 0))
        if i > 0:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(0.2))
        cin = cout
    side = resolution // 2**n
    layers += [nn.Flatten(), nn.Linear(cin * side * side, 1)]
    discriminator = nn.Sequential(*layers)
    return generator, discriminator


def tutorial_pair(z_dim: int = 100):
    """The TF DCGAN tutorial's MNIST pair (Keras LeakyReLU's default slope is 0.3)."""
    generator = nn.Sequential(
        nn.Linear(z_dim, 7 * 7 * 256, bias=False),
        nn.BatchNorm1d(7 * 7 * 256),
        nn.LeakyReLU(0.3),
        nn.Unflatten(1, (256, 7, 7)),
        _up(256, 128, stride=1),
        nn.BatchNorm2d(128),
        nn.LeakyReLU(0.3),
        _up(128, 64),
        nn.BatchNorm2d(64),
        nn.LeakyReLU(0.3),
        _up(64, 1),
        nn.Tanh(),
    )
    discriminator = nn.Sequential(
        nn.Conv2d(1, 64, 5, 2, padding=2),
        nn.LeakyReLU(0.3),
        nn.Dropout(0.3),
        nn.Conv2d(64, 128, 5, 2, padding=2),
        nn.LeakyReLU(0.3),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(128 * 7 * 7, 1),
    )
    return generator, discriminator


def make_step(model: str, batch: int):
    """pytorch/examples' training step for `model` at `batch`: a function running n steps."""
    torch.manual_seed(0)
    if model == 'dcgan64':
        generator, discriminator = dcgan_pair()
        shape, lr, beta_1 = (3, 64, 64), 2e-4, 0.5
    else:
        generator, discriminator = tutorial_pair()
        shape, lr, beta_1 = (1, 28, 28), 1e-4, 0.9
    generator.apply(_init)
    discriminator.apply(_init)
    generator.train()
    discriminator.train()
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(beta_1, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(beta_1, 0.999))
    criterion = nn.BCEWithLogitsLoss()
    real_data = torch.rand(1024, *shape) * 2 - 1  # In memory, like the TF bench.
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
    counter = [0]

    def step() -> None:
        start = (counter[0] * batch) % (len(real_data) - batch)
        counter[0] += 1
        real = real_data[start : start + batch]
        # (1) D: maximise log D(x) + log(1 - D(G(z))).
        discriminator.zero_grad()
        criterion(discriminator(real), ones).backward()
        fake = generator(torch.randn(batch, 100))
        criterion(discriminator(fake.detach()), zeros).backward()
        opt_d.step()
        # (2) G: maximise log D(G(z)).
        generator.zero_grad()
        criterion(discriminator(fake), ones).backward()
        opt_g.step()

    def run(n: int) -> None:
        for _ in range(n):
            step()

    return run


def _tf_step(flagfile: str):
    """dcgan_tf's step (the Trainer, as --mode=bench runs it) from a flagfile, in this process."""
    import tempfile

    from absl import flags

    from dcgan_tf import bench
    from dcgan_tf import main as cli  # Importing it defines the flags.

    flags.FLAGS([sys.argv[0], f'--flagfile={flagfile}'])
    cfg = cli.build_config()
    return bench._OurStep(cfg, bench._in_memory_source(cfg), tempfile.mkdtemp())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', choices=('dcgan64', 'tutorial'), default='dcgan64')
    parser.add_argument('--batch_size', type=int, default=128)
    parser.add_argument('--steps', type=int, default=10, help='steps per timed window')
    parser.add_argument('--windows', type=int, default=5)
    parser.add_argument('--warmup_steps', type=int, default=3)
    parser.add_argument(
        '--interleave',
        default='',
        help="a dcgan_tf flagfile: time its step in windows alternating with torch's",
    )
    args = parser.parse_args()
    batch = args.batch_size
    steps = {'torch': make_step(args.model, batch)}
    if args.interleave:
        ours = _tf_step(args.interleave)
        steps['dcgan_tf'] = ours.run
    warmups = {}
    for name, run in steps.items():
        started = time.perf_counter()
        run(args.warmup_steps)
        warmups[name] = time.perf_counter() - started
    rates = {name: [] for name in steps}
    for _ in range(args.windows):
        for name, run in steps.items():
            started = time.perf_counter()
            run(args.steps)
            rates[name].append(args.steps * batch / (time.perf_counter() - started))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name in steps:
        report = {
            'bench': name,
            'images_per_second': round(medians[name], 2),
            'ms_per_step': round(1000 * batch / medians[name], 3),
            'window_images_per_second': [round(r, 2) for r in rates[name]],
            'model': args.model,
            'batch_size': batch,
            'precision': 'float32' if name == 'torch' else ours.trainer.precision,
            'torch': torch.__version__,
            'threads': torch.get_num_threads(),
            'warmup_s': round(warmups[name], 2),
            'peak_memory_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if name == 'dcgan_tf':
            # Ratio per window pair (measured side by side), then the median.
            pairs = [o / t for o, t in zip(rates['dcgan_tf'], rates['torch'], strict=True)]
            report['speedup_vs_torch'] = round(statistics.median(pairs), 3)
        print(json.dumps(report), flush=True)


if __name__ == '__main__':
    main()
