//! The per-class loop's logic against small in-test fakes of the two ports: fail static on any
//! error, no writes when nothing changed, and config updates that keep the planner's state.
//! (The HTTP-level behaviour is tested with the real adapters in the other test files.)

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use provisioner::context::Context;
use provisioner::metrics::Operation;
use provisioner::worker::{CycleOutcome, Pool, Worker, WorkerSettings};
use provisioner_core::config::{ClassConfig, RunnerOptions};
use provisioner_core::{
    ApplyReport, DemandSource, Duration, FleetState, Plan, PortError, Replicas, ResourceClass,
    Scaling, Secret, Timestamp, Vm, VmFleet, VmId, VmPhase,
};
use tokio::sync::watch;

struct FakeDemand {
    counts: Mutex<(Result<u32, PortError>, Result<u32, PortError>)>,
}

impl FakeDemand {
    fn new(unclaimed: u32, running: u32) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new((Ok(unclaimed), Ok(running))),
        })
    }

    fn set(&self, unclaimed: Result<u32, PortError>, running: Result<u32, PortError>) {
        *self.counts.lock().expect("lock") = (unclaimed, running);
    }
}

#[async_trait]
impl DemandSource for FakeDemand {
    async fn unclaimed_tasks(&self, _: &ResourceClass) -> Result<u32, PortError> {
        self.counts.lock().expect("lock").0.clone()
    }
    async fn running_tasks(&self, _: &ResourceClass) -> Result<u32, PortError> {
        self.counts.lock().expect("lock").1.clone()
    }
}

/// Records every call; `apply` sets replicas as a pool would.
#[derive(Default)]
struct FakeFleet {
    state: Mutex<FleetState>,
    observe_error: Mutex<Option<PortError>>,
    calls: Mutex<Vec<&'static str>>,
    plans: Mutex<Vec<Plan>>,
}

impl FakeFleet {
    fn with(state: FleetState) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(state),
            ..Self::default()
        })
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().expect("lock").clone()
    }

    fn writes(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(**c, "ensure" | "apply"))
            .count()
    }
}

#[async_trait]
impl VmFleet for FakeFleet {
    async fn ensure(&self, _: &ClassConfig) -> Result<(), PortError> {
        self.calls.lock().expect("lock").push("ensure");
        Ok(())
    }
    async fn observe(&self, _: &ResourceClass) -> Result<FleetState, PortError> {
        self.calls.lock().expect("lock").push("observe");
        if let Some(e) = self.observe_error.lock().expect("lock").clone() {
            return Err(e);
        }
        Ok(self.state.lock().expect("lock").clone())
    }
    async fn apply(&self, _: &ResourceClass, plan: &Plan) -> Result<ApplyReport, PortError> {
        self.calls.lock().expect("lock").push("apply");
        self.plans.lock().expect("lock").push(plan.clone());
        let mut state = self.state.lock().expect("lock");
        let from = state.spec_replicas.unwrap_or(0);
        state.spec_replicas = Some(plan.target_replicas);
        Ok(ApplyReport {
            scaled: (from != plan.target_replicas).then_some((from, plan.target_replicas)),
            ..ApplyReport::default()
        })
    }
}

fn class_config(min: u32, scale_down_delay: Duration) -> ClassConfig {
    ClassConfig {
        name: ResourceClass::parse("org/runner").expect("valid class"),
        token: Secret::new("runner-token"),
        user_data: None,
        scaling: Scaling {
            min_replicas: Replicas::new(min),
            scale_down_delay,
            ..Scaling::default()
        },
        runner: RunnerOptions::default(),
        empty_disk_mounts: Vec::new(),
        spec: provisioner_core::config::default_spec(),
    }
}

fn running_vms(n: u32) -> Vec<Vm> {
    (0..n)
        .map(|i| Vm {
            id: VmId::new(format!("uid-{i}")),
            name: Arc::from(format!("pool-{i}")),
            created_at: Timestamp::from_unix_millis(0),
            ready_at: None,
            phase: VmPhase::Running,
            deleting: false,
            failing: None,
            registered: None,
        })
        .collect()
}

/// `writes: false` is a dry run against a cluster.
fn settings(
    demand: Arc<FakeDemand>,
    fleet: Arc<FakeFleet>,
    config: ClassConfig,
    writes: bool,
) -> WorkerSettings {
    WorkerSettings {
        class: Arc::new(config),
        demand,
        pool: Pool {
            fleet,
            writes,
            model: None,
        },
        poll_interval: StdDuration::from_millis(10),
    }
}

fn worker(
    demand: Arc<FakeDemand>,
    fleet: Arc<FakeFleet>,
    config: ClassConfig,
) -> (Worker, watch::Sender<WorkerSettings>, Arc<Context>) {
    let ctx = Arc::new(Context::new(StdDuration::from_secs(60), None));
    let (tx, rx) = watch::channel(settings(demand, fleet, config, true));
    (Worker::new(rx, ctx.clone()), tx, ctx)
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000 + secs * 1000)
}

#[tokio::test]
async fn a_steady_pool_gets_no_writes_after_the_first_ensure() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(3),
        vms: running_vms(3),
    });
    let (mut w, _tx, _ctx) = worker(
        FakeDemand::new(0, 0),
        fleet.clone(),
        class_config(3, Duration::ZERO),
    );
    for s in 0..5 {
        let outcome = w.cycle(at(s)).await;
        assert!(
            matches!(outcome, CycleOutcome::Done { report: None, .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(
        fleet.calls().iter().filter(|c| **c == "ensure").count(),
        1,
        "ensure once per config: {:?}",
        fleet.calls()
    );
    assert_eq!(
        fleet.calls().iter().filter(|c| **c == "apply").count(),
        0,
        "{:?}",
        fleet.calls()
    );
}

#[tokio::test]
async fn demand_scales_out_and_the_next_cycle_is_quiet() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(3),
        vms: running_vms(3),
    });
    let demand = FakeDemand::new(4, 2);
    let (mut w, _tx, ctx) = worker(demand, fleet.clone(), class_config(3, Duration::ZERO));
    match w.cycle(at(0)).await {
        CycleOutcome::Done {
            decision,
            report: Some(report),
        } => {
            assert_eq!(decision.desired, 6);
            assert_eq!(report.scaled, Some((3, 6)));
        }
        other => panic!("expected a scale-out, got {other:?}"),
    }
    let writes = fleet.writes();
    // The pool now asks for 6 (VMs still booting are not observed here, but replicas match).
    let _ = w.cycle(at(1)).await;
    assert_eq!(
        fleet.writes(),
        writes,
        "no write when the pool already has the target"
    );
    assert!(
        ctx.metrics
            .encode()
            .contains("provisioner_desired_vms{resource_class=\"org/runner\"} 6")
    );
}

#[tokio::test]
async fn a_demand_error_leaves_the_fleet_untouched() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(8),
        vms: running_vms(2),
    });
    let demand = FakeDemand::new(0, 0);
    let (mut w, _tx, ctx) = worker(
        demand.clone(),
        fleet.clone(),
        class_config(1, Duration::ZERO),
    );
    demand.set(Err(PortError::transient("HTTP 503")), Ok(0));
    let outcome = w.cycle(at(0)).await;
    assert!(
        matches!(
            outcome,
            CycleOutcome::Failed {
                operation: Operation::UnclaimedTasks,
                ..
            }
        ),
        "{outcome:?}"
    );
    demand.set(Ok(0), Err(PortError::permanent("HTTP 401")));
    let outcome = w.cycle(at(1)).await;
    assert!(
        matches!(
            outcome,
            CycleOutcome::Failed {
                operation: Operation::RunningTasks,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(
        fleet.calls().is_empty(),
        "fail static: no observe, no write: {:?}",
        fleet.calls()
    );
    let text = ctx.metrics.encode();
    assert!(
        text.contains("operation=\"unclaimed_tasks\",kind=\"transient\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("operation=\"running_tasks\",kind=\"permanent\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn an_observe_error_skips_planning() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(3),
        vms: running_vms(3),
    });
    *fleet.observe_error.lock().expect("lock") = Some(PortError::transient("API server timeout"));
    let (mut w, _tx, _ctx) = worker(
        FakeDemand::new(9, 0),
        fleet.clone(),
        class_config(3, Duration::ZERO),
    );
    let outcome = w.cycle(at(0)).await;
    assert!(
        matches!(
            outcome,
            CycleOutcome::Failed {
                operation: Operation::Observe,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(!fleet.calls().contains(&"apply"), "{:?}", fleet.calls());
}

#[tokio::test]
async fn a_scaling_update_applies_without_resetting_the_hold() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(3),
        vms: running_vms(3),
    });
    let demand = FakeDemand::new(7, 0);
    let (mut w, tx, _ctx) = worker(
        demand.clone(),
        fleet.clone(),
        class_config(3, Duration::from_secs(300)),
    );
    let _ = w.cycle(at(0)).await;
    // Demand drops; the 5-minute scale-down hold keeps 7.
    demand.set(Ok(0), Ok(0));
    let CycleOutcome::Done { decision, .. } = w.cycle(at(10)).await else {
        panic!("cycle failed")
    };
    assert_eq!(decision.desired, 7);
    // A reload raises minReplicas to 4, same delay: the hold is kept (state not reset).
    tx.send_modify(|s| s.class = Arc::new(class_config(4, Duration::from_secs(300))));
    let CycleOutcome::Done { decision, .. } = w.cycle(at(20)).await else {
        panic!("cycle failed")
    };
    assert_eq!(decision.desired, 7, "hold survives the update");
    assert_eq!(decision.controls.min_replicas, 4, "new scaling in force");
    assert_eq!(
        fleet.calls().iter().filter(|c| **c == "ensure").count(),
        2,
        "changed class config is ensured again"
    );
}

#[tokio::test]
async fn dry_run_against_a_cluster_observes_but_never_writes() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(3),
        vms: running_vms(3),
    });
    let ctx = Arc::new(Context::new(StdDuration::from_secs(60), None));
    let (_tx, rx) = watch::channel(settings(
        FakeDemand::new(5, 0),
        fleet.clone(),
        class_config(3, Duration::ZERO),
        false,
    ));
    let mut w = Worker::new(rx, ctx);
    let CycleOutcome::Done { decision, report } = w.cycle(at(0)).await else {
        panic!("cycle failed")
    };
    assert_eq!(decision.plan.target_replicas, 5);
    assert!(report.is_none());
    assert_eq!(fleet.calls(), ["observe"]);
}

#[tokio::test]
async fn the_loop_stops_between_cycles_and_marks_health() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(3),
        vms: running_vms(3),
    });
    let (w, _tx, ctx) = worker(
        FakeDemand::new(0, 0),
        fleet.clone(),
        class_config(3, Duration::ZERO),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(w.run(stop_rx));
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(5);
    while ctx.health.readiness(std::time::Instant::now()).is_err() {
        ctx.health.set_config_loaded();
        assert!(tokio::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    stop_tx.send_replace(true);
    tokio::time::timeout(StdDuration::from_secs(5), task)
        .await
        .expect("loop stops")
        .expect("loop did not panic");
    assert!(fleet.calls().len() >= 2);
}

#[tokio::test]
async fn a_vm_left_mid_deletion_gets_an_apply_to_repair_it() {
    let mut vms = running_vms(3);
    vms[0].phase = VmPhase::Stopped;
    vms[0].deleting = true;
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(2),
        vms,
    });
    let (mut w, _tx, _ctx) = worker(
        FakeDemand::new(0, 2),
        fleet.clone(),
        class_config(2, Duration::ZERO),
    );
    let _ = w.cycle(at(0)).await;
    let plans = fleet.plans.lock().expect("lock").clone();
    assert_eq!(plans.len(), 1, "{:?}", fleet.calls());
    assert!(plans[0].retire.is_empty() && plans[0].recycle.is_empty());
    assert_eq!(plans[0].target_replicas, 2);
}

#[tokio::test]
async fn a_pool_deleted_behind_our_back_is_ensured_again() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(3),
        vms: running_vms(3),
    });
    let (mut w, _tx, _ctx) = worker(
        FakeDemand::new(0, 0),
        fleet.clone(),
        class_config(3, Duration::ZERO),
    );
    let _ = w.cycle(at(0)).await;
    *fleet.state.lock().expect("lock") = FleetState::default();
    let _ = w.cycle(at(1)).await;
    let _ = w.cycle(at(2)).await;
    let ensures = fleet.calls().iter().filter(|c| **c == "ensure").count();
    assert_eq!(ensures, 2, "{:?}", fleet.calls());
}

#[tokio::test]
async fn a_new_fleet_made_where_a_freed_one_was_is_still_ensured() {
    let steady = || FleetState {
        spec_replicas: Some(3),
        vms: running_vms(3),
    };
    let (mut w, tx, _ctx) = worker(
        FakeDemand::new(0, 0),
        FakeFleet::with(steady()),
        class_config(3, Duration::ZERO),
    );
    let _ = w.cycle(at(0)).await;
    // Two reloads between cycles (circleciAPIAddr changed twice): the first fleet is freed
    // before the last is made, which may reuse its memory.
    tx.send_modify(|s| {
        s.pool.fleet = Arc::new(provisioner_sim::ShadowFleet::new(
            provisioner_sim::BootTime::default(),
            1,
        ));
    });
    let last = FakeFleet::with(steady());
    tx.send_modify(|s| s.pool.fleet = last.clone());
    let _ = w.cycle(at(1)).await;
    assert_eq!(last.calls().first(), Some(&"ensure"), "{:?}", last.calls());
}

/// Log lines, for asserting on what a cycle logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Every log line of this test binary, from the first call on. A global subscriber: a
    /// scoped one (`set_default`) misses lines whenever another test's thread is the first to
    /// reach a log call.
    fn global() -> &'static Self {
        static LOGS: OnceLock<Captured> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Self::default();
            let subscriber = tracing_subscriber::fmt()
                .with_writer({
                    let logs = logs.clone();
                    move || logs.clone()
                })
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("the only global subscriber of this test binary");
            logs
        })
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("lock"))
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn dry_run_does_not_claim_a_plan_for_a_vm_being_deleted() {
    let logs = Captured::global();
    let mut vms = running_vms(3);
    vms[0].phase = VmPhase::Stopped;
    vms[0].deleting = true;
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(2),
        vms,
    });
    let ctx = Arc::new(Context::new(StdDuration::from_secs(60), None));
    // A class of its own: other tests' lines land in the same log.
    let class = ClassConfig {
        name: ResourceClass::parse("org/deleting").expect("valid class"),
        ..class_config(2, Duration::ZERO)
    };
    let (_tx, rx) = watch::channel(settings(FakeDemand::new(0, 2), fleet.clone(), class, false));
    let CycleOutcome::Done { decision, .. } = Worker::new(rx, ctx).cycle(at(0)).await else {
        panic!("cycle failed")
    };
    assert_eq!(decision.plan.target_replicas, 2);
    assert_eq!(fleet.calls(), ["observe"]);
    let lines = logs.lines_with("org/deleting");
    assert!(
        lines.iter().any(|l| l.contains("scaler cycle")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("would apply")),
        "nothing to apply: {lines:?}"
    );
}

#[tokio::test]
async fn cycles_feed_the_wait_and_cost_estimate() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(3),
        vms: running_vms(3),
    });
    let demand = FakeDemand::new(2, 0);
    let (mut w, _tx, ctx) = worker(
        demand.clone(),
        fleet.clone(),
        class_config(3, Duration::ZERO),
    );
    let _ = w.cycle(at(0)).await;
    let _ = w.cycle(at(10)).await;
    // Both waiting jobs were claimed between 10 s and 20 s: about 15 s after they were seen.
    demand.set(Ok(0), Ok(2));
    let _ = w.cycle(at(20)).await;
    let text = ctx.metrics.encode();
    for needle in [
        "provisioner_waiting_job_seconds_total{resource_class=\"org/runner\"} 40.0",
        "provisioner_jobs_started_total{resource_class=\"org/runner\"} 2",
        "provisioner_jobs_warm_total{resource_class=\"org/runner\"} 0",
        "provisioner_job_wait_seconds_sum{resource_class=\"org/runner\"} 30.0",
        "provisioner_vm_seconds_total{resource_class=\"org/runner\",phase=\"idle\"} 60.0",
        "provisioner_last_poll_timestamp_seconds{resource_class=\"org/runner\"} 1700000020.0",
        "provisioner_max_replicas{resource_class=\"org/runner\"} 10",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // A failed poll dates the error, not the poll.
    demand.set(Err(PortError::transient("HTTP 503")), Ok(0));
    let _ = w.cycle(at(30)).await;
    let text = ctx.metrics.encode();
    assert!(
        text.contains("provisioner_last_error_timestamp_seconds{resource_class=\"org/runner\",operation=\"unclaimed_tasks\",kind=\"transient\"}"),
        "{text}"
    );
    assert!(text.contains(
        "provisioner_last_poll_timestamp_seconds{resource_class=\"org/runner\"} 1700000020.0"
    ));
}
