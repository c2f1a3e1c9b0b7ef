use provisioner_core::PortError;

/// Everything the KubeVirt adapter can fail with. Messages name the class, object or field and
/// never carry a token.
#[derive(Debug, thiserror::Error)]
pub enum KubeVirtError {
    /// The class's `spec` cannot be turned into a pool template.
    #[error("resource class {class}: spec{path}: {message}")]
    InvalidSpec {
        class: String,
        path: String,
        message: String,
    },

    /// A configuration value cannot be written into the start-up script.
    #[error("resource class {class}: {field}: {message}")]
    InvalidValue {
        class: String,
        field: String,
        message: String,
    },

    #[error(
        "namespace {0:?} is not a valid Kubernetes namespace name (lowercase letters, digits and '-', at most 63 characters)"
    )]
    InvalidNamespace(String),

    /// A webhook request that is not an AdmissionReview v1 with a request UID.
    #[error("not an admission.k8s.io/v1 AdmissionReview: {0}")]
    MalformedReview(String),

    #[error("cannot write YAML: {0}")]
    Yaml(String),

    /// The cluster does not serve `pool.kubevirt.io/v1beta1`: no KubeVirt, or one older than 1.7.
    #[error(
        "the cluster does not serve pool.kubevirt.io/v1beta1 VirtualMachinePools ({0}); the provisioner needs KubeVirt 1.7 or later (1.5 and 1.6 serve only v1alpha1, whose pools lack opportunistic scale-in and the VM finalizer); nothing was written"
    )]
    PoolApiMissing(String),

    /// The API server dropped a field that keeps KubeVirt from deleting or restarting VMs itself;
    /// scaling such a pool down could kill a running job, so the class is not managed.
    #[error(
        "VirtualMachinePool {pool}: the API server did not keep spec.{field}; this KubeVirt version cannot scale in without deleting running VMs, refusing to manage the pool"
    )]
    UnsafePool { pool: String, field: &'static str },

    /// An object with our name exists but was not created by the provisioner.
    #[error(
        "{kind} {name} already exists and is not managed by runner-provisioner (label app.kubernetes.io/managed-by); rename or remove it"
    )]
    NotOurs { kind: &'static str, name: String },

    /// The pool is gone (never applied, or deleted by someone); the next `ensure` re-applies it.
    #[error("VirtualMachinePool {0} does not exist; it is re-applied on the next reconcile")]
    PoolMissing(String),

    /// `scale_to_zero` marked the pool for uninstall; the controller leaves it alone.
    #[error(
        "VirtualMachinePool {0} is draining for uninstall (annotation runner-provisioner.io/drain-requested-at, set by scale-to-zero); it is left alone for 15 minutes after the mark"
    )]
    Draining(String),

    /// The watch-backed VM cache has not synced.
    #[error("the VirtualMachine cache is not synced yet{0}")]
    CacheNotReady(String),

    /// The API server refused the VM watch (401/403/404): RBAC or a missing CRD.
    #[error(
        "watching VirtualMachines was refused ({0}); the provisioner needs get/list/watch on virtualmachines.kubevirt.io in its namespace"
    )]
    WatchRefused(String),

    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl KubeVirtError {
    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// Whether retrying the same call can succeed without anybody changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube { source, .. } => match source {
                // 401/403: RBAC or credentials; 400/404/422: a request the server will keep
                // refusing (missing CRD, invalid object).
                kube::Error::Api(status) => {
                    matches!(status.code, 408 | 409 | 410 | 429) || status.code >= 500
                }
                _ => true,
            },
            Self::CacheNotReady(_) | Self::PoolMissing(_) => true,
            _ => false,
        }
    }
}

impl From<KubeVirtError> for PortError {
    fn from(e: KubeVirtError) -> Self {
        if e.is_transient() {
            PortError::transient(e.to_string())
        } else {
            PortError::permanent(e.to_string())
        }
    }
}
