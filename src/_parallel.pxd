# The one parallel driver of every kernel: per-thread scratch, a dynamic
# schedule of jobs, Ctrl-C polling, and the errors raised afterwards.
#
#     cdef Driver d = start(njobs, num_threads)
#     with nogil, parallel(num_threads=d.threads, use_threads_if=d.threads > 1):
#         buf = <T*> malloc(...)                      # thread-private scratch
#         for job in prange(njobs, schedule="dynamic", chunksize=1):
#             if proceed(&d, buf != NULL):
#                 the_job(..., job, buf, &d)           # long jobs call interrupted()
#         free(buf)
#     finish(&d, "im2col buffer")
#
# Jobs are fixed by the problem shape (never by the thread count), so the
# dynamic schedule changes who computes a job, never how.
from cython.parallel cimport threadid

cdef extern from "_interrupt.h":
    double fc_monotonic() nogil
    void fc_poll_signals(int* stop, double* last) nogil
    int fc_stopped(int* stop) nogil
    void fc_set_flag(int* flag) nogil


cdef struct Driver:
    int threads         # never more than jobs: a lone job runs on thread 0, which polls
    int stop            # set by thread 0 when a signal handler raised (KeyboardInterrupt)
    int failed          # set when a thread could not allocate its scratch
    double last         # last poll (CLOCK_MONOTONIC seconds)


cdef inline Driver start(Py_ssize_t njobs, int num_threads) noexcept nogil:
    cdef Driver d
    d.threads = num_threads if num_threads < njobs else <int>(njobs if njobs > 0 else 1)
    if d.threads < 1:
        d.threads = 1
    d.stop = 0
    d.failed = 0
    d.last = fc_monotonic()
    return d


cdef inline bint proceed(Driver* d, bint have_scratch) noexcept nogil:
    """At the top of each job: thread 0 polls Ctrl-C; False if the job must be skipped."""
    if threadid() == 0:
        fc_poll_signals(&d.stop, &d.last)
    if fc_stopped(&d.stop):
        return False
    if not have_scratch:
        fc_set_flag(&d.failed)
        return False
    return True


cdef inline bint interrupted(Driver* d) noexcept nogil:
    """Inside a long job (one spanning the whole batch): poll on thread 0, True to stop."""
    if threadid() == 0:
        fc_poll_signals(&d.stop, &d.last)
    return fc_stopped(&d.stop)


cdef inline int finish(Driver* d, str scratch) except -1:
    """After the region (with the GIL): re-raise a KeyboardInterrupt, or MemoryError."""
    if d.stop:
        return -1       # the exception the signal handler raised is still set
    if d.failed:
        raise MemoryError(f"fastconv: could not allocate the {scratch}")
    return 0
