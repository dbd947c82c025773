"""Linear convolution of two arrays by FFT, computing only the part asked for.

The engine behind ``fastconv.signal.fftconvolve`` / ``oaconvolve`` and the
'fft' method of ``signal.convolve`` / ``correlate``.  Given the start and
length of the wanted window of the full linear convolution along each
convolved axis, it

* picks per axis the smallest fast FFT length ``N`` for which that window of
  the *circular* convolution of length ``N`` equals the linear one
  (``N >= max(L - start, start + length)``, ``L = n1 + n2 - 1``): 'full'
  needs ``L``, 'valid' only ``n1``, 'same' ``n1 + ceil((n2 - 1) / 2)``;
* transforms axis by axis, real-to-complex first (on the first convolved
  axis, so every later pass sees half the data) and zero-padding one axis at
  a time, so a small kernel's transform only runs full-size on its last axis;
* multiplies the spectra in place and inverts axis by axis, cropping each
  axis to its window before the next pass; the last (complex-to-real) pass
  runs on the first axis, so the final crop is a contiguous block of rows and
  needs no copy when it keeps most of the buffer.

Transforms are ``scipy.fft`` with ``workers=`` threads when SciPy is
installed, ``numpy.fft`` otherwise.  float32 / complex64 operands are
transformed in single precision (as ``scipy.fft`` does), float64 in double,
long double in long double.

Overlap-add (:func:`overlap_add`) cuts the larger input into blocks along one
axis, convolves each with the kernel's spectrum (computed once, at the block
size) and adds the blocks into the output: smaller transforms and a working
set of one block instead of the whole padded volume.  :func:`choose_blocking`
decides from the shapes alone whether that is cheaper.
"""
import math

import numpy as np

try:
    import scipy.fft as _sfft
except ImportError:          # SciPy is optional here: numpy.fft, one thread
    _sfft = None

#: A crop that keeps less than this fraction of its buffer is copied, so the
#: result does not pin a much larger block of memory.
_KEEP_VIEW = 0.75


def next_fast_len(n, real):
    """Smallest length >= n that the FFT library transforms fast."""
    if _sfft is not None:
        return _sfft.next_fast_len(n, real)
    return _smooth_at_least(n, (2, 3, 5))


def _smooth_at_least(n, primes):
    best = 1 << max(0, (n - 1).bit_length())
    stack = [1]
    seen = {1}
    while stack:            # every product of ``primes`` below ``best``
        v = stack.pop()
        if v >= n:
            best = min(best, v)
            continue
        for p in primes:
            w = v * p
            if w < best and w not in seen:
                seen.add(w)
                stack.append(w)
    return best


def _call(name, x, n, axis, workers, overwrite=False):
    if _sfft is not None:
        return getattr(_sfft, name)(x, n=n, axis=axis, workers=workers, overwrite_x=overwrite)
    return getattr(np.fft, name)(x, n=n, axis=axis)


def fft_lengths(s1, s2, starts, lengths, real):
    """Per convolved axis, the FFT length that gives the window exactly."""
    return [next_fast_len(max(a + b - 1 - st, st + ln), real)
            for a, b, st, ln in zip(s1, s2, starts, lengths)]


def forward(x, axes, sizes, real, workers):
    """Spectrum of ``x`` over ``axes`` (zero-padded to ``sizes``), one axis at a time.

    The real-to-complex pass runs first, on ``axes[0]``; the complex passes
    follow on the other axes, last axis first.
    """
    order = list(range(len(axes)))
    first = order[0]
    X = _call("rfft" if real else "fft", x, sizes[first], axes[first], workers)
    for i in reversed(order[1:]):
        X = _call("fft", X, sizes[i], axes[i], workers, overwrite=True)
    return X


def inverse(X, axes, sizes, starts, lengths, real, workers):
    """Inverse of :func:`forward`, cropping each axis to [start, start + length).

    ``X`` is overwritten.
    """
    for i in range(1, len(axes)):
        X = _call("ifft", X, sizes[i], axes[i], workers, overwrite=True)
        X = X[_window(X.ndim, axes[i], starts[i], lengths[i])]
    y = _call("irfft" if real else "ifft", X, sizes[0], axes[0], workers, overwrite=True)
    return y[_window(y.ndim, axes[0], starts[0], lengths[0])]


def _window(ndim, axis, start, length):
    index = [slice(None)] * ndim
    index[axis] = slice(start, start + length)
    return tuple(index)


def multiply(A, B, b_reused=False):
    """A * B with broadcasting, written into an operand that has the result's
    shape (``A``, or ``B`` unless ``b_reused``)."""
    shape = np.broadcast_shapes(A.shape, B.shape)
    if A.shape == shape and A.dtype == np.result_type(A, B):
        A *= B
        return A
    if not b_reused and B.shape == shape and B.dtype == np.result_type(A, B):
        B *= A
        return B
    return A * B


def convolve_window(a, b, axes, starts, lengths, workers):
    """The window [start, start + length) along each of ``axes`` of the full
    linear convolution of ``a`` and ``b`` (broadcast along the other axes).

    ``a`` and ``b`` have one floating dtype (real or complex); the result has
    it too.
    """
    real = a.dtype.kind == "f" and b.dtype.kind == "f"
    s1 = [a.shape[ax] for ax in axes]
    s2 = [b.shape[ax] for ax in axes]
    sizes = fft_lengths(s1, s2, starts, lengths, real)
    A = forward(a, axes, sizes, real, workers)
    B = forward(b, axes, sizes, real, workers)
    y = inverse(multiply(A, B), axes, sizes, starts, lengths, real, workers)
    return _own(y)


def _own(y):
    """``y`` as returned to the user: contiguous, not pinning a much larger buffer."""
    base = y.base if y.base is not None else y
    if y.flags.c_contiguous and y.size >= _KEEP_VIEW * base.size:
        return y
    return np.ascontiguousarray(y)


# --------------------------------------------------------------------------- overlap-add

def _pass_cost(lines, n, real):
    """Relative cost of one pass of length-``n`` transforms over ``lines`` lines.

    ``n log2 n`` per line plus a memory term per element; a real pass costs
    about half a complex one.
    """
    work = lines * n * (math.log2(max(n, 2)) + 6.0)
    return work / 2 if real else work


#: Spectra larger than this cost extra per element: past the last-level cache
#: and glibc's largest reused heap block (32 MiB), every pass streams from
#: memory and every temporary is freshly mapped and page-faulted.
_BIG_BYTES = 32 << 20
_BIG_FACTOR = 1.5
#: Python and library overhead of one overlap-add block, in cost units
#: (one unit is roughly a third of a nanosecond).
_BLOCK_OVERHEAD = 1e5


def _transforms_cost(s1, s2, sizes, lengths, real, itemsize, kernel=True):
    """Estimated cost of :func:`convolve_window` over these lengths: forward
    transforms (the kernel's too unless ``kernel=False``), product, inverse."""
    nd = len(sizes)
    spec = [(n // 2 + 1) if (real and i == 0) else n for i, n in enumerate(sizes)]
    cost = 0.0
    for src in ((s1, s2) if kernel else (s1,)):
        cost += _pass_cost(math.prod(src[1:]), sizes[0], real)
        done = [spec[0]] + list(src[1:])
        for i in reversed(range(1, nd)):
            done[i] = sizes[i]
            cost += _pass_cost(math.prod(done) // sizes[i], sizes[i], False)
    full = math.prod(spec)
    cost += full * 8.0                                  # the product
    shape = list(spec)
    for i in range(1, nd):
        cost += _pass_cost(math.prod(shape) // sizes[i], sizes[i], False)
        shape[i] = lengths[i]
    cost += _pass_cost(math.prod(shape[1:]), sizes[0], real)
    if full * 2 * itemsize > _BIG_BYTES:
        cost *= _BIG_FACTOR
    return cost


def _candidate_steps(n, k, real):
    """Block steps worth trying along an axis of length n with a kernel of k."""
    steps = {-(-n // nb) for nb in range(2, 17)}
    length = 16
    while length < n:
        for m in (length, 3 * length // 2):
            steps.add(next_fast_len(m, real) - (k - 1))
        length *= 2
    # blocks at least 8x the overlap (<= 12.5 % of the work repeated)
    return sorted(s for s in steps if 8 * (k - 1) <= s < n)


def choose_blocking(s1, s2, starts, lengths, real, itemsize, force=False):
    """(axis index, step) for overlap-add along one convolved axis, or None.

    From the shapes and the element size alone (never the thread count): the
    larger input ``s1`` is cut into blocks of ``step`` along the axis where
    that is estimated cheapest.  None when the plain transform is estimated
    at least as cheap, unless ``force`` (then None only when no blocking fits).
    """
    sizes = fft_lengths(s1, s2, starts, lengths, real)
    plain = _transforms_cost(s1, s2, sizes, lengths, real, itemsize)
    best, choice = (math.inf if force else plain * 0.9), None   # must win clearly
    for i, (n, k) in enumerate(zip(s1, s2)):
        if k == 1:
            continue
        for step in _candidate_steps(n, k, real):
            nblocks = -(-n // step)
            bs1, blen, bst = list(s1), list(lengths), list(starts)
            bs1[i], blen[i], bst[i] = step, step + k - 1, 0
            bsizes = fft_lengths(bs1, s2, bst, blen, real)
            cost = (_transforms_cost(bs1, s2, bsizes, blen, real, itemsize, kernel=False)
                    * nblocks + _BLOCK_OVERHEAD * nblocks
                    + math.prod(lengths) * 2.0)      # adding the blocks into the output
            if i > 0:
                cost *= 1.1       # blocks of a later axis are strided, slower to read and add
            if cost < best:
                best, choice = cost, (i, step)
    return choice


def overlap_add(a, b, axes, starts, lengths, workers, block, step):
    """:func:`convolve_window` by overlap-add along ``axes[block]`` in steps of ``step``.

    ``a`` is cut into blocks of ``step`` along that axis; each block's full
    convolution with ``b`` (through the kernel spectrum computed once) is
    added into the output window.
    """
    real = a.dtype.kind == "f" and b.dtype.kind == "f"
    ax = axes[block]
    n, k = a.shape[ax], b.shape[ax]
    s2 = [b.shape[x] for x in axes]
    bs1 = [a.shape[x] for x in axes]
    bs1[block] = step
    bst, blen = list(starts), list(lengths)
    bst[block], blen[block] = 0, step + k - 1
    sizes = fft_lengths(bs1, s2, bst, blen, real)
    B = forward(b, axes, sizes, real, workers)
    out_shape = [max(p, q) for p, q in zip(a.shape, b.shape)]    # broadcast axes
    for x, ln in zip(axes, lengths):
        out_shape[x] = ln
    out = np.zeros(out_shape, np.result_type(a.dtype, b.dtype))
    lo, hi = starts[block], starts[block] + lengths[block]
    for first in range(0, n, step):
        # the block's full convolution covers [first, first + step + k - 1)
        begin, end = max(first, lo), min(first + step + k - 1, hi)
        if begin >= end:
            continue
        A = forward(a[_window(a.ndim, ax, first, step)], axes, sizes, real, workers)
        y = inverse(multiply(A, B, b_reused=True), axes, sizes, bst, blen, real, workers)
        out[_window(out.ndim, ax, begin - lo, end - begin)] += \
            y[_window(y.ndim, ax, begin - first, end - begin)]
    return out
