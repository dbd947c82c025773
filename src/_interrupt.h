/* Ctrl-C inside long OpenMP regions.
 *
 * OpenMP thread 0 (the Python thread that called the kernel) calls
 * fc_poll_signals between jobs.  At most every 50 ms it takes the GIL and runs
 * Python's signal handlers; if one raised (KeyboardInterrupt), the exception
 * stays set and *stop tells every thread to skip its remaining jobs.  One
 * parallel region per call: no extra joins, which cost a time slice each when
 * the other core is busy.
 */
#ifndef FASTCONV_INTERRUPT_H
#define FASTCONV_INTERRUPT_H
#include <Python.h>
#include <time.h>

static double fc_monotonic(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fc_poll_signals(volatile int *stop, double *last) {
    double now = fc_monotonic();
    if (now - *last < 0.05)
        return;
    *last = now;
    PyGILState_STATE state = PyGILState_Ensure();
    if (PyErr_CheckSignals() != 0)
        *stop = 1;
    PyGILState_Release(state);
}

static int fc_stopped(volatile int *stop) { return *stop; }

/* Set a flag shared by the threads of a region (any thread may set it). */
static void fc_set_flag(int *flag) { __atomic_store_n(flag, 1, __ATOMIC_RELAXED); }
#endif
