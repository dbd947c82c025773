"""The training example (examples/train_denoiser.py) runs and its loss falls."""
import importlib.util
import os
import subprocess
import sys

import numpy as np

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples",
                       "train_denoiser.py")


def load_example():
    spec = importlib.util.spec_from_file_location("train_denoiser", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_denoiser_loss_falls_within_a_few_steps():
    example = load_example()
    losses = example.main(steps=15, seed=0, verbose=False)
    assert len(losses) == 15 and np.all(np.isfinite(losses))
    # Single steps see fresh random batches, so compare the last three on average.
    assert np.mean(losses[-3:]) < 0.7 * losses[0]


def test_denoiser_is_reproducible_for_a_seed():
    example = load_example()
    a = example.main(steps=3, seed=5, size=8, verbose=False)
    b = example.main(steps=3, seed=5, size=8, verbose=False)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_denoiser_script_runs_from_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, EXAMPLE, "--steps", "2", "--size", "8"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "ms/step" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["1", "2"]
