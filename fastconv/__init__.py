"""fastconv: PyTorch-exact 1-D/2-D/3-D convolution for NumPy on Cython/OpenMP kernels."""
__version__ = "0.1.0"

from . import grad, ndimage, signal
from ._config import show_config
from ._threads import get_num_threads, set_num_threads
from .layers import (Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d,
                     ConvTranspose3d)
from .functional import (ALGORITHMS, conv1d, conv2d, conv3d, conv_transpose1d,
                         conv_transpose2d, conv_transpose3d)

__all__ = ["ALGORITHMS", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
           "conv_transpose2d", "conv_transpose3d", "ndimage", "signal", "Conv1d", "Conv2d", "Conv3d",
           "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "grad", "get_num_threads",
           "set_num_threads", "show_config", "__version__"]
