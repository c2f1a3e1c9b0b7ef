//! Per-phase figures: waits and VM-hours per window of trace time, so a run can be read as the
//! published benchmarks are (a 10-minute step of load, a burst and its cool-down) or as a fit
//! and a test period (`--phases 21d`).

use provisioner_core::Duration;
use serde::Serialize;

use crate::SimError;
use crate::options::millis;
use crate::report::{hours, percentile_s};

/// One window of trace time: the jobs that arrived in it and the VM time spent in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    pub start_s: f64,
    pub end_s: f64,
    /// Jobs that arrived in the window (a job belongs to the window it arrived in).
    pub jobs: u64,
    /// Nearest-rank percentiles of those jobs' waits; 0 when no job arrived.
    pub wait_p50_s: f64,
    pub wait_p90_s: f64,
    pub wait_p95_s: f64,
    pub wait_p99_s: f64,
    /// Powered-on VM time (booting, idle or busy) that fell inside the window.
    pub vm_hours: f64,
}

/// The cut points of `--phases`: `10m,20m,30m` (durations of trace time, strictly increasing,
/// above zero). The run is cut at each, so three cuts make four windows, the last one ending
/// with the run.
pub fn parse_cuts(text: &str) -> Result<Vec<Duration>, SimError> {
    let mut cuts: Vec<Duration> = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(SimError::Option(format!(
                "phases {text:?}: an empty cut (expected times like 10m,20m,30m)"
            )));
        }
        let cut =
            Duration::parse(part).map_err(|e| SimError::Option(format!("phases {text:?}: {e}")))?;
        if cut == Duration::ZERO {
            return Err(SimError::Option(format!(
                "phases {text:?}: the cut {part:?} is at the start of the run; cuts are after it"
            )));
        }
        if let Some(last) = cuts.last()
            && cut <= *last
        {
            return Err(SimError::Option(format!(
                "phases {text:?}: the cut {part:?} is not after the one before it ({last}); list cuts in increasing order"
            )));
        }
        cuts.push(cut);
    }
    Ok(cuts)
}

/// Figures per window. `cuts` split `[0, end_ms]` into windows (a cut at or past the end gives
/// windows with no jobs and no VM time); `waits` holds each job's `(arrival_ms, wait_ms)` in
/// any order; `vm_on` holds each VM's powered-on stretches `(from_ms, until_ms)`.
pub fn phase_stats(
    cuts: &[Duration],
    end_ms: i64,
    waits: &[(i64, i64)],
    vm_on: &[(i64, i64)],
) -> Vec<PhaseReport> {
    let mut bounds: Vec<i64> = Vec::with_capacity(cuts.len() + 2);
    bounds.push(0);
    for cut in cuts {
        let at = millis(*cut);
        if at > *bounds.last().unwrap_or(&0) {
            bounds.push(at);
        }
    }
    let last_cut = *bounds.last().unwrap_or(&0);
    bounds.push(end_ms.max(last_cut));
    let windows = bounds.len() - 1;
    // The window holding `t`: the last whose start is at or before it (the last one is closed).
    let window_of = |t: i64| {
        bounds[1..windows]
            .partition_point(|b| *b <= t)
            .min(windows - 1)
    };
    let mut per_window: Vec<Vec<i64>> = vec![Vec::new(); windows];
    for &(arrival, wait) in waits {
        per_window[window_of(arrival)].push(wait);
    }
    let mut on_ms = vec![0i64; windows];
    for &(from, until) in vm_on {
        if until <= from {
            continue;
        }
        let mut w = window_of(from);
        while w < windows && bounds[w] < until {
            let overlap = until.min(bounds[w + 1]) - from.max(bounds[w]);
            on_ms[w] += overlap.max(0);
            w += 1;
        }
    }
    per_window
        .into_iter()
        .zip(on_ms)
        .enumerate()
        .map(|(w, (mut v, on))| {
            v.sort_unstable();
            PhaseReport {
                start_s: bounds[w] as f64 / 1000.0,
                end_s: bounds[w + 1] as f64 / 1000.0,
                jobs: v.len() as u64,
                wait_p50_s: percentile_s(&v, 0.50),
                wait_p90_s: percentile_s(&v, 0.90),
                wait_p95_s: percentile_s(&v, 0.95),
                wait_p99_s: percentile_s(&v, 0.99),
                vm_hours: hours(on),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mins(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn cuts_parse_in_order_and_bad_ones_name_the_value() {
        assert_eq!(
            parse_cuts("10m, 20m,1h").expect("cuts"),
            [mins(10), mins(20), mins(60)]
        );
        assert_eq!(
            parse_cuts("21d").expect("one cut"),
            [Duration::from_secs(21 * 86_400)]
        );
        for (bad, names) in [
            ("10m,5m", "\"5m\""),
            ("10m,10m", "\"10m\""),
            ("0", "\"0\""),
            ("10m,,20m", "empty"),
            ("soon", "soon"),
            ("", "empty"),
        ] {
            let err = parse_cuts(bad).expect_err(bad).to_string();
            assert!(err.contains(names) && err.contains("phases"), "{err}");
        }
    }

    #[test]
    fn jobs_fall_in_the_window_they_arrived_in() {
        // Cuts at 10 and 20 minutes; a run of 30 minutes.
        let waits = [
            (0, 1_000),
            (599_999, 3_000),
            (600_000, 50_000),
            (700_000, 10_000),
            (1_200_000, 7_000),
            (1_800_000, 9_000),
        ];
        let p = phase_stats(&[mins(10), mins(20)], 1_800_000, &waits, &[]);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.iter().map(|w| (w.start_s, w.end_s)).collect::<Vec<_>>(),
            [(0.0, 600.0), (600.0, 1200.0), (1200.0, 1800.0)]
        );
        assert_eq!(p.iter().map(|w| w.jobs).collect::<Vec<_>>(), [2, 2, 2]);
        assert_eq!((p[0].wait_p50_s, p[0].wait_p99_s), (1.0, 3.0));
        assert_eq!((p[1].wait_p50_s, p[1].wait_p90_s), (10.0, 50.0));
        // The last window is closed: a job arriving at the very end is in it.
        assert_eq!((p[2].wait_p50_s, p[2].wait_p95_s), (7.0, 9.0));
    }

    #[test]
    fn percentiles_are_nearest_rank_per_window() {
        let waits: Vec<(i64, i64)> = (1..=100).map(|s| (s * 1_000, s * 1_000)).collect();
        let p = phase_stats(&[], 200_000, &waits, &[]);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (
                p[0].wait_p50_s,
                p[0].wait_p90_s,
                p[0].wait_p95_s,
                p[0].wait_p99_s
            ),
            (50.0, 90.0, 95.0, 99.0)
        );
    }

    #[test]
    fn vm_time_is_split_across_windows_and_sums_to_the_whole() {
        // One VM on from 5 to 25 minutes, one from 0 to 10, one stretch empty.
        let on = [(300_000, 1_500_000), (0, 600_000), (700_000, 700_000)];
        let p = phase_stats(&[mins(10), mins(20)], 1_800_000, &[], &on);
        let minutes: Vec<f64> = p.iter().map(|w| w.vm_hours * 60.0).collect();
        assert_eq!(minutes, [15.0, 10.0, 5.0]);
        let whole = phase_stats(&[], 1_800_000, &[], &on);
        assert_eq!(whole[0].vm_hours * 60.0, 30.0);
        assert!(p.iter().all(|w| w.jobs == 0 && w.wait_p99_s == 0.0));
    }

    #[test]
    fn cuts_past_the_end_give_empty_windows() {
        let p = phase_stats(&[mins(10), mins(60)], 1_200_000, &[(900_000, 2_000)], &[]);
        assert_eq!(
            p.iter()
                .map(|w| (w.start_s, w.end_s, w.jobs))
                .collect::<Vec<_>>(),
            [(0.0, 600.0, 0), (600.0, 3600.0, 1), (3600.0, 3600.0, 0)]
        );
    }
}
