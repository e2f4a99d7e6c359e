# The kernels compiled for the avx512 instruction set; see _kernels.pxi.
include "_kernels.pxi"
