/* sa3_registry.h - the kernel families compiled into this build (cuda/<name>/, one
 * sa3_family descriptor each), in folder-name order. See cuda/common/sa3_family.h. */
#ifndef SA3_REGISTRY_H
#define SA3_REGISTRY_H

#include <stddef.h>
#include "sa3_family.h"

/* Number of families compiled in (0 in a build without CUDA). */
int sa3_registry_count(void);

/* Family i, 0 <= i < sa3_registry_count(). */
const sa3_family *sa3_registry_at(int i);

/* Index of the family named name[0..len), or -1. */
int sa3_registry_find(const char *name, size_t len);

#endif /* SA3_REGISTRY_H */
