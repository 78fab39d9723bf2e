/* sa3_nocuda.c - the device query of cuda/common/ in a build without nvcc (setup.py adds
 * this file only then; no family is compiled either, so every call goes to SDPA). */
#include <stdio.h>
#include "sa3_device.h"

#ifndef SA3_WHY_NO_CUDA
#define SA3_WHY_NO_CUDA "built without CUDA"
#endif

sa3_status sa3_cuda_device_facts(int device, sa3_device_facts *facts, char *name, size_t name_len, char *err,
                                 size_t err_len) {
    (void)device;
    (void)facts;
    (void)name;
    (void)name_len;
    if (err && err_len) snprintf(err, err_len, "no CUDA kernels in this build: %s", SA3_WHY_NO_CUDA);
    return SA3_ERR_NO_CUDA;
}
