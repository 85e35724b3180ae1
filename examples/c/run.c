/* Loads an xforge artifact, runs it once on zero-filled inputs and prints the outputs' sizes
 * and first bytes. Exit codes: 0 ok, 2 the runtime refused (message on stderr).
 *     cc examples/c/run.c -I runtime/include -L target/release -lxforge_runtime -o run
 *     LD_LIBRARY_PATH=target/release ./run model.xfa */
#include <stdio.h>
#include <stdlib.h>
#include "xforge.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.xfa\n", argv[0]);
        return 2;
    }
    XforgeSession *s = xforge_session_load(argv[1], 0);
    if (!s) {
        fprintf(stderr, "xforge_session_load failed: %s\n", xforge_last_error());
        return 2;
    }
    size_t ni = xforge_session_count(s, 0), no = xforge_session_count(s, 1);
    uint8_t **in = calloc(ni, sizeof *in), **out = calloc(no, sizeof *out);
    for (size_t k = 0; k < ni; k++) in[k] = calloc(xforge_session_bytes(s, 0, k) + 1, 1);
    for (size_t k = 0; k < no; k++) out[k] = calloc(xforge_session_bytes(s, 1, k) + 1, 1);
    int rc = xforge_session_run(s, (const uint8_t *const *)in, ni, out, no);
    if (rc != 0) {
        fprintf(stderr, "xforge_session_run failed: %s\n", xforge_last_error());
    } else {
        for (size_t k = 0; k < no; k++)
            printf("output %zu: %zu bytes, first byte %u\n", k, xforge_session_bytes(s, 1, k), out[k][0]);
    }
    for (size_t k = 0; k < ni; k++) free(in[k]);
    for (size_t k = 0; k < no; k++) free(out[k]);
    free(in);
    free(out);
    xforge_session_free(s);
    return rc == 0 ? 0 : 2;
}
