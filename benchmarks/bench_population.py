"""Throughput of population training against one network at a time and a plain PyTorch loop, side by side.

Two workloads, each timed in alternation (best repeat reported):

* **784 inputs** (Frankle & Carbin's MNIST shape): LeNet-300-100, batch 60 per member, a 50 % global magnitude mask
  per member, plain SGD, on random MNIST-shaped tensors. Compared: N = 8 members as one population
  (:func:`lth_tutorial.training.train_population`), the single-network trainer (:func:`~lth_tutorial.training.train`)
  run 8 times, and the plain loop of ``bench_trainer.py`` (DataLoader + ``torch.nn.utils.prune``, one network).
* **quick-mode shape**: LeNet-300-100 on MNIST-1D-shaped inputs (40 features, 10 classes), batch 100 -- population of
  8 against the single-network trainer run 8 times.

Aggregate samples/s counts every member's examples (a population of 8 at batch 60 processes 480 per step). The share
of the float32 matmul peak (measured in the same run) uses dense training FLOPs, 3 x 2 x weights per example; a mask
saves nothing on dense hardware. The last line reads
``population N=8 / plain loop: R.RRx; share of matmul peak: P.P%`` (784-input case).

    python benchmarks/bench_population.py [--iterations 1000] [--repeats 3] [--members 8] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench_trainer import matmul_peak, sync, synthetic_mnist, time_plain
from lth_tutorial import models
from lth_tutorial.data import Dataset, random_dataset
from lth_tutorial.masks import prune
from lth_tutorial.scores import magnitude
from lth_tutorial.training import TrainConfig, train, train_population


def members(data: Dataset, n: int, device) -> tuple[list, list]:
    nets = [models.build("lenet_300_100", data.input_shape, 10, seed=s, device=device) for s in range(n)]
    return nets, [prune(magnitude(net), 0.5, scope="global") for net in nets]


def time_population(data: Dataset, n: int, batch: int, iterations: int, device) -> float:
    nets, masks = members(data, n, device)
    config = TrainConfig(optimizer="sgd", lr=0.05, batch_size=batch, iterations=iterations, eval_every=iterations)
    sync(device)
    start = time.perf_counter()
    result = train_population(nets, data, config, masks=masks, seeds=list(range(n)), progress=False)
    sync(device)
    assert result.stacked
    return n * iterations * batch / (time.perf_counter() - start)


def time_solo_runs(data: Dataset, n: int, batch: int, iterations: int, device) -> float:
    nets, masks = members(data, n, device)
    config = TrainConfig(optimizer="sgd", lr=0.05, batch_size=batch, iterations=iterations, eval_every=iterations)
    sync(device)
    start = time.perf_counter()
    for seed, (net, mask) in enumerate(zip(nets, masks)):
        train(net, data, config, mask=mask, seed=seed, progress=False)
    sync(device)
    return n * iterations * batch / (time.perf_counter() - start)


def best_of(repeats: int, **timers) -> dict[str, list[float]]:
    """Each timer run ``repeats`` times, in alternation."""
    runs = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            runs[name].append(timer())
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n, it, dev = args.members, args.iterations, args.device

    mnist = synthetic_mnist(12_000, dev)
    quick = random_dataset((40,), 10, (4_000, 0, 100), seed=1, device=dev, name="synthetic")
    for d, b in ((mnist, 60), (quick, 100)):  # warm-up
        time_population(d, n, b, 50, dev), time_solo_runs(d, 2, b, 50, dev)
    time_plain(mnist, 50, dev)
    big = best_of(args.repeats, population=lambda: time_population(mnist, n, 60, it, dev),
                  solo=lambda: time_solo_runs(mnist, n, 60, it, dev), plain=lambda: time_plain(mnist, it, dev))
    small = best_of(args.repeats, population=lambda: time_population(quick, n, 100, it, dev),
                    solo=lambda: time_solo_runs(quick, n, 100, it, dev))
    peak = matmul_peak(dev)

    print(f"LeNet-300-100, 50 % global masks, SGD; {it} iterations x {args.repeats} repeats on {dev} "
          f"({torch.get_num_threads()} threads, torch {torch.__version__}); float32 matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s")
    for title, runs, features, batch in (("784 inputs, batch 60", big, 784, 60),
                                        ("quick-mode shape: 40 inputs, batch 100", small, 40, 100)):
        flops = 3 * 2 * (features * 300 + 300 * 100 + 100 * 10)
        print(f"\n{title}\n{'loop':<44}{'samples/s':>12}{'% of peak':>11}   repeats")
        labels = {"population": f"population of {n} (train_population)", "solo": f"train(), one network, {n} runs",
                  "plain": "plain loop (DataLoader + torch prune)"}
        for name, values in runs.items():
            best = max(values)
            print(f"{labels[name]:<44}{best:>12,.0f}{100 * best * flops / peak:>10.1f}%   "
                  + ", ".join(f"{v:,.0f}" for v in values))
        print(f"population / {n} single-network runs: {max(runs['population']) / max(runs['solo']):.2f}x")
    flops = 3 * 2 * (784 * 300 + 300 * 100 + 100 * 10)
    best = max(big["population"])
    print(f"population N={n} / plain loop: {best / max(big['plain']):.2f}x; share of matmul peak: "
          f"{100 * best * flops / peak:.1f}%")


if __name__ == "__main__":
    main()
