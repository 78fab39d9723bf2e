/* sa3_device.cu - device facts (see sa3_device.h). */
#include <string.h>

#include "sa3_cuda_common.cuh"
#include "sa3_device.h"

extern "C" sa3_status sa3_cuda_device_facts(int device, sa3_device_facts *facts, char *name, size_t name_len,
                                            char *err, size_t err_len) {
    int count = 0;
    SA3_CUDA_TRY(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (device < 0 || device >= count) {
        snprintf(err, err_len, "CUDA device %d does not exist (%d visible)", device, count);
        return SA3_ERR_VALUE;
    }
    int major = 0, minor = 0;
    SA3_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
    SA3_CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
    SA3_CUDA_TRY(cudaDeviceGetAttribute(&facts->sm_count, cudaDevAttrMultiProcessorCount, device),
                 "cudaDeviceGetAttribute");
    SA3_CUDA_TRY(cudaDeviceGetAttribute(&facts->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
                 "cudaDeviceGetAttribute");
    SA3_CUDA_TRY(cudaDeviceGetAttribute(&facts->smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device),
                 "cudaDeviceGetAttribute");
    facts->sm_arch = major * 10 + minor;
    facts->hw_arch = facts->sm_arch;
    facts->smem_carveout = -1;
    if (name && name_len) {
        cudaDeviceProp prop;
        SA3_CUDA_TRY(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
        snprintf(name, name_len, "%s", prop.name);
    }
    return SA3_OK;
}
