//! A fleet that exists only in memory, on the wall clock, for the controller's `--dry-run`
//! when no cluster is reachable: it shows what the pool would do under real demand.
//!
//! Call [`ShadowFleet::advance`] each cycle, before `observe`, with the time and the demand the
//! controller just read. VMs boot for a drawn time, then run; as many as there are running
//! tasks are busy; a busy VM whose task ended (running demand dropped) powers off, as does an
//! idle one after the class's `idleTimeout`. Plans are applied as the pool would: replicas
//! first, only finished VMs deleted, recycled ones replaced under the same name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use provisioner_core::{
    ApplyReport, ClassConfig, Demand, Duration, FleetState, Plan, PortError, ResourceClass,
    Timestamp, Vm, VmFleet, VmId, VmPhase, vm_name,
};

use crate::options::BootTime;
use crate::rng::SplitMix64;
use crate::world::pool_name;

#[derive(Debug)]
struct ShadowVm {
    id: VmId,
    name: Arc<str>,
    index: u32,
    created_at: Timestamp,
    ready_at: Timestamp,
    phase: VmPhase,
    busy: bool,
    idle_since: Timestamp,
}

#[derive(Debug, Default)]
struct ShadowPool {
    replicas: Option<u32>,
    vms: Vec<ShadowVm>,
    idle_timeout: Option<Duration>,
    now: Timestamp,
}

#[derive(Debug)]
struct ShadowState {
    boot: BootTime,
    rng: SplitMix64,
    next_uid: u64,
    pools: BTreeMap<ResourceClass, ShadowPool>,
}

/// The in-memory pool of every class. Deterministic for a seed and a sequence of calls.
#[derive(Debug)]
pub struct ShadowFleet {
    state: Mutex<ShadowState>,
}

impl ShadowFleet {
    pub fn new(boot_time: BootTime, seed: u64) -> Self {
        Self {
            state: Mutex::new(ShadowState {
                boot: boot_time,
                rng: SplitMix64::stream(seed, 0x5AD0),
                next_uid: 0,
                pools: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ShadowState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Move the class's pool to `now` under `demand` (read from CircleCI this cycle).
    pub fn advance(&self, class: &ResourceClass, now: Timestamp, demand: Demand) {
        let mut state = self.lock();
        let pool = state.pools.entry(class.clone()).or_default();
        pool.now = pool.now.max(now);
        for vm in &mut pool.vms {
            if vm.phase == VmPhase::Starting && vm.ready_at <= now {
                vm.phase = VmPhase::Running;
                vm.idle_since = vm.ready_at;
            }
        }
        let mut busy = pool.vms.iter().filter(|v| v.busy).count() as u32;
        // Tasks that ended: their VMs power off (newest-busy first is unknowable; take oldest).
        for vm in pool.vms.iter_mut().filter(|v| v.busy) {
            if busy <= demand.running {
                break;
            }
            vm.busy = false;
            vm.phase = VmPhase::Stopped;
            busy -= 1;
        }
        // Tasks that started: idle VMs, longest idle first, claimed them.
        let mut idle: Vec<usize> = (0..pool.vms.len())
            .filter(|i| pool.vms[*i].phase == VmPhase::Running && !pool.vms[*i].busy)
            .collect();
        idle.sort_by_key(|i| (pool.vms[*i].idle_since, pool.vms[*i].index));
        for i in idle {
            let vm = &mut pool.vms[i];
            if busy < demand.running {
                vm.busy = true;
                busy += 1;
            } else if pool
                .idle_timeout
                .is_some_and(|t| now.since(vm.idle_since) >= t)
            {
                vm.phase = VmPhase::Stopped;
            }
        }
    }
}

impl ShadowState {
    fn create(&mut self, class: &ResourceClass) {
        let boot = self.boot.draw_ms(&mut self.rng);
        self.next_uid += 1;
        let uid = self.next_uid;
        let Some(pool) = self.pools.get_mut(class) else {
            return;
        };
        let mut used: Vec<u32> = pool.vms.iter().map(|v| v.index).collect();
        used.sort_unstable();
        let index = used
            .iter()
            .enumerate()
            .find(|(i, u)| *i as u32 != **u)
            .map_or(used.len() as u32, |(i, _)| i as u32);
        let now = pool.now;
        pool.vms.push(ShadowVm {
            id: VmId::new(format!("shadow-{uid}")),
            name: Arc::from(vm_name(&pool_name(class), index)),
            index,
            created_at: now,
            ready_at: Timestamp::from_unix_millis(now.unix_millis() + boot),
            phase: VmPhase::Starting,
            busy: false,
            idle_since: now,
        });
    }
}

#[async_trait]
impl VmFleet for ShadowFleet {
    async fn ensure(&self, class: &ClassConfig) -> Result<(), PortError> {
        let mut state = self.lock();
        let pool = state.pools.entry(class.name.clone()).or_default();
        pool.idle_timeout = class.scaling.idle_timeout;
        pool.replicas.get_or_insert(0);
        Ok(())
    }

    async fn observe(&self, class: &ResourceClass) -> Result<FleetState, PortError> {
        let state = self.lock();
        let Some(pool) = state.pools.get(class) else {
            return Ok(FleetState::default());
        };
        Ok(FleetState {
            spec_replicas: pool.replicas,
            vms: pool
                .vms
                .iter()
                .map(|v| Vm {
                    id: v.id.clone(),
                    name: v.name.clone(),
                    created_at: v.created_at,
                    ready_at: matches!(v.phase, VmPhase::Running | VmPhase::Stopped)
                        .then_some(v.ready_at),
                    phase: v.phase,
                    deleting: false,
                    failing: None,
                    registered: None,
                })
                .collect(),
        })
    }

    async fn apply(&self, class: &ResourceClass, plan: &Plan) -> Result<ApplyReport, PortError> {
        let mut state = self.lock();
        let Some(pool) = state.pools.get_mut(class) else {
            return Err(PortError::permanent(format!(
                "no shadow pool for {class}: call ensure first"
            )));
        };
        let mut report = ApplyReport::default();
        let from = pool.replicas.unwrap_or(0);
        if pool.replicas != Some(plan.target_replicas) {
            report.scaled = Some((from, plan.target_replicas));
            pool.replicas = Some(plan.target_replicas);
        }
        for (vm_ref, recycle) in plan
            .retire
            .iter()
            .map(|r| (r, false))
            .chain(plan.recycle.iter().map(|r| (r, true)))
        {
            match pool.vms.iter().position(|v| v.id == vm_ref.id) {
                Some(i) if pool.vms[i].phase.is_finished() => {
                    pool.vms.remove(i);
                    if recycle {
                        report.recycled += 1;
                    } else {
                        report.retired += 1;
                    }
                }
                _ => report.refused += 1,
            }
        }
        let missing = plan.target_replicas.saturating_sub(pool.vms.len() as u32);
        for _ in 0..missing {
            state.create(class);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use provisioner_core::{PlannerState, Scaling, decide};

    use super::*;

    fn now<F: Future>(f: F) -> F::Output {
        match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the shadow fleet never waits"),
        }
    }

    fn class() -> ClassConfig {
        ClassConfig {
            name: ResourceClass::parse("acme/medium").expect("class"),
            token: provisioner_core::Secret::default(),
            user_data: None,
            scaling: Scaling {
                min_replicas: provisioner_core::Replicas::new(1),
                idle_timeout: Some(Duration::from_secs(600)),
                ..Scaling::default()
            },
            runner: Default::default(),
            empty_disk_mounts: Vec::new(),
            spec: provisioner_core::config::default_spec(),
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix_millis(s * 1000)
    }

    /// One controller cycle against the shadow fleet.
    fn cycle(
        fleet: &ShadowFleet,
        c: &ClassConfig,
        t: i64,
        demand: Demand,
        planner: &mut PlannerState,
    ) -> FleetState {
        fleet.advance(&c.name, at(t), demand);
        let observed = now(fleet.observe(&c.name)).expect("observe");
        let d = decide(&c.scaling, Some(demand), &observed, at(t), planner);
        now(fleet.apply(&c.name, &d.plan)).expect("apply");
        fleet.advance(&c.name, at(t), demand);
        now(fleet.observe(&c.name)).expect("observe")
    }

    fn phases(f: &FleetState) -> Vec<VmPhase> {
        f.vms.iter().map(|v| v.phase).collect()
    }

    #[test]
    fn vms_boot_take_work_stop_and_are_replaced() {
        let fleet = ShadowFleet::new(BootTime::Fixed(Duration::from_secs(120)), 1);
        let c = class();
        now(fleet.ensure(&c)).expect("ensure");
        let mut planner = PlannerState::default();
        let f = cycle(
            &fleet,
            &c,
            0,
            Demand {
                unclaimed: 2,
                running: 0,
            },
            &mut planner,
        );
        assert_eq!(phases(&f), [VmPhase::Starting, VmPhase::Starting]);
        let f = cycle(
            &fleet,
            &c,
            120,
            Demand {
                unclaimed: 0,
                running: 2,
            },
            &mut planner,
        );
        assert_eq!(phases(&f), [VmPhase::Running, VmPhase::Running]);
        // One task ended: its VM powered off and, with demand at 1 (min 1), is retired.
        let f = cycle(
            &fleet,
            &c,
            300,
            Demand {
                unclaimed: 0,
                running: 1,
            },
            &mut planner,
        );
        assert_eq!(
            (f.spec_replicas, phases(&f)),
            (Some(1), vec![VmPhase::Running])
        );
        // The other ended too: it is recycled to keep min 1; the replacement has a new UID and
        // the lowest free name index, as the pool names it.
        let old = f.vms[0].id.clone();
        let f = cycle(&fleet, &c, 400, Demand::default(), &mut planner);
        assert_eq!(phases(&f), [VmPhase::Starting]);
        assert_eq!(&*f.vms[0].name, "acme-medium-0");
        assert_ne!(f.vms[0].id, old);
    }

    #[test]
    fn idle_vms_power_off_after_the_idle_timeout_and_live_ones_are_never_deleted() {
        let fleet = ShadowFleet::new(BootTime::Fixed(Duration::from_secs(60)), 1);
        let c = class();
        now(fleet.ensure(&c)).expect("ensure");
        let mut planner = PlannerState::default();
        cycle(&fleet, &c, 0, Demand::default(), &mut planner);
        fleet.advance(&c.name, at(600), Demand::default());
        assert_eq!(
            phases(&now(fleet.observe(&c.name)).expect("observe")),
            [VmPhase::Running]
        );
        fleet.advance(&c.name, at(660), Demand::default());
        let f = now(fleet.observe(&c.name)).expect("observe");
        assert_eq!(phases(&f), [VmPhase::Stopped]);
        let live = cycle(&fleet, &c, 660, Demand::default(), &mut planner);
        let bad = Plan {
            target_replicas: 1,
            retire: live.vms.iter().map(Into::into).collect(),
            recycle: Vec::new(),
        };
        let report = now(fleet.apply(&c.name, &bad)).expect("apply");
        assert_eq!((report.refused, report.retired), (1, 0));
    }
}
