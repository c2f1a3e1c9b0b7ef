//! The wait and cost estimator against a small world that knows every job: a FIFO queue and a
//! pool of one-job VMs on a one-second tick, observed once a tick as the controller observes
//! CircleCI and KubeVirt. Examples first, then properties over random arrivals, job lengths,
//! boot times and pool caps.

use std::collections::VecDeque;
use std::sync::Arc;

use proptest::prelude::*;
use provisioner_core::estimate::{EstimateSettings, Estimator, Step, Totals};
use provisioner_core::{Demand, Duration, Timestamp, Vm, VmId, VmPhase};

const TICK: i64 = 1000;

#[derive(Debug, Clone)]
struct ModelVm {
    id: usize,
    created: i64,
    ready_tick: i64,
    phase: VmPhase,
    idle_since: i64,
    job_ends: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct ModelJob {
    arrival: i64,
    duration: i64,
    claimed: Option<i64>,
    warm: bool,
}

/// A tick-driven world: in each tick boots finish, jobs end (their VM stops), idle VMs time
/// out, jobs arrive, the oldest waiting jobs go to the VMs idle longest; then it is observed,
/// and the controller tops the pool up to `unclaimed + running + buffer` live VMs (at most
/// `cap`) and deletes stopped ones.
struct Model {
    jobs: Vec<ModelJob>,
    queue: VecDeque<usize>,
    vms: Vec<ModelVm>,
    next_id: usize,
    boot_ticks: Vec<i64>,
    cap: usize,
    buffer: usize,
    idle_timeout: Option<i64>,
    created: usize,
    idle_outs: usize,
}

impl Model {
    fn new(
        arrivals: &[(u8, i64)],
        boot_ticks: Vec<i64>,
        cap: usize,
        buffer: usize,
        idle_timeout: Option<i64>,
    ) -> Self {
        // Tick 0 is the first look; jobs arrive from tick 1.
        let jobs = arrivals
            .iter()
            .enumerate()
            .flat_map(|(i, (n, duration))| {
                (0..*n).map(move |_| ModelJob {
                    arrival: i as i64 + 1,
                    duration: *duration,
                    claimed: None,
                    warm: false,
                })
            })
            .collect();
        Self {
            jobs,
            queue: VecDeque::new(),
            vms: Vec::new(),
            next_id: 0,
            boot_ticks,
            cap,
            buffer,
            idle_timeout,
            created: 0,
            idle_outs: 0,
        }
    }

    fn tick(&mut self, t: i64) {
        for vm in &mut self.vms {
            if vm.phase == VmPhase::Starting && vm.ready_tick == t {
                vm.phase = VmPhase::Running;
                vm.idle_since = t;
            }
            if vm.job_ends == Some(t) {
                vm.phase = VmPhase::Stopped;
                vm.job_ends = None;
            }
            if let Some(timeout) = self.idle_timeout
                && vm.phase == VmPhase::Running
                && vm.job_ends.is_none()
                && t - vm.idle_since >= timeout
            {
                vm.phase = VmPhase::Stopped;
                self.idle_outs += 1;
            }
        }
        for (i, job) in self.jobs.iter().enumerate() {
            if job.arrival == t {
                self.queue.push_back(i);
            }
        }
        let mut idle: Vec<usize> = (0..self.vms.len())
            .filter(|v| self.vms[*v].phase == VmPhase::Running && self.vms[*v].job_ends.is_none())
            .collect();
        idle.sort_by_key(|v| (self.vms[*v].idle_since, self.vms[*v].id));
        for v in idle {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            let vm = &mut self.vms[v];
            let j = &mut self.jobs[job];
            j.claimed = Some(t);
            j.warm = j.arrival == t && vm.idle_since < t;
            vm.job_ends = Some(t + j.duration);
        }
    }

    fn running(&self) -> u32 {
        self.vms.iter().filter(|v| v.job_ends.is_some()).count() as u32
    }

    fn observe(&self, t: i64) -> (Timestamp, Demand, Vec<Vm>) {
        let vms = self
            .vms
            .iter()
            .map(|v| Vm {
                id: VmId::new(format!("uid-{}", v.id)),
                name: Arc::from(format!("pool-{}", v.id)),
                created_at: Timestamp::from_unix_millis(v.created),
                ready_at: None,
                phase: v.phase,
                deleting: false,
                failing: None,
                registered: None,
            })
            .collect();
        let demand = Demand {
            unclaimed: self.queue.len() as u32,
            running: self.running(),
        };
        (Timestamp::from_unix_millis(t * TICK), demand, vms)
    }

    fn control(&mut self, t: i64) {
        self.vms.retain(|v| v.phase != VmPhase::Stopped);
        let live = self.vms.len();
        let want = (self.queue.len() + self.running() as usize + self.buffer).min(self.cap);
        for _ in live..want {
            let boot = self.boot_ticks[self.created % self.boot_ticks.len()];
            self.vms.push(ModelVm {
                id: self.next_id,
                created: t * TICK,
                ready_tick: t + boot,
                phase: VmPhase::Starting,
                idle_since: 0,
                job_ends: None,
            });
            self.next_id += 1;
            self.created += 1;
        }
    }
}

struct Run {
    totals: Totals,
    steps: Vec<Step>,
    model: Model,
    last: i64,
}

fn run(mut model: Model, ticks: i64, settings: EstimateSettings) -> Run {
    let mut estimator = Estimator::new(settings);
    let mut steps = Vec::new();
    for t in 0..ticks {
        model.tick(t);
        let (at, demand, vms) = model.observe(t);
        steps.push(estimator.observe(at, demand, &vms));
        model.control(t);
    }
    Run {
        totals: estimator.totals().clone(),
        steps,
        model,
        last: ticks - 1,
    }
}

fn no_idle_timeout() -> EstimateSettings {
    EstimateSettings::new(None)
}

/// Waits the jobs really had up to the last look (a job still waiting counts until then).
fn true_waiting_seconds(r: &Run) -> f64 {
    r.model
        .jobs
        .iter()
        .filter(|j| j.arrival <= r.last)
        .map(|j| (j.claimed.unwrap_or(r.last).min(r.last) - j.arrival) as f64)
        .sum()
}

fn claimed(r: &Run) -> impl Iterator<Item = &ModelJob> {
    r.model.jobs.iter().filter(|j| j.claimed.is_some())
}

#[test]
fn a_cold_start_waits_for_the_boot_and_a_warm_start_does_not() {
    // One job at tick 1: it waits for the buffer VM created at tick 0 to finish its 5-tick
    // boot. One at tick 20: the VM created for the first job idles by then.
    let mut arrivals = vec![(0u8, 0i64); 25];
    arrivals[0] = (1, 3);
    arrivals[19] = (1, 3);
    let model = Model::new(&arrivals, vec![5], 4, 1, None);
    let r = run(model, 30, no_idle_timeout());
    assert_eq!(r.totals.jobs_started, 2);
    assert_eq!(r.totals.warm_jobs, 1);
    // Seen waiting at ticks 1..=4: claimed at 5.
    assert_eq!(r.totals.waiting_job_seconds, 4.0);
    assert_eq!(r.totals.mean_wait_seconds(), Some(2.0));
    assert_eq!(r.totals.warm_share(), Some(0.5));
    let waits: Vec<(f64, u32)> = r.steps.iter().flat_map(|s| s.waits.clone()).collect();
    assert_eq!(waits, vec![(4.0, 1), (0.0, 1)]);
    // Each 5-tick boot is seen half a tick short: readiness is put between two looks.
    assert!(r.totals.boots >= 2, "{:?}", r.totals);
    for boot in r.steps.iter().flat_map(|s| s.boot_seconds.clone()) {
        assert_eq!(boot, 4.5);
    }
}

#[test]
fn a_vm_stopping_at_its_idle_timeout_idled_out_and_started_no_job() {
    let settings = EstimateSettings {
        idle_out_slack: Duration::from_secs(2),
        ..EstimateSettings::new(Some(Duration::from_secs(10)))
    };
    let mut e = Estimator::new(settings);
    let vm = |phase| Vm {
        id: VmId::new("uid-1"),
        name: Arc::from("pool-0"),
        created_at: Timestamp::from_unix_millis(0),
        ready_at: None,
        phase,
        deleting: false,
        failing: None,
        registered: None,
    };
    let at = |s: i64| Timestamp::from_unix_millis(s * 1000);
    let idle = Demand::default();
    e.observe(at(0), idle, &[vm(VmPhase::Starting)]);
    e.observe(at(14), idle, &[vm(VmPhase::Starting)]);
    let step = e.observe(at(16), idle, &[vm(VmPhase::Running)]);
    assert_eq!(step.boot_seconds, vec![15.0]);
    e.observe(at(40), idle, &[vm(VmPhase::Running)]);
    // Ready at ~15 s, stopped between 40 s and 50 s: 30 s up, far from the 10 s timeout.
    let step = e.observe(at(50), idle, &[vm(VmPhase::Stopped)]);
    assert_eq!((step.job_ends, step.idle_outs), (1, 0));

    let mut e = Estimator::new(settings);
    e.observe(at(0), idle, &[vm(VmPhase::Starting)]);
    e.observe(at(2), idle, &[vm(VmPhase::Running)]);
    // Ready at ~1 s, gone (stopped and deleted) between 10 s and 12 s: the idle timeout.
    e.observe(at(10), idle, &[vm(VmPhase::Running)]);
    let step = e.observe(at(12), idle, &[]);
    assert_eq!((step.job_ends, step.idle_outs), (0, 1));
    assert_eq!(e.totals().jobs_started, 0);
    assert_eq!(e.totals().mean_wait_seconds(), None);
}

#[test]
fn a_vm_that_says_when_it_became_ready_gives_its_exact_boot_time() {
    let mut e = Estimator::new(no_idle_timeout());
    let vm = |phase, ready_at: Option<i64>| Vm {
        id: VmId::new("uid-1"),
        name: Arc::from("pool-0"),
        created_at: Timestamp::from_unix_millis(1_000),
        ready_at: ready_at.map(Timestamp::from_unix_millis),
        phase,
        deleting: false,
        failing: None,
        registered: None,
    };
    let idle = Demand::default();
    e.observe(Timestamp::from_unix_millis(0), idle, &[]);
    e.observe(
        Timestamp::from_unix_millis(10_000),
        idle,
        &[vm(VmPhase::Starting, None)],
    );
    let step = e.observe(
        Timestamp::from_unix_millis(120_000),
        idle,
        &[vm(VmPhase::Running, Some(98_500))],
    );
    assert_eq!(step.boot_seconds, vec![97.5]);
    // Seen for the first time already up: its own ready time too.
    let other = Vm {
        id: VmId::new("uid-2"),
        ..vm(VmPhase::Running, Some(119_000))
    };
    let step = e.observe(
        Timestamp::from_unix_millis(130_000),
        idle,
        &[vm(VmPhase::Running, Some(98_500)), other],
    );
    assert_eq!(step.boot_seconds, vec![118.0]);
}

#[test]
fn vm_seconds_split_by_phase_and_running_count() {
    let mut e = Estimator::new(no_idle_timeout());
    let vm = |i: usize, phase| Vm {
        id: VmId::new(format!("uid-{i}")),
        name: Arc::from(format!("pool-{i}")),
        created_at: Timestamp::from_unix_millis(0),
        ready_at: None,
        phase,
        deleting: i == 3,
        failing: None,
        registered: None,
    };
    let vms = [
        vm(0, VmPhase::Starting),
        vm(1, VmPhase::Running),
        vm(2, VmPhase::Running),
        vm(3, VmPhase::Stopped),
        vm(4, VmPhase::FailedToStart),
    ];
    let demand = Demand {
        unclaimed: 2,
        running: 1,
    };
    e.observe(Timestamp::from_unix_millis(0), demand, &vms);
    let step = e.hold(Timestamp::from_unix_millis(10_000));
    assert_eq!(step.waiting_job_seconds, 20.0);
    assert_eq!(step.vm_seconds.starting, 10.0);
    assert_eq!(step.vm_seconds.busy, 10.0);
    assert_eq!(step.vm_seconds.idle, 10.0);
    assert_eq!(step.vm_seconds.stopped, 20.0);
    assert_eq!(step.vm_seconds.powered_on(), 30.0);
    // A failed start already there at the first look is not a new one.
    assert_eq!(e.totals().failed_starts, 0);
    let step = e.observe(
        Timestamp::from_unix_millis(12_000),
        demand,
        &[vm(0, VmPhase::FailedToStart), vm(5, VmPhase::FailedToStart)],
    );
    assert_eq!(step.failed_starts, 2);
    // Holding to 10 s already counted 10 s: the observation adds the last 2 s.
    assert_eq!(step.waiting_job_seconds, 4.0);
}

#[test]
fn an_idle_vm_while_jobs_wait_past_the_grace_counts_as_unregistered() {
    let settings = EstimateSettings {
        register_grace: Duration::from_secs(60),
        ..no_idle_timeout()
    };
    let mut e = Estimator::new(settings);
    let vm = |phase| Vm {
        id: VmId::new("uid-1"),
        name: Arc::from("pool-0"),
        created_at: Timestamp::from_unix_millis(0),
        ready_at: None,
        phase,
        deleting: false,
        failing: None,
        registered: None,
    };
    let at = |s: i64| Timestamp::from_unix_millis(s * 1000);
    let waiting = Demand {
        unclaimed: 3,
        running: 0,
    };
    e.observe(at(0), waiting, &[vm(VmPhase::Starting)]);
    // Ready at ~10 s: its agent may still be starting.
    assert_eq!(
        e.observe(at(20), waiting, &[vm(VmPhase::Running)])
            .unregistered,
        0
    );
    assert_eq!(
        e.observe(at(60), waiting, &[vm(VmPhase::Running)])
            .unregistered,
        0
    );
    assert_eq!(
        e.observe(at(80), waiting, &[vm(VmPhase::Running)])
            .unregistered,
        1
    );
    // Busy, or nothing waiting: not stranded.
    let busy = Demand {
        unclaimed: 3,
        running: 1,
    };
    assert_eq!(
        e.observe(at(90), busy, &[vm(VmPhase::Running)])
            .unregistered,
        0
    );
    assert_eq!(
        e.observe(at(100), Demand::default(), &[vm(VmPhase::Running)])
            .unregistered,
        0
    );
}

#[test]
fn an_observation_from_the_past_is_ignored() {
    let mut e = Estimator::new(no_idle_timeout());
    let demand = Demand {
        unclaimed: 1,
        running: 0,
    };
    e.observe(Timestamp::from_unix_millis(10_000), demand, &[]);
    assert_eq!(
        e.observe(Timestamp::from_unix_millis(5_000), demand, &[]),
        Step::default()
    );
    let step = e.observe(Timestamp::from_unix_millis(11_000), demand, &[]);
    assert_eq!(step.waiting_job_seconds, 1.0);
}

fn arrivals() -> impl Strategy<Value = Vec<(u8, i64)>> {
    prop::collection::vec(
        (prop::sample::select(vec![0u8, 0, 0, 1, 1, 2, 3]), 1i64..40),
        1..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// On a tick-aligned world without idle timeouts, what the controller sees pins the
    /// totals down exactly: jobs started, jobs that found a warm VM and waiting job-seconds;
    /// the per-job waits add up to the true ones, except a third of a tick for each job that
    /// arrived and got a VM becoming ready in the same tick.
    #[test]
    fn exact_on_a_tick_aligned_world(
        arrivals in arrivals(),
        boots in prop::collection::vec(1i64..12, 1..6),
        cap in 1usize..20,
        buffer in 0usize..4,
    ) {
        let ticks = arrivals.len() as i64 + 60;
        let r = run(Model::new(&arrivals, boots, cap, buffer, None), ticks, no_idle_timeout());
        let started = claimed(&r).count() as u64;
        let warm = claimed(&r).filter(|j| j.warm).count() as u64;
        prop_assert_eq!(r.totals.jobs_started, started);
        prop_assert_eq!(r.totals.warm_jobs, warm);
        prop_assert!((r.totals.waiting_job_seconds - true_waiting_seconds(&r)).abs() < 1e-6);
        let waits: Vec<(f64, u32)> = r.steps.iter().flat_map(|s| s.waits.clone()).collect();
        prop_assert_eq!(waits.iter().map(|w| u64::from(w.1)).sum::<u64>(), started);
        let cold_same_tick = claimed(&r)
            .filter(|j| !j.warm && j.claimed == Some(j.arrival))
            .count() as f64;
        let true_sum: f64 = claimed(&r)
            .map(|j| (j.claimed.unwrap_or(0) - j.arrival) as f64)
            .sum();
        let estimated_sum: f64 = waits.iter().map(|(w, n)| w * f64::from(*n)).sum();
        prop_assert!(
            (estimated_sum - true_sum - cold_same_tick / 3.0).abs() < 1e-6,
            "estimated {} true {} cold same-tick {}", estimated_sum, true_sum, cold_same_tick
        );
        prop_assert_eq!(r.totals.job_ends + u64::from(r.model.running()), started);
        prop_assert_eq!(r.totals.idle_outs, 0);
    }

    /// With idle timeouts, VMs idle out in between jobs; a job is mistaken for an idle-out only
    /// when its VM stopped within the tolerance of the timeout, so jobs started are never
    /// overcounted and every VM stop is either a job end or an idle-out.
    #[test]
    fn idle_outs_are_told_apart_from_job_ends(
        arrivals in arrivals(),
        boots in prop::collection::vec(1i64..12, 1..6),
        cap in 1usize..20,
        buffer in 0usize..4,
        timeout in 5i64..40,
    ) {
        let ticks = arrivals.len() as i64 + 60;
        let settings = EstimateSettings {
            idle_out_slack: Duration::ZERO,
            ..EstimateSettings::new(Some(Duration::from_secs(timeout as u64)))
        };
        let model = Model::new(&arrivals, boots, cap, buffer, Some(timeout));
        let r = run(model, ticks, settings);
        let started = claimed(&r).count() as u64;
        prop_assert!(r.totals.jobs_started <= started);
        prop_assert!(r.totals.idle_outs >= r.model.idle_outs as u64);
        // Each misread stop both loses a job and adds an idle-out.
        let misread = r.totals.idle_outs - r.model.idle_outs as u64;
        prop_assert!(started - r.totals.jobs_started <= misread);
        prop_assert!(r.totals.warm_jobs <= r.totals.jobs_started);
    }

    /// Whatever it is fed (phases jumping about, VMs vanishing, times repeating), the
    /// estimator's totals stay consistent: finite, non-negative, warm jobs among started ones,
    /// one wait per job started, VM-seconds adding up to the VMs seen times the time held.
    #[test]
    fn consistent_on_arbitrary_observations(
        looks in prop::collection::vec(
            (
                0i64..5_000,
                0u32..20,
                0u32..20,
                prop::collection::vec((0usize..12, 0usize..4, 0i64..100_000), 0..12),
            ),
            1..60,
        ),
        timeout in prop::option::of(0u64..120),
    ) {
        let mut e = Estimator::new(EstimateSettings::new(timeout.map(Duration::from_secs)));
        let mut t = 0;
        let mut vm_seconds = 0.0;
        let mut previous: Option<(i64, usize)> = None;
        for (gap, unclaimed, running, vms) in looks {
            t += gap;
            let mut seen = std::collections::HashSet::new();
            let vms: Vec<Vm> = vms
                .into_iter()
                .filter(|(id, _, _)| seen.insert(*id))
                .map(|(id, phase, created)| Vm {
                    id: VmId::new(format!("uid-{id}")),
                    name: Arc::from(format!("pool-{id}")),
                    created_at: Timestamp::from_unix_millis(created),
                    ready_at: None,
                    phase: VmPhase::ALL[phase],
                    deleting: false,
                    failing: None,
                    registered: None,
                })
                .collect();
            if let Some((at, n)) = previous {
                vm_seconds += n as f64 * (t - at) as f64 / 1000.0;
            }
            let step = e.observe(
                Timestamp::from_unix_millis(t),
                Demand { unclaimed, running },
                &vms,
            );
            previous = Some((t, vms.len()));
            prop_assert!(step.warm_jobs <= step.jobs_started);
            prop_assert_eq!(
                step.waits.iter().map(|w| u64::from(w.1)).sum::<u64>(),
                step.jobs_started
            );
            prop_assert!(step.waits.iter().all(|(w, _)| w.is_finite() && *w >= 0.0));
            prop_assert!(step.unregistered <= unclaimed);
        }
        let totals = e.totals();
        prop_assert!(totals.warm_jobs <= totals.jobs_started);
        let s = totals.vm_seconds;
        prop_assert!((s.powered_on() + s.stopped - vm_seconds).abs() < 1e-6);
        prop_assert!(totals.waiting_job_seconds.is_finite() && totals.waiting_job_seconds >= 0.0);
        prop_assert!(totals.boot_seconds.is_finite());
    }
}
