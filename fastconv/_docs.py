"""Docstrings of the public functions: each parameter described once.

Templates use ``{placeholders}``: the shared parameter blocks below and the
names of the spatial dims for 1-D, 2-D and 3-D (``{sp}``, ``{k}``, ``{osp}``).
:func:`document` fills a template for one dimensionality (SciPy's
``docfiller`` does the same for ``scipy.ndimage``).
"""

PARAMS = {
    "stride_dilation": """stride, dilation : int or tuple of {nd} ints, default 1""",
    "groups": """groups : int, default 1
    Input and output channels split into this many independent groups.""",
    "padding": """padding : int, tuple of {nd} ints, 'valid' or 'same', default 0
    'same' needs stride 1; an odd total padding puts the extra cell on the right.""",
    "padding_mode": """padding_mode : {{'zeros', 'reflect', 'replicate', 'circular'}}, default 'zeros'
    As ``torch.nn.Conv{nd}d(padding_mode=...)``.""",
    "algorithm": """algorithm : {{'auto', 'direct', 'im2col', 'fft'}}, default 'auto'
    Family of kernels to use; 'auto' picks the cheapest implementation that
    applies (``fastconv.explain`` shows which and why).  The choice reads one
    sample's shape, never the batch size or the thread count.""",
    "out": """out : ndarray, optional
    C-contiguous array of the output shape and result dtype, filled in place.""",
    "grad_output": """grad_output : array_like
    Gradient with respect to the forward output (its shape).""",
}

CONV = """{nd}-D convolution (cross-correlation), as ``torch.nn.functional.conv{nd}d``.

Parameters
----------
input : array_like, shape (N, C_in, {sp}) or (C_in, {sp})
weight : array_like, shape (C_out, C_in / groups, {k})
bias : array_like, shape (C_out,), optional
{stride_dilation}
{padding}
{groups}
{padding_mode}
{algorithm}
{out}

Returns
-------
ndarray, shape (N, C_out, {osp}) or (C_out, {osp})
    ``O = floor((L + 2p - d (k - 1) - 1) / s) + 1`` per spatial dim; dtype
    ``np.result_type(input, weight, bias)`` (integers -> float64, float16 -> float32).

Examples
--------
>>> import numpy as np, fastconv as fc
>>> fc.conv{nd}d(np.ones((1, 2{ones})), np.ones((3, 2{kones}))).shape
(1, 3{oshape})
"""

TRANSPOSE = """{nd}-D transposed convolution, as ``torch.nn.functional.conv_transpose{nd}d``.

Parameters
----------
input : array_like, shape (N, C_in, {sp}) or (C_in, {sp})
weight : array_like, shape (C_in, C_out / groups, {k})
bias : array_like, shape (C_out,), optional
stride, padding, output_padding, dilation : int or tuple of {nd} ints
    ``output_padding`` must be smaller than stride or dilation.
{groups}
{algorithm}
{out}

Returns
-------
ndarray, shape (N, C_out, {osp}) or (C_out, {osp})
    ``O = (L - 1) s - 2p + d (k - 1) + output_padding + 1`` per spatial dim.
"""

CONV_INPUT = """Gradient of conv{nd}d with respect to its input, as ``torch.nn.grad.conv{nd}d_input``.

Parameters
----------
input_shape : tuple of ints
    Shape of the forward input, (N, C_in, {sp}) or (C_in, {sp}).
weight : array_like, shape (C_out, C_in / groups, {k})
{grad_output}
{stride_dilation}
{padding}
{groups}
{padding_mode}
    The gradient of the padded border is folded back onto the input.

Returns
-------
ndarray of shape ``input_shape``
"""

CONV_WEIGHT = """Gradient of conv{nd}d with respect to its weight, as ``torch.nn.grad.conv{nd}d_weight``.

Parameters
----------
input : array_like, shape (N, C_in, {sp}) or (C_in, {sp})
weight_shape : tuple of ints
    (C_out, C_in / groups, {k}).
{grad_output}
{stride_dilation}
{padding}
{groups}
{padding_mode}

Returns
-------
ndarray of shape ``weight_shape``
    Summed over the batch in a fixed order (the same bits for any thread count).
"""

TRANSPOSE_INPUT = """Gradient of conv_transpose{nd}d with respect to its input.

Parameters
----------
input_shape : tuple of ints
    Shape of the forward input, (N, C_in, {sp}) or (C_in, {sp}).
weight : array_like, shape (C_in, C_out / groups, {k})
{grad_output}
stride, padding, output_padding, dilation : int or tuple of {nd} ints
{groups}

Returns
-------
ndarray of shape ``input_shape``
"""

TRANSPOSE_WEIGHT = """Gradient of conv_transpose{nd}d with respect to its weight.

Parameters
----------
input : array_like, shape (N, C_in, {sp}) or (C_in, {sp})
weight_shape : tuple of ints
    (C_in, C_out / groups, {k}).
{grad_output}
stride, padding, output_padding, dilation : int or tuple of {nd} ints
{groups}

Returns
-------
ndarray of shape ``weight_shape``
    NaN in the taps where an inf/NaN input cell meets a cropped output
    position, as PyTorch (which multiplies it by the zero there).
"""

_NAMES = {1: ("L", "kL", "L_out"), 2: ("H, W", "kH, kW", "H_out, W_out"),
          3: ("D, H, W", "kD, kH, kW", "D_out, H_out, W_out")}


def document(func, template, nd):
    """Set ``func.__doc__`` from ``template`` for ``nd`` spatial dims; return ``func``."""
    sp, k, osp = _NAMES[nd]
    names = dict(nd=nd, sp=sp, k=k, osp=osp, ones=", 5" * nd, kones=", 3" * nd,
                 oshape=", 3" * nd)
    params = {key: text.format(**names) for key, text in PARAMS.items()}
    func.__doc__ = template.format(**names, **params)
    return func
