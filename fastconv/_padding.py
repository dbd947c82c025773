"""Explicit padding for the reflect / replicate / circular modes, and its adjoint.

Zero padding never goes through here: the kernels handle it in their index
math.  Both functions work on (N, C, *spatial) arrays and a tuple of
(left, right) pads per spatial axis, with PyTorch's meaning of each mode.
"""
import numpy as np

from ._boundary import TORCH_MODES, source_index


def _source_index(j, length, mode):
    """Input cell that padded position j (relative to the first input cell) copies."""
    return int(source_index(j, length, TORCH_MODES[mode]))


def _border_positions(left, right, length):
    return list(range(-left, 0)) + list(range(length, length + right))


def pad(x, pads, mode):
    """Return x padded by ``pads`` in ``mode`` (a new C-contiguous array)."""
    spatial = x.shape[2:]
    shape = x.shape[:2] + tuple(n + l + r for n, (l, r) in zip(spatial, pads))
    out = np.empty(shape, dtype=x.dtype)
    out[(Ellipsis,) + tuple(slice(l, l + n) for n, (l, _) in zip(spatial, pads))] = x
    # Pad one axis at a time, copying whole slices, so the corners come out right.
    for axis, (length, (left, right)) in enumerate(zip(spatial, pads), start=2):
        for j in _border_positions(left, right, length):
            dst = [slice(None)] * out.ndim
            src = [slice(None)] * out.ndim
            dst[axis] = left + j
            src[axis] = left + _source_index(j, length, mode)
            out[tuple(dst)] = out[tuple(src)]
    return out


def pad_adjoint(grad_padded, pads, mode, overwrite=False):
    """Fold a gradient on the padded array back onto the unpadded input.

    The gradient that lands on a padded cell is added to the input cell it
    was copied from; the axes are undone in the reverse order of ``pad``.
    With ``overwrite``, ``grad_padded`` (a scratch array) is folded in place
    instead of copied first.
    """
    g = grad_padded if overwrite else np.array(grad_padded, copy=True)
    spatial = tuple(n - l - r for n, (l, r) in zip(g.shape[2:], pads))
    for axis in reversed(range(2, g.ndim)):
        length = spatial[axis - 2]
        left, right = pads[axis - 2]
        for j in _border_positions(left, right, length):
            dst = [slice(None)] * g.ndim
            src = [slice(None)] * g.ndim
            src[axis] = left + j
            dst[axis] = left + _source_index(j, length, mode)
            g[tuple(dst)] += g[tuple(src)]
    center = (Ellipsis,) + tuple(slice(l, l + n) for n, (l, _) in zip(spatial, pads))
    return np.ascontiguousarray(g[center])
