# The kernels compiled with -march=native (opt-in: FASTSOFTMAX_NATIVE=1 at
# build time); see _kernels.pxi.
include "_kernels.pxi"
