"""Throughput of an early-bird ticket (channels really removed) against the dense network, in the same run.

An unstructured mask saves nothing on dense hardware; a channel-pruned network is a smaller dense network and should
run faster. For each workload the dense network and its slimmed copy (:func:`lth_tutorial.early_bird.slim` of a
global channel mask at each pruning ratio) are timed in alternation, inference (eval mode, no gradients) and training
steps (forward, backward, SGD step), and the best repeat is reported with the FLOP ratio beside the measured ratio.

Workloads:

* ``vgg16``: VGG-16 with batch norm at CIFAR shape (3x32x32, 100 classes, batch 32), the paper's network;
* ``vgg1d``: chapter 07's quick network on MNIST-1D shape (length 40, batch 512).

The batch-norm scales are drawn from U(0, 1) (``_bn_uniform``), so the channel mask is a realistic uneven one; the
weights' values do not change the arithmetic.

    python benchmarks/bench_early_bird.py [--ratios 0.3 0.5 0.7] [--workloads vgg16 vgg1d] [--seconds 1.0]
                                          [--repeats 3] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from lth_tutorial import cost, early_bird, models
from lth_tutorial.chapters.ch07_early_bird import throughput

WORKLOADS = {"vgg16": ((3, 32, 32), 100, 32), "vgg1d": ((40,), 10, 512)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=["vgg16", "vgg1d"])
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum length of one timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, as the notebooks run in quick mode: on a busy 2-core "
                             "machine two threads make the small timings erratic)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); best of "
          f"{args.repeats} timings of >= {args.seconds:g} s, dense and slimmed in alternation\n")
    results = []
    header = f"{'network':<8} {'ratio':>5} {'channels':>11} {'FLOPs':>6} | {'inference ex/s':>27} {'x':>5} | " \
             f"{'training ex/s':>25} {'x':>5}"
    print(header + "\n" + "-" * len(header))
    for name in args.workloads:
        shape, classes, batch = WORKLOADS[name]
        dense = models.build(f"{name}_bn_uniform", shape, classes, seed=0)
        dense_flops = cost.forward_flops(dense, shape)
        for ratio in args.ratios:
            mask = early_bird.channel_mask(dense, ratio)
            small = early_bird.slim(dense, mask)
            row = {"network": name, "ratio": ratio, "channels": f"{sum(small.channels)}/{len(early_bird.flatten(mask))}",
                   "flop_ratio": dense_flops / cost.forward_flops(small, shape)}
            for mode, training in (("inference", False), ("training", True)):
                d = s = 0.0
                for _ in range(args.repeats):   # alternate, so a busy machine slows both alike
                    d = max(d, throughput(dense, shape, batch, training, args.seconds, 1, args.device))
                    s = max(s, throughput(small, shape, batch, training, args.seconds, 1, args.device))
                row[f"{mode}_dense"], row[f"{mode}_slim"], row[f"{mode}_speedup"] = d, s, s / d
            results.append(row)
            print(f"{name:<8} {ratio:>5.0%} {row['channels']:>11} {row['flop_ratio']:>5.2f}x | "
                  f"{row['inference_dense']:>12,.0f} -> {row['inference_slim']:>10,.0f} "
                  f"{row['inference_speedup']:>5.2f} | {row['training_dense']:>11,.0f} -> "
                  f"{row['training_slim']:>9,.0f} {row['training_speedup']:>5.2f}")
    return results


if __name__ == "__main__":
    main()
