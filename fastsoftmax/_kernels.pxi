# The compiled kernels.  This file is included by one small .pyx module per
# instruction set (_kernels_baseline.pyx, _kernels_avx2.pyx, ...): the same
# source compiled with different -m flags; fastsoftmax._backend picks one.
#
# Conventions:
# - every kernel works on (rows, n) arrays whose rows are contiguous; the
#   row stride is free (any, even negative or zero for inputs), which is why
#   the memoryviews are [:, :] with the element stride checked on entry; the
#   Python layer has already validated and reshaped everything, so kernels
#   know nothing of axes, dtypes or Python objects (the loss kernel alone
#   checks its class indices, which it must never follow out of a row);
# - fused type `floating` gives one kernel per operation for float32 and
#   float64;
# - the per-element work lives in _vmath.hpp (vectorised exp and reductions,
#   C++ templates that the fused-type code below instantiates); here are
#   the row loops, the GIL release and the threads.

from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, NAN, log
from libc.stdint cimport int64_t, uint16_t
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_CheckExact
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc
cimport numpy as cnp

cnp.import_array()

ctypedef fused floating:
    float
    double

# what the masked forward kernel reads and writes: float, double, or the
# bits of float16 / bfloat16 numbers
ctypedef fused stored:
    float
    double
    uint16_t

# logsumexp's weights: its b (in the compute dtype) or a mask's bytes
ctypedef fused weight:
    float
    double
    unsigned char

cdef extern from "_vmath.hpp" nogil:
    # Build facts, named c_* here: the Python functions below take their names.
    int c_openmp_enabled "fastsoftmax::openmp_enabled"()
    int c_omp_max_threads "fastsoftmax::omp_max_threads"()
    void c_omp_set_num_threads "fastsoftmax::omp_set_num_threads"(int n)
    int c_omp_team_size "fastsoftmax::omp_team_size"()
    int c_simd_width_bytes "fastsoftmax::simd_width_bytes"()
    int c_has_fma "fastsoftmax::has_fma"()
    const char *c_compiler "fastsoftmax::compiler"()
    int c_cpu_supports "fastsoftmax::cpu_supports"(const char *feature)
    const Py_ssize_t COLS "fastsoftmax::cols"
    # whether rows of n elements go through softmax_short_rows
    bint short_rows "fastsoftmax::short_rows"(Py_ssize_t n, size_t itemsize, int take_log)
    bint store_aliases "fastsoftmax::store_aliases"(const void *store, const void *load)
    bint store_stalls "fastsoftmax::store_stalls"(const void *y, const void *x, size_t row_bytes)
    bint walk_backward "fastsoftmax::walk_backward"(const void *y, const void *a, const void *b,
                                                    size_t row_bytes)
    const size_t WALK_MIN_BYTES "fastsoftmax::walk_min_bytes"
    const size_t WALK_MAX_BYTES "fastsoftmax::walk_max_bytes"
    void *stage_clear_of "fastsoftmax::stage_clear_of"(void *area, const void *x)
    const size_t PAGE "fastsoftmax::page"
    const size_t STALL_MIN_BYTES "fastsoftmax::stall_min_bytes"

# The row primitives: C++ templates, instantiated for float or double by the
# fused-type code that calls them.
cdef extern from "_vmath.hpp" namespace "fastsoftmax" nogil:
    T exp[T](T x)
    T row_max[T](const T *x, Py_ssize_t n)
    # (lo: the rounded sum's error, for the partial sums of a split row)
    double row_exp_sum[T](const T *x, T shift, T *e, T *y, Py_ssize_t n)
    double row_exp_sum[T](const T *x, T shift, T *e, T *y, Py_ssize_t n, double *lo)
    double sum_of_parts(const double *hi, const double *lo, Py_ssize_t count)
    double sum_of_parts(const double *hi, const double *lo, Py_ssize_t count, double *total_lo)
    # (den_lo: the error of the rounded sum den, or 0)
    void row_scale_div[T](const T *e, double num, double den, double den_lo, T *y,
                          Py_ssize_t n)
    void row_shift[T](const T *x, T shift, double offset, T *y, Py_ssize_t n)
    double row_log_sum[T](const T *x, T m, const T *e, double S, Py_ssize_t n)
    # row_log_sum in two steps: S - 1, then the logs of a block's rows at once
    double row_sum_minus_one[T](const T *x, T m, const T *e, double S, Py_ssize_t n)
    void logs_of_sums(double *sum, Py_ssize_t count)
    double row_sum[T](const T *x, Py_ssize_t n)
    double row_sum[T](const T *x, Py_ssize_t n, double *lo)
    # (W: T for logsumexp's b, or unsigned char for a mask)
    T row_max_weighted[T, W](const T *x, const W *w, Py_ssize_t n)
    double row_weighted_exp_sum[T, W](const T *x, const W *w, T shift, Py_ssize_t n)
    double row_weighted_exp_sum[T, W](const T *x, const W *w, T shift, Py_ssize_t n,
                                      double *lo)
    double row_log_weighted_sum[T, W](const T *x, const W *w, T m, double S, Py_ssize_t n)
    double row_sum_at_inf[T, W](const T *x, const W *w, Py_ssize_t n)
    T lse_finish[T](double log_abs, T shift, double total, T *sign)
    T lse_at_inf[T](double S, T *sign)
    Py_ssize_t row_masked_copy[T](const T *x, const unsigned char *mask, Py_ssize_t ms, T fill,
                                  T *y, Py_ssize_t n)
    double row_dot[T](const T *a, const T *b, Py_ssize_t n)
    double row_dot_copying[T](const T *a, const T *b, T *c, Py_ssize_t n, bint sum_only)
    # a cross-entropy target row: t as it is (w NULL), or with the loss
    # options applied as it is read: (t keep + uniform) w
    cppclass TargetRow[T]:
        const T *t
        const T *w
        T keep
        T uniform
        TargetRow[T] at(Py_ssize_t start) const
    double target_sum[T](const TargetRow[T] &row, Py_ssize_t n)
    double target_sum[T](const TargetRow[T] &row, Py_ssize_t n, double *lo)
    double row_weighted_shifted_sum[T](const TargetRow[T] &row, const T *x, T shift,
                                       Py_ssize_t n)
    double row_weighted_shifted_sum[T](const TargetRow[T] &row, const T *x, T shift,
                                       Py_ssize_t n, double *lo)
    void row_jvp[T](const T *s, const T *v, double dot, T *y, Py_ssize_t n)
    void row_log_vjp[T](const T *logp, const T *g, double gsum, T *y, Py_ssize_t n)
    void product_update_backward[T](const T *a, const T *b, double total, T *y, Py_ssize_t n,
                                    bint log_vjp)
    void row_xent_grad[T](const T *e, const TargetRow[T] &row, double factor, double tscale,
                          T *g, Py_ssize_t n)
    void jacobian_row[T](const T *s, Py_ssize_t i, T *y, Py_ssize_t n)
    void softmax_cols_tile[T](const T *x, Py_ssize_t sx, T *y, Py_ssize_t sy,
                              Py_ssize_t n, Py_ssize_t w, int take_log)
    # (the same for float16 / bfloat16 bits: E uint16_t, S Float16 or BFloat16)
    void half_cols_tile "fastsoftmax::softmax_cols_tile"[E, S](
        const E *x, Py_ssize_t sx, E *y, Py_ssize_t sy, Py_ssize_t n, Py_ssize_t w,
        int take_log)
    void softmax_short_rows[T](const T *x, Py_ssize_t sx, T *y, Py_ssize_t sy,
                               Py_ssize_t rows, Py_ssize_t n, int take_log)
    # half precision: H is Float16 or BFloat16 (how a uint16_t is a number)
    cppclass Float16:
        pass
    cppclass BFloat16:
        pass
    void load_half[H](const uint16_t *x, float *buf, Py_ssize_t n)
    void store_half[H](const float *buf, uint16_t *y, Py_ssize_t n)
    void half_softmax_row[H](const uint16_t *x, uint16_t *y, Py_ssize_t n, bint take_log)
    void half_product_row[H](const uint16_t *a, const uint16_t *b, uint16_t *y, Py_ssize_t n,
                             bint log_vjp)
    # (a long row's passes, for any range of it: a split row's chunks)
    void half_softmax_last_pass[H](const uint16_t *x, uint16_t *y, Py_ssize_t n, float m,
                                   double S, double log_S, bint take_log)
    double half_product_reduce[H](const uint16_t *a, const uint16_t *b, Py_ssize_t n,
                                  bint log_vjp, double *lo)
    void half_product_update[H](const uint16_t *a, const uint16_t *b, uint16_t *y, Py_ssize_t n,
                                double total, bint log_vjp)
    # (logsumexp: b a row of factors or NULL, mask a row of where= or NULL)
    float half_row_max[H](const uint16_t *x, const uint16_t *b, const unsigned char *mask,
                          Py_ssize_t n)
    double half_row_exp_sum[H](const uint16_t *x, const uint16_t *b, const unsigned char *mask,
                               float shift, Py_ssize_t n, double *lo)
    double half_row_sum_at_inf[H](const uint16_t *x, const uint16_t *b,
                                  const unsigned char *mask, Py_ssize_t n)
    double half_row_log_sum[H](const uint16_t *x, const uint16_t *b, const unsigned char *mask,
                               float shift, double S, Py_ssize_t n)
    float half_logsumexp_row[H](const uint16_t *x, const uint16_t *b, const unsigned char *mask,
                                Py_ssize_t n, float *sign)
    void half_jacobian_row[H](const uint16_t *s, Py_ssize_t i, uint16_t *y, Py_ssize_t n)
    # a half loss's target row: half bits or float values (at most one), and options
    cppclass HalfTarget:
        const uint16_t *half
        const float *values
        TargetRow[float] options
        bint given() const
        HalfTarget at(Py_ssize_t start) const
    double half_target_sum[H](const HalfTarget &target, Py_ssize_t n, double *lo)
    double half_xent_last_pass[H](const uint16_t *x, const HalfTarget &target, float m,
                                  double num, double den, double tscale, Py_ssize_t c,
                                  double c_scale, uint16_t *g, Py_ssize_t n, double *lo)
    const Py_ssize_t HALF_CHUNK "fastsoftmax::half_chunk"


# Below this many elements a call stays on the calling thread: waking the
# other threads costs about a microsecond, more than the work itself.
# Calibrated on 2 cores: (64, 128) float32 softmax 6.5 -> 5.7 us with threads,
# (32, 128) 4.0 -> 4.5 us (slower), so the threshold sits in between.
PARALLEL_MIN_ELEMENTS = 8192
# A row at least this long is split across threads when there are fewer
# rows than threads (one huge row would otherwise use one core).
SPLIT_ROW_MIN = 65536
# Most chunks a split row is cut into (the partial results live on the stack).
cdef enum:
    MAX_CHUNKS = 256
# Rows of at most BLOCK_MAX_BYTES go through the forward passes ROW_BLOCK
# rows at a time (see softmax_block): a block's input and output stay in
# L1 cache.  Measured on 2 cores: 10-25 % faster for rows of 16 to 256
# floats, no gain (up to 9 % slower) for rows of 2 KiB and more.
cdef enum:
    ROW_BLOCK = 8
    BLOCK_MAX_BYTES = 1024

# Softmax, the loss and the products keep a scratch row, one per thread,
# where storing into the output would stall the loads of an input (4K
# aliasing, see _vmath.hpp).  Rows longer than this (64 Ki floats) store
# into the output regardless: a scratch row the size of a huge row would
# raise a call's memory use by a whole row, depending on where NumPy put
# the output (tests/test_memory.py).
cdef enum:
    STAGE_MAX_BYTES = 1 << 18
    PRODUCT_COPY_MAX_BYTES = 4096

cdef Py_ssize_t parallel_min_elements = PARALLEL_MIN_ELEMENTS
cdef Py_ssize_t split_row_min = SPLIT_ROW_MIN


# ---------------------------------------------------------------------------
# Build and runtime facts
# ---------------------------------------------------------------------------

def openmp_enabled():
    """True if this module was compiled with OpenMP."""
    return bool(c_openmp_enabled())


def omp_max_threads():
    """OpenMP's thread limit for the calling thread (1 without OpenMP)."""
    return c_omp_max_threads()


def omp_set_num_threads(int n):
    c_omp_set_num_threads(n)


def simd_width_bytes():
    """Vector register width this module was compiled for."""
    return c_simd_width_bytes()


def has_fma():
    """True if this module was compiled for an instruction set with a fused
    multiply-add (softmax's scaling then rounds once; docs/accuracy.rst)."""
    return bool(c_has_fma())


def compiler():
    """The compiler that compiled this module ("gcc 12.2.0", "clang 14.0.6 ...")."""
    return c_compiler().decode("ascii", "replace")


def cpu_supports(str feature):
    """Run-time test of an x86 CPU feature ("avx2", "avx512f", ...); False
    off x86.  ValueError for a name the probe does not know, so that a
    feature added to fastsoftmax._simd_paths cannot silently read False."""
    cdef int known = c_cpu_supports(feature.encode("ascii"))
    if known < 0:
        raise ValueError(f"cpu_supports: unknown CPU feature {feature!r}")
    return bool(known)


def parallel_team_size(int num_threads):
    """Threads that a parallel region asked for `num_threads` really gets.

    Used by the build test: with OpenMP on and num_threads > 1 this must be
    above 1, or the kernels would silently run serially.
    """
    cdef int team[1]
    cdef int i
    team[0] = 1
    # (an array: a scalar assigned inside prange would be thread-private)
    for i in prange(num_threads, nogil=True, schedule="static", num_threads=num_threads):
        if i == 0:
            team[0] = c_omp_team_size()
    return team[0]


cdef int require_contiguous_rows(Py_ssize_t n, Py_ssize_t stride, Py_ssize_t itemsize,
                                 str name) except -1:
    """The C row primitives step through a row one element at a time."""
    if n > 1 and stride != itemsize:
        raise ValueError(f"{name}: the kernels need contiguous rows (element stride "
                         f"{stride}, item size {itemsize})")
    return 0


cdef int require_shape(str name, const Py_ssize_t *shape, const Py_ssize_t *expected,
                       int ndim) except -1:
    """The Python layer passes arrays of matching shapes; a direct call that
    does not must not make a kernel read or write past an array's end."""
    cdef int k
    for k in range(ndim):
        if shape[k] != expected[k]:
            raise ValueError(f"{name}: shape {tuple([shape[j] for j in range(ndim)])}, "
                             f"the kernel needs {tuple([expected[j] for j in range(ndim)])}")
    return 0


cdef inline int threads_for(Py_ssize_t elements, int requested) noexcept nogil:
    if requested <= 1 or elements < parallel_min_elements:
        return 1
    return requested


# ---------------------------------------------------------------------------
# The common call, checked in C
# ---------------------------------------------------------------------------
# Most calls pass C-contiguous float32 or float64 ndarrays and reduce along
# their last axis: the kernels can take them as they are.  Checking that in
# Python costs several times a small call's arithmetic, so it is done here
# on the arrays' fields.  A call that is not plain (and every bad input)
# gets None or False, and the Python layer takes its general way, which
# validates and reports errors.

cdef int plain_type(object a) noexcept:
    """NPY_FLOAT or NPY_DOUBLE if `a` is an ndarray (not a subclass) of
    that type in native byte order, C-contiguous, aligned, with at least
    one axis and one element; -1 otherwise."""
    if not cnp.PyArray_CheckExact(a):
        return -1
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int typenum = cnp.PyArray_TYPE(arr)
    if ((typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE)
            or cnp.PyArray_NDIM(arr) == 0 or cnp.PyArray_SIZE(arr) == 0
            or not cnp.PyArray_ISNOTSWAPPED(arr) or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or not cnp.PyArray_ISALIGNED(arr)):
        return -1
    return typenum


cdef bint overlaps(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Whether two C-contiguous arrays share memory (their bytes meet)."""
    cdef char *pa = cnp.PyArray_BYTES(a)
    cdef char *pb = cnp.PyArray_BYTES(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


cdef bint plain_call(object x, object axis, object out, object b) noexcept:
    """x (and b, the products' second input) plain arrays (plain_type) of
    one dtype and shape, reduced along their last axis (`axis` a Python int
    naming it), and `out` None or a writeable plain array of that dtype and
    shape that is each input itself or shares no memory with it."""
    cdef int typenum = plain_type(x)
    if typenum < 0 or not PyLong_CheckExact(axis):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef int overflow = 0
    cdef long ax = PyLong_AsLongAndOverflow(axis, &overflow)
    if overflow or (ax != -1 and ax != cnp.PyArray_NDIM(arr) - 1):
        return False
    if b is not None and (plain_type(b) != typenum
                          or not cnp.PyArray_SAMESHAPE(arr, <cnp.ndarray>b)):
        return False
    if out is None:
        return True
    if (plain_type(out) != typenum or not cnp.PyArray_SAMESHAPE(arr, <cnp.ndarray>out)
            or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)):
        return False
    return ((out is x or not overlaps(<cnp.ndarray>out, arr))
            and (b is None or out is b or not overlaps(<cnp.ndarray>out, <cnp.ndarray>b)))


def is_plain(x, axis, out=None, b=None):
    """Whether a call on x along `axis` (with `out`, and `b` for the
    products) is plain: the kernels take its arrays as (rows, n) as they
    are (see plain_call)."""
    return plain_call(x, axis, out, b)


cdef cnp.ndarray plain_result(object x, object out):
    """`out`, or a new C-contiguous array like x."""
    if out is not None:
        return <cnp.ndarray>out
    cdef cnp.ndarray arr = <cnp.ndarray>x
    return <cnp.ndarray>cnp.PyArray_EMPTY(cnp.PyArray_NDIM(arr), cnp.PyArray_DIMS(arr),
                                          cnp.PyArray_TYPE(arr), 0)


# ---------------------------------------------------------------------------
# Forward: softmax and log_softmax
# ---------------------------------------------------------------------------
# Per row: the max, then exp(x - max) (stored, for softmax) and its sum,
# then a scale (softmax) or a shift (log_softmax).  The row is still in
# cache for the later passes unless it is huge.  A row holding NaN or +inf,
# or only -inf, gets a NaN max or sum, and so NaN everywhere.

cdef inline bint call_stalls(const void *x, Py_ssize_t sx, const void *y, Py_ssize_t sy,
                             size_t row_bytes) noexcept nogil:
    """Whether some row of a call (rows of x and y sx and sy bytes apart)
    would stall storing into y while loading x (see _vmath.hpp): a call
    that does not runs the plain passes, with no test per row."""
    return row_bytes >= STALL_MIN_BYTES and (sx != sy or store_aliases(y, x))


cdef inline void *new_stage(size_t nbytes) noexcept nogil:
    """A thread's scratch area, room for nbytes at any page offset (see
    stage_clear_of), or NULL if none is needed or nbytes is over
    STAGE_MAX_BYTES (or there is no memory: the kernels then store into the
    output, slower but still right)."""
    return PyMem_RawMalloc(nbytes + PAGE) if 0 < nbytes <= STAGE_MAX_BYTES else NULL


cdef inline void softmax_block(const floating *x, Py_ssize_t sx, floating *y, Py_ssize_t sy,
                               Py_ssize_t count, Py_ssize_t n, bint take_log,
                               bint stalls, void *stage_area) noexcept nogil:
    """count <= ROW_BLOCK rows of n elements, the first at x (y), the next
    sx (sy) bytes further each, pass by pass across the rows; a single row
    is a block of one.  Each row's log (or reciprocal) waits for its sum and
    the row's last pass waits for it; one row at a time, that latency is
    paid per row (a fifth of log_softmax's time on rows of 64).  Here the
    rows' logs are independent of each other and overlap.  Each row gets
    the same operations, whatever its block.

    If `stalls` (the call may stall, call_stalls), each row is tested, and
    one whose stores into y would stall keeps softmax's terms in the stage
    (stage_area: NULL, or from new_stage with room for count rows) and
    stores log_softmax's nowhere.  (Pointers, not memoryviews: the compiler
    then inlines this into its callers, and with `stalls` a constant False
    the tests vanish.)"""
    cdef floating m[ROW_BLOCK]
    cdef double total[ROW_BLOCK]
    cdef double total_lo[ROW_BLOCK]
    cdef floating *terms[ROW_BLOCK]
    cdef bint row_stalls[ROW_BLOCK]
    cdef floating *stage = NULL
    if stalls and stage_area != NULL:
        stage = <floating *>stage_clear_of(stage_area, x)
    cdef const floating *xr
    cdef floating *yr
    cdef Py_ssize_t r
    for r in range(count):
        xr = <const floating *>(<const char *>x + r * sx)
        yr = <floating *>(<char *>y + r * sy)
        m[r] = row_max(xr, n)
        row_stalls[r] = stalls and store_stalls(yr, xr, n * sizeof(floating))
        # Softmax stores the terms exp(x - max), which its last pass scales
        # into y: into y itself, or where that would stall, into the stage.
        # log_softmax does not need them, but storing them into y (unless in
        # place or stalling) pulls y's cache lines in while the exp keeps the
        # core busy, instead of in the quick shift pass, which would then
        # wait for memory.  (Where the terms do not go into y, row_exp_sum
        # fetches y's lines itself.)
        terms[r] = yr
        if take_log and (yr == xr or row_stalls[r]):
            terms[r] = NULL
        elif row_stalls[r] and stage != NULL:
            terms[r] = stage + r * n
        total[r] = row_exp_sum(xr, m[r], terms[r],
                               yr if row_stalls[r] and terms[r] != yr else <floating *>NULL, n,
                               &total_lo[r])
    if take_log:
        for r in range(count):
            xr = <const floating *>(<const char *>x + r * sx)
            # (the terms stored in y, if any, spare a row with S < 2 its
            # second exp pass)
            total[r] = row_sum_minus_one(xr, m[r], terms[r], total[r], n)
        logs_of_sums(total, count)
        for r in range(count):
            xr = <const floating *>(<const char *>x + r * sx)
            row_shift(xr, m[r], total[r], <floating *>(<char *>y + r * sy), n)
    else:
        # (with S's rounding error: S rounded alone costs a double result
        # up to an ulp)
        for r in range(count):
            row_scale_div(terms[r], 1.0, total[r], total_lo[r],
                          <floating *>(<char *>y + r * sy), n)


cdef inline Py_ssize_t chunk_length(Py_ssize_t n, Py_ssize_t nchunks) noexcept nogil:
    """Length of each of `nchunks` chunks covering n elements, rounded up to
    a multiple of 64 elements so that threads never share a cache line."""
    return ((n + nchunks - 1) // nchunks + 63) // 64 * 64


cdef inline double chunks_exp_sum(const floating *chunk_max, const double *chunk_sum,
                                 Py_ssize_t nchunks, floating *row_max_out) noexcept nogil:
    """A split row's sum of exp(x - m), m its max (stored in row_max_out),
    from its chunks' maxes m_c and sums of exp(x - m_c): each sum rescaled
    by exp(m_c - m), added in chunk order (so the result does not depend on
    scheduling).  A chunk of only -inf was shifted by 0; its sum is 0 (or
    NaN) as it is."""
    cdef floating m = -INFINITY
    cdef double total = 0.0
    cdef Py_ssize_t c
    for c in range(nchunks):
        if chunk_max[c] > m:
            m = chunk_max[c]
    for c in range(nchunks):
        if chunk_max[c] == -INFINITY:
            total += chunk_sum[c]
        else:
            total += chunk_sum[c] * exp(chunk_max[c] - m)
    row_max_out[0] = m
    return total


cdef void softmax_row_split(const floating *x, floating *y, Py_ssize_t n,
                            int num_threads, bint take_log) noexcept nogil:
    """One long row shared by `num_threads` threads.

    Each thread reduces its chunk to (max, sum of exp(x - chunk max)); the
    partial sums are rescaled to the global max and added in chunk order
    (so the result does not depend on scheduling), then each thread writes
    its chunk of the output.  For softmax the first pass already stores
    exp(x - chunk max), so the second only rescales it: one exp per element.
    """
    cdef floating chunk_max[MAX_CHUNKS]
    cdef double chunk_sum[MAX_CHUNKS]
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>num_threads, <Py_ssize_t>MAX_CHUNKS)
    cdef Py_ssize_t chunk = chunk_length(n, nchunks)
    cdef Py_ssize_t c, start, stop
    cdef floating m_c, m

    for c in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(c * chunk, n)
        stop = min(start + chunk, n)
        m_c = row_max(x + start, stop - start)
        chunk_max[c] = m_c
        # A chunk whose max is -inf holds only -inf (a mask) and maybe NaN:
        # shifting by 0 gives a sum of 0, or NaN, where exp(x - m_c) would
        # give NaN for the mask.  log_softmax stores the terms too, as
        # softmax_block does and for the same reason (10 % faster on one row
        # of 4e6 floats).
        chunk_sum[c] = row_exp_sum(x + start, m_c if m_c != -INFINITY else 0,
                                   <floating *>NULL if (take_log and y == x) else y + start,
                                   <floating *>NULL, stop - start)

    cdef double total = chunks_exp_sum(chunk_max, chunk_sum, nchunks, &m)
    cdef double log_total = row_log_sum(x, m, <floating *>NULL, total, n) if take_log else 0.0
    for c in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(c * chunk, n)
        stop = min(start + chunk, n)
        if take_log:
            row_shift(x + start, m, log_total, y + start, stop - start)
        elif chunk_max[c] == -INFINITY:  # its stored terms are 0 (or NaN)
            row_scale_div(y + start, 1.0, total, 0.0, y + start, stop - start)
        else:
            row_scale_div(y + start, exp(chunk_max[c] - m), total, 0.0, y + start, stop - start)


cdef inline const floating *row_at(const floating *first, Py_ssize_t stride,
                                   Py_ssize_t i) noexcept nogil:
    """Row i of rows `stride` bytes apart (cast the result for an output)."""
    return <const floating *>(<const char *>first + i * stride)


cdef void softmax_rows_impl(const floating *x, Py_ssize_t sx, floating *y, Py_ssize_t sy,
                            Py_ssize_t rows, Py_ssize_t n, int num_threads,
                            bint take_log) noexcept nogil:
    """y[i] = softmax(x[i]) (or log_softmax) for rows i of n contiguous
    elements, sx and sy bytes apart."""
    cdef Py_ssize_t i, b
    if rows == 0 or n == 0:
        return
    cdef int nthreads = threads_for(rows * n, num_threads)
    # short rows go ROW_BLOCK at a time, long ones one by one
    cdef Py_ssize_t per_block = (ROW_BLOCK if n * <Py_ssize_t>sizeof(floating) <= BLOCK_MAX_BYTES
                                 else 1)
    cdef Py_ssize_t blocks = (rows + per_block - 1) // per_block
    cdef bint stalls = call_stalls(x, sx, y, sy, n * sizeof(floating))
    # (log_softmax stores no terms where y would stall: no stage)
    cdef size_t stage_size = per_block * n * sizeof(floating) if stalls and not take_log else 0
    cdef void *stage
    if short_rows(n, sizeof(floating), take_log) and nthreads > 1:
        # COLS rows per work item (softmax_short_rows tiles them)
        blocks = (rows + COLS - 1) // COLS
        for b in prange(blocks, schedule="static", num_threads=min(<Py_ssize_t>nthreads, blocks)):
            softmax_short_rows(row_at(x, sx, b * COLS), sx, <floating *>row_at(y, sy, b * COLS),
                               sy, min(COLS, rows - b * COLS), n, take_log)
    elif short_rows(n, sizeof(floating), take_log):
        softmax_short_rows(x, sx, y, sy, rows, n, take_log)
    elif nthreads > 1 and rows < nthreads and n >= split_row_min:
        for i in range(rows):
            softmax_row_split(row_at(x, sx, i), <floating *>row_at(y, sy, i), n, nthreads,
                              take_log)
    elif nthreads > 1:
        # (no more threads than blocks: a thread without one would only wait)
        with parallel(num_threads=min(<Py_ssize_t>nthreads, blocks)):
            stage = new_stage(stage_size)
            for b in prange(blocks, schedule="static"):
                if stalls:
                    softmax_block(row_at(x, sx, b * per_block), sx,
                                  <floating *>row_at(y, sy, b * per_block), sy,
                                  min(per_block, rows - b * per_block), n, take_log, True, stage)
                else:
                    softmax_block(row_at(x, sx, b * per_block), sx,
                                  <floating *>row_at(y, sy, b * per_block), sy,
                                  min(per_block, rows - b * per_block), n, take_log, False, NULL)
            PyMem_RawFree(stage)
    else:
        stage = new_stage(stage_size)
        for b in range(blocks):
            if stalls:
                softmax_block(row_at(x, sx, b * per_block), sx,
                              <floating *>row_at(y, sy, b * per_block), sy,
                              min(per_block, rows - b * per_block), n, take_log, True, stage)
            else:
                softmax_block(row_at(x, sx, b * per_block), sx,
                              <floating *>row_at(y, sy, b * per_block), sy,
                              min(per_block, rows - b * per_block), n, take_log, False, NULL)
        PyMem_RawFree(stage)


def softmax_rows(const floating[:, :] x, floating[:, :] out, int num_threads, bint take_log):
    """out[i] = softmax(x[i]), or log_softmax(x[i]) if take_log, for every
    row i (out may be x)."""
    require_shape("out", out.shape, x.shape, 2)
    require_contiguous_rows(x.shape[1], x.strides[1], sizeof(floating), "x")
    require_contiguous_rows(out.shape[1], out.strides[1], sizeof(floating), "out")
    if x.shape[0] == 0 or x.shape[1] == 0:
        return
    with nogil:
        softmax_rows_impl(&x[0, 0], x.strides[0], &out[0, 0], out.strides[0], x.shape[0],
                          x.shape[1], num_threads, take_log)


def softmax_plain(x, axis, out, bint take_log, int num_threads):
    """softmax (log_softmax if take_log) of a plain call (is_plain) along
    x's last axis, into `out` or a new array, which is returned; None,
    with nothing written, for any other call."""
    if not plain_call(x, axis, out, None):
        return None
    cdef cnp.ndarray y = plain_result(x, out)
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef Py_ssize_t n = cnp.PyArray_DIMS(arr)[cnp.PyArray_NDIM(arr) - 1]
    cdef Py_ssize_t rows = cnp.PyArray_SIZE(arr) // n
    cdef void *xp = cnp.PyArray_DATA(arr)
    cdef void *yp = cnp.PyArray_DATA(y)
    with nogil:
        if cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT:
            softmax_rows_impl(<const float *>xp, n * sizeof(float), <float *>yp,
                              n * sizeof(float), rows, n, num_threads, take_log)
        else:
            softmax_rows_impl(<const double *>xp, n * sizeof(double), <double *>yp,
                              n * sizeof(double), rows, n, num_threads, take_log)
    return y


def softmax_masked_rows(const stored[:, :] x, cnp.ndarray mask,
                        const int64_t[::1] mask_rows, Py_ssize_t mask_stride,
                        stored[:, :] out, int num_threads, bint take_log,
                        bint bfloat16=False):
    """softmax_rows over the entries of each row where `mask` (a bool
    array) is True: row i's flags lie mask_rows[i] bytes from mask's data
    pointer, mask_stride bytes apart.  The kept entries are copied into
    out's row with -inf at the others, which then go through the plain
    kernels in place: 0 (log: -inf) there, and the same result as for the
    kept entries alone.  A row with nothing kept is 0 (log: -inf).  Rows
    of uint16 are float16 (bfloat16 if `bfloat16`) numbers' bits."""
    require_shape("out", out.shape, x.shape, 2)
    require_contiguous_rows(x.shape[1], x.strides[1], sizeof(stored), "x")
    require_contiguous_rows(out.shape[1], out.strides[1], sizeof(stored), "out")
    if cnp.PyArray_TYPE(mask) != cnp.NPY_BOOL:
        raise TypeError("mask must be a bool array")
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    if mask_rows.shape[0] != rows:
        raise ValueError("mask_rows must hold one offset per row")
    if rows == 0 or n == 0:
        return
    cdef const char *xp = <const char *>&x[0, 0]
    cdef char *yp = <char *>&out[0, 0]
    cdef Py_ssize_t sx = x.strides[0], sy = out.strides[0], i, j
    cdef const unsigned char *mp = <const unsigned char *>cnp.PyArray_BYTES(mask)
    cdef unsigned char *empty = <unsigned char *>PyMem_RawMalloc(rows)
    if empty == NULL:
        raise MemoryError()
    cdef int nthreads = threads_for(rows * n, num_threads)
    cdef stored minus_inf, empty_value
    if stored is uint16_t:  # the bits of -inf and of 0
        minus_inf = 0xff80 if bfloat16 else 0xfc00
        empty_value = minus_inf if take_log else 0
    else:
        minus_inf = -INFINITY
        empty_value = -INFINITY if take_log else 0
    with nogil:
        for i in prange(rows, schedule="static", num_threads=nthreads):
            empty[i] = row_masked_copy(<const stored *>(xp + i * sx), mp + mask_rows[i],
                                       mask_stride, minus_inf, <stored *>(yp + i * sy), n) == 0
        if stored is uint16_t:
            half_softmax_rows_impl(<uint16_t *>yp, sy, <uint16_t *>yp, sy, rows, n,
                                   num_threads, take_log, bfloat16)
        else:
            softmax_rows_impl(<stored *>yp, sy, <stored *>yp, sy, rows, n, num_threads,
                              take_log)
        for i in range(rows):
            if empty[i]:
                for j in range(n):
                    (<stored *>(yp + i * sy))[j] = empty_value
    PyMem_RawFree(empty)


# ---------------------------------------------------------------------------
# Half precision: float16 and bfloat16 rows, read and written by the kernels
# ---------------------------------------------------------------------------
# The rows are uint16_t here; `bfloat16` says which of the two formats they
# hold.  Each row is computed in float on the stack (see _vmath.hpp).

cdef void half_softmax_row_split(const uint16_t *x, uint16_t *y, Py_ssize_t n,
                                 int num_threads, bint take_log, bint bfloat16) noexcept nogil:
    """half_softmax_row for one long row shared by the threads: its chunks'
    maxes, their sums of exp(x - max) (the row's max), added in chunk
    order, compensated, then each chunk's last pass."""
    cdef float chunk_max[MAX_CHUNKS]
    cdef double chunk_sum[MAX_CHUNKS]
    cdef double chunk_lo[MAX_CHUNKS]
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>num_threads, <Py_ssize_t>MAX_CHUNKS)
    cdef Py_ssize_t chunk = chunk_length(n, nchunks)
    cdef Py_ssize_t k, start, stop
    cdef float m = -INFINITY
    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        chunk_max[k] = (half_row_max[BFloat16](x + start, NULL, NULL, stop - start) if bfloat16
                        else half_row_max[Float16](x + start, NULL, NULL, stop - start))
    for k in range(nchunks):
        if chunk_max[k] > m:
            m = chunk_max[k]
    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        chunk_sum[k] = (
            half_row_exp_sum[BFloat16](x + start, NULL, NULL, m, stop - start, &chunk_lo[k])
            if bfloat16 else
            half_row_exp_sum[Float16](x + start, NULL, NULL, m, stop - start, &chunk_lo[k]))
    cdef double total = sum_of_parts(chunk_sum, chunk_lo, nchunks), log_total = 0.0
    if take_log:
        log_total = (half_row_log_sum[BFloat16](x, NULL, NULL, m, total, n) if bfloat16
                     else half_row_log_sum[Float16](x, NULL, NULL, m, total, n))
    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        if bfloat16:
            half_softmax_last_pass[BFloat16](x + start, y + start, stop - start, m, total,
                                             log_total, take_log)
        else:
            half_softmax_last_pass[Float16](x + start, y + start, stop - start, m, total,
                                            log_total, take_log)


cdef void half_softmax_rows_impl(const uint16_t *x, Py_ssize_t sx, uint16_t *y, Py_ssize_t sy,
                                 Py_ssize_t rows, Py_ssize_t n, int num_threads,
                                 bint take_log, bint bfloat16) noexcept nogil:
    cdef Py_ssize_t i
    cdef int nthreads = threads_for(rows * n, num_threads)
    if nthreads > 1 and rows < nthreads and n >= split_row_min:
        for i in range(rows):
            half_softmax_row_split(<const uint16_t *>(<const char *>x + i * sx),
                                   <uint16_t *>(<char *>y + i * sy), n, nthreads, take_log,
                                   bfloat16)
        return
    for i in prange(rows, schedule="static", num_threads=nthreads):
        if bfloat16:
            half_softmax_row[BFloat16](<const uint16_t *>(<const char *>x + i * sx),
                                       <uint16_t *>(<char *>y + i * sy), n, take_log)
        else:
            half_softmax_row[Float16](<const uint16_t *>(<const char *>x + i * sx),
                                      <uint16_t *>(<char *>y + i * sy), n, take_log)


def half_softmax_rows(const uint16_t[:, :] x, uint16_t[:, :] out, int num_threads,
                      bint take_log, bint bfloat16):
    """softmax_rows for float16 (bfloat16 if `bfloat16`) rows, given as
    their uint16 bits (out may be x)."""
    require_shape("out", out.shape, x.shape, 2)
    require_contiguous_rows(x.shape[1], x.strides[1], sizeof(uint16_t), "x")
    require_contiguous_rows(out.shape[1], out.strides[1], sizeof(uint16_t), "out")
    if x.shape[0] == 0 or x.shape[1] == 0:
        return
    with nogil:
        half_softmax_rows_impl(&x[0, 0], x.strides[0], &out[0, 0], out.strides[0], x.shape[0],
                               x.shape[1], num_threads, take_log, bfloat16)


cdef void half_product_row_split(const uint16_t *a, const uint16_t *b, uint16_t *y,
                                 Py_ssize_t n, int num_threads, bint log_vjp,
                                 bint bfloat16) noexcept nogil:
    """half_product_row for one long row shared by the threads: the
    chunks' reductions added in chunk order, compensated, then each
    chunk's update."""
    cdef double chunk_part[MAX_CHUNKS]
    cdef double chunk_lo[MAX_CHUNKS]
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>num_threads, <Py_ssize_t>MAX_CHUNKS)
    cdef Py_ssize_t chunk = chunk_length(n, nchunks)
    cdef Py_ssize_t k, start, stop
    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        chunk_part[k] = (
            half_product_reduce[BFloat16](a + start, b + start, stop - start, log_vjp,
                                          &chunk_lo[k]) if bfloat16 else
            half_product_reduce[Float16](a + start, b + start, stop - start, log_vjp,
                                         &chunk_lo[k]))
    cdef double total = sum_of_parts(chunk_part, chunk_lo, nchunks)
    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        if bfloat16:
            half_product_update[BFloat16](a + start, b + start, y + start, stop - start, total,
                                          log_vjp)
        else:
            half_product_update[Float16](a + start, b + start, y + start, stop - start, total,
                                         log_vjp)


def half_product_rows(const uint16_t[:, :] a, const uint16_t[:, :] b, uint16_t[:, :] out,
                      int num_threads, bint log_vjp, bint bfloat16):
    """product_rows for float16 (bfloat16) rows given as their uint16 bits,
    computed in float (out may be a or b)."""
    require_shape("b", b.shape, a.shape, 2)
    require_shape("out", out.shape, a.shape, 2)
    cdef Py_ssize_t rows = a.shape[0], n = a.shape[1], i
    require_contiguous_rows(n, a.strides[1], sizeof(uint16_t), "a")
    require_contiguous_rows(n, b.strides[1], sizeof(uint16_t), "b")
    require_contiguous_rows(n, out.strides[1], sizeof(uint16_t), "out")
    if rows == 0 or n == 0:
        return
    cdef const char *ap = <const char *>&a[0, 0]
    cdef const char *bp = <const char *>&b[0, 0]
    cdef char *yp = <char *>&out[0, 0]
    cdef Py_ssize_t sa = a.strides[0], sb = b.strides[0], sy = out.strides[0]
    cdef int nthreads = threads_for(rows * n, num_threads)
    with nogil:
        if nthreads > 1 and rows < nthreads and n >= split_row_min:
            for i in range(rows):
                half_product_row_split(<const uint16_t *>(ap + i * sa),
                                       <const uint16_t *>(bp + i * sb),
                                       <uint16_t *>(yp + i * sy), n, nthreads, log_vjp,
                                       bfloat16)
        else:
            for i in prange(rows, schedule="static", num_threads=nthreads):
                if bfloat16:
                    half_product_row[BFloat16](<const uint16_t *>(ap + i * sa),
                                               <const uint16_t *>(bp + i * sb),
                                               <uint16_t *>(yp + i * sy), n, log_vjp)
                else:
                    half_product_row[Float16](<const uint16_t *>(ap + i * sa),
                                              <const uint16_t *>(bp + i * sb),
                                              <uint16_t *>(yp + i * sy), n, log_vjp)


def half_jacobian_rows(const uint16_t[:, :] s, uint16_t[:, :, ::1] out, int num_threads,
                       bint bfloat16):
    """softmax_jacobian_rows for float16 (bfloat16) rows given as their
    uint16 bits."""
    cdef Py_ssize_t rows = s.shape[0], n = s.shape[1], k
    cdef Py_ssize_t expected[3]
    expected[:] = [rows, n, n]
    require_shape("out", out.shape, expected, 3)
    require_contiguous_rows(n, s.strides[1], sizeof(uint16_t), "s")
    if rows == 0 or n == 0:
        return
    cdef int nthreads = threads_for(rows * n * n, num_threads)
    with nogil:
        for k in prange(rows * n, schedule="static", num_threads=nthreads):
            if bfloat16:
                half_jacobian_row[BFloat16](&s[k // n, 0], k % n, &out[k // n, k % n, 0], n)
            else:
                half_jacobian_row[Float16](&s[k // n, 0], k % n, &out[k // n, k % n, 0], n)


def half_convert(const uint16_t[::1] half, float[::1] values, bint to_half, bint bfloat16):
    """values = the float16 (bfloat16) numbers of `half`, or, if to_half,
    half = `values` rounded to float16 (bfloat16): the kernels' own
    conversions, for the tests."""
    require_shape("values", values.shape, half.shape, 1)
    cdef Py_ssize_t n = half.shape[0]
    if n == 0:
        return
    if to_half and bfloat16:
        store_half[BFloat16](&values[0], <uint16_t *>&half[0], n)
    elif to_half:
        store_half[Float16](&values[0], <uint16_t *>&half[0], n)
    elif bfloat16:
        load_half[BFloat16](&half[0], &values[0], n)
    else:
        load_half[Float16](&half[0], &values[0], n)


cdef inline double half_lse_part(const uint16_t *x, const uint16_t *b, const unsigned char *mask,
                                 Py_ssize_t n, float shift, double *lo, bint at_inf,
                                 bint bfloat16) noexcept nogil:
    """A chunk's part of a split row's S: half_row_exp_sum, or at a max of
    +inf half_row_sum_at_inf."""
    if at_inf:
        lo[0] = 0.0
        if bfloat16:
            return half_row_sum_at_inf[BFloat16](x, b, mask, n)
        return half_row_sum_at_inf[Float16](x, b, mask, n)
    if bfloat16:
        return half_row_exp_sum[BFloat16](x, b, mask, shift, n, lo)
    return half_row_exp_sum[Float16](x, b, mask, shift, n, lo)


cdef float half_logsumexp_row_split(const uint16_t *x, const uint16_t *b,
                                    const unsigned char *mask, Py_ssize_t n, float *sign,
                                    int num_threads, bint bfloat16) noexcept nogil:
    """half_logsumexp_row for one long row shared by the threads, as
    logsumexp_row_split shares a float row."""
    cdef float chunk_max[MAX_CHUNKS]
    cdef double chunk_sum[MAX_CHUNKS]
    cdef double chunk_lo[MAX_CHUNKS]
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>num_threads, <Py_ssize_t>MAX_CHUNKS)
    cdef Py_ssize_t chunk = chunk_length(n, nchunks)
    cdef Py_ssize_t k, start, stop
    cdef float m = -INFINITY
    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        if bfloat16:
            chunk_max[k] = half_row_max[BFloat16](x + start, b + start if b != NULL else b,
                                                  mask + start if mask != NULL else mask,
                                                  stop - start)
        else:
            chunk_max[k] = half_row_max[Float16](x + start, b + start if b != NULL else b,
                                                 mask + start if mask != NULL else mask,
                                                 stop - start)
    for k in range(nchunks):
        if chunk_max[k] > m:
            m = chunk_max[k]
    cdef bint at_inf = m == INFINITY
    cdef float shift = 0 if m == -INFINITY else m
    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        chunk_sum[k] = half_lse_part(x + start, b + start if b != NULL else b,
                                     mask + start if mask != NULL else mask, stop - start,
                                     shift, &chunk_lo[k], at_inf, bfloat16)
    cdef double total = sum_of_parts(chunk_sum, chunk_lo, nchunks)
    if at_inf:
        return lse_at_inf(total, sign)
    if bfloat16:
        return lse_finish(half_row_log_sum[BFloat16](x, b, mask, shift, total, n), shift,
                          total, sign)
    return lse_finish(half_row_log_sum[Float16](x, b, mask, shift, total, n), shift, total,
                      sign)


cdef inline float half_logsumexp_row_at(const char *x, Py_ssize_t sx, const char *b,
                                        Py_ssize_t sb, const unsigned char *mask,
                                        const int64_t *mask_rows, bint switches,
                                        float *sign, Py_ssize_t i, Py_ssize_t n,
                                        int split_threads, bint bfloat16) noexcept nogil:
    """logsumexp of row i (half_logsumexp_rows), split across split_threads
    if more than 1."""
    cdef const unsigned char *mi = mask + mask_rows[i] if mask != NULL else NULL
    cdef const uint16_t *xi = <const uint16_t *>(x + i * sx)
    cdef const uint16_t *bi = <const uint16_t *>(b + i * sb) if b != NULL else NULL
    if sign != NULL:
        sign = sign + i
    if mi != NULL and switches:  # one flag for the whole row
        if mi[0] == 0:
            if sign != NULL:
                sign[0] = 0
            return -INFINITY
        mi = NULL
    if split_threads > 1:
        return half_logsumexp_row_split(xi, bi, mi, n, sign, split_threads, bfloat16)
    if bfloat16:
        return half_logsumexp_row[BFloat16](xi, bi, mi, n, sign)
    return half_logsumexp_row[Float16](xi, bi, mi, n, sign)


def half_logsumexp_rows(const uint16_t[:, :] x, const uint16_t[:, :] b, float[::1] out,
                        float[::1] sign, int num_threads, bint bfloat16, cnp.ndarray mask=None,
                        const int64_t[::1] mask_rows=None, Py_ssize_t mask_stride=1):
    """logsumexp_rows for float16 (bfloat16) rows x and factors b (None:
    1), both given as their uint16 bits, into float out and sign (None: a
    negative sum gives NaN); the mask as for logsumexp_rows (a stride of 1,
    or 0 for one flag per row), here together with b if both are given."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1], i
    require_contiguous_rows(n, x.strides[1], sizeof(uint16_t), "x")
    if b is not None:
        require_shape("b", b.shape, x.shape, 2)
        require_contiguous_rows(n, b.strides[1], sizeof(uint16_t), "b")
    require_shape("out", out.shape, x.shape, 1)
    if sign is not None:
        require_shape("sign", sign.shape, x.shape, 1)
    if mask is not None and (cnp.PyArray_TYPE(mask) != cnp.NPY_BOOL or mask_rows is None
                             or mask_rows.shape[0] != rows or mask_stride not in (0, 1)):
        raise ValueError("mask must be a bool array with one offset per row in mask_rows "
                         "and a mask_stride of 0 or 1")
    if rows == 0:
        return
    if n == 0:  # (sums of nothing)
        out[:] = -INFINITY
        if sign is not None:
            sign[:] = 0
        return
    cdef const char *xp = <const char *>&x[0, 0]
    cdef const char *bp = <const char *>&b[0, 0] if b is not None else NULL
    cdef Py_ssize_t sx = x.strides[0], sb = b.strides[0] if bp != NULL else 0
    cdef const unsigned char *mp = (<const unsigned char *>cnp.PyArray_BYTES(mask)
                                    if mask is not None else NULL)
    cdef const int64_t *offsets = &mask_rows[0] if mp != NULL else NULL
    cdef float *sp = &sign[0] if sign is not None else NULL
    cdef int nthreads = threads_for(rows * n, num_threads)
    with nogil:
        if nthreads > 1 and rows < nthreads and n >= split_row_min:
            for i in range(rows):
                out[i] = half_logsumexp_row_at(xp, sx, bp, sb, mp, offsets, mask_stride == 0,
                                               sp, i, n, nthreads, bfloat16)
        else:
            for i in prange(rows, schedule="static", num_threads=nthreads):
                out[i] = half_logsumexp_row_at(xp, sx, bp, sb, mp, offsets, mask_stride == 0,
                                               sp, i, n, 1, bfloat16)


def softmax_cols(const stored[:, :, ::1] x, stored[:, :, ::1] out, int num_threads,
                 bint take_log, bint bfloat16=False):
    """Softmax (or log_softmax) along axis 1 of an (outer, n, inner) array
    whose inner axis is contiguous: the non-last-axis case without a
    transposed copy.  Each work item is COLS columns of one outer block,
    vectorised across the columns; out may be x.  uint16 elements are
    float16 (bfloat16 if `bfloat16`) numbers' bits, computed in float."""
    require_shape("out", out.shape, x.shape, 3)
    cdef Py_ssize_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t tiles = (inner + COLS - 1) // COLS
    cdef Py_ssize_t item, o, c0
    if outer == 0 or n == 0 or inner == 0:
        return
    cdef Py_ssize_t sx = x.strides[1] // <Py_ssize_t>sizeof(stored)
    cdef Py_ssize_t sy = out.strides[1] // <Py_ssize_t>sizeof(stored)
    cdef int nthreads = threads_for(outer * n * inner, num_threads)
    with nogil:
        for item in prange(outer * tiles, schedule="static", num_threads=nthreads):
            o = item // tiles
            c0 = (item % tiles) * COLS
            if stored is not uint16_t:
                softmax_cols_tile(&x[o, 0, c0], sx, &out[o, 0, c0], sy, n,
                                  min(COLS, inner - c0), take_log)
            elif bfloat16:
                half_cols_tile[uint16_t, BFloat16](&x[o, 0, c0], sx, &out[o, 0, c0], sy, n,
                                                   min(COLS, inner - c0), take_log)
            else:
                half_cols_tile[uint16_t, Float16](&x[o, 0, c0], sx, &out[o, 0, c0], sy, n,
                                                  min(COLS, inner - c0), take_log)


def set_thresholds(Py_ssize_t parallel_min=PARALLEL_MIN_ELEMENTS,
                   Py_ssize_t split_min=SPLIT_ROW_MIN):
    """Change the serial/parallel thresholds (tests use 0 to force threads)."""
    global parallel_min_elements, split_row_min
    parallel_min_elements = parallel_min
    split_row_min = split_min


# ---------------------------------------------------------------------------
# logsumexp
# ---------------------------------------------------------------------------
# Per row: the max m (over the entries of nonzero weight), then
# S = sum of w exp(x - m), then m + log|S| and the sign of S.  A row of
# only -inf (or with nothing weighted) has m = -inf and shifts by 0
# instead: S = 0, the result -inf.  A row holding +inf: S is +-inf, or NaN
# (see row_sum_at_inf).

cdef inline floating lse_shift(floating m) noexcept nogil:
    return 0 if m == -INFINITY else m


cdef floating lse_infinite(const floating *x, const weight *w, Py_ssize_t n,
                           floating *sign) noexcept nogil:
    """logsumexp_row of a row whose max is +inf: +inf, or NaN."""
    return lse_at_inf(row_sum_at_inf(x, w, n), sign)


cdef inline floating logsumexp_row(const floating *x, const weight *w, Py_ssize_t n,
                                   floating *sign) noexcept nogil:
    cdef floating shift = lse_shift(row_max_weighted(x, w, n))
    if shift == INFINITY:
        return lse_infinite(x, w, n, sign)
    cdef double total = row_weighted_exp_sum(x, w, shift, n)
    return lse_finish(row_log_weighted_sum(x, w, shift, total, n), shift, total, sign)


cdef floating logsumexp_row_split(const floating *x, const weight *w, Py_ssize_t n,
                                  floating *sign, int num_threads) noexcept nogil:
    """logsumexp_row for one long row shared by the threads: the chunks'
    maxes, then the chunks' sums with the row's shift, added in chunk order,
    compensated (sum_of_parts)."""
    cdef floating chunk_max[MAX_CHUNKS]
    cdef double chunk_sum[MAX_CHUNKS]
    cdef double chunk_lo[MAX_CHUNKS]
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>num_threads, <Py_ssize_t>MAX_CHUNKS)
    cdef Py_ssize_t chunk = chunk_length(n, nchunks)
    cdef Py_ssize_t k, start, stop
    cdef floating m = -INFINITY
    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        chunk_max[k] = row_max_weighted(x + start, w + start if w != NULL else w, stop - start)
    for k in range(nchunks):
        if chunk_max[k] > m or chunk_max[k] != chunk_max[k]:
            m = chunk_max[k]
    cdef floating shift = lse_shift(m)
    if shift == INFINITY:
        return lse_infinite(x, w, n, sign)
    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        chunk_sum[k] = row_weighted_exp_sum(x + start, w + start if w != NULL else w, shift,
                                            stop - start, &chunk_lo[k])
    cdef double total = sum_of_parts(chunk_sum, chunk_lo, nchunks)
    return lse_finish(row_log_weighted_sum(x, w, shift, total, n), shift, total, sign)


cdef inline const weight *weight_row(const weight *w, Py_ssize_t sw, const int64_t *w_rows,
                                     Py_ssize_t i) noexcept nogil:
    """Row i of the weights: w_rows[i] bytes from w if w_rows is given (a
    mask's rows, which need not be evenly spaced), else i * sw; NULL for
    no weights."""
    if w == NULL:
        return NULL
    return <const weight *>(<const char *>w + (w_rows[i] if w_rows != NULL else i * sw))


cdef inline floating logsumexp_row_at(const floating *x, Py_ssize_t sx, const weight *w,
                                      Py_ssize_t sw, const int64_t *w_rows, bint switches,
                                      Py_ssize_t i, Py_ssize_t n, floating *sign,
                                      int split_threads) noexcept nogil:
    """logsumexp of row i (logsumexp_rows_impl), split across split_threads
    if more than 1."""
    cdef const weight *wi = weight_row(w, sw, w_rows, i)
    if switches:  # one weight (a mask's byte) for the whole row
        if wi[0] == 0:
            if sign != NULL:
                sign[i] = 0
            return -INFINITY
        wi = NULL
    if split_threads > 1:
        return logsumexp_row_split(row_at(x, sx, i), wi, n,
                                   sign + i if sign != NULL else sign, split_threads)
    return logsumexp_row(row_at(x, sx, i), wi, n, sign + i if sign != NULL else sign)


cdef void logsumexp_rows_impl(const floating *x, Py_ssize_t sx, const weight *w,
                              Py_ssize_t sw, const int64_t *w_rows, bint switches,
                              floating *out, floating *sign, Py_ssize_t rows, Py_ssize_t n,
                              int num_threads) noexcept nogil:
    """out[i] (and sign[i], unless sign is NULL) for rows i of n contiguous
    elements of x, sx bytes apart, weighted by the rows of w (see
    weight_row) unless w is NULL; if `switches`, by one weight per row
    (a mask's row switch: the row is all in, or out)."""
    cdef Py_ssize_t i
    cdef int nthreads = threads_for(rows * n, num_threads)
    if nthreads > 1 and rows < nthreads and n >= split_row_min:
        for i in range(rows):
            out[i] = logsumexp_row_at(x, sx, w, sw, w_rows, switches, i, n, sign, nthreads)
    elif nthreads > 1:
        for i in prange(rows, schedule="static", num_threads=nthreads):
            out[i] = logsumexp_row_at(x, sx, w, sw, w_rows, switches, i, n, sign, 1)
    else:
        for i in range(rows):
            out[i] = logsumexp_row_at(x, sx, w, sw, w_rows, switches, i, n, sign, 1)


def logsumexp_rows(const floating[:, :] x, const floating[:, :] b, floating[::1] out,
                   floating[::1] sign, int num_threads, cnp.ndarray mask=None,
                   const int64_t[::1] mask_rows=None, Py_ssize_t mask_stride=1):
    """out[i] = log|sum(b[i] * exp(x[i]))| for every row i, over the
    entries of nonzero b (b None: all, weight 1), and sign[i] the sign of
    the sum (sign None: a negative sum gives NaN).  Or, with `mask` (a bool
    array) instead of b, over the entries where it is True: row i's flags
    lie mask_rows[i] bytes from mask's data pointer, mask_stride (1, or 0
    for one flag per row) bytes apart."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1]
    require_contiguous_rows(n, x.strides[1], sizeof(floating), "x")
    if b is not None:
        require_shape("b", b.shape, x.shape, 2)
        require_contiguous_rows(n, b.strides[1], sizeof(floating), "b")
    if mask is not None:
        if (b is not None or mask_rows is None or mask_rows.shape[0] != rows
                or mask_stride not in (0, 1)):
            raise ValueError("mask needs mask_rows, one offset per row, a mask_stride of 0 "
                             "or 1, and no b")
        if cnp.PyArray_TYPE(mask) != cnp.NPY_BOOL:
            raise TypeError("mask must be a bool array")
    require_shape("out", out.shape, x.shape, 1)
    if sign is not None:
        require_shape("sign", sign.shape, x.shape, 1)
    if rows == 0:
        return
    # (an empty row reads nothing: its sum is 0, its result -inf)
    cdef const floating *xp = &x[0, 0] if n else NULL
    cdef const floating *bp = &b[0, 0] if b is not None and n else NULL
    cdef const unsigned char *mp = (<const unsigned char *>cnp.PyArray_BYTES(mask)
                                    if mask is not None and n else NULL)
    cdef floating *sp = &sign[0] if sign is not None else NULL
    with nogil:
        if mp != NULL:
            logsumexp_rows_impl(xp, x.strides[0], mp, 0, &mask_rows[0], mask_stride == 0 and n > 1,
                                &out[0], sp, rows, n, num_threads)
        else:
            logsumexp_rows_impl(xp, x.strides[0], bp, b.strides[0] if bp != NULL else 0,
                                <const int64_t *>NULL, False, &out[0], sp, rows, n,
                                num_threads)


def logsumexp_plain(x, axis, int num_threads):
    """logsumexp of a plain call (is_plain) along x's last axis, into a new
    array (a NumPy scalar for a 1-d x); None for any other call."""
    if not plain_call(x, axis, None, None):
        return None
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(arr)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(arr)[nd - 1]
    cdef Py_ssize_t rows = cnp.PyArray_SIZE(arr) // n
    cdef cnp.ndarray y = <cnp.ndarray>cnp.PyArray_EMPTY(nd - 1, cnp.PyArray_DIMS(arr),
                                                        cnp.PyArray_TYPE(arr), 0)
    cdef void *xp = cnp.PyArray_DATA(arr)
    cdef void *yp = cnp.PyArray_DATA(y)
    with nogil:
        if cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT:
            logsumexp_rows_impl(<const float *>xp, n * sizeof(float), <const float *>NULL, 0,
                                <const int64_t *>NULL, False, <float *>yp, <float *>NULL,
                                rows, n, num_threads)
        else:
            logsumexp_rows_impl(<const double *>xp, n * sizeof(double), <const double *>NULL,
                                0, <const int64_t *>NULL, False, <double *>yp,
                                <double *>NULL, rows, n, num_threads)
    return y[()] if nd == 1 else y


# ---------------------------------------------------------------------------
# Derivatives
# ---------------------------------------------------------------------------
# One fused pass per row: a reduction (dot or sum), then an element-wise
# update; no Jacobian is formed.  `out` may be either input: element j is
# read before it is written.  The update loads both inputs as it stores:
# where y lies a little after one of them, it walks a short row backward
# (walk_backward, _vmath.hpp), and a longer float32 row reads a copy of
# that input (product_row_staged); neither changes a result.

cdef inline void product_update(const floating *a, const floating *b, double total,
                                floating *y, Py_ssize_t n, bint log_vjp,
                                bint walks) noexcept nogil:
    """The update after the reduction `total`; backward where `walks` (the
    call's rows may walk: calls_walk) and this row would stall."""
    if walks and walk_backward(y, a, b, n * sizeof(floating)):
        product_update_backward(a, b, total, y, n, log_vjp)
    elif log_vjp:
        row_log_vjp(a, b, total, y, n)
    else:
        row_jvp(a, b, total, y, n)


cdef inline void product_row(const floating *a, const floating *b, floating *y,
                             Py_ssize_t n, bint log_vjp, bint walks) noexcept nogil:
    product_update(a, b, row_sum(b, n) if log_vjp else row_dot(a, b, n), y, n, log_vjp, walks)


cdef inline bint calls_walk(const void *a, Py_ssize_t sa, const void *b, Py_ssize_t sb,
                            const void *y, Py_ssize_t sy, size_t row_bytes, size_t itemsize,
                            bint log_vjp) noexcept nogil:
    """Whether some row of a product call may walk backward (walk_backward),
    tested once per call: rows of other lengths, calls whose rows would not
    stall and float64 softmax_vjp run their rows with no test per row.
    (float64 softmax_vjp walks forward: its light update on rows of 64-128
    in memory measured slower backward, 1.12-1.42x the time at the best
    placement against 1.10-1.17x for the stalls.)"""
    return ((log_vjp or itemsize == 4) and WALK_MIN_BYTES <= row_bytes <= WALK_MAX_BYTES
            and (sa != sy or sb != sy or walk_backward(y, a, b, row_bytes)))


cdef void product_row_staged(const floating *a, const floating *b, floating *y,
                             Py_ssize_t n, bint log_vjp, void *stage_area) noexcept nogil:
    """product_row for a call that may stall (call_stalls): where storing
    into y would stall the loads of an input that the first pass loads
    anyway (s or v; g, not logp), that pass also copies it into the stage
    (if there is one), placed clear of y, and the last pass reads the copy."""
    if stage_area == NULL:
        product_row(a, b, y, n, log_vjp, False)
        return
    cdef floating *copy = <floating *>stage_clear_of(stage_area, y)
    cdef double total
    if not log_vjp and store_stalls(y, a, n * sizeof(floating)):
        total = row_dot_copying(a, b, copy, n, log_vjp)
        a = copy
    elif store_stalls(y, b, n * sizeof(floating)):
        total = row_dot_copying(b, b if log_vjp else a, copy, n, log_vjp)
        b = copy
    else:
        product_row(a, b, y, n, log_vjp, False)
        return
    product_update(a, b, total, y, n, log_vjp, False)


cdef void product_row_split(const floating *a, const floating *b, floating *y,
                            Py_ssize_t n, int num_threads, bint log_vjp) noexcept nogil:
    """One long row shared by the threads: partial dots (sums) per chunk,
    added in chunk order, then each thread updates its chunk."""
    cdef double partial[MAX_CHUNKS]
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>num_threads, <Py_ssize_t>MAX_CHUNKS)
    cdef Py_ssize_t chunk = chunk_length(n, nchunks)
    cdef Py_ssize_t c, start, stop
    cdef double total = 0.0
    for c in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(c * chunk, n)
        stop = min(start + chunk, n)
        if log_vjp:
            partial[c] = row_sum(b + start, stop - start)
        else:
            partial[c] = row_dot(a + start, b + start, stop - start)
    for c in range(nchunks):
        total += partial[c]
    for c in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(c * chunk, n)
        stop = min(start + chunk, n)
        product_update(a + start, b + start, total, y + start, stop - start, log_vjp, False)


cdef void product_rows_walking(const floating *a, Py_ssize_t sa, const floating *b,
                               Py_ssize_t sb, floating *y, Py_ssize_t sy, Py_ssize_t rows,
                               Py_ssize_t n, int nthreads, bint log_vjp) noexcept nogil:
    """product_rows_impl's rows for a call whose rows may walk backward
    (calls_walk).  A function of its own: its loops in product_rows_impl
    left that too large for GCC to inline the reduction in them, and the
    test in every call's loops cost 3-5 % on rows of 10."""
    cdef Py_ssize_t i
    if nthreads > 1:
        for i in prange(rows, schedule="static", num_threads=nthreads):
            product_row(row_at(a, sa, i), row_at(b, sb, i), <floating *>row_at(y, sy, i), n,
                        log_vjp, True)
    else:
        for i in range(rows):
            product_row(row_at(a, sa, i), row_at(b, sb, i), <floating *>row_at(y, sy, i), n,
                        log_vjp, True)


cdef void product_rows_impl(const floating *a, Py_ssize_t sa, const floating *b,
                            Py_ssize_t sb, floating *y, Py_ssize_t sy, Py_ssize_t rows,
                            Py_ssize_t n, int num_threads, bint log_vjp) noexcept nogil:
    """product_row for rows i of n contiguous elements, sa, sb and sy
    bytes apart."""
    cdef Py_ssize_t i
    if rows == 0 or n == 0:
        return
    cdef int nthreads = threads_for(rows * n, num_threads)
    cdef size_t row_bytes = n * sizeof(floating)
    # The copy costs a store per element in the first pass, and measured
    # (2-core Zen 4) it paid only for float32 rows of at most
    # PRODUCT_COPY_MAX_BYTES, and only for an input that pass loads anyway:
    # for float64 rows of 37 it cost 9 % more than the stall, for logp
    # (an extra load too) 14 %, and beyond 4 KiB, a fourth row in cache,
    # up to 20 %.  A call whose rows may walk backward instead (calls_walk,
    # rows up to WALK_MAX_BYTES) makes no copy.
    cdef bint walks = calls_walk(a, sa, b, sb, y, sy, row_bytes, sizeof(floating), log_vjp)
    cdef bint stalls = (sizeof(floating) == 4 and row_bytes <= PRODUCT_COPY_MAX_BYTES
                        and not walks) and (
        (not log_vjp and call_stalls(a, sa, y, sy, row_bytes))
        or call_stalls(b, sb, y, sy, row_bytes))
    cdef void *stage
    if nthreads > 1 and rows < nthreads and n >= split_row_min:
        for i in range(rows):
            product_row_split(row_at(a, sa, i), row_at(b, sb, i), <floating *>row_at(y, sy, i),
                              n, nthreads, log_vjp)
    elif walks:
        product_rows_walking(a, sa, b, sb, y, sy, rows, n, nthreads, log_vjp)
    elif nthreads > 1 and stalls:
        with parallel(num_threads=nthreads):
            stage = new_stage(row_bytes)
            for i in prange(rows, schedule="static"):
                product_row_staged(row_at(a, sa, i), row_at(b, sb, i),
                                   <floating *>row_at(y, sy, i), n, log_vjp, stage)
            PyMem_RawFree(stage)
    elif nthreads > 1:
        for i in prange(rows, schedule="static", num_threads=nthreads):
            product_row(row_at(a, sa, i), row_at(b, sb, i), <floating *>row_at(y, sy, i), n,
                        log_vjp, False)
    elif stalls:
        stage = new_stage(row_bytes)
        for i in range(rows):
            product_row_staged(row_at(a, sa, i), row_at(b, sb, i), <floating *>row_at(y, sy, i),
                               n, log_vjp, stage)
        PyMem_RawFree(stage)
    else:
        for i in range(rows):
            product_row(row_at(a, sa, i), row_at(b, sb, i), <floating *>row_at(y, sy, i), n,
                        log_vjp, False)


def product_rows(const floating[:, :] a, const floating[:, :] b,
                 floating[:, :] out, int num_threads, bint log_vjp):
    """For every row i: out[i] = a[i] * (b[i] - <a[i], b[i]>), the softmax
    Jacobian-vector product (a = s, b = v); or, if log_vjp,
    out[i] = b[i] - exp(a[i]) * sum(b[i]), the log_softmax vector-Jacobian
    product (a = logp, b = g).  out may be a or b."""
    require_shape("b", b.shape, a.shape, 2)
    require_shape("out", out.shape, a.shape, 2)
    require_contiguous_rows(a.shape[1], a.strides[1], sizeof(floating), "a")
    require_contiguous_rows(b.shape[1], b.strides[1], sizeof(floating), "b")
    require_contiguous_rows(out.shape[1], out.strides[1], sizeof(floating), "out")
    if a.shape[0] == 0 or a.shape[1] == 0:
        return
    with nogil:
        product_rows_impl(&a[0, 0], a.strides[0], &b[0, 0], b.strides[0], &out[0, 0],
                          out.strides[0], a.shape[0], a.shape[1], num_threads, log_vjp)


def product_plain(a, b, axis, out, int num_threads, bint log_vjp):
    """product_rows of a plain call (is_plain, with b) along the last axis,
    into `out` or a new array, which is returned; None, with nothing
    written, for any other call (b None too: the general way reports it)."""
    if b is None or not plain_call(a, axis, out, b):
        return None
    cdef cnp.ndarray y = plain_result(a, out)
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef Py_ssize_t n = cnp.PyArray_DIMS(arr)[cnp.PyArray_NDIM(arr) - 1]
    cdef Py_ssize_t rows = cnp.PyArray_SIZE(arr) // n
    cdef void *ap = cnp.PyArray_DATA(arr)
    cdef void *bp = cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef void *yp = cnp.PyArray_DATA(y)
    with nogil:
        if cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT:
            product_rows_impl(<const float *>ap, n * sizeof(float), <const float *>bp,
                              n * sizeof(float), <float *>yp, n * sizeof(float), rows, n,
                              num_threads, log_vjp)
        else:
            product_rows_impl(<const double *>ap, n * sizeof(double), <const double *>bp,
                              n * sizeof(double), <double *>yp, n * sizeof(double), rows, n,
                              num_threads, log_vjp)
    return y


def softmax_jacobian_rows(const floating[:, :] s, floating[:, :, ::1] out,
                          int num_threads):
    """out[r] = diag(s[r]) - outer(s[r], s[r]) for every row r.

    The threads share the rows*n Jacobian rows, so one big Jacobian is
    split across threads as well as many small ones.
    """
    cdef Py_ssize_t rows = s.shape[0], n = s.shape[1], k
    cdef Py_ssize_t expected[3]
    expected[:] = [rows, n, n]
    require_shape("out", out.shape, expected, 3)
    require_contiguous_rows(n, s.strides[1], sizeof(floating), "s")
    if rows == 0 or n == 0:
        return
    cdef int nthreads = threads_for(rows * n * n, num_threads)
    with nogil:
        if nthreads > 1:
            for k in prange(rows * n, schedule="static", num_threads=nthreads):
                jacobian_row(&s[k // n, 0], k % n, &out[k // n, k % n, 0], n)
        else:
            for k in range(rows * n):
                jacobian_row(&s[k // n, 0], k % n, &out[k // n, k % n, 0], n)


# ---------------------------------------------------------------------------
# Fused softmax cross-entropy
# ---------------------------------------------------------------------------
# Per row, one log-sum-exp: m = max, S = sum exp(x - m); the loss is
# T log S - sum t (x - m) with T = sum t (for a class index c: log S - (x_c - m));
# the gradient softmax * T - t reuses the exp(x - m) stored in `grad`, and so
# does log S.

cdef inline double xent_row(const floating *x, const TargetRow[floating] &t, Py_ssize_t c,
                            double coef, floating *grad, double scale, Py_ssize_t n,
                            bint stalls, void *stage_area) noexcept nogil:
    """Loss of one row, -sum(a * log_softmax(x)), and its gradient
    (softmax(x) * sum(a) - a) * scale into grad unless it is NULL, for the
    target a = t + coef * e_c: t a row of target weights (probabilities,
    with the loss options if any; t.t NULL: none) and c a class index
    (-1: none) of weight coef.  The terms
    exp(x - max) go into grad, or, in a call that may stall (call_stalls)
    and a row that does, into the stage (see softmax_block)."""
    cdef floating m = row_max(x, n)
    cdef floating *terms = grad
    cdef floating *fetch = NULL
    if stalls and grad != NULL and stage_area != NULL and store_stalls(grad, x, n * sizeof(floating)):
        terms = <floating *>stage_clear_of(stage_area, x)
        fetch = grad
    cdef double total_lo
    cdef double total = row_exp_sum(x, m, terms, fetch, n, &total_lo)
    cdef double log_total = row_log_sum(x, m, terms, total, n)
    cdef double tsum = 0.0, weighted, loss = 0.0
    if c < 0:
        coef = 0.0
    if t.t != NULL:
        tsum = target_sum(t, n)
        # (the sum first: the product and the subtraction then sit together,
        # and builds with FMA fuse them into one rounding)
        weighted = row_weighted_shifted_sum(t, x, m, n)
        loss = tsum * log_total - weighted
    if c >= 0 and coef != 0:  # (a weight of 0 on a -inf logit adds 0, not NaN)
        loss += coef * (log_total - (<double>x[c] - <double>m))
    if grad != NULL:
        if t.t == NULL:
            row_scale_div(terms, coef * scale, total, total_lo, grad, n)
        else:
            row_xent_grad(terms, t, (tsum + coef) * scale / total, scale, grad, n)
        if c >= 0:
            grad[c] = <floating>(<double>grad[c] - coef * scale)
    return loss


cdef double xent_row_split(const floating *x, const TargetRow[floating] &t, Py_ssize_t c,
                           double coef,
                           floating *grad, double scale, Py_ssize_t n,
                           int num_threads) noexcept nogil:
    """xent_row for one long row shared by the threads: the same passes,
    each split into chunks: the max (and sum(t)), then exp(x - max) and its
    sum, then the weighted sum of t (x - max) and the gradient.  Unlike
    softmax_row_split, the exps are taken from the row's max, not each
    chunk's: rescaling a chunk's terms would round them twice (float64
    gradients 0.2 ulp worse on a row of 10**6, measured).  The partial
    sums (of S, of t and of the weighted terms) are added in chunk order,
    compensated (sum_of_parts)."""
    cdef floating chunk_max[MAX_CHUNKS]
    cdef double chunk_part[MAX_CHUNKS]
    cdef double chunk_lo[MAX_CHUNKS]
    cdef double chunk_tsum[MAX_CHUNKS]
    cdef double chunk_tsum_lo[MAX_CHUNKS]
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>num_threads, <Py_ssize_t>MAX_CHUNKS)
    cdef Py_ssize_t chunk = chunk_length(n, nchunks)
    cdef Py_ssize_t k, start, stop
    cdef floating m = -INFINITY
    cdef double total, tsum

    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        chunk_max[k] = row_max(x + start, stop - start)
        chunk_tsum[k] = chunk_tsum_lo[k] = 0.0
        if t.t != NULL:
            chunk_tsum[k] = target_sum(t.at(start), stop - start, &chunk_tsum_lo[k])
    for k in range(nchunks):
        if chunk_max[k] > m:
            m = chunk_max[k]
    tsum = sum_of_parts(chunk_tsum, chunk_tsum_lo, nchunks) if t.t != NULL else 0.0
    if c < 0:
        coef = 0.0

    for k in prange(nchunks, schedule="static", num_threads=num_threads):
        start = min(k * chunk, n)
        stop = min(start + chunk, n)
        chunk_part[k] = row_exp_sum(x + start, m,
                                    <floating *>NULL if grad == NULL else grad + start,
                                    <floating *>NULL, stop - start, &chunk_lo[k])
    cdef double total_lo
    total = sum_of_parts(chunk_part, chunk_lo, nchunks, &total_lo)
    cdef double log_total = row_log_sum(x, m, grad, total, n)

    if t.t != NULL or grad != NULL:
        for k in prange(nchunks, schedule="static", num_threads=num_threads):
            start = min(k * chunk, n)
            stop = min(start + chunk, n)
            if t.t != NULL:
                chunk_part[k] = row_weighted_shifted_sum(
                    t.at(start), x + start, m, stop - start, &chunk_lo[k])
            if grad != NULL and t.t == NULL:
                row_scale_div(grad + start, coef * scale, total, total_lo, grad + start,
                              stop - start)
            elif grad != NULL:
                row_xent_grad(grad + start, t.at(start),
                                        (tsum + coef) * scale / total, scale, grad + start,
                                        stop - start)
    cdef double loss = 0.0
    if t.t != NULL:
        loss = tsum * log_total - sum_of_parts(chunk_part, chunk_lo, nchunks)
    if c >= 0:
        if grad != NULL:
            grad[c] = <floating>(<double>grad[c] - coef * scale)
        if coef != 0:
            loss += coef * (log_total - (<double>x[c] - <double>m))
    return loss


cdef struct XentTarget:
    # What a row's target is (xent_row's a = t + coef * e_c), for row i:
    const void *t            # rows of target weights, t_stride elements apart, or NULL
    Py_ssize_t t_stride      # (0: one row for all, e.g. label smoothing's)
    const void *t_weight     # NULL, or the options of those rows (TargetRow's w,
    double t_keep            #   in the compute type, keep and uniform)
    double t_uniform
    const int64_t *index     # class indices, or NULL
    const double *coef       # the weight of each row's class index (NULL: 1)
    bint has_ignore          # rows whose index is ignore_index have loss 0, gradient 0
    int64_t ignore_index


cdef inline bint xent_ignored(const XentTarget *target, Py_ssize_t i) noexcept nogil:
    return (target.index != NULL and target.has_ignore
            and target.index[i] == target.ignore_index)


cdef inline TargetRow[floating] target_row(const XentTarget *target,
                                           const floating *t) noexcept nogil:
    """The target row t (NULL: none) with the target's options."""
    cdef TargetRow[floating] row
    row.t = t
    row.w = <const floating *>target.t_weight
    row.keep = <floating>target.t_keep
    row.uniform = <floating>target.t_uniform
    return row


cdef inline double xent_row_i(const floating *x, const XentTarget *target, floating *grad,
                              double scale, Py_ssize_t n, Py_ssize_t i, bint stalls,
                              void *stage_area, int split_threads) noexcept nogil:
    """xent_row (xent_row_split across split_threads if more than 1) for
    row i, x (n elements), picking that row out of the target and of grad
    (rows of n, unless NULL); an ignored row gets loss 0 and gradient 0."""
    cdef Py_ssize_t j, c = -1
    cdef double coef = 1.0
    cdef TargetRow[floating] t_row = target_row(
        target, <const floating *>target.t + i * target.t_stride if target.t != NULL else NULL)
    if grad != NULL:
        grad = grad + i * n
    if xent_ignored(target, i):
        if grad != NULL:
            for j in range(n):
                grad[j] = 0
        return 0.0
    if target.index != NULL:
        c = target.index[i]
        if target.coef != NULL:
            coef = target.coef[i]
    if split_threads > 1:
        return xent_row_split(x, t_row, c, coef, grad, scale, n, split_threads)
    return xent_row(x, t_row, c, coef, grad, scale, n, stalls, stage_area)


cdef void xent_rows_impl(const floating[:, :] x, const XentTarget *target, double *loss,
                         floating *grad, double scale, int num_threads) noexcept nogil:
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1], i
    cdef int nthreads = threads_for(rows * n, num_threads)
    cdef size_t row_bytes = n * sizeof(floating)
    cdef bint stalls = grad != NULL and call_stalls(&x[0, 0], x.strides[0], grad, row_bytes,
                                                    row_bytes)
    cdef void *stage
    if nthreads > 1 and rows < nthreads and n >= split_row_min:
        for i in range(rows):
            loss[i] = xent_row_i(&x[i, 0], target, grad, scale, n, i, False, NULL, nthreads)
    elif nthreads > 1:
        with parallel(num_threads=nthreads):
            stage = new_stage(row_bytes if stalls else 0)
            for i in prange(rows, schedule="static"):
                if stalls:
                    loss[i] = xent_row_i(&x[i, 0], target, grad, scale, n, i, True, stage, 1)
                else:
                    loss[i] = xent_row_i(&x[i, 0], target, grad, scale, n, i, False, NULL, 1)
            PyMem_RawFree(stage)
    else:
        stage = new_stage(row_bytes if stalls else 0)
        for i in range(rows):
            if stalls:
                loss[i] = xent_row_i(&x[i, 0], target, grad, scale, n, i, True, stage, 1)
            else:
                loss[i] = xent_row_i(&x[i, 0], target, grad, scale, n, i, False, NULL, 1)
        PyMem_RawFree(stage)


cdef inline float half_value(uint16_t h, bint bfloat16) noexcept nogil:
    cdef float value
    if bfloat16:
        load_half[BFloat16](&h, &value, 1)
    else:
        load_half[Float16](&h, &value, 1)
    return value


cdef inline void half_xent_pass(int which, const uint16_t *x, const HalfTarget &target,
                                float *m, double *part, double *lo, double *tsum,
                                double *tsum_lo, double num, double den, double scale,
                                Py_ssize_t c, double c_scale, uint16_t *grad, Py_ssize_t n,
                                bint bfloat16) noexcept nogil:
    """Pass `which` of half_xent_row_chunked over one range of the row (x,
    target, grad and c from the range's start): 0 the max (into m) and the
    target's sum (tsum, tsum_lo), 1 the sum of exp(x - m), 2 the last pass
    (half_xent_last_pass); the sums into part and lo."""
    if which == 0:
        m[0] = (half_row_max[BFloat16](x, NULL, NULL, n) if bfloat16
                else half_row_max[Float16](x, NULL, NULL, n))
        tsum[0] = tsum_lo[0] = 0.0
        if target.given():
            tsum[0] = (half_target_sum[BFloat16](target, n, tsum_lo) if bfloat16
                       else half_target_sum[Float16](target, n, tsum_lo))
    elif which == 1:
        part[0] = (half_row_exp_sum[BFloat16](x, NULL, NULL, m[0], n, lo) if bfloat16
                   else half_row_exp_sum[Float16](x, NULL, NULL, m[0], n, lo))
    elif bfloat16:
        part[0] = half_xent_last_pass[BFloat16](x, target, m[0], num, den, scale, c, c_scale,
                                                grad, n, lo)
    else:
        part[0] = half_xent_last_pass[Float16](x, target, m[0], num, den, scale, c, c_scale,
                                               grad, n, lo)


cdef double half_xent_row_chunked(const uint16_t *x, const HalfTarget &target, Py_ssize_t c,
                                  double coef, uint16_t *grad, double scale, Py_ssize_t n,
                                  int split_threads, bint bfloat16) noexcept nogil:
    """xent_row for a long float16 (bfloat16) row, a chunk at a time (its
    passes those of xent_row_split), shared by split_threads threads if
    more than 1."""
    cdef float chunk_max[MAX_CHUNKS]
    cdef double chunk_part[MAX_CHUNKS]
    cdef double chunk_lo[MAX_CHUNKS]
    cdef double chunk_tsum[MAX_CHUNKS]
    cdef double chunk_tsum_lo[MAX_CHUNKS]
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>split_threads, <Py_ssize_t>MAX_CHUNKS)
    cdef Py_ssize_t chunk = chunk_length(n, nchunks)
    cdef Py_ssize_t k, start, stop
    cdef float m = -INFINITY
    cdef double tsum = 0.0, total = 0.0, num = 0.0, log_total, loss = 0.0
    cdef int which
    if c < 0:
        coef = 0.0
    for which in range(3):
        if which == 1:
            for k in range(nchunks):
                if chunk_max[k] > m:
                    m = chunk_max[k]
            for k in range(nchunks):
                chunk_max[k] = m
            tsum = sum_of_parts(chunk_tsum, chunk_tsum_lo, nchunks)
        elif which == 2:
            total = sum_of_parts(chunk_part, chunk_lo, nchunks)
            num = ((tsum + coef) if target.given() else coef) * scale
            if not target.given() and grad == NULL:  # (nothing to sum or write)
                break
        if nchunks == 1:
            half_xent_pass(which, x, target, &chunk_max[0], &chunk_part[0], &chunk_lo[0],
                           &chunk_tsum[0], &chunk_tsum_lo[0], num, total, scale, c,
                           coef * scale, grad, n, bfloat16)
            continue
        for k in prange(nchunks, schedule="static", num_threads=split_threads):
            start = min(k * chunk, n)
            stop = min(start + chunk, n)
            half_xent_pass(which, x + start, target.at(start), &chunk_max[k], &chunk_part[k],
                           &chunk_lo[k], &chunk_tsum[k], &chunk_tsum_lo[k], num, total, scale,
                           c - start, coef * scale, grad + start if grad != NULL else grad,
                           stop - start, bfloat16)
    log_total = (half_row_log_sum[BFloat16](x, NULL, NULL, m, total, n) if bfloat16
                 else half_row_log_sum[Float16](x, NULL, NULL, m, total, n))
    if target.given():
        loss = tsum * log_total - sum_of_parts(chunk_part, chunk_lo, nchunks)
    cdef float x_c
    if c >= 0 and coef != 0:
        x_c = half_value(x[c], bfloat16)
        loss += coef * (log_total - (<double>x_c - <double>m))
    return loss


cdef double half_xent_row_i(const uint16_t *x, const XentTarget *target, bint t_half,
                            uint16_t *grad, double scale, Py_ssize_t n, Py_ssize_t i,
                            float *work, int split_threads, bint bfloat16) noexcept nogil:
    """xent_row_i for a float16 (bfloat16) row i of logits (and of a
    probability target if t_half; otherwise target.t is float rows) and of
    grad (rows of n, unless NULL).  A row of up to HALF_CHUNK is staged
    whole in `work`, 3n floats (the logits, the target row, the gradient)
    and goes through xent_row; a longer one, or one split across
    split_threads (if more than 1), through half_xent_row_chunked."""
    cdef Py_ssize_t j, c = -1
    cdef double coef = 1.0, loss
    cdef TargetRow[float] t_row
    cdef HalfTarget half_target
    if grad != NULL:
        grad = grad + i * n
    if xent_ignored(target, i):
        if grad != NULL:
            for j in range(n):
                grad[j] = 0  # (the bits of +0)
        return 0.0
    if target.index != NULL:
        c = target.index[i]
        if target.coef != NULL:
            coef = target.coef[i]
    if n > HALF_CHUNK or split_threads > 1:
        half_target.half = <const uint16_t *>target.t + i * target.t_stride if t_half else NULL
        half_target.values = NULL
        if target.t != NULL and not t_half:
            half_target.values = <const float *>target.t + i * target.t_stride
        half_target.options = target_row(target, <const float *>NULL)  # (its t unused)
        return half_xent_row_chunked(x, half_target, c, coef, grad, scale, n, split_threads,
                                     bfloat16)
    if bfloat16:
        load_half[BFloat16](x, work, n)
    else:
        load_half[Float16](x, work, n)
    if target.t != NULL and t_half:
        if bfloat16:
            load_half[BFloat16](<const uint16_t *>target.t + i * target.t_stride, work + n, n)
        else:
            load_half[Float16](<const uint16_t *>target.t + i * target.t_stride, work + n, n)
        t_row = target_row(target, <const float *>work + n)
    else:
        t_row = target_row(
            target, <const float *>target.t + i * target.t_stride if target.t != NULL else NULL)
    loss = xent_row(<const float *>work, t_row, c, coef,
                    work + 2 * n if grad != NULL else <float *>NULL, scale, n, False, NULL)
    if grad != NULL and bfloat16:
        store_half[BFloat16](work + 2 * n, grad, n)
    elif grad != NULL:
        store_half[Float16](work + 2 * n, grad, n)
    return loss


cdef Py_ssize_t first_out_of_range(const XentTarget *target, Py_ssize_t rows,
                                   Py_ssize_t n) noexcept nogil:
    """Position of the first index outside [0, n) that is not ignored, or
    -1 if there is none."""
    cdef Py_ssize_t i
    for i in range(rows):
        if ((target.index[i] < 0 or target.index[i] >= n)
                and not xent_ignored(target, i)):
            return i
    return -1


cdef int set_target_options(XentTarget *spec, object options, object target, Py_ssize_t n,
                            size_t itemsize) except -1:
    """The loss options of a probability target into spec: `options` is
    None or (w, keep, uniform), w a contiguous array of n values of the
    compute type (TargetRow's)."""
    spec.t_weight, spec.t_keep, spec.t_uniform = NULL, 1.0, 0.0
    if options is None:
        return 0
    if target is None:
        raise ValueError("target_options needs a target")
    cdef cnp.ndarray w = options[0]
    if (cnp.PyArray_NDIM(w) != 1 or cnp.PyArray_DIMS(w)[0] != n
            or cnp.PyArray_ITEMSIZE(w) != itemsize or not cnp.PyArray_IS_C_CONTIGUOUS(w)):
        raise ValueError(f"target_options' weights must be {n} contiguous values of "
                         f"{itemsize} bytes")
    spec.t_keep, spec.t_uniform = options[1], options[2]
    if n:
        spec.t_weight = cnp.PyArray_DATA(w)
    return 0


def half_cross_entropy_rows(const uint16_t[:, :] logits, target, const int64_t[::1] index,
                            double[::1] loss, uint16_t[:, ::1] grad, double grad_scale,
                            int num_threads, const double[::1] index_weight=None,
                            ignore_index=None, bint bfloat16=False, target_options=None):
    """cross_entropy_rows for float16 (bfloat16) logits given as their
    uint16 bits, and the gradient written so; `target` is None, rows of
    the same half format (uint16 bits), or float32 rows (a shared smoothing
    row, of row stride 0); target_options' weights are float32.  A row of
    up to HALF_CHUNK is staged in float on its thread (3n floats), a longer
    one read a chunk at a time.  Returns (sum of the losses, -1), or
    (nan, i) as cross_entropy_rows."""
    cdef Py_ssize_t rows = logits.shape[0], n = logits.shape[1], i
    require_contiguous_rows(n, logits.strides[1], sizeof(uint16_t), "logits")
    cdef const uint16_t[:, :] t_half
    cdef const float[:, :] t_float
    cdef bint is_half = False
    cdef XentTarget spec
    spec.t, spec.t_stride = NULL, 0
    spec.index, spec.coef = <const int64_t *>NULL, <const double *>NULL
    spec.has_ignore, spec.ignore_index = ignore_index is not None, 0
    if ignore_index is not None:
        spec.ignore_index = ignore_index
    set_target_options(&spec, target_options, target, n, sizeof(float))
    if target is not None and cnp.PyArray_TYPE(<cnp.ndarray>target) == cnp.NPY_USHORT:
        t_half, is_half = target, True
        require_shape("target", t_half.shape, logits.shape, 2)
        require_contiguous_rows(n, t_half.strides[1], sizeof(uint16_t), "target")
        if rows and n:
            spec.t, spec.t_stride = &t_half[0, 0], t_half.strides[0] // sizeof(uint16_t)
    elif target is not None:
        t_float = target
        require_shape("target", t_float.shape, logits.shape, 2)
        require_contiguous_rows(n, t_float.strides[1], sizeof(float), "target")
        if rows and n:
            spec.t, spec.t_stride = &t_float[0, 0], t_float.strides[0] // sizeof(float)
    if index is not None:
        require_shape("index", index.shape, logits.shape, 1)
    if index_weight is not None:
        require_shape("index_weight", index_weight.shape, logits.shape, 1)
    if loss is not None:
        require_shape("loss", loss.shape, logits.shape, 1)
    if grad is not None:
        require_shape("grad", grad.shape, logits.shape, 2)
    cdef Py_ssize_t bad_row
    if index is not None and rows:
        spec.index = &index[0]
        spec.coef = &index_weight[0] if index_weight is not None else NULL
        bad_row = first_out_of_range(&spec, rows, n)
        if bad_row >= 0:
            return float("nan"), bad_row
    if rows == 0 or n == 0:
        return 0.0, -1
    cdef double *row_loss = (&loss[0] if loss is not None
                             else <double *>PyMem_RawMalloc(rows * sizeof(double)))
    if row_loss == NULL:
        raise MemoryError(f"cross-entropy: cannot allocate {rows * sizeof(double)} bytes "
                          f"for {rows} row losses")
    cdef const uint16_t *xp = &logits[0, 0]
    cdef Py_ssize_t sx = logits.strides[0] // sizeof(uint16_t)
    cdef uint16_t *g = &grad[0, 0] if grad is not None else NULL
    cdef int nthreads = threads_for(rows * n, num_threads)
    cdef size_t work_size = 3 * n * sizeof(float) if n <= HALF_CHUNK else 0
    cdef float *work
    cdef int failed = 0
    cdef double total
    with nogil:
        if nthreads > 1 and rows < nthreads and n >= split_row_min:
            for i in range(rows):
                row_loss[i] = half_xent_row_i(xp + i * sx, &spec, is_half, g, grad_scale, n, i,
                                              NULL, nthreads, bfloat16)
        else:
            with parallel(num_threads=nthreads):
                work = <float *>PyMem_RawMalloc(work_size)
                for i in prange(rows, schedule="static"):
                    if work == NULL and work_size:
                        failed += 1
                    else:
                        row_loss[i] = half_xent_row_i(xp + i * sx, &spec, is_half, g,
                                                      grad_scale, n, i, work, 1, bfloat16)
                PyMem_RawFree(work)
        total = row_sum(row_loss, rows)
    if loss is None:
        PyMem_RawFree(row_loss)
    if failed:
        raise MemoryError(f"cross-entropy: cannot allocate {work_size} bytes of row stage")
    return total, -1


def cross_entropy_rows(const floating[:, :] logits, const floating[:, :] target,
                       const int64_t[::1] index, double[::1] loss,
                       floating[:, ::1] grad, double grad_scale, int num_threads,
                       const double[::1] index_weight=None, ignore_index=None,
                       target_options=None):
    """loss[i] = -sum(a[i] * log_softmax(logits[i])) for every row i.

    The target is a[i] = target[i] + index_weight[i] * onehot(index[i]):
    at least one of `target` (rows x n target weights, probabilities; a
    row stride of 0 gives every row the same) and `index` (class indices,
    each of weight index_weight[i], or 1 if that is None) is given.  Rows
    whose index is `ignore_index` (an int, or None) have loss 0 and
    gradient 0.  `target_options`, None or (w, keep, uniform) with w n
    values of the logits' type, applies the loss options to the target
    rows as they are read: (target keep + uniform) w (TargetRow).
    `loss` receives the rows' losses, or is None when only
    their sum is wanted.  `grad` (a C-contiguous rows x n array, or None)
    receives (softmax * sum(a) - a) * grad_scale.

    Returns (sum of the losses, -1), or (nan, i) without computing anything
    when index[i] is the first index outside [0, n) that is not ignored.
    """
    cdef Py_ssize_t rows = logits.shape[0], n = logits.shape[1]
    require_contiguous_rows(n, logits.strides[1], sizeof(floating), "logits")
    if target is not None:
        require_shape("target", target.shape, logits.shape, 2)
        require_contiguous_rows(n, target.strides[1], sizeof(floating), "target")
    if index is not None:
        require_shape("index", index.shape, logits.shape, 1)
    if index_weight is not None:
        require_shape("index_weight", index_weight.shape, logits.shape, 1)
        if index is None:
            raise ValueError("index_weight needs index")
    if target is None and index is None:
        raise ValueError("cross_entropy_rows needs a target, an index or both")
    if loss is not None:
        require_shape("loss", loss.shape, logits.shape, 1)
    if grad is not None:
        require_shape("grad", grad.shape, logits.shape, 2)
    cdef XentTarget spec
    spec.t, spec.t_stride = NULL, 0
    spec.index, spec.coef = <const int64_t *>NULL, <const double *>NULL
    spec.has_ignore, spec.ignore_index = ignore_index is not None, 0
    if ignore_index is not None:
        spec.ignore_index = ignore_index
    set_target_options(&spec, target_options, target, n, sizeof(floating))
    cdef Py_ssize_t bad_row
    if index is not None and rows:
        spec.index = &index[0]
        spec.coef = &index_weight[0] if index_weight is not None else NULL
        bad_row = first_out_of_range(&spec, rows, n)
        if bad_row >= 0:
            return float("nan"), bad_row
    if rows == 0 or n == 0:
        return 0.0, -1
    cdef floating *g = NULL
    if target is not None:
        spec.t = &target[0, 0]
        spec.t_stride = target.strides[0] // <Py_ssize_t>sizeof(floating)
    if grad is not None:
        g = &grad[0, 0]
    # the row losses are kept (here or in `loss`) for a sum that does not
    # depend on how the rows were shared among threads (the scratch from
    # Python's raw allocator, which tracemalloc sees)
    cdef double *row_loss = (&loss[0] if loss is not None
                             else <double *>PyMem_RawMalloc(rows * sizeof(double)))
    if row_loss == NULL:
        raise MemoryError(f"cross-entropy: cannot allocate {rows * sizeof(double)} bytes "
                          f"for {rows} row losses")
    cdef double total
    with nogil:
        xent_rows_impl(logits, &spec, row_loss, g, grad_scale, num_threads)
        total = row_sum(row_loss, rows)  # compensated
    if loss is None:
        PyMem_RawFree(row_loss)
    return total, -1
