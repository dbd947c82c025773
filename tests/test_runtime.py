"""Runtime behaviour (SPEC section 5): thread counts, threadpoolctl, determinism,
calls from several Python threads at once, and ``show_config``.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import fastconv as fc
from conftest import random_array

# Subprocesses start in tests/: "python -c" puts its working directory on
# sys.path, and from the repository root that would import the uncompiled
# source tree instead of the installed package.
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

CONV = {1: fc.conv1d, 2: fc.conv2d, 3: fc.conv3d}


@pytest.fixture
def restore_threads():
    """Put fastconv's thread count back to what it was before the test."""
    before = fc.get_num_threads()
    yield before
    fc.set_num_threads(before)


def _blas_thread_counts():
    return sorted((p["filepath"], p["num_threads"]) for p in threadpool_info()
                  if p["user_api"] == "blas")


# --------------------------------------------------------------------------
# get_num_threads / set_num_threads
# --------------------------------------------------------------------------

def test_get_num_threads_returns_a_positive_int():
    n = fc.get_num_threads()
    assert isinstance(n, int) and n >= 1


@pytest.mark.parametrize("n", [1, 2, 3])
def test_set_num_threads_sets_what_get_num_threads_returns(restore_threads, n):
    fc.set_num_threads(n)
    assert fc.get_num_threads() == n


def test_set_num_threads_can_be_restored(restore_threads):
    before = restore_threads
    fc.set_num_threads(1)
    fc.set_num_threads(before)
    assert fc.get_num_threads() == before


@pytest.mark.parametrize("n", [0, -1, -8])
def test_set_num_threads_below_one_is_rejected(restore_threads, n):
    before = fc.get_num_threads()
    with pytest.raises(ValueError, match=rf"set_num_threads: expected n >= 1, got {n}\b"):
        fc.set_num_threads(n)
    assert fc.get_num_threads() == before


@pytest.mark.parametrize("n", [1.5, 2.0, "2", None, True, [2]],
                         ids=["fraction", "float", "str", "None", "bool", "list"])
def test_set_num_threads_with_a_non_int_is_rejected(restore_threads, n):
    before = fc.get_num_threads()
    with pytest.raises(TypeError,
                       match=rf"set_num_threads: expected n to be an int, got {type(n).__name__}"):
        fc.set_num_threads(n)
    assert fc.get_num_threads() == before


def test_set_num_threads_accepts_numpy_integers(restore_threads):
    fc.set_num_threads(np.int64(1))
    assert fc.get_num_threads() == 1


@pytest.mark.parametrize("value", ["1", "3"])
def test_omp_num_threads_is_honoured(value):
    env = dict(os.environ, OMP_NUM_THREADS=value)
    result = subprocess.run(
        [sys.executable, "-c", "import fastconv; print(fastconv.get_num_threads())"],
        env=env, capture_output=True, text=True, timeout=120, check=True, cwd=TESTS_DIR)
    assert result.stdout.strip() == value


# --------------------------------------------------------------------------
# threadpoolctl
# --------------------------------------------------------------------------

@pytest.mark.parametrize("user_api", [None, "openmp"])
def test_threadpool_limits_lowers_the_thread_count_inside_the_context(restore_threads,
                                                                      user_api):
    fc.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = random_array(rng, (2, 8, 12, 12), np.float64)
    w = random_array(rng, (8, 8, 3, 3), np.float64)
    outside = fc.conv2d(x, w, padding=1)
    with threadpool_limits(limits=1, user_api=user_api):
        assert fc.get_num_threads() == 1
        inside = fc.conv2d(x, w, padding=1)
    assert fc.get_num_threads() == 2
    assert np.array_equal(inside, outside)


@pytest.mark.parametrize("algorithm", ["auto"] + list(fc.ALGORITHMS))
def test_conv_leaves_blas_thread_limits_as_it_found_them(algorithm):
    rng = np.random.default_rng(1)
    x = random_array(rng, (2, 16, 10, 10), np.float32)
    w = random_array(rng, (16, 16, 3, 3), np.float32)
    before = _blas_thread_counts()
    fc.conv2d(x, w, padding=1, algorithm=algorithm)
    assert _blas_thread_counts() == before
    with threadpool_limits(limits=1, user_api="blas"):
        limited = _blas_thread_counts()
        fc.conv2d(x, w, padding=1, algorithm=algorithm)
        assert _blas_thread_counts() == limited
    assert _blas_thread_counts() == before


# --------------------------------------------------------------------------
# Determinism across thread counts
# --------------------------------------------------------------------------

DETERMINISM_SHAPES = {
    # nd: (input shape, weight shape, groups): big enough for many parallel jobs
    1: ((3, 8, 300), (16, 4, 5), 2),
    2: ((2, 8, 24, 20), (16, 8, 3, 3), 1),
    3: ((2, 6, 8, 10, 9), (12, 2, 3, 2, 3), 3),
}


@pytest.mark.parametrize("stride", [1, 2], ids=["s1", "s2"])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("dtype", [np.float32, np.complex128], ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("algorithm", fc.ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_results_are_bitwise_identical_for_one_and_two_threads(restore_threads, nd, algorithm,
                                                               dtype, padding_mode, stride):
    x_shape, w_shape, groups = DETERMINISM_SHAPES[nd]
    rng = np.random.default_rng(nd)
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    b = random_array(rng, w_shape[:1], dtype)
    results = []
    for n in (1, 2):
        fc.set_num_threads(n)
        results.append(CONV[nd](x, w, b, stride, 1, 1, groups, padding_mode=padding_mode,
                                algorithm=algorithm))
    assert np.array_equal(results[0], results[1])


# --------------------------------------------------------------------------
# Calls from several Python threads at once
#
# These run in a fresh interpreter with a timeout: OpenBLAS (pthreads build)
# can deadlock when it runs multi-threaded inside an OpenMP region, and a
# hang must fail one test, not stall the suite.
# --------------------------------------------------------------------------

CONCURRENCY_SCRIPT = r"""
import json, sys, threading
import numpy as np
import fastconv as fc

workload, n_threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(42)
dtypes = {"real": [np.float32, np.float64], "complex": [np.complex64, np.complex128],
          "worker": [np.complex128]}[workload]

def data(shape, dtype):
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)

algorithms = ("auto",) + tuple(fc.ALGORITHMS)
modes = ("zeros", "reflect", "circular", "replicate", "zeros")
problems = []
for i in range(n_threads):
    algorithm = algorithms[(i // 2) % len(algorithms)]   # each on a 2-D and a 3-D problem
    mode, stride = modes[i % len(modes)], 2 if i % 4 == 2 else 1
    if workload == "worker":
        algorithm, mode, stride = "im2col", "zeros", 1
    dtype = dtypes[i % len(dtypes)]
    if i % 2 == 0 and workload != "worker":
        x, w = data((3, 8, 18, 17), dtype), data((12, 4, 3, 3), dtype)
        func, groups = fc.conv2d, 2
    else:
        x, w = data((2, 4, 9, 8, 7), dtype), data((8, 4, 3, 2, 3), dtype)
        func, groups = fc.conv3d, 1
    b = data(w.shape[:1], dtype)
    kwargs = dict(stride=stride, padding=1, groups=groups, padding_mode=mode,
                  algorithm=algorithm)
    problems.append((func, x, w, b, kwargs))

expected = [func(x, w, b, **kw) for func, x, w, b, kw in problems]   # main thread
copies = [(x.copy(), w.copy(), b.copy()) for _, x, w, b, _ in problems]
barrier = threading.Barrier(n_threads)
results = [None] * n_threads

def worker(i):
    func, x, w, b, kw = problems[i]
    barrier.wait()
    got = []
    for r in range(repeats):
        # every other call writes into a stale-filled out= array
        out = np.full(expected[i].shape, np.nan, expected[i].dtype) if r % 2 else None
        got.append(func(x, w, b, out=out, **kw))
    results[i] = got

threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
for t in threads:
    t.start()
for t in threads:
    t.join()
report = {
    "mismatched": [i for i in range(n_threads)
                   if any(not np.array_equal(g, expected[i]) for g in results[i])],
    "max_abs_diff": max(float(np.abs(g - expected[i]).max())
                        for i in range(n_threads) for g in results[i]),
    "modified": [i for i, ((_, x, w, b, _), c) in enumerate(zip(problems, copies))
                 if not all(np.array_equal(a, ac) for a, ac in zip((x, w, b), c))],
}
print(json.dumps(report))
"""


def _run_in_fresh_interpreter(*args, timeout=240):
    result = subprocess.run([sys.executable, "-c", CONCURRENCY_SCRIPT, *map(str, args)],
                            capture_output=True, text=True, timeout=timeout, cwd=TESTS_DIR)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def _blas_is_multithreaded():
    return any(p["num_threads"] > 1 for p in threadpool_info() if p["user_api"] == "blas")


@pytest.mark.parametrize("workload", [
    "real",
    "complex",
])
def test_concurrent_calls_from_eight_python_threads_match_sequential_calls(workload):
    report, stderr = _run_in_fresh_interpreter(workload, 8, 3)
    assert report["modified"] == [], "inputs were modified"
    assert report["mismatched"] == [], (
        f"problems {report['mismatched']} differ from the sequential results "
        f"(max |diff| {report['max_abs_diff']:.3g})")
    assert "OpenMP Loop" not in stderr, stderr


def test_a_call_from_a_worker_thread_matches_the_same_call_from_the_main_thread():
    # One worker thread, no concurrency at all: complex128 im2col, stride 1.
    report, _ = _run_in_fresh_interpreter("worker", 1, 1)
    assert report["mismatched"] == [], (
        f"the worker thread's result differs by up to {report['max_abs_diff']:.3g}")


# --------------------------------------------------------------------------
# show_config
# --------------------------------------------------------------------------

def test_show_config_prints_the_version_and_openmp(capsys):
    fc.show_config()
    printed = capsys.readouterr().out
    assert fc.__version__ in printed
    assert "openmp" in printed.lower()
    assert str(fc.get_num_threads()) in printed
