//! `xforge bench --profile`: where a plan's GPU time goes. Each step's time comes from device
//! timestamps inside the replayed graph (`Session::profile_steps`); its floor from what the
//! compiler recorded it must do (`StepCost`: bytes, FLOPs) against the card's limits.
use std::collections::BTreeMap;
use std::fmt::Write;
use xforge_runtime::StepCost;

/// A card's limits: memory bandwidth, dense tensor-core FLOP/s (fp16/bf16) and plain fp32 FLOP/s
/// (xforge's fp32 uses no TF32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CardLimits {
    pub bytes_per_s: f64,
    pub half_flops: f64,
    pub fp32_flops: f64,
}

/// An H100 SXM's data-sheet limits (also what a card not listed is measured against).
pub const H100: CardLimits = CardLimits { bytes_per_s: 3.35e12, half_flops: 989e12, fp32_flops: 67e12 };

/// Data-sheet limits by the name the driver reports (SXM parts); None for a card not listed.
pub fn limits_of(name: &str) -> Option<CardLimits> {
    const KNOWN: [(&str, CardLimits); 2] =
        [("H200", CardLimits { bytes_per_s: 4.8e12, half_flops: 989e12, fp32_flops: 67e12 }), ("H100", H100)];
    KNOWN.iter().find(|(k, _)| name.contains(k)).map(|(_, l)| *l)
}

/// A step's floor in milliseconds: its bytes at full bandwidth or its FLOPs at full rate,
/// whichever is longer.
pub fn floor_ms(c: &StepCost, limits: &CardLimits, half: bool) -> f64 {
    let flops = if half { limits.half_flops } else { limits.fp32_flops };
    (c.bytes as f64 / limits.bytes_per_s).max(c.flops as f64 / flops) * 1e3
}

#[derive(Default)]
struct Sum {
    steps: usize,
    ms: f64,
    floor: f64,
    bytes: u64,
    flops: u64,
}

impl Sum {
    fn add(&mut self, ms: f64, floor: f64, c: &StepCost) {
        self.steps += 1;
        self.ms += ms;
        self.floor += floor;
        self.bytes += c.bytes;
        self.flops += c.flops;
    }

    fn line(&self, name: &str, total: f64) -> String {
        let secs = self.ms / 1e3;
        format!(
            "  {name:<40} {:4} steps {:8.3} ms {:5.1}%  {:7.1} GB/s {:7.1} TFLOP/s  floor {:5.1}%",
            self.steps,
            self.ms,
            100.0 * self.ms / total.max(1e-12),
            self.bytes as f64 / secs.max(1e-12) / 1e9,
            self.flops as f64 / secs.max(1e-12) / 1e12,
            100.0 * self.floor / self.ms.max(1e-12),
        )
    }
}

/// The report: totals by schedule, the op patterns that take the most time, and the steps
/// furthest from their floor (by time lost to it). `ms[i]` and `costs[i]` describe step `i`.
pub fn report(ms: &[f64], costs: &[StepCost], limits: &CardLimits, half: bool, graph_ms: f64) -> String {
    let mut out = String::new();
    let total: f64 = ms.iter().sum();
    let floors: Vec<f64> = costs.iter().map(|c| floor_ms(c, limits, half)).collect();
    let floor: f64 = floors.iter().sum();
    let _ = writeln!(
        out,
        "profile: {total:.3} ms in {} steps (device timestamps in the replayed graph; the graph alone {graph_ms:.3} ms); \
         floor {floor:.3} ms ({:.0}% of the steps' time) at {:.0} GB/s and {:.0} TFLOP/s",
        ms.len(),
        100.0 * floor / total.max(1e-12),
        limits.bytes_per_s / 1e9,
        if half { limits.half_flops } else { limits.fp32_flops } / 1e12
    );
    let mut by_schedule: BTreeMap<&str, Sum> = BTreeMap::new();
    let mut by_ops: BTreeMap<(&str, &str), Sum> = BTreeMap::new();
    for ((t, c), f) in ms.iter().zip(costs).zip(&floors) {
        by_schedule.entry(&c.schedule).or_default().add(*t, *f, c);
        by_ops.entry((&c.schedule, &c.ops)).or_default().add(*t, *f, c);
    }
    let _ = writeln!(out, "by schedule:");
    let mut rows: Vec<_> = by_schedule.iter().collect();
    rows.sort_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
    for (k, s) in rows {
        let _ = writeln!(out, "{}", s.line(k, total));
    }
    let _ = writeln!(out, "by ops (the 12 that take the most time):");
    let mut rows: Vec<_> = by_ops.iter().collect();
    rows.sort_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
    for ((sched, ops), s) in rows.into_iter().take(12) {
        let _ = writeln!(out, "{}", s.line(&format!("{sched}: {ops}"), total));
    }
    // furthest from the floor: the most time above it
    let mut order: Vec<usize> = (0..ms.len()).collect();
    order.sort_by(|&a, &b| (ms[b] - floors[b]).total_cmp(&(ms[a] - floors[a])));
    let worst: Vec<String> = order
        .iter()
        .take(5)
        .map(|&i| {
            format!(
                "step {i} ({}: {}) {:.1} us, floor {:.1} us ({:.0}%)",
                costs[i].schedule,
                costs[i].ops,
                ms[i] * 1e3,
                floors[i] * 1e3,
                100.0 * floors[i] / ms[i].max(1e-12)
            )
        })
        .collect();
    let _ = writeln!(out, "furthest from their floor: {}", worst.join("; "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(schedule: &str, ops: &str, bytes: u64, flops: u64) -> StepCost {
        StepCost { schedule: schedule.into(), ops: ops.into(), bytes, flops }
    }

    const CARD: CardLimits = CardLimits { bytes_per_s: 1e12, half_flops: 1e15, fp32_flops: 1e14 };

    #[test]
    fn a_floor_is_the_longer_of_memory_and_arithmetic() {
        // 1 GB at 1 TB/s: 1 ms; 1e12 FLOPs at 1e15/s: 1 ms, at 1e14/s: 10 ms
        assert_eq!(floor_ms(&cost("e", "Add", 1_000_000_000, 0), &CARD, true), 1.0);
        assert_eq!(floor_ms(&cost("g", "MatMul", 0, 1_000_000_000_000), &CARD, true), 1.0);
        assert_eq!(floor_ms(&cost("g", "MatMul", 1000, 1_000_000_000_000), &CARD, false), 10.0);
    }

    #[test]
    fn the_report_groups_by_schedule_and_ops_and_names_the_worst_step() {
        let costs = [
            cost("elementwise", "Add+Relu", 2_000_000, 0),          // floor 2 us
            cost("library-gemm", "MatMul", 1_000_000, 4e10 as u64), // floor 40 us
            cost("elementwise", "Add+Relu", 2_000_000, 0),          // floor 2 us
        ];
        let ms = [0.004, 0.050, 0.100];
        let r = report(&ms, &costs, &CARD, true, 0.16);
        let lines: Vec<&str> = r.lines().collect();
        assert!(lines[0].starts_with("profile: 0.154 ms in 3 steps"), "{r}");
        assert!(lines[0].contains("floor 0.044 ms (29% of the steps' time)"), "{r}");
        // elementwise first (0.104 ms), then the GEMM (0.050 ms)
        assert!(lines[2].trim_start().starts_with("elementwise") && lines[2].contains("2 steps"), "{r}");
        assert!(lines[3].trim_start().starts_with("library-gemm") && lines[3].contains("800.0 TFLOP/s"), "{r}");
        // the slow Add+Relu (98 us above its floor) is named first
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("furthest from their floor: step 2 (elementwise: Add+Relu) 100.0 us, floor 2.0 us (2%)"),
            "{r}"
        );
    }

    #[test]
    fn listed_cards_have_limits_and_others_none() {
        assert_eq!(limits_of("NVIDIA H200").unwrap().bytes_per_s, 4.8e12);
        assert_eq!(limits_of("NVIDIA H100 80GB HBM3").unwrap().bytes_per_s, 3.35e12);
        assert!(limits_of("NVIDIA GeForce RTX 4090").is_none());
    }
}
