"""fastconv: PyTorch-exact 1-D/2-D/3-D convolution for NumPy on Cython/OpenMP kernels."""
import os as _os

# Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise;
# libgomp reads this once, when it loads with the first kernel module below).
# Spinning threads steal the time slice of the thread that still has work when
# another process shares the cores: measured 2 threads 30 ms vs 1 thread 19 ms
# with a spinning wait, 17 ms vs 15 ms with a sleeping one.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from . import grad, ndimage, signal
from ._config import show_config
from ._explain import explain
from .checkpoint import CheckpointError, RefusedGlobalError, load_state_dict
from ._threads import get_num_threads, set_num_threads
from .layers import (Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d,
                     ConvTranspose3d)
from .functional import (ALGORITHMS, conv1d, conv2d, conv3d, conv_transpose1d,
                         conv_transpose2d, conv_transpose3d)

__all__ = ["ALGORITHMS", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
           "conv_transpose2d", "conv_transpose3d", "ndimage", "signal", "Conv1d", "Conv2d", "Conv3d",
           "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "grad", "get_num_threads",
           "set_num_threads", "show_config", "explain", "load_state_dict", "CheckpointError",
           "RefusedGlobalError", "__version__"]
