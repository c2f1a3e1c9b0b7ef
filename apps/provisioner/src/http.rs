//! The three HTTP endpoints, each on its own port as preview 0.1.0 has them: `GET /ready` (8000),
//! `GET /live` (8001) and `GET /metrics` (9090).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::Error;
use crate::context::Context;

/// The addresses actually bound (a port of 0 picks a free one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub ready: SocketAddr,
    pub live: SocketAddr,
    pub metrics: SocketAddr,
}

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub ready: u16,
    pub live: u16,
    pub metrics: u16,
}

/// Bind all three before returning, so a port in use fails start-up with its address.
pub async fn serve(ctx: Arc<Context>, ip: IpAddr, ports: Ports) -> Result<Bound, Error> {
    let ready = bind(ip, ports.ready).await?;
    let live = bind(ip, ports.live).await?;
    let metrics = bind(ip, ports.metrics).await?;
    let bound = Bound {
        ready: local(&ready, ip, ports.ready),
        live: local(&live, ip, ports.live),
        metrics: local(&metrics, ip, ports.metrics),
    };
    spawn(
        ready,
        Router::new()
            .route("/ready", get(ready_handler))
            .with_state(ctx.clone()),
    );
    spawn(
        live,
        Router::new()
            .route("/live", get(live_handler))
            .with_state(ctx.clone()),
    );
    spawn(
        metrics,
        Router::new()
            .route("/metrics", get(metrics_handler))
            .with_state(ctx),
    );
    Ok(bound)
}

async fn bind(ip: IpAddr, port: u16) -> Result<TcpListener, Error> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

fn local(listener: &TcpListener, ip: IpAddr, port: u16) -> SocketAddr {
    listener.local_addr().unwrap_or(SocketAddr::new(ip, port))
}

fn spawn(listener: TcpListener, router: Router) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
}

fn verdict(result: Result<(), String>) -> (StatusCode, String) {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn ready_handler(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    verdict(ctx.health.readiness(Instant::now()))
}

async fn live_handler(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    verdict(ctx.health.liveness(Instant::now()))
}

async fn metrics_handler(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.encode(),
    )
}
