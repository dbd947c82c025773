"""Layer classes: Conv1d/2d/3d and ConvTranspose1d/2d/3d with a manual backward.

A layer stores its hyper-parameters and parameters, calls ``functional`` in
``forward`` and ``grad`` in ``backward``.  What ``forward`` keeps for
``backward``: the input (a private copy unless converting it to the compute
dtype already made one, so changing the caller's array in place afterwards
cannot corrupt the gradients), a copy of the weight it used, and the shapes.
"""
import math
from collections import namedtuple
from collections.abc import Mapping

import numpy as np

from . import functional as F
from . import grad as G
from ._args import (PADDING_MODES, SUPPORTED_DTYPES, as_array, check_choice, check_input,
                    expand, resolve_padding)
from ._fastpath import copy_array
from ._threads import get_num_threads

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d"]


#: What ``load_state_dict`` returns: lists of full keys, as torch's namesake.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

PARALLEL_COPY_BYTES = 1 << 22   # below 4 MiB one thread copies before a team would start


def _private_copy(a):
    """A private C-contiguous copy of ``a``: on every thread when it is large (the
    input a layer keeps for ``backward``: 2.3 ms of a 12 ms 1x1 layer call on
    one thread, 1.3-1.7 on two)."""
    if a.nbytes < PARALLEL_COPY_BYTES or not a.flags.c_contiguous:
        return np.array(a, order="C", copy=True)
    return copy_array(a, get_num_threads())


def _positive_int(value, name, cls):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{cls}: expected {name} to be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{cls}: expected {name} >= 1, got {value}")
    return int(value)


def _make_rng(rng, cls):
    if rng is None or isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"{cls}: expected rng to be None, an int seed or a numpy.random.Generator, "
                    f"got {type(rng).__name__}")


class _ConvNd:
    """Shared machinery of the six layers; subclasses set ``_nd`` and ``_transposed``."""

    _nd = 0
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", dtype=np.float32,
                 rng=None, output_padding=0):
        cls, nd = type(self).__name__, self._nd
        self.in_channels = _positive_int(in_channels, "in_channels", cls)
        self.out_channels = _positive_int(out_channels, "out_channels", cls)
        self.groups = _positive_int(groups, "groups", cls)
        for name, channels in (("in_channels", self.in_channels),
                               ("out_channels", self.out_channels)):
            if channels % self.groups:
                raise ValueError(f"{cls}: expected {name} divisible by groups={self.groups}, "
                                 f"got {channels}")
        self.kernel_size = expand(kernel_size, nd, "kernel_size", cls, minimum=1)
        self.stride = expand(stride, nd, "stride", cls, minimum=1)
        self.dilation = expand(dilation, nd, "dilation", cls, minimum=1)
        self.padding_mode = check_choice(padding_mode, PADDING_MODES, "padding_mode", cls)
        # Validate padding once (strings, 'same' with stride > 1, negatives); keep
        # PyTorch's attribute form: a string stays a string, an int becomes a tuple.
        resolve_padding(padding, nd, self.kernel_size, self.stride, self.dilation, cls,
                        allow_strings=not self._transposed)
        self.padding = padding if isinstance(padding, str) else expand(padding, nd, "padding",
                                                                       cls, minimum=0)
        if self._transposed:
            if self.padding_mode != "zeros":
                raise ValueError(f"{cls}: only padding_mode='zeros' is supported for transposed "
                                 f"convolution (as in PyTorch), got {padding_mode!r}")
            self.output_padding = expand(output_padding, nd, "output_padding", cls, minimum=0)
            for op, s, d in zip(self.output_padding, self.stride, self.dilation):
                if op >= s and op >= d:
                    raise ValueError(f"{cls}: expected output_padding smaller than stride or "
                                     f"dilation, got output_padding {self.output_padding}, "
                                     f"stride {self.stride}, dilation {self.dilation}")
        else:
            self.output_padding = (0,) * nd
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"{cls}: expected dtype to be one of float32, float64, complex64, "
                            f"complex128, got {dtype!r}") from None
        if self.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{cls}: expected dtype to be one of float32, float64, complex64, "
                            f"complex128, got {self.dtype}")

        if self._transposed:
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        # PyTorch's default: kaiming_uniform(a=sqrt(5)) == U(-b, b), b = 1/sqrt(fan_in).
        bound = 1.0 / math.sqrt(shape[1] * math.prod(self.kernel_size))
        generator = _make_rng(rng, cls)
        self.weight = self._uniform(generator, shape, bound)
        self.bias = self._uniform(generator, (self.out_channels,), bound) if bias else None
        self.zero_grad()
        self._cache = None

    def _uniform(self, generator, shape, bound):
        draw = generator.uniform(-bound, bound, shape)
        if self.dtype.kind == "c":
            draw = draw + 1j * generator.uniform(-bound, bound, shape)
        return draw.astype(self.dtype)

    # -- forward / backward -------------------------------------------------------------

    def _conv_kwargs(self):
        kw = dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                  groups=self.groups)
        if self._transposed:
            kw["output_padding"] = self.output_padding
        return kw

    def forward(self, input):
        """Run the convolution and keep what :meth:`backward` needs.

        Parameters
        ----------
        input : array_like, shape (N, C_in, *spatial) or (C_in, *spatial)

        Returns
        -------
        ndarray, shape (N, C_out, *spatial_out) or (C_out, *spatial_out)
        """
        cls = type(self).__name__
        x = as_array(input, "input", cls)
        if x.dtype.kind == "c" and self.dtype.kind != "c":
            raise TypeError(f"{cls}: expected real input for a {self.dtype} layer, got {x.dtype}")
        check_input(x, self._nd, cls)
        saved = np.ascontiguousarray(x)
        # Keep a private copy unless converting already made one: the caller (or a
        # torch tensor / memoryview that x merely views) may change before backward.
        private = saved is not input and saved.flags.owndata and not (
            isinstance(input, np.ndarray) and np.may_share_memory(saved, input))
        if not private:
            saved = _private_copy(saved)
        weight = _private_copy(self.weight)
        if self._transposed:
            fn = getattr(F, f"conv_transpose{self._nd}d")
            y = fn(saved, weight, self.bias, **self._conv_kwargs())
        else:
            fn = getattr(F, f"conv{self._nd}d")
            y = fn(saved, weight, self.bias, padding_mode=self.padding_mode,
                   **self._conv_kwargs())
        self._cache = (saved, weight, y.shape)
        return y

    __call__ = forward

    def backward(self, grad_output):
        """Gradient with respect to the last forward's input; accumulates parameter grads.

        Parameters
        ----------
        grad_output : array_like, the shape of the last forward's output

        Returns
        -------
        ndarray, the shape of the last forward's input
        """
        cls = type(self).__name__
        if self._cache is None:
            raise RuntimeError(f"{cls}: backward() called before forward()")
        x, weight, y_shape = self._cache
        g = as_array(grad_output, "grad_output", cls)
        if g.dtype.kind == "c" and self.dtype.kind != "c":
            raise TypeError(f"{cls}: expected a real grad_output for a {self.dtype} layer, "
                            f"got {g.dtype}")
        if g.shape != y_shape:
            raise ValueError(f"{cls}: expected grad_output of shape {y_shape} (the last "
                             f"forward's output), got {g.shape}")
        kw = self._conv_kwargs()
        if self._transposed:
            grad_input = getattr(G, f"conv_transpose{self._nd}d_input")(x.shape, weight, g, **kw)
            grad_weight = getattr(G, f"conv_transpose{self._nd}d_weight")(x, weight.shape, g,
                                                                         **kw)
        else:
            kw["padding_mode"] = self.padding_mode
            grad_input = getattr(G, f"conv{self._nd}d_input")(x.shape, weight, g, **kw)
            grad_weight = getattr(G, f"conv{self._nd}d_weight")(x, weight.shape, g, **kw)
        self.weight_grad += grad_weight.astype(self.dtype, copy=False)
        if self.bias is not None:
            self.bias_grad += G.conv_bias(g, self._nd).astype(self.dtype, copy=False)
        return grad_input

    def zero_grad(self):
        """Set ``weight_grad`` and ``bias_grad`` to zero."""
        self.weight_grad = np.zeros_like(self.weight)
        self.bias_grad = None if self.bias is None else np.zeros_like(self.bias)

    # -- parameters ---------------------------------------------------------------------

    def named_parameters(self):
        """Yield (name, array) for each parameter; its gradient is ``<name>_grad``."""
        yield "weight", self.weight
        if self.bias is not None:
            yield "bias", self.bias

    def parameters(self):
        """Yield each parameter array (updating it in place updates the layer)."""
        for _, p in self.named_parameters():
            yield p

    def state_dict(self):
        """Copies of the parameters: ``{'weight': ..., 'bias': ...}`` (no 'bias' if bias=False)."""
        return {name: p.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict, prefix="", strict=True):
        """Load parameters from a mapping of arrays (anything ``np.asarray`` takes).

        Values are cast to the layer's dtype (a float16 or bfloat16 checkpoint
        loads into a float32 layer) and copied; on any error the layer is
        left unchanged.

        Parameters
        ----------
        state_dict : mapping of str -> array_like
            E.g. a whole model's weights from :func:`fastconv.load_state_dict`.
        prefix : str, default ""
            This layer's keys are ``prefix + 'weight'`` and ``prefix + 'bias'``
            (``"encoder.conv1."`` for the layer that torch calls
            ``model.encoder.conv1``).  Keys that do not start with the prefix
            belong to other layers and are ignored.
        strict : bool, default True
            Raise ``ValueError`` if a parameter is missing or a key under the
            prefix is not a parameter of this layer (with the default
            ``prefix=""``: any key but ``weight`` and ``bias``).  With False,
            load what is there and leave the rest as it was.

        Returns
        -------
        namedtuple (missing_keys, unexpected_keys)
            Full keys, as ``torch.nn.Module.load_state_dict`` returns them.
        """
        cls = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{cls}: expected state_dict to be a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"{cls}: expected prefix to be a str, got {type(prefix).__name__}")
        if not isinstance(strict, (bool, np.bool_)):
            raise TypeError(f"{cls}: expected strict to be a bool, got {strict!r}")
        own = {prefix + name: p for name, p in self.named_parameters()}
        under = [k for k in state_dict if not prefix or isinstance(k, str) and
                 k.startswith(prefix)]
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in under if key not in own]
        if strict and (missing or unexpected):
            hint = ""
            if prefix and not under:
                some = [k for k, _ in zip(state_dict, range(4))]
                hint = f"; no key starts with prefix {prefix!r} (keys look like {some})"
            raise ValueError(f"{cls}: state_dict keys do not match: missing {missing}, "
                             f"unexpected {sorted(unexpected, key=str)}{hint}")
        loaded = {}
        for key, p in own.items():
            if key not in state_dict:
                continue
            value = as_array(state_dict[key], key, cls)
            if value.shape != p.shape:
                raise ValueError(f"{cls}: expected {key} of shape {p.shape}, got {value.shape}")
            if value.dtype.kind == "c" and self.dtype.kind != "c":
                raise TypeError(f"{cls}: cannot load complex {key} ({value.dtype}) into a "
                                f"{self.dtype} layer")
            loaded[key[len(prefix):]] = np.array(value, dtype=self.dtype, copy=True)
        for name, value in loaded.items():
            setattr(self, name, value)
        return IncompatibleKeys(missing, unexpected)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None          # activations are not part of a saved layer
        return state

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * len(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


_CONV_DOC = """Applies a {nd}-D convolution over an input of several channels, as ``torch.nn.Conv{nd}d``.

``out[n, j] = bias[j] + sum_k weight[j, k] (star) input[n, g(j) * C_in/groups + k]``
(cross-correlation), with output size per spatial dim
``floor((L + 2p - d (k - 1) - 1) / s) + 1``.

Parameters
----------
in_channels, out_channels : int
kernel_size : int or tuple of {nd} ints
stride, dilation : int or tuple of {nd} ints, default 1
padding : int, tuple of {nd} ints, 'valid' or 'same', default 0
groups : int, default 1
bias : bool, default True
padding_mode : {{'zeros', 'reflect', 'replicate', 'circular'}}, default 'zeros'
dtype : float32, float64, complex64 or complex128, default float32
rng : None, int or numpy.random.Generator
    Source of the initial weights: ``U(-b, b)``, ``b = 1/sqrt(C_in/groups * prod(kernel_size))``.

Attributes
----------
weight : ndarray, shape (out_channels, in_channels / groups, *kernel_size)
bias : ndarray of shape (out_channels,), or None
weight_grad, bias_grad : ndarray
    Accumulated by :meth:`backward`; reset by :meth:`zero_grad`.

Examples
--------
>>> import numpy as np, fastconv as fc
>>> layer = fc.Conv{nd}d(2, 4, 3, padding=1, rng=0)
>>> y = layer(np.ones((1, 2{ones}), np.float32))
>>> grad_input = layer.backward(np.ones_like(y))
>>> y.shape == (1, 4{ones})
True
"""

_TRANSPOSE_DOC = """Applies a {nd}-D transposed convolution, as ``torch.nn.ConvTranspose{nd}d``.

Output size per spatial dim: ``(L - 1) s - 2p + d (k - 1) + output_padding + 1``.
Only ``padding_mode='zeros'`` is supported, as in PyTorch.

Parameters
----------
in_channels, out_channels : int
kernel_size : int or tuple of {nd} ints
stride, padding, output_padding, dilation : int or tuple of {nd} ints
groups : int, default 1
bias : bool, default True
dtype : float32, float64, complex64 or complex128, default float32
rng : None, int or numpy.random.Generator
    ``U(-b, b)``, ``b = 1/sqrt(C_out/groups * prod(kernel_size))`` (PyTorch's fan-in).

Attributes
----------
weight : ndarray, shape (in_channels, out_channels / groups, *kernel_size)
bias : ndarray of shape (out_channels,), or None
weight_grad, bias_grad : ndarray
"""


def _layer(name, nd, transposed):
    if transposed:
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                     output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                     dtype=np.float32, rng=None):
            _ConvNd.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                             dilation, groups, bias, padding_mode, dtype, rng, output_padding)
    else:
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                     dilation=1, groups=1, bias=True, padding_mode="zeros", dtype=np.float32,
                     rng=None):
            _ConvNd.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                             dilation, groups, bias, padding_mode, dtype, rng)
    doc = (_TRANSPOSE_DOC if transposed else _CONV_DOC).format(nd=nd, ones=", 5" * nd)
    return type(name, (_ConvNd,), {"_nd": nd, "_transposed": transposed, "__init__": __init__,
                                   "__doc__": doc, "__module__": __name__})


Conv1d = _layer("Conv1d", 1, False)
Conv2d = _layer("Conv2d", 2, False)
Conv3d = _layer("Conv3d", 3, False)
ConvTranspose1d = _layer("ConvTranspose1d", 1, True)
ConvTranspose2d = _layer("ConvTranspose2d", 2, True)
ConvTranspose3d = _layer("ConvTranspose3d", 3, True)
