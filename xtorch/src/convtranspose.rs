//! A 2-D transposed convolution over [N, C, H, W] (PyTorch's `nn.ConvTranspose2d`: weight
//! [in, out, k, k], bias [out]; ONNX's ConvTranspose has the same layout). Output size
//! (H − 1)·stride − 2·padding + kernel: kernel = stride = 2 doubles H and W (a U-Net's upsampling).
use tch::nn;

#[derive(Debug)]
pub struct ConvTranspose2d {
    pub inner: nn::ConvTranspose2D,
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
}

impl ConvTranspose2d {
    pub fn new(
        p: nn::Path,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
    ) -> ConvTranspose2d {
        let cfg = nn::ConvTransposeConfig { stride, padding, ..Default::default() };
        ConvTranspose2d {
            inner: nn::conv_transpose2d(p, in_channels, out_channels, kernel, cfg),
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
        }
    }

    /// The output size along H or W for an input size `d` (below 1: padding eats the output).
    pub fn out_len(&self, d: i64) -> i64 {
        (d - 1) * self.stride - 2 * self.padding + self.kernel
    }
}
