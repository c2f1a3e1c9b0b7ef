//! Running the built binary as a user would: its JSON log lines on stderr, its HTTP endpoints,
//! bounded waits, and the child killed when the test ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const BIN: &str = env!("CARGO_BIN_EXE_provisioner");
pub const WAIT: Duration = Duration::from_secs(20);

/// Kills the child when the test ends, however it ends.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<Value>,
    /// Every line seen so far, for failure messages.
    pub seen: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Send SIGTERM, as the kubelet does (through the shell's builtin `kill`: no extra tool).
    pub fn sigterm(&self) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .expect("run sh");
        assert!(status.success(), "kill -TERM failed");
    }

    /// How the process ended, within `WAIT`.
    pub fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                return exit;
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {WAIT:?}; saw:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// No log line seen so far holds any of `secrets`.
    pub fn assert_no_leak(&self, secrets: &[&str]) {
        for line in &self.seen {
            for secret in secrets {
                assert!(
                    !line.contains(secret),
                    "a token leaked into the logs: {line}"
                );
            }
        }
    }

    /// The next JSON log line matching `pred`, within `WAIT`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.to_string());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no log line {what} within {WAIT:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }
}

pub fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

pub fn cycle_for<'a>(class: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |v| message(v) == "scaler cycle" && v["resource_class"] == class
}

/// CircleCI answering `org/a` with the given counts (other classes: none queued), for `token`.
pub async fn fake_circleci(token: &str, unclaimed: u32, running: u32) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks"))
        .and(header("Circle-Token", token))
        .and(query_param("resource-class", "org/a"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "unclaimed_task_count": unclaimed })),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks/running"))
        .and(header("Circle-Token", token))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "running_runner_tasks": running })),
        )
        .mount(&server)
        .await;
    // Any other class has no queued tasks.
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks"))
        .and(header("Circle-Token", token))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "unclaimed_task_count": 0 })),
        )
        .mount(&server)
        .await;
    server
}

/// Start the binary with a clean environment (no cluster: KUBECONFIG points nowhere unless
/// `envs` sets it), serving its three endpoints on loopback at free ports (logged in the
/// `listening` line).
pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut all = args.to_vec();
    all.extend([
        "--bind-address",
        "127.0.0.1",
        "--ready-port",
        "0",
        "--live-port",
        "0",
        "--metrics-port",
        "0",
    ]);
    spawn_command(&all, envs)
}

/// `spawn` without `run`'s port flags, for any subcommand.
pub fn spawn_command(args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("LOG_LEVEL")
        .env_remove("CIRCLECI_API_ADDR")
        .env_remove("PROVISIONER_CONFIG")
        .env_remove("PROVISIONER_SECRETS")
        .env_remove("POD_NAMESPACE")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start the provisioner binary");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let value = serde_json::from_str::<Value>(&line)
                .unwrap_or_else(|_| serde_json::json!({ "message": "NOT JSON", "raw": line }));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        lines,
        seen: Vec::new(),
    }
}

/// A finished command's stdout and stderr, for assertions and failure messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A kubeconfig in `dir` for the cluster at `server` (a URL), with `namespace` as its default.
/// A `config.yaml` in `dir` with one class and its runner token (0.1.0's shape).
pub fn write_class_config(dir: &Path, class: &str, token: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!("resourceClass:\n  \"{class}\":\n    token: \"{token}\"\n"),
    )
    .expect("write config");
    path
}

pub fn write_kubeconfig(dir: &Path, server: &str, namespace: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: me\n  user: {{}}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: me\n    namespace: {namespace}\ncurrent-context: c\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

/// A minimal HTTP GET, so the test needs no HTTP client: `(status, body)`.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub fn wait_status(addr: SocketAddr, path: &str, want: u16) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = get(addr, path);
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed {status} (wanted {want}): {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn addr(line: &Value, field: &str) -> SocketAddr {
    line[field]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{field} missing in {line}"))
}
