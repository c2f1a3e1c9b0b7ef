//! `provisioner status`: what a running controller sees and estimates, per class, read from its
//! metrics (`GET /metrics` on localhost:9090, or through the Kubernetes API server's service
//! proxy with a kubeconfig). The metrics are the one source, so `status`, dashboards and alerts
//! never disagree.

use std::collections::BTreeMap;
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::Error;
use crate::cli::{Output, StatusArgs};

/// How long to wait for the metrics.
const TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// `provisioner status`: fetch, summarize, print.
pub async fn run(args: &StatusArgs) -> Result<(), Error> {
    let (source, text) = if args.from_cluster {
        // Without `--namespace`, the kubeconfig context's namespace (or the pod's own), as
        // kubectl would use.
        let client = crate::cluster::connect()
            .await
            .map_err(|e| Error::Metrics {
                source_name: format!("service {}", args.service),
                message: format!("no Kubernetes cluster reachable: {e}"),
            })?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let path = format!(
            "/api/v1/namespaces/{namespace}/services/{}:metrics/proxy/metrics",
            args.service
        );
        let text = from_cluster(client, &path)
            .await
            .map_err(|message| Error::Metrics {
                source_name: path.clone(),
                message,
            })?;
        (format!("service {namespace}/{}", args.service), text)
    } else {
        let text = from_url(&args.metrics_url)
            .await
            .map_err(|message| Error::Metrics {
                source_name: args.metrics_url.clone(),
                message,
            })?;
        (args.metrics_url.clone(), text)
    };
    let samples = parse(&text).map_err(|e| Error::Metrics {
        source_name: source.clone(),
        message: e.to_string(),
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let status = summarize(&source, &samples, now);
    match args.output {
        Output::Text => print!("{}", render_text(&status)),
        Output::Json => println!(
            "{}",
            serde_json::to_string(&status).map_err(|e| Error::Metrics {
                source_name: source,
                message: e.to_string(),
            })?
        ),
    }
    Ok(())
}

async fn from_url(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| {
        if e.is_connect() {
            "nothing answers there (is the controller running, or port-forwarded?)".to_owned()
        } else {
            e.to_string()
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    response.text().await.map_err(|e| e.to_string())
}

/// Through the API server's service proxy, with the kubeconfig's (or the pod's) credentials.
async fn from_cluster(client: kube::Client, path: &str) -> Result<String, String> {
    let request = axum::http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(TIMEOUT, client.request_text(request))
        .await
        .map_err(|_| {
            format!(
                "the API server did not answer within {}s",
                TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 404 => {
                "HTTP 404: no such Service or no `metrics` port on it (check --namespace and \
                 --service; the chart names it <release>-metrics)"
                    .to_owned()
            }
            kube::Error::Api(status) if status.code == 403 => format!(
                "HTTP 403: not allowed to get services/proxy there ({})",
                status.message
            ),
            other => other.to_string(),
        })
}

/// One sample of the exposition: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Why the exposition could not be read; the message names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parse Prometheus or OpenMetrics text: comments skipped, one sample a line (a timestamp or
/// exemplar after the value is ignored).
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: &str| ParseError {
            line: index + 1,
            message: format!("{message}: {line:?}"),
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let (parsed, after) = parse_labels(inner).ok_or_else(|| bad("malformed labels"))?;
            labels = parsed;
            rest = after;
        }
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| bad("value is not a number"))?,
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// `key="value",...}` with `\"`, `\\` and `\n` escapes; returns the labels and what follows `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        s = &after[end + 1..];
    }
}

/// The last failed call of a class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastError {
    pub operation: String,
    pub kind: String,
    pub seconds_ago: f64,
}

/// One class as the controller sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ClassStatus {
    pub resource_class: String,
    pub unclaimed_tasks: Option<f64>,
    pub running_tasks: Option<f64>,
    pub desired_vms: Option<f64>,
    pub pool_replicas: Option<f64>,
    pub max_replicas: Option<f64>,
    /// VMs by phase, as last observed.
    pub vms: BTreeMap<String, f64>,
    /// Since the controller started leading.
    pub jobs_started: f64,
    pub mean_wait_seconds: Option<f64>,
    pub p95_wait_seconds: Option<f64>,
    pub warm_share: Option<f64>,
    pub mean_boot_seconds: Option<f64>,
    pub unregistered_vms: Option<f64>,
    pub failed_starts: f64,
    /// VM time by phase since start, in hours.
    pub vm_hours: BTreeMap<String, f64>,
    /// `None` when the class has never polled (the gauge reads 0).
    pub last_poll_seconds_ago: Option<f64>,
    pub last_error: Option<LastError>,
    /// A task-count poll failed after the last good one: the loop keeps its pool without
    /// knowing demand (degraded mode).
    pub degraded: bool,
    /// VMs the predictive control keeps warm above demand.
    pub warm_vms: Option<f64>,
    pub registration_breaker_open: Option<bool>,
    /// VMs deleted as reclaimable since start, by reason.
    pub vms_reclaimed: BTreeMap<String, f64>,
}

/// What `status` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub source: String,
    pub leader: Option<bool>,
    pub classes: Vec<ClassStatus>,
}

/// Per class, from the samples; `now` (Unix seconds) dates the timestamps.
pub fn summarize(source: &str, samples: &[Sample], now: f64) -> Status {
    let mut classes: BTreeMap<String, ClassStatus> = BTreeMap::new();
    let mut waits: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut boots: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut waiting: BTreeMap<String, f64> = BTreeMap::new();
    let mut warm: BTreeMap<String, f64> = BTreeMap::new();
    let mut leader = None;
    let mut demand_errors: BTreeMap<String, f64> = BTreeMap::new();
    for s in samples {
        let Some(name) = s.name.strip_prefix("provisioner_") else {
            continue;
        };
        if name == "leader" {
            leader = Some(s.value > 0.0);
        }
        let Some(class) = s.labels.get("resource_class") else {
            continue;
        };
        let c = classes.entry(class.clone()).or_insert_with(|| ClassStatus {
            resource_class: class.clone(),
            ..ClassStatus::default()
        });
        let label = |key: &str| s.labels.get(key).cloned().unwrap_or_default();
        match name {
            "unclaimed_tasks" => c.unclaimed_tasks = Some(s.value),
            "running_tasks" => c.running_tasks = Some(s.value),
            "desired_vms" => c.desired_vms = Some(s.value),
            "pool_replicas" => c.pool_replicas = Some(s.value),
            "max_replicas" => c.max_replicas = Some(s.value),
            "vms" => {
                c.vms.insert(label("phase"), s.value);
            }
            "vms_unregistered" => c.unregistered_vms = Some(s.value),
            "jobs_started_total" => c.jobs_started = s.value,
            "jobs_warm_total" => {
                warm.insert(class.clone(), s.value);
            }
            "waiting_job_seconds_total" => {
                waiting.insert(class.clone(), s.value);
            }
            "vm_failed_starts_total" => c.failed_starts = s.value,
            "vm_seconds_total" => {
                c.vm_hours.insert(label("phase"), s.value / 3600.0);
            }
            "job_wait_seconds_bucket" => {
                let le = match label("le").as_str() {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().unwrap_or(f64::INFINITY),
                };
                waits.entry(class.clone()).or_default().push((le, s.value));
            }
            "vm_boot_seconds_sum" => boots.entry(class.clone()).or_default().0 = s.value,
            "vm_boot_seconds_count" => boots.entry(class.clone()).or_default().1 = s.value,
            "last_poll_timestamp_seconds" => {
                c.last_poll_seconds_ago = (s.value > 0.0).then_some(now - s.value);
            }
            "warm_vms" => c.warm_vms = Some(s.value),
            "registration_breaker_open" => c.registration_breaker_open = Some(s.value > 0.0),
            "vms_reclaimed_total" => {
                c.vms_reclaimed.insert(label("reason"), s.value);
            }
            "last_error_timestamp_seconds" => {
                if matches!(
                    label("operation").as_str(),
                    "unclaimed_tasks" | "running_tasks"
                ) {
                    let latest = demand_errors.entry(class.clone()).or_default();
                    *latest = latest.max(s.value);
                }
                let ago = now - s.value;
                if c.last_error.as_ref().is_none_or(|e| ago < e.seconds_ago) {
                    c.last_error = Some(LastError {
                        operation: label("operation"),
                        kind: label("kind"),
                        seconds_ago: ago,
                    });
                }
            }
            _ => {}
        }
    }
    for (class, c) in &mut classes {
        if let Some(failed_at) = demand_errors.get(class) {
            let polled_at = c.last_poll_seconds_ago.map_or(0.0, |ago| now - ago);
            c.degraded = *failed_at > polled_at;
        }
        if c.jobs_started > 0.0 {
            c.mean_wait_seconds = waiting.get(class).map(|w| w / c.jobs_started);
            c.warm_share = warm.get(class).map(|w| w / c.jobs_started);
        }
        if let Some(buckets) = waits.get_mut(class) {
            c.p95_wait_seconds = quantile(buckets, 0.95);
        }
        if let Some((sum, count)) = boots.get(class)
            && *count > 0.0
        {
            c.mean_boot_seconds = Some(sum / count);
        }
    }
    Status {
        source: source.to_owned(),
        leader,
        classes: classes.into_values().collect(),
    }
}

/// The `q` quantile of cumulative buckets `(upper bound, count)`, interpolated inside a bucket
/// as Prometheus' `histogram_quantile` does. `None` without observations.
fn quantile(buckets: &mut [(f64, f64)], q: f64) -> Option<f64> {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(upper, count) in buckets.iter() {
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let share = if count > below {
                (rank - below) / (count - below)
            } else {
                0.0
            };
            return Some(lower + (upper - lower) * share);
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

/// The readable form: one block per class.
pub fn render_text(status: &Status) -> String {
    use std::fmt::Write;

    let mut out = String::new();
    let leading = match status.leader {
        Some(true) => "leading",
        Some(false) => "standing by (another replica leads)",
        None => "unknown",
    };
    let _ = writeln!(out, "controller at {}: {leading}", status.source);
    if status.classes.is_empty() {
        let _ = writeln!(
            out,
            "no resource class is being polled (standing by, or just started)"
        );
    }
    let num = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), human_seconds);
    for c in &status.classes {
        let _ = writeln!(out, "\n{}", c.resource_class);
        let polled = c
            .last_poll_seconds_ago
            .map_or("never polled".to_owned(), |ago| {
                format!("polled {} ago", human_seconds(ago))
            });
        let degraded = if c.degraded {
            "; DEGRADED: the last poll failed, the pool is kept and finished VMs replaced"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  demand       {} unclaimed, {} running ({polled}){degraded}",
            num(c.unclaimed_tasks),
            num(c.running_tasks),
        );
        let _ = writeln!(
            out,
            "  pool         {} replicas (desired {}, max {}, warm {})",
            num(c.pool_replicas),
            num(c.desired_vms),
            num(c.max_replicas),
            num(c.warm_vms)
        );
        let phases: Vec<String> = c
            .vms
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .map(|(phase, n)| format!("{n:.0} {phase}"))
            .collect();
        let _ = writeln!(
            out,
            "  VMs          {}",
            if phases.is_empty() {
                "none".to_owned()
            } else {
                phases.join(", ")
            }
        );
        let warm = c
            .warm_share
            .map_or("-".to_owned(), |w| format!("{:.0}%", w * 100.0));
        let _ = writeln!(
            out,
            "  jobs         {:.0} started; wait mean {}, p95 {}; {warm} found a warm VM (estimated)",
            c.jobs_started,
            secs(c.mean_wait_seconds),
            secs(c.p95_wait_seconds)
        );
        let _ = writeln!(
            out,
            "  VM boot      mean {}; {:.0} failed to start; {} ready but unregistered",
            secs(c.mean_boot_seconds),
            c.failed_starts,
            num(c.unregistered_vms)
        );
        let reclaimed: Vec<String> = c
            .vms_reclaimed
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .map(|(reason, n)| format!("{n:.0} {reason}"))
            .collect();
        let breaker = match c.registration_breaker_open {
            Some(true) => "OPEN: held at its floor until a runner registers",
            Some(false) => "closed",
            None => "-",
        };
        let _ = writeln!(
            out,
            "  healing      reclaimed {}; registration breaker {breaker}",
            if reclaimed.is_empty() {
                "none".to_owned()
            } else {
                reclaimed.join(", ")
            }
        );
        let hours: Vec<String> = c
            .vm_hours
            .iter()
            .map(|(phase, h)| format!("{phase} {h:.1}"))
            .collect();
        if !hours.is_empty() {
            let _ = writeln!(out, "  VM-hours     {}", hours.join(", "));
        }
        let _ = writeln!(
            out,
            "  last error   {}",
            c.last_error.as_ref().map_or("none".to_owned(), |e| format!(
                "{} ({}) {} ago",
                e.operation,
                e.kind,
                human_seconds(e.seconds_ago)
            ))
        );
    }
    out
}

/// `42s`, `3m05s`, `2h10m`.
fn human_seconds(s: f64) -> String {
    let s = s.max(0.0);
    if s < 60.0 {
        return format!("{s:.0}s");
    }
    let total = s.round() as u64;
    if total < 3600 {
        return format!("{}m{:02}s", total / 60, total % 60);
    }
    format!("{}h{:02}m", total / 3600, (total % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP provisioner_unclaimed_tasks Tasks queued and not yet claimed, per class (tasks).
# TYPE provisioner_unclaimed_tasks gauge
provisioner_unclaimed_tasks{resource_class="org/a"} 4
provisioner_running_tasks{resource_class="org/a"} 2
provisioner_pool_replicas{resource_class="org/a"} 6
provisioner_max_replicas{resource_class="org/a"} 10
provisioner_desired_vms{resource_class="org/a"} 6
provisioner_vms{resource_class="org/a",phase="running"} 5
provisioner_vms{resource_class="org/a",phase="starting"} 1
provisioner_jobs_started_total{resource_class="org/a"} 10
provisioner_jobs_warm_total{resource_class="org/a"} 4
provisioner_waiting_job_seconds_total{resource_class="org/a"} 600.0
provisioner_job_wait_seconds_bucket{resource_class="org/a",le="0.0"} 4
provisioner_job_wait_seconds_bucket{resource_class="org/a",le="60.0"} 4
provisioner_job_wait_seconds_bucket{resource_class="org/a",le="120.0"} 10
provisioner_job_wait_seconds_bucket{resource_class="org/a",le="+Inf"} 10
provisioner_vm_boot_seconds_sum{resource_class="org/a"} 300.0
provisioner_vm_boot_seconds_count{resource_class="org/a"} 3
provisioner_vm_seconds_total{resource_class="org/a",phase="idle"} 7200.0
provisioner_last_poll_timestamp_seconds{resource_class="org/a"} 995.0
provisioner_last_error_timestamp_seconds{resource_class="org/a",operation="observe",kind="transient"} 900.0
provisioner_last_error_timestamp_seconds{resource_class="org/a",operation="unclaimed_tasks",kind="permanent"} 700.0
provisioner_warm_vms{resource_class="org/a"} 3
provisioner_registration_breaker_open{resource_class="org/a"} 0
provisioner_vms_reclaimed_total{resource_class="org/a",reason="unregistered"} 2
provisioner_last_poll_timestamp_seconds{resource_class="org/b"} 990.0
provisioner_last_error_timestamp_seconds{resource_class="org/b",operation="running_tasks",kind="transient"} 998.0
provisioner_registration_breaker_open{resource_class="org/b"} 1
provisioner_last_poll_timestamp_seconds{resource_class="org/never"} 0.0
provisioner_leader 1
provisioner_poll_errors_total{resource_class="we\"ird\\",operation="observe",kind="transient"} 1
# EOF
"#;

    #[test]
    fn summarizes_a_class_from_its_metrics() {
        let samples = parse(TEXT).expect("parses");
        let status = summarize("http://localhost:9090/metrics", &samples, 1000.0);
        assert_eq!(status.leader, Some(true));
        let a = &status.classes[0];
        assert_eq!(a.resource_class, "org/a");
        assert_eq!(
            (
                a.unclaimed_tasks,
                a.running_tasks,
                a.pool_replicas,
                a.max_replicas
            ),
            (Some(4.0), Some(2.0), Some(6.0), Some(10.0))
        );
        assert_eq!(a.mean_wait_seconds, Some(60.0));
        assert_eq!(a.warm_share, Some(0.4));
        // 9.5 of 10 jobs: the sixth of the six in (60, 120] is at 60 + 60 * 5.5 / 6.
        assert_eq!(a.p95_wait_seconds, Some(115.0));
        assert_eq!(a.mean_boot_seconds, Some(100.0));
        assert_eq!(a.vm_hours.get("idle"), Some(&2.0));
        assert_eq!(a.last_poll_seconds_ago, Some(5.0));
        assert_eq!(
            a.last_error,
            Some(LastError {
                operation: "observe".to_owned(),
                kind: "transient".to_owned(),
                seconds_ago: 100.0
            })
        );
        assert!(!a.degraded, "its demand error is older than its last poll");
        assert_eq!(a.warm_vms, Some(3.0));
        assert_eq!(a.registration_breaker_open, Some(false));
        assert_eq!(a.vms_reclaimed.get("unregistered"), Some(&2.0));
        let b = &status.classes[1];
        assert!(b.degraded, "a running-tasks error after its last poll");
        assert_eq!(b.registration_breaker_open, Some(true));
        let never = &status.classes[2];
        assert_eq!(never.last_poll_seconds_ago, None);
        assert!(!never.degraded);
        // The escaped label value is read back.
        assert_eq!(status.classes[3].resource_class, "we\"ird\\");
        let text = render_text(&status);
        assert!(text.contains("(desired 6, max 10, warm 3)"), "{text}");
        assert!(
            text.contains("healing      reclaimed 2 unregistered; registration breaker closed"),
            "{text}"
        );
        assert!(
            text.contains("(polled 10s ago); DEGRADED: the last poll failed"),
            "{text}"
        );
        assert!(text.contains("registration breaker OPEN"), "{text}");
        assert!(text.contains("(never polled)"), "{text}");
        assert!(
            text.contains("demand       4 unclaimed, 2 running (polled 5s ago)"),
            "{text}"
        );
        assert!(
            text.contains("wait mean 1m00s, p95 1m55s; 40% found a warm VM"),
            "{text}"
        );
        assert!(
            text.contains("last error   observe (transient) 1m40s ago"),
            "{text}"
        );
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let err = parse("ok 1\nprovisioner_x{a=\"b\" 1\n").expect_err("bad labels");
        assert_eq!(err.line, 2);
        let err = parse("provisioner_x abc\n").expect_err("bad value");
        assert!(err.message.contains("not a number"), "{err}");
    }
}
