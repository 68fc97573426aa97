//! One delivery attempt: an HTTP/1.1 POST with hyper's connection API over
//! a tokio socket, through rustls (aws-lc-rs) for `https://`. One
//! connection per attempt: deliveries are rare next to media, and a fresh
//! connection cannot inherit a half-read answer of the last one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use super::WebhookConfig;
use crate::{AuthError, Result};

/// Longest endpoint URL.
const MAX_URL: usize = 2048;

/// Where the system's CA bundle usually is (Debian, Fedora, Alpine/macOS).
const CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// What an endpoint's URL must be.
pub(super) fn check_url(url: &str) -> Result<()> {
    Target::parse(url).map(|_| ()).map_err(AuthError::Invalid)
}

/// Bytes a path and query may have: RFC 3986's unreserved and
/// sub-delimiters, `:`, `@`, `/`, `?` and `%`.
const PATH_BYTES: &[u8] = b"._~!$&'()*+,;=:@/?%-";

/// An endpoint URL taken apart. The grammar is [`super::URL_PATTERN`],
/// checked by hand so that the API's schema says exactly what is taken.
struct Target {
    tls: bool,
    /// For connecting and for TLS: a name or an IPv4 address.
    host: String,
    port: u16,
    /// For the `Host` header.
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let bad = |why: &str| Err(format!("`{url}` is not a webhook URL: {why}"));
        if url.len() > MAX_URL {
            return Err(format!("a webhook URL is at most {MAX_URL} bytes"));
        }
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return bad("it starts with http:// or https://");
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !host_ok {
            return bad(
                "the host is a name or an IPv4 address (letters, digits, `.`, `-`; \
                 an IPv6 endpoint needs a name)",
            );
        }
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(digits)
                if (1..=5).contains(&digits.len())
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && !(digits.len() == 5 && digits.starts_with('0')) =>
            {
                match digits.parse::<u16>() {
                    Ok(p) => p,
                    Err(_) => return bad("the port is at most 65535"),
                }
            }
            _ => return bad("the port is a number after the host"),
        };
        if !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || PATH_BYTES.contains(&b))
        {
            return bad("the path and query are letters, digits and !$&'()*+,;=:@/?%-._~");
        }
        Ok(Target {
            tls,
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path: if path.is_empty() { "/" } else { path }.to_string(),
        })
    }
}

/// Sends deliveries. Cheap to clone.
#[derive(Clone)]
pub(super) struct Client {
    /// `None` if rustls could not be set up (https then fails).
    tls: Option<TlsConnector>,
    timeout: Duration,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// An answer that is not 2xx.
    Status(u16),
    /// No answer: the connection, TLS or HTTP failed, or it took too long.
    Transport(String),
}

impl Client {
    /// A client trusting the system's CAs and `config.ca_file`'s.
    pub fn new(config: &WebhookConfig) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        let system = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain(CA_BUNDLES.iter().map(std::path::PathBuf::from))
            .find(|p| p.is_file());
        for file in system.iter().chain(config.ca_file.iter()) {
            match load_certs(file) {
                Ok(certs) => {
                    let (_, ignored) = roots.add_parsable_certificates(certs);
                    if ignored > 0 {
                        tracing::debug!(file = %file.display(), ignored, "unusable CA certificates skipped");
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "cannot read CA certificates for https webhooks");
                }
            }
        }
        if roots.is_empty() {
            tracing::warn!("no CA certificates found: https:// webhook deliveries will fail");
        }
        // Named, not the process default: with ring also compiled into the
        // workspace, rustls would not pick a provider itself. Its defaults
        // are consistent, so this does not fail in practice.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .map(|mut c| {
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                TlsConnector::from(Arc::new(c))
            });
        let tls = tls
            .inspect_err(|e| tracing::error!(error = %e, "no TLS for https webhooks"))
            .ok();
        Client {
            tls,
            timeout: config.timeout,
        }
    }

    /// POSTs `body` (JSON) to `url` with `headers`: the answer's status if
    /// it is 2xx.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: String,
    ) -> Result<u16, Failure> {
        match tokio::time::timeout(self.timeout, self.try_post(url, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Transport(format!(
                "no answer within {} s",
                self.timeout.as_secs_f32()
            ))),
        }
    }

    async fn try_post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: String,
    ) -> Result<u16, Failure> {
        let target = Target::parse(url).map_err(Failure::Transport)?;
        let mut request = Request::post(target.path.as_str())
            .header(header::HOST, target.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "lumen-webhooks");
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| Failure::Transport(format!("connect: {e}")))?;
        let status = if target.tls {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| Failure::Transport(format!("TLS name: {e}")))?;
            let Some(connector) = &self.tls else {
                return Err(Failure::Transport("TLS is not available".to_string()));
            };
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| Failure::Transport(format!("TLS: {e}")))?;
            exchange(tls, request).await?
        } else {
            exchange(tcp, request).await?
        };
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(Failure::Status(status))
        }
    }
}

/// One request on a fresh connection; the answer's status. The body of
/// the answer is not read: only its status counts.
async fn exchange<S>(io: S, request: Request<Full<Bytes>>) -> Result<u16, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Transport(format!("HTTP: {e}")))?;
    // Ends the connection however the attempt ends (its timeout included).
    let _connection = AbortOnDrop(tokio::spawn(connection));
    sender
        .send_request(request)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| Failure::Transport(format!("HTTP: {e}")))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
