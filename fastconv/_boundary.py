"""Boundary modes, listed once, and the one rule for what a padded cell copies.

Every boundary extension in fastconv (explicit padding for PyTorch's padding
modes, the ndimage/signal filters, the command line's slabs, Dask's halos)
maps its mode onto NumPy's ``np.pad`` names and asks :func:`source_index`
which input cell a position outside the array copies.

==================================  =================  =====================
SciPy ``mode``                       NumPy ``np.pad``    PyTorch ``padding_mode``
==================================  =================  =====================
'reflect' / 'grid-mirror'            'symmetric'         (none: half-sample)
'mirror'                             'reflect'           'reflect'
'nearest'                            'edge'              'replicate'
'wrap' / 'grid-wrap'                 'wrap'              'circular'
'constant' / 'grid-constant' + cval  'constant'          'zeros' (cval = 0)
==================================  =================  =====================
"""
import numpy as np

#: scipy.ndimage ``mode`` -> ``np.pad`` mode.
SCIPY_MODES = {"reflect": "symmetric", "grid-mirror": "symmetric", "mirror": "reflect",
               "nearest": "edge", "wrap": "wrap", "grid-wrap": "wrap", "constant": "constant",
               "grid-constant": "constant"}
#: PyTorch ``padding_mode`` -> ``np.pad`` mode.
TORCH_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
               "circular": "wrap"}


def source_index(positions, n, np_mode):
    """Input cell that each position along an axis of length ``n`` copies.

    ``positions`` are relative to the first cell and may lie anywhere outside
    ``[0, n)`` (extensions longer than the axis repeat the pattern, as
    ``np.pad`` does).  -1 marks the fill value of 'constant'.

    >>> source_index(np.arange(-3, 7), 4, "symmetric").tolist()
    [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]
    """
    p = np.asarray(positions)
    if np_mode == "constant":
        return np.where((p >= 0) & (p < n), p, -1)
    if np_mode == "edge":
        return np.clip(p, 0, n - 1)
    if np_mode == "wrap":
        return p % n
    if np_mode == "symmetric":                     # c b a | a b c d | d c b
        q = p % (2 * n)
        return np.where(q < n, q, 2 * n - 1 - q)
    if np_mode != "reflect":
        raise ValueError(f"unknown np.pad mode {np_mode!r}")
    if n == 1:                                     # reflect: d c b | a b c d | c b a
        return np.zeros_like(p)
    q = p % (2 * n - 2)
    return np.where(q < n, q, 2 * n - 2 - q)
