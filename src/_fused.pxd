# The one fused type every kernel is specialised over.
ctypedef fused conv_t:
    float
    double
    float complex
    double complex
