/*
 * Vectorisable elementary functions and row reductions for the fastsoftmax
 * kernels (_kernels.pxi).
 *
 * Why C and not Cython: the compiler may only vectorise a reduction
 * (sum, max) if it is allowed to reorder it, which needs -ffast-math, and
 * -ffast-math would break the -inf masking and NaN rules the library
 * promises.  An "omp simd reduction" pragma grants exactly that reordering
 * for one loop (with an error bound we control, see FS_KAHAN_SUM), and
 * Cython cannot emit pragmas.  libm's exp is a scalar call that blocks
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
 * from an out-of-range k is replaced by 0 at the end; NaN stays NaN. */
static inline float fs_expneg2w_f32(float hi, float lo)
{
    float r, kf = fs_exp_reduce_f32(hi, lo, &r);
    float p = fs_exp_poly_f32(r);
    uint32_t shift = fs_bits_of_f32(kf + (126.0f + FS_F32_MAGIC)) << 23;
    float y = fs_f32_from_bits(fs_bits_of_f32(p) + shift) * 0x1p-126f;
    return hi < FS_F32_LOWEST ? 0.0f : y;
}

static inline double fs_expneg2w_f64(double hi, double lo)
{
    double r, kf = fs_exp_reduce_f64(hi, lo, &r);
    double p = fs_exp_poly_f64(r);
    uint64_t shift = fs_bits_of_f64(kf + (1022.0 + FS_F64_MAGIC)) << 52;
    double y = fs_f64_from_bits(fs_bits_of_f64(p) + shift) * 0x1p-1022;
    return hi < FS_F64_LOWEST ? 0.0 : y;
}

static inline float fs_exp_f32(float x) { return fs_exp2w_f32(x, 0.0f); }
static inline double fs_exp_f64(double x) { return fs_exp2w_f64(x, 0.0); }

/* ------------------------------------------------------------------ */
/* Row primitives, one definition for both float types.                */
/* ------------------------------------------------------------------ */
/*
 * "omp simd reduction" lets the compiler keep one partial result per
 * vector lane (-fopenmp-simd enables the pragma without the OpenMP runtime;
 * a compiler without it just ignores the pragma).  All sums are accumulated
 * in double, in one of two ways:
 *
 * FS_BLOCKED_SUM (float data): plain lanes over blocks of FS_BLOCK
 *   elements, the block sums added with Kahan compensation.  Each term is a
 *   float, so the lanes' double rounding is ~1e-16 relative, far below a
 *   float ulp, and the blocks keep even that from growing with n.
 * FS_KAHAN_SUM (double data): Kahan compensation in every lane.  A double
 *   lane summing, say, one large and many small terms would otherwise round
 *   the same way at every step and lose several ulp; compensated lanes keep
 *   the error at about 2 eps whatever n is.
 *
 * In both, TERM is an expression in j (it may also store something).
 */
#define FS_BLOCK 128
#define FS_EXP_BLOCK 512   /* exps computed per block before they are summed */

/* Kahan-compensated running sum.  An infinite term would make the carry
 * inf - inf = NaN and poison the sum; the carry is then dropped instead. */
typedef struct { double sum, carry; } fs_ksum;

static inline void fs_ksum_add(fs_ksum *acc, double value)
{
    double y = value - acc->carry;
    double t = acc->sum + y;
    double carry = (t - acc->sum) - y;
    acc->carry = carry == carry ? carry : 0.0;
    acc->sum = t;
}

#define FS_BLOCKED_SUM(RESULT, N, TERM)                                        \
    do {                                                                       \
        fs_ksum total_ = {0.0, 0.0};                                           \
        for (ptrdiff_t start_ = 0; start_ < (N); start_ += FS_BLOCK) {         \
            ptrdiff_t stop_ = (N) - start_ < FS_BLOCK ? (N) : start_ + FS_BLOCK; \
            double block_ = 0.0;                                               \
            _Pragma("omp simd reduction(+:block_)")                            \
            for (ptrdiff_t j = start_; j < stop_; j++) block_ += (TERM);       \
            fs_ksum_add(&total_, block_);                                      \
        }                                                                      \
        (RESULT) = total_.sum;                                                 \
    } while (0)

#define FS_KAHAN_SUM(RESULT, N, TERM)                                          \
    do {                                                                       \
        double sum_ = 0.0, carry_ = 0.0;                                       \
        _Pragma("omp simd reduction(+:sum_, carry_)")                          \
        for (ptrdiff_t j = 0; j < (N); j++) {                                  \
            double y_ = (double)(TERM) - carry_;                               \
            double t_ = sum_ + y_;                                             \
            double c_ = (t_ - sum_) - y_;                                      \
            carry_ = c_ == c_ ? c_ : 0.0; /* inf terms: no NaN */              \
            sum_ = t_;                                                         \
        }                                                                      \
        (RESULT) = sum_ - carry_;                                              \
    } while (0)

#define FS_SUM_f32 FS_BLOCKED_SUM
#define FS_SUM_f64 FS_KAHAN_SUM

/* Sum of exp(x - shift), storing the terms in y unless y is NULL.  float:
 * per block, the exps are computed by a plain map loop (into y or a buffer)
 * and then summed: one loop doing both would run the float exp at the
 * double vector width, half the lanes.  double: one loop, where the Kahan
 * lanes overlap with the exp's arithmetic. */
static inline double fs_exp_sum_split_f32(const float *x, float shift, float *y,
                                          ptrdiff_t n);
static inline double fs_exp_sum_fused_f64(const double *x, double shift, double *y,
                                          ptrdiff_t n);
#define FS_EXP_SUM_f32 fs_exp_sum_split_f32
#define FS_EXP_SUM_f64 fs_exp_sum_fused_f64

#define FS_DEFINE_ROW_OPS(T, SUF)                                              \
                                                                               \
/* exp(a - b) for a <= b, the difference taken exactly (TwoSum) */            \
static inline T fs_exp_diff_##SUF(T a, T b)                                    \
{                                                                              \
    T hi = a - b;                                                              \
    T bv = hi - a;                                                             \
    T lo = (a - (hi - bv)) + (-b - bv);                                        \
    return fs_expneg2w_##SUF(hi, lo);                                          \
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
    return FS_EXP_SUM_##SUF(x, shift, y, n);                                   \
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
/* y[j] *= factor, the product formed in double and rounded once */           \
static inline void fs_row_scale_##SUF(T *y, double factor, ptrdiff_t n)        \
{                                                                              \
    for (ptrdiff_t j = 0; j < n; j++) y[j] = (T)((double)y[j] * factor);       \
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

static inline double fs_exp_sum_split_f32(const float *x, float shift, float *y,
                                          ptrdiff_t n)
{
    float buffer[FS_EXP_BLOCK];
    fs_ksum total = {0.0, 0.0};
    for (ptrdiff_t start = 0; start < n; start += FS_EXP_BLOCK) {
        ptrdiff_t len = n - start < FS_EXP_BLOCK ? n - start : FS_EXP_BLOCK;
        const float *xs = x + start;
        float *e = y ? y + start : buffer;
        double block;
        _Pragma("omp simd")
        for (ptrdiff_t j = 0; j < len; j++) e[j] = fs_exp_diff_f32(xs[j], shift);
        FS_BLOCKED_SUM(block, len, (double)e[j]);
        fs_ksum_add(&total, block);
    }
    return total.sum;
}

static inline double fs_exp_sum_fused_f64(const double *x, double shift, double *y,
                                          ptrdiff_t n)
{
    double total;
    if (y)
        FS_KAHAN_SUM(total, n, y[j] = fs_exp_diff_f64(x[j], shift));
    else
        FS_KAHAN_SUM(total, n, fs_exp_diff_f64(x[j], shift));
    return total;
}

#endif /* FASTSOFTMAX_VMATH_H */
