/* sa3_family.h - what a kernel family is: the problem it is asked to solve, its options, the
 * launch context, and the descriptor every family exports.
 *
 * A family lives in cuda/<name>/ with an ARCHS file (the targets it can be compiled for).
 * setup.py compiles its .cu files only for the targets both requested and listed there, and
 * writes sa3_build_config.h (build_temp, never committed) with
 *     #define SA3_FAMILIES(X) X(mma) X(...)        the families compiled, in folder order
 *     #define SA3_FAMILY_ARCHS_<name> "80 86 ..."   the targets <name> was compiled for
 *     #define SA3_FAMILY_TARGETS_<name> 800, 860    the same as 10*arch + (1 if 'a'/'f')
 * The registry (csrc/sa3_registry.c) declares `extern const sa3_family sa3_family_<name>`
 * for each entry of SA3_FAMILIES, so a family whose targets were all filtered out is simply
 * absent. Every family defines exactly one such descriptor (extern "C").
 *
 * Contract, for every family:
 *   - supports() answers on the host, before anything is enqueued, from the problem, the
 *     options and the device facts alone (shared memory, head dims, grid limits ...). It never
 *     calls CUDA, allocates or blocks. NULL = yes; otherwise a short fixed reason key (static
 *     storage, e.g. "smem_limit", usable as a log-once/stats key, never containing values from
 *     the call) with the details written to detail[detail_len].
 *     The registry has already checked that the family was compiled for the device's arch.
 *   - workspace_bytes() is called only after supports() said yes; the caller allocates that
 *     many bytes (256-byte aligned) on the problem's device.
 *   - describe() (optional) says which configuration would serve an accepted call.
 *   - launch() is called only after supports() said yes, with o set in the problem and a
 *     workspace of at least workspace_bytes(). It enqueues work on ctx->stream only: no device
 *     memory allocation, no synchronization. On failure it returns a status and writes a
 *     one-line reason into err[err_len]; SA3_ERR_UNSUPPORTED makes the caller fall back.
 * Everything in sa3_problem was validated by csrc/sa3_check.c; families trust it.
 */
#ifndef SA3_FAMILY_H
#define SA3_FAMILY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sa3_params.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One validated attention call. Sizes and strides are int64 in canonical (b, h, s, d) order,
 * strides in elements; the stride of a dimension of size 1 is 0 (it never addresses
 * anything). The d stride is 1 for every tensor a family accepts (sa3_problem_common_supports
 * checks it). */
typedef struct sa3_problem {
    const void *q; /* (B, Hq,  Sq, D)  read-only */
    const void *k; /* (B, Hkv, Sk, D)  read-only */
    const void *v; /* (B, Hkv, Sk, Dv) read-only */
    void *o;       /* (B, Hq,  Sq, Dv) written; NULL until the launch is given `out` */
    int64_t q_stride[4], k_stride[4], v_stride[4], o_stride[4];

    int64_t batch, heads_q, heads_kv, seq_q, seq_k;
    int64_t head_dim;   /* D of q and k */
    int64_t head_dim_v; /* Dv of v and out (SDPA allows it to differ; kernels may not) */

    sa3_layout layout; /* the caller's layout (strides above already account for it) */
    sa3_dtype dtype;   /* of q, k, v and out */
    int is_causal;     /* top-left aligned, as torch SDPA: key j visible to query i iff j <= i */
    float scale;       /* softmax scale, finite and > 0 (default 1/sqrt(D)) */
    int device;        /* CUDA ordinal; SA3_DEVICE_NONE_CPU / SA3_DEVICE_NONE_OTHER otherwise */

    /* Optional log-sum-exp output, (B, Hq, Sq) fp32, natural log, unit s stride; NULL = not
     * wanted. A family that can't write it declines in supports() (reason "lse"). */
    float *lse;
    int64_t lse_stride_b, lse_stride_h;
} sa3_problem;

#define SA3_DEVICE_NONE_CPU (-1)
#define SA3_DEVICE_NONE_OTHER (-2)

/* Per-family options: chosen by the Python policy, each family says which it takes. */
typedef struct sa3_options {
    sa3_pv_mode pv_mode;
    int smooth_k; /* subtract the per-(b, h) channel mean of K over tokens before quantizing */
} sa3_options;

/* Facts about one CUDA device, queried once per device and cached by csrc/. Under consumer
 * limits (csrc/sa3_limits.c, SAGEATTN3_CONSUMER_LIMITS) an H100/H200 reports a GeForce class's
 * arch and shared-memory limits here, so families and the policy decide exactly as they would
 * on that card; hw_arch stays the GPU's own (which compiled binaries run on it). */
typedef struct sa3_device_facts {
    int sm_arch;     /* 10*major + minor that families and the policy decide for */
    int sm_count;
    int smem_optin;  /* max shared memory per block after opt-in (static + dynamic), bytes */
    int smem_per_sm; /* max shared memory per SM, bytes: CTAs per SM */
    int hw_arch;     /* 10*major + minor of the GPU itself (= sm_arch outside consumer limits) */
    /* -1: the driver's shared-memory carveout. Under consumer limits the percentage of this
     * GPU's shared memory per SM that smem_per_sm is, for launches to request
     * (cudaFuncAttributePreferredSharedMemoryCarveout) so an SM holds as many CTAs as the
     * emulated card's would. */
    int smem_carveout;
} sa3_device_facts;

/* Where and with what a launch runs. */
typedef struct sa3_launch_ctx {
    void *stream;           /* cudaStream_t of the caller (torch's current stream) */
    void *workspace;        /* >= workspace_bytes(), 256-byte aligned, on the problem's device */
    size_t workspace_bytes;
    sa3_device_facts device;
} sa3_launch_ctx;

typedef struct sa3_family {
    const char *name;  /* "mma": the kernel= choice, the stats key, the folder name */
    const char *archs; /* targets compiled, e.g. "80 86 89 90a 120a" */
    const int *targets; /* the same, as 10*arch + (1 if arch-specific): 800, 901, ... */
    int n_targets;
    const char *(*supports)(const sa3_problem *p, const sa3_options *opt, const sa3_device_facts *dev, char *detail,
                            size_t detail_len);
    size_t (*workspace_bytes)(const sa3_problem *p, const sa3_options *opt);
    sa3_status (*launch)(const sa3_problem *p, const sa3_options *opt, const sa3_launch_ctx *ctx, char *err,
                         size_t err_len);
    /* Optional (NULL: none). Only after supports() said yes, never on the hot path (info(),
     * tests, benchmarks): one line on the kernel configuration that would serve the call on
     * this device into out[out_len]. */
    void (*describe)(const sa3_problem *p, const sa3_options *opt, const sa3_device_facts *dev, char *out,
                     size_t out_len);
    /* Optional (NULL unless the family has one): test-only entry points reached through
     * _C.family_test(family, name, args, nout, stream), e.g. a kernel's building block on
     * packed inputs. args are integers (device pointers, sizes) the test trusts; results go to
     * out[0..nout). Never on the hot path; not part of the serving contract above. */
    sa3_status (*test)(const char *name, const int64_t *args, int nargs, int64_t *out, int nout, void *stream,
                       char *err, size_t err_len);
} sa3_family;

/* 1 if one of the family's targets runs on sm_arch: a plain sm_XY cubin runs on the same
 * major with minor >= Y, an arch-specific sm_XYa only on exactly XY, and compute_XY PTX
 * (target code 10*XY + 2) on every GPU of compute capability >= XY (the driver JITs it). */
static inline int sa3_family_runs_on(const sa3_family *f, int sm_arch) {
    int i;
    for (i = 0; i < f->n_targets; i++) {
        int t = f->targets[i], arch = t / 10, kind = t % 10;
        if (t <= 0) continue;
        if (kind == 2 ? sm_arch >= arch : kind == 1 ? arch == sm_arch : (arch / 10 == sm_arch / 10 && sm_arch >= arch))
            return 1;
    }
    return 0;
}

/* What every kernel so far needs, for families to call first in supports(): CUDA tensors,
 * fp16/bf16, no empty dimension, Dv == D, unit d stride, no negative strides, 16-byte
 * aligned data pointers and (b, h, s) strides (kernels load 16-byte vectors), o (if set)
 * included. Same contract as supports(). */
static inline const char *sa3_problem_common_supports(const sa3_problem *p, char *detail, size_t detail_len) {
    const void *ptr[4];
    const int64_t *str[4];
    static const char *const names[4] = {"q", "k", "v", "out"};
    int n = p->o != NULL ? 4 : 3, i, j;
    ptr[0] = p->q, ptr[1] = p->k, ptr[2] = p->v, ptr[3] = p->o;
    str[0] = p->q_stride, str[1] = p->k_stride, str[2] = p->v_stride, str[3] = p->o_stride;
    if (p->device < 0) {
        snprintf(detail, detail_len, "tensors are on %s, kernels are CUDA only",
                 p->device == SA3_DEVICE_NONE_CPU ? "the CPU" : "a device other than CPU/CUDA");
        return p->device == SA3_DEVICE_NONE_CPU ? "cpu" : "device";
    }
    if (p->dtype != SA3_DTYPE_F16 && p->dtype != SA3_DTYPE_BF16) {
        snprintf(detail, detail_len, "kernels take float16/bfloat16, got %s",
                 p->dtype == SA3_DTYPE_F32 ? "float32" : p->dtype == SA3_DTYPE_F64 ? "float64" : "another dtype");
        return "dtype";
    }
    if (p->batch == 0 || p->heads_q == 0 || p->heads_kv == 0 || p->seq_q == 0 || p->seq_k == 0 || p->head_dim == 0 ||
        p->head_dim_v == 0) {
        snprintf(detail, detail_len, "a zero-sized dimension (B=%lld, Hq=%lld, Hkv=%lld, Sq=%lld, Sk=%lld, D=%lld, Dv=%lld)",
                 (long long)p->batch, (long long)p->heads_q, (long long)p->heads_kv, (long long)p->seq_q,
                 (long long)p->seq_k, (long long)p->head_dim, (long long)p->head_dim_v);
        return "empty";
    }
    if (p->head_dim_v != p->head_dim) {
        snprintf(detail, detail_len, "v head dim %lld differs from q/k head dim %lld", (long long)p->head_dim_v,
                 (long long)p->head_dim);
        return "head_dim_v";
    }
    for (i = 0; i < n; i++) {
        if (str[i][3] != 1) {
            snprintf(detail, detail_len, "%s: head-dim stride %lld, kernels need 1", names[i], (long long)str[i][3]);
            return "strides";
        }
        for (j = 0; j < 3; j++) {
            if (str[i][j] < 0) {
                snprintf(detail, detail_len, "%s: negative stride %lld", names[i], (long long)str[i][j]);
                return "strides";
            }
        }
    }
    for (i = 0; i < n; i++) {
        /* itemsize 2: a stride is 16-byte aligned iff it is a multiple of 8 elements */
        if ((uintptr_t)ptr[i] % 16u != 0 || str[i][0] % 8 != 0 || str[i][1] % 8 != 0 || str[i][2] % 8 != 0) {
            snprintf(detail, detail_len,
                     "%s: data pointer %p or (b, h, s) strides (%lld, %lld, %lld) not 16-byte aligned", names[i],
                     ptr[i], (long long)str[i][0], (long long)str[i][1], (long long)str[i][2]);
            return "misaligned";
        }
    }
    return NULL;
}

#ifdef __cplusplus
}
#endif
#endif /* SA3_FAMILY_H */
