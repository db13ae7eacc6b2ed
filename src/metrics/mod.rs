//! What an operator scrapes: Prometheus text at `/metrics`, and `/healthz`
//! (200 while everything registered says it is alive, 503 with the reasons
//! otherwise). Off unless `[metrics] listen` is set. The device's and the
//! server's metrics register into one [`Metrics`], so `roomcam demo` serves
//! both sets from one listener.

pub mod device;
pub mod server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::util::lock_ignoring_poison;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("metrics: {0}")]
    Register(#[from] prometheus::Error),
}

/// Something `/healthz` asks; an `Err` says what is wrong, for the operator.
/// Checks run on a blocking thread, so one may wait a little (a connect).
pub trait HealthCheck: Send + Sync {
    fn check(&self) -> Result<(), String>;
}

/// Brought up to date just before each scrape: metrics mirrored from
/// counters that their owner keeps anyway, so the hot paths count once.
pub trait Refresh: Send + Sync {
    fn refresh(&self);
}

/// One registry, its health checks and its refreshers.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    registry: Registry,
    checks: Mutex<Vec<Arc<dyn HealthCheck>>>,
    refreshers: Mutex<Vec<Arc<dyn Refresh>>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Registers `collector` and hands it back (metrics are cheap handles
    /// onto shared cells).
    pub fn register<C>(&self, collector: C) -> Result<C, MetricsError>
    where
        C: prometheus::core::Collector + Clone + 'static,
    {
        self.inner.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    pub fn add_health_check(&self, check: Arc<dyn HealthCheck>) {
        lock_ignoring_poison(&self.inner.checks).push(check);
    }

    pub fn add_refresh(&self, refresh: Arc<dyn Refresh>) {
        lock_ignoring_poison(&self.inner.refreshers).push(refresh);
    }

    /// The registry in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> Result<String, MetricsError> {
        let refreshers = lock_ignoring_poison(&self.inner.refreshers).clone();
        for refresh in refreshers {
            refresh.refresh();
        }
        Ok(TextEncoder::new().encode_to_string(&self.inner.registry.gather())?)
    }

    /// Every check's complaint; empty when healthy.
    pub fn problems(&self) -> Vec<String> {
        let checks = lock_ignoring_poison(&self.inner.checks).clone();
        checks.iter().filter_map(|check| check.check().err()).collect()
    }

    /// `/metrics` and `/healthz`.
    pub fn router(&self) -> Router {
        let metrics = self.clone();
        let health = self.clone();
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let metrics = metrics.clone();
                    async move {
                        match metrics.render() {
                            Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
                            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                        }
                    }
                }),
            )
            .route(
                "/healthz",
                get(move || {
                    let health = health.clone();
                    async move {
                        let problems = tokio::task::spawn_blocking(move || health.problems())
                            .await
                            .unwrap_or_else(|e| vec![format!("a health check failed: {e}")]);
                        match problems.is_empty() {
                            true => (StatusCode::OK, "ok\n".to_owned()),
                            false => (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n"),
                        }
                    }
                }),
            )
    }
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        log::info!("metrics: listening on http://{addr}/metrics (and /healthz)");
    }
    axum::serve(listener, metrics.router()).with_graceful_shutdown(shutdown).await
}

/// Binds `[metrics] listen` and serves it in a task of its own, which ends
/// with the runtime: a broken scrape never stops the stream.
pub async fn spawn(addr: SocketAddr, metrics: Metrics) -> Result<tokio::task::JoinHandle<()>, MetricsError> {
    let listener = bind(addr).await?;
    Ok(tokio::spawn(async move {
        if let Err(e) = serve(listener, metrics, std::future::pending()).await {
            log::error!("metrics: {e}; /metrics and /healthz are gone");
        }
    }))
}

/// The signaling server's listener takes TCP connections.
pub struct ListenerHealth {
    pub addr: SocketAddr,
}

impl HealthCheck for ListenerHealth {
    fn check(&self) -> Result<(), String> {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1))
            .map(drop)
            .map_err(|e| format!("the signaling server on {} does not take connections: {e}", self.addr))
    }
}

/// The bounded label that stands for a viewer: the lowest free slot, so a
/// scrape has at most as many series as viewers at once, never one per
/// peer id that ever watched.
#[derive(Debug, Default)]
pub struct Slots<K> {
    taken: Vec<Option<K>>,
}

impl<K: PartialEq + Clone> Slots<K> {
    /// `key`'s slot, taking the lowest free one for a new key.
    pub fn slot(&mut self, key: &K) -> usize {
        if let Some(i) = self.find(key) {
            return i;
        }
        match self.taken.iter().position(Option::is_none) {
            Some(i) => {
                self.taken[i] = Some(key.clone());
                i
            }
            None => {
                self.taken.push(Some(key.clone()));
                self.taken.len() - 1
            }
        }
    }

    pub fn find(&self, key: &K) -> Option<usize> {
        self.taken.iter().position(|k| k.as_ref() == Some(key))
    }

    /// Frees `key`'s slot; which one it was.
    pub fn free(&mut self, key: &K) -> Option<usize> {
        let i = self.find(key)?;
        self.taken[i] = None;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<(), String>);
    impl HealthCheck for Fixed {
        fn check(&self) -> Result<(), String> {
            self.0.clone()
        }
    }

    #[test]
    fn slots_are_reused_lowest_first() {
        let mut slots = Slots::default();
        assert_eq!(slots.slot(&"a"), 0);
        assert_eq!(slots.slot(&"b"), 1);
        assert_eq!(slots.slot(&"a"), 0, "same key, same slot");
        assert_eq!(slots.free(&"a"), Some(0));
        assert_eq!(slots.free(&"a"), None);
        assert_eq!(slots.slot(&"c"), 0, "the freed slot first");
        assert_eq!(slots.slot(&"d"), 2);
    }

    #[test]
    fn health_lists_every_complaint() {
        let metrics = Metrics::new();
        assert!(metrics.problems().is_empty(), "nothing registered: healthy");
        metrics.add_health_check(Arc::new(Fixed(Ok(()))));
        assert!(metrics.problems().is_empty());
        metrics.add_health_check(Arc::new(Fixed(Err("camera stuck".into()))));
        metrics.add_health_check(Arc::new(Fixed(Err("main loop stuck".into()))));
        assert_eq!(metrics.problems(), vec!["camera stuck".to_owned(), "main loop stuck".to_owned()]);
    }

    #[test]
    fn a_name_registered_twice_is_an_error() {
        let metrics = Metrics::new();
        let counter = || prometheus::IntCounter::new("roomcam_test_total", "A test counter.").unwrap();
        metrics.register(counter()).unwrap();
        assert!(matches!(metrics.register(counter()), Err(MetricsError::Register(_))));
    }
}
