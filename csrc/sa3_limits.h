/* sa3_limits.h - consumer-limits profiles: the facts of a GeForce class (arch, shared memory
 * per block and per SM) that an H100/H200 reports instead of its own while the mode is on
 * (SAGEATTN3_CONSUMER_LIMITS, set from Python through _C.set_consumer_limits). The families'
 * supports()/launch and the Python policy then take the same host path as on that card;
 * the kernels themselves run the GPU's own binary (sm_90a SASS on the H200). */
#ifndef SA3_LIMITS_H
#define SA3_LIMITS_H

#include "sa3_family.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sa3_limits_profile {
    const char *name; /* "sm89": the SAGEATTN3_CONSUMER_LIMITS value */
    int sm_arch;      /* the arch families and the policy decide for */
    int smem_optin;   /* shared memory per block after opt-in, bytes */
    int smem_per_sm;  /* shared memory per SM, bytes */
    const char *cards; /* which cards have these limits (for info()) */
} sa3_limits_profile;

/* The profiles, in a fixed order; *count receives how many. */
const sa3_limits_profile *sa3_limits_profiles(int *count);

/* Index of the profile called name[len], or -1. */
int sa3_limits_find(const char *name, size_t len);

/* facts as the profile's card would report them: sm_arch and the shared-memory limits are the
 * profile's (never raised above the GPU's own), hw_arch and sm_count stay the GPU's. */
void sa3_limits_apply(int profile, sa3_device_facts *facts);

#ifdef __cplusplus
}
#endif
#endif /* SA3_LIMITS_H */
