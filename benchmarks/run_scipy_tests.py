"""Run SciPy's own ndimage filter tests with fastconv's functions in SciPy's place.

    python benchmarks/run_scipy_tests.py            # the whole test_filters.py
    python benchmarks/run_scipy_tests.py -k sobel   # extra arguments go to pytest

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

import fastconv.ndimage

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


class SwapIn:
    """pytest plugin: fastconv's functions in place of SciPy's, for the session."""

    def __init__(self):
        self._saved = []

    def pytest_collection_finish(self, session):
        # after collection: SciPy's test decorators look its own functions up
        # in a capabilities table at import time; the test bodies then call
        # whatever ``ndimage.<name>`` is when they run
        from scipy.ndimage import _filters
        swap = {}
        for name in REPLACED:
            ours = getattr(fastconv.ndimage, name)
            for module in (scipy.ndimage, _filters):
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
            for name, applies, reason in KNOWN:
                if item.originalname == name and (applies is None or applies(item)):
                    item.add_marker(pytest.mark.skip(reason=f"fastconv differs: {reason}"))


def main(argv=None):
    package = os.path.dirname(os.path.dirname(scipy.ndimage.__file__))
    tests = os.path.join(package, "ndimage", "tests", "test_filters.py")
    # rootdir = the scipy package, so that its conftest.py (the xp fixture,
    # the array-API marks) is loaded
    args = [tests, "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
            "--rootdir", package] + list(sys.argv[1:] if argv is None else argv)
    return pytest.main(args, plugins=[SwapIn()])


if __name__ == "__main__":
    sys.exit(main())
