"""Run SciPy's own filter tests with fastconv's functions in SciPy's place.

    python benchmarks/run_scipy_tests.py            # the whole test_filters.py
    python benchmarks/run_scipy_tests.py -k sobel   # extra arguments go to pytest
    python benchmarks/run_scipy_tests.py --signal   # test_signaltools.py, fastconv.signal

``--signal`` runs ``scipy/signal/tests/test_signaltools.py`` of the installed
SciPy with ``convolve``, ``correlate``, ``fftconvolve`` and ``oaconvolve``
of ``fastconv.signal`` swapped in (in ``scipy.signal``, its
``_signaltools`` module and the test module's own imported names); the
tests of the other functions in that file (lfilter, medfilt, ...) run
SciPy's code, except where they call the four (resample, for one).
Deliberate differences are in KNOWN_SIGNAL (SciPy 1.17.1: see
benchmarks/README.md for the counts).

The test file is the one of the installed SciPy
(``scipy/ndimage/tests/test_filters.py``).  Before it is collected,
``scipy.ndimage.<name>`` (and ``scipy.ndimage._filters.<name>``) is replaced
by ``fastconv.ndimage.<name>`` for every name in REPLACED once the tests are
collected, so each test of those functions exercises fastconv.  The functions fastconv does not replace
(median, rank, minimum, generic filters...) keep running SciPy's code.

Deliberate differences from SciPy are skipped by name in KNOWN, with the
reason; everything else is expected to pass (SciPy 1.17.1: 2430 passed, 48
skipped by KNOWN, 0 failed).
"""
import os
import sys

import pytest
import scipy.ndimage
import scipy.signal

import fastconv.ndimage
import fastconv.signal

REPLACED = ("correlate1d", "convolve1d", "gaussian_filter1d", "gaussian_filter",
            "uniform_filter1d", "uniform_filter", "sobel", "prewitt", "laplace",
            "gaussian_laplace", "gaussian_gradient_magnitude", "correlate", "convolve")

def _unsorted_axes(item):
    axes = getattr(getattr(item, "callspec", None), "params", {}).get("axes")
    return axes is not None and list(a % 3 for a in axes) != sorted(a % 3 for a in axes)


#: (test name, predicate on the collected item or None, why fastconv differs)
KNOWN = [
    ("test_correlate_convolve_axes", _unsorted_axes,
     "with unsorted axes, fastconv pairs weights dim i with axes[i] (as it does origin[i]); "
     "SciPy pairs the weights with the sorted axes (scipy/scipy#22576)"),
]


SIGNAL_REPLACED = ("convolve", "correlate", "fftconvolve", "oaconvolve")


#: (test name, predicate on the collected item or None, why fastconv differs)
KNOWN_SIGNAL = [
    ("test_convolve_longdtype_input", None,
     "fastconv.signal.convolve(method='direct') does not compute long double (its kernels are "
     "float32/float64/complex; TypeError); fftconvolve does"),
]


class SwapIn:
    """pytest plugin: fastconv's functions in place of SciPy's, for the session."""

    def __init__(self, signal=False):
        self._saved = []
        self._signal = signal
        self._known = KNOWN_SIGNAL if signal else KNOWN

    def _modules_and_names(self, session):
        if not self._signal:
            from scipy.ndimage import _filters
            return fastconv.ndimage, REPLACED, [scipy.ndimage, _filters]
        from scipy.signal import _signaltools
        test_modules = {item.module for item in session.items if item.module is not None}
        return fastconv.signal, SIGNAL_REPLACED, [scipy.signal, _signaltools, *test_modules]

    def pytest_collection_finish(self, session):
        # after collection: SciPy's test decorators look its own functions up
        # in a capabilities table at import time; the test bodies then call
        # whatever ``ndimage.<name>`` is when they run
        ours_module, names, modules = self._modules_and_names(session)
        swap = {}
        for name in names:
            ours = getattr(ours_module, name)
            for module in modules:
                if not hasattr(module, name):
                    continue
                swap[id(getattr(module, name))] = ours
                self._saved.append((module, name, getattr(module, name)))
                setattr(module, name, ours)
        # tests parametrized with the function objects themselves (and that
        # compare them with ``ndimage.<name>``) get fastconv's too
        for item in session.items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            for key, value in params.items():
                if callable(value) and id(value) in swap:
                    params[key] = swap[id(value)]

    def pytest_sessionfinish(self, session, exitstatus):
        for module, name, original in reversed(self._saved):
            setattr(module, name, original)

    def pytest_collection_modifyitems(self, config, items):
        for item in items:
            for name, applies, reason in self._known:
                if item.originalname == name and (applies is None or applies(item)):
                    item.add_marker(pytest.mark.skip(reason=f"fastconv differs: {reason}"))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    signal = "--signal" in argv
    argv = [a for a in argv if a != "--signal"]
    package = os.path.dirname(os.path.dirname(scipy.ndimage.__file__))
    if signal:
        tests = os.path.join(package, "signal", "tests", "test_signaltools.py")
    else:
        tests = os.path.join(package, "ndimage", "tests", "test_filters.py")
    # rootdir = the scipy package, so that its conftest.py (the xp fixture,
    # the array-API marks) is loaded
    args = [tests, "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
            "--rootdir", package] + argv
    return pytest.main(args, plugins=[SwapIn(signal)])


if __name__ == "__main__":
    sys.exit(main())
