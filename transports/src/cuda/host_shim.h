// The CUDA built-ins kernels.cu uses, for a host C++ build of it (tests only: see
// host_check.rs). The tests launch a kernel by calling dmsc_host_set_thread for each
// (block, thread) of a small grid in turn and then calling the kernel function, so the
// kernels' grid-stride loops run exactly as they would on a device, one thread at a time.
#include <string.h>

#define __global__ __attribute__((visibility("default")))
#define __device__
#define __forceinline__ inline
#define __constant__ static const

struct dmsc_dim3 {
    unsigned int x, y, z;
};
static dmsc_dim3 threadIdx, blockIdx, blockDim, gridDim;

extern "C" __attribute__((visibility("default"))) void dmsc_host_set_thread(
    unsigned int grid, unsigned int block, unsigned int b, unsigned int t) {
    gridDim.x = grid;
    blockDim.x = block;
    blockIdx.x = b;
    threadIdx.x = t;
    gridDim.y = gridDim.z = blockDim.y = blockDim.z = 1;
    blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0;
}

static inline float __uint_as_float(unsigned int u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    return u;
}
