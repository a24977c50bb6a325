/* eng_backend.c - backend registry and the per-thread error code (see
 * eng_backend.h). Every backend's ops table is listed here (a strong
 * reference, so static linking pulls the backend in). */
#include "eng_backend.h"

#include <string.h>

extern const eng_backend_ops eng_backend_cl_ops;
extern const eng_backend_ops eng_backend_ref_ops;

static __thread int g_errcode;

int eng_backend_errcode(void) { return g_errcode; }
void eng_backend_set_errcode(int code) { g_errcode = code; }

const eng_backend_ops *eng_backend_find(const char *name)
{
    const eng_backend_ops *const all[] = {&eng_backend_cl_ops, &eng_backend_ref_ops};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (name && strcmp(all[i]->name, name) == 0)
            return all[i];
    return NULL;
}
