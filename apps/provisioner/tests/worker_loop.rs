//! The per-class loop's logic against small in-test fakes of the two ports: degraded mode when
//! demand is unknown, fail static on a Kubernetes error, no writes when nothing changed, the
//! registration check and its breaker, and config updates that keep the planner's state.
//! (The HTTP-level behaviour is tested with the real adapters in the other test files.)

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use provisioner::context::Context;
use provisioner::metrics::Operation;
use provisioner::worker::{CycleOutcome, Pool, Worker, WorkerSettings};
use provisioner_core::config::{ClassConfig, RunnerOptions};
use provisioner_core::forecast::Predictive;
use provisioner_core::{
    ApplyReport, DemandSource, Duration, FleetState, Plan, PortError, Reclaim, Replicas,
    ResourceClass, Scaling, Secret, Timestamp, Vm, VmFleet, VmId, VmPhase,
};
use tokio::sync::watch;

type Runners = Result<Option<Vec<String>>, PortError>;

struct FakeDemand {
    counts: Mutex<(Result<u32, PortError>, Result<u32, PortError>)>,
    /// What `connected_runners` answers; `Ok(None)` (unknown) unless set.
    runners: Mutex<Runners>,
    runner_calls: Mutex<u32>,
    /// Calls to `unclaimed_tasks`: each cycle that polls makes one.
    polls: Mutex<u32>,
}

impl FakeDemand {
    fn new(unclaimed: u32, running: u32) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new((Ok(unclaimed), Ok(running))),
            runners: Mutex::new(Ok(None)),
            runner_calls: Mutex::new(0),
            polls: Mutex::new(0),
        })
    }

    fn set(&self, unclaimed: Result<u32, PortError>, running: Result<u32, PortError>) {
        *self.counts.lock().expect("lock") = (unclaimed, running);
    }

    fn set_runners(&self, runners: Runners) {
        *self.runners.lock().expect("lock") = runners;
    }

    fn connected(&self, names: &[&str]) {
        self.set_runners(Ok(Some(names.iter().map(|n| (*n).to_owned()).collect())));
    }

    fn runner_calls(&self) -> u32 {
        *self.runner_calls.lock().expect("lock")
    }
}

#[async_trait]
impl DemandSource for FakeDemand {
    async fn unclaimed_tasks(&self, _: &ResourceClass) -> Result<u32, PortError> {
        *self.polls.lock().expect("lock") += 1;
        self.counts.lock().expect("lock").0.clone()
    }
    async fn running_tasks(&self, _: &ResourceClass) -> Result<u32, PortError> {
        self.counts.lock().expect("lock").1.clone()
    }
    async fn connected_runners(&self, _: &ResourceClass) -> Runners {
        *self.runner_calls.lock().expect("lock") += 1;
        self.runners.lock().expect("lock").clone()
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
            reclaimed: plan
                .reclaims()
                .map(|(vm, why)| (vm.name.clone(), why))
                .collect(),
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

/// Running VMs `pool-{i}` (UID `uid-{i}`), ready since `at(0)`.
fn ready_vms(n: u32) -> Vec<Vm> {
    let mut vms = running_vms(n);
    for vm in &mut vms {
        vm.created_at = at(-60);
        vm.ready_at = Some(at(0));
    }
    vms
}

fn running_vms(n: u32) -> Vec<Vm> {
    (0..n)
        .map(|i| Vm {
            id: VmId::new(format!("uid-{i}")),
            name: Arc::from(format!("pool-{i}")),
            created_at: Timestamp::from_unix_millis(0),
            // Ready: a running VM never seen ready past its start timeout is not capacity.
            ready_at: Some(Timestamp::from_unix_millis(0)),
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

/// `n` ready VMs in a pool of `n` (its floor), `n` tasks running, nothing queued: the set-up of
/// the registration tests.
fn ready_pool(
    n: u32,
) -> (
    Worker,
    watch::Sender<WorkerSettings>,
    Arc<FakeDemand>,
    Arc<FakeFleet>,
    Arc<Context>,
) {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(n),
        vms: ready_vms(n),
    });
    let demand = FakeDemand::new(0, n);
    let (w, tx, ctx) = worker(
        demand.clone(),
        fleet.clone(),
        class_config(n, Duration::ZERO),
    );
    (w, tx, demand, fleet, ctx)
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
async fn a_demand_error_keeps_the_pool_and_replaces_finished_vms() {
    let mut vms = running_vms(4);
    vms[3].phase = VmPhase::Stopped;
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(4),
        vms,
    });
    let demand = FakeDemand::new(0, 0);
    let (mut w, _tx, ctx) = worker(
        demand.clone(),
        fleet.clone(),
        class_config(1, Duration::ZERO),
    );
    demand.set(Err(PortError::transient("HTTP 503")), Ok(0));
    let outcome = w.cycle(at(0)).await;
    let CycleOutcome::Degraded {
        operation: Operation::UnclaimedTasks,
        decision,
        report: Some(_),
        ..
    } = outcome
    else {
        panic!("expected a degraded cycle that applied a plan: {outcome:?}")
    };
    assert!(decision.degraded());
    assert_eq!(
        decision.desired, 4,
        "kept at its size, not scaled in to minReplicas 1"
    );
    assert_eq!(fleet.calls(), ["ensure", "observe", "apply"]);
    let plan = fleet.plans.lock().expect("lock")[0].clone();
    assert_eq!(plan.target_replicas, 4);
    assert_eq!(
        plan.recycle
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["uid-3"],
        "the stopped VM is replaced: {plan:?}"
    );
    assert!(plan.retire.is_empty(), "{plan:?}");

    // A pool asking for more VMs than run is kept as it is while running tasks fail too.
    *fleet.state.lock().expect("lock") = FleetState {
        spec_replicas: Some(8),
        vms: running_vms(2),
    };
    demand.set(Ok(0), Err(PortError::permanent("HTTP 401")));
    let outcome = w.cycle(at(1)).await;
    let CycleOutcome::Degraded {
        operation: Operation::RunningTasks,
        decision,
        report: None,
        ..
    } = outcome
    else {
        panic!("expected a degraded cycle with nothing to do: {outcome:?}")
    };
    assert_eq!(decision.plan.target_replicas, 8, "no scale-in while blind");
    assert_eq!(fleet.calls().iter().filter(|c| **c == "apply").count(), 1);
    // Once demand is known again (no tasks), the same pool follows it down to the live VMs.
    demand.set(Ok(0), Ok(0));
    let CycleOutcome::Done { decision, .. } = w.cycle(at(2)).await else {
        panic!("cycle failed")
    };
    assert_eq!(decision.plan.target_replicas, 2);
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
async fn behind_a_retry_after_circleci_is_not_asked_yet_the_pool_is_kept_every_cycle() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(4),
        vms: running_vms(4),
    });
    let demand = FakeDemand::new(0, 0);
    let (mut w, _tx, _ctx) = worker(
        demand.clone(),
        fleet.clone(),
        class_config(1, Duration::ZERO),
    );
    let polls = || *demand.polls.lock().expect("lock");
    demand.set(
        Err(PortError::transient("HTTP 429").with_retry_after(Duration::from_secs(120))),
        Ok(0),
    );
    let outcome = w.cycle(at(0)).await;
    assert!(
        matches!(outcome, CycleOutcome::Degraded { .. }),
        "{outcome:?}"
    );
    assert_eq!(polls(), 1);
    // A VM finishes its job during the pause: the next cycle replaces it, without a call.
    fleet.state.lock().expect("lock").vms[2].phase = VmPhase::Stopped;
    let outcome = w.cycle(at(1)).await;
    let CycleOutcome::Degraded {
        operation: Operation::UnclaimedTasks,
        report: Some(_),
        ..
    } = outcome
    else {
        panic!("expected a degraded cycle that replaced the stopped VM: {outcome:?}")
    };
    let plan = fleet.plans.lock().expect("lock")[0].clone();
    assert_eq!(plan.target_replicas, 4);
    assert_eq!(
        plan.recycle
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["uid-2"]
    );
    demand.set(Ok(3), Ok(4));
    for s in 2..120 {
        let outcome = w.cycle(at(s)).await;
        assert!(
            matches!(outcome, CycleOutcome::Degraded { .. }),
            "at {s}s: {outcome:?}"
        );
    }
    assert_eq!(polls(), 1, "no call before the Retry-After ends");
    let outcome = w.cycle(at(120)).await;
    assert!(matches!(outcome, CycleOutcome::Done { .. }), "{outcome:?}");
    assert_eq!(polls(), 2);
    assert_eq!(
        fleet.calls().iter().filter(|c| **c == "observe").count(),
        121,
        "the pool was observed every cycle"
    );
}

#[tokio::test]
async fn a_cold_start_with_circleci_failing_creates_the_pool_at_its_floor() {
    let fleet = FakeFleet::with(FleetState::default());
    let demand = FakeDemand::new(0, 0);
    demand.set(Err(PortError::permanent("HTTP 401")), Ok(0));
    let (mut w, _tx, ctx) = worker(demand, fleet.clone(), class_config(3, Duration::ZERO));
    let outcome = w.cycle(at(0)).await;
    assert!(
        matches!(
            outcome,
            CycleOutcome::Degraded {
                operation: Operation::UnclaimedTasks,
                report: Some(_),
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(fleet.calls(), ["ensure", "observe", "apply"]);
    assert_eq!(fleet.plans.lock().expect("lock")[0].target_replicas, 3);
    // Never polled: the staleness gauge exists, at 0, so an alert on it fires.
    let text = ctx.metrics.encode();
    assert!(
        text.contains("provisioner_last_poll_timestamp_seconds{resource_class=\"org/runner\"} 0.0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_kubernetes_error_during_a_demand_error_fails_the_cycle_without_writes() {
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(3),
        vms: running_vms(3),
    });
    *fleet.observe_error.lock().expect("lock") = Some(PortError::transient("API server timeout"));
    let demand = FakeDemand::new(0, 0);
    demand.set(Err(PortError::transient("HTTP 503")), Ok(0));
    let (mut w, _tx, _ctx) = worker(demand, fleet.clone(), class_config(1, Duration::ZERO));
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

/// A class of its own, so its metrics and log lines are told apart from other tests'.
fn own_class(name: &str, min: u32) -> ClassConfig {
    ClassConfig {
        name: ResourceClass::parse(name).expect("valid class"),
        ..class_config(min, Duration::ZERO)
    }
}

#[tokio::test]
async fn stale_demand_is_logged_as_degraded_with_its_age_and_the_last_poll_time_stays() {
    let logs = Captured::global();
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(2),
        vms: running_vms(2),
    });
    let demand = FakeDemand::new(0, 0);
    let ctx = Arc::new(Context::new(StdDuration::from_secs(60), None));
    let (_tx, rx) = watch::channel(settings(
        demand.clone(),
        fleet,
        own_class("org/stale", 2),
        true,
    ));
    let mut w = Worker::new(rx, ctx.clone());
    let _ = w.cycle(at(0)).await;
    demand.set(Err(PortError::transient("HTTP 503")), Ok(0));
    let _ = w.cycle(at(45)).await;
    let lines = logs.lines_with("org/stale");
    let degraded: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("running degraded"))
        .collect();
    assert_eq!(degraded.len(), 1, "{lines:?}");
    assert!(
        degraded[0].contains("stale_for_seconds=45") && degraded[0].contains("WARN"),
        "{degraded:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("failed to get unclaimed tasks") && l.contains("ERROR")),
        "the seed's error line stays: {lines:?}"
    );
    let text = ctx.metrics.encode();
    assert!(
        text.contains(
            "provisioner_last_poll_timestamp_seconds{resource_class=\"org/stale\"} 1700000000.0"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_vm_whose_runner_never_registers_is_reclaimed_and_a_connected_ones_is_not() {
    let (mut w, _tx, demand, _fleet, ctx) = ready_pool(2);
    demand.connected(&["pool-0"]);
    // Within the 10-minute registration grace: nothing reclaimed.
    let CycleOutcome::Done { decision, .. } = w.cycle(at(0)).await else {
        panic!("cycle failed")
    };
    assert_eq!(decision.plan.reclaims().count(), 0);
    let CycleOutcome::Done { decision, report } = w.cycle(at(601)).await else {
        panic!("cycle failed")
    };
    let reclaimed: Vec<(&str, Reclaim)> = decision
        .plan
        .reclaims()
        .map(|(vm, why)| (vm.id.as_str(), why))
        .collect();
    assert_eq!(reclaimed, [("uid-1", Reclaim::Unregistered)]);
    assert!(report.is_some());
    assert_eq!(demand.runner_calls(), 2);
    let text = ctx.metrics.encode();
    assert!(
        text.contains(
            "provisioner_vms_reclaimed_total{resource_class=\"org/runner\",reason=\"unregistered\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_vm_is_judged_unregistered_only_on_a_runner_list_fetched_that_cycle() {
    let (mut w, _tx, demand, _fleet, _ctx) = ready_pool(1);
    demand.connected(&[]);
    // A list at 595 s (grace ends at 600 s), none again before 625 s.
    let _ = w.cycle(at(595)).await;
    for s in 596..625 {
        let CycleOutcome::Done { decision, .. } = w.cycle(at(s)).await else {
            panic!("cycle failed")
        };
        assert_eq!(
            decision.plan.reclaims().count(),
            0,
            "reclaimed at {s} s on a list from 595 s"
        );
    }
    assert_eq!(demand.runner_calls(), 1);
    let CycleOutcome::Done { decision, .. } = w.cycle(at(625)).await else {
        panic!("cycle failed")
    };
    assert_eq!(demand.runner_calls(), 2);
    assert_eq!(decision.plan.reclaims().count(), 1);
}

#[tokio::test]
async fn the_runner_list_is_fetched_at_most_every_30_s_and_its_failure_fails_nothing() {
    let (mut w, _tx, demand, _fleet, ctx) = ready_pool(2);
    demand.set_runners(Err(PortError::transient("HTTP 502")));
    for s in 600..=660 {
        let outcome = w.cycle(at(s)).await;
        let CycleOutcome::Done { decision, .. } = outcome else {
            panic!("a failed runner list failed the cycle: {outcome:?}")
        };
        assert_eq!(decision.plan.reclaims().count(), 0, "check off at {s} s");
    }
    assert_eq!(demand.runner_calls(), 3, "at 600, 630 and 660 s");
    let text = ctx.metrics.encode();
    assert!(
        text.contains("operation=\"connected_runners\",kind=\"transient\"} 3"),
        "{text}"
    );
    // Not asked while every running VM is known to be registered.
    demand.connected(&["pool-0", "pool-1"]);
    let _ = w.cycle(at(700)).await;
    let _ = w.cycle(at(800)).await;
    assert_eq!(demand.runner_calls(), 4);
}

#[tokio::test]
async fn a_runner_seen_once_stays_registered_and_a_reused_name_is_a_new_vm() {
    let (mut w, _tx, demand, fleet, _ctx) = ready_pool(1);
    demand.connected(&["pool-0"]);
    let _ = w.cycle(at(10)).await;
    // Its runner no longer listed (busy, or the list lags): it registered once, it stays.
    demand.connected(&[]);
    let CycleOutcome::Done { decision, .. } = w.cycle(at(700)).await else {
        panic!("cycle failed")
    };
    assert_eq!(decision.plan.reclaims().count(), 0);
    // The pool re-creates the slot under the same name with a new UID, whose runner never
    // connects: judged on its own.
    fleet.state.lock().expect("lock").vms[0].id = VmId::new("uid-0-new");
    let CycleOutcome::Done { decision, .. } = w.cycle(at(800)).await else {
        panic!("cycle failed")
    };
    let reclaimed: Vec<&str> = decision
        .plan
        .reclaims()
        .map(|(vm, _)| vm.id.as_str())
        .collect();
    assert_eq!(reclaimed, ["uid-0-new"]);
}

#[tokio::test]
async fn without_a_runner_list_nothing_is_reclaimed_as_unregistered() {
    let (mut w, _tx, _demand, _fleet, _ctx) = ready_pool(2);
    // The default port answer: unknown.
    for s in [600, 3600, 7200] {
        let CycleOutcome::Done { decision, .. } = w.cycle(at(s)).await else {
            panic!("cycle failed")
        };
        assert_eq!(decision.plan.reclaims().count(), 0);
    }
}

#[tokio::test]
async fn the_registration_breaker_opening_and_closing_is_logged_and_exported() {
    let logs = Captured::global();
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(3),
        vms: ready_vms(3),
    });
    let demand = FakeDemand::new(9, 0);
    demand.connected(&[]);
    let ctx = Arc::new(Context::new(StdDuration::from_secs(60), None));
    let (_tx, rx) = watch::channel(settings(
        demand.clone(),
        fleet.clone(),
        own_class("org/breaker", 1),
        true,
    ));
    let mut w = Worker::new(rx, ctx.clone());
    let gauge = |ctx: &Context| {
        let text = ctx.metrics.encode();
        text.lines()
            .find(|l| {
                l.starts_with(
                    "provisioner_registration_breaker_open{resource_class=\"org/breaker\"}",
                )
            })
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
    };
    let CycleOutcome::Done { decision, .. } = w.cycle(at(0)).await else {
        panic!("cycle failed")
    };
    assert!(!decision.breaker_open);
    assert_eq!(gauge(&ctx).as_deref(), Some("0"));
    // All three never registered: reclaimed, and the breaker opens (threshold 3).
    let CycleOutcome::Done { decision, .. } = w.cycle(at(601)).await else {
        panic!("cycle failed")
    };
    assert_eq!(decision.plan.reclaims().count(), 3);
    assert!(decision.breaker_open);
    assert_eq!(decision.desired, 1, "held at the floor with 9 tasks queued");
    assert_eq!(gauge(&ctx).as_deref(), Some("1"));
    // A newer VM's runner registers: the breaker closes.
    let mut vm = ready_vms(1).remove(0);
    vm.id = VmId::new("uid-new");
    vm.name = Arc::from("pool-new");
    vm.created_at = at(700);
    vm.ready_at = Some(at(760));
    *fleet.state.lock().expect("lock") = FleetState {
        spec_replicas: Some(1),
        vms: vec![vm],
    };
    demand.connected(&["pool-new"]);
    let CycleOutcome::Done { decision, .. } = w.cycle(at(800)).await else {
        panic!("cycle failed")
    };
    assert!(!decision.breaker_open);
    assert_eq!(gauge(&ctx).as_deref(), Some("0"));
    let lines = logs.lines_with("org/breaker");
    let opened = lines
        .iter()
        .filter(|l| l.contains("registration breaker open"))
        .count();
    let closed = lines
        .iter()
        .filter(|l| l.contains("registration breaker closed"))
        .count();
    assert_eq!((opened, closed), (1, 1), "{lines:?}");
}

#[tokio::test]
async fn the_warm_count_of_the_predictive_control_is_exported_and_logged() {
    let logs = Captured::global();
    let fleet = FakeFleet::with(FleetState {
        spec_replicas: Some(1),
        vms: running_vms(1),
    });
    let demand = FakeDemand::new(0, 0);
    let mut class = own_class("org/warm", 1);
    class.scaling.predictive = Some(Predictive {
        lookahead: Some(Duration::from_secs(600)),
        ..Predictive::default()
    });
    let ctx = Arc::new(Context::new(StdDuration::from_secs(60), None));
    let (_tx, rx) = watch::channel(settings(demand.clone(), fleet, class, true));
    let mut w = Worker::new(rx, ctx.clone());
    // Two tasks arrive every 10 s for 5 minutes.
    let mut warm = 0;
    for i in 0..30 {
        demand.set(Ok(2 * (i + 1)), Ok(0));
        let CycleOutcome::Done { decision, .. } = w.cycle(at(10 * i64::from(i))).await else {
            panic!("cycle failed")
        };
        warm = decision.warm;
    }
    assert!(warm > 0, "a steady arrival rate asks for warm VMs");
    let text = ctx.metrics.encode();
    assert!(
        text.contains(&format!(
            "provisioner_warm_vms{{resource_class=\"org/warm\"}} {warm}"
        )),
        "{text}"
    );
    let lines = logs.lines_with("org/warm");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("scaler cycle") && l.contains(&format!("warm_vms={warm}"))),
        "{lines:?}"
    );
}
