/* sa3_registry.c - the family table, generated from the families setup.py compiled.
 *
 * sa3_build_config.h (written by setup.py into build_temp) defines SA3_FAMILIES(X) as
 * X(name) for every cuda/<name>/ that was compiled; each of those folders defines
 * `const sa3_family sa3_family_<name>`. Adding a family needs no change here. */
#include <string.h>

#include "sa3_build_config.h"
#include "sa3_registry.h"

#define SA3_DECLARE_FAMILY(name) extern const sa3_family sa3_family_##name;
#define SA3_FAMILY_ENTRY(name) &sa3_family_##name,

SA3_FAMILIES(SA3_DECLARE_FAMILY)

/* The trailing NULL keeps the array non-empty when no family was compiled. */
static const sa3_family *const sa3_families[] = {SA3_FAMILIES(SA3_FAMILY_ENTRY) NULL};

int sa3_registry_count(void) {
    return (int)(sizeof sa3_families / sizeof sa3_families[0]) - 1;
}

const sa3_family *sa3_registry_at(int i) {
    return (i >= 0 && i < sa3_registry_count()) ? sa3_families[i] : NULL;
}

int sa3_registry_find(const char *name, size_t len) {
    int i;
    for (i = 0; i < sa3_registry_count(); i++) {
        const char *n = sa3_families[i]->name;
        if (strlen(n) == len && memcmp(n, name, len) == 0) return i;
    }
    return -1;
}
