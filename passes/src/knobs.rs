//! Every tunable number of the passes, in one place.

/// A kernel launch priced in bytes of device memory traffic (≈ 3 µs at 3 TB/s).
pub const LAUNCH_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
/// Extra fixed cost of a vendor-library call (descriptors, heuristics), by library.
pub const CUBLASLT_CALL_BYTES: f64 = 2.0 * 1024.0 * 1024.0;
pub const CUDNN_CALL_BYTES: f64 = 4.0 * 1024.0 * 1024.0;
/// Launches cuDNN adds around a half-precision NCHW convolution: input and filter to NHWC, the
/// result back (ncu on an H200: about 3.7 µs each at batch 1, more than most convolutions).
pub const CUDNN_NCHW_LAUNCHES: f64 = 3.0;
/// A measured microsecond (`xforge tune`) in the cost model's bytes: the data-sheet bandwidth
/// the bytes model prices traffic at (H100 SXM: 3.35 TB/s).
pub const MEASURED_BYTES_PER_MICROSECOND: f64 = 3.35e6;
/// A GEMM group becomes a generated kernel only where that measured this much faster than the
/// library call (timings of one kernel wander by a few percent between runs).
pub const TUNED_GENERATED_MARGIN: f64 = 1.05;
/// Bytes assumed for a value whose shape is not static.
pub const UNKNOWN_VALUE_BYTES: f64 = 1024.0 * 1024.0;
/// Saturation caps: e-nodes, iterations, wall time.
pub const EGRAPH_NODE_LIMIT: usize = 200_000;
pub const EGRAPH_ITER_LIMIT: usize = 64;
pub const EGRAPH_TIME_LIMIT_MS: u64 = 1500;
/// Safety bound on the sweeps of the DAG-aware extractor (it stops when nothing changes).
pub const EXTRACT_PASSES: usize = 1000;

/// Most steps (sequence length × directions) an RNN, GRU or LSTM is unrolled over before fusion;
/// longer ones stay whole (and are not compiled yet).
pub const RECURRENT_UNROLL_STEPS: usize = 1024;

/// Most nodes an unrolled Loop or Scan may add (trip count × body nodes); longer ones stay
/// control flow.
pub const UNROLL_NODE_LIMIT: usize = 20_000;

/// Boxes from which NonMaxSuppression gets its score order from a TopK and runs as one
/// cooperating block; below it, one thread walks the boxes (kernels the host emulator runs).
pub const NMS_BLOCK_MIN_BOXES: usize = 256;

/// Largest overlap mask (bytes: batches × classes × boxes² / 8) NonMaxSuppression computes in
/// parallel before its block walk; larger ones walk by testing each candidate against the
/// kept boxes instead.
pub const NMS_MASK_MAX_BYTES: usize = 256 << 20;

/// Most boxes of a masked NonMaxSuppression: the block keeps one bit per box in workgroup
/// memory (32 KiB here).
pub const NMS_MASK_MAX_BOXES: usize = 32 * 8192;

/// Elements from which NonZero runs one block a tile (its tiles' first result columns computed
/// before it) instead of one block over everything.
pub const NONZERO_TILED_MIN: usize = 1 << 16;

/// Elements of a NonZero tile: 4 a thread of the kernel's 1024 (and what one thread of the
/// generic ReduceSum adds up for the tile's count).
pub const NONZERO_TILE: usize = 4096;

/// Largest block of trailing axes (elements) a Transpose may permute and still be the store of
/// the work before it, read in place by the elementwise template: a channels-last channel
/// shuffle's [2, C/2]; larger ones move through a tiled transpose kernel of their own.
pub const SMALL_TRANSPOSE_BLOCK: usize = 1024;
/// Longest innermost output run of a Transpose that is the store of the work before it (an
/// image's channels moved last after its Cast to half precision): neighbouring outputs read
/// this many streams, each contiguous across the pixels (the kernel crate's TILE_MAX_SHORT_RUN).
pub const SMALL_TRANSPOSE_RUN: usize = 4;
/// The most nodes one fusion group takes in (longer elementwise chains become several kernels).
pub const MAX_GROUP_NODES: usize = 512;
/// An Expand takes in the work that feeds it only where each input element is repeated at most
/// this many times (the work runs once per output element: grouped-query attention's 4–8 repeats
/// of a key, not a broadcast to a whole image).
pub const PULL_MAX_REPEAT: usize = 16;
/// The most values one fusion group reads from outside it (a kernel's parameters are bounded:
/// 4 KB on older drivers, two 8-byte words a buffer).
pub const MAX_GROUP_INPUTS: usize = 256;
/// The most elements of a mask the window-attention rewrite folds (windows × heads × queries ×
/// keys, f32): a larger one stays unfused rather than grow the weights.
pub const MAX_FOLDED_MASK_ELEMENTS: usize = 1 << 24;
