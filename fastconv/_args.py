"""The one argument normaliser behind every public convolution function.

Each rule (tuples, padding strings, padding modes, dtypes, ``out=``) lives
here once; functional, grad and layers all call it.  Errors name the
argument, the rule and the value received.
"""
import numbers
from dataclasses import dataclass, replace

import numpy as np

from . import _fastpath

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
SUPPORTED_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))
_SUPPORTED_NAMES = "float32, float64, complex64, complex128"
_MAX_INDEX = 2**48        # sizes, strides and paddings beyond this overflow index math
_KERNEL_NAMES = {1: "kL", 2: "kH, kW", 3: "kD, kH, kW"}


def as_array(value, name, op):
    """``np.asarray(value)`` with a numeric dtype, else TypeError naming ``name``."""
    if type(value) is np.ndarray and value.dtype.kind in "fc":      # fast path
        return value
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{op}: {name} must be array-like, got {type(value).__name__}: {exc}") from exc
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{op}: {name} has dtype {arr.dtype}, expected a numeric array "
                        f"({_SUPPORTED_NAMES}; integers and bool compute in float64)")
    return arr


def result_dtype(op, *arrays):
    """``np.result_type`` of the arrays, mapped onto the dtypes the kernels support.

    Integer and bool results become float64, float16 becomes float32.
    """
    dt = np.result_type(*[a for a in arrays if a is not None])
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"{op}: unsupported dtype {dt}; supported dtypes are {_SUPPORTED_NAMES}")
    return dt


def _is_int(v):
    if type(v) is int:          # the common case, without the slower ABC check
        return True
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def expand(value, nd, name, op, minimum):
    """An int, or a sequence of 1 or ``nd`` ints, as a tuple of ``nd`` ints >= minimum."""
    if type(value) is int and minimum <= value <= _MAX_INDEX:     # fast path
        return (value,) * nd
    if _is_int(value):
        values = (int(value),) * nd
    elif isinstance(value, (tuple, list, np.ndarray)) and all(_is_int(v) for v in value):
        values = tuple(int(v) for v in value)
        if len(values) == 1:
            values = values * nd
        if len(values) != nd:
            raise ValueError(f"{op}: expected {name} to be an int or a tuple of {nd} ints, "
                             f"got {value!r} ({len(values)} values)")
    else:
        raise TypeError(f"{op}: expected {name} to be an int or a tuple of {nd} ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{op}: expected {name} >= {minimum} in every dimension, got {value!r}")
    if any(v > _MAX_INDEX for v in values):
        raise ValueError(f"{op}: expected {name} <= 2**48 in every dimension, got {value!r}")
    return values


def resolve_padding(padding, nd, kernel, stride, dilation, op, allow_strings=True):
    """Padding as a tuple of (left, right) pairs, one per spatial dim.

    'same' pads d*(k-1) in total, the extra cell of an odd total on the right
    (as PyTorch); it requires stride 1.
    """
    if isinstance(padding, str):
        if not allow_strings:
            raise ValueError(f"{op}: expected padding to be an int or a tuple of {nd} ints "
                             f"(padding strings are for convolution only), got {padding!r}")
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' requires stride 1 in every dimension, "
                                 f"got stride {stride}")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(f"{op}: expected padding to be 'valid', 'same', an int or a tuple of "
                         f"{nd} ints, got {padding!r}")
    return tuple((p, p) for p in expand(padding, nd, "padding", op, minimum=0))


def check_choice(value, choices, name, op):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{op}: expected {name} to be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value


@dataclass
class ConvProblem:
    """A validated convolution call.  Arrays are the caller's, not yet converted."""

    op: str
    nd: int
    transposed: bool
    batched: bool
    x: np.ndarray            # (N, C_in, *spatial): a view of the caller's input
    w: np.ndarray
    bias: object             # ndarray or None
    stride: tuple
    dilation: tuple
    pads: tuple              # ((left, right), ...) per spatial dim
    output_padding: tuple
    groups: int
    padding_mode: str
    dtype: np.dtype
    out_shape: tuple         # batched output shape

    @property
    def kernel(self):
        return self.w.shape[2:]

    @property
    def user_out_shape(self):
        return self.out_shape if self.batched else self.out_shape[1:]


def check_input(x, nd, op, name="input"):
    """(N, C, *spatial) view of x and whether it was batched."""
    if x.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"{op}: expected {name} with {nd + 1} (unbatched) or {nd + 2} (batched) "
                         f"dims, got {x.ndim} dims, shape {x.shape}")
    batched = x.ndim == nd + 2
    return (x if batched else x[np.newaxis]), batched


def check_weight(w, nd, op, transposed):
    if w.ndim != nd + 2:
        layout = "(C_in, C_out/groups, " if transposed else "(C_out, C_in/groups, "
        raise ValueError(f"{op}: expected weight of shape {layout}{_KERNEL_NAMES[nd]}) with "
                         f"{nd + 2} dims, got shape {w.shape}")
    if any(k < 1 for k in w.shape[2:]):
        raise ValueError(f"{op}: expected kernel size >= 1 in every dimension, "
                         f"got weight shape {w.shape}")


def check_groups(groups, op):
    if not _is_int(groups):
        raise TypeError(f"{op}: expected groups to be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{op}: expected groups >= 1, got {groups}")
    return int(groups)


# Validated calls, by everything validation reads (shapes, dtypes, option values
# and their exact types): a repeated call skips straight to the result.  Only
# plain ints, strings and tuples of ints take part, so a value that merely
# compares equal (True == 1, 1.0 == 1) can never reuse another call's verdict.
_VALIDATED = {}
_VALIDATED_MAX = 512


def _plain(value):
    if type(value) is int or type(value) is str:
        return True
    return type(value) is tuple and all(type(v) is int for v in value)


def _validation_key(op, nd, input, weight, bias, transposed, options):
    if type(input) is not np.ndarray or type(weight) is not np.ndarray or not (
            bias is None or type(bias) is np.ndarray) or not all(map(_plain, options)):
        return None
    b = None if bias is None else (bias.shape, bias.dtype)
    return (op, nd, bool(transposed), input.shape, input.dtype, weight.shape, weight.dtype, b,
            tuple((type(v), v) for v in options))


# -- the per-call fast path ----------------------------------------------------------------
#
# The public functions remember, per call signature, an object that holds
# everything validation and selection worked out (see functional.py, grad.py).
# A signature is what validation reads: each array's type, shape, dtype and
# strides (strides say whether it can be used in place) and every option with
# its exact type, so that a value that merely compares equal (True == 1,
# 1.0 == 1, a tuple holding a bool) never reuses another call's verdict.

# call_signature(tag, arrays, options) builds the key: in Cython, it runs on every call.
call_signature = _fastpath.call_signature


class CallCache:
    """Prepared calls by :func:`call_signature`; cleared when full (bounded memory)."""

    def __init__(self, maxsize=512):
        self._calls, self._maxsize = {}, maxsize

    def get(self, key):
        try:
            return self._calls.get(key)
        except TypeError:               # an unhashable option (an ndarray stride, ...)
            return None

    def put(self, key, call):
        if key is None:
            return
        try:
            hash(key)
        except TypeError:
            return
        if len(self._calls) >= self._maxsize:
            self._calls.clear()
        self._calls[key] = call

    def clear(self):
        self._calls.clear()


def option_keywords(op, options):
    """parse_conv's keyword arguments from a public function's own options, in its order:
    (stride, padding, dilation, groups, padding_mode) for a convolution ('conv*'),
    (stride, padding, output_padding, groups, dilation) for 'conv_transpose*'."""
    if op.startswith("conv_transpose"):
        stride, padding, output_padding, groups, dilation = options
        return dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                    transposed=True, output_padding=output_padding)
    stride, padding, dilation, groups, padding_mode = options
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                padding_mode=padding_mode)


def parse_conv(op, nd, input, weight, bias, stride, padding, dilation, groups,
               padding_mode="zeros", transposed=False, output_padding=0):
    """Validate every argument of a (transposed) convolution; return a ConvProblem."""
    key = _validation_key(op, nd, input, weight, bias, transposed,
                          (stride, padding, dilation, groups, padding_mode, output_padding))
    known = _VALIDATED.get(key) if key is not None else None
    if known is not None:
        return replace(known, x=input if known.batched else input[np.newaxis], w=weight,
                       bias=bias)
    prob = _parse_conv(op, nd, input, weight, bias, stride, padding, dilation, groups,
                       padding_mode, transposed, output_padding)
    if key is not None:
        if len(_VALIDATED) >= _VALIDATED_MAX:
            _VALIDATED.clear()
        _VALIDATED[key] = replace(prob, x=None, w=None, bias=None)
    return prob


def _parse_conv(op, nd, input, weight, bias, stride, padding, dilation, groups,
                padding_mode, transposed, output_padding):
    x = as_array(input, "input", op)
    w = as_array(weight, "weight", op)
    b = None if bias is None else as_array(bias, "bias", op)
    dtype = result_dtype(op, x, w, b)
    x, batched = check_input(x, nd, op)
    check_weight(w, nd, op, transposed)
    groups = check_groups(groups, op)
    stride = expand(stride, nd, "stride", op, minimum=1)
    dilation = expand(dilation, nd, "dilation", op, minimum=1)
    padding_mode = check_choice(padding_mode, PADDING_MODES, "padding_mode", op)
    kernel = w.shape[2:]
    c_in = x.shape[1]
    if transposed:
        if w.shape[0] % groups:
            raise ValueError(f"{op}: expected weight.shape[0] (in_channels) divisible by "
                             f"groups={groups}, got weight {w.shape}")
        if c_in != w.shape[0]:
            raise ValueError(f"{op}: expected input with {w.shape[0]} channels "
                             f"(weight {w.shape}), got {c_in}")
        c_out = w.shape[1] * groups
    else:
        if w.shape[0] % groups:
            raise ValueError(f"{op}: expected weight.shape[0] (out_channels) divisible by "
                             f"groups={groups}, got weight {w.shape}")
        if c_in != w.shape[1] * groups:
            raise ValueError(f"{op}: expected input with {w.shape[1] * groups} channels "
                             f"(groups={groups}, weight {w.shape}), got {c_in}")
        c_out = w.shape[0]
    if b is not None and b.shape != (c_out,):
        raise ValueError(f"{op}: expected bias of shape ({c_out},) (out_channels), got {b.shape}")

    pads = resolve_padding(padding, nd, kernel, stride, dilation, op, allow_strings=not transposed)
    spatial = x.shape[2:]
    if any(n == 0 for n in spatial):
        raise ValueError(f"{op}: expected input with non-zero spatial sizes, got shape "
                         f"{x.shape}")
    if transposed:
        if padding_mode != "zeros":
            raise ValueError(f"{op}: only padding_mode='zeros' is supported for transposed "
                             f"convolution, got {padding_mode!r}")
        output_padding = expand(output_padding, nd, "output_padding", op, minimum=0)
        for op_, s, d in zip(output_padding, stride, dilation):
            if op_ >= s and op_ >= d:
                raise ValueError(f"{op}: expected output_padding smaller than stride or dilation, "
                                 f"got output_padding {output_padding}, stride {stride}, "
                                 f"dilation {dilation}")
        out_spatial = tuple((n - 1) * s - l - r + d * (k - 1) + op_ + 1
                            for n, s, (l, r), d, k, op_
                            in zip(spatial, stride, pads, dilation, kernel, output_padding))
    else:
        output_padding = (0,) * nd
        check_padding_mode(padding_mode, pads, spatial, op)
        for i, (n, (l, r), d, k) in enumerate(zip(spatial, pads, dilation, kernel)):
            if n + l + r < d * (k - 1) + 1:
                raise ValueError(f"{op}: kernel size {k} (dilation {d}: extent {d * (k - 1) + 1}) "
                                 f"is larger than the padded input size {n + l + r} in spatial "
                                 f"dim {i} (input {x.shape}, padding {pads[i]})")
        out_spatial = tuple((n + l + r - d * (k - 1) - 1) // s + 1
                            for n, s, (l, r), d, k in zip(spatial, stride, pads, dilation, kernel))
    if any(o < 1 for o in out_spatial):
        raise ValueError(f"{op}: computed output size {out_spatial} has a dimension below 1 "
                         f"(input {x.shape}, weight {w.shape}, stride {stride}, padding "
                         f"{padding}, dilation {dilation}, output_padding {output_padding})")
    return ConvProblem(op, nd, transposed, batched, x, w, b, stride, dilation, pads,
                       output_padding, groups, padding_mode, dtype,
                       (x.shape[0], c_out) + out_spatial)


def check_padding_mode(mode, pads, spatial, op):
    """Reflect needs pad < size; circular needs pad <= size (PyTorch's limits)."""
    for i, (n, (l, r)) in enumerate(zip(spatial, pads)):
        if mode == "reflect" and max(l, r) >= n:
            raise ValueError(f"{op}: padding_mode='reflect' needs padding smaller than the input "
                             f"size, got padding {(l, r)} for size {n} in spatial dim {i}")
        if mode == "circular" and max(l, r) > n:
            raise ValueError(f"{op}: padding_mode='circular' needs padding no larger than the "
                             f"input size, got padding {(l, r)} for size {n} in spatial dim {i}")
        if mode == "replicate" and n == 0 and l + r > 0:
            raise ValueError(f"{op}: padding_mode='replicate' needs a non-empty input, got size "
                             f"0 in spatial dim {i}")


def check_out(out, shape, dtype, op):
    """``out=`` must be a writable C-contiguous ndarray of the exact shape and dtype."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{op}: expected out to be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{op}: expected out of shape {tuple(shape)}, got {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"{op}: expected out of dtype {dtype} (the result dtype), got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{op}: expected a C-contiguous out array, got strides {out.strides}")
    if not out.flags.writeable:
        raise ValueError(f"{op}: expected a writable out array, got a read-only one")
    return out


def shape5(shape, nd):
    """An (N, C, *spatial) shape as (N, C, D, H, W) with leading unit dims."""
    return tuple(shape[:2]) + (1,) * (3 - nd) + tuple(shape[2:])


def to_5d(a, nd):
    """View an (N, C, *spatial) array as (N, C, D, H, W) with leading unit dims."""
    return a.reshape(shape5(a.shape, nd))


def pad3(values, nd, fill):
    """Left-fill a per-dim tuple to 3 entries."""
    return (fill,) * (3 - nd) + tuple(values)
