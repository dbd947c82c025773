"""Fuzzing with arbitrary arguments (issue 8): shapes (zero-size dims included),
dtypes (object, str, bool, ints, float16, long double, complex), strides /
paddings / dilations / output paddings / groups (negative, zero, huge: 2**31,
2**40, 2**48, 2**63, floats, strings, None, bools, tuples of the wrong
length), memory layouts (Fortran, negative strides, non-contiguous,
broadcast, lists) and ``out=`` (wrong shape / dtype, non-contiguous,
read-only, overlapping an input) for conv*d, conv_transpose*d, every
``fastconv.grad`` function, ``ndimage`` and ``signal``.

The oracle for each call:

* only documented exceptions come out: ValueError and TypeError (plus
  RuntimeError where SciPy's ndimage raises it), and MemoryError only when an
  output -- or a documented intermediate (the explicitly padded input of the
  reflect / replicate / circular modes, the FFT algorithm's transforms) --
  would need more than a terabyte; and it comes at once;
* arguments the contract (SPEC.md section 4) rejects are rejected; arguments
  it accepts are accepted;
* inputs are never modified;
* results match ``tests/reference.py`` (data are small integers, so non-FFT
  results must match exactly; FFT within rounding); gradients satisfy the
  adjoint identity <g, A p> == <A^H g, p> exactly for random integer probes;
  ``out=`` is pre-filled with NaN, so an element left unwritten shows up;
  ndimage / signal match SciPy.

Calls are described as JSON-able "specs" (see :func:`materialize`) so that
failures can be stored in ``tests/fuzz_corpus/*.json`` (with a "note") and
replayed as regression tests.  Generated examples and the corpus run in child
processes, which record each spec before running it: a crash fails one test and
names the spec, instead of killing the test run.  A call that runs for more than
a minute is a hang (SIGALRM).

* CI: 310 generated examples (160 convolution, 90 gradient, 60 filter calls,
  derandomized, so every run is the same) plus the corpus, ~15 s.
* Longer: ``FASTCONV_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py`` (random
  seeds; N examples per target), or ``pytest -m slow tests/test_fuzz.py``.
* Under ASan/UBSan: ``FASTCONV_SANITIZE_TESTS=test_fuzz.py
  FASTCONV_FUZZ_EXAMPLES=3000 .ci/sanitize``.
"""
import glob
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import fastconv as fc

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)
import reference  # noqa: E402

CORPUS_DIR = os.path.join(TESTS_DIR, "fuzz_corpus")
EXAMPLES = int(os.environ.get("FASTCONV_FUZZ_EXAMPLES", "0") or 0)
TB = 2**40                       # "too large to allocate" threshold, bytes
SKIP_BYTES = 256 * 2**20         # valid but too big to run in a test: skipped
CALL_TIMEOUT = 60                # seconds: a call running longer is a hang

SUPPORTED = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))
DTYPE_NAMES = ["float32", "float64", "complex64", "complex128", "float16", "bool", "int8",
               "uint8", "uint16", "int32", "int64", "uint64", "longdouble", "clongdouble",
               "object", "<U2", "|S2", "datetime64[s]"]


# ==========================================================================
# Specs: JSON-able descriptions of a call
# ==========================================================================
#
# value := null | bool | int | float | str | [value...]          (a list)
#        | {"tuple": [value...]}
#        | {"np": [dtype name, value]}                             (numpy scalar)
#        | {"ndarray_param": [int...]}                            (int64 array)
#        | {"array": {"shape": [...], "dtype": name, "layout": L, "seed": s,
#                     "nonfinite": bool}}
#        | {"object": null}                                         (a bare object())
# spec  := {"func": name, "args": [value...], "kwargs": {name: value},
#           "out": null | kind}          (kind: see _make_out)


def _array_data(shape, dtype, seed, nonfinite):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    size = math.prod(shape)
    ints = rng.integers(-3, 4, size=size)
    if dt.kind == "c":
        data = ints + 1j * rng.integers(-3, 4, size=size)
    elif dt.kind == "b":
        data = ints > 0
    elif dt.kind == "u":
        data = np.abs(ints)
    elif dt.kind in "USO":
        data = np.array([str(v) for v in ints], dtype=object)
    elif dt.kind == "M":
        data = ints
    else:
        data = ints
    if dt.kind == "O":
        arr = np.empty(size, dtype=object)
        arr[:] = list(ints)
    elif dt.kind == "M":
        arr = data.astype("datetime64[s]")
    else:
        arr = np.asarray(data).astype(dt)
    if nonfinite and dt.kind == "f" and size:
        pick = rng.integers(0, size, size=max(1, size // 8))
        arr[pick] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype=dt), size=pick.size)
    return arr.reshape(shape)


def _make_array(desc):
    shape = tuple(desc["shape"])
    dtype, layout = desc["dtype"], desc.get("layout", "C")
    seed, nonfinite = desc.get("seed", 0), desc.get("nonfinite", False)
    base = _array_data(shape, dtype, seed, nonfinite)
    if layout == "C":
        return np.ascontiguousarray(base)
    if layout == "F":
        return np.asfortranarray(base)
    if layout == "reversed":          # negative strides along every axis
        rev = np.ascontiguousarray(base[(slice(None, None, -1),) * base.ndim])
        return rev[(slice(None, None, -1),) * base.ndim]
    if base.ndim == 0:
        return base.copy()
    if layout == "strided":           # every other element of a larger array
        big = np.zeros(tuple(2 * n for n in shape), base.dtype)
        view = big[(slice(None, None, 2),) * base.ndim]
        view[...] = base
        return view
    if layout == "broadcast":         # zero strides, read-only
        if base.ndim == 0 or base.size == 0:
            return base
        return np.broadcast_to(base[(slice(0, 1),) * base.ndim], shape)
    if layout == "readonly":
        base = np.ascontiguousarray(base)
        base.flags.writeable = False
        return base
    if layout == "list":
        return base.tolist()
    raise ValueError(layout)


def materialize(value):
    if isinstance(value, list):
        return [materialize(v) for v in value]
    if isinstance(value, dict):
        (key, inner), = value.items()
        if key == "tuple":
            return tuple(materialize(v) for v in inner)
        if key == "np":
            return np.dtype(inner[0]).type(inner[1])
        if key == "ndarray_param":
            return np.array(inner, dtype=np.int64)
        if key == "array":
            return _make_array(inner)
        if key == "object":
            return object()
        raise ValueError(key)
    return value


def _arr(shape, dtype="float32", layout="C", seed=0, nonfinite=False):
    return {"array": {"shape": list(shape), "dtype": dtype, "layout": layout, "seed": seed,
                      "nonfinite": nonfinite}}


# ==========================================================================
# What the contract says about a convolution call
# ==========================================================================

class Invalid(Exception):
    """The contract rejects these arguments (ValueError or TypeError)."""


class Unclear(Exception):
    """The contract does not decide; either outcome is fine if correct."""


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _as_numeric(value):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = np.asarray(value)
    except Exception:
        raise Invalid("not array-like")
    if a.dtype.kind not in "biufc":
        raise Invalid(f"dtype {a.dtype}")
    return a


def _compute_dtype(*arrays):
    dt = np.result_type(*[a for a in arrays if a is not None])
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt == np.float16:
        return np.dtype(np.float32)
    if dt not in SUPPORTED:
        raise Invalid(f"unsupported dtype {dt}")
    return dt


def _tuple_param(value, nd, minimum):
    if isinstance(value, (bool, np.bool_)):
        raise Unclear("bool as int")
    if _is_int(value):
        values = (int(value),) * nd
    elif isinstance(value, (tuple, list, np.ndarray)):
        if isinstance(value, np.ndarray):
            if value.ndim != 1:
                raise Invalid("array param")
        items = list(value)
        if any(isinstance(v, (bool, np.bool_)) for v in items):
            raise Unclear("bool in tuple")
        if not all(_is_int(v) for v in items):
            raise Invalid("non-int in tuple")
        values = tuple(int(v) for v in items)
        if len(values) == 1 and nd > 1:
            raise Unclear("one value for several dims")
        if len(values) != nd:
            raise Invalid("tuple of the wrong length")
    else:
        raise Invalid(f"param {value!r}")
    if any(v < minimum for v in values):
        raise Invalid("param below minimum")
    if any(v > 2**48 for v in values):
        raise Unclear("huge param")        # fastconv documents a 2**48 limit
    return values


def conv_expectation(nd, x, w, b, stride, padding, dilation, groups, padding_mode,
                     transposed, output_padding):
    """(batched out shape, batched?, dtype, padded input size) or raise Invalid/Unclear."""
    x, w = _as_numeric(x), _as_numeric(w)
    b = None if b is None else _as_numeric(b)
    dtype = _compute_dtype(x, w, b)
    if x.ndim not in (nd + 1, nd + 2):
        raise Invalid("input dims")
    batched = x.ndim == nd + 2
    xs = x.shape if batched else (1,) + x.shape
    if w.ndim != nd + 2:
        raise Invalid("weight dims")
    kernel = w.shape[2:]
    if any(k < 1 for k in kernel):
        raise Invalid("empty kernel")
    if isinstance(groups, (bool, np.bool_)):
        raise Unclear("bool groups")
    if not _is_int(groups):
        raise Invalid("groups type")
    if groups < 1:
        raise Invalid("groups < 1")
    stride = _tuple_param(stride, nd, 1)
    dilation = _tuple_param(dilation, nd, 1)
    if not isinstance(padding_mode, str) or padding_mode not in (
            "zeros", "reflect", "replicate", "circular"):
        raise Invalid("padding_mode")
    c_in = xs[1]
    if w.shape[0] % groups:
        raise Invalid("groups do not divide weight.shape[0]")
    if transposed:
        if c_in != w.shape[0]:
            raise Invalid("channels")
        c_out = w.shape[1] * groups
    else:
        if c_in != w.shape[1] * groups:
            raise Invalid("channels")
        c_out = w.shape[0]
    if b is not None and b.shape != (c_out,):
        raise Invalid("bias shape")
    spatial = xs[2:]
    if isinstance(padding, str):
        if transposed or padding not in ("same", "valid"):
            raise Invalid("padding string")
        if padding == "valid":
            pads = ((0, 0),) * nd
        else:
            if any(s != 1 for s in stride):
                raise Invalid("same with stride > 1")
            pads = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                         for k, d in zip(kernel, dilation))
    else:
        pads = tuple((p, p) for p in _tuple_param(padding, nd, 0))
    if any(n == 0 for n in spatial):
        raise Invalid("empty spatial dim")
    if transposed:
        if padding_mode != "zeros":
            raise Invalid("padding_mode for transposed")
        ops = _tuple_param(output_padding, nd, 0)
        if any(o >= s and o >= d for o, s, d in zip(ops, stride, dilation)):
            raise Invalid("output_padding")
        out_sp = tuple((n - 1) * s - l - r + d * (k - 1) + o + 1 for n, s, (l, r), d, k, o
                       in zip(spatial, stride, pads, dilation, kernel, ops))
    else:
        for n, (l, r) in zip(spatial, pads):
            if padding_mode == "reflect" and max(l, r) >= n:
                raise Invalid("reflect padding")
            if padding_mode == "circular" and max(l, r) > n:
                raise Invalid("circular padding")
        for n, (l, r), d, k in zip(spatial, pads, dilation, kernel):
            if n + l + r < d * (k - 1) + 1:
                raise Invalid("kernel larger than padded input")
        out_sp = tuple((n + l + r - d * (k - 1) - 1) // s + 1 for n, s, (l, r), d, k
                       in zip(spatial, stride, pads, dilation, kernel))
    if any(o < 1 for o in out_sp):
        raise Invalid("output size < 1")
    if c_in == 0 or c_out == 0:
        raise Unclear("no channels")
    padded = math.prod(n + l + r for n, (l, r) in zip(spatial, pads))
    if transposed:
        padded = math.prod((n - 1) * s + 1 for n, s in zip(spatial, stride))
    extent = math.prod(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    return dict(out_shape=(xs[0], c_out) + out_sp, batched=batched, dtype=dtype,
                stride=stride, dilation=dilation, pads=pads, kernel=kernel,
                output_padding=ops if transposed else (0,) * nd,
                padded=padded * xs[0] * max(c_in, c_out),
                extent=extent * max(1, w.shape[0] * w.shape[1]))


# ==========================================================================
# Running a spec and checking the outcome
# ==========================================================================

CONV_FUNCS = {f"conv{nd}d": (nd, False) for nd in (1, 2, 3)}
CONV_FUNCS.update({f"conv_transpose{nd}d": (nd, True) for nd in (1, 2, 3)})
GRAD_FUNCS = {f"{kind}{nd}d_{part}": (nd, kind == "conv_transpose", part)
              for kind in ("conv", "conv_transpose") for nd in (1, 2, 3)
              for part in ("input", "weight")}
FILTER_FUNCS = ("ndimage.correlate", "ndimage.convolve", "signal.convolve",
                "signal.correlate", "signal.fftconvolve")


def _resolve(name):
    obj = fc
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _bind(func, args, kwargs):
    """Arguments by name (Python's own binding; TypeError if they do not bind)."""
    import inspect
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def _make_out(kind, shape, dtype, operand):
    if kind is None:
        return None
    if kind == "list":
        return [0.0]
    if kind == "wrong_shape":
        return np.full(tuple(shape[:-1]) + (shape[-1] + 1,), np.nan, dtype)
    if kind == "wrong_dtype":
        other = np.float64 if np.dtype(dtype) != np.float64 else np.float32
        return np.full(shape, np.nan, other)
    if kind == "noncontig":
        return np.full(tuple(shape[:-1]) + (2 * shape[-1],), np.nan, dtype)[..., ::2]
    if kind == "fortran":
        return np.asfortranarray(np.full(shape, np.nan, dtype))
    if kind == "readonly":
        out = np.full(shape, np.nan, dtype)
        out.flags.writeable = False
        return out
    if kind == "overlap":
        # the exact out= the contract asks for, but sharing memory with an operand
        size = math.prod(shape)
        if (isinstance(operand, np.ndarray) and operand.dtype == dtype and
                operand.flags.c_contiguous and operand.flags.writeable and
                operand.size >= size):
            return operand.reshape(-1)[:size].reshape(shape)
        kind = "fresh"
    if kind == "fresh":
        return np.full(shape, np.nan, dtype)
    raise ValueError(kind)


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang(f"call did not return within {CALL_TIMEOUT} s")


def _call_with_timeout(func, args, kwargs):
    """Run func; a hang raises _Hang (SIGALRM; fastconv's kernels poll signals)."""
    if threading.current_thread() is not threading.main_thread():
        return func(*args, **kwargs)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CALL_TIMEOUT)
    try:
        return func(*args, **kwargs)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _snapshot(values):
    """Byte copies of every ndarray among the arguments (to detect modification)."""
    snaps = []
    for v in values:
        if isinstance(v, np.ndarray) and v.dtype.kind != "O":
            snaps.append((v, v.copy()))
    return snaps


def _assert_unmodified(snaps, out):
    for arr, copy in snaps:
        if out is not None and isinstance(out, np.ndarray) and np.may_share_memory(arr, out):
            continue
        assert arr.tobytes() == copy.tobytes(), "an input array was modified"


def _wide(a):
    a = np.asarray(a)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def _compare(actual, expected, exact, what, single=False):
    expected = np.asarray(expected)
    if np.asarray(actual).dtype.kind != "c" and expected.dtype.kind == "c":
        expected = expected.real
    a = _wide(actual)
    if a.dtype.kind == "c" and not np.isfinite(expected).all():
        # Complex inf arithmetic is not specified: PyTorch and BLAS give nan+nanj
        # where a plain sum gives inf-infj.  The same cells must be non-finite.
        bad = ~np.isfinite(expected)
        np.testing.assert_array_equal(~np.isfinite(a), bad, err_msg=what + " (non-finite)")
        a, expected = np.where(bad, 0, a), np.where(bad, 0, expected)
    if exact:
        np.testing.assert_array_equal(a, expected, err_msg=what)
    else:
        finite = np.abs(expected[np.isfinite(expected)])
        scale = float(finite.max()) if finite.size else 0.0
        single = single or np.asarray(actual).dtype in (np.float32, np.complex64)
        tol = (2e-5 if single else 1e-11) * max(1.0, scale)
        np.testing.assert_allclose(a, expected, rtol=tol, atol=tol, err_msg=what)


def _huge_allowed(exp, algorithm, padding_mode):
    """May this call raise MemoryError?  Output or a documented intermediate > 1 TB."""
    if exp is None:
        return True
    itemsize = exp["dtype"].itemsize
    if math.prod(exp["out_shape"]) * itemsize > TB:
        return True
    if padding_mode not in (None, "zeros") and exp["padded"] * itemsize > TB:
        return True
    if algorithm == "fft" and (exp["padded"] + exp["extent"]) * itemsize > TB:
        return True
    return False


def _too_big_to_run(exp, padding_mode=None, algorithm=None):
    """Valid, but would allocate (and touch) hundreds of MB: not for a test."""
    itemsize = exp["dtype"].itemsize
    sizes = [math.prod(exp["out_shape"]) * itemsize]
    if padding_mode not in (None, "zeros") or algorithm in ("fft", "im2col", "auto", None):
        sizes.append(exp["padded"] * itemsize)
    if algorithm in ("fft", None):
        sizes.append(exp["extent"] * itemsize)
    return any(SKIP_BYTES < s <= TB for s in sizes)


def _note(text):
    try:
        note(text)
    except Exception:       # outside a Hypothesis test (corpus replay)
        pass
    _progress(text)


_PROGRESS = os.environ.get("FASTCONV_FUZZ_PROGRESS")


def _progress(text):
    """In a fuzz child process: record the spec about to run (survives a crash)."""
    if _PROGRESS:
        with open(_PROGRESS, "w") as f:
            f.write(text)


def run_spec(spec):
    """Run one spec and check the outcome; returns 'ok', 'raised' or 'skipped'."""
    _note(json.dumps(spec, default=str))
    name = spec["func"]
    func = _resolve(name)
    args = [materialize(a) for a in spec.get("args", [])]
    kwargs = {k: materialize(v) for k, v in spec.get("kwargs", {}).items()}
    try:
        params = _bind(func, args, kwargs)
    except TypeError:
        params = None                       # Python itself rejects the call
    short = name.split(".")[-1]
    if params is not None and short in CONV_FUNCS and name.count(".") == 0:
        return _run_conv(spec, func, args, kwargs, params)
    if params is not None and name.startswith("grad.") and name != "grad.conv_bias":
        return _run_grad(spec, func, args, kwargs, params)
    return _run_other(spec, func, args, kwargs, params)


def _expect_or_none(thunk):
    try:
        return "valid", thunk()
    except Invalid as e:
        return "invalid", str(e)
    except Unclear as e:
        return "unclear", str(e)


def _outcome(func, args, kwargs, snaps, out, allowed_huge, extra_allowed=()):
    start = time.monotonic()
    try:
        result = _call_with_timeout(func, args, kwargs)
    except MemoryError:
        assert allowed_huge, "MemoryError although neither the output nor a documented " \
                             "intermediate is huge"
        assert time.monotonic() - start < 5, "MemoryError came late: memory was touched first"
        _assert_unmodified(snaps, out)
        return "memory", None
    except (ValueError, TypeError) + tuple(extra_allowed) as exc:
        _assert_unmodified(snaps, out)
        assert str(exc), "exception without a message"
        return "raised", exc
    _assert_unmodified(snaps, out)
    return "returned", result


def _run_conv(spec, func, args, kwargs, p):
    nd, transposed = CONV_FUNCS[spec["func"]]
    status, exp = _expect_or_none(lambda: conv_expectation(
        nd, p["input"], p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"],
        p["groups"], p.get("padding_mode", "zeros"), transposed, p.get("output_padding", 0)))
    algorithm = p["algorithm"]
    if not (isinstance(algorithm, str) and algorithm in ("auto",) + fc.ALGORITHMS):
        status, exp = "invalid", "algorithm"
    if status == "valid" and _too_big_to_run(exp, p.get("padding_mode"), algorithm):
        return "skipped"
    out = None
    out_kind = spec.get("out")
    if out_kind is not None:
        if status == "valid":
            shape = exp["out_shape"] if exp["batched"] else exp["out_shape"][1:]
            if math.prod(shape) * exp["dtype"].itemsize > SKIP_BYTES:
                return "skipped"
            try:
                out = _make_out(out_kind, shape, exp["dtype"], p["input"])
            except (ValueError, MemoryError):   # e.g. (0, 1, 2**31, 2**31): numpy refuses
                return "skipped"
        else:
            out = _make_out("fresh" if out_kind == "overlap" else out_kind, (2, 3),
                            np.float64, None)
        kwargs = dict(kwargs, out=out)
        if status == "valid" and not (
                isinstance(out, np.ndarray) and out.shape == tuple(shape) and
                out.dtype == exp["dtype"] and out.flags.c_contiguous and out.flags.writeable):
            status, exp = "invalid", f"out= {out_kind}"
    # the caller's arrays before the call (an overlapping out= is written, by design)
    originals = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in p.items()}
    snaps = _snapshot(list(args) + list(kwargs.values()))
    huge = status != "valid" or _huge_allowed(exp, algorithm, p.get("padding_mode"))
    kind, result = _outcome(func, args, kwargs, snaps, out, huge)
    if kind == "memory":
        return "raised"
    if status == "invalid":
        assert kind == "raised", f"accepted arguments the contract rejects ({exp})"
        return "raised"
    if kind == "raised":
        assert status != "valid" or (huge and isinstance(result, ValueError)), \
            f"rejected valid arguments: {result!r}"     # ValueError: numpy's "too big"
        return "raised"
    # returned: check the result
    exp_shape = (exp["out_shape"] if exp["batched"] else exp["out_shape"][1:]) \
        if status == "valid" else None
    if exp_shape is not None:
        assert result.shape == exp_shape, (result.shape, exp_shape)
        assert result.dtype == exp["dtype"], (result.dtype, exp["dtype"])
    if out is not None:
        assert result is out, "out= given but another array returned"
    x = _wide(originals["input"])
    w = _wide(originals["weight"])
    b = None if originals["bias"] is None else _wide(originals["bias"])
    if status != "valid":       # unclear but accepted: recompute the geometry leniently
        return "ok"
    xb = x if exp["batched"] else x[None]
    expected = oracle(xb, w, b, exp, p["groups"], p.get("padding_mode", "zeros"), transposed)
    if not exp["batched"]:
        expected = expected[0]
    exact = algorithm != "fft"
    _compare(result, expected, exact, f"{spec['func']} {algorithm}")
    return "ok"


def _source(pos, n, left, mode):
    """Input index that padded position ``pos`` reads, or -1 (zero padding)."""
    rel = pos - left
    inside = (rel >= 0) & (rel < n)
    if mode == "zeros":
        return np.where(inside, rel, -1)
    if mode == "reflect":
        return np.where(rel < 0, -rel, np.where(rel >= n, 2 * (n - 1) - rel, rel))
    if mode == "replicate":
        return np.clip(rel, 0, n - 1)
    return rel % n                                   # circular


def gather_conv(x, w, b, stride, pads, dilation, groups, mode, transposed, out_sp):
    """Independent float64 oracle by index gathering: per output cell and tap, the
    input cell it reads.  Costs only output x kernel, so it handles paddings,
    dilations and strides of 2**40 (which reference.py would materialise)."""
    nd = x.ndim - 2
    kernel = w.shape[2:]
    tables = []
    for j in range(nd):
        o = np.arange(out_sp[j], dtype=object)[:, None]
        k = np.arange(kernel[j], dtype=object)[None, :]
        n = x.shape[2 + j]
        if transposed:
            t = o + pads[j][0] - k * dilation[j]
            ok = (t >= 0) & (t % stride[j] == 0) & (t // stride[j] < n)
            idx = np.where(ok, t // stride[j], -1)
        else:
            idx = _source(o * stride[j] + k * dilation[j], n, pads[j][0], mode)
        tables.append(np.asarray(idx, dtype=np.int64))
    index, mask = [], 1
    for j, t in enumerate(tables):
        shape = [1] * (2 * nd)
        shape[2 * j:2 * j + 2] = t.shape
        index.append(np.maximum(t, 0).reshape(shape))
        mask = mask * (t >= 0).reshape(shape)
    gathered = x[(slice(None), slice(None)) + tuple(index)] * mask  # (N, C, O1, K1, ...)
    letters_o, letters_k = "opq"[:nd], "klm"[:nd]
    spec_x = "nc" + "".join(o + k for o, k in zip(letters_o, letters_k))
    if transposed:
        cig, cog = w.shape[0] // groups, w.shape[1]
    else:
        cig, cog = w.shape[1], w.shape[0] // groups
    out = np.zeros((x.shape[0], cog * groups) + tuple(out_sp), np.result_type(x, w))
    for g in range(groups):
        xs = gathered[:, g * cig:(g + 1) * cig]
        if transposed:
            ws, spec_w = w[g * cig:(g + 1) * cig], "cd" + letters_k
        else:
            ws, spec_w = w[g * cog:(g + 1) * cog], "dc" + letters_k
        out[:, g * cog:(g + 1) * cog] = np.einsum(
            f"{spec_x},{spec_w}->nd{letters_o}", xs, ws)
    if b is not None:
        out = out + b.reshape((1, -1) + (1,) * nd)
    return out


def oracle(x, w, b, exp, groups, mode, transposed):
    """reference.py when its padded arrays are small, else :func:`gather_conv`."""
    pads, stride, dilation = exp["pads"], exp["stride"], exp["dilation"]
    out_sp = exp["out_shape"][2:]
    small = exp["padded"] < 10**6 and exp["extent"] < 10**6 and all(
        (n - 1) * s + d * (k - 1) + 1 < 10**6
        for n, s, d, k in zip(x.shape[2:], stride, dilation, w.shape[2:]))
    if not small:
        return gather_conv(x, w, b, stride, pads, dilation, groups, mode, transposed, out_sp)
    if transposed:
        return reference.conv_transpose(x, w, b, stride, [l for l, _ in pads],
                                        exp["output_padding"], groups, dilation)
    xp = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads],
                mode=reference._NP_PAD_MODE[mode])
    return reference.conv(xp, w, b, stride, 0, dilation, groups)


def _vdot(a, b):
    return np.vdot(_wide(a).ravel(), _wide(b).ravel())


def _run_grad(spec, func, args, kwargs, p):
    nd, transposed, part = GRAD_FUNCS[spec["func"][len("grad."):]]
    padding_mode = p.get("padding_mode", "zeros")
    output_padding = p.get("output_padding", 0)

    def expectation():
        if part == "input":
            shape = p["input_shape"]
            if not isinstance(shape, (tuple, list)) or not all(_is_int(v) for v in shape):
                raise Invalid("input_shape")
            if any(v < 0 for v in shape):
                raise Invalid("negative size")
            w = _as_numeric(p["weight"])
            x = np.broadcast_to(np.zeros((), w.dtype), tuple(shape))
            exp = conv_expectation(nd, x, w, None, p["stride"], p["padding"], p["dilation"],
                                   p["groups"], padding_mode, transposed, output_padding)
            g = _as_numeric(p["grad_output"])
            dtype = _compute_dtype(w, g)
        else:
            shape = p["weight_shape"]
            if not isinstance(shape, (tuple, list)) or not all(_is_int(v) for v in shape):
                raise Invalid("weight_shape")
            if any(v < 0 for v in shape):
                raise Invalid("negative size")
            x = _as_numeric(p["input"])
            w = np.broadcast_to(np.zeros((), x.dtype), tuple(shape))
            exp = conv_expectation(nd, x, w, None, p["stride"], p["padding"], p["dilation"],
                                   p["groups"], padding_mode, transposed, output_padding)
            g = _as_numeric(p["grad_output"])
            dtype = _compute_dtype(x, g)
        user_shape = exp["out_shape"] if exp["batched"] else exp["out_shape"][1:]
        if g.shape != user_shape:
            raise Invalid("grad_output shape")
        exp["dtype"] = dtype
        exp["result_shape"] = tuple(shape)
        return exp

    status, exp = _expect_or_none(expectation)
    if status == "valid":
        items = math.prod(exp["result_shape"]) + math.prod(exp["out_shape"])
        if SKIP_BYTES < max(items, exp["padded"]) * exp["dtype"].itemsize <= TB:
            return "skipped"
    snaps = _snapshot(list(args) + list(kwargs.values()))
    huge = status != "valid" or (math.prod(exp["result_shape"]) * exp["dtype"].itemsize > TB) \
        or _huge_allowed(exp, None, padding_mode)
    kind, result = _outcome(func, args, kwargs, snaps, None, huge)
    if kind == "memory":
        return "raised"
    if status == "invalid":
        assert kind == "raised", f"accepted arguments the contract rejects ({exp})"
        return "raised"
    if kind == "raised":
        assert status != "valid" or (huge and isinstance(result, ValueError)), \
            f"rejected valid arguments: {result!r}"
        return "raised"
    if status != "valid":
        return "ok"
    assert result.shape == exp["result_shape"], (result.shape, exp["result_shape"])
    assert result.dtype == exp["dtype"], (result.dtype, exp["dtype"])
    # adjoint identity with random integer probes: <g, A p> == <A^H g, p>
    g = _wide(p["grad_output"])
    batched = exp["batched"]
    rng = np.random.default_rng(0)
    complex_ = exp["dtype"].kind == "c"

    def probe(shape):
        v = rng.integers(1, 1000, size=shape) * rng.choice([-1, 1], size=shape)
        if complex_:
            v = v + 1j * rng.integers(-999, 1000, size=shape)
        return v.astype(np.complex128 if complex_ else np.float64)

    for _ in range(2):
        if part == "input":
            q = probe(exp["result_shape"])
            aq = oracle(q if batched else q[None], _wide(p["weight"]), None, exp, p["groups"],
                        padding_mode, transposed)
        else:
            x = _wide(p["input"])
            q = probe(exp["result_shape"])
            aq = oracle(x if batched else x[None], q, None, exp, p["groups"], padding_mode,
                        transposed)
        if not batched:
            aq = aq[0]
        lhs, rhs = _vdot(g, aq), _vdot(result, q)
        assert lhs == rhs, f"{spec['func']}: adjoint identity fails: {lhs} != {rhs}"
    return "ok"


def _scipy_equivalent(name):
    import scipy.ndimage
    import scipy.signal
    module, fn = name.split(".")
    return getattr(scipy.ndimage if module == "ndimage" else scipy.signal, fn)


def _run_other(spec, func, args, kwargs, params):
    """ndimage / signal / conv_bias, or a call Python itself cannot bind."""
    snaps = _snapshot(list(args) + list(kwargs.values()))
    name = spec["func"]
    extra = (RuntimeError,) if name.startswith("ndimage") else ()
    originals = ([a.copy() if isinstance(a, np.ndarray) else a for a in args],
                 {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()})
    kind, result = _outcome(func, args, kwargs, snaps, None, False, extra)
    if params is None:
        assert kind == "raised" and isinstance(result, TypeError), "unbindable call accepted"
        return "raised"
    if kind != "returned":
        return "raised"
    if name == "grad.conv_bias":
        g, nd = params["grad_output"], params["nd"]
        g = np.asarray(g)
        axes = tuple(a for a in range(g.ndim) if a != g.ndim - nd - 1)
        np.testing.assert_array_equal(_wide(result), _wide(g).sum(axis=axes))
        return "ok"
    if name in FILTER_FUNCS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = _scipy_equivalent(name)(*originals[0], **originals[1])
        except Exception:
            return "ok"                     # SciPy rejects what fastconv accepts
        expected = np.asarray(expected)
        result = np.asarray(result)
        if any(np.asarray(a).size == 0 for a in originals[0][:2]):
            return "ok"     # SciPy's empty-input special cases (array([]), errors) differ
        assert result.shape == expected.shape, (result.shape, expected.shape)
        # SciPy's fftconvolve skips the FFT (keeping an integer dtype) on axes
        # where an input has length 1; fastconv always returns float there.
        shapes = [np.shape(a) for a in originals[0][:2]]
        scalar_like = len(shapes[0]) == len(shapes[1]) and all(
            1 in (m, n) for m, n in zip(*shapes))
        if (expected.dtype in SUPPORTED or expected.dtype.kind in "iub") and not (
                name == "signal.fftconvolve" and scalar_like):   # SciPy: in1 * in2 there
            assert result.dtype == expected.dtype, (result.dtype, expected.dtype)
        # exact only where both sides sum directly (method='auto' may pick FFT)
        fft = name == "signal.fftconvolve" or (
            name.startswith("signal") and kwargs.get("method", "auto") != "direct") or (
            name.startswith("ndimage") and result.dtype.kind not in "iub")
        single = any(np.asarray(a).dtype in (np.float16, np.float32, np.complex64)
                     for a in originals[0][:2])
        _compare(result, _wide(expected), exact=False if fft else True, what=name,
                 single=single)
    return "ok"


# ==========================================================================
# Hypothesis strategies: arbitrary arguments, biased towards almost-valid calls
# ==========================================================================

HUGE = [2**31 - 1, 2**31, 2**32, 2**40, 2**47, 2**48, 2**48 + 1, 2**63 - 1, 2**63, 2**64,
        -2**63, -2**31]
JUNK = [None, 1.0, 1.5, float("nan"), float("inf"), -1, 0, True, False, "", "same", "valid",
        "full", "zeros", b"1", 1 + 0j, {"object": None}, [], {"tuple": []},
        {"np": ["int64", 2]}, {"np": ["uint8", 1]}, {"np": ["float32", 1.0]},
        {"np": ["bool", True]}, {"ndarray_param": [1]}, {"ndarray_param": [1, 2, 3]}]


def _param(nd, lo, hi, wild=True):
    """A stride/padding/dilation-like argument: valid, or (wild) anything."""
    valid_int = st.integers(lo, hi)
    valid = st.one_of(valid_int, st.lists(valid_int, min_size=nd, max_size=nd).map(
        lambda v: {"tuple": v}))
    if not wild:
        return valid
    weird_int = st.one_of(st.integers(-3, 4), st.sampled_from(HUGE))
    weird = st.one_of(
        weird_int, st.sampled_from(JUNK),
        st.lists(st.one_of(weird_int, valid_int, st.sampled_from(JUNK[:6])),
                 min_size=0, max_size=4).map(lambda v: {"tuple": v}),
        st.lists(valid_int, min_size=0, max_size=4))
    return st.one_of(valid, weird, weird)


def _dtype(wild=True):
    if not wild:
        return st.sampled_from(DTYPE_NAMES[:4])
    return st.one_of(st.sampled_from(DTYPE_NAMES[:4]), st.sampled_from(DTYPE_NAMES))


LAYOUTS = ["C", "C", "C", "C", "F", "reversed", "strided", "broadcast", "readonly", "list"]


@st.composite
def _array_spec(draw, shape, dtype=None, nonfinite_ok=True):
    dt = dtype or draw(_dtype())
    layout = draw(st.sampled_from(LAYOUTS))
    if layout == "list" and math.prod(shape) > 200:
        layout = "C"
    nonfinite = nonfinite_ok and np.dtype(dt).kind == "f" and draw(st.integers(0, 9)) == 0
    return _arr(shape, dt, layout, draw(st.integers(0, 2**16)), nonfinite)


@st.composite
def _mutated_shape(draw, shape, wild=True):
    """The shape, or (wild) it with a dim dropped / added / zeroed / changed."""
    shape = list(shape)
    if not wild:
        return shape
    choice = draw(st.integers(0, 4))
    if choice == 0 and shape:
        shape.pop(draw(st.integers(0, len(shape) - 1)))
    elif choice == 1:
        shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(0, 3)))
    elif choice == 2 and shape:
        shape[draw(st.integers(0, len(shape) - 1))] = 0
    elif choice == 3 and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.integers(0, 7))
    return shape


def _wild_flags(draw, names):
    """Which arguments of this call are arbitrary: none (a valid call) half the
    time, else each argument independently with probability 1/3."""
    if draw(st.booleans()):
        return {n: False for n in names}
    return {n: draw(st.integers(0, 2)) == 0 for n in names}


@st.composite
def conv_call(draw):
    nd = draw(st.integers(1, 3))
    transposed = draw(st.booleans())
    wild = _wild_flags(draw, ["x", "w", "bias", "stride", "padding", "dilation", "groups",
                              "output_padding", "padding_mode", "algorithm", "out", "dtype",
                              "n"])
    groups_valid = draw(st.sampled_from([1, 1, 1, 2, 3]))
    cig, cog = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.sampled_from([1, 2, 2, 0, None] if wild["n"] else [1, 2, None]))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    spatial = [draw(st.integers(1, 7)) for _ in range(nd)]
    c_in, c_out = cig * groups_valid, cog * groups_valid
    x_shape = ([] if n is None else [n]) + [c_in] + spatial
    w_shape = ([c_in, cog] if transposed else [c_out, cig]) + kernel
    dtype = draw(_dtype(wild["dtype"]))
    same_dtype = not wild["dtype"] or draw(st.booleans())
    x = draw(_array_spec(draw(_mutated_shape(x_shape, wild["x"])), dtype if same_dtype else None))
    w = draw(_array_spec(draw(_mutated_shape(w_shape, wild["w"])), dtype if same_dtype else None))
    bias = None
    if draw(st.booleans()):
        bias = draw(_array_spec(draw(_mutated_shape([c_out], wild["bias"])),
                                dtype if same_dtype else None))
    kwargs = {}
    if wild["stride"] or draw(st.booleans()):
        kwargs["stride"] = draw(_param(nd, 1, 3, wild["stride"]))
    if wild["padding"]:
        kwargs["padding"] = draw(st.one_of(_param(nd, 0, 3),
                                           st.sampled_from(["same", "valid", "SAME", "full"])))
    elif draw(st.booleans()):
        kwargs["padding"] = draw(_param(nd, 0, 3, False) if transposed else st.one_of(
            _param(nd, 0, 3, False), st.sampled_from(["same", "valid"])))
    if wild["dilation"] or draw(st.booleans()):
        kwargs["dilation"] = draw(_param(nd, 1, 3, wild["dilation"]))
    if wild["groups"]:
        kwargs["groups"] = draw(st.one_of(st.integers(-1, 4), st.sampled_from(HUGE + JUNK[:5])))
    else:
        kwargs["groups"] = groups_valid
    if transposed and (wild["output_padding"] or draw(st.booleans())):
        kwargs["output_padding"] = draw(_param(nd, 0, 2) if wild["output_padding"]
                                        else st.just(0))
    if wild["padding_mode"]:
        kwargs["padding_mode"] = draw(st.sampled_from(
            ["zeros", "reflect", "replicate", "circular", "symmetric", "ZEROS", None, 0]))
    elif not transposed and draw(st.booleans()):
        kwargs["padding_mode"] = draw(st.sampled_from(["zeros", "reflect", "replicate",
                                                       "circular"]))
    kwargs["algorithm"] = draw(st.sampled_from(
        ["auto", "direct", "im2col", "fft", "gemm", None, 1, "FFT"] if wild["algorithm"]
        else ["auto", "direct", "im2col", "fft"]))
    out = draw(st.sampled_from(
        ["fresh", "overlap", "wrong_shape", "wrong_dtype", "noncontig", "fortran", "readonly",
         "list"] if wild["out"] else [None, None, None, "fresh", "overlap"]))
    name = f"conv_transpose{nd}d" if transposed else f"conv{nd}d"
    return {"func": name, "args": [x, w, bias], "kwargs": kwargs, "out": out}


@st.composite
def grad_call(draw):
    nd = draw(st.integers(1, 3))
    transposed = draw(st.booleans())
    part = draw(st.sampled_from(["input", "weight"]))
    wild = _wild_flags(draw, ["params", "g", "shape_arg", "arr", "padding_mode", "dtype"])
    groups = draw(st.sampled_from([1, 1, 2]))
    cig, cog = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.sampled_from([1, 2, None]))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    spatial = [draw(st.integers(1, 6)) for _ in range(nd)]
    c_in, c_out = cig * groups, cog * groups
    x_shape = ([] if n is None else [n]) + [c_in] + spatial
    w_shape = ([c_in, cog] if transposed else [c_out, cig]) + kernel
    wp = wild["params"]
    stride = draw(_param(nd, 1, 3, wp))
    padding = draw(st.one_of(_param(nd, 0, 2, wp), st.sampled_from(["same", "valid"])))
    dilation = draw(_param(nd, 1, 2, wp))
    output_padding = draw(_param(nd, 0, 2, wp)) if wp else 0
    if transposed and not wp:
        padding = draw(_param(nd, 0, 2, False))
        output_padding = draw(st.integers(0, 2))
        output_padding = output_padding if output_padding < max(
            min(materialize(stride)) if isinstance(materialize(stride), tuple)
            else materialize(stride), 1) else 0
    padding_mode = draw(st.sampled_from(
        ["zeros", "reflect", "replicate", "circular", "bogus"] if wild["padding_mode"]
        else ["zeros", "zeros", "reflect", "replicate", "circular"]))
    dtype = draw(_dtype(False))
    # grad_output: the forward output's shape (computed from the arguments) or junk
    try:
        exp = conv_expectation(nd, np.zeros(x_shape), np.zeros(w_shape), None,
                               materialize(stride), materialize(padding),
                               materialize(dilation), groups,
                               "zeros" if transposed else padding_mode, transposed,
                               materialize(output_padding))
        g_shape = list(exp["out_shape"] if n is not None else exp["out_shape"][1:])
        if math.prod(g_shape) > 20000:
            g_shape = [2, 3]
    except (Invalid, Unclear):
        g_shape = [2, 3]
    g = draw(_array_spec(draw(_mutated_shape(g_shape, wild["g"])),
                         draw(_dtype(wild["dtype"])), nonfinite_ok=False))
    shape_arg = x_shape if part == "input" else w_shape
    if wild["shape_arg"]:
        shape_arg = draw(st.one_of(
            _mutated_shape(shape_arg).map(lambda s: {"tuple": s}),
            st.sampled_from([None, 3, "x", {"tuple": [1.5, 2]}, {"tuple": [-1, 2, 3]},
                             {"ndarray_param": [1, 1, 3]}, {"tuple": [True, 1, 3]}])))
    else:
        shape_arg = draw(st.sampled_from([{"tuple": shape_arg}, shape_arg]))
    other = w_shape if part == "input" else x_shape
    arr = draw(_array_spec(draw(_mutated_shape(other, wild["arr"])),
                           draw(_dtype(wild["dtype"])) if wild["dtype"] else dtype,
                           nonfinite_ok=False))
    args = [shape_arg, arr, g] if part == "input" else [arr, shape_arg, g]
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if transposed:
        kwargs["output_padding"] = output_padding
    elif padding_mode != "zeros":
        kwargs["padding_mode"] = padding_mode
    kind = "conv_transpose" if transposed else "conv"
    return {"func": f"grad.{kind}{nd}d_{part}", "args": args, "kwargs": kwargs}


@st.composite
def filter_call(draw):
    name = draw(st.sampled_from(FILTER_FUNCS + ("grad.conv_bias",)))
    nd = draw(st.sampled_from([1, 2, 3, 3, 0, 4]))
    shape = [draw(st.integers(0 if draw(st.integers(0, 9)) == 0 else 1, 8)) for _ in range(nd)]
    kshape = [draw(st.integers(1, 4)) for _ in range(nd)]
    if draw(st.integers(0, 5)) == 0:
        kshape = draw(_mutated_shape(kshape))
    dtype = draw(_dtype())
    a = draw(_array_spec(shape, dtype, nonfinite_ok=False))
    k = draw(_array_spec(kshape, draw(st.one_of(st.just(dtype), _dtype())),
                         nonfinite_ok=False))
    kwargs = {}
    if name == "grad.conv_bias":
        return {"func": name, "args": [a, draw(st.one_of(st.integers(0, 4),
                                                         st.sampled_from(JUNK[:6])))],
                "kwargs": {}}
    if name.startswith("ndimage"):
        if draw(st.booleans()):
            kwargs["mode"] = draw(st.sampled_from(
                ["reflect", "constant", "nearest", "mirror", "wrap", "grid-wrap",
                 "grid-constant", "grid-mirror", "bogus", None]))
        if draw(st.booleans()):
            kwargs["cval"] = draw(st.sampled_from([0.0, 1.5, -2, float("nan")]))
        if draw(st.booleans()):
            kwargs["origin"] = draw(st.one_of(st.integers(-2, 2), st.lists(
                st.integers(-2, 2), min_size=0, max_size=4)))
        if draw(st.integers(0, 4)) == 0:
            kwargs["output"] = draw(st.sampled_from(["float32", "float64", "int16", "uint8",
                                                     "complex64", "bool"]))
    else:
        if draw(st.booleans()):
            kwargs["mode"] = draw(st.sampled_from(["full", "valid", "same", "bogus", None]))
        if name != "signal.fftconvolve" and draw(st.booleans()):
            kwargs["method"] = draw(st.sampled_from(["auto", "direct", "fft", "bogus"]))
    return {"func": name, "args": [a, k], "kwargs": kwargs}


# ==========================================================================
# The tests
# ==========================================================================

def _settings(n):
    if EXAMPLES:
        n = max(n, EXAMPLES)
    return settings(max_examples=n, deadline=None, derandomize=not EXAMPLES, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


STATS = {}


def _count(kind, outcome):
    STATS.setdefault(kind, {}).setdefault(outcome, 0)
    STATS[kind][outcome] += 1


# The generated fuzz runs in a child process: a crash (the bugs fuzzing is for)
# must fail one test with the spec that crashed, not kill the whole test run.
# Each child writes the spec it is about to run to a progress file first.

@_settings(160)
@given(conv_call())
def fuzz_convolution(spec):
    _count("conv", run_spec(spec))


@_settings(90)
@given(grad_call())
def fuzz_gradients(spec):
    _count("grad", run_spec(spec))


@_settings(60)
@given(filter_call())
def fuzz_filters(spec):
    _count("filter", run_spec(spec))


def _child_main(target):
    """Entry point of a fuzz child (``python -c``): run one fuzz target."""
    warnings.simplefilter("ignore")
    try:
        globals()[target]()
    finally:
        print("FUZZ-STATS " + json.dumps(STATS), flush=True)


def _run_child(code, tmp_path, timeout):
    progress = tmp_path / "progress.json"
    env = dict(os.environ, FASTCONV_FUZZ_PROGRESS=str(progress))
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code],
                          capture_output=True, text=True, timeout=timeout, cwd=TESTS_DIR,
                          env=env)
    last = progress.read_text() if progress.exists() else "(none)"
    return proc, last


def _fuzz_in_child(target, tmp_path):
    code = f"import test_fuzz; test_fuzz._child_main({target!r})"
    timeout = 1800 + 2 * EXAMPLES
    proc, last = _run_child(code, tmp_path, timeout)
    stats = [line for line in proc.stdout.splitlines() if line.startswith("FUZZ-STATS ")]
    if stats:
        print(f"\n{target}: executions {stats[-1][len('FUZZ-STATS '):]}")
    if proc.returncode < 0 or proc.returncode > 1:
        pytest.fail(f"fuzz child crashed (exit {proc.returncode}) on spec:\n{last}\n"
                    f"stderr:\n{proc.stderr[-6000:]}", pytrace=False)
    assert proc.returncode == 0, proc.stdout[-12000:] + proc.stderr[-6000:]


def test_fuzz_convolution_and_transposed_convolution(tmp_path):
    _fuzz_in_child("fuzz_convolution", tmp_path)


def test_fuzz_gradients(tmp_path):
    _fuzz_in_child("fuzz_gradients", tmp_path)


def test_fuzz_ndimage_and_signal(tmp_path):
    _fuzz_in_child("fuzz_filters", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["fuzz_convolution", "fuzz_gradients", "fuzz_filters"])
def test_fuzz_long(target, tmp_path, monkeypatch, request):
    """``pytest -m slow tests/test_fuzz.py``: 5,000 random examples per target
    (or FASTCONV_FUZZ_EXAMPLES if larger)."""
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("long fuzz: run with -m slow")
    monkeypatch.setenv("FASTCONV_FUZZ_EXAMPLES", str(max(EXAMPLES, 5000)))
    _fuzz_in_child(target, tmp_path)


# --------------------------------------------------------------------------
# Corpus of past findings, replayed in child processes (a crash fails only
# the entry that crashed).
# --------------------------------------------------------------------------

def _corpus_entries():
    entries = []
    for path in sorted(glob.glob(os.path.join(CORPUS_DIR, "*.json"))):
        with open(path) as f:
            for i, entry in enumerate(json.load(f)):
                entries.append((f"{os.path.basename(path)[:-5]}-{i}", entry))
    return entries


CORPUS = _corpus_entries()


def _replay_child(path):
    """Child: run each corpus spec, printing one JSON line per result."""
    warnings.simplefilter("ignore")
    with open(path) as f:
        entries = json.load(f)
    for key, entry in entries:
        spec = {k: v for k, v in entry.items() if k != "note"}
        print("START " + key, flush=True)
        try:
            outcome = run_spec(spec)
            line = {"id": key, "status": "pass", "detail": outcome}
        except BaseException as exc:        # noqa: BLE001 - report everything
            line = {"id": key, "status": "fail",
                    "detail": f"{type(exc).__name__}: {exc}"[:4000]}
        print("RESULT " + json.dumps(line), flush=True)


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory):
    results, remaining = {}, list(CORPUS)
    tmp = tmp_path_factory.mktemp("corpus")
    while remaining:
        path = tmp / "entries.json"
        path.write_text(json.dumps(remaining))
        code = f"import test_fuzz; test_fuzz._replay_child({str(path)!r})"
        try:
            proc, _ = _run_child(code, tmp, timeout=600)
            out, err, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out, err, rc = (exc.stdout or b"").decode(), "timeout", -1
        started = None
        for line in out.splitlines():
            if line.startswith("START "):
                started = line[6:]
            elif line.startswith("RESULT "):
                r = json.loads(line[7:])
                results[r["id"]] = (r["status"], r["detail"])
                started = None
        done = {key for key, _ in remaining if key in results}
        if started is not None:                      # the child died on this entry
            results[started] = ("crash", f"exit {rc}\n{err[-4000:]}")
            done.add(started)
        elif rc != 0 and not done:
            pytest.fail(f"corpus replay child failed (exit {rc}):\n{err[-4000:]}")
        remaining = [(k, e) for k, e in remaining if k not in done]
    return results


@pytest.mark.parametrize("key", [key for key, _ in CORPUS] or ["(empty)"])
def test_fuzz_corpus_regressions(key, corpus_results):
    """Past fuzz findings (tests/fuzz_corpus/*.json), replayed through the same oracle."""
    if key == "(empty)":
        pytest.skip("empty corpus")
    status, detail = corpus_results[key]
    note = dict(CORPUS)[key].get("note", "")
    assert status == "pass", f"{key} ({note}):\n{status}: {detail}"


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_gather_oracle_matches_reference(mode, transposed):
    """The fuzz oracle for huge paddings agrees with reference.py where both run."""
    if transposed and mode != "zeros":
        pytest.skip("transposed convolution pads with zeros only")
    rng = np.random.default_rng(0)
    for nd in (1, 2, 3):
        x = rng.integers(-3, 4, (2, 4) + (5, 6, 4)[:nd]).astype(np.float64)
        w = rng.integers(-3, 4, ((4, 3) if transposed else (6, 2)) + (2, 3, 2)[:nd]) * 1.0
        b = rng.integers(-3, 4, 6 if transposed else 6) * 1.0
        kw = dict(stride=(2, 1, 3)[:nd], padding=(1, 2, 1)[:nd], dilation=(1, 2, 1)[:nd],
                  groups=2)
        func = getattr(fc, f"conv_transpose{nd}d" if transposed else f"conv{nd}d")
        if not transposed:
            kw["padding_mode"] = mode
        exp = conv_expectation(nd, x, w, b, kw["stride"], kw["padding"], kw["dilation"], 2,
                               mode, transposed, 0)
        want = oracle(x, w, b, exp, 2, mode, transposed)
        got = gather_conv(x, w, b, exp["stride"], exp["pads"], exp["dilation"], 2, mode,
                          transposed, exp["out_shape"][2:])
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(func(x, w, b, **kw), want)


