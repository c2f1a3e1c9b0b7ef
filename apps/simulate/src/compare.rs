//! Runs side by side: a run's `Point`, the cost/wait Pareto front, and the current policy
//! against the reference policies on the same trace.

use provisioner_sim::{PolicyChoice, PolicyParams, SimError, SimOptions, SimReport, Trace, run};
use serde::Serialize;

use crate::controls::{config_scaling, shown_policy_name};
use crate::setup::Setup;

/// The policies the compare view runs beside the current one: "seed" (the rule of CircleCI's
/// Runner Provisioner preview 0.1.0), "circleci-0.1.2" (its 0.1.2 preview), GitHub ARC's,
/// GitLab's autoscaler's, the predictive warm pool, and the oracle (it knows every arrival in
/// advance: a bound, not a policy).
pub const REFERENCE_POLICIES: [&str; 6] = [
    "seed",
    "circleci-0.1.2",
    "arc",
    "gitlab",
    "predictive",
    "oracle",
];

/// One run's figures: a point of a sweep, or a row of the compare view.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub params: Vec<(String, String)>,
    pub jobs: u64,
    pub jobs_completed: u64,
    pub wait_p50_s: f64,
    pub wait_p95_s: f64,
    pub wait_p99_s: f64,
    pub wait_max_s: f64,
    pub vm_hours: f64,
    pub idle_vm_hours: f64,
    pub vms_created: u64,
    pub peak_vms: u32,
    pub invariant_violations: usize,
    pub pareto: bool,
}

impl Point {
    /// The point a run gave, not yet marked for the Pareto front.
    pub fn of(params: Vec<(String, String)>, report: &SimReport) -> Self {
        Self {
            params,
            jobs: report.jobs,
            jobs_completed: report.jobs_completed,
            wait_p50_s: report.wait_p50_s,
            wait_p95_s: report.wait_p95_s,
            wait_p99_s: report.wait_p99_s,
            wait_max_s: report.wait_max_s,
            vm_hours: report.vm_hours,
            idle_vm_hours: report.idle_vm_hours,
            vms_created: report.vms_created,
            peak_vms: report.peak_vms,
            invariant_violations: report.invariant_violations.len(),
            pareto: false,
        }
    }
}

/// Points no other point beats on both VM-hours and p95 wait (ties count as not beaten).
pub fn mark_pareto(points: &mut [Point]) {
    let keys: Vec<(f64, f64)> = points.iter().map(|p| (p.vm_hours, p.wait_p95_s)).collect();
    for (i, p) in points.iter_mut().enumerate() {
        let (c, w) = keys[i];
        p.pareto = p.invariant_violations == 0
            && !keys
                .iter()
                .enumerate()
                .any(|(j, (c2, w2))| j != i && *c2 <= c && *w2 <= w && (*c2 < c || *w2 < w));
    }
}

/// One policy in the compare view.
#[derive(Debug, Clone)]
pub struct CompareRow {
    pub name: String,
    pub is_current: bool,
    pub point: Point,
    /// The run's figures (without samples).
    pub report: SimReport,
}

impl CompareRow {
    /// The "front" column: BROKEN when an invariant broke, ★ on the Pareto front.
    pub fn front(&self) -> &'static str {
        if self.point.invariant_violations > 0 {
            "BROKEN"
        } else if self.point.pareto {
            "★"
        } else {
            ""
        }
    }
}

/// The knobs the reference policies are built from: the flags', or a config's first class.
fn reference_params(setup: &Setup) -> PolicyParams {
    if let Some(scaling) = config_scaling(setup) {
        return PolicyParams {
            min_replicas: scaling.min_replicas.get(),
            max_replicas: scaling.max_replicas.get(),
            idle_timeout: scaling.idle_timeout,
            headroom: scaling.headroom.get(),
            max_surge: scaling.max_surge.get(),
            scale_down_delay: scaling.scale_down_delay,
            idle_buffer: scaling.idle_buffer.get(),
            scale_factor: setup.params.scale_factor,
            predictive: scaling.predictive,
        };
    }
    setup.params.clone()
}

/// The name of the row `--advised FILE` adds.
pub const ADVISED: &str = "advised";

/// Options for a compare run: no samples, no worst-wait list.
fn bare(options: &SimOptions) -> SimOptions {
    SimOptions {
        sample_every: None,
        worst_waits: 0,
        ..options.clone()
    }
}

/// The current run against the reference policies built from the same knobs, on the same
/// trace and options, and the advised policy (`--advised FILE`, replayed as `--config FILE`
/// would), with the cost/wait Pareto front marked. The runs go in parallel.
pub fn compare_runs(
    trace: &Trace,
    setup: &Setup,
    current: &SimReport,
) -> Result<Vec<CompareRow>, SimError> {
    let params = reference_params(setup);
    let options = bare(&setup.options);
    let mut runs = REFERENCE_POLICIES
        .iter()
        .map(|name| {
            Ok((
                *name,
                options.clone(),
                PolicyChoice::reference(name, &params)?,
            ))
        })
        .collect::<Result<Vec<_>, SimError>>()?;
    if let Some(advised) = &setup.advised {
        runs.push((ADVISED, bare(&advised.options), advised.policy()?));
    }
    let reports: Vec<Result<SimReport, SimError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter()
            .map(|(_, o, p)| scope.spawn(move || run(trace, o, p)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(SimError::Internal("a reference run panicked".to_owned()))
                })
            })
            .collect()
    });
    let current_name = shown_policy_name(setup);
    let labels = |name: &str| vec![("policy".to_owned(), name.to_owned())];
    let mut rows = vec![CompareRow {
        name: format!("current ({current_name})"),
        is_current: true,
        point: Point::of(labels(current_name), current),
        report: SimReport {
            samples: Vec::new(),
            ..current.clone()
        },
    }];
    for ((name, _, _), report) in runs.iter().zip(reports) {
        let report = report.map_err(|e| match (*name, &setup.advised) {
            (ADVISED, Some(a)) => SimError::Option(format!(
                "--advised {}: {e}",
                a.config_name.as_deref().unwrap_or_default()
            )),
            _ => e,
        })?;
        rows.push(CompareRow {
            name: (*name).to_owned(),
            is_current: false,
            point: Point::of(labels(name), &report),
            report,
        });
    }
    let mut points: Vec<Point> = rows.iter().map(|r| r.point.clone()).collect();
    mark_pareto(&mut points);
    for (row, p) in rows.iter_mut().zip(points) {
        row.point.pareto = p.pareto;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_keeps_undominated_points() {
        let point = |vm: f64, wait: f64| Point {
            params: Vec::new(),
            jobs: 1,
            jobs_completed: 1,
            wait_p50_s: 0.0,
            wait_p95_s: wait,
            wait_p99_s: 0.0,
            wait_max_s: 0.0,
            vm_hours: vm,
            idle_vm_hours: 0.0,
            vms_created: 0,
            peak_vms: 0,
            invariant_violations: 0,
            pareto: false,
        };
        let mut pts = vec![
            point(10.0, 5.0),
            point(20.0, 1.0),
            point(20.0, 6.0),
            point(5.0, 50.0),
        ];
        mark_pareto(&mut pts);
        assert_eq!(
            pts.iter().map(|p| p.pareto).collect::<Vec<_>>(),
            [true, true, false, true]
        );
    }
}
