/* sa3_limits.c - consumer-limits profiles (see sa3_limits.h). */
#include <string.h>

#include "sa3_limits.h"

/* 99 KB per block after opt-in and 100 KB per SM: cudaDevAttrMaxSharedMemoryPerBlockOptin and
 * ...PerMultiprocessor of GA10x (sm_86), AD10x (sm_89) and GB20x (sm_120), CUDA programming
 * guide's table of compute-capability limits. */
static const sa3_limits_profile sa3_profiles[] = {
    {"sm86", 86, 99 * 1024, 100 * 1024, "RTX 30xx (GA10x)"},
    {"sm89", 89, 99 * 1024, 100 * 1024, "RTX 40xx (AD10x)"},
    {"sm120", 120, 99 * 1024, 100 * 1024, "RTX 50xx (GB20x)"},
};

const sa3_limits_profile *sa3_limits_profiles(int *count) {
    *count = (int)(sizeof sa3_profiles / sizeof sa3_profiles[0]);
    return sa3_profiles;
}

int sa3_limits_find(const char *name, size_t len) {
    int i, n = (int)(sizeof sa3_profiles / sizeof sa3_profiles[0]);
    for (i = 0; i < n; i++)
        if (strlen(sa3_profiles[i].name) == len && memcmp(sa3_profiles[i].name, name, len) == 0) return i;
    return -1;
}

void sa3_limits_apply(int profile, sa3_device_facts *facts) {
    const sa3_limits_profile *p;
    int n = (int)(sizeof sa3_profiles / sizeof sa3_profiles[0]);
    if (profile < 0 || profile >= n) return;
    p = &sa3_profiles[profile];
    facts->sm_arch = p->sm_arch;
    if (facts->smem_optin > p->smem_optin) facts->smem_optin = p->smem_optin;
    if (facts->smem_per_sm > p->smem_per_sm) {
        /* rounded down: the driver rounds a carveout up to its next supported size (on sm_90
         * 43% of 228 KB -> 100 KB; 44% would give 132 KB) */
        facts->smem_carveout = (int)(100LL * p->smem_per_sm / facts->smem_per_sm);
        facts->smem_per_sm = p->smem_per_sm;
    }
}
