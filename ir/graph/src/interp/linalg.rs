//! Matrix products: MatMul (batched, broadcasting), Gemm and Einsum.
use super::attrs::{opt, req, NodeAttrs};
use super::broadcast::{broadcast_index, broadcast_shapes};
use super::OpResult;
use crate::dtype::DType;
use crate::tensor::{numel, Tensor, TensorData};

/// `c[m×n] = a[m×k]·b[k×n]` with element strides (row, col) for each operand; f32 accumulates
/// in f32 like vendor BLAS, f64 in f64.
pub trait Gemm: Copy + Default {
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        sa: (isize, isize),
        b: &[Self],
        sb: (isize, isize),
        c: &mut [Self],
    );
}

impl Gemm for f32 {
    fn gemm(m: usize, k: usize, n: usize, a: &[f32], sa: (isize, isize), b: &[f32], sb: (isize, isize), c: &mut [f32]) {
        // SAFETY: the caller's strides stay inside `a` and `b`; `c` is m×n row-major.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                sa.0,
                sa.1,
                b.as_ptr(),
                sb.0,
                sb.1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    }
}

impl Gemm for f64 {
    fn gemm(m: usize, k: usize, n: usize, a: &[f64], sa: (isize, isize), b: &[f64], sb: (isize, isize), c: &mut [f64]) {
        // SAFETY: as for f32.
        unsafe {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                sa.0,
                sa.1,
                b.as_ptr(),
                sb.0,
                sb.1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    }
}

/// Values in the precision a float dtype multiplies in: f32 for f32/f16/bf16, f64 for f64.
pub enum FloatBuf {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl FloatBuf {
    pub fn of(t: &Tensor) -> FloatBuf {
        match t.data() {
            TensorData::F32(v) => FloatBuf::F32(v.clone()),
            TensorData::F64(v) => FloatBuf::F64(v.clone()),
            d => FloatBuf::F32(d.to_f64().into_iter().map(|x| x as f32).collect()),
        }
    }
}

fn batched<T: Gemm>(a: &[T], b: &[T], ab: &[usize], bb: &[usize], m: usize, k: usize, n: usize) -> Vec<T> {
    let mut out = vec![T::default(); ab.len() * m * n];
    for (i, (&x, &y)) in ab.iter().zip(bb).enumerate() {
        T::gemm(
            m,
            k,
            n,
            &a[x * m * k..(x + 1) * m * k],
            (k as isize, 1),
            &b[y * k * n..(y + 1) * k * n],
            (n as isize, 1),
            &mut out[i * m * n..(i + 1) * m * n],
        );
    }
    out
}

/// Numpy `matmul`: 1-D operands are promoted and the added axis removed afterwards.
pub fn matmul(a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(format!("inputs have different dtypes {} and {}", a.dtype(), b.dtype()));
    }
    if a.rank() == 0 || b.rank() == 0 {
        return Err("inputs must have rank at least 1".into());
    }
    let mut ash = a.shape().to_vec();
    let mut bsh = b.shape().to_vec();
    if ash.len() == 1 {
        ash.insert(0, 1);
    }
    if bsh.len() == 1 {
        bsh.push(1);
    }
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    if k != k2 {
        return Err(format!("inner dimensions differ: {:?} · {:?}", a.shape(), b.shape()));
    }
    let batch = broadcast_shapes(&[&ash[..ash.len() - 2], &bsh[..bsh.len() - 2]])?;
    let ab = broadcast_index(&ash[..ash.len() - 2], &batch);
    let bb = broadcast_index(&bsh[..bsh.len() - 2], &batch);
    let mut shape = batch.clone();
    if a.rank() > 1 {
        shape.push(m);
    }
    if b.rank() > 1 {
        shape.push(n);
    }
    super::check_size(&shape)?;
    let dt = a.dtype();
    if dt.is_float() {
        let data = match (FloatBuf::of(a), FloatBuf::of(b)) {
            (FloatBuf::F32(x), FloatBuf::F32(y)) => {
                let r = batched(&x, &y, &ab, &bb, m, k, n);
                if dt == DType::F32 {
                    TensorData::F32(r)
                } else {
                    TensorData::from_f64(dt, &r.iter().map(|&v| v as f64).collect::<Vec<_>>())
                }
            }
            (FloatBuf::F64(x), FloatBuf::F64(y)) => TensorData::F64(batched(&x, &y, &ab, &bb, m, k, n)),
            _ => unreachable!("same dtype gives the same buffer kind"),
        };
        return Ok(Tensor::new(shape, data));
    }
    let (x, y) = (a.to_i128(), b.to_i128());
    let mut out = vec![0i128; ab.len() * m * n];
    for (bi, (&p, &q)) in ab.iter().zip(&bb).enumerate() {
        for i in 0..m {
            for kk in 0..k {
                let av = x[p * m * k + i * k + kk];
                for j in 0..n {
                    out[bi * m * n + i * n + j] += av * y[q * k * n + kk * n + j];
                }
            }
        }
    }
    Ok(Tensor::from_i128(dt, shape, &out))
}

/// `alpha·op(A)·op(B) + beta·C`.
pub fn gemm(at: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (a, b) = (req(ins, 0)?, req(ins, 1)?);
    if a.rank() != 2 || b.rank() != 2 {
        return Err(format!("A and B must be 2-D, got {:?} and {:?}", a.shape(), b.shape()));
    }
    let ta = at.int("transA", 0)? != 0;
    let tb = at.int("transB", 0)? != 0;
    let alpha = at.float("alpha", 1.0)? as f64;
    let beta = at.float("beta", 1.0)? as f64;
    let (m, k) = if ta { (a.shape()[1], a.shape()[0]) } else { (a.shape()[0], a.shape()[1]) };
    let (k2, n) = if tb { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
    if k != k2 {
        return Err(format!(
            "inner dimensions differ: A {:?} (transA={ta}) · B {:?} (transB={tb})",
            a.shape(),
            b.shape()
        ));
    }
    super::check_size(&[m, n])?;
    let sa = if ta { (1, m as isize) } else { (k as isize, 1) };
    let sb = if tb { (1, k as isize) } else { (n as isize, 1) };
    let mut prod: Vec<f64> = match (FloatBuf::of(a), FloatBuf::of(b)) {
        (FloatBuf::F32(x), FloatBuf::F32(y)) => {
            let mut c = vec![0f32; m * n];
            f32::gemm(m, k, n, &x, sa, &y, sb, &mut c);
            c.into_iter().map(|v| v as f64).collect()
        }
        (FloatBuf::F64(x), FloatBuf::F64(y)) => {
            let mut c = vec![0f64; m * n];
            f64::gemm(m, k, n, &x, sa, &y, sb, &mut c);
            c
        }
        _ => return Err(format!("A and B must have one float dtype, got {} and {}", a.dtype(), b.dtype())),
    };
    prod.iter_mut().for_each(|v| *v *= alpha);
    if let Some(c) = opt(ins, 2) {
        broadcast_shapes(&[c.shape(), &[m, n]])
            .ok()
            .filter(|s| s == &[m, n])
            .ok_or_else(|| format!("C of shape {:?} does not broadcast to [{m}, {n}]", c.shape()))?;
        let cv = c.to_f64();
        for (o, &i) in prod.iter_mut().zip(&broadcast_index(c.shape(), &[m, n])) {
            *o += beta * cv[i];
        }
    }
    Ok(Tensor::from_f64(a.dtype(), vec![m, n], &prod))
}

/// Einsum over explicit or implicit output, with `...` broadcasting.
pub fn einsum(at: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let ops: Vec<&Tensor> = ins.iter().flatten().collect();
    let shapes: Vec<&[usize]> = ops.iter().map(|o| o.shape()).collect();
    let EinsumPlan { out_shape, sizes, outputs, strides: st } = einsum_plan(&at.string("equation", "")?, &shapes)?;
    let out_n = numel(&out_shape);
    let inner_n = numel(&sizes[outputs..]);
    let vals: Vec<Vec<f64>> = ops.iter().map(|o| o.to_f64()).collect();
    let mut res = vec![0.0; out_n];
    let mut idx = vec![0usize; sizes.len()];
    for (o, r) in res.iter_mut().enumerate() {
        let mut rem = o;
        for ax in (0..outputs).rev() {
            idx[ax] = rem % sizes[ax];
            rem /= sizes[ax];
        }
        let mut acc = 0.0;
        for inner in 0..inner_n {
            let mut rem = inner;
            for ax in (outputs..sizes.len()).rev() {
                idx[ax] = rem % sizes[ax];
                rem /= sizes[ax];
            }
            let mut p = 1.0;
            for (v, s) in vals.iter().zip(&st) {
                p *= v[idx.iter().zip(s).map(|(i, s)| i * s).sum::<usize>()];
            }
            acc += p;
        }
        *r = acc;
    }
    let dt = ops[0].dtype();
    Ok(if dt.is_float() {
        Tensor::from_f64(dt, out_shape, &res)
    } else {
        Tensor::from_i128(dt, out_shape, &res.iter().map(|&v| v as i128).collect::<Vec<_>>())
    })
}

/// An einsum as loops: the labels of the output first (`outputs` of them), then the summed
/// ones, each of `sizes[i]`; `strides[k][i]` steps operand k along label i (0 where absent or
/// broadcast).
pub struct EinsumPlan {
    pub out_shape: Vec<usize>,
    pub sizes: Vec<usize>,
    pub outputs: usize,
    pub strides: Vec<Vec<usize>>,
}

/// The loops of `equation` over operands of `shapes`.
pub fn einsum_plan(equation: &str, shapes: &[&[usize]]) -> OpResult<EinsumPlan> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let ops = shapes;
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ops.len() {
        return Err(format!("equation '{eq}' names {} operands, got {}", terms.len(), ops.len()));
    }
    // a term is letters with at most one '...'; anything else is refused before it is indexed
    let letters = |t: &str| -> OpResult<usize> {
        let rest = t.replacen("...", "", 1);
        match rest.chars().find(|c| !c.is_ascii_alphabetic()) {
            Some(c) => Err(format!("equation '{eq}': '{c}' in '{t}' is not a label")),
            None => Ok(rest.len()),
        }
    };
    let mut named = vec![];
    for (t, o) in terms.iter().zip(ops.iter()) {
        let n = letters(t)?;
        if n > o.len() || (!t.contains("...") && n != o.len()) {
            return Err(format!("term '{t}' does not match operand of rank {}", o.len()));
        }
        named.push(n);
    }
    // '...' expands into private labels U+0100.. that no equation letter can collide with
    let ell_rank = terms
        .iter()
        .zip(ops.iter())
        .zip(&named)
        .filter(|((t, _), _)| t.contains("..."))
        .map(|((_, o), n)| o.len() - n)
        .max()
        .unwrap_or(0);
    let ell: Vec<char> = (0..ell_rank).map(|i| char::from_u32(0x100 + i as u32).unwrap()).collect();
    let mut dims: std::collections::BTreeMap<char, usize> = Default::default();
    let mut labels: Vec<Vec<char>> = vec![];
    for ((t, o), n) in terms.iter().zip(ops.iter()).zip(&named) {
        let mut l: Vec<char> = vec![];
        let chars: Vec<char> = t.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] == '.' {
                let here = o.len() - n;
                l.extend(&ell[ell.len() - here..]);
                i += 3;
            } else {
                l.push(chars[i]);
                i += 1;
            }
        }
        if l.len() != o.len() {
            return Err(format!("term '{t}' does not match operand of rank {}", o.len()));
        }
        for (c, &d) in l.iter().zip(o.iter()) {
            let e = dims.entry(*c).or_insert(d);
            if *e == 1 {
                *e = d;
            } else if d != 1 && *e != d {
                return Err(format!("label '{c}' has sizes {e} and {d}"));
            }
        }
        labels.push(l);
    }
    if let Some(r) = &rhs {
        letters(r)?;
        let mut seen = std::collections::BTreeSet::new();
        for c in r.replacen("...", "", 1).chars() {
            if !dims.contains_key(&c) {
                return Err(format!("equation '{eq}': output label '{c}' is in no input"));
            }
            if !seen.insert(c) {
                return Err(format!("equation '{eq}': output label '{c}' appears twice"));
            }
        }
    }
    let out: Vec<char> = match rhs {
        Some(r) => {
            let mut v = vec![];
            let chars: Vec<char> = r.chars().collect();
            let mut i = 0;
            while i < chars.len() {
                if chars[i] == '.' {
                    v.extend(&ell);
                    i += 3;
                } else {
                    v.push(chars[i]);
                    i += 1;
                }
            }
            v
        }
        None => {
            let mut v: Vec<char> = ell.clone();
            let mut once: Vec<char> = dims
                .keys()
                .filter(|c| !ell.contains(c) && labels.iter().flatten().filter(|x| x == c).count() == 1)
                .copied()
                .collect();
            once.sort();
            v.extend(once);
            v
        }
    };
    let all: Vec<char> = {
        let mut v = out.clone();
        v.extend(dims.keys().filter(|c| !out.contains(c)));
        v
    };
    let sizes: Vec<usize> = all.iter().map(|c| dims[c]).collect();
    let out_shape: Vec<usize> = out.iter().map(|c| dims[c]).collect();
    super::check_size(&out_shape)?;
    super::check_size(&sizes)?;
    // per operand: stride of each label in `all` (0 where absent or broadcast)
    let st: Vec<Vec<usize>> = labels
        .iter()
        .zip(ops)
        .map(|(l, o)| {
            let s = crate::tensor::strides(o);
            all.iter()
                .map(|c| {
                    l.iter().enumerate().filter(|(_, x)| *x == c).map(|(i, _)| if o[i] == 1 { 0 } else { s[i] }).sum()
                })
                .collect()
        })
        .collect();
    Ok(EinsumPlan { out_shape, sizes, outputs: out.len(), strides: st })
}
