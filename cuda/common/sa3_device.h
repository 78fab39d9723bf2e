/* sa3_device.h - device facts, the one CUDA call csrc/ makes outside a family's launch
 * (cuda/common/sa3_device.cu; in a build without nvcc, csrc/sa3_nocuda.c says why not). */
#ifndef SA3_DEVICE_H
#define SA3_DEVICE_H

#include <stddef.h>
#include "sa3_family.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fill *facts (and name, when name_len > 0) for CUDA device `device`. Returns SA3_OK, or a
 * status with a one-line reason in err[err_len]. csrc/ caches the result per device. */
sa3_status sa3_cuda_device_facts(int device, sa3_device_facts *facts, char *name, size_t name_len, char *err,
                                 size_t err_len);

#ifdef __cplusplus
}
#endif
#endif /* SA3_DEVICE_H */
