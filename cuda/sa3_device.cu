/* sa3_device.cu - device facts and "was a kernel compiled that runs here?". */
#include <string.h>

#include "sa3_cuda_common.cuh"
#include "sa3_launch.h"

#ifdef SA3_HAVE_BUILD_CONFIG
#include "sa3_build_config.h" /* written by setup.py: SA3_CUDA_ARCH_LIST */
#endif
#ifndef SA3_CUDA_ARCH_LIST
#define SA3_CUDA_ARCH_LIST 0
#endif

/* setup.py passes the compiled targets as 10*arch + (1 if arch-specific 'a' target):
 * 800 = sm_80, 901 = sm_90a. A plain sm_XY cubin runs on the same major with minor >= Y;
 * an 'a' cubin runs only on exactly that arch. */
static const int sa3_compiled_targets[] = {SA3_CUDA_ARCH_LIST};

extern "C" int sa3_mma_supports_arch(int sm_arch) {
    for (size_t i = 0; i < sizeof sa3_compiled_targets / sizeof sa3_compiled_targets[0]; ++i) {
        int t = sa3_compiled_targets[i];
        if (t == 0) continue;
        int arch = t / 10, specific = t % 10;
        if (specific ? (arch == sm_arch) : (arch / 10 == sm_arch / 10 && sm_arch >= arch)) return 1;
    }
    return 0;
}

extern "C" sa3_status sa3_cuda_device_facts(int device, int *sm_arch, int *sm_count, int *smem_optin,
                                            char *name, size_t name_len, char *err, size_t err_len) {
    int count = 0;
    SA3_CUDA_TRY(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (device < 0 || device >= count) {
        snprintf(err, err_len, "CUDA device %d does not exist (%d visible)", device, count);
        return SA3_ERR_VALUE;
    }
    int major = 0, minor = 0;
    SA3_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
    SA3_CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
    SA3_CUDA_TRY(cudaDeviceGetAttribute(sm_count, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    SA3_CUDA_TRY(cudaDeviceGetAttribute(smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                 "cudaDeviceGetAttribute");
    *sm_arch = major * 10 + minor;
    if (name && name_len) {
        cudaDeviceProp prop;
        SA3_CUDA_TRY(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
        snprintf(name, name_len, "%s", prop.name);
    }
    return SA3_OK;
}
