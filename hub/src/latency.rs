//! Server-side request latency per route: from the moment the router has the request (headers
//! parsed) to the moment the handler's response is ready (a download's body streams after
//! that). Kept in log-linear histograms (16 steps per power of two, within 6.25%), so memory
//! stays bounded however long the server runs. The load test prints these next to what the
//! clients measured: on one machine the two differ by the clients' own work and the time a
//! request waits for a core.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Sub-steps per power of two.
const STEPS: u64 = 16;
/// Buckets: microseconds up to 2^40 (about 12 days).
const BUCKETS: usize = (STEPS as usize) * 38;

#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max_us: u64,
}

fn bucket(us: u64) -> usize {
    if us < STEPS {
        return us as usize;
    }
    let e = 63 - u64::from(us.leading_zeros()); // 2^e <= us, e >= 4
    let sub = (us >> (e - 4)) & (STEPS - 1);
    ((e - 3) * STEPS + sub).min(BUCKETS as u64 - 1) as usize
}

/// The largest value of bucket `b`, in microseconds.
fn bucket_top(b: usize) -> u64 {
    let b = b as u64;
    if b < STEPS {
        return b;
    }
    let (e, sub) = (b / STEPS + 3, b % STEPS);
    ((STEPS + sub + 1) << (e - 4)) - 1
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { counts: vec![0; BUCKETS], n: 0, max_us: 0 }
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        let want = ((self.n as f64 * q).ceil() as u64).clamp(1, self.n.max(1));
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return bucket_top(b).min(self.max_us) as f64 / 1e3;
            }
        }
        self.max_us as f64 / 1e3
    }
}

/// One route's latencies.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteLatency {
    /// `GET /api/v1/repos`: the method and the route's pattern.
    pub route: String,
    pub count: u64,
    /// Upper bounds of the buckets holding the quantile (within 6.25%), in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Latencies of the server's routes.
#[derive(Default)]
pub struct Latency {
    routes: Mutex<BTreeMap<String, Histogram>>,
}

impl Latency {
    pub fn record(&self, route: &str, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let h = match routes.get_mut(route) {
            Some(h) => h,
            None => routes.entry(route.to_string()).or_insert_with(Histogram::new),
        };
        h.counts[bucket(us)] += 1;
        h.n += 1;
        h.max_us = h.max_us.max(us);
    }

    /// Every route seen since the start (or the last `reset`).
    pub fn snapshot(&self) -> Vec<RouteLatency> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        routes
            .into_iter()
            .map(|(route, h)| RouteLatency {
                route,
                count: h.n,
                p50_ms: h.quantile_ms(0.5),
                p99_ms: h.quantile_ms(0.99),
                max_ms: h.max_us as f64 / 1e3,
            })
            .collect()
    }

    pub fn reset(&self) {
        self.routes.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for us in [0u64, 1, 15, 16, 17, 31, 32, 33, 100, 1000, 9_999, 10_000, 123_456, 10_000_000] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let top = bucket_top(b);
            assert!(top >= us && (top - us) as f64 <= us as f64 / 16.0 + 1.0, "{us} in a bucket up to {top}");
        }
    }

    #[test]
    fn quantiles() {
        let l = Latency::default();
        for ms in 1..=100 {
            l.record("GET /x", Duration::from_millis(ms));
        }
        let s = l.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].count, 100);
        assert!((50.0..=53.2).contains(&s[0].p50_ms), "{:?}", s[0]);
        assert!((99.0..=100.0).contains(&s[0].p99_ms), "{:?}", s[0]);
        assert_eq!(s[0].max_ms, 100.0);
    }
}
