//! A 1-D convolution over [N, C, L] (PyTorch's `nn.Conv1d`: weight [out, in, k], bias [out]).
use tch::nn;

#[derive(Debug)]
pub struct Conv1d {
    pub inner: nn::Conv1D,
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
}

impl Conv1d {
    pub fn new(p: nn::Path, in_channels: i64, out_channels: i64, kernel: i64, stride: i64, padding: i64) -> Conv1d {
        let cfg = nn::ConvConfig { stride, padding, ..Default::default() };
        Conv1d {
            inner: nn::conv1d(p, in_channels, out_channels, kernel, cfg),
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
        }
    }

    /// The output length for an input of length `l` (below 1: the input is too short).
    pub fn out_len(&self, l: i64) -> i64 {
        (l + 2 * self.padding - self.kernel) / self.stride + 1
    }
}
