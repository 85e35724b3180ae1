//! What a vendor-library call's named parameters and buffers mean: a GEMM (cuBLASLt) or a
//! convolution (cuDNN) with its fused epilogue. Pure data, written by the compiler and checked
//! when an artifact is read, before anything runs.
use crate::plan::{Arg, LibraryCall};

/// Element type of a library call's buffers (its accumulator is always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibDtype {
    F32,
    F16,
    Bf16,
}

impl LibDtype {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(LibDtype::F32),
            "f16" => Some(LibDtype::F16),
            "bf16" => Some(LibDtype::Bf16),
            _ => None,
        }
    }
    pub fn size(self) -> u64 {
        if self == LibDtype::F32 {
            4
        } else {
            2
        }
    }
    fn code(self) -> i64 {
        self as i64
    }
    fn from_code(c: i64) -> Option<Self> {
        [LibDtype::F32, LibDtype::F16, LibDtype::Bf16].into_iter().find(|d| d.code() == c)
    }
}

/// The activation a library applies last.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    None,
    Relu,
    /// GELU, tanh approximation (cuBLASLt's only GELU).
    GeluTanh,
    Sigmoid,
    Tanh,
    /// min(max(x, 0), max): ONNX Clip with a zero lower bound (ReLU6).
    ClipZero(f32),
}

impl Activation {
    fn to_params(self, p: &mut Vec<(String, i64)>) {
        let (code, arg) = match self {
            Activation::None => (0, 0),
            Activation::Relu => (1, 0),
            Activation::GeluTanh => (2, 0),
            Activation::Sigmoid => (3, 0),
            Activation::Tanh => (4, 0),
            Activation::ClipZero(m) => (5, m.to_bits() as i64),
        };
        p.push(("act".into(), code));
        p.push(("act_arg".into(), arg));
    }
    fn from_params(p: &Params) -> Result<Self, String> {
        Ok(match p.get("act")? {
            0 => Activation::None,
            1 => Activation::Relu,
            2 => Activation::GeluTanh,
            3 => Activation::Sigmoid,
            4 => Activation::Tanh,
            5 => Activation::ClipZero(f32::from_bits(p.get("act_arg")? as u32)),
            a => return Err(format!("activation {a} is unknown")),
        })
    }
}

/// Named integer parameters of a call, looked up by name.
struct Params<'a>(&'a [(String, i64)]);

impl Params<'_> {
    fn get(&self, name: &str) -> Result<i64, String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v).ok_or_else(|| format!("parameter '{name}' is missing"))
    }
    /// A size: at least `min`, below 2³¹ (the libraries take 32-bit sizes).
    fn size(&self, name: &str, min: i64) -> Result<u64, String> {
        let v = self.get(name)?;
        if v < min || v >= 1 << 31 {
            return Err(format!("parameter '{name}' = {v} is out of range"));
        }
        Ok(v as u64)
    }
    fn flag(&self, name: &str) -> Result<bool, String> {
        match self.get(name)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("parameter '{name}' = {v} is not 0 or 1")),
        }
    }
    fn f32(&self, name: &str) -> Result<f32, String> {
        Ok(f32::from_bits(self.get(name)? as u32))
    }
}

fn product(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

/// Row-major `D[batch][m][n] = act(alpha·op(A)·op(B) + bias[n] + beta·R)`; A is `[m,k]`
/// (`[k,m]` when `trans_a`), B is `[k,n]` (`[n,k]` when `trans_b`); a batch stride of 0 shares
/// that operand across the batch. Buffers, in order: A, B, D, then bias and R when present.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmDesc {
    pub dtype: LibDtype,
    pub batch: u64,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub stride_a: u64,
    pub stride_b: u64,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
    pub bias: bool,
    pub residual: bool,
    pub act: Activation,
}

impl GemmDesc {
    pub fn to_params(&self) -> Vec<(String, i64)> {
        let mut p: Vec<(String, i64)> = [
            ("dtype", self.dtype.code()),
            ("batch", self.batch as i64),
            ("m", self.m as i64),
            ("n", self.n as i64),
            ("k", self.k as i64),
            ("stride_a", self.stride_a as i64),
            ("stride_b", self.stride_b as i64),
            ("trans_a", self.trans_a as i64),
            ("trans_b", self.trans_b as i64),
            ("alpha", self.alpha.to_bits() as i64),
            ("beta", self.beta.to_bits() as i64),
            ("bias", self.bias as i64),
            ("residual", self.residual as i64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        self.act.to_params(&mut p);
        p
    }

    pub fn from_params(params: &[(String, i64)]) -> Result<Self, String> {
        let p = Params(params);
        let dtype = LibDtype::from_code(p.get("dtype")?).ok_or("parameter 'dtype' is unknown")?;
        let act = Activation::from_params(&p)?;
        if !matches!(act, Activation::None | Activation::Relu | Activation::GeluTanh) {
            return Err(format!("activation {act:?} has no cuBLASLt epilogue"));
        }
        let d = GemmDesc {
            dtype,
            batch: p.size("batch", 1)?,
            m: p.size("m", 1)?,
            n: p.size("n", 1)?,
            k: p.size("k", 1)?,
            stride_a: p.get("stride_a")?.try_into().map_err(|_| "parameter 'stride_a' is negative")?,
            stride_b: p.get("stride_b")?.try_into().map_err(|_| "parameter 'stride_b' is negative")?,
            trans_a: p.flag("trans_a")?,
            trans_b: p.flag("trans_b")?,
            alpha: p.f32("alpha")?,
            beta: p.f32("beta")?,
            bias: p.flag("bias")?,
            residual: p.flag("residual")?,
            act,
        };
        Ok(d)
    }

    /// Bytes each buffer spans, in argument order.
    pub fn buffer_bytes(&self) -> Option<Vec<u64>> {
        let e = self.dtype.size();
        let span = |stride: u64, mat: u64| -> Option<u64> {
            (self.batch - 1).checked_mul(stride)?.checked_add(mat)?.checked_mul(e)
        };
        let mut b = vec![
            span(self.stride_a, product(&[self.m, self.k])?)?,
            span(self.stride_b, product(&[self.k, self.n])?)?,
            product(&[self.batch, self.m, self.n, e])?,
        ];
        if self.bias {
            b.push(self.n * e);
        }
        if self.residual {
            b.push(b[2]);
        }
        Some(b)
    }
}

/// A 2-D convolution: `y = act(conv(x, w) + bias[k] + z)`. NCHW: `w` is `[k, c/group, kh, kw]`;
/// channels-last (`nhwc`): x, y and z are NHWC and `w` is `[k, kh, kw, c/group]`.
/// Buffers, in order: x, w, y, then bias and z when present.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvDesc {
    pub dtype: LibDtype,
    pub nhwc: bool,
    /// x's sizes, in NCHW order whatever its layout
    pub input: [u64; 4],
    pub out_channels: u64,
    pub kernel: [u64; 2],
    pub group: u64,
    pub pad: [u64; 2],
    pub stride: [u64; 2],
    pub dilation: [u64; 2],
    pub bias: bool,
    pub residual: bool,
    pub act: Activation,
}

impl ConvDesc {
    pub fn to_params(&self) -> Vec<(String, i64)> {
        let mut p = vec![("dtype".to_string(), self.dtype.code()), ("nhwc".to_string(), self.nhwc as i64)];
        let mut put = |name: &str, vals: &[u64]| {
            for (i, v) in vals.iter().enumerate() {
                p.push((format!("{name}.{i}"), *v as i64));
            }
        };
        put("x", &self.input);
        put("out_channels", &[self.out_channels]);
        put("kernel", &self.kernel);
        put("group", &[self.group]);
        put("pad", &self.pad);
        put("stride", &self.stride);
        put("dilation", &self.dilation);
        p.push(("bias".into(), self.bias as i64));
        p.push(("residual".into(), self.residual as i64));
        self.act.to_params(&mut p);
        p
    }

    pub fn from_params(params: &[(String, i64)]) -> Result<Self, String> {
        let p = Params(params);
        let dtype = LibDtype::from_code(p.get("dtype")?).ok_or("parameter 'dtype' is unknown")?;
        let two = |name: &str, min: i64| -> Result<[u64; 2], String> {
            Ok([p.size(&format!("{name}.0"), min)?, p.size(&format!("{name}.1"), min)?])
        };
        let mut input = [0; 4];
        for (i, d) in input.iter_mut().enumerate() {
            *d = p.size(&format!("x.{i}"), 1)?;
        }
        let act = Activation::from_params(&p)?;
        if act == Activation::GeluTanh {
            return Err("GELU has no cuDNN activation".into());
        }
        let d = ConvDesc {
            dtype,
            nhwc: p.flag("nhwc")?,
            input,
            out_channels: p.size("out_channels.0", 1)?,
            kernel: two("kernel", 1)?,
            group: p.size("group.0", 1)?,
            pad: two("pad", 0)?,
            stride: two("stride", 1)?,
            dilation: two("dilation", 1)?,
            bias: p.flag("bias")?,
            residual: p.flag("residual")?,
            act,
        };
        if !d.input[1].is_multiple_of(d.group) || !d.out_channels.is_multiple_of(d.group) {
            return Err(format!("{} input and {} output channels in {} groups", d.input[1], d.out_channels, d.group));
        }
        d.output().ok_or("the window is larger than the padded input")?;
        Ok(d)
    }

    /// Output height and width.
    pub fn output(&self) -> Option<[u64; 2]> {
        let side = |i: usize| -> Option<u64> {
            let padded = self.input[2 + i].checked_add(2 * self.pad[i])?;
            let window = self.dilation[i].checked_mul(self.kernel[i] - 1)? + 1;
            Some(padded.checked_sub(window)? / self.stride[i] + 1)
        };
        Some([side(0)?, side(1)?])
    }

    /// Bytes each buffer spans, in argument order.
    pub fn buffer_bytes(&self) -> Option<Vec<u64>> {
        let e = self.dtype.size();
        let [oh, ow] = self.output()?;
        let y = product(&[self.input[0], self.out_channels, oh, ow, e])?;
        let mut b = vec![
            product(&self.input)?.checked_mul(e)?,
            product(&[self.out_channels, self.input[1] / self.group, self.kernel[0], self.kernel[1], e])?,
            y,
        ];
        if self.bias {
            b.push(self.out_channels * e);
        }
        if self.residual {
            b.push(y);
        }
        Some(b)
    }
}

/// A library call's descriptor, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum LibraryDesc {
    Gemm(GemmDesc),
    Conv(ConvDesc),
}

impl LibraryDesc {
    pub fn kind(&self) -> &'static str {
        match self {
            LibraryDesc::Gemm(_) => "gemm",
            LibraryDesc::Conv(_) => "conv",
        }
    }
    pub fn to_params(&self) -> Vec<(String, i64)> {
        match self {
            LibraryDesc::Gemm(d) => d.to_params(),
            LibraryDesc::Conv(d) => d.to_params(),
        }
    }
    fn buffer_bytes(&self) -> Option<Vec<u64>> {
        match self {
            LibraryDesc::Gemm(d) => d.buffer_bytes(),
            LibraryDesc::Conv(d) => d.buffer_bytes(),
        }
    }

    /// Decodes a call and checks that its buffers lie inside the arena (`arena` bytes) or the
    /// weights (`weights` bytes).
    pub fn of_call(c: &LibraryCall, arena: u64, weights: u64) -> Result<Self, String> {
        let d = match c.kind.as_str() {
            "gemm" => LibraryDesc::Gemm(GemmDesc::from_params(&c.params)?),
            "conv" => LibraryDesc::Conv(ConvDesc::from_params(&c.params)?),
            k => return Err(format!("library call kind '{k}' is unknown")),
        };
        let bytes = d.buffer_bytes().ok_or("its buffer sizes overflow")?;
        if bytes.len() != c.args.len() {
            return Err(format!("{} buffers given, its descriptor needs {}", c.args.len(), bytes.len()));
        }
        for (i, (a, n)) in c.args.iter().zip(&bytes).enumerate() {
            let (at, limit, place) = match a {
                Arg::Arena(o) => (*o, arena, "arena"),
                Arg::Weight(o) => (*o, weights, "weights"),
            };
            if at.checked_add(*n).is_none_or(|end| end > limit) {
                return Err(format!("buffer {i} ({n} bytes at {at}) ends outside the {place} ({limit} bytes)"));
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemm() -> GemmDesc {
        GemmDesc {
            dtype: LibDtype::F16,
            batch: 2,
            m: 3,
            n: 4,
            k: 5,
            stride_a: 15,
            stride_b: 0,
            trans_a: false,
            trans_b: true,
            alpha: 0.5,
            beta: 1.0,
            bias: true,
            residual: true,
            act: Activation::GeluTanh,
        }
    }

    fn conv() -> ConvDesc {
        ConvDesc {
            dtype: LibDtype::F32,
            nhwc: true,
            input: [1, 4, 9, 9],
            out_channels: 8,
            kernel: [3, 3],
            group: 2,
            pad: [1, 1],
            stride: [2, 2],
            dilation: [1, 1],
            bias: true,
            residual: false,
            act: Activation::ClipZero(6.0),
        }
    }

    #[test]
    fn descriptors_survive_their_parameters() {
        assert_eq!(GemmDesc::from_params(&gemm().to_params()), Ok(gemm()));
        assert_eq!(ConvDesc::from_params(&conv().to_params()), Ok(conv()));
    }

    #[test]
    fn buffer_extents_follow_the_shapes() {
        // A: one batch stride of 15 plus a 3×5 matrix; B shared; D, bias, residual
        assert_eq!(gemm().buffer_bytes(), Some(vec![60, 40, 48, 8, 48]));
        // 9 + 2 - 3 = 8, /2 + 1 = 5: y is [1, 8, 5, 5]
        assert_eq!(conv().output(), Some([5, 5]));
        assert_eq!(conv().buffer_bytes(), Some(vec![324 * 4, 8 * 2 * 9 * 4, 200 * 4, 32]));
    }

    #[test]
    fn calls_outside_their_buffers_or_with_bad_parameters_are_refused() {
        let call =
            |params: Vec<(String, i64)>, args: Vec<Arg>| LibraryCall { kind: "gemm".into(), group: 0, params, args };
        let args = vec![Arg::Arena(0), Arg::Weight(0), Arg::Arena(256), Arg::Weight(64), Arg::Arena(512)];
        let ok = call(gemm().to_params(), args.clone());
        assert!(LibraryDesc::of_call(&ok, 1024, 128).is_ok());
        let e = LibraryDesc::of_call(&ok, 1024, 70).unwrap_err();
        assert!(e.contains("buffer 3") && e.contains("weights"), "{e}");
        let e = LibraryDesc::of_call(&call(gemm().to_params(), args[..4].to_vec()), 1024, 128).unwrap_err();
        assert!(e.contains("4 buffers given"), "{e}");
        let mut p = gemm().to_params();
        p.retain(|(k, _)| k != "k");
        assert!(LibraryDesc::of_call(&call(p, args.clone()), 1024, 128).unwrap_err().contains("'k' is missing"));
        let mut p = gemm().to_params();
        p.iter_mut().find(|(k, _)| k == "m").unwrap().1 = -3;
        assert!(LibraryDesc::of_call(&call(p, args.clone()), 1024, 128).unwrap_err().contains("out of range"));
        let mut c = conv();
        c.kernel = [20, 20];
        assert!(ConvDesc::from_params(&c.to_params()).unwrap_err().contains("window"));
        let mut c = conv();
        c.group = 3;
        assert!(ConvDesc::from_params(&c.to_params()).unwrap_err().contains("groups"));
        let foreign = LibraryCall { kind: "fft".into(), group: 0, params: vec![], args };
        assert!(LibraryDesc::of_call(&foreign, 1024, 128).unwrap_err().contains("'fft'"));
    }
}
