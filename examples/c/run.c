/* Loads an xforge artifact, runs it once on zero-filled inputs and prints the outputs' sizes
 * and first bytes: at BATCH when given (an artifact compiled with --batch runs any batch up to
 * its largest bucket), else at the model's largest batch. Exit codes: 0 ok, 2 the runtime
 * refused (message on stderr).
 *     cc examples/c/run.c -I runtime/include -L target/release -lxforge_runtime -o run
 *     LD_LIBRARY_PATH=target/release ./run model.xfa [BATCH] */
#include <stdio.h>
#include <stdlib.h>
#include "xforge.h"

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s MODEL.xfa [BATCH]\n", argv[0]);
        return 2;
    }
    XforgeSession *s = xforge_session_load(argv[1], 0);
    if (!s) {
        fprintf(stderr, "xforge_session_load failed: %s\n", xforge_last_error());
        return 2;
    }
    size_t buckets[64];
    size_t nb = xforge_session_buckets(s, buckets, 64);
    for (size_t k = 0; k < nb && k < 64; k++) printf("bucket %zu: batch %zu\n", k, buckets[k]);
    size_t batch = argc == 3 ? (size_t)strtoull(argv[2], NULL, 10) : (nb > 0 ? buckets[nb - 1] : 0);
    size_t ni = xforge_session_count(s, 0), no = xforge_session_count(s, 1);
    uint8_t **in = calloc(ni, sizeof *in), **out = calloc(no, sizeof *out);
    for (size_t k = 0; k < ni; k++) in[k] = calloc(xforge_session_batch_bytes(s, 0, k, batch) + 1, 1);
    for (size_t k = 0; k < no; k++) out[k] = calloc(xforge_session_batch_bytes(s, 1, k, batch) + 1, 1);
    int rc = xforge_session_run_batch(s, batch, (const uint8_t *const *)in, ni, out, no);
    if (rc != 0) {
        fprintf(stderr, "xforge_session_run_batch failed: %s\n", xforge_last_error());
    } else {
        for (size_t k = 0; k < no; k++)
            printf("output %zu: %zu bytes, first byte %u\n", k, xforge_session_batch_bytes(s, 1, k, batch), out[k][0]);
    }
    for (size_t k = 0; k < ni; k++) free(in[k]);
    for (size_t k = 0; k < no; k++) free(out[k]);
    free(in);
    free(out);
    xforge_session_free(s);
    return rc == 0 ? 0 : 2;
}
