/* cl-info - print the OpenCL device the engine would choose (honouring
 * DS4_CL_PLATFORM / DS4_CL_DEVICE) and its capabilities; with --build,
 * also build every embedded kernel source and report per-file results.
 * Usage: cl-info [--build] [--log]   Exit status 0 on success. */
#include <stdio.h>
#include <string.h>

#include "engined/eng_cl.h"
#include "util.h"

/* Build all kernels, print timing and (with show_log) the build logs. */
static int build_all(eng_cl *cl, int show_log)
{
    uint64_t t0 = ds4_now_ns();
    if (eng_cl_build(cl, NULL) != 0) {
        fprintf(stderr, "cl-info: %s\n", cl->err);
        return 1;
    }
    printf("kernels built:  %d source file(s) in %.2f s\n", cl->n_progs,
           (ds4_now_ns() - t0) / 1e9);
    for (int i = 0; i < cl->n_progs; i++) {
        const char *log = cl->progs[i].log ? cl->progs[i].log : "";
        int has_text = strspn(log, " \t\r\n") != strlen(log);
        printf("  %-20s ok%s\n", cl->progs[i].name,
               has_text ? " (non-empty build log)" : "");
        if (show_log && has_text)
            printf("%s\n", log);
    }
    return 0;
}

int main(int argc, char **argv)
{
    int build = 0, show_log = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--build") == 0)
            build = 1;
        else if (strcmp(argv[i], "--log") == 0)
            build = show_log = 1;
        else {
            fprintf(stderr, "usage: %s [--build] [--log]\n", argv[0]);
            return 2;
        }
    }
    eng_cl cl;
    if (eng_cl_open(&cl) != 0) {
        fprintf(stderr, "cl-info: %s\n", cl.err);
        return 1;
    }
    eng_cl_print_info(&cl, stdout);
    int rc = build ? build_all(&cl, show_log) : 0;
    eng_cl_close(&cl);
    return rc;
}
