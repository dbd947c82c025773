"""fastconv's performance suite: fastconv side by side with PyTorch and SciPy.

Run it as ``python benchmarks/bench.py``; ``--help`` lists the options and
``benchmarks/README.md`` explains each column.  (``fastconv bench`` runs the
small suite that ships with the package, ``fastconv/_bench.py``.)

How a row is measured
---------------------
* Every contender of a row (fastconv with ``algorithm='auto'``, fastconv with
  each kernel of its registry that applies, forced with
  ``fastconv._dispatch.forced``, PyTorch, SciPy, optionally a NumPy im2col +
  matmul baseline) runs in this one process on the same arrays.  Which
  kernels apply, and which one 'auto' picks, comes from ``fastconv.explain``.
* Warm-up: one call each, whose result is also checked against fastconv's
  (the ``check`` column), then a calibration call.  Each contender repeats
  its call enough times that one *sample* takes at least ``--min-sample-ms``
  (20 ms by default); a sample is the mean time per call over those repeats.
* Rounds are interleaved: round r times every contender once, starting at
  contender r (a rotation, so no contender always runs right after the same
  neighbour).  The reported time is the median over rounds.  A contender
  whose single sample is too slow for the time budget gets fewer rounds
  (marked ``*``).
* GEMM peak: NumPy matmul of 2048x2048 (float32/float64) and 1536x1536
  (complex) matrices, best of a few at the start and at the end of the run,
  plus one matmul of the row's dtype after every row (the best of all is the
  peak), with the same thread count.  FLOPs are 2 per real multiply-add and
  8 per complex one.

Only the standard library and NumPy are imported at module import; PyTorch,
SciPy and threadpoolctl are imported lazily and are optional.
"""
import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Workload", "WORKLOADS", "measure_peak", "run_workload", "main"]

# --------------------------------------------------------------------------- workloads

#: Groups of rows that share a target (issue 12); used for the summary table.
CATEGORY_TARGETS = {
    "dense": "each torch/fc >= 1.0, geomean >= 1.15, >= 80% of peak",
    "thin": "each torch/fc >= 1.5 (depthwise, grouped, 1x1, 1-D, transposed)",
    "float64": "geomean torch/fc >= 3",
    "complex64": "each torch/fc >= 1.2",
    "complex128": "each torch/fc >= 2",
    "backward": "each torch/fc >= 1.0 (depthwise and grouped >= 1.5)",
    "deep": "(no target; ResNet's deeper layers: small images, many channels)",
    "volume": "(no target; also vs SciPy)",
    "latency": "torch/fc >= 1 (per-call overhead)",
}


@dataclass(frozen=True)
class Workload:
    """One benchmark row.

    ``op`` is one of ``conv``, ``conv_transpose`` (forward), ``conv_input``,
    ``conv_weight`` (gradients of a convolution), ``conv_transpose_input``,
    ``conv_transpose_weight`` (gradients of a transposed convolution).
    ``x_shape`` and ``w_shape`` are the input and weight of the *forward*
    operation, in PyTorch layout; gradient rows differentiate that forward op.
    """

    name: str
    op: str
    nd: int
    x_shape: tuple
    w_shape: tuple
    dtype: str = "float32"
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    output_padding: object = 0
    padding_mode: str = "zeros"
    category: str = "dense"
    quick: bool = False
    scipy: bool = False        # single-channel volume: scipy.ndimage / fftconvolve too
    latency: bool = False      # report microseconds per call
    busy: bool = False         # run with a busy-looping process competing for a core

    @property
    def transposed(self):
        return self.op.startswith("conv_transpose")

    @property
    def forward_op(self):
        return "conv_transpose" if self.transposed else "conv"

    def _tuple(self, value):
        return tuple(value) if isinstance(value, (tuple, list)) else (value,) * self.nd

    def geometry(self):
        """Stride, padding, dilation, output_padding as tuples, and the output shape."""
        s, p, d = self._tuple(self.stride), self._tuple(self.padding), self._tuple(self.dilation)
        op = self._tuple(self.output_padding)
        k = self.w_shape[2:]
        spatial = self.x_shape[2:]
        if self.transposed:
            c_out = self.w_shape[1] * self.groups
            out = tuple((n - 1) * si - 2 * pi + di * (ki - 1) + oi + 1
                        for n, si, pi, di, ki, oi in zip(spatial, s, p, d, k, op))
        else:
            c_out = self.w_shape[0]
            out = tuple((n + 2 * pi - di * (ki - 1) - 1) // si + 1
                        for n, si, pi, di, ki in zip(spatial, s, p, d, k))
        return s, p, d, op, (self.x_shape[0], c_out) + out

    def macs(self):
        """Multiply-adds of the forward operation (gradients cost the same)."""
        kvol = math.prod(self.w_shape[2:])
        if self.transposed:
            return math.prod(self.x_shape) * self.w_shape[1] * kvol
        out_shape = self.geometry()[-1]
        return math.prod(out_shape) * self.w_shape[1] * kvol

    def flops(self):
        return self.macs() * (8 if np.dtype(self.dtype).kind == "c" else 2)

    def operand_bytes(self):
        """Bytes of input, weight and output (the arrays every contender touches)."""
        item = np.dtype(self.dtype).itemsize
        return item * (math.prod(self.x_shape) + math.prod(self.w_shape)
                       + math.prod(self.geometry()[-1]))

    def describe(self):
        """Compact shape text: ``x(8,64,56,56) w(64,64,3,3) s2 p1 d4 g32 reflect``."""
        def fmt(t):
            return "(" + ",".join(str(v) for v in t) + ")"

        def opt(tag, value, default):
            t = self._tuple(value)
            if all(v == default for v in t):
                return ""
            return f" {tag}{t[0] if len(set(t)) == 1 else fmt(t)}"

        text = f"x{fmt(self.x_shape)} w{fmt(self.w_shape)}"
        text += opt("s", self.stride, 1) + opt("p", self.padding, 0) + opt("d", self.dilation, 1)
        text += opt("op", self.output_padding, 0)
        if self.groups != 1:
            text += f" g{self.groups}"
        if self.padding_mode != "zeros":
            text += f" {self.padding_mode}"
        return text


def _w(name, op, nd, x, w, **kw):
    return Workload(name, op, nd, tuple(x), tuple(w), **kw)


def _workloads():
    rows = []
    add = rows.append
    resnet = dict(nd=2, x=(8, 64, 56, 56), w=(64, 64, 3, 3))
    mid3d = dict(nd=3, x=(1, 32, 32, 32, 32), w=(32, 32, 3, 3, 3))
    c1d = dict(nd=1, x=(8, 128, 16000), w=(128, 128, 3))
    dw2d = dict(nd=2, x=(8, 256, 56, 56), w=(256, 1, 3, 3))
    dec3d = dict(nd=3, x=(1, 64, 32, 32, 32), w=(64, 32, 2, 2, 2))
    unet32 = dict(nd=3, x=(1, 32, 64, 64, 64), w=(32, 32, 3, 3, 3))
    # issue 12's rows whose gradients are timed too: name -> (op args, kwargs)
    dense_grads = {
        "conv2d_stride2": (dict(nd=2, x=(8, 64, 56, 56), w=(128, 64, 3, 3)),
                           dict(stride=2, padding=1)),
        "conv3d_c3d": (dict(nd=3, x=(2, 64, 16, 56, 56), w=(64, 64, 3, 3, 3)), dict(padding=1)),
        "conv3d_unet_32": (unet32, dict(padding=1)),
        "conv2d_resnet_reflect": (resnet, dict(padding=1, padding_mode="reflect")),
        "conv2d_grouped_g32": (dict(nd=2, x=(8, 256, 56, 56), w=(256, 8, 3, 3)),
                               dict(padding=1, groups=32)),
        "conv3d_depthwise": (dict(nd=3, x=(2, 64, 16, 56, 56), w=(64, 1, 3, 3, 3)),
                             dict(padding=1, groups=64)),
        "conv2d_1x1": (dict(nd=2, x=(8, 256, 56, 56), w=(64, 256, 1, 1)), {}),
        "conv2d_1x1_expand": (dict(nd=2, x=(8, 64, 56, 56), w=(256, 64, 1, 1)), {}),
        "conv2d_depthwise_c128": (dict(nd=2, x=(8, 128, 56, 56), w=(128, 1, 3, 3)),
                                  dict(padding=1, groups=128)),
        "conv1d_wavenet_d4": (dict(nd=1, x=(4, 64, 16000), w=(64, 64, 2)), dict(dilation=4)),
    }

    # Dense float32 forward.
    add(_w("conv2d_resnet", "conv", **resnet, padding=1, quick=True))
    add(_w("conv2d_stride2", "conv", 2, (8, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1))
    add(_w("conv3d_c3d", "conv", 3, (2, 64, 16, 56, 56), (64, 64, 3, 3, 3), padding=1))
    add(_w("conv3d_mid", "conv", **mid3d, padding=1, quick=True))
    add(_w("conv3d_unet_enc", "conv", 3, (1, 16, 64, 64, 64), (32, 16, 3, 3, 3), padding=1))
    add(_w("conv3d_unet_32", "conv", **unet32, padding=1))
    add(_w("conv3d_unet_32_d2", "conv", **unet32, padding=2, dilation=2))
    for mode in ("reflect", "replicate", "circular"):
        add(_w(f"conv2d_resnet_{mode}", "conv", **resnet, padding=1, padding_mode=mode,
               quick=mode == "reflect"))
    for mode in ("reflect", "replicate", "circular"):
        add(_w(f"conv3d_mid_{mode}", "conv", **mid3d, padding=1, padding_mode=mode))
    # Thin forward: 1x1, depthwise, grouped, 1-D, transposed.
    add(_w("conv2d_1x1", "conv", 2, (8, 256, 56, 56), (64, 256, 1, 1), category="thin",
           quick=True))
    # issue 12's own 1x1 (64 -> 256) and depthwise (128 channels) shapes, beside the
    # reducing 1x1 and the 256-channel depthwise layer above and below
    add(_w("conv2d_1x1_expand", "conv", 2, (8, 64, 56, 56), (256, 64, 1, 1), category="thin"))
    add(_w("conv2d_depthwise", "conv", **dw2d, padding=1, groups=256, category="thin",
           quick=True))
    add(_w("conv2d_depthwise_c128", "conv", 2, (8, 128, 56, 56), (128, 1, 3, 3), padding=1,
           groups=128, category="thin"))
    add(_w("conv2d_grouped_g32", "conv", 2, (8, 256, 56, 56), (256, 8, 3, 3), padding=1,
           groups=32, category="thin"))
    add(_w("conv3d_depthwise", "conv", 3, (2, 64, 16, 56, 56), (64, 1, 3, 3, 3), padding=1,
           groups=64, category="thin", quick=True))
    add(_w("conv1d", "conv", **c1d, padding=1, category="thin", quick=True))
    for d in (1, 4, 16):
        add(_w(f"conv1d_wavenet_d{d}", "conv", 1, (4, 64, 16000), (64, 64, 2), dilation=d,
               category="thin", quick=d == 4))
    add(_w("conv_transpose3d_unet_dec", "conv_transpose", **dec3d, stride=2, category="thin",
           quick=True))
    # Deeper ResNet layers (stages 3 and 4), forward and both gradients: few
    # cells per image, weights of 2-9 MiB.
    deep = {"conv2d_deep_14": dict(nd=2, x=(8, 256, 14, 14), w=(256, 256, 3, 3)),
            "conv2d_deep_7": dict(nd=2, x=(8, 512, 7, 7), w=(512, 512, 3, 3))}
    for name, shapes in deep.items():
        add(_w(name, "conv", **shapes, padding=1, category="deep"))
        for part in ("input", "weight"):
            add(_w(f"{name}_grad_{part}", f"conv_{part}", **shapes, padding=1, category="deep"))
    add(_w("conv2d_deep_7_single", "conv", 2, (1, 512, 7, 7), (512, 512, 3, 3), padding=1,
           category="deep"))
    # Other dtypes.
    add(_w("conv2d_resnet_f64", "conv", **resnet, padding=1, dtype="float64",
           category="float64", quick=True))
    add(_w("conv3d_mid_f64", "conv", **mid3d, padding=1, dtype="float64", category="float64"))
    add(_w("conv2d_c64", "conv", 2, (4, 32, 56, 56), (32, 32, 3, 3), padding=1,
           dtype="complex64", category="complex64", quick=True))
    add(_w("conv2d_c128", "conv", 2, (4, 32, 56, 56), (32, 32, 3, 3), padding=1,
           dtype="complex128", category="complex128"))
    add(_w("conv3d_mid_c64", "conv", **mid3d, padding=1, dtype="complex64",
           category="complex64"))
    add(_w("conv3d_mid_c128", "conv", **mid3d, padding=1, dtype="complex128",
           category="complex128"))
    add(_w("conv1d_f64", "conv", **c1d, padding=1, dtype="float64", category="float64"))
    add(_w("conv2d_1x1_f64", "conv", 2, (8, 256, 56, 56), (64, 256, 1, 1), dtype="float64",
           category="float64"))
    add(_w("conv2d_depthwise_f64", "conv", **dw2d, padding=1, groups=256, dtype="float64",
           category="float64"))
    add(_w("conv_transpose3d_unet_dec_f64", "conv_transpose", **dec3d, stride=2,
           dtype="float64", category="float64"))
    # Single-channel volume filtering (issue 6): 128^3 and 256^3, kernels 3^3 .. 21^3.
    for n in (128, 256):
        for k in (3, 5, 7, 11, 21):
            add(_w(f"volume{n}_k{k}", "conv", 3, (1, 1, n, n, n), (1, 1, k, k, k),
                   padding=k // 2, category="volume", scipy=True,
                   quick=(n, k) in ((128, 5), (128, 11))))
    # Backward: input and weight gradients.
    for part in ("input", "weight"):
        quick = part == "input"
        add(_w(f"conv2d_resnet_grad_{part}", f"conv_{part}", **resnet, padding=1,
               category="backward", quick=True))
        add(_w(f"conv3d_mid_grad_{part}", f"conv_{part}", **mid3d, padding=1,
               category="backward", quick=not quick))
        add(_w(f"conv1d_grad_{part}", f"conv_{part}", **c1d, padding=1, category="backward"))
        add(_w(f"conv2d_depthwise_grad_{part}", f"conv_{part}", **dw2d, padding=1, groups=256,
               category="backward", quick=quick))
        add(_w(f"conv_transpose3d_unet_dec_grad_{part}", f"conv_transpose_{part}", **dec3d,
               stride=2, category="backward", quick=not quick))
        for name, (shapes, kwargs) in dense_grads.items():
            add(_w(f"{name}_grad_{part}", f"conv_{part}", **shapes, **kwargs,
                   category="backward"))
    # Per-call latency.
    tiny = dict(nd=2, x=(1, 3, 8, 8), w=(8, 3, 3, 3), padding=1, category="latency",
                latency=True)
    add(_w("tiny_latency", "conv", **tiny, quick=True))
    add(_w("tiny_latency_busy", "conv", **tiny, busy=True))
    names = [r.name for r in rows]
    assert len(names) == len(set(names)), "workload names must be unique"
    return tuple(rows)


WORKLOADS = _workloads()

# --------------------------------------------------------------------------- environment


def _optional(module):
    try:
        return __import__(module, fromlist=["_"])
    except Exception:
        return None


def machine_description():
    """CPU model, core count and SIMD level, e.g. 'AMD EPYC (Zen 4, AVX-512), 2 cores'."""
    model, family, cpu_model, flags = platform.processor() or platform.machine(), None, None, ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name":
                    model = value
                elif key == "cpu family":
                    family = int(value)
                elif key == "model" and cpu_model is None:
                    cpu_model = int(value)
                elif key == "flags":
                    flags = value
                    break
    except (OSError, ValueError):
        pass
    extras = []
    if "AMD" in model and family == 25 and cpu_model is not None and (
            0x10 <= cpu_model <= 0x1F or 0x60 <= cpu_model <= 0x7F or 0xA0 <= cpu_model <= 0xAF):
        extras.append("Zen 4")
    flags = set(flags.split())
    if "avx512f" in flags:
        extras.append("AVX-512")
    elif "avx2" in flags:
        extras.append("AVX2")
    extra = f" ({', '.join(extras)})" if extras else ""
    from fastconv import _kernels
    return f"{model}{extra}, {os.cpu_count()} cores, fastconv kernels: {_kernels.SIMD}"


def _fastconv_build():
    """Git commit of the fastconv checkout (with '+dirty') and show_config() text."""
    import io
    import fastconv
    info = {}
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit:
            info["git"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            fastconv.show_config()
        info["show_config"] = buf.getvalue()
    except Exception as exc:          # show_config is informative only
        info["show_config"] = f"unavailable: {exc}"
    return info


def _versions(torch, scipy, build):
    import fastconv
    v = {"python": platform.python_version(), "numpy": np.__version__,
         "fastconv": getattr(fastconv, "__version__", "?")}
    git = build.get("git")
    if git:
        v["fastconv"] += f" (git {git})"
    if torch is not None:
        v["torch"] = torch.__version__
    if scipy is not None:
        v["scipy"] = scipy.__version__
    return v


@contextlib.contextmanager
def _blas_threads(n):
    """Limit BLAS (NumPy's matmul) to n threads if threadpoolctl is available."""
    tpc = _optional("threadpoolctl")
    if tpc is None:
        yield
        return
    with tpc.threadpool_limits(limits=n, user_api="blas"):
        yield


@contextlib.contextmanager
def _busy_core():
    """A child process spinning on one core for the duration (contention rows)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        proc.wait()


def _reset_peak_rss():
    """Reset the process's peak RSS (Linux: VmHWM); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss():
    """Peak resident set size in bytes since the last reset, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


#: Rows are meant to stay below this much memory (the whole process's peak RSS).
ROW_MEMORY_LIMIT = 4 << 30

# --------------------------------------------------------------------------- GEMM peak

_PEAK_SIZES = {"float32": 2048, "float64": 2048, "complex64": 1536, "complex128": 1536}


def _random(rng, shape, dtype):
    """Standard-normal data of ``dtype`` (independent real and imaginary parts)."""
    dtype = np.dtype(dtype)
    real = np.float32 if dtype in (np.float32, np.complex64) else np.float64
    a = rng.standard_normal(shape, dtype=real)
    if dtype.kind == "c":
        a = a + 1j * rng.standard_normal(shape, dtype=real)
    return a.astype(dtype, copy=False)


def measure_peak(dtypes, repeats=5, rng=None):
    """GFLOP/s of NumPy matmul per dtype: best of ``repeats`` after one warm-up."""
    rng = np.random.default_rng(0) if rng is None else rng
    peak = {}
    for dtype in dtypes:
        n = _PEAK_SIZES[dtype]
        a, b = _random(rng, (n, n), dtype), _random(rng, (n, n), dtype)
        c = np.empty((n, n), dtype)
        np.matmul(a, b, out=c)
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
        flops = (8 if np.dtype(dtype).kind == "c" else 2) * n ** 3
        peak[dtype] = {"n": n, "seconds": best, "gflops": flops / best / 1e9}
        del a, b, c
    return peak


# --------------------------------------------------------------------------- contenders

_TORCH_PAD = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}
_NUMPY_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _fastconv_call(wl, arrays, algorithm):
    """fastconv's call for the row; ``algorithm`` is honoured for forward ops only."""
    import fastconv as fc
    s, p, d, op, _ = wl.geometry()
    x, w, g = arrays["x"], arrays["w"], arrays.get("g")
    nd, groups = wl.nd, wl.groups
    if wl.op == "conv":
        f = getattr(fc, f"conv{nd}d")
        return lambda: f(x, w, None, s, p, d, groups, padding_mode=wl.padding_mode,
                         algorithm=algorithm)
    if wl.op == "conv_transpose":
        f = getattr(fc, f"conv_transpose{nd}d")
        return lambda: f(x, w, None, s, p, op, groups, d, algorithm=algorithm)
    if wl.op == "conv_input":
        f = getattr(fc.grad, f"conv{nd}d_input")
        return lambda: f(x.shape, w, g, s, p, d, groups, padding_mode=wl.padding_mode)
    if wl.op == "conv_weight":
        f = getattr(fc.grad, f"conv{nd}d_weight")
        return lambda: f(x, w.shape, g, s, p, d, groups, padding_mode=wl.padding_mode)
    if wl.op == "conv_transpose_input":
        f = getattr(fc.grad, f"conv_transpose{nd}d_input")
        return lambda: f(x.shape, w, g, s, p, op, groups, d)
    if wl.op == "conv_transpose_weight":
        f = getattr(fc.grad, f"conv_transpose{nd}d_weight")
        return lambda: f(x, w.shape, g, s, p, op, groups, d)
    raise ValueError(f"unknown op {wl.op!r}")


def _explain(wl, arrays):
    """fastconv.explain for the row's call (gradients: the gradient op)."""
    import fastconv as fc
    s, p, d, op, _ = wl.geometry()
    name = {"conv": f"conv{wl.nd}d", "conv_transpose": f"conv_transpose{wl.nd}d"}.get(wl.op)
    if name is None:
        name = f"{wl.forward_op}{wl.nd}d_{wl.op.rsplit('_', 1)[1]}"
    kwargs = dict(stride=s, padding=p, dilation=d, groups=wl.groups)
    if wl.transposed:
        kwargs["output_padding"] = op
    else:
        kwargs["padding_mode"] = wl.padding_mode
    return fc.explain(name, arrays["x"], arrays["w"], **kwargs)


def _auto_choice(explanation):
    """'implicit_gemm', or 'as_forward>implicit_gemm' for a lowered gradient."""
    lowered = explanation.plan.get("lowered")
    if lowered is not None:
        return f"{explanation.implementation}>{_auto_choice(lowered)}"
    return explanation.implementation


def _kernels(explanation):
    """(name, predicted seconds) of every kernel that applies, lowered ones included."""
    lowered = explanation.plan.get("lowered")
    if explanation.family == "lowering" or lowered is not None:
        found = {}
        for name, family, seconds, _ in explanation.candidates:
            if seconds is not None and family == "lowering":
                found[name] = seconds
        return {**found, **(_kernels(lowered) if lowered is not None else {})}
    return {name: seconds for name, _, seconds, _ in explanation.candidates
            if seconds is not None}


def _forced(call, implementation):
    from fastconv._dispatch import forced

    def run():
        with forced(implementation):
            return call()
    return run


def _torch_call(wl, arrays, torch):
    # PyTorch filters single-channel volumes at ~1-3 G multiply-adds/s: skip rows
    # where one call would take over ~30 s (volume256 with 21^3 kernels).
    if wl.category == "volume" and wl.macs() > 5e10:
        return None
    F = torch.nn.functional
    s, p, d, op, _ = wl.geometry()
    x, w, g = (None if a is None else torch.from_numpy(a)
               for a in (arrays["x"], arrays["w"], arrays.get("g")))
    nd, groups = wl.nd, wl.groups
    if wl.op == "conv":
        f = getattr(F, f"conv{nd}d")
        if wl.padding_mode == "zeros":
            return lambda: f(x, w, None, s, p, d, groups)
        # What torch.nn.ConvNd does for the other padding modes.
        pad = tuple(v for pi in reversed(p) for v in (pi, pi))
        mode = _TORCH_PAD[wl.padding_mode]
        return lambda: f(F.pad(x, pad, mode=mode), w, None, s, 0, d, groups)
    if wl.op == "conv_transpose":
        f = getattr(F, f"conv_transpose{nd}d")
        return lambda: f(x, w, None, s, p, op, groups, d)
    if wl.padding_mode != "zeros":
        return None
    if wl.op == "conv_input":
        f = getattr(torch.nn.grad, f"conv{nd}d_input")
        return lambda: f(x.shape, w, g, s, p, d, groups)
    if wl.op == "conv_weight":
        f = getattr(torch.nn.grad, f"conv{nd}d_weight")
        return lambda: f(x, w.shape, g, s, p, d, groups)
    # torch.nn.grad has no transposed variants: call the op autograd itself uses.
    backward = torch.ops.aten.convolution_backward
    args = (list(s), list(p), list(d), True, list(op), groups)
    if wl.op == "conv_transpose_input":
        x_shape = x.shape
        return lambda: backward(g, g.new_empty(1).expand(x_shape), w, None, *args,
                                (True, False, False))[0]
    if wl.op == "conv_transpose_weight":
        w_shape = w.shape
        return lambda: backward(g, x, w.new_empty(1).expand(w_shape), None, *args,
                                (False, True, False))[1]
    return None


def _scipy_calls(wl, arrays, scipy_threads):
    """scipy.ndimage.correlate and scipy.signal.fftconvolve for single-channel volumes."""
    calls = {}
    if not wl.scipy or wl.op != "conv" or wl.x_shape[:2] != (1, 1) or wl.w_shape[:2] != (1, 1):
        return calls
    s, p, d, _, _ = wl.geometry()
    k = wl.w_shape[2:]
    # Both compute 'same'-size zero-padded correlation: the row must be exactly that.
    if (any(v != 1 for v in s + d) or wl.padding_mode != "zeros"
            or any(2 * pi != ki - 1 for pi, ki in zip(p, k))):
        return calls
    x, w = arrays["x"][0, 0], arrays["w"][0, 0]
    ndimage, signal, sfft = (_optional(m) for m in ("scipy.ndimage", "scipy.signal", "scipy.fft"))
    # ndimage is single-threaded at ~1.3 G multiply-adds/s: skip rows where one
    # call would take over ~40 s (they would dominate the whole run).
    if ndimage is not None and x.size * w.size < 5e10:
        calls["ndimage"] = lambda: ndimage.correlate(x, w, mode="constant", cval=0.0)
    if signal is not None and sfft is not None:
        flipped = np.ascontiguousarray(w[(slice(None, None, -1),) * w.ndim])

        def fft():
            with sfft.set_workers(scipy_threads):
                return signal.fftconvolve(x, flipped, mode="same")

        def oa():
            with sfft.set_workers(scipy_threads):
                return signal.oaconvolve(x, flipped, mode="same")
        calls["fftconvolve"] = fft
        calls["oaconvolve"] = oa
    return calls


def numpy_conv(x, w, stride, padding, dilation, groups, padding_mode="zeros"):
    """Reference-speed baseline: im2col by ``sliding_window_view`` + one matmul per group."""
    from numpy.lib.stride_tricks import sliding_window_view
    nd = x.ndim - 2
    pads = [(0, 0), (0, 0)] + [(pi, pi) for pi in padding]
    xp = np.pad(x, pads, mode=_NUMPY_PAD[padding_mode])
    k = w.shape[2:]
    span = tuple(di * (ki - 1) + 1 for di, ki in zip(dilation, k))
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, si) for si in stride)
              + tuple(slice(None, None, di) for di in dilation)]
    cg, og = x.shape[1] // groups, w.shape[0] // groups
    outs = []
    for gi in range(groups):
        cols = win[:, gi * cg:(gi + 1) * cg]                 # (N, cg, *O, *k)
        res = np.tensordot(cols, w[gi * og:(gi + 1) * og],
                           axes=([1] + list(range(2 + nd, 2 + 2 * nd)),
                                 [1] + list(range(2, 2 + nd))))   # (N, *O, og)
        outs.append(np.moveaxis(res, -1, 1))
    return np.concatenate(outs, axis=1) if groups > 1 else outs[0]


def _numpy_call(wl, arrays, max_bytes=2 << 30):
    if wl.op != "conv":
        return None
    s, p, d, _, out_shape = wl.geometry()
    cols = out_shape[0] * math.prod(out_shape[2:]) * math.prod(wl.w_shape[1:]) * wl.groups
    if cols * np.dtype(wl.dtype).itemsize > max_bytes:
        return None
    x, w = arrays["x"], arrays["w"]
    return lambda: numpy_conv(x, w, s, p, d, wl.groups, wl.padding_mode)


def _as_numpy(result):
    if hasattr(result, "detach"):
        result = result.detach().numpy()
    return np.asarray(result)


def _check(ref, other, dtype):
    """Relative max-abs difference; ok below the dtype's tolerance."""
    other = _as_numpy(other)
    if ref.size != other.size:
        return math.inf, f"shape {other.shape} != {ref.shape}"
    other = other.reshape(ref.shape)
    if not np.all(np.isfinite(other)):
        return math.inf, "non-finite values"
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(ref - other))) / max(scale, 1e-30) if ref.size else 0.0
    return err, None


_TOLERANCE = {"float32": 1e-4, "complex64": 1e-4, "float64": 1e-10, "complex128": 1e-10}

# --------------------------------------------------------------------------- timing


# Each sample starts with untimed calls of its contender, for at least
# _SETTLE_S.  The previous contender leaves the caches full of its own arrays
# and, for PyTorch, its OpenMP threads spinning on the 2 cores for a few ms; in
# a fixed cyclic order the same contender always pays for that (fastconv's
# 'auto' followed PyTorch in 4 of 5 rounds: 9 % on C3D, 40 % on a 3 ms
# depthwise gradient, against the same kernel forced one slot later).  Calls
# slower than _SETTLE_CALL_LIMIT skip it: their transition cost is small beside
# them, and settling would double the run.
_SETTLE_S = 0.01
_SETTLE_CALL_LIMIT = 0.5


def _sample(fn, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _sample_calls(fn, min_sample, min_calls=50):
    """Latency rows: time calls one by one for about ``min_sample`` seconds.

    Returns (median, mean) seconds per call.  The median is the per-call
    overhead; the mean adds the occasional stall (an OpenMP thread waiting
    for a core), which on a shared machine can be 100x the median.
    """
    times = []
    total = 0.0
    clock = time.perf_counter
    while total < min_sample or (len(times) < min_calls and total < 5 * min_sample):
        t0 = clock()
        fn()
        dt = clock() - t0
        times.append(dt)
        total += dt
    return statistics.median(times), total / len(times)


def _calibrate(fn, min_sample):
    """Seconds per call (a rough estimate) and the repeats for one sample."""
    t = _sample(fn, 1)
    if t < 1e-3:                       # tiny calls: estimate over a few ms
        t = _sample(fn, max(1, int(5e-3 / max(t, 1e-7))))
    reps = max(1, math.ceil(min_sample / max(t, 1e-9)))
    return t, reps


def _make_arrays(wl, seed):
    rng = np.random.default_rng(seed)
    arrays = {"x": _random(rng, wl.x_shape, wl.dtype), "w": _random(rng, wl.w_shape, wl.dtype)}
    if wl.op not in ("conv", "conv_transpose"):
        arrays["g"] = _random(rng, wl.geometry()[-1], wl.dtype)
    return arrays


def _reference_shape(wl):
    """Shape of every contender's result: input, weight or output shape."""
    if wl.op.endswith("_input"):
        return wl.x_shape
    if wl.op.endswith("_weight"):
        return wl.w_shape
    return wl.geometry()[-1]


def run_workload(wl, *, rounds=5, min_sample=0.02, budget=20.0, threads=None, torch=None,
                 use_scipy=True, use_numpy=False, implementations="fast", seed=0, log=None):
    """Time one workload against its contenders; return a JSON-able dict.

    ``implementations``: fastconv kernels to time forced, besides 'auto': 'all'
    (every one that applies), 'fast' (those the cost model predicts within 4x
    of auto's choice), or a tuple of names.
    """
    import fastconv as fc
    log = log or (lambda *a: None)
    threads = threads or fc.get_num_threads()
    row = {"workload": asdict(wl), "describe": wl.describe(), "macs": wl.macs(),
           "flops": wl.flops(), "operand_bytes": wl.operand_bytes(), "contenders": {},
           "auto_choice": None, "errors": {}, "checks": {}, "peak_rss": {}}
    arrays = _make_arrays(wl, seed)

    # Contenders in the order of each round.
    explanation = _explain(wl, arrays)
    row["auto_choice"] = _auto_choice(explanation)
    row["explain"] = str(explanation)
    calls = {"fastconv": _fastconv_call(wl, arrays, "auto")}
    kernels = _kernels(explanation)
    if implementations == "fast":
        chosen = [n for n, t in kernels.items() if t <= 4 * explanation.seconds]
    elif implementations == "all":
        chosen = list(kernels)
    else:
        chosen = [n for n in implementations if n in kernels]
    for name in chosen:
        calls[f"fc:{name}"] = _forced(_fastconv_call(wl, arrays, "auto"), name)
    if torch is not None:
        call = _torch_call(wl, arrays, torch)
        if call is not None:
            calls["torch"] = call
    if use_scipy:
        calls.update(_scipy_calls(wl, arrays, threads))
    if use_numpy:
        call = _numpy_call(wl, arrays)
        if call is not None:
            calls["numpy"] = call

    # Warm-up and check; fastconv's auto result is the reference.
    ref = None
    live, first = {}, {}
    tol = _TOLERANCE[wl.dtype]
    for name, fn in calls.items():
        _reset_peak_rss()
        try:
            t0 = time.perf_counter()
            out = fn()
            first[name] = time.perf_counter() - t0
        except Exception as exc:
            row["errors"][name] = f"{type(exc).__name__}: {exc}"
            log(f"  !! {wl.name}: {name} raised {type(exc).__name__}: {exc}")
            if name == "fastconv":
                row["errors"]["traceback"] = traceback.format_exc()
                return row
            continue
        row["peak_rss"][name] = _peak_rss()
        if (row["peak_rss"][name] or 0) > ROW_MEMORY_LIMIT:
            log(f"  !! {wl.name}: {name} peaked at {row['peak_rss'][name] / 2**30:.1f} GiB RSS")
        if name == "fastconv":
            ref = _as_numpy(out).reshape(_reference_shape(wl))
        if ref is not None and name != "fastconv":
            err, problem = _check(ref, out, wl.dtype)
            row["checks"][name] = err
            if problem or err > tol:
                log(f"  !! {wl.name}: {name} differs from fastconv: rel. max error {err:.3g}"
                    f"{' (' + problem + ')' if problem else ''}")
        live[name] = fn
        del out
    del ref
    if "fastconv" not in live:
        return row

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        plan = {}
        for name, fn in live.items():
            if wl.latency:
                continue                          # timed call by call, see below
            if first[name] > budget:              # too slow to repeat: the warm-up is the sample
                plan[name] = (1, 0)
                continue
            if first[name] > 5 * min_sample:      # slow call: the warm-up is estimate enough
                t, reps = first[name], 1
            else:
                t, reps = _calibrate(fn, min_sample)
            sample = max(t * reps, min_sample)
            n = rounds if sample * rounds <= budget else max(1, int(budget // sample))
            plan[name] = (reps, n)
        samples = {name: [] if plan.get(name, (0, 1))[1] else [first[name]] for name in live}
        means = {name: [] for name in live}       # latency rows: mean per call, stalls included
        names = list(live)
        settle_reps = {name: max(1, math.ceil(_SETTLE_S / max(first[name], 1e-6)))
                       for name in live}
        if wl.latency:                # cheap rows, and the noisiest: more rounds
            rounds = max(rounds, 11)
            plan = {name: (0, rounds) for name in live}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                reps, n = plan[name]
                if r >= n:
                    continue
                if wl.latency:
                    med_call, mean_call = _sample_calls(live[name], min_sample)
                    samples[name].append(med_call)
                    means[name].append(mean_call)
                else:
                    if first[name] < _SETTLE_CALL_LIMIT:
                        _sample(live[name], settle_reps[name])   # untimed: see _SETTLE_S
                    samples[name].append(_sample(live[name], reps))
    finally:
        if gc_was_enabled:
            gc.enable()
    for name, ts in samples.items():
        med = statistics.median(ts)
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [med, med, med]
        entry = {"median_s": med, "min_s": min(ts), "samples_s": ts,
                 "reps": plan[name][0], "rounds": len(ts),
                 "iqr_rel": (q[2] - q[0]) / med if med else 0.0}
        if means[name]:
            entry["mean_call_s"] = statistics.median(means[name])
            entry["mean_call_samples_s"] = means[name]
        row["contenders"][name] = entry
    return row


# --------------------------------------------------------------------------- derived numbers


def derive(row, peak):
    """Add GFLOP/s, % of peak and ratios to a timed row (in place); return it."""
    c = row["contenders"]
    dtype = row["workload"]["dtype"]
    pk = peak.get(dtype, {}).get("gflops")

    def ms(name):
        return c[name]["median_s"] * 1e3 if name in c else None

    fc_ms = ms("fastconv")
    d = {}
    if fc_ms:
        d["gflops"] = row["flops"] / (fc_ms * 1e6)
        d["pct_peak"] = 100 * d["gflops"] / pk if pk else None
        for other in ("torch", "ndimage", "fftconvolve", "oaconvolve", "numpy"):
            if ms(other):
                d[f"{other}_ratio"] = ms(other) / fc_ms
        explicit = {n[3:]: ms(n) for n in c if n.startswith("fc:")}
        if explicit:
            best = min(explicit, key=explicit.get)
            d["best_implementation"] = best
            d["auto_over_best"] = fc_ms / explicit[best]
    if ms("torch"):
        d["torch_gflops"] = row["flops"] / (ms("torch") * 1e6)
        d["torch_pct_peak"] = 100 * d["torch_gflops"] / pk if pk else None
    row["derived"] = d
    return row


def _geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarize(rows):
    """Per category: rows, geomean and min of torch/fastconv, min % of peak."""
    out = []
    for cat, target in CATEGORY_TARGETS.items():
        sel = [r for r in rows if r["workload"]["category"] == cat and "derived" in r]
        ratios = [r["derived"].get("torch_ratio") for r in sel]
        ratios = [v for v in ratios if v]
        if not ratios:
            continue
        pct = [r["derived"].get("pct_peak") for r in sel if r["derived"].get("pct_peak")]
        out.append({"category": cat, "rows": len(ratios), "geomean": _geomean(ratios),
                    "min": min(ratios), "min_row": min(sel, key=lambda r: r["derived"].get(
                        "torch_ratio") or math.inf)["workload"]["name"],
                    "min_pct_peak": min(pct) if pct else None, "target": target})
    return out


# --------------------------------------------------------------------------- formatting


def _fmt_time(seconds, latency, rounds=None, full_rounds=None):
    if seconds is None:
        return "—"
    text = f"{seconds * 1e6:.1f} us" if latency else (
        f"{seconds * 1e3:.3g}" if seconds < 1e-2 else f"{seconds * 1e3:.1f}")
    if rounds is not None and full_rounds is not None and rounds < full_rounds:
        text += "*"
    return text


def _fmt(v, spec=".2f"):
    return "—" if v is None else format(v, spec)


def _columns(rows):
    has = lambda n: any(n in r["contenders"] or n in r.get("errors", {}) for r in rows)
    algorithms = sorted({n[3:] for r in rows for n in r["contenders"] if n.startswith("fc:")})
    cols = ["workload", "shape", "dtype", "GFLOP", "auto", "fastconv ms"]
    cols += [f"{a} ms" for a in algorithms]
    extra = [n for n in ("torch", "ndimage", "fftconvolve", "oaconvolve", "numpy") if has(n)]
    cols += [f"{n} ms" for n in extra]
    cols += ["GFLOP/s", "% peak"]
    if "torch" in extra:
        cols += ["torch % peak"]
    cols += [f"{n}/fc" for n in extra]
    cols += ["auto/best", "RSS GB", "load", "check"]
    return cols, extra, algorithms


def _cells(row, algorithms, extra, full_rounds):
    wl, c, d = row["workload"], row["contenders"], row.get("derived", {})
    lat = wl["latency"]

    def t(name):
        e = c.get(name)
        if e is None:
            return "ERR" if name in row.get("errors", {}) else "—"
        text = _fmt_time(e["median_s"], lat, e["rounds"], full_rounds)
        if "mean_call_s" in e:
            text += f" (mean {_fmt_time(e['mean_call_s'], lat)})"
        return text

    check = "ok"
    bad = [f"{n} {e:.1e}" for n, e in row.get("checks", {}).items()
           if e > _TOLERANCE[wl["dtype"]]]
    errs = [n for n in row.get("errors", {}) if n != "traceback"]
    big = [f"{n} RSS {v / 2**30:.1f} GiB" for n, v in row.get("peak_rss", {}).items()
           if v and v > ROW_MEMORY_LIMIT]
    if bad or errs or big:
        check = "; ".join(bad + [f"{n} error" for n in errs] + big)
    cells = [wl["name"], row["describe"], wl["dtype"], f"{row['flops'] / 1e9:.3g}",
             row.get("auto_choice") or "—", t("fastconv")]
    cells += [t(f"fc:{a}") for a in algorithms]
    cells += [t(n) for n in extra]
    cells += [_fmt(d.get("gflops"), ".1f"), _fmt(d.get("pct_peak"), ".0f")]
    if "torch" in extra:
        cells += [_fmt(d.get("torch_pct_peak"), ".0f")]
    cells += [_fmt(d.get(f"{n}_ratio")) for n in extra]
    rss = [v for v in row.get("peak_rss", {}).values() if v]
    cells += [_fmt(d.get("auto_over_best")), _fmt(max(rss) / 2**30 if rss else None, ".1f"),
              _fmt(row.get("load_1min"), ".1f"), check]
    return cells


def markdown_table(rows, full_rounds):
    cols, extra, algorithms = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cells(row, algorithms, extra, full_rounds)) + " |")
    return "\n".join(lines)


def summary_table(summary):
    lines = ["| category | rows | geomean torch/fc | min torch/fc (row) | min % peak | target |",
             "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['category']} | {s['rows']} | {_fmt(s['geomean'])} | "
                     f"{_fmt(s['min'])} ({s['min_row']}) | {_fmt(s['min_pct_peak'], '.0f')} | "
                     f"{s['target']} |")
    return "\n".join(lines)


def _console_line(row):
    wl, c, d = row["workload"], row["contenders"], row.get("derived", {})
    parts = [f"{wl['name']:<36}"]
    for name, e in c.items():
        parts.append(f"{name}={_fmt_time(e['median_s'], wl['latency'])}")
    if d:
        parts.append(f"| {_fmt(d.get('gflops'), '.1f')} GFLOP/s {_fmt(d.get('pct_peak'), '.0f')}%pk")
        if d.get("torch_ratio"):
            parts.append(f"torch/fc={d['torch_ratio']:.2f}")
        for n in ("ndimage", "fftconvolve", "oaconvolve", "numpy"):
            if d.get(f"{n}_ratio"):
                parts.append(f"{n}/fc={d[f'{n}_ratio']:.2f}")
        parts.append(f"auto={row.get('auto_choice')} auto/best={_fmt(d.get('auto_over_best'))}")
    return " ".join(parts)


def _header(meta):
    pk = ", ".join(f"{k} {v['gflops']:.0f}" for k, v in meta["peak"].items())
    if "peak_end" in meta:
        pk += (" (best over the run; at the start: " + ", ".join(
            f"{v['gflops']:.0f}" for v in meta["peak_start"].values()) + "; at the end: "
            + ", ".join(f"{v['gflops']:.0f}" for v in meta["peak_end"].values()) + ")")
    vers = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines = [f"# fastconv benchmarks — {meta['date']}, {meta['machine']}", "",
             f"- Versions: {vers}",
             f"- Threads: {meta['threads']} (fastconv, torch.set_num_threads, BLAS for the "
             f"peak); suite: {meta['suite']}, {meta['rounds']} interleaved rounds, median, "
             f"samples >= {meta['min_sample_ms']:g} ms; kernels timed besides 'auto': "
             f"{meta['implementations']}",
             f"- GEMM peak (NumPy matmul, GFLOP/s): {pk}",
             f"- Load average at start / end: {meta['load_start']} / {meta.get('load_end', '?')}"]
    if meta.get("note"):
        lines.append(f"- Note: {meta['note']}")
    lines += ["- Times in ms per call; latency rows: median µs per call (mean per call, "
              "stalls included, in parentheses); `*` = fewer rounds (slow "
              "contender, time budget); ratios > 1 mean fastconv is faster; `auto/best` = "
              "fastconv 'auto' time over the fastest forced kernel; `auto` = the kernel "
              "'auto' ran (fastconv.explain); `load` = 1-minute load "
              "average after the row (> threads means other processes competed for the cores).",
              ""]
    return "\n".join(lines)


def render_markdown(meta, rows):
    parts = [_header(meta), "## Summary (targets of issue 12)", "",
             summary_table(summarize(rows)), "", "## All rows", "",
             markdown_table(rows, meta["rounds"]), ""]
    errors = [(r["workload"]["name"], n, e) for r in rows
              for n, e in r.get("errors", {}).items() if n != "traceback"]
    if errors:
        parts += ["## Errors", ""] + [f"- `{w}` {n}: {e}" for w, n, e in errors] + [""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- main


def select(workloads, quick=False, filters=()):
    rows = [w for w in workloads if w.quick or not quick]
    if filters:
        rows = [w for w in rows if any(f.lower() in w.name.lower() for f in filters)]
    return rows


def _parser():
    p = argparse.ArgumentParser(
        prog="bench.py", description="fastconv vs PyTorch / SciPy, side by side, interleaved "
        "rounds, medians, GFLOP/s and % of the NumPy GEMM peak measured in the same run.")
    p.add_argument("--quick", action="store_true",
                   help="a representative subset that finishes in under 2 minutes")
    p.add_argument("--filter", action="append", default=[], metavar="SUBSTR",
                   help="only workloads whose name contains SUBSTR (repeatable; "
                        "comma-separated also works)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds per row (default 5; 3 with --quick)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for fastconv, torch, BLAS and scipy.fft (default: all cores)")
    p.add_argument("--json", metavar="FILE", help="write raw results (every sample) as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="bar chart of the speed-ups (needs matplotlib: pip install "
                        "'fastconv[plot]')")
    p.add_argument("--markdown", metavar="FILE", help="write the results table as Markdown")
    p.add_argument("--min-sample-ms", type=float, default=20.0,
                   help="repeat each call so one sample lasts at least this long (default 20)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per contender per row before rounds are cut "
                        "(default 20; 4 with --quick)")
    p.add_argument("--implementations", default="fast", metavar="LIST",
                   help="fastconv kernels to time forced besides 'auto': 'fast' (those the "
                        "cost model predicts within 4x of auto's, the default), 'all' (every "
                        "registry entry that applies), 'none', or comma-separated names")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--no-scipy", action="store_true", help="do not time SciPy")
    p.add_argument("--numpy", action="store_true",
                   help="add the NumPy im2col+matmul baseline (on by default without torch)")
    p.add_argument("--peak-repeats", type=int, default=None,
                   help="GEMM peak: best of this many matmuls (default 5; 3 with --quick)")
    p.add_argument("--date", default=None, help="date for the Markdown header (default today)")
    p.add_argument("--machine", default=None,
                   help="machine description for the header (default: from /proc/cpuinfo)")
    p.add_argument("--note", default=None, help="a line of context for the Markdown header")
    p.add_argument("--list", action="store_true", help="list the selected workloads and exit")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    filters = [f for item in args.filter for f in item.split(",") if f]
    rows_sel = select(WORKLOADS, args.quick, filters)
    if args.list:
        for w in rows_sel:
            print(f"{w.name:<36} {'quick' if w.quick else '     '} {w.op:<22} {w.dtype:<10} "
                  f"{w.describe()}  {w.flops() / 1e9:.3g} GFLOP")
        return 0
    if not rows_sel:
        print("no workload matches", file=sys.stderr)
        return 1
    for w in rows_sel:
        if 3 * w.operand_bytes() > 4 << 30:
            raise SystemExit(f"{w.name}: operands alone exceed the 4 GB per-row budget")

    import fastconv as fc
    rounds = args.rounds or (3 if args.quick else 5)
    budget = args.budget or (4.0 if args.quick else 20.0)
    threads = args.threads or os.cpu_count() or 1
    fc.set_num_threads(threads)
    torch = None if args.no_torch else _optional("torch")
    scipy = None if args.no_scipy else _optional("scipy")
    use_numpy = args.numpy or torch is None
    if torch is not None:
        torch.set_num_threads(threads)
    implementations = args.implementations.strip()
    if implementations == "none":
        implementations = ()
    elif implementations not in ("fast", "all"):
        from fastconv._dispatch import REGISTRY
        known = {impl.name for table in REGISTRY.values() for impl in table}
        implementations = tuple(v.strip() for v in implementations.split(",") if v.strip())
        unknown = sorted(set(implementations) - known)
        if unknown:
            raise SystemExit(f"--implementations: unknown {unknown}; registered: {sorted(known)}")

    t_start = time.perf_counter()
    build = _fastconv_build()
    meta = {"date": args.date or datetime.date.today().isoformat(),
            "machine": args.machine or machine_description(),
            "versions": _versions(torch, scipy, build), "threads": threads,
            "suite": "quick" if args.quick else "full" + (f" (filter {filters})" if filters else ""),
            "rounds": rounds, "min_sample_ms": args.min_sample_ms, "budget_s": budget,
            "load_start": " ".join(f"{v:.2f}" for v in os.getloadavg()), "note": args.note,
            "implementations": implementations, "argv": sys.argv if argv is None else list(argv),
            "fastconv_build": build}
    print(f"fastconv benchmarks: {meta['machine']}; {meta['versions']}; threads={threads}, "
          f"rounds={rounds}, load {meta['load_start']}", flush=True)

    results = []

    def save():
        meta["load_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
        meta["elapsed_s"] = time.perf_counter() - t_start
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "summary": summarize(results), "rows": results}, f,
                          indent=1, default=str)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(render_markdown(meta, results))

    no_grad = torch.no_grad() if torch is not None else contextlib.nullcontext()
    with _blas_threads(threads), no_grad:
        dtypes = [d for d in _PEAK_SIZES if any(w.dtype == d for w in rows_sel)]
        peak_repeats = args.peak_repeats or (3 if args.quick else 5)
        meta["peak_start"] = meta["peak"] = measure_peak(dtypes, peak_repeats)
        print("GEMM peak (GFLOP/s): " + ", ".join(
            f"{k} {v['gflops']:.1f}" for k, v in meta["peak"].items()), flush=True)
        for wl in rows_sel:
            busy = _busy_core() if wl.busy else contextlib.nullcontext()
            with busy:
                row = run_workload(wl, rounds=rounds, min_sample=args.min_sample_ms / 1e3,
                                   budget=budget, threads=threads, torch=torch,
                                   use_scipy=scipy is not None, use_numpy=use_numpy,
                                   implementations=implementations,
                                   log=lambda m: print(m, flush=True))
            row["load_1min"] = os.getloadavg()[0]
            # One more matmul of the row's dtype: on a shared machine the quiet
            # moments come and go, and the peak is the best seen in the whole run.
            probe = measure_peak([wl.dtype], repeats=1)[wl.dtype]
            row["peak_probe_gflops"] = probe["gflops"]
            if probe["gflops"] > meta["peak"][wl.dtype]["gflops"]:
                meta["peak"] = dict(meta["peak"], **{wl.dtype: probe})
            derive(row, meta["peak"])
            results.append(row)
            print(_console_line(row), flush=True)
            save()
        # The peak again at the end; the best of both is the peak (a noisy machine
        # only ever makes it look lower).
        meta["peak_end"] = measure_peak(dtypes, peak_repeats)
        meta["peak"] = {d: max(meta["peak"][d], meta["peak_end"][d],
                               key=lambda v: v["gflops"]) for d in dtypes}
        print("GEMM peak at the end (GFLOP/s): " + ", ".join(
            f"{k} {v['gflops']:.1f}" for k, v in meta["peak_end"].items()), flush=True)
        for row in results:
            derive(row, meta["peak"])
    save()
    print()
    print(render_markdown(meta, results))
    print(f"elapsed {meta['elapsed_s']:.0f} s")
    if args.plot:
        plot_speedups(results, args.plot, meta)
        print(f"speed-up chart written to {args.plot}")
    return 0


def plot_speedups(rows, path, meta):
    """Horizontal bars: each contender's time over fastconv's, per workload (log scale)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'fastconv[plot]'") from None
    contenders = [n for n in ("torch", "ndimage", "fftconvolve", "oaconvolve", "numpy")
                  if any(r.get("derived", {}).get(f"{n}_ratio") for r in rows)]
    names = [r["workload"]["name"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) * max(1, len(contenders)) + 1.5))
    height = 0.8 / max(1, len(contenders))
    for i, n in enumerate(contenders):
        values = [r.get("derived", {}).get(f"{n}_ratio") or 0 for r in rows]
        ax.barh([y + i * height for y in range(len(rows))], values, height=height,
                label=f"{n} time / fastconv time")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks([y + height * (len(contenders) - 1) / 2 for y in range(len(rows))])
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of fastconv (> 1: fastconv faster)")
    ax.set_title(f"fastconv speed-ups, {meta['machine']}, {meta['threads']} threads",
                 fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
