//! Every tunable number of the kernel templates, in one place.

/// Kernels whose buffers and launches stay within this many elements (threads) compute their
/// indices in 32 bits (a 64-bit division by a constant costs several 32-bit multiplies: ViT's
/// head split at batch 32 spent 82 µs on index arithmetic).
pub const NARROW_INDEX_MAX: u64 = 1 << 30;
/// Threads per block of the elementwise, pooling, column-reduction and scan templates.
pub const BLOCK: u32 = 256;
/// Row reductions: threads per row lie in 32..=ROW_BLOCK_MAX (powers of two).
pub const ROW_BLOCK_MAX: usize = 256;
/// Row reductions aim for this many 16-byte vectors per thread (more loads in flight per thread).
pub const ROW_VECTORS_PER_THREAD: usize = 4;
/// Rows of at most this many vectors per thread stay in registers between the two passes.
pub const ROW_RESIDENT_VECTORS: usize = 4;
/// Tiled transpose: TILE×TILE tiles moved by TILE×TILE_ROWS threads.
pub const TILE: usize = 32;
pub const TILE_ROWS: usize = 8;
/// The tiled transpose runs where the input's and the output's innermost runs (B and A) both
/// hold more than this many elements; a shorter run (an image's 3 channels moved last) would
/// leave most of each tile's threads idle, and the elementwise template reads it in place
/// (passes' SMALL_TRANSPOSE_RUN lets such a Transpose join the work before it).
pub const TILE_MAX_SHORT_RUN: usize = 4;
/// Column reductions: threads sharing one output's reduced elements (at most).
pub const COLUMN_SLICES: usize = 32;
/// Column reductions: independent loads in flight per thread (accumulators of its slice).
pub const COLUMN_UNROLL: usize = 8;
/// Scans: threads sharing a line's round (at most), each holding SCAN_RUN consecutive steps.
pub const SCAN_CHUNKS: usize = 8;
pub const SCAN_RUN: usize = 32;
/// Generated GEMMs: GEMM_TILE² outputs per block of GEMM_THREADS² threads, K in steps of GEMM_K.
pub const GEMM_TILE: usize = 64;
pub const GEMM_THREADS: usize = 16;
pub const GEMM_K: usize = 16;
/// Tensor-core GEMMs: warps of 64×32 outputs, GEMM_MMA_WARPS_M × GEMM_MMA_WARPS_N per block,
/// K in steps of GEMM_MMA_K (a multiple of 16).
pub const GEMM_MMA_WARPS_M: usize = 4;
pub const GEMM_MMA_WARPS_N: usize = 2;
pub const GEMM_MMA_K: usize = 32;
/// Attention without tensor cores: ATTN_ROWS query rows per block (one each), ATTN_KEYS keys
/// per workgroup-memory tile.
pub const ATTN_ROWS: usize = 64;
pub const ATTN_KEYS: usize = 32;
/// Tensor-core attention: 16 query rows per warp, ATTN_MMA_ROWS per block, ATTN_MMA_KEYS keys
/// per tile (sweeps: XFORGE_ATTN_MMA_ROWS, XFORGE_ATTN_MMA_KEYS, multiples of 16). 32 × 32 was
/// the fastest of {16, 32, 64, 128} × {32, 64} for vit_b_16 fp16 at batch 32 on an H100 (3.51
/// against 3.63 ms for 64 × 64; batch 1 0.567 against 0.588 ms): 197 rows waste less of
/// the last block, and twice the blocks fill the multiprocessors.
pub const ATTN_MMA_ROWS: usize = 32;
/// Pipelined, ATTN_MMA_ROWS_WIDE rows a block where the blocks still number at least
/// ATTN_MMA_FILL_BLOCKS (about two per multiprocessor of an H100): H100, fp16, batch 8/32
/// (ms, 32 → 64 rows): Whisper's encoder 1.075 → 0.894 / 3.78 → 3.23, ViT-B/16 1.14 → 1.10 /
/// 3.59 → 3.48; at batch 1 32 rows stay faster (0.289 against 0.299, 0.528 against 0.537).
pub const ATTN_MMA_ROWS_WIDE: usize = 64;
pub const ATTN_MMA_FILL_BLOCKS: usize = 264;
pub const ATTN_MMA_KEYS: usize = 32;
/// Resize: taps per output coordinate along one axis (cubic's 4), and per element in all;
/// antialiased downscales (wider taps) stay with the generic kernel.
pub const RESIZE_MAX_TAPS: usize = 4;
pub const RESIZE_MAX_TERMS: usize = 16;
/// Pooling: outputs per thread (at most).
pub const POOL_OUTPUTS: usize = 4;
/// Selective scans: the largest state size; states are held in registers, at most
/// SSM_STATES_PER_THREAD per thread (larger states are split over neighbouring lanes).
pub const SSM_MAX_STATE: usize = 256;
pub const SSM_STATES_PER_THREAD: usize = 32;
/// Selective scans of 16-bit types split the state further (down to SSM_STATES_PER_THREAD_MIN a
/// lane) while lines × lanes stay under SSM_SPLIT_THREADS (an H100 sweep: batch 16 of 1536
/// channels in bf16 runs 17% faster on two lanes a line; f32 does not gain).
pub const SSM_STATES_PER_THREAD_MIN: usize = 8;
pub const SSM_SPLIT_THREADS: usize = 32768;
/// Selective scans of SSM_ONE_PASS_THREADS threads or more run in one pass; fewer are chunked
/// over the sequence (two passes) until their threads reach SSM_FILL_THREADS, with chunks of at
/// least SSM_MIN_CHUNK steps, in blocks of about SSM_BLOCK threads. (Measured on an H100: batch 16
/// of 1536 channels is faster in one pass of 24576 threads than in two of twice as many.)
pub const SSM_ONE_PASS_THREADS: usize = 16384;
pub const SSM_FILL_THREADS: usize = 65536;
pub const SSM_MIN_CHUNK: usize = 32;
pub const SSM_BLOCK: usize = 256;
/// Selective scans take fewer lines per block (down to a warp) while their grid would have fewer
/// than SSM_GRID_BLOCKS blocks (about two per multiprocessor of an H100; 1024 was 2.2× slower
/// for f32 at batch 1, as one-line blocks of 64 chunks).
pub const SSM_GRID_BLOCKS: usize = 264;
/// Selective scans: steps per loop iteration (loads in flight) are SSM_UNROLL_STATES over the
/// states per thread, between 1 and 4.
pub const SSM_UNROLL_STATES: usize = 32;
/// Selective scans over a length that is a multiple of the vector's steps move u, delta, z, the
/// output, B and C that many steps per vector and take that many per iteration: 8 for f32 (a
/// 32-byte sector) and for 16-bit types, except 4 where a thread holds a whole state for a whole
/// line (fewer registers: measured faster on an H100).
pub const SSM_VECTOR_STEPS_F32: usize = 8;
pub const SSM_VECTOR_STEPS_HALF: usize = 4;

/// Chunked selective scans keep pass 1's Δ and u in workgroup memory for pass 2 where a block's
/// share (with the carry across chunks) fits SSM_WORKGROUP_BYTES (a block's static workgroup
/// memory on NVIDIA GPUs); else pass 2 reads u and delta again (from L2: an H100's device-memory
/// reads stay one of each, measured by ncu for batch 1 of 1536 channels).
pub const SSM_WORKGROUP_BYTES: usize = 48 * 1024;

/// Selective scans: threads kept resident per multiprocessor (the launch bounds ask for that many
/// threads' blocks; ptxas caps the registers per thread to fit them).
pub const SSM_MIN_THREADS: usize = 256;

/// A selective-scan knob, unless a tuning sweep overrides it through the environment
/// (XFORGE_SSM_FILL_THREADS, XFORGE_SSM_UNROLL_STATES, XFORGE_SSM_MIN_THREADS,
/// XFORGE_SSM_VECTOR_STEPS, XFORGE_SSM_ONE_PASS_THREADS, XFORGE_SSM_STATES_PER_THREAD,
/// XFORGE_SSM_SPLIT_THREADS, XFORGE_SSM_GRID_BLOCKS, XFORGE_SSM_WORKGROUP_BYTES (1: no stash):
/// for benchmark sweeps; the artifact records them among its options).
pub fn ssm_knob(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).filter(|&v| v > 0).unwrap_or(default)
}

/// A tensor-core attention tile knob (a multiple of 16), unless a sweep overrides it (see
/// ATTN_MMA_ROWS); the artifact records overrides among its options.
pub fn attn_knob(var: &str, default: usize) -> usize {
    Some(ssm_knob(var, default)).filter(|v| v % 16 == 0).unwrap_or(default)
}
/// Tensor-core attention feeds its tensor cores pipelined (key/value tiles two deep by
/// cp.async, fragments by ldmatrix): 117 → 156 TFLOP/s on an H100 (BENCH.md, tenth session).
/// XFORGE_ATTN_PIPELINE=0 keeps the synchronous feed, the baseline of that comparison.
pub fn attn_pipelined() -> bool {
    std::env::var("XFORGE_ATTN_PIPELINE").map_or(true, |v| v != "0")
}
/// NonZero over at least this many elements runs as one block (each thread a run of the input,
/// a scan of the counts in workgroup memory); smaller ones stay one host-emulable thread.
pub const NONZERO_BLOCK_MIN: usize = 1024;

/// Most 32-bit words of the bit set a masked NonMaxSuppression keeps in workgroup memory
/// (boxes / 32; the passes' NMS_MASK_MAX_BOXES).
pub const NMS_MASK_MAX_WORDS: usize = 8192;
/// Threads of that block.
pub const NONZERO_THREADS: usize = 1024;
/// Bounded TopK: a thread counts the entries ranked ahead of its own this many at a time, and
/// stops once they are K (its entry is not kept).
pub const TOPK_RUN: usize = 128;

/// Lines from which TopKBounded over floats runs by selection in one block (generic/select.rs):
/// a radix select of the K-th key, then the K selected ranked among themselves.
pub const TOPK_SELECT_MIN: usize = 2048;

/// Largest bound (K at most) of a TopKBounded by selection: the selected keys and positions stay
/// in workgroup memory (32 KiB here).
pub const TOPK_SELECT_MAX: usize = 4096;

/// Entries per output from which a max, min or integer sum runs one block an output (a tree in
/// workgroup memory) rather than one thread an output.
pub const REDUCE_BLOCK_MIN: usize = 4096;

/// Most outputs of a reduction run one block an output (blocks of the grid).
pub const REDUCE_BLOCK_MAX_OUTPUTS: usize = 1 << 16;
