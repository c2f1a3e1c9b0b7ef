//! `KubeVirtFleet`: carries plans out against a cluster.
//!
//! Safety rests on three rules. The pool is applied with `scaleInStrategy.opportunistic` (and
//! checked to have kept it), so lowering `replicas` deletes nothing. A VM is deleted only after
//! being re-read, still finished, with the delete conditioned on its UID and resourceVersion.
//! Retiring lowers `replicas` before deleting, then removes the pool finalizer itself: KubeVirt's
//! pool controller (`pkg/virt-controller/watch/pool/pool.go`) removes it only while the VMs it
//! owns, deleting ones included, equal `replicas`, so a VM deleted in the same step as the
//! lowering would stay Terminating. Each step is idempotent, so a crash between steps is
//! repaired by the next `apply`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use provisioner_core::{
    ApplyReport, ClassConfig, FleetState, Plan, PortError, Reclaim, ResourceClass, Timestamp, Vm,
    VmFleet, VmRef,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::error::KubeVirtError;
use crate::names::{CLASS_ANNOTATION, MANAGED_BY_LABEL, MANAGER, pool_name, secret_name};
use crate::options::{VmOptions, proxy_secret_name};
use crate::render::{ClassObjects, POOL_API_VERSION, class_objects, set_replicas};
use crate::status::{observed_vm, reclaim_still_holds};

const DEFAULT_FIELD_MANAGER: &str = "runner-provisioner";
/// The finalizer the pool controller puts on its VMs.
const POOL_FINALIZER: &str = "pool.kubevirt.io/finalizer";
/// Set on a pool by `scale_to_zero` (the chart's uninstall hook), to the time of the request.
/// While it is fresh, `observe` and `apply` refuse the pool, so a controller still running
/// during `helm uninstall` cannot scale it back up before Helm removes that controller.
pub const DRAIN_ANNOTATION: &str = "runner-provisioner.io/drain-requested-at";
/// After this, a drain mark is stale: a later reinstall manages the pool again.
const DRAIN_HOLD_MILLIS: i64 = 15 * 60 * 1000;
/// How long `observe` waits for the VM cache's first list before reporting it unsynced.
const CACHE_SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where and as whom the fleet works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOptions {
    /// The namespace holding the pools, Secrets and VMs.
    pub namespace: String,
    /// `circleciAPIAddr`, written into each VM's runner config as `api.url`.
    pub api_addr: String,
    /// The server-side apply field manager for everything the provisioner writes.
    pub field_manager: String,
    /// How often `observe` checks that each pool's user-data Secret still exists (and
    /// re-creates it when not): without it every new VM of the pool stays Starting.
    pub secret_recheck: std::time::Duration,
    /// The sidecar and the runner bundle, for every pool.
    pub vm: VmOptions,
}

impl FleetOptions {
    pub fn new(namespace: impl Into<String>, api_addr: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            api_addr: api_addr.into(),
            field_manager: DEFAULT_FIELD_MANAGER.to_owned(),
            secret_recheck: SECRET_RECHECK,
            vm: VmOptions::default(),
        }
    }
}

/// What the VM watch last reported, for `observe`'s error when the cache never synced.
#[derive(Debug, Default)]
struct WatchHealth {
    last_error: Mutex<Option<(String, bool)>>,
}

/// The production `VmFleet` over KubeVirt VirtualMachinePools.
pub struct KubeVirtFleet {
    opts: FleetOptions,
    pools: Api<DynamicObject>,
    vms: Api<DynamicObject>,
    secrets: Api<Secret>,
    cache: Store<DynamicObject>,
    health: Arc<WatchHealth>,
    watch_task: JoinHandle<()>,
    /// The rendered objects last applied per pool, so an unchanged class costs no request.
    applied: Mutex<HashMap<String, Applied>>,
}

impl fmt::Debug for KubeVirtFleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeVirtFleet")
            .field("opts", &self.opts)
            .field("cached_vms", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Drop for KubeVirtFleet {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

/// What `ensure` last applied for a pool.
#[derive(Debug)]
struct Applied {
    fingerprint: String,
    /// The user-data Secret as applied, to re-create it if someone deletes it.
    secret: Value,
    /// When `observe` last saw that Secret exist.
    secret_checked: tokio::time::Instant,
}

/// The default [`FleetOptions::secret_recheck`]: one GET per class a minute.
const SECRET_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Outcome of deleting one planned VM.
enum Deleted {
    /// Deleted now.
    Yes,
    /// Found already being deleted (a previous pass, or a stale cache): not counted again.
    Already,
    /// Already gone.
    Gone,
    /// Not finished any more, re-created under the same name, or changed under us (409).
    Refused,
}

impl KubeVirtFleet {
    /// Checks that the cluster serves `pool.kubevirt.io/v1beta1` (KubeVirt >= 1.7), before
    /// anything is written, then starts the VM watch. Must be called inside a Tokio runtime.
    pub async fn connect(client: Client, opts: FleetOptions) -> Result<Self, KubeVirtError> {
        require_pool_api(&client).await?;
        Ok(Self::new(client, opts))
    }

    /// Starts the VM watch without checking the pool API. Must be called inside a Tokio
    /// runtime; the watch stops when the fleet is dropped.
    pub fn new(client: Client, opts: FleetOptions) -> Self {
        let (group, version) = POOL_API_VERSION.split_once('/').unwrap_or_default();
        let pool_ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, "VirtualMachinePool"),
            "virtualmachinepools",
        );
        let vm_ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
            "virtualmachines",
        );
        let pools = Api::namespaced_with(client.clone(), &opts.namespace, &pool_ar);
        let vms: Api<DynamicObject> = Api::namespaced_with(client.clone(), &opts.namespace, &vm_ar);
        let secrets = Api::namespaced(client, &opts.namespace);

        let writer = reflector::store::Writer::new(vm_ar);
        let cache = writer.as_reader();
        let health = Arc::new(WatchHealth::default());
        let watch_health = health.clone();
        let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
        let stream = watcher(vms.clone(), config)
            .default_backoff()
            .reflect(writer);
        let watch_task = tokio::spawn(async move {
            stream
                .for_each(|event| {
                    let mut last = watch_health.last_error.lock().unwrap_or_else(|e| e.into_inner());
                    match event {
                        Ok(_) => *last = None,
                        Err(e) => {
                            let permanent = matches!(&e, watcher::Error::InitialListFailed(kube::Error::Api(s))
                                | watcher::Error::WatchStartFailed(kube::Error::Api(s)) if matches!(s.code, 401 | 403 | 404));
                            tracing::warn!(error = %e, "VirtualMachine watch failed; retrying with backoff");
                            *last = Some((e.to_string(), permanent));
                        }
                    }
                    futures::future::ready(())
                })
                .await;
        });
        Self {
            opts,
            pools,
            vms,
            secrets,
            cache,
            health,
            watch_task,
            applied: Mutex::new(HashMap::new()),
        }
    }

    fn forget_applied(&self, pool: &str) {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pool);
    }

    /// Uninstall: lowers the class's pool to zero replicas and deletes its finished VMs. Running
    /// VMs are left to finish their job (or idle out) and power off; nothing live is deleted.
    pub async fn scale_to_zero(&self, class: &ResourceClass) -> Result<ApplyReport, KubeVirtError> {
        let name = pool_name(class);
        if self
            .pools
            .get_opt(&name)
            .await
            .map_err(|e| KubeVirtError::kube(format!("get VirtualMachinePool {name}"), e))?
            .is_none()
        {
            return Ok(ApplyReport::default());
        }
        let mark = json!({ "metadata": { "annotations": { DRAIN_ANNOTATION: jiff::Timestamp::now().to_string() } } });
        let params = PatchParams {
            field_manager: Some(self.opts.field_manager.clone()),
            ..PatchParams::default()
        };
        self.pools
            .patch(&name, &params, &Patch::Merge(&mark))
            .await
            .map_err(|e| {
                KubeVirtError::kube(format!("mark VirtualMachinePool {name} as draining"), e)
            })?;
        let fleet = self.observe_pool_state(class, false).await?;
        if fleet.spec_replicas.is_none() {
            return Ok(ApplyReport::default());
        }
        let plan = Plan {
            target_replicas: 0,
            retire: fleet
                .vms
                .iter()
                .filter(|vm| !vm.deleting && vm.phase.is_finished())
                .map(VmRef::from)
                .collect(),
            recycle: Vec::new(),
        };
        self.carry_out(class, &plan, false).await
    }

    /// `scale_to_zero` for every pool in the namespace carrying the manager label. Every pool is
    /// attempted; the first error is returned after all were.
    pub async fn scale_all_to_zero(
        &self,
    ) -> Result<Vec<(ResourceClass, ApplyReport)>, KubeVirtError> {
        let lp = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
        let pools = self
            .pools
            .list(&lp)
            .await
            .map_err(|e| KubeVirtError::kube("list VirtualMachinePools", e))?;
        let mut reports = Vec::new();
        let mut first_error = None;
        for pool in pools {
            let Some(class) = pool
                .annotations()
                .get(CLASS_ANNOTATION)
                .and_then(|c| ResourceClass::parse(c).ok())
            else {
                tracing::warn!(pool = %pool.name_any(), "pool has no valid {CLASS_ANNOTATION} annotation; skipped");
                continue;
            };
            // One failing pool must not keep the others from draining.
            match self.scale_to_zero(&class).await {
                Ok(report) => reports.push((class, report)),
                Err(e) => {
                    tracing::error!(pool = %pool.name_any(), error = %e, "could not scale the pool to zero");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(reports),
        }
    }

    async fn ensure_class(&self, class: &ClassConfig) -> Result<(), KubeVirtError> {
        let ClassObjects {
            secret,
            proxy_secret,
            mut pool,
        } = class_objects(
            class,
            &self.opts.namespace,
            &self.opts.api_addr,
            true,
            &self.opts.vm,
        )?;
        let name = pool_name(&class.name);
        let fingerprint = format!("{secret}\n{proxy_secret:?}\n{pool}");
        if self
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .is_some_and(|a| a.fingerprint == fingerprint)
        {
            return Ok(());
        }
        let live = self
            .pools
            .get_opt(&name)
            .await
            .map_err(|e| KubeVirtError::kube(format!("get VirtualMachinePool {name}"), e))?;
        if let Some(live) = &live {
            if live.labels().get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGER) {
                return Err(KubeVirtError::NotOurs {
                    kind: "VirtualMachinePool",
                    name,
                });
            }
            // Re-applying the live replicas of a pool the uninstall hook is draining could
            // undo its scale to zero.
            if drain_pending(live) {
                return Err(KubeVirtError::Draining(name));
            }
        }
        let apply = PatchParams::apply(&self.opts.field_manager).force();
        let secret_name = secret_name(&class.name);
        self.secrets
            .patch(&secret_name, &apply, &Patch::Apply(&secret))
            .await
            .map_err(|e| KubeVirtError::kube(format!("apply Secret {secret_name}"), e))?;
        // Before the pool: a VM's proxy container cannot start without its Secret.
        if let Some(proxy_secret) = &proxy_secret {
            let proxy_name = proxy_secret_name(&class.name);
            self.secrets
                .patch(&proxy_name, &apply, &Patch::Apply(proxy_secret))
                .await
                .map_err(|e| KubeVirtError::kube(format!("apply Secret {proxy_name}"), e))?;
        }

        // Re-applying the live replicas keeps ownership of the field without ever changing it;
        // a new pool starts empty (leaving it out would let the CRD default it to 1). The
        // apply is conditioned on the resourceVersion read, so a scale (or a drain mark) that
        // lands in between is a 409, never overwritten with the replicas read before it.
        set_replicas(&mut pool, live.as_ref().map_or(0, spec_replicas));
        if let Some(version) = live
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone())
        {
            pool["metadata"]["resourceVersion"] = Value::String(version);
        }
        let stored = self
            .pools
            .patch(&name, &apply, &Patch::Apply(&pool))
            .await
            .map_err(|e| KubeVirtError::kube(format!("apply VirtualMachinePool {name}"), e))?;
        check_kept_safety_fields(&stored)?;
        tracing::info!(pool = %name, class = %class.name, created = live.is_none(), "applied VirtualMachinePool and its user-data Secret");
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name,
                Applied {
                    fingerprint,
                    secret,
                    secret_checked: tokio::time::Instant::now(),
                },
            );
        Ok(())
    }

    /// `honour_drain`: refuse a pool that `scale_to_zero` marked (everything but the uninstall
    /// hook itself).
    async fn observe_pool_state(
        &self,
        class: &ResourceClass,
        honour_drain: bool,
    ) -> Result<FleetState, KubeVirtError> {
        let name = pool_name(class);
        let pool = self
            .pools
            .get_opt(&name)
            .await
            .map_err(|e| KubeVirtError::kube(format!("get VirtualMachinePool {name}"), e))?;
        if honour_drain && pool.as_ref().is_some_and(drain_pending) {
            return Err(KubeVirtError::Draining(name));
        }
        if pool.is_none() {
            // Deleted behind our back: the next `ensure` must apply it again.
            self.forget_applied(&name);
        } else if honour_drain {
            self.recreate_missing_secret(&name).await?;
        }
        self.wait_for_cache().await?;
        let now = now();
        let owned = pool.as_ref().map(|p| self.pool_vms(p)).unwrap_or_default();
        let mut vms: Vec<Vm> = owned.iter().filter_map(|vm| observed_vm(vm, now)).collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(FleetState {
            spec_replicas: pool.as_ref().map(spec_replicas),
            vms,
        })
    }

    /// Every `SECRET_RECHECK`, a GET of the pool's user-data Secret; when it is gone (deleted by
    /// hand, or by a namespace clean-up), applies it again as `ensure` last did, without waiting
    /// for a restart or a config change.
    async fn recreate_missing_secret(&self, pool: &str) -> Result<(), KubeVirtError> {
        let due = {
            let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
            match applied.get(pool) {
                Some(a) if a.secret_checked.elapsed() >= self.opts.secret_recheck => {
                    Some(a.secret.clone())
                }
                _ => None,
            }
        };
        let Some(secret) = due else {
            return Ok(());
        };
        let name = secret
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let present = self
            .secrets
            .get_metadata_opt(&name)
            .await
            .map_err(|e| KubeVirtError::kube(format!("get Secret {name}"), e))?
            .is_some();
        if !present {
            tracing::warn!(pool = %pool, secret = %name, "the pool's user-data Secret is missing; re-creating it (its VMs cannot boot without it)");
            let apply = PatchParams::apply(&self.opts.field_manager).force();
            self.secrets
                .patch(&name, &apply, &Patch::Apply(&secret))
                .await
                .map_err(|e| KubeVirtError::kube(format!("apply Secret {name}"), e))?;
        }
        if let Some(a) = self
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(pool)
        {
            a.secret_checked = tokio::time::Instant::now();
        }
        Ok(())
    }

    /// Waits for the VM cache's first list; gives up early when the watch was refused (RBAC).
    async fn wait_for_cache(&self) -> Result<(), KubeVirtError> {
        let deadline = tokio::time::Instant::now() + CACHE_SYNC_TIMEOUT;
        loop {
            let poll = tokio::time::timeout(
                std::time::Duration::from_millis(100),
                self.cache.wait_until_ready(),
            );
            if poll.await.is_ok_and(|r| r.is_ok()) {
                return Ok(());
            }
            let last = self
                .health
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match last {
                Some((message, true)) => {
                    return Err(KubeVirtError::WatchRefused(message));
                }
                Some((message, false)) if tokio::time::Instant::now() >= deadline => {
                    return Err(KubeVirtError::CacheNotReady(format!(": {message}")));
                }
                None if tokio::time::Instant::now() >= deadline => {
                    return Err(KubeVirtError::CacheNotReady(String::new()));
                }
                _ => {}
            }
        }
    }

    /// The VMs `pool` controls, as KubeVirt's pool controller counts them: by controller
    /// ownerReference (name and UID), not by label, so the orphans of a deleted and re-created
    /// pool, or a VM someone labelled by hand, never count as capacity nor get deleted.
    fn pool_vms(&self, pool: &DynamicObject) -> Vec<Arc<DynamicObject>> {
        let name = pool.name_any();
        let uid = pool.metadata.uid.as_deref();
        self.cache.state_filter(|vm| controlled_by(vm, &name, uid))
    }

    async fn carry_out(
        &self,
        class: &ResourceClass,
        plan: &Plan,
        honour_drain: bool,
    ) -> Result<ApplyReport, KubeVirtError> {
        let name = pool_name(class);
        let mut report = ApplyReport::default();
        let pool = self
            .pools
            .get_opt(&name)
            .await
            .map_err(|e| KubeVirtError::kube(format!("get VirtualMachinePool {name}"), e))?;
        let Some(pool) = pool else {
            self.forget_applied(&name);
            return Err(KubeVirtError::PoolMissing(name));
        };
        if honour_drain && drain_pending(&pool) {
            return Err(KubeVirtError::Draining(name));
        }
        let current = spec_replicas(&pool);

        // 1. Replicas first: a retired VM must be deleted only once the pool no longer wants it.
        if plan.target_replicas != current {
            if plan.target_replicas < current {
                check_kept_safety_fields(&pool)?;
            }
            // A replace (the `update` verb the chart's RBAC, as 0.1.0's, grants on virtualmachinepools/scale),
            // conditioned on the resourceVersion read above: a pool changed since then is a 409.
            let scale = Scale {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.opts.namespace.clone()),
                    resource_version: pool.metadata.resource_version.clone(),
                    ..ObjectMeta::default()
                },
                spec: Some(ScaleSpec {
                    replicas: Some(i32::try_from(plan.target_replicas).unwrap_or(i32::MAX)),
                }),
                status: None,
            };
            let params = PostParams {
                field_manager: Some(self.opts.field_manager.clone()),
                ..PostParams::default()
            };
            self.pools
                .replace_scale(&name, &params, &scale)
                .await
                .map_err(|e| KubeVirtError::kube(format!("scale VirtualMachinePool {name}"), e))?;
            report.scaled = Some((current, plan.target_replicas));
            tracing::info!(pool = %name, from = current, to = plan.target_replicas, "scaled VirtualMachinePool");
        }

        // 2. Deletes, each after a re-read.
        let mut released = Vec::new();
        for vm in &plan.retire {
            match self.delete_if_finished(vm, true).await? {
                Deleted::Yes => {
                    report.retired += 1;
                    report
                        .reclaimed
                        .extend(vm.reclaim.map(|why| (vm.name.clone(), why)));
                    released.push(vm.id.clone());
                }
                Deleted::Already | Deleted::Gone => released.push(vm.id.clone()),
                Deleted::Refused => report.refused += 1,
            }
        }
        for vm in &plan.recycle {
            match self.delete_if_finished(vm, false).await? {
                Deleted::Yes => {
                    report.recycled += 1;
                    report
                        .reclaimed
                        .extend(vm.reclaim.map(|why| (vm.name.clone(), why)));
                }
                Deleted::Already | Deleted::Gone => {}
                Deleted::Refused => report.refused += 1,
            }
        }

        // 3. Repair: VMs being deleted that the pool holds while it counts more VMs than
        // replicas (a retire interrupted before its finalizer step) would stay Terminating.
        let owned = self.pool_vms(&pool);
        let mut excess = owned.len().saturating_sub(plan.target_replicas as usize);
        for vm in owned {
            if excess == 0 {
                break;
            }
            let Some(uid) = vm.metadata.uid.as_deref() else {
                continue;
            };
            if vm.metadata.deletion_timestamp.is_none()
                || released.iter().any(|id| id.as_str() == uid)
            {
                continue;
            }
            if vm.finalizers().iter().any(|f| f == POOL_FINALIZER) {
                self.release_from_pool(&vm.name_any(), uid, vm.finalizers())
                    .await?;
                excess -= 1;
            }
        }
        Ok(report)
    }

    async fn delete_if_finished(
        &self,
        planned: &VmRef,
        retire: bool,
    ) -> Result<Deleted, KubeVirtError> {
        let name = planned.name.as_ref();
        let Some(vm) = self
            .vms
            .get_opt(name)
            .await
            .map_err(|e| KubeVirtError::kube(format!("get VirtualMachine {name}"), e))?
        else {
            return Ok(Deleted::Gone);
        };
        let uid = vm.metadata.uid.clone().unwrap_or_default();
        if uid != planned.id.as_str() {
            tracing::info!(vm = %name, planned_uid = %planned.id, uid = %uid, "not deleting: the name now belongs to a new VM");
            return Ok(Deleted::Refused);
        }
        let already = vm.metadata.deletion_timestamp.is_some();
        let deleted = if already {
            vm
        } else {
            let Some(current) = observed_vm(&vm, now()) else {
                return Ok(Deleted::Refused);
            };
            let may_go = match planned.reclaim {
                None => current.phase.is_finished(),
                Some(why) => current.phase.is_finished() || reclaim_still_holds(why, &current),
            };
            if !may_go {
                tracing::info!(vm = %name, phase = current.phase.as_str(), reclaim = planned.reclaim.map(Reclaim::as_str), "not deleting: the VM no longer shows why it was planned for deletion");
                return Ok(Deleted::Refused);
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: vm.metadata.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            match self.vms.delete(name, &params).await {
                Ok(outcome) => {
                    match planned.reclaim {
                        None => {
                            tracing::info!(vm = %name, uid = %uid, retire, "deleted finished VM")
                        }
                        Some(why) => {
                            tracing::warn!(vm = %name, uid = %uid, retire, reason = why.as_str(), hint = why.hint(), "reclaimed a VM that cannot hold a job")
                        }
                    }
                    match outcome.left() {
                        Some(still_there) => still_there,
                        None => return Ok(Deleted::Yes),
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Deleted::Gone),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::info!(vm = %name, "not deleting: the VM changed since it was read (409)");
                    return Ok(Deleted::Refused);
                }
                Err(e) => {
                    return Err(KubeVirtError::kube(
                        format!("delete VirtualMachine {name}"),
                        e,
                    ));
                }
            }
        };
        if retire {
            self.release_from_pool(name, &uid, deleted.finalizers())
                .await?;
        }
        Ok(if already {
            Deleted::Already
        } else {
            Deleted::Yes
        })
    }

    /// Removes only the pool finalizer from a VM being deleted, as the pool controller does: a
    /// JSON patch that first tests the UID and the finalizer list it read.
    async fn release_from_pool(
        &self,
        name: &str,
        uid: &str,
        finalizers: &[String],
    ) -> Result<(), KubeVirtError> {
        if !finalizers.iter().any(|f| f == POOL_FINALIZER) {
            return Ok(());
        }
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != POOL_FINALIZER).collect();
        let patch = json!([
            { "op": "test", "path": "/metadata/uid", "value": uid },
            { "op": "test", "path": "/metadata/finalizers", "value": finalizers },
            { "op": "replace", "path": "/metadata/finalizers", "value": kept },
        ]);
        let patch = Patch::Json::<()>(
            serde_json::from_value(patch).map_err(|e| KubeVirtError::Yaml(e.to_string()))?,
        );
        let params = PatchParams {
            field_manager: Some(self.opts.field_manager.clone()),
            ..PatchParams::default()
        };
        match self.vms.patch(name, &params, &patch).await {
            Ok(_) => {
                tracing::info!(vm = %name, "removed the pool finalizer from a retired VM");
                Ok(())
            }
            // Gone, or the list changed under us (the test failed): the next apply looks again.
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => Ok(()),
            Err(e) => Err(KubeVirtError::kube(
                format!("remove the pool finalizer from VirtualMachine {name}"),
                e,
            )),
        }
    }
}

#[async_trait]
impl VmFleet for KubeVirtFleet {
    async fn ensure(&self, class: &ClassConfig) -> Result<(), PortError> {
        Ok(self.ensure_class(class).await?)
    }

    async fn observe(&self, class: &ResourceClass) -> Result<FleetState, PortError> {
        Ok(self.observe_pool_state(class, true).await?)
    }

    async fn apply(&self, class: &ResourceClass, plan: &Plan) -> Result<ApplyReport, PortError> {
        Ok(self.carry_out(class, plan, true).await?)
    }
}

/// Refuses a cluster without `pool.kubevirt.io/v1beta1` (KubeVirt < 1.7, or no KubeVirt), naming
/// what it serves instead.
async fn require_pool_api(client: &Client) -> Result<(), KubeVirtError> {
    let request = http::Request::get("/apis/pool.kubevirt.io")
        .body(Vec::new())
        .map_err(|e| KubeVirtError::PoolApiMissing(e.to_string()))?;
    let group: Value = match client.request(request).await {
        Ok(group) => group,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(KubeVirtError::PoolApiMissing(
                "GET /apis/pool.kubevirt.io: 404".to_owned(),
            ));
        }
        Err(e) => return Err(KubeVirtError::kube("discover pool.kubevirt.io", e)),
    };
    let served: Vec<&str> = group
        .get("versions")
        .and_then(Value::as_array)
        .map(|versions| {
            versions
                .iter()
                .filter_map(|v| v.get("groupVersion").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if served.contains(&POOL_API_VERSION) {
        Ok(())
    } else {
        Err(KubeVirtError::PoolApiMissing(format!(
            "it serves {served:?}"
        )))
    }
}

/// Whether `vm`'s controller is the VirtualMachinePool `pool` (with UID `pool_uid` when known).
fn controlled_by(vm: &DynamicObject, pool: &str, pool_uid: Option<&str>) -> bool {
    vm.metadata.owner_references.iter().flatten().any(|r| {
        r.controller == Some(true)
            && r.kind == "VirtualMachinePool"
            && r.api_version.starts_with("pool.kubevirt.io/")
            && r.name == pool
            && pool_uid.is_none_or(|uid| uid == r.uid)
    })
}

fn spec_replicas(pool: &DynamicObject) -> u32 {
    // Absent means the CRD default, 1.
    pool.data
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .map_or(1, |r| u32::try_from(r).unwrap_or(u32::MAX))
}

/// A KubeVirt that prunes `scaleInStrategy` would delete VMs on scale-in (possibly running
/// ones), and one that prunes `updateStrategy` would restart them on a template change.
fn check_kept_safety_fields(pool: &DynamicObject) -> Result<(), KubeVirtError> {
    for (pointer, field) in [
        (
            "/spec/scaleInStrategy/opportunistic",
            "scaleInStrategy.opportunistic",
        ),
        (
            "/spec/updateStrategy/opportunistic",
            "updateStrategy.opportunistic",
        ),
    ] {
        if pool.data.pointer(pointer).is_none() {
            return Err(KubeVirtError::UnsafePool {
                pool: pool.name_any(),
                field,
            });
        }
    }
    Ok(())
}

/// Whether `scale_to_zero` marked the pool within the last `DRAIN_HOLD_MILLIS`. An unreadable
/// mark counts as fresh: holding off is the safe side.
fn drain_pending(pool: &DynamicObject) -> bool {
    let Some(mark) = pool.annotations().get(DRAIN_ANNOTATION) else {
        return false;
    };
    match mark.parse::<jiff::Timestamp>() {
        Ok(at) => now().unix_millis() - at.as_millisecond() < DRAIN_HOLD_MILLIS,
        Err(_) => true,
    }
}

fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp::from_unix_millis(i64::try_from(millis).unwrap_or(i64::MAX))
}
