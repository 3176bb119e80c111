"""Throughput of our trainer against a plain PyTorch loop, measured side by side in the same process.

Workload (Frankle & Carbin's MNIST setting): LeNet-300-100 with 784 inputs, batch 60, a 50 % global magnitude mask,
plain SGD. Data are random MNIST-shaped tensors (the content does not change the arithmetic).

* **plain loop**: ``TensorDataset`` + ``DataLoader(shuffle=True)``, the mask attached with
  ``torch.nn.utils.prune.custom_from_mask`` (PyTorch recomputes ``weight = weight_orig * weight_mask`` before
  every forward), ``zero_grad / forward / backward / step``.
* **ours**: :func:`lth_tutorial.training.train` -- tensors on the device, ``randperm`` batches, gradient masked
  and weights re-zeroed in place, loss checked for NaN every step.

Both are timed in alternation (ours, plain, ours, plain, ...) and the best repeat of each is reported, together
with the machine's float32 matmul peak measured in the same run and the share of it each loop reaches
(dense training FLOPs = 3 x 2 x weights per example; a mask saves nothing on dense hardware).

    python benchmarks/bench_trainer.py [--iterations 2000] [--repeats 3] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune

from lth_tutorial import models
from lth_tutorial.data import Dataset, random_dataset
from lth_tutorial.masks import prune, to_torch_prune
from lth_tutorial.scores import magnitude
from lth_tutorial.training import TrainConfig, train

BATCH = 60


def synthetic_mnist(n: int, device) -> Dataset:
    return random_dataset((784,), 10, (n, 0, BATCH), device=device, name="synthetic_mnist")


def masked_lenet(device):
    net = models.build("lenet_300_100", (784,), 10, seed=0, device=device)
    mask = prune(magnitude(net), 0.5, scope="global")
    return net, mask


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_ours(data, iterations, device) -> float:
    net, mask = masked_lenet(device)
    config = TrainConfig(optimizer="sgd", lr=0.05, batch_size=BATCH, iterations=iterations, eval_every=iterations)
    sync(device)
    start = time.perf_counter()
    train(net, data, config, mask=mask, seed=0, progress=False)
    sync(device)
    return iterations * BATCH / (time.perf_counter() - start)


def time_plain(data, iterations, device) -> float:
    net, mask = masked_lenet(device)
    to_torch_prune(mask, net)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train),
                                         batch_size=BATCH, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    steps = 0
    sync(device)
    start = time.perf_counter()
    while steps < iterations:
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
            steps += 1
            if steps == iterations:
                break
    sync(device)
    elapsed = time.perf_counter() - start
    assert isinstance(net.fc.weight_mask, torch.Tensor) and torch_prune.is_pruned(net)
    return iterations * BATCH / elapsed


def matmul_peak(device, size=1024, seconds=1.0) -> float:
    """float32 FLOP/s of a square matmul, best of a few timed bursts."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = 0.0
    for _ in range(3):
        n = 0
        sync(device)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            n += 1
        sync(device)
        best = max(best, 2 * size ** 3 * n / (time.perf_counter() - start))
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = synthetic_mnist(12_000, args.device)
    time_ours(data, 100, args.device), time_plain(data, 100, args.device)  # warm-up
    ours, plain = [], []
    for _ in range(args.repeats):
        ours.append(time_ours(data, args.iterations, args.device))
        plain.append(time_plain(data, args.iterations, args.device))
    peak = matmul_peak(args.device)
    weights = 784 * 300 + 300 * 100 + 100 * 10
    flops_per_sample = 3 * 2 * weights
    best_ours, best_plain = max(ours), max(plain)
    print(f"LeNet-300-100, 784 inputs, batch {BATCH}, 50 % global mask, SGD; {args.iterations} iterations x "
          f"{args.repeats} repeats on {args.device} ({torch.get_num_threads()} threads, torch {torch.__version__})")
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    print(f"{'loop':<40}{'samples/s':>12}{'% of peak':>11}   repeats")
    for name, best, all_ in (("plain (DataLoader + torch prune)", best_plain, plain),
                             ("lth_tutorial.training.train", best_ours, ours)):
        print(f"{name:<40}{best:>12,.0f}{100 * best * flops_per_sample / peak:>10.1f}%   "
              + ", ".join(f"{v:,.0f}" for v in all_))
    print(f"ratio ours / plain: {best_ours / best_plain:.2f}x")


if __name__ == "__main__":
    main()
