"""Run a 3-D convolutional network trained in PyTorch with fastconv alone: no torch needed.

The network is the one PyTorch builds with::

    model = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv3d(8, 1, 3, padding=1))
    ...                                              # training
    torch.save(model.state_dict(), "model.pt")      # keys 0.weight, 0.bias, 2.weight, 2.bias

(any channel counts and odd kernel sizes: they are read from the weights).
This script reads ``model.pt`` with ``fastconv.load_state_dict``, whose
restricted unpickler runs no code from the file, rebuilds the two layers and
applies them to a volume::

    python examples/torch_free_inference.py model.pt volume.npy output.npy

``volume.npy`` holds an (N, C, D, H, W) or (C, D, H, W) array.  The layers
compute in float32; a float16 checkpoint (``model.half().state_dict()``) is
cast to float32 on loading, so the output is that of torch's float32 network
with the float16-rounded weights.  Agreement with torch: within float32
rounding (``tests/test_checkpoint_example.py`` asserts a relative error below
1e-5 of the output's magnitude).
"""
import argparse
import sys
import time

import numpy as np

import fastconv as fc

#: Keys of the convolutions in ``torch.nn.Sequential(conv, ReLU(), conv)``: the ReLU
#: at index 1 has no parameters.
PREFIXES = ("0.", "2.")


def build_network(state_dict, prefixes=PREFIXES):
    """One ``fc.Conv3d`` per prefix, shaped after and loaded from ``state_dict``.

    Each layer's channels and kernel size come from its weight's shape
    (C_out, C_in, kD, kH, kW); padding k // 2 keeps the spatial size, as
    ``padding=1`` does for the 3x3x3 kernels above.
    """
    layers = []
    for prefix in prefixes:
        if prefix + "weight" not in state_dict:
            raise KeyError(f"checkpoint has no {prefix + 'weight'!r}; its keys are "
                           f"{list(state_dict)}")
        out_channels, in_channels, *kernel = state_dict[prefix + "weight"].shape
        layer = fc.Conv3d(in_channels, out_channels, tuple(kernel),
                          padding=tuple(k // 2 for k in kernel),
                          bias=prefix + "bias" in state_dict)
        layer.load_state_dict(state_dict, prefix=prefix)     # float16 is cast to float32
        layers.append(layer)
    return layers


def run(layers, x):
    """conv -> ReLU -> conv -> ... -> conv (no ReLU after the last layer)."""
    for i, layer in enumerate(layers):
        x = layer(x)
        if i + 1 < len(layers):
            x = np.maximum(x, 0)
    return x


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="file written by torch.save(model.state_dict(), ...)")
    parser.add_argument("input", help=".npy volume, (N, C, D, H, W) or (C, D, H, W)")
    parser.add_argument("output", help=".npy file to write the network's output to")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    state = fc.load_state_dict(args.checkpoint)
    layers = build_network(state)
    loaded = time.perf_counter()
    x = np.load(args.input, allow_pickle=False).astype(np.float32, copy=False)
    y = run(layers, x)
    np.save(args.output, y)
    done = time.perf_counter()
    dtypes = sorted({str(v.dtype) for v in state.values()})
    print(f"loaded {len(state)} tensors ({', '.join(dtypes)}) in {1e3 * (loaded - start):.1f} ms: "
          + " -> ".join(repr(layer) for layer in layers))
    print(f"input {x.shape} -> output {y.shape} in {1e3 * (done - loaded):.1f} ms; "
          f"torch imported: {'torch' in sys.modules}")
    return y


if __name__ == "__main__":
    main()
