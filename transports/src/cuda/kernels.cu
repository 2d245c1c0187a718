// dmsc's device kernels: element-wise reductions for every data type and operator, the
// scalings that finish an average and start a premul_sum, and CRC32C of byte chunks.
//
// One source serves two builds:
//  - NVRTC compiles it at run time for the GPU (transports/src/cuda/nvrtc.rs);
//  - the tests compile it as host C++ with host_shim.h, which defines the CUDA built-ins it
//    uses (__global__, threadIdx, __float_as_uint, ...), and compare its results with
//    dmsc-core's host reductions (transports/src/cuda/host_check.rs).
// It therefore includes no header: NVRTC has none by default, and all it needs is spelled out.
//
// Semantics follow dmsc-core's host kernels (core/src/reduce/kernels.rs) exactly:
//  - integer sums and products wrap (computed in the unsigned type of the same width);
//  - float min/max propagate NaN (a select, no arithmetic);
//  - float16 and bfloat16 widen to float32, combine there, and round back to nearest-even
//    (the `half` crate's conversions, re-written below from the IEEE 754 bit layouts);
//  - avg is a sum followed by dmsc_scale_div_*; premul_sum multiplies each input by the
//    rank's factor (dmsc_scale_mul_*) before the sums.
// Every kernel walks its elements with a grid-stride loop, so any launch shape covers any count.
// Reference: CUDA C++ Programming Guide, "Built-in Variables" and "Type Casting Intrinsics";
// CRC32C: the Castagnoli polynomial, reflected (0x82F63B78), as in RFC 3720 appendix B.4.

typedef unsigned short dmsc_h16;

#define DMSC_DEV static __device__ __forceinline__

// The first index of this thread and the stride of the grid.
#define DMSC_FOR_EACH(i, n)                                                                  \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;    \
         i < (n); i += (unsigned long long)blockDim.x * gridDim.x)

// ---- float16 and bfloat16 conversions (bit-exact with the `half` crate) ----

DMSC_DEV float dmsc_f16_to_f32(dmsc_h16 h) {
    unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    unsigned int exp = (unsigned int)h & 0x7c00u;
    unsigned int man = (unsigned int)h & 0x03ffu;
    if (exp == 0x7c00u) {
        // Infinity, or NaN with its payload kept and the quiet bit set.
        return __uint_as_float(sign | 0x7f800000u | (man ? 0x00400000u | (man << 13) : 0u));
    }
    if (exp == 0) {
        // Zero or subnormal: man * 2^-24, exact in float32.
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return __uint_as_float(sign | (((exp >> 10) + 112u) << 23) | (man << 13));
}

DMSC_DEV dmsc_h16 dmsc_f32_to_f16(float f) {
    unsigned int x = __float_as_uint(f);
    unsigned int sign = (x & 0x80000000u) >> 16;
    unsigned int exp = x & 0x7f800000u;
    unsigned int man = x & 0x007fffffu;
    if (exp == 0x7f800000u) {
        unsigned int nan_bit = man ? 0x0200u : 0u;
        return (dmsc_h16)(sign | 0x7c00u | nan_bit | (man >> 13));
    }
    int half_exp = (int)(exp >> 23) - 127 + 15;
    if (half_exp >= 0x1f) {
        return (dmsc_h16)(sign | 0x7c00u);
    }
    if (half_exp <= 0) {
        if (14 - half_exp > 24) {
            return (dmsc_h16)sign;
        }
        unsigned int m = man | 0x00800000u;
        unsigned int half_man = m >> (14 - half_exp);
        unsigned int round_bit = 1u << (13 - half_exp);
        if ((m & round_bit) != 0 && (m & (3u * round_bit - 1u)) != 0) {
            half_man += 1;
        }
        return (dmsc_h16)(sign | half_man);
    }
    unsigned int out = sign | ((unsigned int)half_exp << 10) | (man >> 13);
    unsigned int round_bit = 0x00001000u;
    if ((man & round_bit) != 0 && (man & (3u * round_bit - 1u)) != 0) {
        out += 1;
    }
    return (dmsc_h16)out;
}

DMSC_DEV float dmsc_bf16_to_f32(dmsc_h16 h) { return __uint_as_float((unsigned int)h << 16); }

DMSC_DEV dmsc_h16 dmsc_f32_to_bf16(float f) {
    unsigned int x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (dmsc_h16)((x >> 16) | 0x0040u);
    }
    unsigned int round_bit = 0x00008000u;
    if ((x & round_bit) != 0 && (x & (3u * round_bit - 1u)) != 0) {
        return (dmsc_h16)((x >> 16) + 1u);
    }
    return (dmsc_h16)(x >> 16);
}

// ---- the operators ----

// Integers: T is the type, U the unsigned type of its width (wrapping arithmetic).
#define DMSC_INT_OPS(T, U, NAME)                                                              \
    DMSC_DEV T dmsc_sum_##NAME(T a, T b) { return (T)(U)((U)a + (U)b); }                      \
    DMSC_DEV T dmsc_prod_##NAME(T a, T b) { return (T)(U)((U)a * (U)b); }                     \
    DMSC_DEV T dmsc_min_##NAME(T a, T b) { return b < a ? b : a; }                            \
    DMSC_DEV T dmsc_max_##NAME(T a, T b) { return a < b ? b : a; }                            \
    DMSC_DEV T dmsc_band_##NAME(T a, T b) { return (T)(a & b); }                              \
    DMSC_DEV T dmsc_bor_##NAME(T a, T b) { return (T)(a | b); }                               \
    DMSC_DEV T dmsc_bxor_##NAME(T a, T b) { return (T)(a ^ b); }

DMSC_INT_OPS(signed char, unsigned char, i8)
DMSC_INT_OPS(unsigned char, unsigned char, u8)
DMSC_INT_OPS(int, unsigned int, i32)
DMSC_INT_OPS(unsigned int, unsigned int, u32)
DMSC_INT_OPS(long long, unsigned long long, i64)
DMSC_INT_OPS(unsigned long long, unsigned long long, u64)

// Floats: min/max select the NaN operand when there is one (a NaN `a` wins; a NaN `b` is
// picked because neither comparison holds), as the host kernels do.
#define DMSC_FLOAT_OPS(T, NAME)                                                               \
    DMSC_DEV T dmsc_sum_##NAME(T a, T b) { return a + b; }                                    \
    DMSC_DEV T dmsc_prod_##NAME(T a, T b) { return a * b; }                                   \
    DMSC_DEV T dmsc_min_##NAME(T a, T b) { return (a < b || a != a) ? a : b; }                \
    DMSC_DEV T dmsc_max_##NAME(T a, T b) { return (a > b || a != a) ? a : b; }

DMSC_FLOAT_OPS(float, f32)
DMSC_FLOAT_OPS(double, f64)

// ---- element loads and stores: halves widen to float32 ----

#define DMSC_PLAIN_IO(T, NAME)                                                                \
    typedef T dmsc_store_##NAME;                                                              \
    typedef T dmsc_math_##NAME;                                                               \
    DMSC_DEV T dmsc_load_##NAME(T v) { return v; }                                            \
    DMSC_DEV T dmsc_store_to_##NAME(T v) { return v; }

DMSC_PLAIN_IO(signed char, i8)
DMSC_PLAIN_IO(unsigned char, u8)
DMSC_PLAIN_IO(int, i32)
DMSC_PLAIN_IO(unsigned int, u32)
DMSC_PLAIN_IO(long long, i64)
DMSC_PLAIN_IO(unsigned long long, u64)
DMSC_PLAIN_IO(float, f32)
DMSC_PLAIN_IO(double, f64)

typedef dmsc_h16 dmsc_store_f16;
typedef float dmsc_math_f16;
DMSC_DEV float dmsc_load_f16(dmsc_h16 v) { return dmsc_f16_to_f32(v); }
DMSC_DEV dmsc_h16 dmsc_store_to_f16(float v) { return dmsc_f32_to_f16(v); }
typedef dmsc_h16 dmsc_store_bf16;
typedef float dmsc_math_bf16;
DMSC_DEV float dmsc_load_bf16(dmsc_h16 v) { return dmsc_bf16_to_f32(v); }
DMSC_DEV dmsc_h16 dmsc_store_to_bf16(float v) { return dmsc_f32_to_bf16(v); }

// ---- the kernels ----

// dst[i] = a[i] OP b[i]; dst may be a (in place).
#define DMSC_REDUCE(OP, NAME, MATH)                                                           \
    extern "C" __global__ void dmsc_reduce_##OP##_##NAME(dmsc_store_##NAME* dst,              \
                                                        const dmsc_store_##NAME* a,           \
                                                        const dmsc_store_##NAME* b,           \
                                                        unsigned long long n) {               \
        DMSC_FOR_EACH(i, n) {                                                                 \
            dst[i] = dmsc_store_to_##NAME(                                                    \
                dmsc_##OP##_##MATH(dmsc_load_##NAME(a[i]), dmsc_load_##NAME(b[i])));          \
        }                                                                                     \
    }

// dst[i] = dst[i] / divisor (integers truncate toward zero).
#define DMSC_SCALE_DIV(NAME)                                                                  \
    extern "C" __global__ void dmsc_scale_div_##NAME(dmsc_store_##NAME* dst,                  \
                                                    unsigned long long n,                     \
                                                    unsigned long long divisor) {             \
        dmsc_math_##NAME d = (dmsc_math_##NAME)divisor;                                       \
        DMSC_FOR_EACH(i, n) { dst[i] = dmsc_store_to_##NAME(dmsc_load_##NAME(dst[i]) / d); }  \
    }

// Floats: dst[i] = src[i] * (factor in the type's math precision); `whole` is unused.
#define DMSC_SCALE_MUL_FLOAT(NAME)                                                            \
    extern "C" __global__ void dmsc_scale_mul_##NAME(dmsc_store_##NAME* dst,                  \
                                                    const dmsc_store_##NAME* src,             \
                                                    unsigned long long n, double factor,      \
                                                    long long whole) {                        \
        (void)whole;                                                                          \
        dmsc_math_##NAME f = (dmsc_math_##NAME)factor;                                        \
        DMSC_FOR_EACH(i, n) { dst[i] = dmsc_store_to_##NAME(dmsc_load_##NAME(src[i]) * f); }  \
    }

// Integers: dst[i] = src[i] * whole, wrapping (the factor truncated to the type's width, as
// Rust's `as` does); `factor` is unused.
#define DMSC_SCALE_MUL_INT(T, NAME)                                                           \
    extern "C" __global__ void dmsc_scale_mul_##NAME(T* dst, const T* src,                    \
                                                    unsigned long long n, double factor,      \
                                                    long long whole) {                        \
        (void)factor;                                                                         \
        T f = (T)whole;                                                                       \
        DMSC_FOR_EACH(i, n) { dst[i] = dmsc_prod_##NAME(src[i], f); }                         \
    }

#define DMSC_INT_KERNELS(T, NAME)                                                             \
    DMSC_REDUCE(sum, NAME, NAME)                                                              \
    DMSC_REDUCE(prod, NAME, NAME)                                                             \
    DMSC_REDUCE(min, NAME, NAME)                                                              \
    DMSC_REDUCE(max, NAME, NAME)                                                              \
    DMSC_REDUCE(band, NAME, NAME)                                                             \
    DMSC_REDUCE(bor, NAME, NAME)                                                              \
    DMSC_REDUCE(bxor, NAME, NAME)                                                             \
    DMSC_SCALE_DIV(NAME)                                                                      \
    DMSC_SCALE_MUL_INT(T, NAME)

#define DMSC_FLOAT_KERNELS(NAME, MATH)                                                        \
    DMSC_REDUCE(sum, NAME, MATH)                                                              \
    DMSC_REDUCE(prod, NAME, MATH)                                                             \
    DMSC_REDUCE(min, NAME, MATH)                                                              \
    DMSC_REDUCE(max, NAME, MATH)                                                              \
    DMSC_SCALE_DIV(NAME)                                                                      \
    DMSC_SCALE_MUL_FLOAT(NAME)

DMSC_INT_KERNELS(signed char, i8)
DMSC_INT_KERNELS(unsigned char, u8)
DMSC_INT_KERNELS(int, i32)
DMSC_INT_KERNELS(unsigned int, u32)
DMSC_INT_KERNELS(long long, i64)
DMSC_INT_KERNELS(unsigned long long, u64)
DMSC_FLOAT_KERNELS(f16, f32)
DMSC_FLOAT_KERNELS(bf16, f32)
DMSC_FLOAT_KERNELS(f32, f32)
DMSC_FLOAT_KERNELS(f64, f64)

// ---- CRC32C ----

__constant__ unsigned int dmsc_crc32c_table[256] = {
    0x00000000u, 0xf26b8303u, 0xe13b70f7u, 0x1350f3f4u, 0xc79a971fu, 0x35f1141cu,
    0x26a1e7e8u, 0xd4ca64ebu, 0x8ad958cfu, 0x78b2dbccu, 0x6be22838u, 0x9989ab3bu,
    0x4d43cfd0u, 0xbf284cd3u, 0xac78bf27u, 0x5e133c24u, 0x105ec76fu, 0xe235446cu,
    0xf165b798u, 0x030e349bu, 0xd7c45070u, 0x25afd373u, 0x36ff2087u, 0xc494a384u,
    0x9a879fa0u, 0x68ec1ca3u, 0x7bbcef57u, 0x89d76c54u, 0x5d1d08bfu, 0xaf768bbcu,
    0xbc267848u, 0x4e4dfb4bu, 0x20bd8edeu, 0xd2d60dddu, 0xc186fe29u, 0x33ed7d2au,
    0xe72719c1u, 0x154c9ac2u, 0x061c6936u, 0xf477ea35u, 0xaa64d611u, 0x580f5512u,
    0x4b5fa6e6u, 0xb93425e5u, 0x6dfe410eu, 0x9f95c20du, 0x8cc531f9u, 0x7eaeb2fau,
    0x30e349b1u, 0xc288cab2u, 0xd1d83946u, 0x23b3ba45u, 0xf779deaeu, 0x05125dadu,
    0x1642ae59u, 0xe4292d5au, 0xba3a117eu, 0x4851927du, 0x5b016189u, 0xa96ae28au,
    0x7da08661u, 0x8fcb0562u, 0x9c9bf696u, 0x6ef07595u, 0x417b1dbcu, 0xb3109ebfu,
    0xa0406d4bu, 0x522bee48u, 0x86e18aa3u, 0x748a09a0u, 0x67dafa54u, 0x95b17957u,
    0xcba24573u, 0x39c9c670u, 0x2a993584u, 0xd8f2b687u, 0x0c38d26cu, 0xfe53516fu,
    0xed03a29bu, 0x1f682198u, 0x5125dad3u, 0xa34e59d0u, 0xb01eaa24u, 0x42752927u,
    0x96bf4dccu, 0x64d4cecfu, 0x77843d3bu, 0x85efbe38u, 0xdbfc821cu, 0x2997011fu,
    0x3ac7f2ebu, 0xc8ac71e8u, 0x1c661503u, 0xee0d9600u, 0xfd5d65f4u, 0x0f36e6f7u,
    0x61c69362u, 0x93ad1061u, 0x80fde395u, 0x72966096u, 0xa65c047du, 0x5437877eu,
    0x4767748au, 0xb50cf789u, 0xeb1fcbadu, 0x197448aeu, 0x0a24bb5au, 0xf84f3859u,
    0x2c855cb2u, 0xdeeedfb1u, 0xcdbe2c45u, 0x3fd5af46u, 0x7198540du, 0x83f3d70eu,
    0x90a324fau, 0x62c8a7f9u, 0xb602c312u, 0x44694011u, 0x5739b3e5u, 0xa55230e6u,
    0xfb410cc2u, 0x092a8fc1u, 0x1a7a7c35u, 0xe811ff36u, 0x3cdb9bddu, 0xceb018deu,
    0xdde0eb2au, 0x2f8b6829u, 0x82f63b78u, 0x709db87bu, 0x63cd4b8fu, 0x91a6c88cu,
    0x456cac67u, 0xb7072f64u, 0xa457dc90u, 0x563c5f93u, 0x082f63b7u, 0xfa44e0b4u,
    0xe9141340u, 0x1b7f9043u, 0xcfb5f4a8u, 0x3dde77abu, 0x2e8e845fu, 0xdce5075cu,
    0x92a8fc17u, 0x60c37f14u, 0x73938ce0u, 0x81f80fe3u, 0x55326b08u, 0xa759e80bu,
    0xb4091bffu, 0x466298fcu, 0x1871a4d8u, 0xea1a27dbu, 0xf94ad42fu, 0x0b21572cu,
    0xdfeb33c7u, 0x2d80b0c4u, 0x3ed04330u, 0xccbbc033u, 0xa24bb5a6u, 0x502036a5u,
    0x4370c551u, 0xb11b4652u, 0x65d122b9u, 0x97baa1bau, 0x84ea524eu, 0x7681d14du,
    0x2892ed69u, 0xdaf96e6au, 0xc9a99d9eu, 0x3bc21e9du, 0xef087a76u, 0x1d63f975u,
    0x0e330a81u, 0xfc588982u, 0xb21572c9u, 0x407ef1cau, 0x532e023eu, 0xa145813du,
    0x758fe5d6u, 0x87e466d5u, 0x94b49521u, 0x66df1622u, 0x38cc2a06u, 0xcaa7a905u,
    0xd9f75af1u, 0x2b9cd9f2u, 0xff56bd19u, 0x0d3d3e1au, 0x1e6dcdeeu, 0xec064eedu,
    0xc38d26c4u, 0x31e6a5c7u, 0x22b65633u, 0xd0ddd530u, 0x0417b1dbu, 0xf67c32d8u,
    0xe52cc12cu, 0x1747422fu, 0x49547e0bu, 0xbb3ffd08u, 0xa86f0efcu, 0x5a048dffu,
    0x8ecee914u, 0x7ca56a17u, 0x6ff599e3u, 0x9d9e1ae0u, 0xd3d3e1abu, 0x21b862a8u,
    0x32e8915cu, 0xc083125fu, 0x144976b4u, 0xe622f5b7u, 0xf5720643u, 0x07198540u,
    0x590ab964u, 0xab613a67u, 0xb831c993u, 0x4a5a4a90u, 0x9e902e7bu, 0x6cfbad78u,
    0x7fab5e8cu, 0x8dc0dd8fu, 0xe330a81au, 0x115b2b19u, 0x020bd8edu, 0xf0605beeu,
    0x24aa3f05u, 0xd6c1bc06u, 0xc5914ff2u, 0x37faccf1u, 0x69e9f0d5u, 0x9b8273d6u,
    0x88d28022u, 0x7ab90321u, 0xae7367cau, 0x5c18e4c9u, 0x4f48173du, 0xbd23943eu,
    0xf36e6f75u, 0x0105ec76u, 0x12551f82u, 0xe03e9c81u, 0x34f4f86au, 0xc69f7b69u,
    0xd5cf889du, 0x27a40b9eu, 0x79b737bau, 0x8bdcb4b9u, 0x988c474du, 0x6ae7c44eu,
    0xbe2da0a5u, 0x4c4623a6u, 0x5f16d052u, 0xad7d5351u,
};

// out[c] = CRC32C of bytes [c * chunk, min(n, (c + 1) * chunk)) of src, for every chunk c
// (one thread a chunk). The host combines the chunks' CRCs in order (crc32c_combine).
extern "C" __global__ void dmsc_crc32c_chunks(const unsigned char* src, unsigned long long n,
                                              unsigned long long chunk, unsigned int* out) {
    unsigned long long chunks = (n + chunk - 1) / chunk;
    DMSC_FOR_EACH(c, chunks) {
        unsigned long long begin = c * chunk;
        unsigned long long end = begin + chunk < n ? begin + chunk : n;
        unsigned int crc = 0xffffffffu;
        for (unsigned long long j = begin; j < end; ++j) {
            crc = dmsc_crc32c_table[(crc ^ src[j]) & 0xffu] ^ (crc >> 8);
        }
        out[c] = crc ^ 0xffffffffu;
    }
}
