"""One training step of the 3-D denoiser example: fastconv against PyTorch autograd.

Issue 12 item 8 (last part).  The model is ``examples/train_denoiser.py``'s
``Conv3d(1, 8, 3, padding=1) -> ReLU -> Conv3d(8, 1, 3, padding=1)`` on a
batch of 4 volumes of 16^3 (float32).  One step is what the example times:
zero the gradients, forward, mean-squared-error gradient, backward of both
layers (the layers' manual ``backward``), momentum-SGD update.  PyTorch runs
the same step with ``torch.nn.Conv3d`` layers holding the same initial
weights, autograd and ``torch.optim.SGD(momentum=0.9)``.

Before timing, one step of each from the same weights and batch is compared:
the outputs, the loss, every parameter gradient and the updated parameters
must agree to ``rtol=1e-4`` (float32).

Then interleaved rounds (the contender going first alternates) time
``--steps`` steps each; the reported time is the median per step over
rounds.  Last, fastconv's step is broken down per layer into forward, input
gradient and weight gradient, each with the kernel ``fc.explain`` says runs.

Run::

    python benchmarks/bench_denoiser.py                  # 2 threads, 9 rounds
    python benchmarks/bench_denoiser.py --threads 1 --size 24
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

import fastconv as fc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from train_denoiser import Denoiser, MomentumSGD, make_batch  # noqa: E402

import torch  # noqa: E402

LR, MOMENTUM = 0.02, 0.9


class FastconvStep:
    """The example's training step on fastconv layers."""

    def __init__(self, seed):
        self.model = Denoiser(rng=np.random.default_rng(seed))
        self.opt = MomentumSGD(self.model.layers, lr=LR, momentum=MOMENTUM)

    def __call__(self, noisy, clean):
        self.model.zero_grad()
        pred = self.model.forward(noisy)
        diff = pred - clean
        loss = float(np.mean(diff ** 2))
        self.model.backward(2.0 * diff / diff.size)
        self.opt.step()
        return pred, loss


class TorchStep:
    """The same step in PyTorch: nn.Conv3d layers with fastconv's initial weights, autograd."""

    def __init__(self, fc_model):
        self.model = torch.nn.Sequential(
            torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv3d(8, 1, 3, padding=1))
        with torch.no_grad():
            for layer, src in zip((self.model[0], self.model[2]), fc_model.layers):
                layer.weight.copy_(torch.from_numpy(src.weight))
                layer.bias.copy_(torch.from_numpy(src.bias))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)

    def __call__(self, noisy, clean):
        self.opt.zero_grad(set_to_none=False)
        pred = self.model(noisy)
        loss = torch.nn.functional.mse_loss(pred, clean)
        loss.backward()
        self.opt.step()
        return pred, loss.item()


def check_agreement(seed, noisy, clean, rtol=1e-4):
    """One step of each from the same state: outputs, gradients and updates agree."""
    ours = FastconvStep(seed)
    theirs = TorchStep(ours.model)
    pred, loss = ours(noisy, clean)
    tpred, tloss = theirs(torch.from_numpy(noisy), torch.from_numpy(clean))
    pairs = [("output", pred, tpred), ("loss", np.float32(loss), torch.tensor(tloss))]
    for name, layer, tlayer in (("conv1", ours.model.conv1, theirs.model[0]),
                                ("conv2", ours.model.conv2, theirs.model[2])):
        pairs += [(f"{name}.weight_grad", layer.weight_grad, tlayer.weight.grad),
                  (f"{name}.bias_grad", layer.bias_grad, tlayer.bias.grad),
                  (f"{name}.weight (updated)", layer.weight, tlayer.weight),
                  (f"{name}.bias (updated)", layer.bias, tlayer.bias)]
    worst = 0.0
    for name, a, t in pairs:
        t = t.detach().numpy()
        err = float(np.abs(a - t).max() / max(np.abs(t).max(), 1e-30))
        worst = max(worst, err)
        if err > rtol:
            raise AssertionError(f"{name}: fastconv and PyTorch differ by {err:.2e} "
                                 f"(relative to max |torch|), more than rtol={rtol}")
    return worst


def time_steps(step, args, n):
    t0 = time.perf_counter()
    for _ in range(n):
        step(*args)
    return (time.perf_counter() - t0) / n


def compare(seed, noisy, clean, rounds, steps):
    """Median seconds per step over interleaved rounds: {'fastconv': s, 'torch': s}."""
    ours = FastconvStep(seed)
    theirs = TorchStep(ours.model)
    contenders = {"fastconv": (ours, (noisy, clean)),
                  "torch": (theirs, (torch.from_numpy(noisy), torch.from_numpy(clean)))}
    for step, args in contenders.values():                 # warm-up
        time_steps(step, args, 3)
    times = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:
            step, args = contenders[name]
            times[name].append(time_steps(step, args, steps))
    return {name: statistics.median(t) for name, t in times.items()}


def _median_time(fn, repeats):
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def breakdown(seed, noisy, clean, repeats):
    """fastconv's step per layer and part: (layer, part, ms, kernel), in step order."""
    model = FastconvStep(seed).model
    pre = model.conv1(noisy)
    hidden = np.maximum(pre, 0)
    pred = model.conv2(hidden)
    g2 = (2.0 * (pred - clean) / pred.size).astype(np.float32)
    g1 = (model.conv2.backward(g2) * (pre > 0)).astype(np.float32)
    rows = []
    for name, layer, x, g in (("conv1 1->8", model.conv1, noisy, g1),
                              ("conv2 8->1", model.conv2, hidden, g2)):
        w = layer.weight
        parts = (
            ("forward", "conv3d", lambda: fc.conv3d(x, w, layer.bias, padding=1), w),
            ("input grad", "conv3d_input",
             lambda: fc.grad.conv3d_input(x.shape, w, g, padding=1), w),
            ("weight grad", "conv3d_weight",
             lambda: fc.grad.conv3d_weight(x, w.shape, g, padding=1), w),
        )
        for part, op, fn, _ in parts:
            e = fc.explain(op, x, w, padding=1)
            kernel = e.implementation
            if e.family == "lowering":
                kernel += ">" + e.plan["lowered"].implementation
            rows.append((name, part, 1e3 * _median_time(fn, repeats), kernel))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10, help="steps timed per round")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fc.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    noisy, clean = make_batch(np.random.default_rng(args.seed + 1), args.batch, args.size)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"fastconv {fc.__version__} (kernels: {fc._kernels.SIMD}), torch {torch.__version__}, "
          f"{args.threads} threads; batch {args.batch} x 1 x {args.size}^3 float32; "
          f"load {load:.2f}")
    worst = check_agreement(args.seed, noisy, clean)
    print(f"one step from the same state: outputs, loss, gradients and updated parameters "
          f"agree (max relative difference {worst:.1e})")
    t = compare(args.seed, noisy, clean, args.rounds, args.steps)
    print(f"\nmedian of {args.rounds} interleaved rounds of {args.steps} steps")
    print(f"{'':12} {'fastconv ms':>11} {'torch ms':>9} {'torch/fc':>8}")
    print(f"{'train step':12} {1e3 * t['fastconv']:11.2f} {1e3 * t['torch']:9.2f} "
          f"{t['torch'] / t['fastconv']:8.2f}")
    print("\nfastconv per layer (median of single calls, same threads):")
    print(f"{'layer':<12} {'part':<12} {'ms':>7}  kernel (fc.explain)")
    total = 0.0
    for layer, part, ms, kernel in breakdown(args.seed, noisy, clean, 7 * args.steps):
        total += ms
        print(f"{layer:<12} {part:<12} {ms:7.3f}  {kernel}")
    print(f"{'sum':<25} {total:7.3f}  (the rest of the step: ReLU, loss, copies, update)")


if __name__ == "__main__":
    main()
