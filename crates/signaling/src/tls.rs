//! HTTPS on the HTTP port, with rustls on the aws-lc-rs provider (the one
//! str0m's DTLS already links). The certificate chain and key are PEM
//! files read once at start; renewing them takes a restart.
//!
//! One port speaks both: the listener peeks at a connection's first byte,
//! and a TLS handshake record (`0x16`) gets the handshake while anything
//! else is taken for plain HTTP and answered with a `308` to the same URL
//! over HTTPS, so `http://` in a browser or an OBS setting still lands.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::uri::Authority;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use tokio::net::TcpStream;
pub(crate) use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

use crate::StartError;

/// The PEM files that turn the HTTP listener into HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (a `fullchain.pem`).
    pub cert: PathBuf,
    /// The leaf's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// `Strict-Transport-Security` on every HTTPS answer: for a year, the
/// browser goes to this host over HTTPS only, even from an `http://` link.
pub(crate) const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

/// A connection after its first bytes.
pub(crate) enum Accepted {
    /// The handshake completed.
    Tls(Box<TlsStream<TcpStream>>),
    /// The client speaks plain HTTP.
    Plain(TcpStream),
    /// The client closed before sending anything.
    Closed,
}

/// Reads the certificate chain and key and checks they belong together.
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, StartError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    // Named, not the process default: the workspace also builds rustls with
    // ring (for webrtc-rs in the tools), and with two providers compiled in
    // rustls will not pick one itself.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error("certificate", &files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            let reason = match e {
                rustls::Error::InconsistentKeys(_) => {
                    format!(
                        "it does not match the certificate in {}",
                        files.cert.display()
                    )
                }
                e => format!(
                    "unusable with the certificate in {}: {e}",
                    files.cert.display()
                ),
            };
            error("private key", &files.key, reason)
        })?;
    // Served by hyper's HTTP/1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Waits for the client's first byte, then completes the handshake if it
/// starts one. The caller bounds the wait.
pub(crate) async fn accept(acceptor: &TlsAcceptor, stream: TcpStream) -> io::Result<Accepted> {
    /// The content type of a TLS handshake record, which a ClientHello is.
    const HANDSHAKE: u8 = 0x16;
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(Accepted::Closed);
    }
    if first[0] != HANDSHAKE {
        return Ok(Accepted::Plain(stream));
    }
    Ok(Accepted::Tls(Box::new(acceptor.accept(stream).await?)))
}

/// The answer to a plain HTTP request on the HTTPS port: `308` (the method
/// and body are kept, so a WHIP `POST` is redone over HTTPS) to the same
/// host and path. Without a usable `Host`, the address the client
/// connected to stands in.
pub(crate) fn redirect<B>(req: &Request<B>, local: SocketAddr) -> Response<Body> {
    let authority = req
        .uri()
        .authority()
        .cloned()
        .or_else(|| {
            let host = req.headers().get(header::HOST)?.to_str().ok()?;
            host.parse::<Authority>().ok()
        })
        // `user@host` is an authority too, but not one to send anyone to.
        .filter(|a| !a.as_str().is_empty() && !a.as_str().contains('@'))
        .map_or_else(|| local.to_string(), |a| a.to_string());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    let location = HeaderValue::from_str(&format!("https://{authority}{path}"))
        .or_else(|_| HeaderValue::from_str(&format!("https://{authority}/")))
        .unwrap_or(HeaderValue::from_static("/"));
    let body = format!(
        "this server speaks HTTPS only: {}\n",
        location.to_str().unwrap_or("")
    );
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::PERMANENT_REDIRECT;
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, StartError> {
    let what = "certificate";
    let text = std::fs::read(path).map_err(|e| error(what, path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(what, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            what,
            path,
            "no PEM certificate in it (-----BEGIN CERTIFICATE-----)".to_string(),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, StartError> {
    let what = "private key";
    let text = std::fs::read(path).map_err(|e| error(what, path, e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        let reason = match e {
            pem::Error::NoItemsFound => {
                "no PEM private key in it (PKCS#8, PKCS#1 or SEC1)".to_string()
            }
            e => format!("not valid PEM: {e}"),
        };
        error(what, path, reason)
    })
}

fn error(what: &'static str, path: &Path, reason: String) -> StartError {
    StartError::Tls {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect_of(req: Request<()>) -> (StatusCode, String) {
        let res = redirect(&req, "192.0.2.1:8443".parse().expect("addr"));
        let location = res
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (res.status(), location)
    }

    fn get(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn plain_http_is_sent_to_the_same_url_over_https() {
        assert_eq!(
            redirect_of(get("/whep/cam?x=1", Some("live.example:8443"))),
            (
                StatusCode::PERMANENT_REDIRECT,
                "https://live.example:8443/whep/cam?x=1".to_string()
            )
        );
        // Absolute form names the host itself.
        assert_eq!(
            redirect_of(get("http://a.example/p", Some("b.example"))).1,
            "https://a.example/p"
        );
        // No Host, or one that is not a host: the address connected to.
        assert_eq!(redirect_of(get("/p", None)).1, "https://192.0.2.1:8443/p");
        for bad in ["a b", "evil@a.example", ""] {
            assert_eq!(
                redirect_of(get("/p", Some(bad))).1,
                "https://192.0.2.1:8443/p",
                "{bad}"
            );
        }
        assert_eq!(
            redirect_of(get("*", Some("a.example"))).1,
            "https://a.example/"
        );
    }
}
