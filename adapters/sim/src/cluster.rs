//! The cluster the VMs land on (off unless asked for): nodes with CPU and memory, a fixed count
//! or a cluster autoscaler's min..max with a node start-up delay, virt-controller creating VMIs
//! one at a time, the scheduler placing them (least allocated plus image locality, as
//! kube-scheduler scores), VMs that fit nowhere waiting unschedulable until room appears, and a
//! boot split into the containerDisk pull (only on a node without the image), the guest boot
//! and the runner's start-up.
//!
//! The model is passive: the world tells it when a VM is created and when it stops, asks when
//! its next event is and lets it advance; it answers with [`Outcome`]s (a VM placed, with the
//! time its runner is up; a VM unschedulable).

use std::collections::{BTreeMap, VecDeque};

use provisioner_core::{Duration, ResourceClass};

use crate::SimError;
use crate::options::{BootTime, millis};
use crate::report::ClusterCounts;
use crate::rng::SplitMix64;

const GI: u64 = 1 << 30;
const MI: u64 = 1 << 20;

/// What a VM's launcher pod requests or a node offers: CPU in millicores, memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    pub const fn new(cpu_millis: u64, memory_bytes: u64) -> Self {
        Self {
            cpu_millis,
            memory_bytes,
        }
    }

    /// `CPU/MEMORY` as Kubernetes quantities: `8/32Gi`, `500m/2Gi`, `48/96G`.
    pub fn parse(text: &str) -> Result<Self, SimError> {
        let bad = |why: String| {
            SimError::Option(format!(
                "size {text:?}: {why} (expected CPU/MEMORY, e.g. 8/32Gi or 500m/2Gi)"
            ))
        };
        let (cpu, memory) = text
            .split_once('/')
            .ok_or_else(|| bad("no '/' between CPU and memory".to_owned()))?;
        let size = Self::new(
            parse_cpu(cpu).map_err(&bad)?,
            parse_memory(memory).map_err(&bad)?,
        );
        if size.cpu_millis == 0 || size.memory_bytes == 0 {
            return Err(bad("CPU and memory must both be above zero".to_owned()));
        }
        Ok(size)
    }

    fn fits_in(&self, free: &Self) -> bool {
        self.cpu_millis <= free.cpu_millis && self.memory_bytes <= free.memory_bytes
    }

    fn plus(&self, other: &Self) -> Self {
        Self::new(
            self.cpu_millis + other.cpu_millis,
            self.memory_bytes + other.memory_bytes,
        )
    }

    fn minus(&self, other: &Self) -> Self {
        Self::new(
            self.cpu_millis.saturating_sub(other.cpu_millis),
            self.memory_bytes.saturating_sub(other.memory_bytes),
        )
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.cpu_millis.is_multiple_of(1000) {
            write!(f, "{}", self.cpu_millis / 1000)?;
        } else {
            write!(f, "{}m", self.cpu_millis)?;
        }
        if self.memory_bytes.is_multiple_of(GI) {
            write!(f, "/{}Gi", self.memory_bytes / GI)
        } else if self.memory_bytes.is_multiple_of(MI) {
            write!(f, "/{}Mi", self.memory_bytes / MI)
        } else {
            write!(f, "/{}", self.memory_bytes)
        }
    }
}

/// A CPU quantity in millicores: `8`, `1.5`, `500m`.
pub fn parse_cpu(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, scale) = match t.strip_suffix('m') {
        Some(n) => (n, 1.0),
        None => (t, 1000.0),
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 1e12 => Ok((v * scale).round() as u64),
        _ => Err(format!(
            "CPU {text:?} is not a quantity (e.g. 8, 1.5 or 500m)"
        )),
    }
}

/// A memory quantity in bytes: `32Gi`, `512Mi`, `8G`, `1e9`, `1073741824`.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    const UNITS: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let t = text.trim();
    let (number, scale) = UNITS
        .iter()
        .find_map(|(unit, scale)| t.strip_suffix(unit).map(|n| (n, *scale)))
        .unwrap_or((t, 1.0));
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 1.8e19 => Ok((v * scale).round() as u64),
        _ => Err(format!(
            "memory {text:?} is not a quantity (e.g. 32Gi, 512Mi or 8G)"
        )),
    }
}

/// A class's VM size as the scheduler sees it, from its VirtualMachineInstanceSpec: memory
/// from `domain.resources.requests.memory`, else `domain.memory.guest`; CPU from
/// `domain.resources.requests.cpu`, else `domain.cpu` (cores x sockets x threads). Requests
/// win when both are set, because they are what the launcher pod asks the scheduler for.
pub fn vm_size_from_spec(class: &str, spec: &serde_json::Value) -> Result<Resources, SimError> {
    let domain = spec.get("domain");
    let requests = domain
        .and_then(|d| d.get("resources"))
        .and_then(|r| r.get("requests"));
    let quantity = |v: &serde_json::Value, path: &str| -> Result<String, SimError> {
        match v {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            other => Err(SimError::Option(format!(
                "class {class}: spec {path} is {other}, not a quantity"
            ))),
        }
    };
    let memory = match (
        requests.and_then(|r| r.get("memory")),
        domain
            .and_then(|d| d.get("memory"))
            .and_then(|m| m.get("guest")),
    ) {
        (Some(v), _) => ("domain.resources.requests.memory", v),
        (None, Some(v)) => ("domain.memory.guest", v),
        (None, None) => {
            return Err(SimError::Option(format!(
                "class {class}: the spec sets neither domain.resources.requests.memory nor domain.memory.guest, so its VM size is unknown; give it with --vm-size {class}=CPU/MEMORY"
            )));
        }
    };
    let memory_bytes = parse_memory(&quantity(memory.1, memory.0)?)
        .map_err(|e| SimError::Option(format!("class {class}: spec {}: {e}", memory.0)))?;
    let cpu_millis = match requests.and_then(|r| r.get("cpu")) {
        Some(v) => parse_cpu(&quantity(v, "domain.resources.requests.cpu")?).map_err(|e| {
            SimError::Option(format!(
                "class {class}: spec domain.resources.requests.cpu: {e}"
            ))
        })?,
        None => {
            let cpu = domain.and_then(|d| d.get("cpu"));
            let count = |key: &str| -> Result<u64, SimError> {
                match cpu.and_then(|c| c.get(key)) {
                    None => Ok(1),
                    Some(v) => v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                        SimError::Option(format!(
                            "class {class}: spec domain.cpu.{key} is {v}, not a positive whole number"
                        ))
                    }),
                }
            };
            count("cores")? * count("sockets")? * count("threads")? * 1000
        }
    };
    if memory_bytes == 0 || cpu_millis == 0 {
        return Err(SimError::Option(format!(
            "class {class}: the spec's VM size {} has a zero CPU or memory",
            Resources::new(cpu_millis, memory_bytes)
        )));
    }
    Ok(Resources::new(cpu_millis, memory_bytes))
}

/// The containerDisk image a spec boots (VMs of classes booting the same image share a node's
/// cache); `None` when it boots none.
pub fn image_of_spec(spec: &serde_json::Value) -> Option<String> {
    spec.get("volumes")?
        .as_array()?
        .iter()
        .find_map(|v| v.get("containerDisk")?.get("image")?.as_str())
        .map(str::to_owned)
}

/// `--vm-size`: `CPU/MEMORY` for every class, or `CLASS=CPU/MEMORY` for one.
pub fn parse_vm_size_flag(text: &str) -> Result<(Option<String>, Resources), SimError> {
    match text.split_once('=') {
        Some((class, size)) => {
            let class = class.trim();
            if class.is_empty() {
                return Err(SimError::Option(format!(
                    "--vm-size {text:?}: no class before '=' (expected CLASS=CPU/MEMORY or CPU/MEMORY)"
                )));
            }
            let size = Resources::parse(size)
                .map_err(|e| SimError::Option(format!("--vm-size {class}: {e}")))?;
            Ok((Some(class.to_owned()), size))
        }
        None => Ok((
            None,
            Resources::parse(text).map_err(|e| SimError::Option(format!("--vm-size: {e}")))?,
        )),
    }
}

/// How many nodes: a fixed count, or a cluster autoscaler's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCount {
    pub min: u32,
    pub max: u32,
}

impl NodeCount {
    /// `6` (fixed) or `2..6` (autoscaled; the run starts with the minimum).
    pub fn parse(text: &str) -> Result<Self, SimError> {
        let number = |part: &str| {
            part.trim().parse::<u32>().map_err(|_| {
                SimError::Option(format!(
                    "nodes {text:?}: {part:?} is not a whole number (expected N or MIN..MAX, e.g. 6 or 2..6)"
                ))
            })
        };
        let count = match text.split_once("..") {
            Some((lo, hi)) => Self {
                min: number(lo)?,
                max: number(hi)?,
            },
            None => {
                let n = number(text)?;
                Self { min: n, max: n }
            }
        };
        if count.max == 0 {
            return Err(SimError::Option(format!(
                "nodes {text:?}: a cluster needs at least one node"
            )));
        }
        if count.min > count.max {
            return Err(SimError::Option(format!(
                "nodes {text:?}: the minimum is above the maximum"
            )));
        }
        if count.max > 10_000 {
            return Err(SimError::Option(format!(
                "nodes {text:?}: at most 10000 nodes"
            )));
        }
        Ok(count)
    }
}

impl std::fmt::Display for NodeCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

/// The cluster's knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOptions {
    /// What one node offers to VMs (allocatable, after the kubelet's and system pods' share).
    pub node: Resources,
    pub nodes: NodeCount,
    /// From the autoscaler asking for a node until VMs can be placed on it.
    pub node_startup: Duration,
    /// An empty node above the minimum goes after this long (the autoscaler's unneeded time).
    pub scale_down_after: Duration,
    /// virt-controller creates one VMI per this (about one a second by default).
    pub create_interval: Duration,
    /// Added to every VM's request: the launcher pod's own share.
    pub vm_overhead: Resources,
    /// Pulling the containerDisk on a node that lacks it (later VMs there find it cached).
    pub image_pull: BootTime,
    pub guest_boot: BootTime,
    /// From the guest being up until its runner can claim a job.
    pub runner_start: BootTime,
    /// How long a job waits for an idle runner to claim it (the agent polls for work). Part
    /// of the cluster model so that runs without it stay as they were.
    pub claim_delay: Duration,
}

/// The named presets (`--preset NAME`): name and what it stands for.
pub const PRESETS: [(&str, &str); 2] = [
    (
        "mro-eks",
        "CircleCI's published MRO benchmark: EKS, 2..6 nodes of 48 vCPU/96 GiB (47/88Gi allocatable), node start-up 100s, 1 VMI/s, image pull 45s, guest boot 25s..35s, runner start 2s..5s, claim delay 3s",
    ),
    (
        "kind",
        "one roomy local node (64/256Gi), images cached, 1 VMI/s, guest boot 20s..40s, runner start 5s, claim delay 3s",
    ),
];

impl ClusterOptions {
    pub fn preset(name: &str) -> Result<Self, SimError> {
        let secs = Duration::from_secs;
        let range = |lo, hi| BootTime::Uniform {
            min: secs(lo),
            max: secs(hi),
        };
        match name {
            "mro-eks" => Ok(Self {
                node: Resources::new(47_000, 88 * GI),
                nodes: NodeCount { min: 2, max: 6 },
                node_startup: secs(100),
                scale_down_after: secs(600),
                create_interval: secs(1),
                vm_overhead: Resources::new(0, 256 * MI),
                image_pull: BootTime::Fixed(secs(45)),
                guest_boot: range(25, 35),
                runner_start: range(2, 5),
                claim_delay: secs(3),
            }),
            "kind" => Ok(Self {
                node: Resources::new(64_000, 256 * GI),
                nodes: NodeCount { min: 1, max: 1 },
                node_startup: secs(0),
                scale_down_after: secs(600),
                create_interval: secs(1),
                vm_overhead: Resources::new(0, 256 * MI),
                image_pull: BootTime::Fixed(Duration::ZERO),
                guest_boot: range(20, 40),
                runner_start: BootTime::Fixed(secs(5)),
                claim_delay: secs(3),
            }),
            other => Err(SimError::Option(format!(
                "unknown preset {other:?} (known: {})",
                PRESETS.map(|(n, _)| n).join(", ")
            ))),
        }
    }

    /// The preset these options are, whatever their node count (the TUI changes that on its
    /// own); `None` when another knob was changed.
    pub fn preset_name(&self) -> Option<&'static str> {
        PRESETS.iter().map(|(name, _)| *name).find(|name| {
            Self::preset(name).is_ok_and(|p| {
                Self {
                    nodes: self.nodes,
                    ..p
                } == *self
            })
        })
    }
}

/// The cluster model of a run: the cluster and each class's VM size and image.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterModel {
    pub options: ClusterOptions,
    /// For classes without a size of their own.
    pub default_size: Option<Resources>,
    pub sizes: BTreeMap<ResourceClass, Resources>,
    /// The containerDisk each class boots (classes sharing one share a node's cache); a class
    /// not listed has an image of its own.
    pub images: BTreeMap<ResourceClass, String>,
}

impl ClusterModel {
    pub fn new(options: ClusterOptions) -> Self {
        Self {
            options,
            default_size: None,
            sizes: BTreeMap::new(),
            images: BTreeMap::new(),
        }
    }

    /// The VM size of `class`, or an error naming it and how to give one.
    pub fn size_of(&self, class: &ResourceClass) -> Result<Resources, SimError> {
        self.sizes
            .get(class)
            .copied()
            .or(self.default_size)
            .ok_or_else(|| {
                SimError::Option(format!(
                    "class {class} has no VM size for the cluster model: give --vm-size CPU/MEMORY (or {class}=CPU/MEMORY), or a --config whose class spec sets domain.resources.requests"
                ))
            })
    }
}

/// The cluster flags as given; any one of them turns the model on. Unset knobs come from the
/// preset (`mro-eks` when none is named).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterFlags {
    pub preset: Option<String>,
    pub nodes: Option<String>,
    pub node_size: Option<String>,
    pub node_startup: Option<Duration>,
    pub create_interval: Option<Duration>,
    pub image_pull: Option<String>,
    pub guest_boot: Option<String>,
    pub runner_start: Option<String>,
    pub claim_delay: Option<Duration>,
    /// `CPU/MEMORY` or `CLASS=CPU/MEMORY`, repeated.
    pub vm_sizes: Vec<String>,
}

impl ClusterFlags {
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// The model, or `None` when no cluster flag is set. `specs` are the classes' VM specs
    /// from a config (sizes and images); `--vm-size` wins over them.
    pub fn model(
        &self,
        specs: &[(ResourceClass, serde_json::Value)],
    ) -> Result<Option<ClusterModel>, SimError> {
        if !self.is_set() {
            return Ok(None);
        }
        let mut options = ClusterOptions::preset(self.preset.as_deref().unwrap_or("mro-eks"))?;
        if let Some(nodes) = &self.nodes {
            options.nodes = NodeCount::parse(nodes)?;
        }
        if let Some(size) = &self.node_size {
            options.node = Resources::parse(size)
                .map_err(|e| SimError::Option(format!("--node-size: {e}")))?;
        }
        if let Some(d) = self.node_startup {
            options.node_startup = d;
        }
        if let Some(d) = self.create_interval {
            options.create_interval = d;
        }
        if let Some(d) = self.claim_delay {
            options.claim_delay = d;
        }
        let boot = |flag: &str, text: &Option<String>, into: &mut BootTime| {
            if let Some(text) = text {
                *into =
                    BootTime::parse(text).map_err(|e| SimError::Option(format!("{flag}: {e}")))?;
            }
            Ok::<(), SimError>(())
        };
        boot("--image-pull", &self.image_pull, &mut options.image_pull)?;
        boot("--guest-boot", &self.guest_boot, &mut options.guest_boot)?;
        boot(
            "--runner-start",
            &self.runner_start,
            &mut options.runner_start,
        )?;
        let mut model = ClusterModel::new(options);
        for (class, spec) in specs {
            model
                .sizes
                .insert(class.clone(), vm_size_from_spec(class.as_str(), spec)?);
            if let Some(image) = image_of_spec(spec) {
                model.images.insert(class.clone(), image);
            }
        }
        for flag in &self.vm_sizes {
            match parse_vm_size_flag(flag)? {
                (Some(class), size) => {
                    let class = ResourceClass::parse(&class)
                        .map_err(|e| SimError::Option(format!("--vm-size {flag:?}: {e}")))?;
                    model.sizes.insert(class, size);
                }
                (None, size) => model.default_size = Some(size),
            }
        }
        Ok(Some(model))
    }
}

/// What the cluster tells the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The VM is on a node; its runner can claim a job at `ready_at`.
    Placed {
        slot: u32,
        generation: u32,
        ready_at: i64,
    },
    /// It fits on no node now (KubeVirt's `ErrorUnschedulable`); it stays pending.
    Unschedulable { slot: u32, generation: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Starting { ready_at: i64 },
    Ready,
    Gone,
}

#[derive(Debug, Clone)]
struct Node {
    state: NodeState,
    free: Resources,
    vms: u32,
    /// Since when it holds no VM (for the autoscaler's scale-down).
    empty_since: i64,
    /// Images on the node: (image, when the pull ends).
    images: Vec<(u32, i64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmState {
    Free,
    /// Waiting for virt-controller to create its VMI.
    Queued,
    Pending,
    Placed(u32),
}

#[derive(Debug, Clone, Copy)]
struct ClusterVm {
    generation: u32,
    class: u16,
    state: VmState,
}

/// The cluster autoscaler looks for unschedulable pods this often.
const AUTOSCALER_SCAN_MS: i64 = 10_000;

#[derive(Debug)]
pub struct Cluster {
    options: ClusterOptions,
    /// Per class: the request of one VM (size plus overhead) and its image.
    requests: Vec<Resources>,
    images: Vec<u32>,
    nodes: Vec<Node>,
    vms: Vec<ClusterVm>,
    /// (slot, generation, when asked); stale entries are skipped.
    create_queue: VecDeque<(u32, u32, i64)>,
    last_created_at: Option<i64>,
    pending: VecDeque<(u32, u32)>,
    pending_count: usize,
    next_scan_at: Option<i64>,
    rng: SplitMix64,
    unschedulable_events: u64,
    image_pulls: u64,
    nodes_added: u64,
    nodes_removed: u64,
    peak_nodes: u32,
}

impl Cluster {
    /// `sizes` and `images` per class. Fails when a class's VM fits on no node.
    pub fn new(
        options: ClusterOptions,
        class_names: &[String],
        sizes: &[Resources],
        images: &[u32],
        seed: u64,
    ) -> Result<Self, SimError> {
        if options.nodes.max == 0 {
            return Err(SimError::Option(
                "the cluster has no node (--nodes 0)".to_owned(),
            ));
        }
        let requests: Vec<Resources> = sizes.iter().map(|s| s.plus(&options.vm_overhead)).collect();
        for ((name, size), request) in class_names.iter().zip(sizes).zip(&requests) {
            if !request.fits_in(&options.node) {
                return Err(SimError::Option(format!(
                    "class {name}: a VM of {size} (plus {} launcher overhead) is larger than a node ({} allocatable); it could never be scheduled",
                    options.vm_overhead, options.node
                )));
            }
        }
        let nodes = (0..options.nodes.min)
            .map(|_| Node {
                state: NodeState::Ready,
                free: options.node,
                vms: 0,
                empty_since: 0,
                images: Vec::new(),
            })
            .collect();
        Ok(Self {
            peak_nodes: options.nodes.min,
            options,
            requests,
            images: images.to_vec(),
            nodes,
            vms: Vec::new(),
            create_queue: VecDeque::new(),
            last_created_at: None,
            pending: VecDeque::new(),
            pending_count: 0,
            next_scan_at: None,
            rng: SplitMix64::stream(seed, 4),
            unschedulable_events: 0,
            image_pulls: 0,
            nodes_added: 0,
            nodes_removed: 0,
        })
    }

    /// [`ClusterOptions::claim_delay`] in milliseconds.
    pub fn claim_delay_ms(&self) -> i64 {
        millis(self.options.claim_delay)
    }

    /// What it did, for the report.
    pub fn counts(&self) -> ClusterCounts {
        ClusterCounts {
            unschedulable: self.unschedulable_events,
            image_pulls: self.image_pulls,
            nodes_added: self.nodes_added,
            nodes_removed: self.nodes_removed,
            peak_nodes: self.peak_nodes,
        }
    }

    /// Nodes up or coming up.
    pub fn node_count(&self) -> u32 {
        self.nodes
            .iter()
            .filter(|n| n.state != NodeState::Gone)
            .count() as u32
    }

    /// VMs waiting for room.
    pub fn pending(&self) -> usize {
        self.pending_count
    }

    /// A VM was created in its pool: its VMI waits its turn with virt-controller.
    pub fn create(&mut self, now: i64, slot: u32, generation: u32, class: u16) {
        let index = slot as usize;
        if self.vms.len() <= index {
            self.vms.resize(
                index + 1,
                ClusterVm {
                    generation: 0,
                    class: 0,
                    state: VmState::Free,
                },
            );
        }
        self.vms[index] = ClusterVm {
            generation,
            class,
            state: VmState::Queued,
        };
        self.create_queue.push_back((slot, generation, now));
    }

    /// The VM stopped or was deleted: its node's share is free (and pending VMs may fit).
    pub fn release(&mut self, now: i64, slot: u32, generation: u32, out: &mut Vec<Outcome>) {
        let Some(vm) = self.vms.get_mut(slot as usize) else {
            return;
        };
        if vm.generation != generation {
            return;
        }
        let class = usize::from(vm.class);
        let state = std::mem::replace(&mut vm.state, VmState::Free);
        match state {
            VmState::Placed(node) => {
                let request = self.requests[class];
                let n = &mut self.nodes[node as usize];
                n.free = n.free.plus(&request);
                n.vms -= 1;
                if n.vms == 0 {
                    n.empty_since = now;
                }
                self.place_pending(now, out);
            }
            VmState::Pending => self.pending_count -= 1,
            VmState::Queued | VmState::Free => {}
        }
    }

    /// When the cluster next does something by itself.
    pub fn next_event_at(&self) -> Option<i64> {
        let mut next = self.next_creation_at();
        let mut consider = |t: i64| next = Some(next.map_or(t, |n: i64| n.min(t)));
        if let Some(t) = self.next_scan_at {
            consider(t);
        }
        let above_min = self.node_count() > self.options.nodes.min;
        for n in &self.nodes {
            match n.state {
                NodeState::Starting { ready_at } => consider(ready_at),
                NodeState::Ready if above_min && n.vms == 0 => {
                    consider(n.empty_since + millis(self.options.scale_down_after));
                }
                _ => {}
            }
        }
        next
    }

    fn next_creation_at(&self) -> Option<i64> {
        let (_, _, asked) = self.create_queue.front()?;
        let interval = millis(self.options.create_interval);
        Some(
            self.last_created_at
                .map_or(*asked, |last| (*asked).max(last + interval)),
        )
    }

    /// Carry out everything due at or before `now`, in time order.
    pub fn advance(&mut self, now: i64, out: &mut Vec<Outcome>) {
        while let Some(t) = self.next_event_at().filter(|t| *t <= now) {
            self.advance_at(t, out);
        }
    }

    fn advance_at(&mut self, t: i64, out: &mut Vec<Outcome>) {
        // Nodes coming up first: a VMI created at the same instant can use them.
        let mut readied = false;
        for n in &mut self.nodes {
            if n.state == (NodeState::Starting { ready_at: t }) {
                n.state = NodeState::Ready;
                n.empty_since = t;
                readied = true;
            }
        }
        if readied {
            self.place_pending(t, out);
        }
        while self.next_creation_at() == Some(t) {
            let Some((slot, generation, _)) = self.create_queue.pop_front() else {
                break;
            };
            let vm = self.vms[slot as usize];
            if vm.generation != generation || vm.state != VmState::Queued {
                continue;
            }
            self.last_created_at = Some(t);
            if !self.place(t, slot, out) {
                self.vms[slot as usize].state = VmState::Pending;
                self.pending.push_back((slot, generation));
                self.pending_count += 1;
                self.unschedulable_events += 1;
                out.push(Outcome::Unschedulable { slot, generation });
                if self.next_scan_at.is_none() && self.node_count() < self.options.nodes.max {
                    // The autoscaler's loop runs on a fixed grid.
                    let wait = AUTOSCALER_SCAN_MS - t.rem_euclid(AUTOSCALER_SCAN_MS);
                    self.next_scan_at = Some(t + wait % AUTOSCALER_SCAN_MS);
                }
            }
        }
        if self.next_scan_at == Some(t) {
            self.scan(t);
        }
        let count = self.node_count();
        let min = self.options.nodes.min;
        let unneeded = millis(self.options.scale_down_after);
        let mut removable = count.saturating_sub(min);
        for n in &mut self.nodes {
            if removable > 0
                && n.state == NodeState::Ready
                && n.vms == 0
                && n.empty_since + unneeded <= t
            {
                n.state = NodeState::Gone;
                n.images.clear();
                removable -= 1;
                self.nodes_removed += 1;
            }
        }
    }

    /// The autoscaler: add the nodes the pending VMs need (first fit over nodes coming up,
    /// then fresh ones), up to the maximum.
    fn scan(&mut self, t: i64) {
        self.next_scan_at = None;
        if self.pending_count == 0 {
            return;
        }
        let mut bins: Vec<Resources> = self
            .nodes
            .iter()
            .filter(|n| matches!(n.state, NodeState::Starting { .. }))
            .map(|n| n.free)
            .collect();
        let room = self.options.nodes.max.saturating_sub(self.node_count()) as usize;
        let mut fresh = 0usize;
        for &(slot, generation) in &self.pending {
            let vm = self.vms[slot as usize];
            if vm.generation != generation || vm.state != VmState::Pending {
                continue;
            }
            let request = self.requests[usize::from(vm.class)];
            if let Some(bin) = bins.iter_mut().find(|b| request.fits_in(b)) {
                *bin = bin.minus(&request);
            } else if fresh < room {
                fresh += 1;
                bins.push(self.options.node.minus(&request));
            }
        }
        let ready_at = t + millis(self.options.node_startup);
        for _ in 0..fresh {
            let node = Node {
                state: NodeState::Starting { ready_at },
                free: self.options.node,
                vms: 0,
                empty_since: ready_at,
                images: Vec::new(),
            };
            match self.nodes.iter_mut().find(|n| n.state == NodeState::Gone) {
                Some(slot) => *slot = node,
                None => self.nodes.push(node),
            }
            self.nodes_added += 1;
        }
        self.peak_nodes = self.peak_nodes.max(self.node_count());
        if self.node_count() < self.options.nodes.max {
            self.next_scan_at = Some(t + AUTOSCALER_SCAN_MS);
        }
    }

    /// Place pending VMs, oldest first, while any fits.
    fn place_pending(&mut self, now: i64, out: &mut Vec<Outcome>) {
        if self.pending_count == 0 {
            return;
        }
        let mut keep = VecDeque::with_capacity(self.pending.len());
        while let Some((slot, generation)) = self.pending.pop_front() {
            let vm = self.vms[slot as usize];
            if vm.generation != generation || vm.state != VmState::Pending {
                continue;
            }
            if self.place(now, slot, out) {
                self.pending_count -= 1;
            } else {
                keep.push_back((slot, generation));
            }
        }
        self.pending = keep;
    }

    /// Put the VM on the best node with room, as kube-scheduler scores by default: least
    /// allocated (0..100) plus image locality (100 x the share of nodes holding the image).
    fn place(&mut self, now: i64, slot: u32, out: &mut Vec<Outcome>) -> bool {
        let vm = self.vms[slot as usize];
        let class = usize::from(vm.class);
        let request = self.requests[class];
        let image = self.images[class];
        let ready: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].state == NodeState::Ready)
            .collect();
        let holding = ready
            .iter()
            .filter(|i| self.nodes[**i].images.iter().any(|(im, _)| *im == image))
            .count();
        let spread = if ready.is_empty() {
            0.0
        } else {
            holding as f64 / ready.len() as f64
        };
        let node_size = self.options.node;
        let score = |n: &Node| {
            let share = |free: u64, total: u64| free as f64 / total.max(1) as f64;
            let least_allocated = 50.0
                * (share(n.free.cpu_millis - request.cpu_millis, node_size.cpu_millis)
                    + share(
                        n.free.memory_bytes - request.memory_bytes,
                        node_size.memory_bytes,
                    ));
            let locality = if n.images.iter().any(|(im, _)| *im == image) {
                100.0 * spread
            } else {
                0.0
            };
            least_allocated + locality
        };
        let mut best: Option<(usize, f64)> = None;
        for &i in &ready {
            let n = &self.nodes[i];
            if !request.fits_in(&n.free) {
                continue;
            }
            let s = score(n);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        let Some((node, _)) = best else {
            return false;
        };
        let pull = self.options.image_pull.draw_ms(&mut self.rng);
        let boot = self.options.guest_boot.draw_ms(&mut self.rng);
        let start = self.options.runner_start.draw_ms(&mut self.rng);
        let n = &mut self.nodes[node];
        n.free = n.free.minus(&request);
        n.vms += 1;
        let image_at = match n.images.iter().find(|(im, _)| *im == image) {
            Some((_, at)) => (*at).max(now),
            None => {
                n.images.push((image, now + pull));
                self.image_pulls += 1;
                now + pull
            }
        };
        self.vms[slot as usize].state = VmState::Placed(node as u32);
        out.push(Outcome::Placed {
            slot,
            generation: vm.generation,
            ready_at: image_at + boot + start,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(nodes: NodeCount) -> ClusterOptions {
        ClusterOptions {
            node: Resources::new(48_000, 96 * GI),
            nodes,
            node_startup: Duration::from_secs(120),
            scale_down_after: Duration::from_secs(600),
            create_interval: Duration::from_secs(1),
            vm_overhead: Resources::default(),
            image_pull: BootTime::Fixed(Duration::from_secs(30)),
            guest_boot: BootTime::Fixed(Duration::from_secs(20)),
            runner_start: BootTime::Fixed(Duration::from_secs(5)),
            claim_delay: Duration::ZERO,
        }
    }

    fn cluster(nodes: NodeCount, sizes: &[Resources]) -> Cluster {
        let names: Vec<String> = (0..sizes.len()).map(|i| format!("c/{i}")).collect();
        let images = vec![0; sizes.len()];
        Cluster::new(options(nodes), &names, sizes, &images, 1).expect("cluster")
    }

    fn fixed(n: u32) -> NodeCount {
        NodeCount { min: n, max: n }
    }

    const LARGE: Resources = Resources::new(8_000, 32 * GI);
    const SMALL: Resources = Resources::new(2_000, 8 * GI);

    fn run(c: &mut Cluster, until: i64) -> Vec<Outcome> {
        let mut out = Vec::new();
        c.advance(until, &mut out);
        out
    }

    #[test]
    fn quantities_and_sizes_parse_and_bad_ones_name_the_value() {
        assert_eq!(Resources::parse("8/32Gi").expect("size"), LARGE);
        assert_eq!(
            Resources::parse("500m/512Mi").expect("size"),
            Resources::new(500, 512 * MI)
        );
        assert_eq!(parse_memory("8G"), Ok(8_000_000_000));
        assert_eq!(parse_memory("1024"), Ok(1024));
        assert_eq!(parse_cpu("1.5"), Ok(1500));
        assert_eq!(LARGE.to_string(), "8/32Gi");
        assert_eq!(Resources::new(500, 512 * MI).to_string(), "500m/512Mi");
        for bad in ["8", "x/32Gi", "8/32Qi", "0/1Gi", "8/-1Gi", "8/"] {
            let err = Resources::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(
            parse_vm_size_flag("acme/large=8/32Gi").expect("flag"),
            (Some("acme/large".to_owned()), LARGE)
        );
        assert_eq!(parse_vm_size_flag("2/8Gi").expect("flag"), (None, SMALL));
        let err = parse_vm_size_flag("acme/large=big").expect_err("bad");
        assert!(err.to_string().contains("\"big\""), "{err}");
        assert!(parse_vm_size_flag("=2/8Gi").is_err());
    }

    #[test]
    fn node_counts_parse_and_zero_is_refused() {
        assert_eq!(NodeCount::parse("6").expect("n"), fixed(6));
        assert_eq!(
            NodeCount::parse("2..6").expect("range"),
            NodeCount { min: 2, max: 6 }
        );
        assert_eq!(
            NodeCount::parse("0..3").expect("from zero"),
            NodeCount { min: 0, max: 3 }
        );
        for bad in ["0", "0..0", "6..2", "two", "1..x"] {
            let err = NodeCount::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn vm_size_comes_from_requests_then_guest_and_cpu_topology() {
        let spec = serde_json::json!({"domain": {"resources": {"requests": {"memory": "32Gi", "cpu": "8"}},
            "memory": {"guest": "30Gi"}, "cpu": {"cores": 4}}});
        assert_eq!(vm_size_from_spec("a/b", &spec).expect("size"), LARGE);
        let spec = serde_json::json!({"domain": {"memory": {"guest": "8Gi"},
            "cpu": {"cores": 1, "sockets": 2}}});
        assert_eq!(vm_size_from_spec("a/b", &spec).expect("size"), SMALL);
        let spec = serde_json::json!({"domain": {"resources": {"requests": {"memory": 1073741824, "cpu": 1}}}});
        assert_eq!(
            vm_size_from_spec("a/b", &spec).expect("numbers"),
            Resources::new(1000, GI)
        );
        assert_eq!(
            vm_size_from_spec("a/b", &provisioner_core::config::default_spec()).expect("default"),
            Resources::new(1000, 2 * GI)
        );
        let none = vm_size_from_spec("a/b", &serde_json::json!({"domain": {}})).expect_err("none");
        assert!(
            none.to_string().contains("a/b") && none.to_string().contains("--vm-size"),
            "{none}"
        );
        let bad = serde_json::json!({"domain": {"resources": {"requests": {"memory": "lots"}}}});
        let err = vm_size_from_spec("a/b", &bad).expect_err("bad").to_string();
        assert!(
            err.contains("\"lots\"") && err.contains("requests.memory"),
            "{err}"
        );
        let bad = serde_json::json!({"domain": {"memory": {"guest": "1Gi"}, "cpu": {"cores": 0}}});
        let err = vm_size_from_spec("a/b", &bad).expect_err("bad").to_string();
        assert!(err.contains("domain.cpu.cores"), "{err}");
    }

    #[test]
    fn image_of_spec_reads_the_container_disk() {
        assert_eq!(
            image_of_spec(&provisioner_core::config::default_spec()).as_deref(),
            Some("quay.io/containerdisks/ubuntu:22.04")
        );
        assert_eq!(image_of_spec(&serde_json::json!({})), None);
    }

    #[test]
    fn a_vm_larger_than_a_node_or_no_node_is_an_error() {
        let names = ["acme/huge".to_owned()];
        let err = Cluster::new(
            options(fixed(2)),
            &names,
            &[Resources::new(8_000, 128 * GI)],
            &[0],
            1,
        )
        .expect_err("too big")
        .to_string();
        assert!(
            err.contains("acme/huge") && err.contains("8/128Gi") && err.contains("48/96Gi"),
            "{err}"
        );
        let err = Cluster::new(options(fixed(0)), &names, &[SMALL], &[0], 1)
            .expect_err("no node")
            .to_string();
        assert!(err.contains("--nodes 0"), "{err}");
    }

    #[test]
    fn creation_is_one_vmi_a_second_and_the_first_vm_on_a_node_pulls_the_image() {
        let mut c = cluster(fixed(1), &[SMALL]);
        for slot in 0..3 {
            c.create(0, slot, 0, 0);
        }
        let out = run(&mut c, 10_000);
        // Created at 0, 1 and 2 s; the first pulls (30 s), the others wait for that pull.
        assert_eq!(
            out,
            [
                Outcome::Placed {
                    slot: 0,
                    generation: 0,
                    ready_at: 55_000
                },
                Outcome::Placed {
                    slot: 1,
                    generation: 0,
                    ready_at: 55_000
                },
                Outcome::Placed {
                    slot: 2,
                    generation: 0,
                    ready_at: 55_000
                },
            ]
        );
        assert_eq!(c.image_pulls, 1);
        // Long after: the image is cached, no pull.
        c.create(100_000, 3, 0, 0);
        assert_eq!(
            run(&mut c, 200_000),
            [Outcome::Placed {
                slot: 3,
                generation: 0,
                ready_at: 125_000
            }]
        );
    }

    #[test]
    fn a_full_node_leaves_vms_unschedulable_until_one_stops() {
        // 96 GiB: three large VMs fit, the fourth waits.
        let mut c = cluster(fixed(1), &[LARGE]);
        for slot in 0..4 {
            c.create(0, slot, 0, 0);
        }
        let out = run(&mut c, 10_000);
        assert_eq!(out.len(), 4);
        assert_eq!(
            out[3],
            Outcome::Unschedulable {
                slot: 3,
                generation: 0
            }
        );
        assert_eq!(c.pending(), 1);
        // A fixed-size cluster does not grow.
        assert!(run(&mut c, 3_600_000).is_empty());
        assert_eq!(c.node_count(), 1);
        let mut out = Vec::new();
        c.release(3_600_000, 1, 0, &mut out);
        assert_eq!(
            out,
            [Outcome::Placed {
                slot: 3,
                generation: 0,
                ready_at: 3_625_000
            }]
        );
        assert_eq!(c.pending(), 0);
        // A stale release (an older generation) frees nothing.
        c.create(3_600_000, 1, 1, 0);
        run(&mut c, 3_700_000);
        out.clear();
        c.release(3_700_000, 1, 0, &mut out);
        assert!(out.is_empty());
        c.create(3_700_000, 5, 0, 0);
        assert!(matches!(
            run(&mut c, 3_800_000)[..],
            [Outcome::Unschedulable { slot: 5, .. }]
        ));
    }

    #[test]
    fn the_autoscaler_adds_nodes_after_their_start_up_and_removes_empty_ones() {
        let mut c = cluster(NodeCount { min: 1, max: 3 }, &[LARGE]);
        for slot in 0..8 {
            c.create(0, slot, 0, 0);
        }
        let out = run(&mut c, 60_000);
        let unschedulable = out
            .iter()
            .filter(|o| matches!(o, Outcome::Unschedulable { .. }))
            .count();
        assert_eq!(unschedulable, 5);
        // Five pending large VMs need two more nodes (3 per node), found at the 10 s scan.
        assert_eq!(c.node_count(), 3);
        assert_eq!(c.nodes_added, 2);
        // They come up at 10 s + 120 s and take the pending VMs, each node pulling once.
        let out = run(&mut c, 130_000);
        assert_eq!(out.len(), 5, "{out:?}");
        assert!(out.iter().all(|o| matches!(
            o,
            Outcome::Placed {
                ready_at: 185_000,
                ..
            }
        )));
        assert_eq!((c.pending(), c.image_pulls), (0, 3));
        // All stop; after the unneeded time the cluster shrinks back to its minimum.
        let mut out = Vec::new();
        for slot in 0..8 {
            c.release(200_000, slot, 0, &mut out);
        }
        run(&mut c, 200_000 + 600_000);
        assert_eq!((c.node_count(), c.nodes_removed), (1, 2));
        assert_eq!(c.peak_nodes, 3);
    }

    #[test]
    fn the_autoscaler_stops_at_its_maximum() {
        let mut c = cluster(NodeCount { min: 1, max: 2 }, &[LARGE]);
        for slot in 0..10 {
            c.create(0, slot, 0, 0);
        }
        run(&mut c, 200_000);
        assert_eq!(c.node_count(), 2);
        assert_eq!(c.pending(), 4);
    }

    #[test]
    fn small_vms_fill_the_room_large_ones_cannot_use() {
        // Three large VMs fill the node; one stopping makes room for four small ones.
        let mut c = cluster(fixed(1), &[LARGE, SMALL]);
        c.create(0, 0, 0, 0);
        c.create(0, 1, 0, 0);
        c.create(0, 2, 0, 0);
        for slot in 3..8 {
            c.create(0, slot, 0, 1);
        }
        let mut out = Vec::new();
        c.advance(20_000, &mut out);
        let placed: Vec<u32> = out
            .iter()
            .filter_map(|o| match o {
                Outcome::Placed { slot, .. } => Some(*slot),
                Outcome::Unschedulable { .. } => None,
            })
            .collect();
        assert_eq!(placed, [0, 1, 2]);
        assert_eq!(c.pending(), 5);
        out.clear();
        c.release(30_000, 0, 0, &mut out);
        // 32 GiB freed: four small VMs fit, the fifth still waits.
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(c.pending(), 1);
    }

    #[test]
    fn flags_override_the_preset_and_sizes_come_from_specs_then_flags() {
        assert_eq!(ClusterFlags::default().model(&[]).expect("off"), None);
        let class = ResourceClass::parse("acme/large").expect("class");
        let flags = ClusterFlags {
            nodes: Some("3".to_owned()),
            guest_boot: Some("1m".to_owned()),
            vm_sizes: vec!["2/8Gi".to_owned()],
            ..ClusterFlags::default()
        };
        let spec = serde_json::json!({"domain": {"resources": {"requests": {"memory": "32Gi", "cpu": "8"}}},
            "volumes": [{"name": "d", "containerDisk": {"image": "img:1"}}]});
        let model = flags
            .model(&[(class.clone(), spec)])
            .expect("model")
            .expect("on");
        let preset = ClusterOptions::preset("mro-eks").expect("preset");
        assert_eq!(model.options.nodes, fixed(3));
        assert_eq!(model.options.node, preset.node);
        assert_eq!(
            model.options.guest_boot,
            BootTime::Fixed(Duration::from_secs(60))
        );
        assert_eq!(model.size_of(&class).expect("from spec"), LARGE);
        assert_eq!(model.images[&class], "img:1");
        let other = ResourceClass::parse("acme/other").expect("class");
        assert_eq!(model.size_of(&other).expect("default"), SMALL);
        let flags = ClusterFlags {
            vm_sizes: vec!["acme/large=4/16Gi".to_owned()],
            ..flags
        };
        let model = flags.model(&[]).expect("model").expect("on");
        assert_eq!(
            model.size_of(&class).expect("flag"),
            Resources::new(4_000, 16 * GI)
        );
        for (flags, names) in [
            (
                ClusterFlags {
                    nodes: Some("0".to_owned()),
                    ..ClusterFlags::default()
                },
                "\"0\"",
            ),
            (
                ClusterFlags {
                    node_size: Some("big".to_owned()),
                    ..ClusterFlags::default()
                },
                "--node-size",
            ),
            (
                ClusterFlags {
                    guest_boot: Some("soon".to_owned()),
                    ..ClusterFlags::default()
                },
                "--guest-boot",
            ),
            (
                ClusterFlags {
                    preset: Some("gke".to_owned()),
                    ..ClusterFlags::default()
                },
                "\"gke\"",
            ),
            (
                ClusterFlags {
                    vm_sizes: vec!["Bad Class=1/1Gi".to_owned()],
                    ..ClusterFlags::default()
                },
                "Bad Class",
            ),
        ] {
            let err = flags.model(&[]).expect_err(names).to_string();
            assert!(err.contains(names), "{err}");
        }
        let none = ClusterFlags {
            nodes: Some("2".to_owned()),
            ..ClusterFlags::default()
        }
        .model(&[])
        .expect("model")
        .expect("on");
        let err = none.size_of(&class).expect_err("no size").to_string();
        assert!(
            err.contains("acme/large") && err.contains("--vm-size"),
            "{err}"
        );
    }

    #[test]
    fn presets_are_known_by_name() {
        for (name, _) in PRESETS {
            ClusterOptions::preset(name).expect(name);
        }
        let err = ClusterOptions::preset("gke")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("\"gke\"") && err.contains("mro-eks"), "{err}");
    }
}
