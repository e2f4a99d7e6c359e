// Vectorisable elementary functions and row reductions for the fastsoftmax
// kernels (_kernels.pxi), written once for float and double as templates;
// the constants that differ between the two types live in FloatTraits.
//
// Why C++ and not Cython: the compiler may only vectorise a reduction
// (sum, max) if it is allowed to reorder it, which needs -ffast-math, and
// -ffast-math would break the -inf masking and NaN rules the library
// promises.  Here the reordering is written out instead (sums over an
// explicit array of lanes, see lane_sum, with an error bound we control)
// or granted for one loop by an "omp simd" pragma, which Cython cannot
// emit.  libm's exp is a scalar call that blocks vectorisation, so exp is
// a branch-free polynomial here.
//
// The same source is compiled once per instruction set (SSE2 baseline,
// AVX2+FMA, AVX-512); the Python layer picks one at import time.  Cython
// calls the templates directly from its fused-type code.
#ifndef FASTSOFTMAX_VMATH_HPP
#define FASTSOFTMAX_VMATH_HPP

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

// "omp simd" for the next loop.  Not for MSVC: its OpenMP 2.0 has no simd
// construct, and its experimental one turns on /fp:fast inside the loop,
// which would undo the compensated sums.
#if defined(_MSC_VER) && !defined(__clang__)
#define FS_OMP_SIMD
#define FS_OMP_SIMD_MAX(var)
#define FS_OMP_SIMD_SUM(var)
#else
#define FS_PRAGMA(text) _Pragma(#text)
#define FS_OMP_SIMD FS_PRAGMA(omp simd)
#define FS_OMP_SIMD_MAX(var) FS_PRAGMA(omp simd reduction(max : var))
#define FS_OMP_SIMD_SUM(var) FS_PRAGMA(omp simd reduction(+ : var))
#endif

// Whether the build's instruction set has a fused multiply-add, as GCC and
// clang say it (x86 with FMA3: the AVX2 and AVX-512 builds; 64-bit ARM;
// __FP_FAST_FMA on other targets with a fast one): std::fma is then one
// instruction, and the kernels use it to round products once.  (MSVC
// defines none of these: its builds take the paths without FMA.)
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA) || defined(__FP_FAST_FMA)
#define FS_HAS_FMA 1
#endif

// Fetch the cache line at p, for writing if rw is 1 (a hint: never faults).
// FS_KEEP_LOOP(): an empty statement the compiler may not delete, so that a
// loop of prefetches stays (GCC deletes a loop that only prefetches).
#if defined(__GNUC__) || defined(__clang__)
#define FS_PREFETCH(p, rw) __builtin_prefetch((p), (rw))
#define FS_KEEP_LOOP() __asm__ volatile("")
#else
#define FS_PREFETCH(p, rw) ((void)(p))
#define FS_KEEP_LOOP() ((void)0)
#endif

namespace fastsoftmax {
// Internal linkage, as C's "static inline": nothing here is exported from
// a kernel module, and calls the compiler leaves out of line are direct,
// not through the module's symbol table (PLT).
namespace {

using std::ptrdiff_t;

// ------------------------------------------------------------------
// Build facts the Python layer reports (show_config, tests).
// ------------------------------------------------------------------

inline int openmp_enabled()
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

// OpenMP's current thread limit for the calling thread (1 without OpenMP).
// threadpoolctl changes this value, which is why we read it per call.
inline int omp_max_threads()
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

inline void omp_set_num_threads(int n)
{
#ifdef _OPENMP
    ::omp_set_num_threads(n);
#else
    (void)n;
#endif
}

// Number of threads of the innermost parallel region (1 outside one).
inline int omp_team_size()
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// The compiler that compiled this module, as its predefined macros tell:
// what the build config says can be stale if a build reused objects.
inline const char *compiler()
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
    return "msvc";
#else
    return "unknown";
#endif
}

inline int simd_width_bytes()
{
#if defined(__AVX512F__)
    return 64;
#elif defined(__AVX2__) || defined(__AVX__)
    return 32;
#else
    return 16;
#endif
}

inline int has_fma()
{
#if defined(FS_HAS_FMA)
    return 1;
#else
    return 0;
#endif
}

// Run-time CPU feature test by name: 1 or 0, or -1 for a name this probe
// does not know (GCC's and Clang's builtin takes only a literal, hence the
// list).  Off x86, or without the builtin, every known feature reads 0.
inline int cpu_supports(const char *feature)
{
    static const char *const known[] = {"avx2", "fma", "avx512f", "avx512dq",
                                        "avx512bw", "avx512vl"};
    int index = -1;
    for (int k = 0; k < (int)(sizeof known / sizeof known[0]); k++)
        if (std::strcmp(feature, known[k]) == 0) index = k;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    switch (index) {
    case 0: return __builtin_cpu_supports("avx2") ? 1 : 0;
    case 1: return __builtin_cpu_supports("fma") ? 1 : 0;
    case 2: return __builtin_cpu_supports("avx512f") ? 1 : 0;
    case 3: return __builtin_cpu_supports("avx512dq") ? 1 : 0;
    case 4: return __builtin_cpu_supports("avx512bw") ? 1 : 0;
    case 5: return __builtin_cpu_supports("avx512vl") ? 1 : 0;
    default: return -1;
    }
#else
    return index < 0 ? -1 : 0;
#endif
}

// ------------------------------------------------------------------
// The constants of each float type
// ------------------------------------------------------------------

template <class T> struct FloatTraits;

struct PlainSum;
struct KahanSum;
struct UnitSum;
struct NeumaierSum;

template <> struct FloatTraits<float> {
    using Bits = std::uint32_t;
    static constexpr int mantissa_bits = 23;
    static constexpr float bias = 127.0f;           // exponent bias
    static constexpr float magic = 12582912.0f;     // 1.5 * 2^23
    static constexpr float lowest = -104.0f;        // exp(-104) < 2^-150: rounds to 0
    static constexpr float highest = 89.0f;         // exp(89) > FLT_MAX: overflows
    static constexpr float log2e = 1.44269504088896341f;
    static constexpr float ln2_hi = 0.693359375f;       // 9 significant bits
    static constexpr float ln2_lo = -2.12194440e-4f;    // ln2 - ln2_hi
    // Taylor coefficients of exp, highest degree (7) first
    static constexpr int degree = 7;
    static constexpr float poly[degree + 1] = {
        1.0f / 5040.0f, 1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f,
        1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
    // the scaled exps of the subnormal tail (see expneg2w_scaled)
    static constexpr int tail_scale = 64;
    static constexpr float tail_lowest = -130.0f;
    // Tail sums below n times this are recomputed from scaled exps: each
    // term rounded to the subnormal grid is off by up to 2^-150 (2^-1075
    // for double), which then stays below 2^-50 of the tail's own ulp.
    static constexpr double tail_recompute = 0x1p-76;
    // how the row sums (see lane_sum), the row sums of exp(x - max) and
    // the column sums add float terms
    using Sum = PlainSum;
    using ExpSum = PlainSum;
    using ColumnSum = PlainSum;
};

template <> struct FloatTraits<double> {
    using Bits = std::uint64_t;
    static constexpr int mantissa_bits = 52;
    static constexpr double bias = 1023.0;
    static constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
    static constexpr double lowest = -746.0;        // exp(-746) < 2^-1075: rounds to 0
    static constexpr double highest = 710.0;        // exp(710) > DBL_MAX: overflows
    static constexpr double log2e = 1.4426950408889634074;
    static constexpr double ln2_hi = 6.93145751953125e-1;           // 15 significant bits
    static constexpr double ln2_lo = 1.42860682030941723212e-6;     // ln2 - ln2_hi
    static constexpr int degree = 13;
    static constexpr double poly[degree + 1] = {
        1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
        1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0,
        1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0};
    static constexpr int tail_scale = 128;
    static constexpr double tail_lowest = -790.0;
    static constexpr double tail_recompute = 0x1p-970;
    using Sum = KahanSum;
    using ExpSum = UnitSum;
    using ColumnSum = NeumaierSum;
};

// ------------------------------------------------------------------
// exp
// ------------------------------------------------------------------
//
// exp(hi + lo), where hi + lo is an argument given as an unevaluated sum
// (lo tiny).  Softmax needs exp(x - m): the rounding of x - m alone would
// cost |x - m| * eps of relative error (dozens of ulp for probabilities
// around e^-20), so the kernels pass the exact difference as hi + lo.
//
// Method (Cody & Waite): k = round(x / ln2), r = x - k ln2 with ln2 split in
// a short-mantissa high part (k * ln2_hi is exact) and a low part, so that
// |r| <= ln2 / 2; exp(r) by its Taylor polynomial (degree 7 for float,
// 13 for double: truncation error below 0.1 ulp on that interval); then the
// result is scaled by 2^k so that subnormal results are still rounded only
// once.  Rounding to an integer uses the "add 1.5 * 2^(mantissa bits)"
// trick, which also leaves the integer in the low mantissa bits: pure float
// arithmetic and bit shifts, no float-to-int conversion (undefined for NaN),
// no 64-bit arithmetic shift (SSE2 has none), no branches: the compiler
// vectorises it for every instruction set.
//
// Special values: -inf and anything whose exp underflows give +0 exactly,
// NaN gives NaN, large arguments overflow to +inf.

template <class T> inline T from_bits(typename FloatTraits<T>::Bits u)
{
    T f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

template <class T> inline typename FloatTraits<T>::Bits bits_of(T f)
{
    typename FloatTraits<T>::Bits u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// The biased exponent field of 2^e, for an integer e + bias stored in the
// low mantissa bits of (e + bias + magic).
template <class T> inline typename FloatTraits<T>::Bits exponent_field(T biased_plus_magic)
{
    return bits_of(biased_plus_magic) << FloatTraits<T>::mantissa_bits;
}

// a * b + c, rounded once where the instruction set has FMA, else twice.
// GCC contracts a * b + c into an FMA itself from -O2 on (GNU mode, see
// setup.py: -O3), clang at any level; setup.py's debug build is -O0, where
// GCC does not, and there the fma call says it.  (Always calling std::fma
// would be the same bits, but GCC then leaves the loops around the exp
// unvectorised: 4-5x slower.)  The AVX-512 loops below use FMA
// explicitly, and a row must get the same bits whichever loop computes it.
template <class T> inline T mul_add(T a, T b, T c)
{
#if defined(FS_HAS_FMA) && !defined(__OPTIMIZE__)
    return std::fma(a, b, c);
#else
    return a * b + c;
#endif
}

// Cody-Waite: k = round(x / ln2) (as a float) and r = hi + lo - k ln2.
template <class T> inline T exp_reduce(T xc, T lo, T *r)
{
    using F = FloatTraits<T>;
    T kf = mul_add(xc, F::log2e, F::magic) - F::magic;
    *r = mul_add(-kf, F::ln2_hi, xc) + mul_add(-kf, F::ln2_lo, lo);
    return kf;
}

// exp(r) for |r| <= ln2 / 2: Taylor polynomial, Horner form.
template <class T> inline T exp_poly(T r)
{
    using F = FloatTraits<T>;
    T p = F::poly[0];
    for (int k = 1; k <= F::degree; k++) p = mul_add(p, r, F::poly[k]);
    return p;
}

// exp(hi + lo) for any hi.  2^k = 2^k1 * 2^k2 with each factor normal;
// the biased exponent ki + bias is read off the mantissa bits of
// (ki + bias + magic).
template <class T> inline T exp2w(T hi, T lo)
{
    using F = FloatTraits<T>;
    T xc = hi < F::lowest ? F::lowest : hi;    // NaN passes through
    xc = xc > F::highest ? F::highest : xc;
    T r, kf = exp_reduce(xc, lo, &r);
    T p = exp_poly(r);
    T k1 = (kf * T(0.5) + F::magic) - F::magic, k2 = kf - k1;
    T scale1 = from_bits<T>(exponent_field(k1 + (F::bias + F::magic)));
    T scale2 = from_bits<T>(exponent_field(k2 + (F::bias + F::magic)));
    T y = (p * scale1) * scale2;
    return hi < F::lowest ? T(0) : y;
}

// exp(hi + lo) for hi <= 0, the softmax case exp(x - max): cheaper scaling.
// p * 2^k = (p * 2^(k+bias-1)) * 2^(1-bias), the smallest normal number:
// for k in [-150, 1] (float) the first product is a normal number, made by
// adding k + bias - 1 to p's exponent bits (exact), and the second rounds
// once, into the subnormal range if need be.  No clamp: below the lowest
// argument (-inf included) the garbage computed from an out-of-range k is
// replaced by 0 at the end, and a NaN argument is passed through (adding
// k's bits to a NaN with a payload, such as R's NA, could make a number).
template <class T> inline T expneg2w(T hi, T lo)
{
    using F = FloatTraits<T>;
    T r, kf = exp_reduce(hi, lo, &r);
    T p = exp_poly(r);
    auto shift = exponent_field(kf + ((F::bias - T(1)) + F::magic));
    T y = from_bits<T>(bits_of(p) + shift) * std::numeric_limits<T>::min();
    y = hi == hi ? y : hi;
    return hi < F::lowest ? T(0) : y;
}

// exp(hi + lo) * 2^tail_scale for hi <= 0, tail_scale = 64 (float) or 128
// (double): results that exp would round to the subnormal grid stay normal
// here, with full relative accuracy.  For the tail sum of log_softmax, whose
// terms would otherwise each lose up to half a subnormal step.  Adding
// kf + tail_scale to p's exponent field keeps it within 1..254 (1..2046)
// down to hi = tail_lowest, -130 (-790); below, the result is 0: the terms
// left out are under 2^-187 (2^-1139), too small to move a sum on the
// subnormal grid of 2^-149 (2^-1074) even by a fraction of a step.
template <class T> inline T expneg2w_scaled(T hi, T lo)
{
    using F = FloatTraits<T>;
    T r, kf = exp_reduce(hi, lo, &r);
    T p = exp_poly(r);
    auto shift = exponent_field(kf + (T(F::tail_scale) + F::magic));
    T y = from_bits<T>(bits_of(p) + shift);
    y = hi == hi ? y : hi;   // NaN stays NaN, as in expneg2w
    return hi < F::tail_lowest ? T(0) : y;
}

template <class T> inline T exp(T x) { return exp2w(x, T(0)); }

// ------------------------------------------------------------------
// Lane sums
// ------------------------------------------------------------------
//
// Sums keep `lanes` partial sums in double, one per vector lane, written
// as a fixed-length "omp simd" loop over a lane array: the compiler keeps
// the array in registers (-fopenmp-simd enables the pragma without the
// OpenMP runtime; a compiler without it just ignores the pragma), and the
// lanes are added pairwise at the end.  ("omp simd reduction" would do the
// same, but GCC then adds the lanes one after another: 16 dependent
// additions, ~20 ns on every row, which dominated short rows.)
//
// PlainSum (float data): plain double lanes.  Each term is a float, so
//   a lane of m terms is off by at most m * 2^-53 relative to the sum of
//   the terms' magnitudes: for n = 10^8 (m = n / 16), 7e-10, below 0.02
//   float ulp.  Compensation would buy nothing a float result can show.
// KahanSum (double data): Kahan compensation in every lane.  A double lane
//   summing, say, one large and many small terms would round the same way
//   at every step and lose several ulp; compensated lanes keep the error at
//   about 2 eps whatever n is.  An infinite term, or a sum that overflows,
//   would make the carry infinite or NaN, and the result inf - inf = NaN: a
//   carry that is not finite is reset to 0 instead, so that an infinite sum
//   stays infinite.
// UnitSum (double data, the row sums of exp(x - max)): lanes that start at
//   1, each addition's error exact by Fast2Sum and gathered; see below.
// NeumaierSum (double data, the column sums): each addition's rounding
//   error taken exactly by TwoSum and gathered (inf and NaN errors dropped,
//   as above).  Kahan's compensation is exact only while the sum outweighs
//   each new term; a lane's later terms rarely exceed its sum, but a
//   column of a short row sums a few terms in any order: there Kahan left
//   the sum up to an ulp off and softmax 0.3 ulp worse.  (In the lanes the
//   two more additions per term would cost long rows 8 %.)
// The column kernel (softmax_cols_tile) adds float terms plainly too.

constexpr int lanes = 16;

// a + b = s + *err exactly (TwoSum); the errors are gathered in *err
inline double two_sum(double a, double b, double *err)
{
    double s = a + b, bv = s - a;
    double e = (a - (s - bv)) + (b - bv);
    *err += e - e == 0.0 ? e : 0.0;   // inf operands or sum: no NaN
    return s;
}

struct PlainSum {
    static constexpr double start = 0.0;   // (each lane's sum before the first term)
    static void add(double &sum, double & /*carry*/, double value) { sum += value; }
    static double value(double sum, double /*carry*/) { return sum; }

    // (lo: see KahanSum::total; plain lanes keep no error)
    static double total(const double *lane, const double * /*carry*/, double *lo)
    {
        double h8[8], h4[4];
        for (int l = 0; l < 8; l++) h8[l] = lane[l] + lane[l + 8];
        for (int l = 0; l < 4; l++) h4[l] = h8[l] + h8[l + 4];
        if (lo) *lo = 0.0;
        return (h4[0] + h4[2]) + (h4[1] + h4[3]);
    }
};

struct KahanSum {
    static constexpr double start = 0.0;
    static void add(double &sum, double &carry, double value)
    {
        double y = value - carry;
        double t = sum + y;
        double c = (t - sum) - y;
        carry = c - c == 0.0 ? c : 0.0;
        sum = t;
    }

    static double value(double sum, double carry) { return sum - carry; }

    // sum of the lanes minus the sum of their carries, each addition of the
    // pairwise tree compensated: the plain tree's four roundings could cost
    // a double softmax ~2 ulp.  If lo is not null, the rounded sum's error
    // goes there (sum + *lo is the compensated sum before rounding), for a
    // caller that adds partial sums (a row split across threads).
    static double total(const double *lane, const double *carry, double *lo)
    {
        double h8[8], h4[4], h2[2], e8[8], e4[4], e2[2], e1 = 0.0;
        for (int l = 0; l < 8; l++) { e8[l] = -(carry[l] + carry[l + 8]); h8[l] = two_sum(lane[l], lane[l + 8], &e8[l]); }
        for (int l = 0; l < 4; l++) { e4[l] = e8[l] + e8[l + 4]; h4[l] = two_sum(h8[l], h8[l + 4], &e4[l]); }
        for (int l = 0; l < 2; l++) { e2[l] = e4[l] + e4[l + 2]; h2[l] = two_sum(h4[l], h4[l + 2], &e2[l]); }
        e1 = e2[0] + e2[1];
        double total = two_sum(h2[0], h2[1], &e1);
        double rounded = total + e1;
        if (lo) *lo = rounded - rounded == 0.0 ? e1 - (rounded - total) : 0.0;
        return rounded;
    }
};

// The row sums of exp(x - max) in double data, terms in [0, 1]: each lane
// starts at 1, so that no term outweighs the sum it is added to, and the
// rounding error of every addition is then exactly (sum - new sum) + term
// (Fast2Sum); the errors are gathered, as NeumaierSum does, and the ones
// taken off (exactly: lanes >= 1) before the lanes are added.  KahanSum
// was up to an ulp of a double softmax off on rows whose S is close to 1:
// subtracting its carry from the term 1 rounds away up to half an ulp of
// 1.  Cheaper than KahanSum, too: no subtraction of the carry from the
// next term, and the errors are checked for inf / NaN once, at the end
// (double softmax on rows of 1024, one thread: 12-14 % less time).  Not for
// sums that must stay accurate relative to terms far below 1, such as
// log_softmax's tail: the errors are added plainly.  A term above 1 (a
// shift below the max) would only make an addition's error inexact.
struct UnitSum {
    static constexpr double start = 1.0;
    static void add(double &sum, double &err, double value)
    {
        double t = sum + value;
        err += (sum - t) + value;
        sum = t;
    }
    static double total(const double *lane, const double *err, double *lo)
    {
        double off[lanes], carry[lanes];
        for (int l = 0; l < lanes; l++) {
            off[l] = lane[l] - 1.0;
            carry[l] = err[l] - err[l] == 0.0 ? -err[l] : 0.0;   // (an inf sum: no NaN)
        }
        return KahanSum::total(off, carry, lo);
    }
};

struct NeumaierSum {
    static void add(double &sum, double &err, double value) { sum = two_sum(sum, value, &err); }
    static double value(double sum, double err) { return sum + err; }
};

// A sum's value (Sum's, from its sum and carry) rounded, and into *lo what
// the rounding left out (0 if not finite): sum - rounded is exact, the two
// being that close.
template <class Sum> inline double split_value(double sum, double carry, double *lo)
{
    double rounded = Sum::value(sum, carry), rest = Sum::value(sum - rounded, carry);
    *lo = rest - rest == 0.0 ? rest : 0.0;
    return rounded;
}

// body(l, j) for every j in [0, n): j = base + l, lane l of a block of
// `lanes`; the last block is partial.  before_block(base) runs before each
// full block (a no-op unless given).
struct NoHook {
    void operator()(ptrdiff_t) const {}
};

template <class Body, class Hook = NoHook>
inline void for_lanes(ptrdiff_t n, Body body, Hook before_block = Hook())
{
    ptrdiff_t base = 0;
    for (; base + lanes <= n; base += lanes) {
        before_block(base);
        FS_OMP_SIMD
        for (ptrdiff_t l = 0; l < lanes; l++) body(l, base + l);
    }
    FS_OMP_SIMD
    for (ptrdiff_t l = 0; l < n - base; l++) body(l, base + l);
}

// The sum of term(j) for j in [0, n), in lanes, as T's data are summed
// (or as Sum says; term may also store something; before_block as in
// for_lanes).  lo: as in KahanSum::total.
template <class T, class Sum = typename FloatTraits<T>::Sum, class Term, class Hook = NoHook>
inline double lane_sum(ptrdiff_t n, Term term, Hook before_block = Hook(), double *lo = nullptr)
{
    double lane[lanes], carry[lanes] = {0.0};
    for (int l = 0; l < lanes; l++) lane[l] = Sum::start;
    for_lanes(n, [&](ptrdiff_t l, ptrdiff_t j) { Sum::add(lane[l], carry[l], term(j)); },
              before_block);
    return Sum::total(lane, carry, lo);
}

// The sum of the parts hi[k] + lo[k] (partial sums from lane_sum, in
// order), compensated: a row split into chunks keeps the accuracy of one
// lane_sum over the whole row.
struct PartsSum {
    double total = 0.0, err = 0.0;
    void add(double part, double part_lo)
    {
        total = two_sum(total, part, &err);
        err += part_lo;
    }
    // the sum, and into lo (unless null) its rounding error, for a caller
    // that adds such sums in turn
    double value(double *lo = nullptr) const
    {
        double rounded = total + err;
        if (lo) *lo = rounded - rounded == 0.0 ? err - (rounded - total) : 0.0;
        return rounded;
    }
};

// (total_lo: as PartsSum::value's lo)
inline double sum_of_parts(const double *hi, const double *lo, ptrdiff_t count,
                           double *total_lo = nullptr)
{
    PartsSum sum;
    for (ptrdiff_t k = 0; k < count; k++) sum.add(hi[k], lo[k]);
    return sum.value(total_lo);
}

// ------------------------------------------------------------------
// Stores that do not hold up later loads (4K aliasing)
// ------------------------------------------------------------------
//
// A load whose address agrees in its low 12 bits with an earlier store
// still in flight waits for that store, although the two addresses differ.
// A pass that reads x[j] and writes y[j], first to last, meets this on
// every vector when y lies a little after x modulo a page: each store to
// y[j] is followed by loads of x[j + k] with the same low bits.  Measured
// on AVX-512 (Zen 4): up to 25-35 % slower with y 32 to about 400 bytes
// after x, and where y lies is NumPy's allocator's choice, not the user's.
// The kernels (_kernels.pxi) test each call once and, for the calls that
// would stall, change where or in which order they store, never the
// arithmetic:
// - the pass that computes exp(x - max) and its sum, which stores the
//   terms for softmax and the loss: they go into a scratch row placed clear
//   of x (stage_clear_of) instead, and the pass fetches y's lines for the
//   pass that will write them; log_softmax, which stores the terms only to
//   bring y into cache, stores none and fetches y's lines;
// - the products, whose last pass loads two inputs as it stores: on rows
//   up to walk_max_bytes that pass walks the row backward, so that the
//   loads that share a store's low bits come before it (walk_backward);
//   on longer rows their first pass copies the input that y would stall
//   into the scratch row (row_dot_copying), and the last pass reads the
//   copy (float32 rows up to 4 KiB only, where it measured faster; see
//   product_rows_impl).
// The last passes of softmax and log_softmax store too, but they load
// rows that are in L1 by then: measured, they do not stall enough to matter.

constexpr std::uintptr_t page = 4096;
constexpr std::uintptr_t alias_window = 512;   // bytes; measured stalls end near 400
// Rows shorter than this are left as they are: their stalls cost little
// (1-6 % measured on rows of 10 and 37), less than the remedies.
constexpr std::uintptr_t stall_min_bytes = 256;

// Whether stores to `store`, stepping forward, can hold up the loads from
// `load` that follow them.
inline bool store_aliases(const void *store, const void *load)
{
    std::uintptr_t d = ((std::uintptr_t)store - (std::uintptr_t)load) % page;
    return d != 0 && d < alias_window;
}

// Whether a row pass storing to y while loading x (rows of row_bytes)
// stalls enough to be worth avoiding.
inline bool store_stalls(const void *y, const void *x, std::size_t row_bytes)
{
    return row_bytes >= stall_min_bytes && store_aliases(y, x);
}

// Fetch the lines of x[0:n] (for writing if `write`), first to last.
template <bool write, class T> inline void fetch_lines(const T *x, ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n; j += 64 / sizeof(T)) {
        FS_PREFETCH(x + j, write);
        FS_KEEP_LOOP();
    }
    if (n > 0) FS_PREFETCH(x + n - 1, write);
}

// Whether a pass that loads a[j] and b[j] and stores y[j] (rows of
// row_bytes) should walk its row backward (for_blocks_backward): where a
// forward walk would stall (y a little after an input) and a backward one
// would not (y a little before neither input).  Walking backward, the
// loads that share a store's low bits (those of the elements after it)
// come before it.  Rows of walk_min_bytes to walk_max_bytes only: shorter rows, less
// than two vectors, stall little and paid more for the walk's call than
// they saved (float32 rows of 10: 7 % slower); on longer rows in memory
// the backward walk, its lines fetched first or not, measured slower than
// the stalls it avoids (rows of 1024 elements: 1.2-1.7x the time of the
// forward walk at its best offset, against 1.1-1.5x for the stalls).
constexpr std::size_t walk_min_bytes = 128, walk_max_bytes = 1024;
inline bool walk_backward(const void *y, const void *a, const void *b, std::size_t row_bytes)
{
    return walk_min_bytes <= row_bytes && row_bytes <= walk_max_bytes &&
           (store_aliases(y, a) || store_aliases(y, b)) && !store_aliases(a, y) &&
           !store_aliases(b, y);
}

// body(j) for every j in [0, n), from the row's end, 64 bytes at a time
// (each in order), a partial block at the row's start last: a pass that
// walks backward (walk_backward).  Its caller first fetches the row's
// lines that are not in cache, first to last (fetch_lines): without, the
// walk's loads and stores miss one line after another, in an order the
// hardware prefetchers do not follow (measured: float64 rows of 64-128 in
// memory up to 2x the time).
template <class T, class Body> inline void for_blocks_backward(ptrdiff_t n, Body body)
{
    constexpr ptrdiff_t block = 64 / sizeof(T);
    ptrdiff_t end = n;
    for (; end >= block; end -= block) {
        FS_OMP_SIMD
        for (ptrdiff_t j = end - block; j < end; j++) body(j);
    }
    for (ptrdiff_t j = 0; j < end; j++) body(j);
}

// The place in a scratch area of (page + what is needed) bytes at `area`
// whose offset in its page is half a page from x's: stores there never
// hold up loads of x, nor the other way round.
inline void *stage_clear_of(void *area, const void *x)
{
    std::uintptr_t a = (std::uintptr_t)area;
    return (void *)(a + ((std::uintptr_t)x + page / 2 - a) % page);
}

// ------------------------------------------------------------------
// Row primitives
// ------------------------------------------------------------------

// a - b as hi + *lo exactly: hi the rounded difference, *lo its error
// (TwoSum)
template <class T> inline T two_diff(T a, T b, T *lo)
{
    T hi = a - b;
    T bv = hi - a;
    *lo = (a - (hi - bv)) + (-b - bv);
    return hi;
}

// exp(a - b) for a <= b, the difference taken exactly
template <class T> inline T exp_diff(T a, T b)
{
    T lo, hi = two_diff(a, b, &lo);
    return expneg2w(hi, lo);
}

// exp(a - b) * 2^tail_scale for a <= b
template <class T> inline T exp_diff_scaled(T a, T b)
{
    T lo, hi = two_diff(a, b, &lo);
    return expneg2w_scaled(hi, lo);
}

// The sum of exp(x[j] - m) over x[j] != m from scaled exps that do not
// round to the subnormal grid: for tail sums small enough (below
// n * tail_recompute) for that rounding to show.  (value(j): the row's
// entry j)
template <class T, class Value> inline double tail_scaled(Value value, T m, ptrdiff_t n)
{
    double tail = lane_sum<T>(n, [&](ptrdiff_t j) {
        return value(j) == m ? 0.0 : (double)exp_diff_scaled(value(j), m);
    });
    return std::ldexp(tail, -FloatTraits<T>::tail_scale);
}

// The float loops in AVX-512 intrinsics below: GCC and clang builds.  (MSVC
// contracts no a * b + c in the portable code, which would then round
// where the intrinsics fuse: its builds keep the portable loops.)
#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
#define FS_AVX512_FLOAT_LOOPS 1
#endif

#if defined(FS_AVX512_FLOAT_LOOPS)
// ------------------------------------------------------------------
// float rows in AVX-512 registers
// ------------------------------------------------------------------
//
// The hot loops of float rows (the max, exp(x - max) and its sum, the
// scaling, log_softmax's shift) written with AVX-512 intrinsics, 16 floats
// a vector (the shift: 8, converted to double).  The same
// arithmetic as the portable templates, with the same results bit for bit
// (tests/test_build.py compares the AVX-512 and AVX2 builds; a NaN's sign
// may differ, as it does between any two compilations: which NaN operand
// an FMA passes on is the compiler's choice), only fewer instructions:
// - vscalefps makes p * 2^k, rounded once (into the subnormals if need
//   be), in one instruction, where expneg2w's integer steps and its NaN
//   and underflow selects take eight; arguments below `lowest` (-inf
//   included) are clamped to it, whose exp rounds to +0 as the select
//   gave, and their low part is dropped (NaN for -inf);
// - the last partial block is one masked vector, not a scalar loop;
// - the exps of two vectors are in flight at a time.
// Zen 4, exp and sum, cycles per element: rows of 1024 floats in L1
// 1.5 -> 1.3, rows of 37 4.7 -> 2.8.  Element j still goes to double lane
// j % 16, in order, and PlainSum::total adds the lanes, as in lane_sum.

static_assert(lanes == 16, "element j goes to lane j % 16: one AVX-512 vector of floats");

// the active lanes of the block of 16 at j of a row of n
inline __mmask16 lanes_left(ptrdiff_t j, ptrdiff_t n)
{
    return n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
}

// exp_diff for 16 floats: exp(x - m) for x <= m, the difference exact.
// (For x - m above 1 the two would differ, expneg2w's exponent-bit sum
// overflowing where vscalefps does not; every caller's m is a maximum.)
inline __m512 exp_diff_avx512(__m512 x, __m512 m, __m512 neg_m)
{
    using F = FloatTraits<float>;
    const __m512 lowest = _mm512_set1_ps(F::lowest), magic = _mm512_set1_ps(F::magic);
    __m512 hi = _mm512_sub_ps(x, m);
    __mmask16 in_range = _mm512_cmp_ps_mask(hi, lowest, _CMP_GE_OQ);  // false for NaN
    __m512 bv = _mm512_sub_ps(hi, x);   // two_diff's low part lo, 0 out of range
    __m512 lo = _mm512_maskz_add_ps(in_range, _mm512_sub_ps(x, _mm512_sub_ps(hi, bv)),
                                    _mm512_sub_ps(neg_m, bv));
    hi = _mm512_max_ps(lowest, hi);     // a NaN hi stays (vmaxps returns its second operand)
    __m512 kf = _mm512_sub_ps(_mm512_fmadd_ps(hi, _mm512_set1_ps(F::log2e), magic), magic);
    __m512 r = _mm512_add_ps(_mm512_fnmadd_ps(kf, _mm512_set1_ps(F::ln2_hi), hi),
                             _mm512_fnmadd_ps(kf, _mm512_set1_ps(F::ln2_lo), lo));
    __m512 p = _mm512_set1_ps(F::poly[0]);
    for (int k = 1; k <= F::degree; k++) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(F::poly[k]));
    return _mm512_scalef_ps(p, kf);
}

// the active lanes of the block of 8 doubles at j of a row of n
inline __mmask8 lanes_left8(ptrdiff_t j, ptrdiff_t n)
{
    return n - j >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - j)) - 1u);
}

// exp_diff for 8 doubles, as the float version above (the short rows'
// double tile)
inline __m512d exp_diff_avx512(__m512d x, __m512d m, __m512d neg_m)
{
    using F = FloatTraits<double>;
    const __m512d lowest = _mm512_set1_pd(F::lowest), magic = _mm512_set1_pd(F::magic);
    __m512d hi = _mm512_sub_pd(x, m);
    __mmask8 in_range = _mm512_cmp_pd_mask(hi, lowest, _CMP_GE_OQ);
    __m512d bv = _mm512_sub_pd(hi, x);
    __m512d lo = _mm512_maskz_add_pd(in_range, _mm512_sub_pd(x, _mm512_sub_pd(hi, bv)),
                                     _mm512_sub_pd(neg_m, bv));
    hi = _mm512_max_pd(lowest, hi);
    __m512d kf = _mm512_sub_pd(_mm512_fmadd_pd(hi, _mm512_set1_pd(F::log2e), magic), magic);
    __m512d r = _mm512_add_pd(_mm512_fnmadd_pd(kf, _mm512_set1_pd(F::ln2_hi), hi),
                              _mm512_fnmadd_pd(kf, _mm512_set1_pd(F::ln2_lo), lo));
    __m512d p = _mm512_set1_pd(F::poly[0]);
    for (int k = 1; k <= F::degree; k++) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(F::poly[k]));
    return _mm512_scalef_pd(p, kf);
}

inline float row_max_avx512(const float *x, ptrdiff_t n)
{
    __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (ptrdiff_t j = 0; j < n; j += 16) {
        __mmask16 k = lanes_left(j, n);
        // vmaxps returns its second operand, m, where x is NaN or both are
        // zeros: as x > m ? x : m does
        m = _mm512_mask_max_ps(m, k, _mm512_maskz_loadu_ps(k, x + j), m);
    }
    return _mm512_reduce_max_ps(m);
}

// row_exp_sum for float rows (e, y and lo as there)
inline double row_exp_sum_avx512(const float *x, float shift, float *e, float *y, ptrdiff_t n,
                                 double *lo)
{
    const __m512 m = _mm512_set1_ps(shift), neg_m = _mm512_set1_ps(-shift);
    __m512d lanes_lo = _mm512_setzero_pd(), lanes_hi = _mm512_setzero_pd();
    auto add = [&](__m512 t) {
        __m256 t_hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1));
        lanes_lo = _mm512_add_pd(lanes_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(t)));
        lanes_hi = _mm512_add_pd(lanes_hi, _mm512_cvtps_pd(t_hi));
    };
    ptrdiff_t j = 0;
    for (; j + 32 <= n; j += 32) {
        if (y) {
            FS_PREFETCH(y + j, 1);
            FS_PREFETCH(y + j + 16, 1);
        }
        __m512 t0 = exp_diff_avx512(_mm512_loadu_ps(x + j), m, neg_m);
        __m512 t1 = exp_diff_avx512(_mm512_loadu_ps(x + j + 16), m, neg_m);
        if (e) {
            _mm512_storeu_ps(e + j, t0);
            _mm512_storeu_ps(e + j + 16, t1);
        }
        add(t0);
        add(t1);
    }
    for (; j < n; j += 16) {
        __mmask16 k = lanes_left(j, n);
        if (y && k == 0xffff) FS_PREFETCH(y + j, 1);
        __m512 t = _mm512_maskz_mov_ps(k, exp_diff_avx512(_mm512_maskz_loadu_ps(k, x + j), m, neg_m));
        if (e) _mm512_mask_storeu_ps(e + j, k, t);
        add(t);
    }
    alignas(64) double lane[lanes], carry[lanes] = {0.0};
    _mm512_store_pd(lane, lanes_lo);
    _mm512_store_pd(lane + 8, lanes_hi);
    return PlainSum::total(lane, carry, lo);
}

// row_scale_div<float>'s loop: y = fma(e, hi, e * lo)
inline void row_scale_avx512(const float *e, float hi, float lo, float *y, ptrdiff_t n)
{
    const __m512 vhi = _mm512_set1_ps(hi), vlo = _mm512_set1_ps(lo);
    for (ptrdiff_t j = 0; j < n; j += 16) {
        __mmask16 k = lanes_left(j, n);
        __m512 v = _mm512_maskz_loadu_ps(k, e + j);
        _mm512_mask_storeu_ps(y + j, k, _mm512_fmadd_ps(v, vhi, _mm512_mul_ps(v, vlo)));
    }
}

#if defined(__AVX512VL__)   // (the 256-bit masked loads and stores)
// row_shift for float rows: y = ((double)x - shift) - offset, 8 floats at a
// time converted as they are loaded (vcvtps2pd from memory) and stored as
// they are converted back, instead of a 16-float vector split into two
// halves and joined again: 0.77 -> 0.63 cycles per element (rows of 1024).
inline void row_shift_avx512(const float *x, float shift, double offset, float *y, ptrdiff_t n)
{
    const __m512d s = _mm512_set1_pd((double)shift), o = _mm512_set1_pd(offset);
    for (ptrdiff_t j = 0; j < n; j += 8) {
        __mmask8 k = lanes_left8(j, n);
        __m512d v = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, x + j));
        _mm256_mask_storeu_ps(y + j, k, _mm512_cvtpd_ps(_mm512_sub_pd(_mm512_sub_pd(v, s), o)));
    }
}
#endif
#endif

// max of x[0:n] (-inf for n == 0).  It may or may not see a NaN: callers
// rely on the sum of exp(x - max), which is NaN for any NaN in the row.
template <class T> inline T row_max(const T *x, ptrdiff_t n)
{
#if defined(FS_AVX512_FLOAT_LOOPS)
    if constexpr (std::is_same<T, float>::value) return row_max_avx512(x, n);
#endif
    T m = -std::numeric_limits<T>::infinity();
    FS_OMP_SIMD_MAX(m)
    for (ptrdiff_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

// sum of exp(x[j] - shift); also stores each term in e unless e is null
// (e may be x).  The lanes overlap with the exp's arithmetic.
//
// y, if not null, is the row that a later pass will write, where the
// caller stores the terms elsewhere (or nowhere) because storing them into
// y would stall (see store_stalls): its cache lines are fetched for
// writing as this pass goes, block of lanes by block.  Stores into y would
// have brought y into cache while the exp kept the core busy; without that the
// later pass, which is quick, would wait for memory (20-40 % on arrays
// beyond the caches, measured).
//
// Not inlined: inlined into the callers' block loops, it made float64 rows
// of 16 to 300 elements 5-25 % slower (GCC 12, AVX2).  Flattened: the lane
// loop is compiled in here, where `shift` is a local whose address goes
// nowhere; called out of line, the loop had to reload `shift` after every
// store to e (a T, as `shift` is, so the two might alias): 5 % on long rows.
//
// lo, if not null, receives the rounded sum's error (see lane_sum).
template <class T>
[[gnu::noinline, gnu::flatten]] double row_exp_sum(const T *x, T shift, T *e, T *y, ptrdiff_t n,
                                                   double *lo = nullptr)
{
#if defined(FS_AVX512_FLOAT_LOOPS)
    if constexpr (std::is_same<T, float>::value) return row_exp_sum_avx512(x, shift, e, y, n, lo);
#endif
    using Sum = typename FloatTraits<T>::ExpSum;
    auto term = [&](ptrdiff_t j) { return exp_diff(x[j], shift); };
    auto stored = [&](ptrdiff_t j) { return e[j] = exp_diff(x[j], shift); };
    if (!y)
        return e ? lane_sum<T, Sum>(n, stored, NoHook(), lo) : lane_sum<T, Sum>(n, term, NoHook(), lo);
    // a block of lanes is 64 bytes of float or 128 of double: its lines
    auto fetch = [&](ptrdiff_t base) {
        for (std::size_t b = 0; b < lanes * sizeof(T); b += 64)
            FS_PREFETCH((const char *)(y + base) + b, 1);
    };
    return e ? lane_sum<T, Sum>(n, stored, fetch, lo) : lane_sum<T, Sum>(n, term, fetch, lo);
}

// log1p(u) for u >= 0, -1 or NaN, within 0.57 ulp (0.66 for u near 2^-53;
// glibc's log1p: 0.82), in operations that vectorise (no table, no call),
// so that the logs of many rows' sums can be taken a vector at a time
// (logs_of_sums).
// s = 1 + u rounded, and u - (s - 1) its error, exactly; s = 2^k f with f
// in [sqrt(1/2), sqrt(2)) (the exponent read off the bits, as musl does);
// log f = 2 atanh(r), r = (f - 1) / (f + 1), |r| < 0.1716, as
// 2 r + 2 r^3 / 3 + ... + 2 r^21 / 21 (the next term is under 2^-56 of the
// sum), its leading term 2 r to twice double precision (r = rh + rl, the
// division's remainder in rl); then log1p(u) = k ln2 + log f +
// (u - (s - 1)) / s, k ln2_hi + 2 rh added exactly (Fast2Sum), the small
// parts to their error, and one last rounding.
inline double log1p_nonneg(double u)
{
    using F = FloatTraits<double>;
    const double s = 1.0 + u;
    const double err = u - (s - 1.0);
    constexpr std::uint64_t sqrt_half = 0x3fe6a09e667f3bcd, one = 0x3ff0000000000000;
    const std::uint64_t bits = bits_of(s) + (one - sqrt_half);
    // k as a double: 2^52 + k + 1023 has k + 1023 in its low bits
    const double kf = from_bits<double>((bits >> 52) | 0x4330000000000000) - (0x1p52 + 1023.0);
    const double f = from_bits<double>((bits & 0x000fffffffffffff) + sqrt_half);
    // f - 1 is exact; f + 1 = bh + bl exactly (TwoSum)
    const double a = f - 1.0, bh = f + 1.0, t = bh - f;
    const double bl = (f - (bh - t)) + (1.0 - t);
    // (std::fma, not mul_add, whose a * b + c the compiler fused in one
    // inlined copy of this code and not in another: 0.03 % of the results
    // differed between a tile and a row alone.  Here the loop vectorises
    // with the calls.)
    const double inv = 1.0 / bh, rh = a * inv;
    const double rl = std::fma(-rh, bl, std::fma(-rh, bh, a)) * inv;
    const double z = rh * rh, rh2 = 2.0 * rh;
    double p = 1.0 / 21;
    for (int j = 9; j >= 1; j--) p = std::fma(p, z, 1.0 / (2 * j + 1));
    const double small = std::fma(kf, F::ln2_lo, std::fma(rh2 * z, p, 2.0 * rl) + err / s);
    const double hi = kf * F::ln2_hi, H = hi + rh2;   // (ln2_hi * k: exact)
    const double H_err = (hi - H) + rh2;
    const double result = H + (H_err + small);
    // (S = 0, an empty row: -inf; NaN stays NaN)
    return u == -1.0 ? -std::numeric_limits<double>::infinity() : u == u ? result : u;
}

// log(S) from u = S - 1, as the kernels take it: log1p_nonneg, or without
// an FMA instruction (SSE2 and MSVC builds, where each std::fma would be a
// call into software, a dozen per log, unvectorised) libm's log1p below
// S = 2 and log of S = 1 + u, exact, from there
inline double log_of_sum(double u)
{
#if defined(FS_HAS_FMA)
    return log1p_nonneg(u);
#else
    return u < 1.0 ? std::log1p(u) : std::log(1.0 + u);
#endif
}

// log_of_sum for each of sum[0..w), in place: the logs of a tile's columns
// or a block's rows a vector at a time (a libm call per row cost short
// rows 1-2.5 cycles per element).  (flatten: log1p_nonneg inlined, else
// the loop calls it an element at a time, unvectorised, as GCC did in the
// extension modules)
[[gnu::flatten]] inline void logs_of_sums(double *sum, ptrdiff_t w)
{
#if defined(FS_HAS_FMA)
    FS_OMP_SIMD   // (libm's calls, without FMA, do not vectorise)
#endif
    for (ptrdiff_t c = 0; c < w; c++) sum[c] = log_of_sum(sum[c]);
}

// S - 1 for S = sum of exp(x[j] - m), m = max x, given S, whose log1p is
// log(S): accurate also when S is close to 1 (log-probabilities close to
// 0), where S - 1 from S would carry an absolute error of about eps.  Only
// then (S < 2) the terms are summed again without those equal to m, which
// are exactly 1 and are counted instead, so that S - 1 keeps its relative
// accuracy.  The terms are taken from e[] unless it is null.  A NaN S (NaN
// or +inf in the row, or all -inf) gives NaN.  (value(j): the row's entry
// j; row_log_sum below reads x[j].)
template <class T, class Value>
inline double sum_minus_one(Value value, T m, const T *e, double S, ptrdiff_t n)
{
    if (!(S < 2.0)) return S - 1.0;   // (exact below 2^53)
    double tail = e ? lane_sum<T>(n, [&](ptrdiff_t j) { return value(j) == m ? 0.0 : (double)e[j]; })
                    : lane_sum<T>(n, [&](ptrdiff_t j) {
                          return value(j) == m ? 0.0 : (double)exp_diff(value(j), m);
                      });
    if (tail < (double)n * FloatTraits<T>::tail_recompute)
        tail = tail_scaled<T>(value, m, n);
    double ones = lane_sum<T>(n, [&](ptrdiff_t j) { return value(j) == m ? 1.0 : 0.0; });
    return tail + (ones - 1.0);
}

// log(S), from sum_minus_one
template <class T, class Value>
inline double log_sum_of(Value value, T m, const T *e, double S, ptrdiff_t n)
{
    return log_of_sum(sum_minus_one<T>(value, m, e, S, n));
}

template <class T> inline double row_sum_minus_one(const T *x, T m, const T *e, double S,
                                                   ptrdiff_t n)
{
    return sum_minus_one<T>([&](ptrdiff_t j) { return x[j]; }, m, e, S, n);
}

template <class T> inline double row_log_sum(const T *x, T m, const T *e, double S, ptrdiff_t n)
{
    return log_sum_of<T>([&](ptrdiff_t j) { return x[j]; }, m, e, S, n);
}

// where=: y[j] = x[j] where mask[j * ms] is nonzero, else `fill` (-inf:
// an entry left out of the row); returns the number of entries kept.  The
// mask is one byte per entry, ms bytes apart (0: one switch for the row).
// y may be x.
template <class T>
inline ptrdiff_t row_masked_copy(const T *x, const unsigned char *mask, ptrdiff_t ms, T fill,
                                 T *y, ptrdiff_t n)
{
    ptrdiff_t kept = 0;
    if (ms == 1) {  // (the common layout: a loop the compiler vectorises)
        FS_OMP_SIMD_SUM(kept)
        for (ptrdiff_t j = 0; j < n; j++) {
            kept += mask[j] != 0;
            y[j] = mask[j] ? x[j] : fill;
        }
        return kept;
    }
    for (ptrdiff_t j = 0; j < n; j++) {
        kept += mask[j * ms] != 0;
        y[j] = mask[j * ms] ? x[j] : fill;
    }
    return kept;
}

// row_weighted_exp_sum for a mask: S = sum of exp(x[j] - shift) over the
// kept entries, chunk by chunk through a copy on the stack (with -inf at
// the others), the chunks' sums added compensated (as sum_of_parts), so
// as accurate as one lane_sum over the row; lo as for row_exp_sum.
template <class T>
inline double row_masked_exp_sum(const T *x, const unsigned char *mask, T shift, ptrdiff_t n,
                                 double *lo)
{
    constexpr ptrdiff_t chunk = 1024;
    T kept[chunk];
    PartsSum sum;
    for (ptrdiff_t start = 0; start < n; start += chunk) {
        ptrdiff_t length = std::min(chunk, n - start);
        row_masked_copy(x + start, mask + start, 1, -std::numeric_limits<T>::infinity(), kept,
                        length);
        double part_lo = 0.0;
        double part = row_exp_sum(kept, shift, (T *)nullptr, (T *)nullptr, length, &part_lo);
        sum.add(part, part_lo);
    }
    return sum.value(lo);
}

// logsumexp with scale factors w (scipy.special.logsumexp's b): entries
// whose weight is 0 are left out (their x is never used), the others
// weigh w[j].  w null: every weight is 1 (row_max, row_exp_sum and
// row_log_sum themselves).  W is T, or unsigned char for a mask (where=):
// weights of 0 and 1.

// A mask's weights (where=) are read another way: an entry left out is
// -inf, which exp takes to exactly 0, so that the sums are those of the
// unmasked row with -inf there.  (Weights of 0 and 1 in the lane loops kept
// them scalar, 8x slower: GCC 12 vectorises no loop of 16 double lanes
// that also loads bytes.  So the exp-sum copies the kept entries a chunk
// at a time, row_masked_copy, and sums the copy.)
template <class W> constexpr bool is_mask = std::is_same<W, unsigned char>::value;

// (x[j] is loaded whether kept or not: a load only where mask[j] is set
// would keep the loops scalar)
template <class T> inline T kept_or_minus_inf(const T *x, const unsigned char *mask, ptrdiff_t j)
{
    T value = x[j];
    return mask[j] != 0 ? value : -std::numeric_limits<T>::infinity();
}

// A weight as a double (a mask's byte, any nonzero value, is 1).
template <class W> inline double weight_value(W w) { return (double)w; }
inline double weight_value(unsigned char w) { return w != 0 ? 1.0 : 0.0; }

// max of x over the entries of nonzero weight (-inf if there are none)
template <class T, class W> inline T row_max_weighted(const T *x, const W *w, ptrdiff_t n)
{
    if (!w) return row_max(x, n);
    T m = -std::numeric_limits<T>::infinity();
    if constexpr (is_mask<W>) {
        FS_OMP_SIMD_MAX(m)
        for (ptrdiff_t j = 0; j < n; j++) {
            T v = kept_or_minus_inf(x, w, j);
            m = v > m ? v : m;
        }
        return m;
    }
    FS_OMP_SIMD_MAX(m)
    for (ptrdiff_t j = 0; j < n; j++) m = w[j] != W(0) && x[j] > m ? x[j] : m;
    return m;
}

// S = sum of w[j] exp(x[j] - shift) over the entries of nonzero weight
// (lo as for row_exp_sum).  Flattened, as row_exp_sum is, and without a
// branch (the term is computed, then dropped where the weight is 0): out
// of line, the loop reloaded x and shift after every store to its lanes
// and branched on each weight, scalar code, 4x slower on two threads than
// on one (float32 (4096, 1024): 12 ms against 3.1).
template <class T, class W>
[[gnu::noinline, gnu::flatten]] double row_factor_exp_sum(const T *x, const W *w, T shift,
                                                          ptrdiff_t n, double *lo)
{
    return lane_sum<T>(n, [&](ptrdiff_t j) {
        double term = weight_value(w[j]) * (double)exp_diff(x[j], shift);
        return w[j] == W(0) ? 0.0 : term;
    }, NoHook(), lo);
}

template <class T, class W>
inline double row_weighted_exp_sum(const T *x, const W *w, T shift, ptrdiff_t n,
                                   double *lo = nullptr)
{
    if (!w) return row_exp_sum(x, shift, (T *)nullptr, (T *)nullptr, n, lo);
    if constexpr (is_mask<W>) return row_masked_exp_sum(x, w, shift, n, lo);
    else return row_factor_exp_sum(x, w, shift, n, lo);
}

// S for a row whose max is +inf, as IEEE arithmetic gives it: w[j] * inf
// at the +inf entries (+inf plus -inf is NaN), NaN for a NaN entry, and
// NaN for an infinite or NaN weight elsewhere (inf * exp(x - inf) = inf * 0).
template <class T, class W> inline double row_sum_at_inf(const T *x, const W *w, ptrdiff_t n)
{
    const double inf = std::numeric_limits<double>::infinity();
    return lane_sum<T>(n, [&](ptrdiff_t j) {
        double weight = w ? weight_value(w[j]) : 1.0;
        return weight == 0.0 ? 0.0 : x[j] == T(inf) ? weight * inf
             : x[j] == x[j] ? weight - weight : (double)x[j];
    });
}

// S - 1's parts for log_weighted_sum below, added to *tail and *at_max:
// the terms away from the max m, and the weights at the max.
// (value(j), factor(j): the row's entry j and its weight as a double.)
template <class T, class Value, class Factor>
inline void weighted_log_parts(Value value, Factor factor, T m, ptrdiff_t n, double *tail,
                               double *at_max)
{
    *tail += lane_sum<T>(n, [&](ptrdiff_t j) {
        double w = factor(j);
        T v = value(j);
        return w == 0.0 || v == m ? 0.0 : w * (double)exp_diff(v, m);
    });
    *at_max += lane_sum<T>(n, [&](ptrdiff_t j) {
        double w = factor(j);
        return w != 0.0 && value(j) == m ? w : 0.0;
    });
}

// log |S| for S = row_weighted_exp_sum(x, w, m, n), m the max: when
// 1/2 < S < 2, as log1p(S - 1) with S - 1 summed directly (the weights at
// the max minus 1, exact there, plus the other terms: parts(&tail,
// &at_max) adds them, weighted_log_parts over the row or its chunks), as
// row_log_sum does for weights of 1 (where S >= 1).  Further from 1, log S
// itself is accurate, and log1p would not be: 1 + (S - 1) rounds S to a
// multiple of eps.  S = 0 gives -inf, a NaN S NaN.
template <class Parts> inline double log_weighted_sum(double S, Parts parts)
{
    if (!(S > 0.5 && S < 2.0)) return std::log(std::fabs(S));
    double tail = 0.0, at_max = 0.0;
    parts(&tail, &at_max);
    return std::log1p(tail + (at_max - 1.0));
}

template <class T, class W>
inline double row_log_weighted_sum(const T *x, const W *w, T m, double S, ptrdiff_t n)
{
    if (!w) return row_log_sum(x, m, (const T *)nullptr, S, n);
    if constexpr (is_mask<W>)  // (S >= 1, or 0 with nothing kept)
        return log_sum_of<T>([&](ptrdiff_t j) { return kept_or_minus_inf(x, w, j); },
                             m, (const T *)nullptr, S, n);
    else
        return log_weighted_sum(S, [&](double *tail, double *at_max) {
            weighted_log_parts<T>([&](ptrdiff_t j) { return x[j]; },
                                  [&](ptrdiff_t j) { return weight_value(w[j]); }, m, n, tail,
                                  at_max);
        });
}

// logsumexp's result, shift + log|S| given log|S|, and S's sign into *sign
// (null: a negative S gives NaN)
template <class T> inline T lse_finish(double log_abs, T shift, double total, T *sign)
{
    double sgn = total > 0 ? 1.0 : total < 0 ? -1.0 : total == 0 ? 0.0 : total;
    if (sign) *sign = (T)sgn;
    else if (total < 0) return std::numeric_limits<T>::quiet_NaN();
    return (T)((double)shift + log_abs);
}

// lse_finish for a row whose max is +inf, S its row_sum_at_inf: +-inf, or NaN
template <class T> inline T lse_at_inf(double S, T *sign)
{
    return lse_finish(S > 0 ? S : -S, T(0), S, sign);
}

// (lo, here and below, as for row_exp_sum)
template <class T> inline double row_sum(const T *x, ptrdiff_t n, double *lo = nullptr)
{
    return lane_sum<T>(n, [&](ptrdiff_t j) { return (double)x[j]; }, NoHook(), lo);
}

template <class T> inline double row_dot(const T *a, const T *b, ptrdiff_t n,
                                         double *lo = nullptr)
{
    return lane_sum<T>(n, [&](ptrdiff_t j) { return (double)a[j] * (double)b[j]; }, NoHook(),
                       lo);
}

// row_dot(a, b, n), or row_sum(b, n) if `sum_only`, also copying a into c:
// a product's last pass, which would stall loading a (see store_stalls),
// then reads the copy instead, placed clear of its output.  The same sums
// (the products a * b in double are exact, so row_dot(b, a) too).
template <class T>
inline double row_dot_copying(const T *a, const T *b, T *c, ptrdiff_t n, bool sum_only)
{
    if (sum_only)
        return lane_sum<T>(n, [&](ptrdiff_t j) { c[j] = a[j]; return (double)b[j]; });
    return lane_sum<T>(n, [&](ptrdiff_t j) { c[j] = a[j]; return (double)a[j] * (double)b[j]; });
}

// A cross-entropy target row: target weights t (probabilities) as they
// are (w null), or with the loss options applied as the row is read,
// a[j] = (t[j] keep + uniform) w[j]: keep = 1 - e and uniform = e / n for a
// label smoothing e, w the class weights (ones without).  No row of a is
// ever stored.
template <class T> struct TargetRow {
    const T *t;
    const T *w;
    T keep, uniform;
    TargetRow at(ptrdiff_t start) const
    {
        return {t ? t + start : t, w ? w + start : w, keep, uniform};
    }
};

// f(a), a(j) the target row's entry j: one loop for plain rows, one for
// rows with options
template <class T, class F> inline auto with_target(const TargetRow<T> &row, F f)
{
    if (row.w) return f([&](ptrdiff_t j) { return (row.t[j] * row.keep + row.uniform) * row.w[j]; });
    return f([&](ptrdiff_t j) { return row.t[j]; });
}

// sum of the target row (lo as for row_exp_sum)
template <class T> inline double target_sum(const TargetRow<T> &row, ptrdiff_t n,
                                            double *lo = nullptr)
{
    return with_target(row, [&](auto a) {
        return lane_sum<T>(n, [&](ptrdiff_t j) { return (double)a(j); }, NoHook(), lo);
    });
}

// sum of a[j] * (x[j] - shift) over the nonzero target weights: a zero
// weight on a -inf entry contributes 0 (the limit of 0 log 0), not
// 0 * -inf = NaN
template <class T>
inline double row_weighted_shifted_sum(const TargetRow<T> &row, const T *x, T shift,
                                       ptrdiff_t n, double *lo = nullptr)
{
    return with_target(row, [&](auto a) {
        return lane_sum<T>(n, [&](ptrdiff_t j) {
            T w = a(j);
            return w != 0 ? (double)w * ((double)x[j] - (double)shift) : 0.0;
        }, NoHook(), lo);
    });
}

// y[j] = (x[j] - shift) - offset: log_softmax with offset = log(sum)
template <class T> inline void row_shift(const T *x, T shift, double offset, T *y, ptrdiff_t n)
{
#if defined(FS_AVX512_FLOAT_LOOPS) && defined(__AVX512VL__)
    if constexpr (std::is_same<T, float>::value) return row_shift_avx512(x, shift, offset, y, n);
#endif
    for (ptrdiff_t j = 0; j < n; j++)
        y[j] = (T)(((double)x[j] - (double)shift) - offset);
}

// s * (v - dot): an element of the softmax Jacobian-vector product
template <class T> inline T jvp_term(T s, T v, double dot)
{
    return (T)((double)s * ((double)v - dot));
}

// g - exp(logp) * gsum: an element of the log_softmax vector-Jacobian
// product
template <class T> inline T log_vjp_term(T logp, T g, double gsum)
{
    return (T)((double)g - (double)exp2w(logp, T(0)) * gsum);
}

// y[j] = s[j] * (v[j] - dot): the softmax Jacobian-vector product
template <class T> inline void row_jvp(const T *s, const T *v, double dot, T *y, ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n; j++) y[j] = jvp_term(s[j], v[j], dot);
}

// y[j] = g[j] - exp(logp[j]) * gsum: the log_softmax vector-Jacobian product
template <class T> inline void row_log_vjp(const T *logp, const T *g, double gsum, T *y, ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n; j++) y[j] = log_vjp_term(logp[j], g[j], gsum);
}

// row_log_vjp(a, b, total, y, n) if log_vjp, else row_jvp(a, b, total, y,
// n), walking the row backward (see walk_backward; the same results).  A
// function of its own: inlined, it made its callers too large for GCC to
// inline the reduction before it, which cost float32 softmax_vjp 35 % on
// rows of 37.
template <class T>
[[gnu::noinline, gnu::flatten]] void product_update_backward(const T *a, const T *b, double total,
                                                             T *y, ptrdiff_t n, bool log_vjp)
{
    fetch_lines<true>(y, n);
    if (log_vjp) {
        fetch_lines<false>(a, n);   // (b is in cache: the sum read it)
        for_blocks_backward<T>(n, [&](ptrdiff_t j) { y[j] = log_vjp_term(a[j], b[j], total); });
    } else {   // (a and b are in cache: the dot read them)
        for_blocks_backward<T>(n, [&](ptrdiff_t j) { y[j] = jvp_term(a[j], b[j], total); });
    }
}

// Cross-entropy gradient: g[j] = e[j] * factor - a[j] * tscale, where e
// holds exp(x - max) (e may be g) and a is the target row
template <class T>
inline void row_xent_grad(const T *e, const TargetRow<T> &row, double factor, double tscale,
                          T *g, ptrdiff_t n)
{
    with_target(row, [&](auto a) {
        for (ptrdiff_t j = 0; j < n; j++)
            g[j] = (T)((double)e[j] * factor - (double)a(j) * tscale);
    });
}

// Row i of the Jacobian diag(s) - s s^T: y[j] = s[i] (delta_ij - s[j]),
// each element written once
template <class T> inline void jacobian_row(const T *s, ptrdiff_t i, T *y, ptrdiff_t n)
{
    const T si = s[i];
    for (ptrdiff_t j = 0; j < i; j++) y[j] = -si * s[j];
    y[i] = si * ((T)1 - si);
    for (ptrdiff_t j = i + 1; j < n; j++) y[j] = -si * s[j];
}

// num / (den + den_lo) as hi + lo, for a denominator given as a rounded
// sum den and its error den_lo (0 if not known; finite, and 0 where den is
// not): the rounded quotient and the quotient of its remainder, that of
// num - hi den exact with an FMA (without one lo is 0, which scaled
// ignores).  A double softmax divides by S = sum of the terms: S rounded
// to double is off by up to half its ulp, 2^-53 relative, which is up to
// an ulp of a result whose mantissa is small; den_lo takes it back.
inline void quotient_split(double num, double den, double den_lo, double *hi, double *lo)
{
    *hi = num / den;
#if defined(FS_HAS_FMA)
    // (both FMAs written out: the optimiser would fuse the second, the
    // debug build not, and cols_factor_avx512 fuses it)
    *lo = std::fma(-*hi, den_lo, std::fma(-*hi, den, num)) / den;
#else
    (void)den_lo;
    *lo = 0.0;
#endif
}

// e * (hi + lo), rounded once with an FMA
inline double scaled(double e, double hi, double lo)
{
#if defined(FS_HAS_FMA)
    return std::fma(e, hi, e * lo);
#else
    (void)lo;
    return e * hi;
#endif
}

// y[j] = e[j] * num / (den + den_lo), rounded once (e may be y; den_lo as
// in quotient_split): the factor is taken
// as an unevaluated sum hi + lo (lo = the remainder of the division, exact
// with an FMA), and fma(e, hi, e * lo) rounds once, the error of e * lo
// being ~2^-48 (float) or ~2^-106 (double) relative.  A plain
// e * (num / den) would round twice,
// which costs a double softmax up to an ulp.  For float data the factor is
// a pair of floats, so the loop runs at the float vector width.  Without
// hardware FMA (the SSE2 build) fma() would be a library call in the loop:
// the product is then formed in double (float data) or plainly.
// (A template with one specialisation per type, since the two differ.)
template <class T>
void row_scale_div(const T *e, double num, double den, double den_lo, T *y, ptrdiff_t n);

// (float: the factor in double, whose rounding is far below a float's ulp;
// den_lo would not show)
template <>
inline void row_scale_div<float>(const float *e, double num, double den, double /*den_lo*/,
                                 float *y, ptrdiff_t n)
{
    double factor = num / den;
#if defined(FS_HAS_FMA)
    const float hi = (float)factor, lo = (float)(factor - (double)hi);
#if defined(FS_AVX512_FLOAT_LOOPS)
    row_scale_avx512(e, hi, lo, y, n);
#else
    FS_OMP_SIMD
    for (ptrdiff_t j = 0; j < n; j++) y[j] = std::fma(e[j], hi, e[j] * lo);
#endif
#else
    for (ptrdiff_t j = 0; j < n; j++) y[j] = (float)((double)e[j] * factor);
#endif
}

template <>
inline void row_scale_div<double>(const double *e, double num, double den, double den_lo,
                                  double *y, ptrdiff_t n)
{
    double hi, lo;
    quotient_split(num, den, den_lo, &hi, &lo);
    FS_OMP_SIMD
    for (ptrdiff_t j = 0; j < n; j++) y[j] = scaled(e[j], hi, lo);
}

// ------------------------------------------------------------------
// Softmax along a non-last axis, without a transposed copy.
// ------------------------------------------------------------------
//
// A C-contiguous array reduced along a middle axis is a stack of (n, inner)
// blocks, each softmax running down a column.  The kernels take `cols`
// neighbouring columns at a time and vectorise across them: the same
// passes as for a row (max; exp(x - max) and its sum; scale or shift), each
// a loop over the n rows of the tile, with one max, sum (and, for
// log_softmax, the log1p inputs) per column in arrays on the stack.
// x and y step by sx and sy elements from one row to the next; y may be x.
// The sums: plain double for float data, compensated per column for double
// data (the lane sums' policies).
//
// The elements E are computed in their own type T (Elem = Own<E>), or are
// float16 / bfloat16 bits (Elem = Float16 or BFloat16) computed in float, each
// rounded once when stored: softmax then takes its terms again in the last
// pass instead of storing them in y.

constexpr ptrdiff_t cols = 128;

// The short rows' tile (softmax_short_rows), on the stack: L1-sized.
constexpr std::size_t short_tile_bytes = 16384;

#if defined(FS_AVX512_FLOAT_LOOPS)
// softmax_cols_tile's exp pass and last pass on a contiguous tile of float
// columns (rows w elements apart: the short rows' tile), 16 columns a
// vector (the last masked), each block of columns down all n rows with its
// sums in registers: the same operations per column, in the same order, as
// the portable loops (float rows in AVX-512 registers, above).  Short rows
// of 37 floats: 1.39 -> 1.00 ns per element, 10: 1.21 -> 1.13 (Zen 4).
// Taken by the short rows' tile, and by a middle axis whose (n, inner)
// block is as contiguous and as small; other columns keep the portable
// loops, which read the rows in order (blocks going down 128 columns
// 32 KiB apart measured 1.5-1.8x slower).
// m, sum, tail, ones: softmax_cols_tile's per-column arrays.

// the halves of 16 floats as two vectors of 8 doubles
inline __m512d low_doubles(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d high_doubles(__m512 v)
{
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
inline __m512 floats_of(__m512d lo, __m512d hi)
{
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
}

inline void cols_exp_pass_avx512(const float *x, float *y, ptrdiff_t n, ptrdiff_t w,
                                 int take_log, const float *m, double *sum, double * /*carry*/,
                                 double *tail, double * /*tcarry*/, double *ones)
{   // (float columns sum plainly: no carries)
    const __m512d one = _mm512_set1_pd(1.0);
    double *acc = take_log ? tail : sum;
    for (ptrdiff_t c = 0; c < w; c += 16) {
        const __mmask16 k = lanes_left(c, w);
        const __mmask8 k_lo = (__mmask8)k, k_hi = (__mmask8)(k >> 8);
        const __m512 mc = _mm512_maskz_loadu_ps(k, m + c);
        const __m512 neg_mc = _mm512_sub_ps(_mm512_setzero_ps(), mc);
        __m512d acc_lo = _mm512_maskz_loadu_pd(k_lo, acc + c);
        __m512d acc_hi = _mm512_maskz_loadu_pd(k_hi, acc + c + 8);
        __m512d ones_lo = _mm512_maskz_loadu_pd(k_lo, ones + c);
        __m512d ones_hi = _mm512_maskz_loadu_pd(k_hi, ones + c + 8);
        for (ptrdiff_t i = 0; i < n; i++) {
            const __m512 v = _mm512_maskz_loadu_ps(k, x + i * w + c);
            const __m512 e = exp_diff_avx512(v, mc, neg_mc);
            __m512d e_lo = low_doubles(e), e_hi = high_doubles(e);
            if (take_log) {
                // the terms at the max count as ones, e - 1 (see the loop below)
                const __mmask16 at_max = _mm512_cmp_ps_mask(v, mc, _CMP_EQ_OQ);
                const __mmask8 at_lo = (__mmask8)at_max, at_hi = (__mmask8)(at_max >> 8);
                e_lo = _mm512_mask_sub_pd(e_lo, at_lo, e_lo, one);
                e_hi = _mm512_mask_sub_pd(e_hi, at_hi, e_hi, one);
                ones_lo = _mm512_mask_add_pd(ones_lo, at_lo, ones_lo, one);
                ones_hi = _mm512_mask_add_pd(ones_hi, at_hi, ones_hi, one);
            } else {
                _mm512_mask_storeu_ps(y + i * w + c, k, e);
            }
            acc_lo = _mm512_add_pd(acc_lo, e_lo);
            acc_hi = _mm512_add_pd(acc_hi, e_hi);
        }
        _mm512_mask_storeu_pd(acc + c, k_lo, acc_lo);
        _mm512_mask_storeu_pd(acc + c + 8, k_hi, acc_hi);
        _mm512_mask_storeu_pd(ones + c, k_lo, ones_lo);
        _mm512_mask_storeu_pd(ones + c + 8, k_hi, ones_hi);
    }
}

// softmax: y = fma(e, hi, e * lo) in double, hi and lo in sum and tail;
// log_softmax: y = (x - m) - log S in double, log S in sum
inline void cols_last_pass_avx512(const float *x, float *y, ptrdiff_t n, ptrdiff_t w,
                                  int take_log, const float *m, const double *sum,
                                  const double *tail)
{
    for (ptrdiff_t c = 0; c < w; c += 16) {
        const __mmask16 k = lanes_left(c, w);
        const __mmask8 k_lo = (__mmask8)k, k_hi = (__mmask8)(k >> 8);
        const __m512d a_lo = _mm512_maskz_loadu_pd(k_lo, sum + c);
        const __m512d a_hi = _mm512_maskz_loadu_pd(k_hi, sum + c + 8);
        const __m512d b_lo = _mm512_maskz_loadu_pd(k_lo, tail + c);
        const __m512d b_hi = _mm512_maskz_loadu_pd(k_hi, tail + c + 8);
        const __m512 mc = _mm512_maskz_loadu_ps(k, m + c);
        const __m512d m_lo = low_doubles(mc), m_hi = high_doubles(mc);
        for (ptrdiff_t i = 0; i < n; i++) {
            __m512d lo, hi;
            if (take_log) {
                const __m512 v = _mm512_maskz_loadu_ps(k, x + i * w + c);
                lo = _mm512_sub_pd(_mm512_sub_pd(low_doubles(v), m_lo), a_lo);
                hi = _mm512_sub_pd(_mm512_sub_pd(high_doubles(v), m_hi), a_hi);
            } else {
                const __m512 e = _mm512_maskz_loadu_ps(k, y + i * w + c);
                const __m512d e_lo = low_doubles(e), e_hi = high_doubles(e);
                lo = _mm512_fmadd_pd(e_lo, a_lo, _mm512_mul_pd(e_lo, b_lo));
                hi = _mm512_fmadd_pd(e_hi, a_hi, _mm512_mul_pd(e_hi, b_hi));
            }
            _mm512_mask_storeu_ps(y + i * w + c, k, floats_of(lo, hi));
        }
    }
}

// The same two passes for double columns, 8 a vector, each column's sum
// compensated as NeumaierSum::add does (its carry in carry, or tcarry).
inline void neumaier_add(__m512d &sum, __m512d &err, __m512d v)
{
    const __m512d s = _mm512_add_pd(sum, v), bv = _mm512_sub_pd(s, sum);
    const __m512d e = _mm512_add_pd(_mm512_sub_pd(sum, _mm512_sub_pd(s, bv)), _mm512_sub_pd(v, bv));
    const __mmask8 finite = _mm512_cmp_pd_mask(_mm512_sub_pd(e, e), _mm512_setzero_pd(), _CMP_EQ_OQ);
    err = _mm512_add_pd(err, _mm512_maskz_mov_pd(finite, e));
    sum = s;
}

inline void cols_exp_pass_avx512(const double *x, double *y, ptrdiff_t n, ptrdiff_t w,
                                 int take_log, const double *m, double *sum, double *carry,
                                 double *tail, double *tcarry, double *ones)
{
    const __m512d one = _mm512_set1_pd(1.0);
    double *acc = take_log ? tail : sum, *acc_err = take_log ? tcarry : carry;
    for (ptrdiff_t c = 0; c < w; c += 8) {
        const __mmask8 k = lanes_left8(c, w);
        const __m512d mc = _mm512_maskz_loadu_pd(k, m + c);
        const __m512d neg_mc = _mm512_sub_pd(_mm512_setzero_pd(), mc);
        __m512d a = _mm512_maskz_loadu_pd(k, acc + c), a_err = _mm512_maskz_loadu_pd(k, acc_err + c);
        __m512d count = _mm512_maskz_loadu_pd(k, ones + c);
        for (ptrdiff_t i = 0; i < n; i++) {
            const __m512d v = _mm512_maskz_loadu_pd(k, x + i * w + c);
            __m512d e = exp_diff_avx512(v, mc, neg_mc);
            if (take_log) {   // (as the float loop)
                const __mmask8 at_max = _mm512_cmp_pd_mask(v, mc, _CMP_EQ_OQ);
                e = _mm512_mask_sub_pd(e, at_max, e, one);
                count = _mm512_mask_add_pd(count, at_max, count, one);
            } else {
                _mm512_mask_storeu_pd(y + i * w + c, k, e);
            }
            neumaier_add(a, a_err, e);
        }
        _mm512_mask_storeu_pd(acc + c, k, a);
        _mm512_mask_storeu_pd(acc_err + c, k, a_err);
        _mm512_mask_storeu_pd(ones + c, k, count);
    }
}

inline void cols_last_pass_avx512(const double *x, double *y, ptrdiff_t n, ptrdiff_t w,
                                  int take_log, const double *m, const double *sum,
                                  const double *tail)
{
    for (ptrdiff_t c = 0; c < w; c += 8) {
        const __mmask8 k = lanes_left8(c, w);
        const __m512d a = _mm512_maskz_loadu_pd(k, sum + c), b = _mm512_maskz_loadu_pd(k, tail + c);
        const __m512d mc = _mm512_maskz_loadu_pd(k, m + c);
        for (ptrdiff_t i = 0; i < n; i++) {
            __m512d r;
            if (take_log) {
                r = _mm512_sub_pd(_mm512_sub_pd(_mm512_maskz_loadu_pd(k, x + i * w + c), mc), a);
            } else {
                const __m512d e = _mm512_maskz_loadu_pd(k, y + i * w + c);
                r = _mm512_fmadd_pd(e, a, _mm512_mul_pd(e, b));
            }
            _mm512_mask_storeu_pd(y + i * w + c, k, r);
        }
    }
}

// column_finish for softmax on the columns of a tile, 8 at a time: the
// factor 1 / S as hi + lo, split_value's and quotient_split's arithmetic
// (the scalar divisions cost about a cycle per element on rows of 10).
template <class Sum> inline void cols_factor_avx512(double *sum, const double *carry,
                                                   double *tail, ptrdiff_t w)
{
    const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd();
    for (ptrdiff_t c = 0; c < w; c += 8) {
        const __mmask8 k = lanes_left8(c, w);
        const __m512d s = _mm512_maskz_loadu_pd(k, sum + c);
        __m512d S = s, rest;
        if constexpr (std::is_same<Sum, PlainSum>::value) {
            rest = _mm512_sub_pd(s, S);
        } else {   // NeumaierSum: value(s, err) = s + err
            const __m512d err = _mm512_maskz_loadu_pd(k, carry + c);
            S = _mm512_add_pd(s, err);
            rest = _mm512_add_pd(_mm512_sub_pd(s, S), err);
        }
        const __mmask8 finite = _mm512_cmp_pd_mask(_mm512_sub_pd(rest, rest), zero, _CMP_EQ_OQ);
        const __m512d S_lo = _mm512_maskz_mov_pd(finite, rest);
        const __m512d hi = _mm512_div_pd(one, S);
        const __m512d lo = _mm512_div_pd(_mm512_fnmadd_pd(hi, S_lo, _mm512_fnmadd_pd(hi, S, one)), S);
        _mm512_mask_storeu_pd(sum + c, k, hi);
        _mm512_mask_storeu_pd(tail + c, k, lo);
    }
}
#endif

template <class E> struct Own {
    static E load(E v) { return v; }
    static E store(E v) { return v; }
};

// A column's sums (softmax_cols_tile's, short_row_alone's) made into
// what its last pass needs: softmax, the factor 1 / S as hi + lo in sum
// and tail (see quotient_split); log_softmax, S - 1 in sum, whose log
// logs_of_sums then takes for all the columns at once (S - 1 as
// sum_minus_one takes it).  (value(i): the column's entry i, for the
// subnormal tail's recomputation)
template <class T, class Value>
inline void column_finish(double &sum, double carry, double &tail, double tcarry, double ones,
                          T m, Value value, ptrdiff_t n, int take_log)
{
    using Sum = typename FloatTraits<T>::ColumnSum;
    if (!take_log) {
        double S_lo, S = split_value<Sum>(sum, carry, &S_lo);
        quotient_split(1.0, S, S_lo, &sum, &tail);
        return;
    }
    // S = ones + tail, rounded once (the tail's error, if kept, added in)
    double t = Sum::value(tail, tcarry);
    double err = Sum::value(0.0, tcarry);
    double S = two_sum(ones, tail, &err) + err;
    if (S < 2.0) {
        if (t < (double)n * FloatTraits<T>::tail_recompute) t = tail_scaled<T>(value, m, n);
        sum = t + (ones - 1.0);
    } else {
        sum = S - 1.0;
    }
}

template <class E, class Elem = Own<E>>
inline void softmax_cols_tile(const E *x, ptrdiff_t sx, E *y, ptrdiff_t sy, ptrdiff_t n,
                              ptrdiff_t w, int take_log)
{
    using T = decltype(Elem::load(E()));
    using Sum = typename FloatTraits<T>::ColumnSum;
    constexpr bool own = std::is_same<Elem, Own<E>>::value;
    T m[cols];
    double sum[cols], carry[cols], tail[cols], tcarry[cols];
    double ones[cols];
    for (ptrdiff_t c = 0; c < w; c++) {
        m[c] = -std::numeric_limits<T>::infinity();
        sum[c] = carry[c] = tail[c] = tcarry[c] = ones[c] = 0.0;
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        const auto *xi = x + i * sx;
        FS_OMP_SIMD
        for (ptrdiff_t c = 0; c < w; c++) {
            T v = Elem::load(xi[c]);
            m[c] = v > m[c] ? v : m[c];
        }
    }
    bool vector_tile = false;   // a contiguous tile: the AVX-512 loops
#if defined(FS_AVX512_FLOAT_LOOPS)
    if constexpr (own) {
        // (not for fewer columns than a vector holds: a masked load that
        // follows a store to its lines at once waits for that store, and a
        // tile of a few rows is one chain of them: one row of 10 floats,
        // 62 -> 500 ns; nor beyond the short rows' tile size, where blocks
        // going down all n rows would read the array from L2 once per block)
        vector_tile = sx == w && sy == w && w >= (ptrdiff_t)(64 / sizeof(E)) &&
                      (std::size_t)(n * w) * sizeof(E) <= short_tile_bytes;
        if (vector_tile)
            cols_exp_pass_avx512(x, y, n, w, take_log, m, sum, carry, tail, tcarry, ones);
    }
#endif
    // (one loop per function: with the test inside, each store became a
    // masked store, which AVX2 makes slowly: 2-3x the time on Zen 4)
    for (ptrdiff_t i = 0; i < n && !vector_tile; i++) {
        const auto *xi = x + i * sx;
        auto *yi = y + i * sy;
        if (take_log) {
            FS_OMP_SIMD
            for (ptrdiff_t c = 0; c < w; c++) {
                // S = tail + ones: the terms at the max are exactly 1 and
                // counted (e - 1 is 0 for them, and keeps the NaN of a +inf
                // max), the others summed, which is also what the log1p
                // path of row_log_sum needs: one sum per element, not two
                // (e - 0.0 is e: one select, not two; with two, GCC's AVX2
                // loop took 1.6x the time)
                T v = Elem::load(xi[c]);
                T e = exp_diff(v, m[c]);
                const double one = v == m[c] ? 1.0 : 0.0;
                Sum::add(tail[c], tcarry[c], (double)e - one);
                ones[c] += one;
            }
        } else {
            FS_OMP_SIMD
            for (ptrdiff_t c = 0; c < w; c++) {
                T e = exp_diff(Elem::load(xi[c]), m[c]);
                if constexpr (own) yi[c] = e;
                Sum::add(sum[c], carry[c], (double)e);
            }
        }
    }
#if defined(FS_AVX512_FLOAT_LOOPS)
    if (vector_tile && !take_log) {
        cols_factor_avx512<Sum>(sum, carry, tail, w);
    } else
#endif
    {
        for (ptrdiff_t c = 0; c < w; c++)
            column_finish<T>(sum[c], carry[c], tail[c], tcarry[c], ones[c], m[c],
                             [&](ptrdiff_t i) { return Elem::load(x[c + i * sx]); }, n,
                             take_log);
        if (take_log) logs_of_sums(sum, w);
    }
#if defined(FS_AVX512_FLOAT_LOOPS)
    if constexpr (own) {
        if (vector_tile) {
            cols_last_pass_avx512(x, y, n, w, take_log, m, sum, tail);
            return;
        }
    }
#endif
    for (ptrdiff_t i = 0; i < n; i++) {
        const auto *xi = x + i * sx;
        auto *yi = y + i * sy;
        if (take_log) {
            FS_OMP_SIMD
            for (ptrdiff_t c = 0; c < w; c++)
                yi[c] = Elem::store((T)(((double)Elem::load(xi[c]) - (double)m[c]) - sum[c]));
        } else if constexpr (own) {
            FS_OMP_SIMD
            for (ptrdiff_t c = 0; c < w; c++)
                yi[c] = (T)scaled((double)yi[c], sum[c], tail[c]);
        } else {  // (the terms again: the same values as in the sum)
            FS_OMP_SIMD
            for (ptrdiff_t c = 0; c < w; c++)
                yi[c] = Elem::store((T)scaled((double)exp_diff(Elem::load(xi[c]), m[c]), sum[c],
                                           tail[c]));
        }
    }
}

// ------------------------------------------------------------------
// Short rows, vectorised across rows
// ------------------------------------------------------------------
//
// A row of a few dozen elements fills a vector or two: each pass is mostly
// its partial last block of lanes, and the horizontal steps (the max's and
// the lanes' reductions) and the division or log come once per handful of
// elements.  Short rows are instead copied, w at a time, into a tile on
// the stack, transposed (element j of row r at tile[j * w + r]), where
// softmax_cols_tile runs vectorised across the rows; then the tile is
// copied back.  Each row gets the same operations whatever its tile (the
// columns are independent), and the tile's columns sum as the column
// kernel does: plain double for float data, compensated for double.
//
// Which rows (short_rows below), measured against the row kernel, 1
// thread, standard normal logits, whole calls of 8192 or 16384 rows, the
// faster of 5-6 alternating runs of each build:
// - float rows shorter than short_row_max: AVX-512 0.86-1.0x the time,
//   AVX2 0.75-0.93x (rows of 16: 1.03-1.07x there), where the copies into
//   and out of the tile cost less than the row kernel loses;
// - but not rows of exactly 32 floats, which fill two blocks of lanes:
//   AVX-512 0.87-0.92x, AVX2 1.24-1.27x.  One rule for float rows on every
//   build keeps a row's bits the same on AVX-512 and AVX2;
// - double rows shorter than short_row_max in GCC and clang AVX-512 builds
//   (the tile in intrinsics): 0.6-0.8x from 16 to 39 elements.  Other
//   builds only take double rows shorter than 24 (softmax) or 16
//   (log_softmax): from there the portable tile took 1.06-1.28x the time
//   on AVX2 (1.1-1.6x on SSE2).  So softmax rows of 24-39 doubles and
//   log_softmax rows of 16-39 may differ between AVX-512 and the other
//   builds (measured: softmax none in 80 000 rows; log_softmax 0.1 % of
//   the results, by up to 2 ulp; both within the accuracy bounds).
// Whatever the number of rows: a row's result must not depend on the
// call it is in (docs/api.rst, Threads; fastsoftmax.dask relies on it), so
// a call of a few rows takes the tile's arithmetic too, a row at a time
// (short_row_alone).

constexpr ptrdiff_t short_row_max = 40;

// (a tile holds at least a vector's worth of the longest short rows, and
// short_row_alone's buffer a row)
static_assert(short_tile_bytes / sizeof(double) / (short_row_max - 1) >= 64 / sizeof(double),
              "the short rows' tile holds a vector of rows");

inline bool short_rows(ptrdiff_t n, std::size_t itemsize, int take_log)
{
    if (n < 1 || n >= short_row_max) return false;
    if (itemsize == sizeof(float)) return n != 2 * lanes;
#if defined(FS_AVX512_FLOAT_LOOPS)
    (void)take_log;
    return true;
#else
    return n < (take_log ? 16 : 24);
#endif
}

#if defined(FS_AVX512_FLOAT_LOOPS)
// r[i] = row i of a 16 x 16 block of floats -> r[j] = its column j
inline void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
        t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xdd);
        t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
        t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
        r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
        r[4 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88);
        r[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xdd);
    }
}

// the same for an 8 x 8 block of doubles
inline void transpose8(__m512d r[8])
{
    __m512d t[8], u[8];
    for (int i = 0; i < 4; i++) {   // t[2i + h]: rows 2i, 2i + 1, columns 2L + h
        t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {   // u[4i + ...]: rows 4i to 4i + 3
        u[4 * i] = _mm512_shuffle_f64x2(t[4 * i], t[4 * i + 2], 0x88);       // columns 0, 4
        u[4 * i + 1] = _mm512_shuffle_f64x2(t[4 * i], t[4 * i + 2], 0xdd);   // 2, 6
        u[4 * i + 2] = _mm512_shuffle_f64x2(t[4 * i + 1], t[4 * i + 3], 0x88);   // 1, 5
        u[4 * i + 3] = _mm512_shuffle_f64x2(t[4 * i + 1], t[4 * i + 3], 0xdd);   // 3, 7
    }
    const int column[4] = {0, 2, 1, 3};
    for (int q = 0; q < 4; q++) {
        r[column[q]] = _mm512_shuffle_f64x2(u[q], u[4 + q], 0x88);
        r[column[q] + 4] = _mm512_shuffle_f64x2(u[q], u[4 + q], 0xdd);
    }
}
#endif

// The short rows' tile: tile[j * w + r] = x[r][j] for w rows of n
// elements, sx bytes apart, and back.  In AVX-512 builds, float rows go 16
// at a time through registers (transpose16), double rows 8 (transpose8):
// the element by element copies took half of the time of rows of 10 to 37
// floats, and their speed changed by 15-20 % with where the tile lay
// relative to x.
template <class T>
inline void rows_to_tile(const T *x, ptrdiff_t sx, ptrdiff_t w, ptrdiff_t n, T *tile)
{
    ptrdiff_t r = 0;
#if defined(FS_AVX512_FLOAT_LOOPS)
    if constexpr (std::is_same<T, float>::value) {
        for (; r + 16 <= w; r += 16) {
            for (ptrdiff_t j0 = 0; j0 < n; j0 += 16) {
                __mmask16 k = lanes_left(j0, n);
                __m512 v[16];
                for (int i = 0; i < 16; i++)
                    v[i] = _mm512_maskz_loadu_ps(k, (const T *)((const char *)x + (r + i) * sx) + j0);
                transpose16(v);
                for (ptrdiff_t j = j0; j < n && j < j0 + 16; j++)
                    _mm512_storeu_ps(tile + j * w + r, v[j - j0]);
            }
        }
    }
    if constexpr (std::is_same<T, double>::value) {
        for (; r + 8 <= w; r += 8) {
            for (ptrdiff_t j0 = 0; j0 < n; j0 += 8) {
                __mmask8 k = lanes_left8(j0, n);
                __m512d v[8];
                for (int i = 0; i < 8; i++)
                    v[i] = _mm512_maskz_loadu_pd(k, (const T *)((const char *)x + (r + i) * sx) + j0);
                transpose8(v);
                for (ptrdiff_t j = j0; j < n && j < j0 + 8; j++)
                    _mm512_storeu_pd(tile + j * w + r, v[j - j0]);
            }
        }
    }
#endif
    for (; r < w; r++) {
        const T *xr = (const T *)((const char *)x + r * sx);
        for (ptrdiff_t j = 0; j < n; j++) tile[j * w + r] = xr[j];
    }
}

template <class T>
inline void tile_to_rows(const T *tile, ptrdiff_t w, ptrdiff_t n, T *y, ptrdiff_t sy)
{
    ptrdiff_t r = 0;
#if defined(FS_AVX512_FLOAT_LOOPS)
    if constexpr (std::is_same<T, float>::value) {
        for (; r + 16 <= w; r += 16) {
            for (ptrdiff_t j0 = 0; j0 < n; j0 += 16) {
                __mmask16 k = lanes_left(j0, n);
                __m512 v[16];
                for (ptrdiff_t j = j0; j < j0 + 16; j++)
                    v[j - j0] = j < n ? _mm512_loadu_ps(tile + j * w + r) : _mm512_setzero_ps();
                transpose16(v);
                for (int i = 0; i < 16; i++)
                    _mm512_mask_storeu_ps((T *)((char *)y + (r + i) * sy) + j0, k, v[i]);
            }
        }
    }
    if constexpr (std::is_same<T, double>::value) {
        for (; r + 8 <= w; r += 8) {
            for (ptrdiff_t j0 = 0; j0 < n; j0 += 8) {
                __mmask8 k = lanes_left8(j0, n);
                __m512d v[8];
                for (ptrdiff_t j = j0; j < j0 + 8; j++)
                    v[j - j0] = j < n ? _mm512_loadu_pd(tile + j * w + r) : _mm512_setzero_pd();
                transpose8(v);
                for (int i = 0; i < 8; i++)
                    _mm512_mask_storeu_pd((T *)((char *)y + (r + i) * sy) + j0, k, v[i]);
            }
        }
    }
#endif
    for (; r < w; r++) {
        T *yr = (T *)((char *)y + r * sy);
        for (ptrdiff_t j = 0; j < n; j++) yr[j] = tile[j * w + r];
    }
}

// One short row as a column of the tile computes it: the same operations
// in the same order, so the same bits (but a NaN's sign), without the
// tile.  For the rows of a call (or its last tile) that are fewer than a
// vector holds, where the tile's column loops would run their scalar ends
// once per element: one row of 37 doubles took 1.1-1.5 us there against
// 0.5 in the row kernel.  Here the exps are computed along the row,
// vectorised, and summed in order after.
template <class T> inline void short_row_alone(const T *x, T *y, ptrdiff_t n, int take_log)
{
    assert(n > 0 && n < short_row_max);
    using Sum = typename FloatTraits<T>::ColumnSum;
    T m = -std::numeric_limits<T>::infinity(), e[short_row_max];
    for (ptrdiff_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
    FS_OMP_SIMD
    for (ptrdiff_t j = 0; j < n; j++) e[j] = exp_diff(x[j], m);
    double sum = 0.0, carry = 0.0, tail = 0.0, tcarry = 0.0, ones = 0.0;
    for (ptrdiff_t j = 0; j < n; j++) {
        if (take_log) {
            const double one = x[j] == m ? 1.0 : 0.0;
            Sum::add(tail, tcarry, (double)e[j] - one);
            ones += one;
        } else {
            Sum::add(sum, carry, (double)e[j]);
        }
    }
    column_finish<T>(sum, carry, tail, tcarry, ones, m, [&](ptrdiff_t j) { return x[j]; }, n,
                     take_log);
    if (take_log) {
        logs_of_sums(&sum, 1);
        FS_OMP_SIMD
        for (ptrdiff_t j = 0; j < n; j++) y[j] = (T)(((double)x[j] - (double)m) - sum);
    } else {
        FS_OMP_SIMD
        for (ptrdiff_t j = 0; j < n; j++) y[j] = (T)scaled((double)e[j], sum, tail);
    }
}

// softmax (or log_softmax) of `rows` rows of n < short_row_max elements,
// the first at x (y), the next sx (sy) bytes further each; y may be x
template <class T>
inline void softmax_short_rows(const T *x, ptrdiff_t sx, T *y, ptrdiff_t sy, ptrdiff_t rows,
                               ptrdiff_t n, int take_log)
{
    alignas(64) T tile[short_tile_bytes / sizeof(T)];
    // rows per tile: what fits, in whole vectors of 64 bytes (a partial
    // last vector of columns cost 5-10 % on rows of 37)
    constexpr ptrdiff_t per_vector = 64 / sizeof(T);
    ptrdiff_t w = (ptrdiff_t)(short_tile_bytes / sizeof(T)) / n / per_vector * per_vector;
    w = w < cols ? w : cols;
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += w) {
        const ptrdiff_t wr = rows - r0 < w ? rows - r0 : w;
        if (wr < per_vector) {   // fewer rows than an AVX-512 vector has lanes
            for (ptrdiff_t r = r0; r < rows; r++)
                short_row_alone((const T *)((const char *)x + r * sx), (T *)((char *)y + r * sy),
                                n, take_log);
            return;
        }
        rows_to_tile((const T *)((const char *)x + r0 * sx), sx, wr, n, tile);
        softmax_cols_tile(tile, wr, tile, wr, n, wr, take_log);
        tile_to_rows(tile, wr, n, (T *)((char *)y + r0 * sy), sy);
    }
}

}  // namespace
// ------------------------------------------------------------------
// Half precision: float16 and bfloat16 rows, read and written here
// ------------------------------------------------------------------
// The kernels compute in float: a row is loaded into a float buffer on the
// stack (a chunk of it at a time for a long row), computed as a float row
// is, and stored back rounded to nearest even, as NumPy's casts round.  No
// float copy of an input or of a result is ever made.  The conversions
// below are integer and float arithmetic that every instruction set
// vectorises (no _Float16: the baseline and MSVC builds lack it); AVX-512
// builds convert float16 rows in bulk with its instructions (load_half).

struct Float16 {
    static float load(std::uint16_t h)
    {
        std::uint32_t sign = (std::uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu;
        // em << 13 read as a float is the value times 2^-112 (the exponent
        // biases differ by 127 - 15): exact for normal and subnormal halves
        std::uint32_t bits = bits_of(from_bits<float>(em << 13) * 0x1p112f);
        bits = em >= 0x7c00u ? (em << 13) | 0x7f800000u : bits;  // inf, NaN
        return from_bits<float>(bits | sign);
    }
    static std::uint16_t store(float f)
    {
        std::uint32_t x = bits_of(f), sign = (x >> 16) & 0x8000u;
        x &= 0x7fffffffu;
        std::uint32_t inf_nan = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
        // below 2^-14 (a subnormal half): adding 0.5 rounds to the half's
        // last bit, 2^-24, to nearest even; its low bits are the half's
        const float magic = 0.5f;
        std::uint32_t subnormal = bits_of(from_bits<float>(x) + magic) - bits_of(magic);
        // normal: rebias the exponent, round the 13 dropped bits to nearest
        // even (a carry may reach the exponent: 65520 and up round to inf)
        std::uint32_t normal = (x + 0xc8000fffu + ((x >> 13) & 1u)) >> 13;
        std::uint32_t h = x >= 0x47800000u ? inf_nan : x < 0x38800000u ? subnormal : normal;
        return (std::uint16_t)(h | sign);
    }
};

struct BFloat16 {
    static float load(std::uint16_t h) { return from_bits<float>((std::uint32_t)h << 16); }
    static std::uint16_t store(float f)
    {
        std::uint32_t x = bits_of(f);
        std::uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;  // to nearest even
        std::uint32_t quiet_nan = (x >> 16) | 0x40u;
        return (std::uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
    }
};

// Rows up to this long are loaded whole; longer ones a chunk at a time.
constexpr ptrdiff_t half_chunk = 2048;

// A row's conversions in bulk.  AVX-512 converts float16 in one
// instruction each way (vcvtph2ps, and vcvtps2ph rounding to nearest even,
// the same results as Float16's arithmetic, which the tests check on every
// value and tie); other builds, and bfloat16, use the arithmetic above.
template <class H> inline void load_half(const std::uint16_t *x, float *buf, ptrdiff_t n)
{
    ptrdiff_t j = 0;
#if defined(__AVX512F__)
    if constexpr (std::is_same<H, Float16>::value)
        for (; j + 16 <= n; j += 16)
            _mm512_storeu_ps(buf + j, _mm512_cvtph_ps(
                                          _mm256_loadu_si256((const __m256i *)(x + j))));
#endif
    FS_OMP_SIMD
    for (ptrdiff_t k = j; k < n; k++) buf[k] = H::load(x[k]);
}

template <class H> inline void store_half(const float *buf, std::uint16_t *y, ptrdiff_t n)
{
    ptrdiff_t j = 0;
#if defined(__AVX512F__)
    if constexpr (std::is_same<H, Float16>::value)
        for (; j + 16 <= n; j += 16)
            _mm256_storeu_si256((__m256i *)(y + j),
                                _mm512_cvtps_ph(_mm512_loadu_ps(buf + j),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
    FS_OMP_SIMD
    for (ptrdiff_t k = j; k < n; k++) y[k] = H::store(buf[k]);
}

// logsumexp's rows: a chunk of a row (x, its factors b or null, and the
// mask of where= or null; each from the chunk's start) loaded into xs and
// ws, as float.  Without b, xs is -inf where the mask leaves an entry out
// and ws is not used (w() is null); with b, ws holds b's factors, 0 where
// the mask leaves an entry out.  So the float kernels' weighted primitives
// (row_max_weighted and the like) read a chunk as they read a float row.
struct HalfChunk {
    float xs[half_chunk], ws[half_chunk];
    const float *w(const std::uint16_t *b) const { return b ? ws : nullptr; }
    template <class H>
    void load(const std::uint16_t *x, const std::uint16_t *b, const unsigned char *mask,
              ptrdiff_t length)
    {
        const float minus_inf = -std::numeric_limits<float>::infinity();
        load_half<H>(x, xs, length);
        if (b) load_half<H>(b, ws, length);
        if (mask) row_masked_copy(b ? ws : xs, mask, 1, b ? 0.0f : minus_inf, b ? ws : xs, length);
    }
};

// f(chunk, start, length) for each chunk of a row of n, loaded in turn
template <class H, class F>
inline void each_half_chunk(const std::uint16_t *x, const std::uint16_t *b,
                            const unsigned char *mask, ptrdiff_t n, F f)
{
    HalfChunk chunk;
    for (ptrdiff_t start = 0; start < n; start += half_chunk) {
        ptrdiff_t length = std::min(half_chunk, n - start);
        chunk.load<H>(x + start, b ? b + start : b, mask ? mask + start : mask, length);
        f(chunk, start, length);
    }
}

// The max of a long row (over the entries of nonzero factor: all, without
// b or mask), chunk by chunk.
template <class H>
inline float half_row_max(const std::uint16_t *x, const std::uint16_t *b,
                          const unsigned char *mask, ptrdiff_t n)
{
    float m = -std::numeric_limits<float>::infinity();
    each_half_chunk<H>(x, b, mask, n, [&](const HalfChunk &c, ptrdiff_t, ptrdiff_t length) {
        float chunk_max = row_max_weighted(c.xs, c.w(b), length);
        m = chunk_max > m ? chunk_max : m;
    });
    return m;
}

// S = sum of b exp(x - shift) (b: 1 if null) over the entries a mask keeps
// (row_weighted_exp_sum), chunk by chunk, compensated across the chunks as
// sum_of_parts adds them; lo as for row_exp_sum.
template <class H>
inline double half_row_exp_sum(const std::uint16_t *x, const std::uint16_t *b,
                               const unsigned char *mask, float shift, ptrdiff_t n,
                               double *lo = nullptr)
{
    PartsSum sum;
    each_half_chunk<H>(x, b, mask, n, [&](const HalfChunk &c, ptrdiff_t, ptrdiff_t length) {
        double part_lo = 0.0;
        double part = row_weighted_exp_sum(c.xs, c.w(b), shift, length, &part_lo);
        sum.add(part, part_lo);
    });
    return sum.value(lo);
}

// S of a row whose max is +inf (row_sum_at_inf: its terms are 0, +-inf
// or NaN, whose sum does not depend on the order)
template <class H>
inline double half_row_sum_at_inf(const std::uint16_t *x, const std::uint16_t *b,
                                  const unsigned char *mask, ptrdiff_t n)
{
    double total = 0.0;
    each_half_chunk<H>(x, b, mask, n, [&](const HalfChunk &c, ptrdiff_t, ptrdiff_t length) {
        total += row_sum_at_inf(c.xs, c.w(b), length);
    });
    return total;
}

// log |S| of half_row_exp_sum's S, shift the row's (row_log_weighted_sum)
template <class H>
inline double half_row_log_sum(const std::uint16_t *x, const std::uint16_t *b,
                               const unsigned char *mask, float shift, double S, ptrdiff_t n)
{
    auto value = [&](ptrdiff_t j) {
        return !b && mask && !mask[j] ? -std::numeric_limits<float>::infinity() : H::load(x[j]);
    };
    if (!b) return log_sum_of<float>(value, shift, (const float *)nullptr, S, n);
    return log_weighted_sum(S, [&](double *tail, double *at_max) {  // (chunk by chunk)
        each_half_chunk<H>(x, b, mask, n, [&](const HalfChunk &c, ptrdiff_t, ptrdiff_t length) {
            weighted_log_parts<float>([&](ptrdiff_t j) { return c.xs[j]; },
                                      [&](ptrdiff_t j) { return (double)c.ws[j]; }, shift,
                                      length, tail, at_max);
        });
    });
}

// logsumexp of a float16 / bfloat16 row with factors b (null: 1) over the
// entries a mask keeps (null: all), as the float kernel computes a float
// row (logsumexp_row); in float, rounded by the caller.
template <class H>
inline float half_logsumexp_row(const std::uint16_t *x, const std::uint16_t *b,
                                const unsigned char *mask, ptrdiff_t n, float *sign)
{
    float m = half_row_max<H>(x, b, mask, n);
    if (m == std::numeric_limits<float>::infinity())
        return lse_at_inf(half_row_sum_at_inf<H>(x, b, mask, n), sign);
    float shift = m == -std::numeric_limits<float>::infinity() ? 0.0f : m;
    double S = half_row_exp_sum<H>(x, b, mask, shift, n);
    return lse_finish(half_row_log_sum<H>(x, b, mask, shift, S, n), shift, S, sign);
}

// The last pass of softmax (log_softmax if take_log) over a long row, or
// any range of it, given the row's max m, S = sum of exp(x - m) and, for
// log_softmax, log_S = log S (half_row_log_sum): each chunk's terms again
// (the same values as in the sum), scaled, rounded to y (y may be x).
template <class H>
inline void half_softmax_last_pass(const std::uint16_t *x, std::uint16_t *y, ptrdiff_t n,
                                   float m, double S, double log_S, bool take_log)
{
    float buf[half_chunk];
    for (ptrdiff_t start = 0; start < n; start += half_chunk) {
        ptrdiff_t length = std::min(half_chunk, n - start);
        load_half<H>(x + start, buf, length);
        if (take_log) {
            row_shift(buf, m, log_S, buf, length);
        } else {
            row_exp_sum(buf, m, buf, (float *)nullptr, length);
            row_scale_div(buf, 1.0, S, 0.0, buf, length);
        }
        store_half<H>(buf, y + start, length);
    }
}

// softmax (log_softmax if take_log) of a float16 / bfloat16 row into y (y
// may be x): the passes of a float row, on the float values; a long row's
// max, sum and last pass chunk by chunk.
template <class H>
inline void half_softmax_row(const std::uint16_t *x, std::uint16_t *y, ptrdiff_t n,
                             bool take_log)
{
    if (n <= half_chunk) {
        float buf[half_chunk];
        load_half<H>(x, buf, n);
        float m = row_max(buf, n);
        double S = row_exp_sum(buf, m, take_log ? (float *)nullptr : buf, (float *)nullptr, n);
        if (take_log)
            row_shift(buf, m, row_log_sum(buf, m, (const float *)nullptr, S, n), buf, n);
        else
            row_scale_div(buf, 1.0, S, 0.0, buf, n);
        store_half<H>(buf, y, n);
        return;
    }
    float m = half_row_max<H>(x, nullptr, nullptr, n);
    double S = half_row_exp_sum<H>(x, nullptr, nullptr, m, n);
    double log_S = take_log ? half_row_log_sum<H>(x, nullptr, nullptr, m, S, n) : 0.0;
    half_softmax_last_pass<H>(x, y, n, m, S, log_S, take_log);
}

// softmax_jvp's product s * (v - <s, v>) (a = s, b = v), or if log_vjp
// log_softmax_vjp's g - exp(logp) * sum(g) (a = logp, b = g), of float16 /
// bfloat16 rows into y (y may be a or b).  A long row's reduction (<s, v>,
// or sum(g); lo as for row_exp_sum) chunk by chunk, compensated, then its
// update chunk by chunk: any range of the row, for a split row's chunks.
template <class H>
inline double half_product_reduce(const std::uint16_t *a, const std::uint16_t *b, ptrdiff_t n,
                                  bool log_vjp, double *lo)
{
    float abuf[half_chunk], bbuf[half_chunk];
    PartsSum sum;
    for (ptrdiff_t start = 0; start < n; start += half_chunk) {
        ptrdiff_t length = std::min(half_chunk, n - start);
        load_half<H>(b + start, bbuf, length);
        double part_lo = 0.0, part;
        if (log_vjp) {
            part = row_sum(bbuf, length, &part_lo);
        } else {
            load_half<H>(a + start, abuf, length);
            part = row_dot(abuf, bbuf, length, &part_lo);
        }
        sum.add(part, part_lo);
    }
    return sum.value(lo);
}

template <class H>
inline void half_product_update(const std::uint16_t *a, const std::uint16_t *b,
                                std::uint16_t *y, ptrdiff_t n, double total, bool log_vjp)
{
    float abuf[half_chunk], bbuf[half_chunk];
    for (ptrdiff_t start = 0; start < n; start += half_chunk) {
        ptrdiff_t length = std::min(half_chunk, n - start);
        load_half<H>(a + start, abuf, length);
        load_half<H>(b + start, bbuf, length);
        if (log_vjp)
            row_log_vjp(abuf, bbuf, total, abuf, length);
        else
            row_jvp(abuf, bbuf, total, abuf, length);
        store_half<H>(abuf, y + start, length);
    }
}

template <class H>
inline void half_product_row(const std::uint16_t *a, const std::uint16_t *b, std::uint16_t *y,
                             ptrdiff_t n, bool log_vjp)
{
    if (n <= half_chunk) {  // (one chunk: the row's reduction as a float row's)
        float abuf[half_chunk], bbuf[half_chunk];
        load_half<H>(a, abuf, n);
        load_half<H>(b, bbuf, n);
        double total = log_vjp ? row_sum(bbuf, n) : row_dot(abuf, bbuf, n);
        if (log_vjp)
            row_log_vjp(abuf, bbuf, total, abuf, n);
        else
            row_jvp(abuf, bbuf, total, abuf, n);
        store_half<H>(abuf, y, n);
        return;
    }
    double lo;
    half_product_update<H>(a, b, y, n, half_product_reduce<H>(a, b, n, log_vjp, &lo), log_vjp);
}

// Row i of the Jacobian of a float16 / bfloat16 row s (jacobian_row's
// float products, exact for halves, rounded once)
template <class H>
inline void half_jacobian_row(const std::uint16_t *s, ptrdiff_t i, std::uint16_t *y, ptrdiff_t n)
{
    const float si = H::load(s[i]);
    FS_OMP_SIMD
    for (ptrdiff_t j = 0; j < n; j++) y[j] = H::store(-si * H::load(s[j]));
    y[i] = H::store(si * (1.0f - si));
}

// Cross-entropy on a long float16 / bfloat16 row of logits, a chunk at a
// time (rows up to half_chunk are staged whole and go through the float
// kernel).  The target row is in the logits' format (half), or float
// values (the shared row of label smoothing for class indices), with its
// options applied as it is read (TargetRow: t is then unused).  Each
// function takes any range of the row: a split row's chunks.
struct HalfTarget {
    const std::uint16_t *half;  // (at most one of half and values)
    const float *values;
    TargetRow<float> options;   // (options.t unused)
    bool given() const { return half || values; }
    HalfTarget at(ptrdiff_t start) const
    {
        return {half ? half + start : half, values ? values + start : values,
                options.at(start)};
    }
    // the target row of the chunk at 0 (this at its start), loaded into buf
    template <class H> TargetRow<float> load(float *buf, ptrdiff_t length) const
    {
        if (half) load_half<H>(half, buf, length);
        return {half ? buf : values, options.w, options.keep, options.uniform};
    }
};

// sum of the target row (lo as for row_exp_sum)
template <class H>
inline double half_target_sum(const HalfTarget &target, ptrdiff_t n, double *lo)
{
    float buf[half_chunk];
    PartsSum sum;
    for (ptrdiff_t start = 0; start < n; start += half_chunk) {
        ptrdiff_t length = std::min(half_chunk, n - start);
        double part_lo = 0.0;
        double part = target_sum(target.at(start).load<H>(buf, length), length, &part_lo);
        sum.add(part, part_lo);
    }
    return sum.value(lo);
}

// The last pass: returns the sum of a (x - m) over the target row a (0
// without a target; lo as for row_exp_sum), and writes into g, unless it
// is null, the gradient exp(x - m) num / den - a tscale (with a target;
// without, exp(x - m) num / den as row_scale_div rounds it), minus c_scale
// at entry c (c < 0 or >= n: not in this range), each rounded once.
template <class H>
inline double half_xent_last_pass(const std::uint16_t *x, const HalfTarget &target, float m,
                                  double num, double den, double tscale, ptrdiff_t c,
                                  double c_scale, std::uint16_t *g, ptrdiff_t n, double *lo)
{
    float xbuf[half_chunk], tbuf[half_chunk];
    PartsSum sum;
    for (ptrdiff_t start = 0; start < n; start += half_chunk) {
        ptrdiff_t length = std::min(half_chunk, n - start);
        load_half<H>(x + start, xbuf, length);
        TargetRow<float> a{nullptr, nullptr, 0.0f, 0.0f};
        if (target.given()) {
            a = target.at(start).load<H>(tbuf, length);
            double part_lo = 0.0;
            double part = row_weighted_shifted_sum(a, xbuf, m, length, &part_lo);
            sum.add(part, part_lo);
        }
        if (!g) continue;
        // the terms exp(x - m) again (the same values as in the sum)
        row_exp_sum(xbuf, m, xbuf, (float *)nullptr, length);
        if (target.given())
            row_xent_grad(xbuf, a, num / den, tscale, xbuf, length);
        else
            row_scale_div(xbuf, num, den, 0.0, xbuf, length);
        if (c >= start && c < start + length)
            xbuf[c - start] = (float)((double)xbuf[c - start] - c_scale);
        store_half<H>(xbuf, g + start, length);
    }
    return sum.value(lo);
}

}  // namespace fastsoftmax

#endif  // FASTSOFTMAX_VMATH_HPP
