//! Who a request comes from when lumen sits behind a reverse proxy.
//!
//! Every per-address limit keys on the client's address, and behind a proxy
//! the TCP peer is the proxy. Only a peer inside a trusted [`Cidr`] may say
//! otherwise, with `Forwarded: for=…;proto=…` (RFC 7239) or, when that
//! names no address, `X-Forwarded-For` and `X-Forwarded-Proto`. The chain
//! of hops is read from the right: the first address not itself trusted is
//! the client, because everything left of it was written by someone we do
//! not trust. A hop that is not an address (`unknown`, an obfuscated name,
//! garbage) ends the walk: what lies left of it cannot be vouched for.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use axum::http::HeaderMap;
use axum::http::header::{FORWARDED, HeaderName};

/// An IPv4 or IPv6 network, `10.0.0.0/8` or `2001:db8::/32`; a bare
/// address is one host (`/32` or `/128`). Bits set past the prefix are an
/// error rather than silently dropped: `10.1.2.3/8` is more likely a typo
/// than a way to write `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a text is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("{0:?} is not an IP address or network (like 10.0.0.0/8 or 2001:db8::/32)")]
    Address(String),
    /// The prefix is not a number, or longer than the address.
    #[error("{0:?}: the prefix length must be 0 to {1}")]
    Prefix(String, u8),
    /// Bits are set past the prefix.
    #[error("{0:?} has bits set past its prefix length; the network is {1}")]
    HostBits(String, Cidr),
}

impl Cidr {
    /// The network `addr/prefix`; `None` if the prefix is longer than the
    /// address or `addr` has bits set past it.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let c = Cidr { addr, prefix };
        (prefix <= max_prefix(addr) && c.network() == addr).then_some(c)
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`, what a dual-stack listener reports for an IPv4
    /// peer) is also matched as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_exact(ip) || self.contains_exact(ip.to_canonical())
    }

    fn contains_exact(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// `addr` with the bits past the prefix cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let text = s.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(text.to_string()))?;
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError::Prefix(text.to_string(), max))?,
        };
        let c = Cidr { addr, prefix };
        let network = Cidr {
            addr: c.network(),
            prefix,
        };
        if network != c {
            return Err(CidrError::HostBits(text.to_string(), network));
        }
        Ok(c)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a request comes from, as far as the server can tell: set on
/// every request by the listener, read by the `ClientAddr` and `Secure`
/// extractors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The client's address: the TCP peer's, or the one a trusted proxy
    /// forwarded.
    pub addr: IpAddr,
    /// The client used HTTPS: this connection is TLS, or a trusted proxy
    /// said `proto=https`.
    pub secure: bool,
}

/// The [`Origin`] of a request that arrived from `peer` (over TLS or not)
/// with `headers`. The forwarding headers count only when `peer` is in
/// `trusted`.
pub(crate) fn origin(peer: IpAddr, tls: bool, headers: &HeaderMap, trusted: &[Cidr]) -> Origin {
    let direct = Origin {
        addr: peer,
        secure: tls,
    };
    if !is_trusted(peer, trusted) {
        return direct;
    }
    let forwarded = forwarded_hops(headers);
    // A `Forwarded` header with `for=`, even `for=unknown`, is the one the
    // proxy wrote: an `X-Forwarded-For` beside it may be the client's.
    let hops = if forwarded.iter().any(|h| h.has_for) {
        forwarded.clone()
    } else {
        x_forwarded_hops(headers)
    };
    match client_hop(&hops, trusted) {
        Some(hop) => Origin {
            addr: hop.addr.unwrap_or(peer),
            secure: tls || hop.https(),
        },
        // No address to go by; the nearest proxy may still tell the scheme.
        None => {
            let nearest = forwarded
                .last()
                .and_then(|h| h.proto.clone())
                .or_else(|| comma_list(headers, &XFP).pop());
            Origin {
                addr: peer,
                secure: tls || nearest.is_some_and(|p| p.eq_ignore_ascii_case("https")),
            }
        }
    }
}

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// One proxy hop as a forwarding header tells it: the address it received
/// the request from (`None` when it is not one) and the scheme used.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hop {
    addr: Option<IpAddr>,
    proto: Option<String>,
    /// A well-formed `Forwarded` element with a `for` parameter.
    has_for: bool,
}

impl Hop {
    const UNKNOWN: Hop = Hop {
        addr: None,
        proto: None,
        has_for: false,
    };

    fn https(&self) -> bool {
        self.proto
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
    }
}

/// From the right: the first hop whose address is not trusted; else the
/// left-most of the trusted ones before the chain ends or breaks.
fn client_hop<'a>(hops: &'a [Hop], trusted: &[Cidr]) -> Option<&'a Hop> {
    let mut last_trusted = None;
    for hop in hops.iter().rev() {
        match hop.addr {
            Some(ip) if is_trusted(ip, trusted) => last_trusted = Some(hop),
            Some(_) => return Some(hop),
            None => break,
        }
    }
    last_trusted
}

/// Every element of every `Forwarded` header, in order; an element that
/// does not parse is a hop without address.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops = Vec::new();
    for value in headers.get_all(FORWARDED) {
        let Ok(text) = value.to_str() else {
            hops.push(Hop::UNKNOWN);
            continue;
        };
        for element in split_quoted(text, ',') {
            let element = element.trim();
            // `#` lists may have empty elements.
            if !element.is_empty() {
                hops.push(forwarded_element(element).unwrap_or(Hop::UNKNOWN));
            }
        }
    }
    hops
}

/// `for=…;proto=…;by=…;host=…` (RFC 7239 section 4), each parameter at
/// most once.
fn forwarded_element(element: &str) -> Option<Hop> {
    let mut hop = Hop::UNKNOWN;
    let (mut seen_for, mut seen_proto) = (false, false);
    for pair in split_quoted(element, ';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return None;
        }
        let value = unquote(value.trim())?;
        if name.eq_ignore_ascii_case("for") {
            if std::mem::replace(&mut seen_for, true) {
                return None;
            }
            hop.addr = node_addr(&value)?;
            hop.has_for = true;
        } else if name.eq_ignore_ascii_case("proto") {
            if std::mem::replace(&mut seen_proto, true) {
                return None;
            }
            hop.proto = Some(value);
        }
    }
    Some(hop)
}

/// A `node` (RFC 7239 section 6): `Some(None)` for `unknown` and
/// obfuscated names, `None` when it is not a node at all.
fn node_addr(node: &str) -> Option<Option<IpAddr>> {
    if node.eq_ignore_ascii_case("unknown") || is_obfuscated(node) {
        return Some(None);
    }
    let (name, port) = if let Some(rest) = node.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = v6.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (IpAddr::V6(ip), port)
    } else if let Ok(ip) = node.parse::<IpAddr>() {
        // A bare IPv6 address is not what the RFC says, but it is what
        // some proxies write, and it cannot be read another way.
        (ip, None)
    } else {
        let (v4, port) = node.split_once(':')?;
        (IpAddr::V4(v4.parse().ok()?), Some(port))
    };
    match port {
        Some(p) if !(p.parse::<u16>().is_ok() || is_obfuscated(p)) => None,
        _ => Some(Some(name)),
    }
}

/// `_` then letters, digits, `.`, `_` or `-` (an `obfnode` or `obfport`).
fn is_obfuscated(s: &str) -> bool {
    s.len() > 1
        && s.starts_with('_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `X-Forwarded-For` as hops, with the `X-Forwarded-Proto` that goes with
/// each: one per address when the proxies kept the two lists in step,
/// else the right-most one (the nearest proxy's) for all.
fn x_forwarded_hops(headers: &HeaderMap) -> Vec<Hop> {
    let addrs: Vec<Option<IpAddr>> = comma_list(headers, &XFF)
        .iter()
        .map(|a| plain_addr(a))
        .collect();
    let protos = comma_list(headers, &XFP);
    let in_step = protos.len() == addrs.len();
    addrs
        .into_iter()
        .enumerate()
        .map(|(i, addr)| Hop {
            addr,
            has_for: false,
            proto: if in_step {
                protos.get(i).cloned()
            } else {
                protos.last().cloned()
            },
        })
        .collect()
}

/// An address in `X-Forwarded-For`: bare, or with a port as some proxies
/// write it (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn plain_addr(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// The comma-separated items of every `name` header, trimmed, in order; a
/// header that is not text counts as one item that parses as nothing.
fn comma_list(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        match value.to_str() {
            Ok(text) => out.extend(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            Err(_) => out.push(String::new()),
        }
    }
    out
}

/// `s` split at `sep` outside double quotes (a backslash escapes the next
/// character inside them).
fn split_quoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A `token` as it is, a `quoted-string` without its quotes and escapes;
/// `None` for anything else.
fn unquote(value: &str) -> Option<String> {
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return None,
                c => out.push(c),
            }
        }
        Some(out)
    } else if !value.is_empty() && value.bytes().all(is_tchar) {
        Some(value.to_string())
    } else {
        None
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests;
