/*
 * Vectorisable elementary functions and row reductions for the fastsoftmax
 * kernels (_kernels.pxi).
 *
 * Why C and not Cython: the compiler may only vectorise a reduction
 * (sum, max) if it is allowed to reorder it, which needs -ffast-math, and
 * -ffast-math would break the -inf masking and NaN rules the library
 * promises.  Here the reordering is written out instead (sums over an
 * explicit array of lanes, see FS_LANE_SUM, with an error bound we control)
 * or granted for one loop by an "omp simd" pragma, which Cython cannot
 * emit.  libm's exp is a scalar call that blocks
 * vectorisation, so exp is a branch-free polynomial here.
 *
 * Everything is plain C99: the same source is compiled once per instruction
 * set (SSE2 baseline, AVX2+FMA, AVX-512); the Python layer picks one at
 * import time.
 */
#ifndef FASTSOFTMAX_VMATH_H
#define FASTSOFTMAX_VMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------ */
/* Build facts the Python layer reports (show_config, tests).          */
/* ------------------------------------------------------------------ */

static inline int fs_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* OpenMP's current thread limit for the calling thread (1 without OpenMP).
 * threadpoolctl changes this value, which is why we read it per call. */
static inline int fs_omp_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static inline void fs_omp_set_num_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* Number of threads of the innermost parallel region (1 outside one). */
static inline int fs_omp_team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static inline int fs_simd_width_bytes(void)
{
#if defined(__AVX512F__)
    return 64;
#elif defined(__AVX2__) || defined(__AVX__)
    return 32;
#else
    return 16;
#endif
}

/* Run-time CPU feature test (GCC and Clang builtins). */
static inline int fs_cpu_supports(const char *feature)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2");
    if (strcmp(feature, "fma") == 0) return __builtin_cpu_supports("fma");
    if (strcmp(feature, "avx512f") == 0) return __builtin_cpu_supports("avx512f");
    if (strcmp(feature, "avx512dq") == 0) return __builtin_cpu_supports("avx512dq");
    if (strcmp(feature, "avx512bw") == 0) return __builtin_cpu_supports("avx512bw");
    if (strcmp(feature, "avx512vl") == 0) return __builtin_cpu_supports("avx512vl");
    return 0;
#else
    (void)feature;
    return 0;
#endif
}

/* ------------------------------------------------------------------ */
/* exp                                                                  */
/* ------------------------------------------------------------------ */
/*
 * exp(hi + lo), where hi + lo is an argument given as an unevaluated sum
 * (lo tiny).  Softmax needs exp(x - m): the rounding of x - m alone would
 * cost |x - m| * eps of relative error (dozens of ulp for probabilities
 * around e^-20), so the kernels pass the exact difference as hi + lo.
 *
 * Method (Cody & Waite): k = round(x / ln2), r = x - k ln2 with ln2 split in
 * a short-mantissa high part (k * LN2_HI is exact) and a low part, so that
 * |r| <= ln2 / 2; exp(r) by its Taylor polynomial (degree 7 for float,
 * 13 for double: truncation error below 0.1 ulp on that interval); then the
 * result is scaled by 2^k so that subnormal results are still rounded only
 * once.  Rounding to an integer uses the
 * "add 1.5 * 2^(mantissa bits)" trick, which also leaves the integer in the
 * low mantissa bits: pure float arithmetic and bit shifts, no float-to-int
 * conversion (undefined for NaN), no 64-bit arithmetic shift (SSE2 has
 * none), no branches: the compiler vectorises it for every instruction set.
 *
 * Special values: -inf and anything whose exp underflows give +0 exactly,
 * NaN gives NaN, large arguments overflow to +inf.
 */

static inline float fs_f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static inline uint32_t fs_bits_of_f32(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
static inline double fs_f64_from_bits(uint64_t u) { double f; memcpy(&f, &u, sizeof f); return f; }
static inline uint64_t fs_bits_of_f64(double f) { uint64_t u; memcpy(&u, &f, sizeof u); return u; }

#define FS_F32_LOWEST (-104.0f)     /* exp(-104) < 2^-150: rounds to 0 */
#define FS_F32_HIGHEST 89.0f        /* exp(89) > FLT_MAX: overflows */
#define FS_F32_MAGIC 12582912.0f    /* 1.5 * 2^23 */
#define FS_F64_LOWEST (-746.0)      /* exp(-746) < 2^-1075: rounds to 0 */
#define FS_F64_HIGHEST 710.0        /* exp(710) > DBL_MAX: overflows */
#define FS_F64_MAGIC 6755399441055744.0  /* 1.5 * 2^52 */

/* Cody-Waite: k = round(x / ln2) (as a float) and r = hi + lo - k ln2. */
static inline float fs_exp_reduce_f32(float xc, float lo, float *r)
{
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f;       /* 9 significant bits */
    const float ln2_lo = -2.12194440e-4f;    /* ln2 - ln2_hi */
    float kf = (xc * log2e + FS_F32_MAGIC) - FS_F32_MAGIC;
    *r = (xc - kf * ln2_hi) + (lo - kf * ln2_lo);
    return kf;
}

static inline double fs_exp_reduce_f64(double xc, double lo, double *r)
{
    const double log2e = 1.4426950408889634074;
    const double ln2_hi = 6.93145751953125e-1;            /* 22 significant bits */
    const double ln2_lo = 1.42860682030941723212e-6;      /* ln2 - ln2_hi */
    double kf = (xc * log2e + FS_F64_MAGIC) - FS_F64_MAGIC;
    *r = (xc - kf * ln2_hi) + (lo - kf * ln2_lo);
    return kf;
}

/* exp(r) for |r| <= ln2 / 2: Taylor polynomials, Horner form. */
static inline float fs_exp_poly_f32(float r)
{
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    return p * r + 1.0f;
}

static inline double fs_exp_poly_f64(double r)
{
    double p = 1.0 / 6227020800.0;   /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    return p * r + 1.0;
}

/* exp(hi + lo) for any hi.  2^k = 2^k1 * 2^k2 with each factor normal;
 * the biased exponent ki + 127 is read off the mantissa bits of
 * (ki + 127 + magic). */
static inline float fs_exp2w_f32(float hi, float lo)
{
    float xc = hi < FS_F32_LOWEST ? FS_F32_LOWEST : hi;    /* NaN passes through */
    xc = xc > FS_F32_HIGHEST ? FS_F32_HIGHEST : xc;
    float r, kf = fs_exp_reduce_f32(xc, lo, &r);
    float p = fs_exp_poly_f32(r);
    float k1 = (kf * 0.5f + FS_F32_MAGIC) - FS_F32_MAGIC, k2 = kf - k1;
    float scale1 = fs_f32_from_bits(fs_bits_of_f32(k1 + (127.0f + FS_F32_MAGIC)) << 23);
    float scale2 = fs_f32_from_bits(fs_bits_of_f32(k2 + (127.0f + FS_F32_MAGIC)) << 23);
    float y = (p * scale1) * scale2;
    return hi < FS_F32_LOWEST ? 0.0f : y;
}

static inline double fs_exp2w_f64(double hi, double lo)
{
    double xc = hi < FS_F64_LOWEST ? FS_F64_LOWEST : hi;
    xc = xc > FS_F64_HIGHEST ? FS_F64_HIGHEST : xc;
    double r, kf = fs_exp_reduce_f64(xc, lo, &r);
    double p = fs_exp_poly_f64(r);
    double k1 = (kf * 0.5 + FS_F64_MAGIC) - FS_F64_MAGIC, k2 = kf - k1;
    double scale1 = fs_f64_from_bits(fs_bits_of_f64(k1 + (1023.0 + FS_F64_MAGIC)) << 52);
    double scale2 = fs_f64_from_bits(fs_bits_of_f64(k2 + (1023.0 + FS_F64_MAGIC)) << 52);
    double y = (p * scale1) * scale2;
    return hi < FS_F64_LOWEST ? 0.0 : y;
}

/* exp(hi + lo) for hi <= 0, the softmax case exp(x - max): cheaper scaling.
 * p * 2^k = (p * 2^(k+126)) * 2^-126: for k in [-150, 1] the first product
 * is a normal number, made by adding k + 126 to p's exponent bits (exact),
 * and the second rounds once, into the subnormal range if need be.  No
 * clamp: below the lowest argument (-inf included) the garbage computed
 * from an out-of-range k is replaced by 0 at the end, and a NaN argument
 * is passed through (adding k's bits to a NaN with a payload, such as R's
 * NA, could make a number). */
static inline float fs_expneg2w_f32(float hi, float lo)
{
    float r, kf = fs_exp_reduce_f32(hi, lo, &r);
    float p = fs_exp_poly_f32(r);
    uint32_t shift = fs_bits_of_f32(kf + (126.0f + FS_F32_MAGIC)) << 23;
    float y = fs_f32_from_bits(fs_bits_of_f32(p) + shift) * 0x1p-126f;
    y = hi == hi ? y : hi;
    return hi < FS_F32_LOWEST ? 0.0f : y;
}

static inline double fs_expneg2w_f64(double hi, double lo)
{
    double r, kf = fs_exp_reduce_f64(hi, lo, &r);
    double p = fs_exp_poly_f64(r);
    uint64_t shift = fs_bits_of_f64(kf + (1022.0 + FS_F64_MAGIC)) << 52;
    double y = fs_f64_from_bits(fs_bits_of_f64(p) + shift) * 0x1p-1022;
    y = hi == hi ? y : hi;
    return hi < FS_F64_LOWEST ? 0.0 : y;
}

/* exp(hi + lo) * 2^K for hi <= 0, K = 64 (float) or 128 (double): results
 * that exp would round to the subnormal grid stay normal here, with full
 * relative accuracy.  For the tail sum of log_softmax, whose terms would
 * otherwise each lose up to half a subnormal step.  Adding kf + K to p's
 * exponent field keeps it within 1..254 (1..2046) down to hi = -130
 * (-790); below, the result is 0: the terms left out are under 2^-187
 * (2^-1139), too small to move a sum on the subnormal grid of 2^-149
 * (2^-1074) even by a fraction of a step. */
#define FS_F32_TAIL_SCALE 64
#define FS_F64_TAIL_SCALE 128
#define FS_f32_TAIL_SCALE FS_F32_TAIL_SCALE
#define FS_f64_TAIL_SCALE FS_F64_TAIL_SCALE
/* Tail sums below n times this are recomputed from scaled exps: each term
 * rounded to the subnormal grid is off by up to 2^-150 (2^-1075), which
 * then stays below 2^-50 of the tail's own ulp. */
#define FS_f32_TAIL_RECOMPUTE 0x1p-76
#define FS_f64_TAIL_RECOMPUTE 0x1p-970
#define FS_F32_TAIL_LOWEST (-130.0f)
#define FS_F64_TAIL_LOWEST (-790.0)
static inline float fs_expneg2w_scaled_f32(float hi, float lo)
{
    float r, kf = fs_exp_reduce_f32(hi, lo, &r);
    float p = fs_exp_poly_f32(r);
    uint32_t shift = fs_bits_of_f32(kf + ((float)FS_F32_TAIL_SCALE + FS_F32_MAGIC)) << 23;
    float y = fs_f32_from_bits(fs_bits_of_f32(p) + shift);
    y = hi == hi ? y : hi;   /* NaN stays NaN, as in fs_expneg2w_f32 */
    return hi < FS_F32_TAIL_LOWEST ? 0.0f : y;
}

static inline double fs_expneg2w_scaled_f64(double hi, double lo)
{
    double r, kf = fs_exp_reduce_f64(hi, lo, &r);
    double p = fs_exp_poly_f64(r);
    uint64_t shift = fs_bits_of_f64(kf + ((double)FS_F64_TAIL_SCALE + FS_F64_MAGIC)) << 52;
    double y = fs_f64_from_bits(fs_bits_of_f64(p) + shift);
    y = hi == hi ? y : hi;
    return hi < FS_F64_TAIL_LOWEST ? 0.0 : y;
}

static inline float fs_exp_f32(float x) { return fs_exp2w_f32(x, 0.0f); }
static inline double fs_exp_f64(double x) { return fs_exp2w_f64(x, 0.0); }

/* ------------------------------------------------------------------ */
/* Row primitives, one definition for both float types.                */
/* ------------------------------------------------------------------ */
/*
 * Sums keep FS_LANES partial sums in double, one per vector lane, written
 * as a fixed-length "omp simd" loop over a lane array: the compiler keeps
 * the array in registers (-fopenmp-simd enables the pragma without the
 * OpenMP runtime; a compiler without it just ignores the pragma), and
 * fs_lane_total adds the lanes pairwise at the end.  ("omp simd reduction"
 * would do the same, but GCC then adds the lanes one after another: 16
 * dependent additions, ~20 ns on every row, which dominated short rows.)
 *
 * FS_LANE_SUM (float data): plain double lanes.  Each term is a float, so
 *   a lane of m terms is off by at most m * 2^-53 relative to the sum of
 *   the terms' magnitudes: for n = 10^8 (m = n / 16), 7e-10, below 0.02
 *   float ulp.  Compensation would buy nothing a float result can show.
 * FS_LANE_KAHAN_SUM (double data): Kahan compensation in every lane.  A
 *   double lane summing, say, one large and many small terms would round
 *   the same way at every step and lose several ulp; compensated lanes keep
 *   the error at about 2 eps whatever n is.  An infinite term, or a sum
 *   that overflows, would make the carry infinite or NaN, and the result
 *   inf - inf = NaN: a carry that is not finite is reset to 0 instead, so
 *   that an infinite sum stays infinite.
 *
 * In both, TERM is an expression in j (it may also store something).
 */
#define FS_LANES 16

static inline double fs_lane_total(const double *lane)
{
    double h8[8], h4[4];
    for (int l = 0; l < 8; l++) h8[l] = lane[l] + lane[l + 8];
    for (int l = 0; l < 4; l++) h4[l] = h8[l] + h8[l + 4];
    return (h4[0] + h4[2]) + (h4[1] + h4[3]);
}

/* a + b = s + *err exactly (TwoSum); the errors are gathered in *err */
static inline double fs_two_sum(double a, double b, double *err)
{
    double s = a + b, bv = s - a;
    double e = (a - (s - bv)) + (b - bv);
    *err += e - e == 0.0 ? e : 0.0;   /* inf operands or sum: no NaN */
    return s;
}

/* sum of the lanes minus the sum of their carries, each addition of the
 * pairwise tree compensated: the plain tree's four roundings could cost a
 * double softmax ~2 ulp */
static inline double fs_lane_total_compensated(const double *lane, const double *carry)
{
    double h8[8], h4[4], h2[2], e8[8], e4[4], e2[2], e1 = 0.0;
    for (int l = 0; l < 8; l++) { e8[l] = -(carry[l] + carry[l + 8]); h8[l] = fs_two_sum(lane[l], lane[l + 8], &e8[l]); }
    for (int l = 0; l < 4; l++) { e4[l] = e8[l] + e8[l + 4]; h4[l] = fs_two_sum(h8[l], h8[l + 4], &e4[l]); }
    for (int l = 0; l < 2; l++) { e2[l] = e4[l] + e4[l + 2]; h2[l] = fs_two_sum(h4[l], h4[l + 2], &e2[l]); }
    e1 = e2[0] + e2[1];
    double total = fs_two_sum(h2[0], h2[1], &e1);
    return total + e1;
}

/* BODY(l_, j) for every j in [0, N): j = base_ + l_, lane l_ of a block of
 * FS_LANES; the last block is partial. */
#define FS_FOR_LANES(N, BODY)                                                  \
    do {                                                                       \
        ptrdiff_t base_ = 0;                                                   \
        for (; base_ + FS_LANES <= (N); base_ += FS_LANES) {                   \
            _Pragma("omp simd")                                                \
            for (ptrdiff_t l_ = 0; l_ < FS_LANES; l_++) {                      \
                const ptrdiff_t j = base_ + l_;                                \
                BODY;                                                          \
            }                                                                  \
        }                                                                      \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t l_ = 0; l_ < (N) - base_; l_++) {                       \
            const ptrdiff_t j = base_ + l_;                                    \
            BODY;                                                              \
        }                                                                      \
    } while (0)

#define FS_LANE_SUM(RESULT, N, TERM)                                           \
    do {                                                                       \
        double lane_[FS_LANES] = {0.0};                                        \
        FS_FOR_LANES(N, lane_[l_] += (TERM));                                  \
        (RESULT) = fs_lane_total(lane_);                                       \
    } while (0)

#define FS_LANE_KAHAN_SUM(RESULT, N, TERM)                                     \
    do {                                                                       \
        double lane_[FS_LANES] = {0.0}, carry_[FS_LANES] = {0.0};              \
        FS_FOR_LANES(N, {                                                      \
            double y_ = (double)(TERM) - carry_[l_];                           \
            double t_ = lane_[l_] + y_;                                        \
            double c_ = (t_ - lane_[l_]) - y_;                                 \
            carry_[l_] = c_ - c_ == 0.0 ? c_ : 0.0;                            \
            lane_[l_] = t_;                                                    \
        });                                                                    \
        (RESULT) = fs_lane_total_compensated(lane_, carry_);                   \
    } while (0)

#define FS_SUM_f32 FS_LANE_SUM
#define FS_SUM_f64 FS_LANE_KAHAN_SUM

/* Sum of exp(x - shift), storing the terms in y unless y is NULL. */
static inline double fs_exp_sum_f32(const float *x, float shift, float *y, ptrdiff_t n);
static inline double fs_exp_sum_f64(const double *x, double shift, double *y, ptrdiff_t n);

#define FS_DEFINE_ROW_OPS(T, SUF)                                              \
                                                                               \
/* a - b as hi + *lo exactly: hi the rounded difference, *lo its error     */ \
/* (TwoSum)                                                                  */ \
static inline T fs_two_diff_##SUF(T a, T b, T *lo)                            \
{                                                                              \
    T hi = a - b;                                                              \
    T bv = hi - a;                                                             \
    *lo = (a - (hi - bv)) + (-b - bv);                                         \
    return hi;                                                                 \
}                                                                              \
                                                                               \
/* exp(a - b) for a <= b, the difference taken exactly */                     \
static inline T fs_exp_diff_##SUF(T a, T b)                                    \
{                                                                              \
    T lo, hi = fs_two_diff_##SUF(a, b, &lo);                                   \
    return fs_expneg2w_##SUF(hi, lo);                                          \
}                                                                              \
                                                                               \
/* exp(a - b) * 2^TAIL_SCALE for a <= b */                                    \
static inline T fs_exp_diff_scaled_##SUF(T a, T b)                             \
{                                                                              \
    T lo, hi = fs_two_diff_##SUF(a, b, &lo);                                   \
    return fs_expneg2w_scaled_##SUF(hi, lo);                                   \
}                                                                              \
                                                                               \
/* The sum of exp(x[j] - m) over x[j] != m, x[j] stepping by stride, from  */ \
/* scaled exps that do not round to the subnormal grid: for tail sums small */ \
/* enough (below n * FS_..._TAIL_RECOMPUTE) for that rounding to show.      */ \
static inline double fs_row_tail_scaled_##SUF(const T *x, T m, ptrdiff_t stride, \
                                             ptrdiff_t n)                      \
{                                                                              \
    double tail;                                                               \
    FS_SUM_##SUF(tail, n, x[j * stride] == m ? 0.0                             \
                 : (double)fs_exp_diff_scaled_##SUF(x[j * stride], m));        \
    return ldexp(tail, -FS_##SUF##_TAIL_SCALE);                                \
}                                                                              \
                                                                               \
/* max of x[0:n] (-inf for n == 0).  It may or may not see a NaN: callers   */ \
/* rely on the sum of exp(x - max), which is NaN for any NaN in the row.     */ \
static inline T fs_row_max_##SUF(const T *x, ptrdiff_t n)                      \
{                                                                              \
    T m = -INFINITY;                                                           \
    _Pragma("omp simd reduction(max:m)")                                       \
    for (ptrdiff_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;                 \
    return m;                                                                  \
}                                                                              \
                                                                               \
/* sum of exp(x[j] - shift); also stores each term in y unless y is NULL    */ \
/* (y may be x).                                                             */ \
static inline double fs_row_exp_sum_##SUF(const T *x, T shift, T *y,          \
                                           ptrdiff_t n)                        \
{                                                                              \
    return fs_exp_sum_##SUF(x, shift, y, n);                                   \
}                                                                              \
                                                                               \
/* log(S) for S = sum of exp(x[j] - m), m = max x, given S: accurate also   */ \
/* when S is close to 1 (log-probabilities close to 0), where log(S) would    */ \
/* carry an absolute error of about eps.  Only then (S < 2) the terms are     */ \
/* summed again without those equal to m, which are exactly 1 and are        */ \
/* counted instead, so that S - 1 keeps its relative accuracy and            */ \
/* log S = log1p(S - 1).  The terms are taken from e[] unless it is NULL.    */ \
/* A NaN S (NaN or +inf in the row, or all -inf) gives NaN.                  */ \
static inline double fs_row_log_sum_##SUF(const T *x, T m, const T *e,        \
                                          double S, ptrdiff_t n)               \
{                                                                              \
    double tail, ones;                                                         \
    if (!(S < 2.0)) return log(S);                                             \
    if (e)                                                                     \
        FS_SUM_##SUF(tail, n, x[j] == m ? 0.0 : (double)e[j]);                 \
    else                                                                       \
        FS_SUM_##SUF(tail, n, x[j] == m ? 0.0 : (double)fs_exp_diff_##SUF(x[j], m)); \
    if (tail < (double)n * FS_##SUF##_TAIL_RECOMPUTE)                          \
        tail = fs_row_tail_scaled_##SUF(x, m, 1, n);                           \
    FS_SUM_##SUF(ones, n, x[j] == m ? 1.0 : 0.0);                              \
    return log1p(tail + (ones - 1.0));                                         \
}                                                                              \
                                                                               \
static inline double fs_row_sum_##SUF(const T *x, ptrdiff_t n)                 \
{                                                                              \
    double total;                                                              \
    FS_SUM_##SUF(total, n, (double)x[j]);                                    \
    return total;                                                              \
}                                                                              \
                                                                               \
static inline double fs_row_dot_##SUF(const T *a, const T *b, ptrdiff_t n)     \
{                                                                              \
    double total;                                                              \
    FS_SUM_##SUF(total, n, (double)a[j] * (double)b[j]);                     \
    return total;                                                              \
}                                                                              \
                                                                               \
/* sum of w[j] * (x[j] - shift) over the nonzero weights: a zero weight on   */ \
/* a -inf entry contributes 0 (the limit of 0 log 0), not 0 * -inf = NaN     */ \
static inline double fs_row_weighted_shifted_sum_##SUF(const T *w, const T *x, \
                                                       T shift, ptrdiff_t n)   \
{                                                                              \
    double total;                                                              \
    FS_SUM_##SUF(total, n, w[j] != 0 ? (double)w[j] * ((double)x[j] - (double)shift) : 0.0); \
    return total;                                                              \
}                                                                              \
                                                                               \
/* y[j] = (x[j] - shift) - offset: log_softmax with offset = log(sum) */       \
static inline void fs_row_shift_##SUF(const T *x, T shift, double offset,      \
                                      T *y, ptrdiff_t n)                       \
{                                                                              \
    for (ptrdiff_t j = 0; j < n; j++)                                          \
        y[j] = (T)(((double)x[j] - (double)shift) - offset);                   \
}                                                                              \
                                                                               \
/* y[j] = s[j] * (v[j] - dot): the softmax Jacobian-vector product */         \
static inline void fs_row_jvp_##SUF(const T *s, const T *v, double dot, T *y,  \
                                    ptrdiff_t n)                               \
{                                                                              \
    for (ptrdiff_t j = 0; j < n; j++)                                          \
        y[j] = (T)((double)s[j] * ((double)v[j] - dot));                       \
}                                                                              \
                                                                               \
/* y[j] = g[j] - exp(logp[j]) * gsum: the log_softmax vector-Jacobian product */ \
static inline void fs_row_log_vjp_##SUF(const T *logp, const T *g, double gsum, \
                                        T *y, ptrdiff_t n)                     \
{                                                                              \
    for (ptrdiff_t j = 0; j < n; j++)                                          \
        y[j] = (T)((double)g[j] - (double)fs_exp2w_##SUF(logp[j], 0) * gsum);  \
}                                                                              \
                                                                               \
/* Cross-entropy gradient: g[j] = g[j] * factor - t[j] * tscale, where g    */ \
/* holds exp(x - max) on entry                                             */ \
static inline void fs_row_xent_grad_##SUF(T *g, const T *t, double factor,    \
                                          double tscale, ptrdiff_t n)          \
{                                                                              \
    for (ptrdiff_t j = 0; j < n; j++)                                          \
        g[j] = (T)((double)g[j] * factor - (double)t[j] * tscale);             \
}                                                                              \
                                                                               \
/* Row i of the Jacobian diag(s) - s s^T: y[j] = s[i] (delta_ij - s[j]),      */ \
/* each element written once */                                               \
static inline void fs_jacobian_row_##SUF(const T *s, ptrdiff_t i, T *y,       \
                                         ptrdiff_t n)                          \
{                                                                              \
    const T si = s[i];                                                         \
    for (ptrdiff_t j = 0; j < i; j++) y[j] = -si * s[j];                       \
    y[i] = si * ((T)1 - si);                                                   \
    for (ptrdiff_t j = i + 1; j < n; j++) y[j] = -si * s[j];                   \
}

FS_DEFINE_ROW_OPS(float, f32)
FS_DEFINE_ROW_OPS(double, f64)

/* y[j] *= num / den, rounded once: the factor is taken as an unevaluated
 * sum hi + lo (lo = the remainder of the division, exact with an FMA), and
 * fma(y, hi, y * lo) rounds once, the error of y * lo being ~2^-48 (float)
 * or ~2^-106 (double) relative.  A plain y * (num / den) would round twice,
 * which costs a double softmax up to an ulp.  For float data the factor is
 * a pair of floats, so the loop runs at the float vector width.  Without
 * hardware FMA (the SSE2 build) fma() would be a library call in the loop:
 * the product is then formed in double (float data) or plainly. */
static inline void fs_row_scale_div_f32(float *y, double num, double den, ptrdiff_t n)
{
    double factor = num / den;
#if defined(__FMA__)
    const float hi = (float)factor, lo = (float)(factor - (double)hi);
    _Pragma("omp simd")
    for (ptrdiff_t j = 0; j < n; j++) y[j] = fmaf(y[j], hi, y[j] * lo);
#else
    for (ptrdiff_t j = 0; j < n; j++) y[j] = (float)((double)y[j] * factor);
#endif
}

static inline void fs_row_scale_div_f64(double *y, double num, double den, ptrdiff_t n)
{
    const double hi = num / den;
#if defined(__FMA__)
    const double lo = fma(-hi, den, num) / den;
    _Pragma("omp simd")
    for (ptrdiff_t j = 0; j < n; j++) y[j] = fma(y[j], hi, y[j] * lo);
#else
    for (ptrdiff_t j = 0; j < n; j++) y[j] *= hi;
#endif
}

/* The same loop for both types; the lanes overlap with the exp's arithmetic. */
#define FS_DEFINE_EXP_SUM(T, SUF)                                              \
static inline double fs_exp_sum_##SUF(const T *x, T shift, T *y, ptrdiff_t n) \
{                                                                              \
    double total;                                                              \
    if (y)                                                                     \
        FS_SUM_##SUF(total, n, y[j] = fs_exp_diff_##SUF(x[j], shift));         \
    else                                                                       \
        FS_SUM_##SUF(total, n, fs_exp_diff_##SUF(x[j], shift));                \
    return total;                                                              \
}

FS_DEFINE_EXP_SUM(float, f32)
FS_DEFINE_EXP_SUM(double, f64)

/* ------------------------------------------------------------------ */
/* Softmax along a non-last axis, without a transposed copy.            */
/* ------------------------------------------------------------------ */
/*
 * A C-contiguous array reduced along a middle axis is a stack of (n, inner)
 * blocks, each softmax running down a column.  The kernels take FS_COLS
 * neighbouring columns at a time and vectorise across them: the same
 * passes as for a row (max; exp(x - max) and its sum; scale or shift), each
 * a loop over the n rows of the tile, with one max, sum (and, for
 * log_softmax, the log1p inputs) per column in arrays on the stack.
 * x and y step by sx and sy elements from one row to the next; y may be x.
 * The sums: plain double for float data, Kahan per column for double data
 * (as FS_LANE_SUM and FS_LANE_KAHAN_SUM do per lane).
 */
#define FS_COLS 128

/* SUM += VALUE, with Kahan compensation in CARRY if KAHAN */
#define FS_COL_ADD(KAHAN, SUM, CARRY, VALUE)                                   \
    do {                                                                       \
        if (KAHAN) {                                                           \
            double y_ = (VALUE) - (CARRY);                                     \
            double t_ = (SUM) + y_;                                            \
            double c_ = (t_ - (SUM)) - y_;                                     \
            (CARRY) = c_ - c_ == 0.0 ? c_ : 0.0;                               \
            (SUM) = t_;                                                        \
        } else {                                                               \
            (SUM) += (VALUE);                                                  \
        }                                                                      \
    } while (0)

#define FS_DEFINE_COLS(T, SUF, KAHAN)                                          \
static inline void fs_softmax_cols_##SUF(const T *x, ptrdiff_t sx, T *y,      \
                                         ptrdiff_t sy, ptrdiff_t n,            \
                                         ptrdiff_t w, int take_log)            \
{                                                                              \
    T m[FS_COLS];                                                              \
    double sum[FS_COLS], carry[FS_COLS], tail[FS_COLS], tcarry[FS_COLS];       \
    double ones[FS_COLS];                                                      \
    for (ptrdiff_t c = 0; c < w; c++) {                                        \
        m[c] = -INFINITY;                                                      \
        sum[c] = carry[c] = tail[c] = tcarry[c] = ones[c] = 0.0;               \
    }                                                                          \
    for (ptrdiff_t i = 0; i < n; i++) {                                        \
        const T *xi = x + i * sx;                                              \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t c = 0; c < w; c++) m[c] = xi[c] > m[c] ? xi[c] : m[c];  \
    }                                                                          \
    for (ptrdiff_t i = 0; i < n; i++) {                                        \
        const T *xi = x + i * sx;                                              \
        T *yi = y + i * sy;                                                    \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t c = 0; c < w; c++) {                                    \
            T e = fs_exp_diff_##SUF(xi[c], m[c]);                              \
            if (take_log) {                                                    \
                FS_COL_ADD(KAHAN, tail[c], tcarry[c], xi[c] == m[c] ? 0.0 : (double)e); \
                ones[c] += xi[c] == m[c] ? 1.0 : 0.0;                          \
            } else {                                                           \
                yi[c] = e;                                                     \
            }                                                                  \
            FS_COL_ADD(KAHAN, sum[c], carry[c], (double)e);                    \
        }                                                                      \
    }                                                                          \
    /* sum: the factor (softmax) or the offset log(S) (log_softmax, with the */ \
    /* log1p path of fs_row_log_sum when S < 2) */                            \
    for (ptrdiff_t c = 0; c < w; c++) {                                        \
        double S = sum[c] - carry[c], t = tail[c] - tcarry[c];                 \
        if (!take_log) {                                                       \
            sum[c] = 1.0 / S;                                                  \
        } else if (S < 2.0) {                                                  \
            if (t < (double)n * FS_##SUF##_TAIL_RECOMPUTE)                     \
                t = fs_row_tail_scaled_##SUF(x + c, m[c], sx, n);              \
            sum[c] = log1p(t + (ones[c] - 1.0));                               \
        } else {                                                               \
            sum[c] = log(S);                                                   \
        }                                                                      \
    }                                                                          \
    for (ptrdiff_t i = 0; i < n; i++) {                                        \
        const T *xi = x + i * sx;                                              \
        T *yi = y + i * sy;                                                    \
        if (take_log) {                                                        \
            _Pragma("omp simd")                                                \
            for (ptrdiff_t c = 0; c < w; c++)                                  \
                yi[c] = (T)(((double)xi[c] - (double)m[c]) - sum[c]);          \
        } else {                                                               \
            _Pragma("omp simd")                                                \
            for (ptrdiff_t c = 0; c < w; c++)                                  \
                yi[c] = (T)((double)yi[c] * sum[c]);                           \
        }                                                                      \
    }                                                                          \
}

FS_DEFINE_COLS(float, f32, 0)
FS_DEFINE_COLS(double, f64, 1)

#endif /* FASTSOFTMAX_VMATH_H */
