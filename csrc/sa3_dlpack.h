/* sa3_dlpack.h - the part of the DLPack ABI (v1.x) that sageattn3._C consumes.
 *
 * Our own minimal declaration, written from the published protocol so csrc/ needs no
 * third-party header. Only the layout matters: field order and sizes below are those of the
 * DLPack C ABI (enums are stored as 32-bit ints by every exporter we care about, so the
 * device type is declared as int32_t to pin the size on every compiler, MSVC included).
 *
 * How we use it (csrc/sa3_intake.c): `obj.__dlpack__(...)` returns a PyCapsule named
 * "dltensor_versioned" (holding a DLManagedTensorVersioned*) or "dltensor" (holding a
 * DLManagedTensor*). We read the DLTensor during one call and keep the capsule alive as the
 * owner; we never rename the capsule and never call `deleter` ourselves, so the capsule's own
 * destructor (installed by the producer) calls `deleter` when our reference is dropped.
 */
#ifndef SA3_DLPACK_H
#define SA3_DLPACK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Capsule names defined by the Python DLPack protocol. */
#define SA3_DLPACK_CAPSULE_NAME "dltensor"
#define SA3_DLPACK_VERSIONED_CAPSULE_NAME "dltensor_versioned"

/* The newest major version whose struct layout we know; a versioned capsule with a larger
 * major version may have a different layout and must not be read. */
#define SA3_DLPACK_MAJOR_VERSION 1
#define SA3_DLPACK_MINOR_VERSION 0

/* Bits of DLManagedTensorVersioned.flags. */
#define DLPACK_FLAG_BITMASK_READ_ONLY (UINT64_C(1) << 0)  /* consumer must not write */
#define DLPACK_FLAG_BITMASK_IS_COPIED (UINT64_C(1) << 1)  /* producer made a copy */

/* DLDevice.device_type values we recognise (others are carried as plain numbers). */
enum {
    SA3_DL_CPU = 1,
    SA3_DL_CUDA = 2,
    SA3_DL_CUDA_HOST = 3, /* pinned host memory: host-addressable, like CPU */
    SA3_DL_ROCM = 10,
    SA3_DL_CUDA_MANAGED = 13 /* unified memory: device-addressable through CUDA */
};

/* DLDataType.code values. */
enum {
    SA3_DL_INT = 0,
    SA3_DL_UINT = 1,
    SA3_DL_FLOAT = 2,
    SA3_DL_OPAQUE_HANDLE = 3,
    SA3_DL_BFLOAT = 4,
    SA3_DL_COMPLEX = 5,
    SA3_DL_BOOL = 6
};

/* Where the memory lives. Plain values, no ownership. */
typedef struct DLDevice {
    int32_t device_type; /* one of the SA3_DL_* device values (C enum DLDeviceType in the spec) */
    int32_t device_id;   /* ordinal within that device type; 0 for CPU */
} DLDevice;

/* Element type. Plain values, no ownership. */
typedef struct DLDataType {
    uint8_t code;   /* SA3_DL_INT / UINT / FLOAT / BFLOAT / ... */
    uint8_t bits;   /* bits per lane, e.g. 16 for float16/bfloat16 */
    uint16_t lanes; /* vector lanes; 1 for every dtype we accept */
} DLDataType;

/* A strided view. Everything here is owned by the producer and stays valid until the
 * DLManagedTensor(Versioned)'s deleter runs; the consumer only reads. */
typedef struct DLTensor {
    void *data;           /* producer-owned base pointer (device pointer for CUDA); may be NULL
                             for zero-sized tensors. Address of element 0 is data + byte_offset. */
    DLDevice device;      /* value */
    int32_t ndim;         /* number of dimensions */
    DLDataType dtype;     /* value */
    int64_t *shape;       /* producer-owned array of ndim sizes */
    int64_t *strides;     /* producer-owned array of ndim strides in ELEMENTS, or NULL meaning
                             compact row-major (C-contiguous) */
    uint64_t byte_offset; /* bytes from data to element 0 */
} DLTensor;

/* Legacy (unversioned) managed tensor, capsule name "dltensor". */
typedef struct DLManagedTensor {
    DLTensor dl_tensor; /* producer-owned view, see above */
    void *manager_ctx;  /* producer's private context (e.g. the exporting array); opaque to us */
    /* Producer-supplied; releases dl_tensor's memory and this struct. Called once by whoever
     * owns the capsule's contents: here the capsule destructor, never us. May be NULL. */
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

typedef struct DLPackVersion {
    uint32_t major; /* ABI version; layouts differ across majors */
    uint32_t minor;
} DLPackVersion;

/* Versioned managed tensor (DLPack >= 1.0), capsule name "dltensor_versioned". Note the
 * different field order from DLManagedTensor: the version comes first so a consumer can
 * check it before touching anything else. */
typedef struct DLManagedTensorVersioned {
    DLPackVersion version; /* value; must be checked before reading the rest */
    void *manager_ctx;     /* producer's private context; opaque to us */
    /* Producer-supplied release function; same ownership rule as DLManagedTensor.deleter. */
    void (*deleter)(struct DLManagedTensorVersioned *self);
    uint64_t flags;     /* DLPACK_FLAG_BITMASK_*: READ_ONLY means we must never write */
    DLTensor dl_tensor; /* producer-owned view, see above */
} DLManagedTensorVersioned;

#ifdef __cplusplus
}
#endif
#endif /* SA3_DLPACK_H */
