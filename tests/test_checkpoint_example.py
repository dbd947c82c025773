"""Round trip of examples/torch_free_inference.py: trained in torch, run without it.

A small 3-D network is trained for a few steps in torch and saved with
``torch.save(model.state_dict(), path)`` (float32, and float16 / bfloat16
through ``model.half()`` / ``model.bfloat16()``).  The example then runs in a
subprocess where importing torch raises ImportError, and must not even try
to import it.  Its output must equal torch's float32 forward pass with the
same (for float16: the same rounded) weights, within float32 rounding: the
tolerance the example documents, 1e-5 of the output's magnitude.
"""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples",
                       "torch_free_inference.py")

# Runs the example with every import of torch or torch.* refused and recorded.
WITHOUT_TORCH = """
import runpy, sys

class RefuseTorch:
    attempts = []

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            self.attempts.append(name)
            raise ImportError(f"torch is not installed here (blocked: {name})")
        return None

blocker = RefuseTorch()
sys.meta_path.insert(0, blocker)
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("torch could still be imported")
blocker.attempts.clear()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
if blocker.attempts or "torch" in sys.modules:
    raise SystemExit(f"the example tried to import {blocker.attempts}")
print("torch import attempts: 0")
"""


def trained_model(torch, steps=5):
    """Conv3d(1, 6, 3) -> ReLU -> Conv3d(6, 1, 3), a few Adam steps on a denoising task."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 6, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv3d(6, 1, 3, padding=1))
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        clean = torch.randn(2, 1, 10, 10, 10).cumsum(-1) / 4
        noisy = clean + 0.3 * torch.randn_like(clean)
        loss = torch.nn.functional.mse_loss(model(noisy), clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not torch.equal(initial["0.weight"], model.state_dict()["0.weight"])
    return model


@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_example_reproduces_torch_without_importing_it(tmp_path, torch, precision):
    model = trained_model(torch)
    saved = {"float32": model, "float16": copy.deepcopy(model).half(),
             "bfloat16": copy.deepcopy(model).bfloat16()}[precision]
    checkpoint = tmp_path / "model.pt"
    torch.save(saved.state_dict(), checkpoint)

    # Reference: torch's float32 forward pass with the weights as saved (rounded for
    # float16/bfloat16), which is what fastconv computes.
    reference_model = copy.deepcopy(saved).float()
    x = np.random.default_rng(0).standard_normal((2, 1, 9, 10, 11)).astype(np.float32)
    with torch.no_grad():
        expected = reference_model(torch.from_numpy(x)).numpy()
    np.save(tmp_path / "x.npy", x)

    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, EXAMPLE, str(checkpoint),
                             "x.npy", "y.npy"], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torch import attempts: 0" in result.stdout
    assert "torch imported: False" in result.stdout
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32 and y.shape == expected.shape == (2, 1, 9, 10, 11)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * scale)
    if precision != "float32":   # the rounded weights really are a different network
        with torch.no_grad():
            full = model(torch.from_numpy(x)).numpy()
        assert np.abs(full - expected).max() > 1e-5 * scale


def test_example_names_a_missing_layer(tmp_path, torch):
    torch.save({"0.weight": torch.zeros(2, 1, 3, 3, 3)}, tmp_path / "one_layer.pt")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 4, 4, 4), np.float32))
    result = subprocess.run([sys.executable, EXAMPLE, "one_layer.pt", "x.npy", "y.npy"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0
    assert "checkpoint has no '2.weight'" in result.stderr
