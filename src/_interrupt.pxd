cdef extern from "_interrupt.h":
    double fc_monotonic() nogil
    void fc_poll_signals(int* stop, double* last) nogil
    int fc_stopped(int* stop) nogil


cdef inline int reraise() except -1:
    """Propagate the exception a signal handler left set (called with the GIL)."""
    return -1
