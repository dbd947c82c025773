"""Train a small 3-D convolutional denoiser with fastconv's layers and plain NumPy.

The model is ``Conv3d(1, 8, 3, padding=1) -> ReLU -> Conv3d(8, 1, 3, padding=1)``,
trained with SGD + momentum on synthetic volumes: smooth random blobs plus
Gaussian noise, a fresh batch every step.  Gradients come from the layers'
``backward``; the update loop only needs ``named_parameters`` and the
``<name>_grad`` arrays next to them.

Run it::

    python examples/train_denoiser.py            # 150 steps, ~10 s on 2 cores
    python examples/train_denoiser.py --steps 400 --size 24

It prints the training loss (mean squared error against the clean volume),
the error of the noisy input itself for comparison, and the time per step.
"""
import argparse
import time

import numpy as np

import fastconv as fc


def make_batch(rng, batch=4, size=16, blobs=8, noise=0.3):
    """(noisy, clean) volumes of shape (batch, 1, size, size, size), float32.

    Each clean volume is a sum of Gaussian blobs with random centres, widths and
    signed amplitudes; each blob is an outer product of three 1-D Gaussians.
    """
    grid = np.arange(size, dtype=np.float64)
    clean = np.zeros((batch, 1, size, size, size))
    for b in range(batch):
        for _ in range(blobs):
            centre = rng.uniform(0, size, 3)
            width = rng.uniform(2.0, size / 4)
            amp = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)
            gz, gy, gx = (np.exp(-0.5 * ((grid - c) / width) ** 2) for c in centre)
            clean[b, 0] += amp * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    noisy = clean + noise * rng.standard_normal(clean.shape)
    return noisy.astype(np.float32), clean.astype(np.float32)


class Denoiser:
    """Conv3d(1, 8, 3, padding=1) -> ReLU -> Conv3d(8, 1, 3, padding=1)."""

    def __init__(self, hidden=8, rng=None):
        rng = np.random.default_rng(rng)
        self.conv1 = fc.Conv3d(1, hidden, 3, padding=1, rng=rng)
        self.conv2 = fc.Conv3d(hidden, 1, 3, padding=1, rng=rng)
        self.layers = (self.conv1, self.conv2)

    def forward(self, x):
        self._pre = self.conv1(x)                 # kept for the ReLU's backward
        return self.conv2(np.maximum(self._pre, 0))

    def backward(self, grad_out):
        grad_hidden = self.conv2.backward(grad_out) * (self._pre > 0)
        return self.conv1.backward(grad_hidden)

    def zero_grad(self):
        for layer in self.layers:
            layer.zero_grad()


class MomentumSGD:
    """v <- momentum * v + grad;  p <- p - lr * v, in place on the layers' arrays."""

    def __init__(self, layers, lr=0.02, momentum=0.9):
        self.layers, self.lr, self.momentum = layers, lr, momentum
        self.velocity = {(i, name): np.zeros_like(p)
                         for i, layer in enumerate(layers)
                         for name, p in layer.named_parameters()}

    def step(self):
        for i, layer in enumerate(self.layers):
            for name, p in layer.named_parameters():
                v = self.velocity[i, name]
                v *= self.momentum
                v += getattr(layer, name + "_grad")
                p -= self.lr * v


def main(steps=150, seed=0, size=16, batch=4, lr=0.02, momentum=0.9, noise=0.3,
         log_every=10, verbose=True):
    """Train the denoiser; return the training loss of every step (a list of floats)."""
    rng = np.random.default_rng(seed)
    model = Denoiser(rng=rng)
    opt = MomentumSGD(model.layers, lr=lr, momentum=momentum)
    if verbose:
        print(f"fastconv {fc.__version__}, {fc.get_num_threads()} threads; "
              f"volumes {batch} x {size}^3, noise sigma {noise}")
        print(f"{'step':>5} {'loss':>9} {'noisy-input':>11} {'ms/step':>8}")
    losses, window, noisy_mse = [], [], []
    for step in range(1, steps + 1):
        noisy, clean = make_batch(rng, batch, size, noise=noise)
        t0 = time.perf_counter()
        model.zero_grad()
        pred = model.forward(noisy)
        diff = pred - clean
        loss = float(np.mean(diff ** 2))
        model.backward(2.0 * diff / diff.size)            # d(mean squared error)/d(pred)
        opt.step()
        window.append(time.perf_counter() - t0)
        losses.append(loss)
        noisy_mse.append(float(np.mean((noisy - clean) ** 2)))
        if verbose and (step % log_every == 0 or step == 1 or step == steps):
            print(f"{step:5d} {loss:9.5f} {np.mean(noisy_mse[-log_every:]):11.5f} "
                  f"{1e3 * np.mean(window):8.1f}")
            window = []
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=16, help="edge of the cubic volumes")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args()
    main(steps=args.steps, seed=args.seed, size=args.size, batch=args.batch, lr=args.lr)
