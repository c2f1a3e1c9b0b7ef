//! A fake CircleCI runner API for the benchmark (`bench/run.sh`): answers both task-count
//! endpoints for any resource class with counts that drift over time, as fast as it can.
//!
//! `cargo run --release -p provisioner --example fake_circleci -- 127.0.0.1:0` prints
//! `listening on <addr>` and serves until killed.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::RawQuery;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// A count per class that changes every 10 s, in 0..8.
fn count(query: Option<&str>, salt: u64) -> u64 {
    let mut h = DefaultHasher::new();
    query.unwrap_or_default().hash(&mut h);
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 10);
    (epoch + salt).hash(&mut h);
    h.finish() % 8
}

async fn unclaimed(RawQuery(q): RawQuery) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"unclaimed_task_count\":{}}}", count(q.as_deref(), 1)),
    )
}

async fn running(RawQuery(q): RawQuery) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"running_runner_tasks\":{}}}", count(q.as_deref(), 2)),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let app = Router::new()
        .route("/api/v3/runner/tasks", get(unclaimed))
        .route("/api/v3/runner/tasks/running", get(running));
    axum::serve(listener, app).await
}
