//! Control flow: If, Loop and Scan run their subgraphs through the interpreter.
use super::attrs::{opt, req, scalar, scalar_i64, NodeAttrs};
use super::movement::{concat, transpose, unsqueeze};
use super::{execute, InterpError, OpResult, Scope};
use crate::graph::Graph;
use crate::tensor::Tensor;

fn run_body(g: &Graph, inputs: Vec<Tensor>, scope: &Scope) -> OpResult<Vec<Tensor>> {
    execute(g, inputs, scope, None).map_err(|e: InterpError| format!("in subgraph '{}': {e}", g.name))
}

pub fn if_(a: &NodeAttrs, ins: &[Option<Tensor>], scope: &Scope) -> OpResult<Vec<Tensor>> {
    let c = req(ins, 0)?;
    if c.len() != 1 {
        return Err(format!("condition must hold one element, got shape {:?}", c.shape()));
    }
    let branch = if c.to_f64()[0] != 0.0 { "then_branch" } else { "else_branch" };
    run_body(a.graph(branch)?, vec![], scope)
}

/// Stacks per-iteration tensors along a new axis 0.
fn stack(parts: &[Tensor]) -> OpResult<Tensor> {
    let un: Vec<Tensor> = parts.iter().map(|p| unsqueeze(p, &[0])).collect::<OpResult<_>>()?;
    let refs: Vec<&Tensor> = un.iter().collect();
    concat(&refs, 0)
}

pub fn loop_(a: &NodeAttrs, ins: &[Option<Tensor>], n_out: usize, scope: &Scope) -> OpResult<Vec<Tensor>> {
    let body = a.graph("body")?;
    let max_trip = opt(ins, 0).map(|t| scalar_i64(t, "trip count M")).transpose()?;
    let mut cond = opt(ins, 1).map(|t| scalar(t, "condition")).transpose()?.is_none_or(|c| c != 0.0);
    let mut carried: Vec<Tensor> = ins[2.min(ins.len())..]
        .iter()
        .map(|t| t.clone().ok_or_else(|| "loop-carried input missing".to_string()))
        .collect::<OpResult<_>>()?;
    let n_carried = carried.len();
    let n_scan = n_out.saturating_sub(n_carried);
    let mut scans: Vec<Vec<Tensor>> = vec![vec![]; n_scan];
    let mut scanned = vec![0usize; n_scan];
    let mut i = 0i64;
    while cond && max_trip.is_none_or(|m| i < m) {
        let mut inputs = vec![Tensor::scalar_i64(i), Tensor::from_bool(vec![], vec![cond])];
        inputs.extend(carried.iter().cloned());
        let outs = run_body(body, inputs, scope)?;
        if outs.len() != 1 + n_carried + n_scan {
            return Err(format!("body returned {} values, expected {}", outs.len(), 1 + n_carried + n_scan));
        }
        cond = scalar(&outs[0], "the body's condition")? != 0.0;
        carried = outs[1..1 + n_carried].to_vec();
        for (k, s) in scans.iter_mut().enumerate() {
            s.push(outs[1 + n_carried + k].clone());
            // the stacked scan output must stay within the element limit: checked as it grows,
            // so a loop of 2^40 trips stops here instead of exhausting memory
            scanned[k] += s.last().map_or(0, |t| t.len());
            super::check_size(&[scanned[k]]).map_err(|e| format!("scan output {k} after {} iterations: {e}", i + 1))?;
        }
        i += 1;
        if i > 10_000_000 {
            return Err("loop ran more than 10,000,000 iterations".into());
        }
    }
    let mut res = carried;
    for s in scans {
        if s.is_empty() {
            return Err("loop produced no iterations for a scan output".into());
        }
        res.push(stack(&s)?);
    }
    Ok(res)
}

/// Scan-8: a leading batch axis on every state and sequence, an optional `sequence_lens` first;
/// each batch entry runs as a Scan-9 over axis 0, and the results are stacked again.
pub fn scan_batched(a: &NodeAttrs, ins: &[Option<Tensor>], n_out: usize, scope: &Scope) -> OpResult<Vec<Tensor>> {
    if let Some(lens) = ins.first().and_then(|t| t.as_ref()) {
        let l = lens.to_i64();
        if l.windows(2).any(|w| w[0] != w[1]) {
            return Err("different sequence_lens per batch entry are not supported".into());
        }
    }
    let rest = &ins[1.min(ins.len())..];
    let all: Vec<&Tensor> =
        rest.iter().map(|t| t.as_ref().ok_or_else(|| "scan input missing".to_string())).collect::<OpResult<_>>()?;
    let batch = all.first().map(|t| t.shape().first().copied().unwrap_or(0)).unwrap_or(0);
    if all.iter().any(|t| t.shape().first() != Some(&batch)) {
        return Err("every Scan-8 input needs the same leading batch axis".into());
    }
    let entry = |t: &Tensor, b: usize| {
        let inner = t.shape()[1..].to_vec();
        let n = crate::tensor::numel(&inner);
        t.take(&(b * n..(b + 1) * n).collect::<Vec<_>>(), inner)
    };
    let mut per: Vec<Vec<Tensor>> = vec![];
    for b in 0..batch {
        let sub: Vec<Option<Tensor>> = all.iter().map(|t| Some(entry(t, b))).collect();
        per.push(scan(a, &sub, n_out, scope)?);
    }
    (0..n_out).map(|k| stack(&per.iter().map(|o| o[k].clone()).collect::<Vec<_>>())).collect()
}

pub fn scan(a: &NodeAttrs, ins: &[Option<Tensor>], n_out: usize, scope: &Scope) -> OpResult<Vec<Tensor>> {
    let body = a.graph("body")?;
    let m = a.int("num_scan_inputs", 0)? as usize;
    let all: Vec<Tensor> =
        ins.iter().map(|t| t.clone().ok_or_else(|| "scan input missing".to_string())).collect::<OpResult<_>>()?;
    if m > all.len() {
        return Err("num_scan_inputs exceeds the inputs".into());
    }
    let n_state = all.len() - m;
    let mut state = all[..n_state].to_vec();
    let in_axes = a.ints_opt("scan_input_axes")?.unwrap_or(vec![0; m]);
    let in_dirs = a.ints_opt("scan_input_directions")?.unwrap_or(vec![0; m]);
    let n_scan_out = n_out.saturating_sub(n_state);
    let out_axes = a.ints_opt("scan_output_axes")?.unwrap_or(vec![0; n_scan_out]);
    let out_dirs = a.ints_opt("scan_output_directions")?.unwrap_or(vec![0; n_scan_out]);
    for (name, v, want) in [
        ("scan_input_axes", &in_axes, m),
        ("scan_input_directions", &in_dirs, m),
        ("scan_output_axes", &out_axes, n_scan_out),
        ("scan_output_directions", &out_dirs, n_scan_out),
    ] {
        if v.len() != want {
            return Err(format!("{name} has {} entries for {want} scan values", v.len()));
        }
    }
    // move each scan axis to the front so iterations slice axis 0
    let seqs: Vec<Tensor> = all[n_state..]
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let ax = super::attrs::axis(in_axes[k], t.rank())?;
            let mut perm: Vec<i64> = (0..t.rank() as i64).collect();
            perm.remove(ax);
            perm.insert(0, ax as i64);
            transpose(t, Some(perm))
        })
        .collect::<OpResult<_>>()?;
    let len = seqs.first().map(|s| s.shape()[0]).unwrap_or(0);
    if seqs.iter().any(|s| s.shape()[0] != len) {
        return Err("scan inputs have different sequence lengths".into());
    }
    let mut outs: Vec<Vec<Tensor>> = vec![vec![]; n_scan_out];
    for it in 0..len {
        let mut inputs = state.clone();
        for (k, s) in seqs.iter().enumerate() {
            let t = if in_dirs[k] != 0 { len - 1 - it } else { it };
            let inner: Vec<usize> = s.shape()[1..].to_vec();
            let n = crate::tensor::numel(&inner);
            inputs.push(s.take(&(t * n..(t + 1) * n).collect::<Vec<_>>(), inner));
        }
        let res = run_body(body, inputs, scope)?;
        if res.len() != n_state + n_scan_out {
            return Err(format!("body returned {} values, expected {}", res.len(), n_state + n_scan_out));
        }
        state = res[..n_state].to_vec();
        for (k, o) in outs.iter_mut().enumerate() {
            o.push(res[n_state + k].clone());
        }
    }
    let mut result = state;
    for (k, mut o) in outs.into_iter().enumerate() {
        if out_dirs[k] != 0 {
            o.reverse();
        }
        let s = stack(&o)?;
        let ax = super::attrs::axis(out_axes[k], s.rank())?;
        let mut perm: Vec<i64> = (1..s.rank() as i64).collect();
        perm.insert(ax, 0);
        result.push(transpose(&s, Some(perm))?);
    }
    Ok(result)
}
