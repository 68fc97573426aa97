//! The HTTP listener, with the limits that keep one client from starving
//! the others: a header read timeout (which also closes idle keep-alive
//! connections, and bounds a TLS handshake), a cap on open connections kept
//! below the process's file-descriptor limit (a connection past it gets
//! `503` and `Retry-After` at once), and the client's address on every
//! request for the per-client limits (the peer's, or the one a trusted
//! proxy forwarded: see `proxy`). With TLS on it serves HTTPS, and plain
//! HTTP on the same port gets a redirect (see `tls`).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::STRICT_TRANSPORT_SECURITY;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::proxy::{self, Cidr};
use crate::tls::{self, Accepted, TlsAcceptor};

/// File descriptors kept free of HTTP connections: the media sockets, the
/// data directory, logs, and room to answer `503` past the cap.
const FD_RESERVE: u64 = 128;

/// The answer to a connection past the cap: short, closing, and without
/// reading the request.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 38\r\nconnection: close\r\n\r\n\
too many connections; retry in a second";

/// Raises the soft limit on open files to the hard one (best effort) and
/// answers the soft limit now in force.
pub(crate) fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// The connection cap actually used: the configured one, but never so
/// close to the file-descriptor limit that accepting could fail.
pub(crate) fn connection_cap(configured: usize, nofile: u64) -> usize {
    let room = nofile.saturating_sub(FD_RESERVE).max(1);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// How the listener treats connections.
pub(crate) struct Listening {
    /// Open connections at most (see [`connection_cap`]).
    pub max_connections: usize,
    /// For a request's headers, and for a TLS handshake.
    pub header_timeout: Duration,
    /// Counts connections refused at the cap.
    pub refused: Arc<AtomicU64>,
    /// HTTPS when set.
    pub tls: Option<TlsAcceptor>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Arc<[Cidr]>,
}

/// Serves `app` on `listener` until `stop` turns true, then lets the open
/// connections finish their requests (event streams end themselves on the
/// same signal) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    how: Listening,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(how.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait a moment rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: at the connection cap");
            how.refused.fetch_add(1, Ordering::Relaxed);
            // In plain text even on the HTTPS port: a handshake costs more
            // than the refusal is worth, and a TLS client just sees the
            // connection fail.
            conns.spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let header_timeout = how.header_timeout;
        let trusted = how.trusted_proxies.clone();
        let acceptor = how.tls.clone();
        let mut stop = stop.clone();
        conns.spawn(async move {
            let _permit = permit;
            let Some(acceptor) = acceptor else {
                let service = app_service(app, peer, false, trusted);
                let io = TokioIo::new(stream);
                return drive(io, service, peer, header_timeout, true, stop).await;
            };
            let local = stream.local_addr().unwrap_or(peer);
            let handshake = tokio::select! {
                h = tokio::time::timeout(header_timeout, tls::accept(&acceptor, stream)) => h,
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => return,
            };
            match handshake {
                Ok(Ok(Accepted::Tls(stream))) => {
                    let service = app_service(app, peer, true, trusted);
                    drive(
                        TokioIo::new(stream),
                        service,
                        peer,
                        header_timeout,
                        true,
                        stop,
                    )
                    .await;
                }
                Ok(Ok(Accepted::Plain(stream))) => {
                    let service = hyper::service::service_fn(move |req| {
                        let res = tls::redirect(&req, local);
                        async move { Ok::<_, Infallible>(res) }
                    });
                    // One answer, then close: nothing else is served here.
                    drive(
                        TokioIo::new(stream),
                        service,
                        peer,
                        header_timeout,
                        false,
                        stop,
                    )
                    .await;
                }
                Ok(Ok(Accepted::Closed)) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
        // Forget finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

/// `app` for one connection: each request learns where it comes from
/// (computed once here, where the peer is known), and over TLS each answer
/// carries HSTS.
fn app_service(
    app: Router,
    peer: SocketAddr,
    tls: bool,
    trusted: Arc<[Cidr]>,
) -> impl HttpService<Incoming, ResBody = Body, Future: Send> + Send {
    let service = app
        .map_request(move |mut req: hyper::Request<Incoming>| {
            let origin = proxy::origin(peer.ip(), tls, req.headers(), &trusted);
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(origin);
            req
        })
        .map_response(move |mut res: Response| {
            if tls {
                res.headers_mut()
                    .insert(STRICT_TRANSPORT_SECURITY, tls::HSTS);
            }
            res
        });
    TowerToHyperService::new(service)
}

/// Serves HTTP/1 on one connection until it ends, or until `stop`, then
/// lets the request in progress finish.
async fn drive<I, S>(
    io: I,
    service: S,
    peer: SocketAddr,
    header_timeout: Duration,
    keep_alive: bool,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Some(header_timeout))
        .keep_alive(keep_alive);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => log_end(peer, r),
        // (The guard wait_for returns must not live across an await.)
        _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
            conn.as_mut().graceful_shutdown();
            log_end(peer, conn.await);
        }
    }
}

fn log_end(peer: SocketAddr, r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(connection_cap(4096, 1_048_576), 4096);
        assert_eq!(connection_cap(4096, 1024), 1024 - FD_RESERVE as usize);
        assert_eq!(connection_cap(4096, 10), 1);
    }
}
