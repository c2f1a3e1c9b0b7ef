//! Kubernetes Events on a class's pool, so `kubectl describe vmpool` shows what the provisioner
//! did: scale-out and scale-in, retired, recycled and reclaimed VMs, the registration breaker
//! opening and closing, stale demand and errors that persist.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use provisioner_core::{Reclaim, ResourceClass};
use tracing::debug;

/// The controller name on every event.
pub const CONTROLLER: &str = "runner-provisioner";
/// Events name the pool at the version KubeVirt stores it (v1.7 on).
const POOL_GROUP: &str = "pool.kubevirt.io";
const POOL_VERSION: &str = "v1beta1";
/// An event must never hold up a cycle for long.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    ScaledOut,
    ScaledIn,
    Retired,
    Recycled,
    PersistentError,
    /// No task counts for a while: the class runs degraded (keeps its pool).
    DemandStale,
    /// VMs deleted although they had not stopped: they could not hold a job. One reason per
    /// cause: the recorder folds repeats of a reason within minutes into the first event's
    /// note, which must not hide a different cause.
    Reclaimed(Reclaim),
    /// Runners of several VMs in a row never registered: scale-out held at the floor.
    BreakerOpened,
    BreakerClosed,
}

impl EventKind {
    fn reason(self) -> &'static str {
        match self {
            Self::ScaledOut => "ScaledOut",
            Self::ScaledIn => "ScaledIn",
            Self::Retired => "RetiredVMs",
            Self::Recycled => "RecycledVMs",
            Self::PersistentError => "PollFailing",
            Self::DemandStale => "DemandStale",
            Self::Reclaimed(why) => match why {
                Reclaim::FailedToStart => "ReclaimedFailedToStart",
                Reclaim::StartTimeout => "ReclaimedStartTimeout",
                Reclaim::Overran => "ReclaimedOverran",
                Reclaim::Unregistered => "ReclaimedUnregistered",
            },
            Self::BreakerOpened => "RegistrationBreakerOpen",
            Self::BreakerClosed => "RegistrationBreakerClosed",
        }
    }

    fn action(self) -> &'static str {
        match self {
            Self::ScaledOut | Self::ScaledIn | Self::BreakerOpened | Self::BreakerClosed => "Scale",
            Self::Retired | Self::Recycled => "DeleteFinishedVMs",
            Self::Reclaimed(_) => "ReclaimVMs",
            Self::PersistentError | Self::DemandStale => "Poll",
        }
    }

    fn event_type(self) -> EventType {
        match self {
            Self::PersistentError
            | Self::DemandStale
            | Self::Reclaimed(_)
            | Self::BreakerOpened => EventType::Warning,
            Self::ScaledOut
            | Self::ScaledIn
            | Self::Retired
            | Self::Recycled
            | Self::BreakerClosed => EventType::Normal,
        }
    }
}

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    /// Read for a pool's UID: `kubectl describe` selects an object's events by UID and name.
    pools: Api<DynamicObject>,
    namespace: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Events {
    pub fn new(client: kube::Client, namespace: String, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER.to_owned(),
            instance,
        };
        let pool_resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(POOL_GROUP, POOL_VERSION, "VirtualMachinePool"),
            "virtualmachinepools",
        );
        Self {
            pools: Api::namespaced_with(client.clone(), &namespace, &pool_resource),
            recorder: Recorder::new(client, reporter),
            namespace,
        }
    }

    /// Best effort: a failed event is logged at debug and forgotten.
    pub async fn publish(&self, class: &ResourceClass, kind: EventKind, note: String) {
        let mut note = note;
        if note.len() > 1000 {
            let mut end = 1000;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let event = Event {
            type_: kind.event_type(),
            reason: kind.reason().to_owned(),
            note: Some(note),
            action: kind.action().to_owned(),
            secondary: None,
        };
        let name = provisioner_kubevirt::pool_name(class);
        let send = async {
            // Without the UID (pool unreadable) the event still shows in `kubectl get events`.
            let uid = match self.pools.get_opt(&name).await {
                Ok(pool) => pool.and_then(|p| p.metadata.uid),
                Err(e) => {
                    debug!(resource_class = %class, error = %e, "cannot read the pool's UID for an event");
                    None
                }
            };
            let reference = ObjectReference {
                api_version: Some(format!("{POOL_GROUP}/{POOL_VERSION}")),
                kind: Some("VirtualMachinePool".to_owned()),
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                uid,
                ..ObjectReference::default()
            };
            self.recorder.publish(&event, &reference).await
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(resource_class = %class, error = %e, "cannot publish event"),
            Err(_) => debug!(resource_class = %class, "publishing an event timed out"),
        }
    }
}
