/* xforge runtime C API: load a compiled artifact (.xfa), run it, free it.
 * Link with -lxforge_runtime (target/release/libxforge_runtime.so).
 * Every call that can fail returns NULL or -1; xforge_last_error() then says why (per thread). */
#ifndef XFORGE_H
#define XFORGE_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct XforgeSession XforgeSession;

/* The calling thread's last error message ("" if none). */
const char *xforge_last_error(void);

/* Loads an artifact onto GPU `device`: checks the file and the target, uploads the weights. */
XforgeSession *xforge_session_load(const char *path, int device);

/* Number of inputs (outputs == 0) or outputs (outputs != 0). */
size_t xforge_session_count(const XforgeSession *s, int outputs);

/* The batch-size buckets the model was compiled for, smallest first: writes up to cap of them
 * to sizes (NULL when cap is 0) and returns their count; 0 for a model without a batch dim. */
size_t xforge_session_buckets(const XforgeSession *s, size_t *sizes, size_t cap);

/* Bytes of input or output i at the largest batch (raw little-endian elements, row-major). */
size_t xforge_session_bytes(const XforgeSession *s, int outputs, size_t i);

/* Bytes of input or output i at batch `batch` (ignored without a batch dim); 0 if the session
 * cannot run that batch. */
size_t xforge_session_batch_bytes(const XforgeSession *s, int outputs, size_t i, size_t batch);

/* Runs the model at its largest batch; inputs[k] and outputs[k] point at buffers of
 * xforge_session_bytes bytes. Returns 0, or -1 (see xforge_last_error). */
int xforge_session_run(XforgeSession *s, const uint8_t *const *inputs, size_t n_inputs,
                       uint8_t *const *outputs, size_t n_outputs);

/* Runs batch `batch`; the buffers hold xforge_session_batch_bytes bytes at that batch. A batch
 * between two buckets runs padded to the larger one where the model keeps batch rows apart. */
int xforge_session_run_batch(XforgeSession *s, size_t batch, const uint8_t *const *inputs,
                             size_t n_inputs, uint8_t *const *outputs, size_t n_outputs);

/* For an output whose length depends on the data (NonZero, NonMaxSuppression, Compress): its
 * valid length along that axis after the last run; the run wrote only those entries, in the
 * first positions of a buffer sized for the bound. -1 for an output of a fixed shape. */
int64_t xforge_session_output_length(const XforgeSession *s, size_t i);

/* Frees a session (NULL is ignored). */
void xforge_session_free(XforgeSession *s);

#ifdef __cplusplus
}
#endif
#endif
