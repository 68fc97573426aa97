//! Which peer a datagram is for, and what becomes of one that is for
//! nobody or is garbage: every drop is counted under its reason
//! (`Metrics::dropped_*`), and none costs more than O(1) work outside the
//! peer's own connection.

use std::time::Instant;

use str0m::ice::StunMessage;
use str0m::net::{Protocol, Receive};

use super::Sfu;
use crate::{CloseReason, PeerId};

impl Sfu {
    /// A datagram from the network: to its peer's connection (a new source
    /// address only with a valid connectivity check, and only while the
    /// session has room for one more), or counted and dropped.
    pub(super) fn receive(
        &mut self,
        now: Instant,
        source: std::net::SocketAddr,
        destination: std::net::SocketAddr,
        data: &[u8],
    ) {
        let Ok(recv) = Receive::new(Protocol::Udp, source, destination, data) else {
            self.metrics.dropped_malformed += 1;
            return;
        };
        let input = str0m::Input::Receive(now, recv);
        let id = match self.by_addr.get(&source) {
            Some(id) => *id,
            None => {
                // An unknown address may only introduce itself with a STUN
                // check naming one of our ufrags (and passing its integrity).
                let Some(id) = StunMessage::parse(data)
                    .ok()
                    .and_then(|m| m.split_username().map(|(local, _)| local.to_string()))
                    .and_then(|local| self.by_ufrag.get(&local).copied())
                else {
                    self.metrics.dropped_unknown_source += 1;
                    return;
                };
                let Some(p) = self.peers.get_mut(&id) else {
                    self.metrics.dropped_unknown_source += 1;
                    return;
                };
                // Each address a session takes costs str0m a remote
                // candidate that every later check scans: bounded, and
                // refused before str0m is asked anything (no integrity
                // check either), so a flood from new ports costs O(1) a
                // datagram.
                if p.addrs.len() >= self.config.max_addrs_per_session {
                    self.metrics.dropped_address_limit += 1;
                    return;
                }
                if !p.rtc.accepts(&input) {
                    self.metrics.dropped_rejected += 1;
                    return;
                }
                p.addrs.push(source);
                self.by_addr.insert(source, id);
                id
            }
        };
        let Some(p) = self.peers.get_mut(&id) else {
            self.metrics.dropped_unknown_source += 1;
            return;
        };
        let rejected = match p.rtc.handle_input(input) {
            Ok(()) => false,
            Err(e) => {
                // A datagram the connection cannot use (bad SRTP, stray
                // DTLS) is dropped; only a dead connection closes the
                // session.
                tracing::debug!(peer = %id, error = %e, "datagram rejected");
                self.metrics.dropped_rejected += 1;
                if !p.rtc.is_alive() {
                    self.to_close.push((id, CloseReason::Failed));
                }
                true
            }
        };
        p.poll_due = true;
        // str0m's RTP mode holds one received packet until the next
        // poll_output: drain now, before another datagram overwrites it.
        let packets = self.pending_rtp.len();
        self.drain_peer(id);
        if !rejected && self.pending_rtp.len() == packets {
            // Nothing to forward came of it (off the media path: RTCP,
            // STUN, DTLS, or a packet str0m dropped): was it garbage str0m
            // discarded without a word?
            self.count_silent_drop(id, data);
        }
    }

    /// Counts a datagram that str0m took without an error and without
    /// using it, when it is recognisably garbage: DTLS that is not whole
    /// records, or RTP of an SSRC the session does not have (str0m drops
    /// both silently). Called only for datagrams that produced no packet,
    /// so the media path never pays for it.
    fn count_silent_drop(&mut self, id: PeerId, data: &[u8]) {
        let garbage = match data.first() {
            Some(20..=63) => !whole_dtls_records(data),
            Some(128..=191) if !is_rtcp(data) => match data.get(8..12) {
                // Shorter than an RTP header.
                None => true,
                Some(b) => {
                    let ssrc = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    let Some(p) = self.peers.get_mut(&id) else {
                        return;
                    };
                    let tracks = self
                        .routers
                        .get(&p.router)
                        .filter(|r| r.publisher == Some(id))
                        .map_or(&[][..], |r| &r.tracks[..]);
                    // SSRC 0 is a bandwidth probe, which str0m takes.
                    ssrc != 0 && !p.knows_ssrc(ssrc.into(), tracks)
                }
            },
            _ => false,
        };
        if garbage {
            self.metrics.dropped_rejected += 1;
        }
    }
}

/// Whether an RTP-range datagram is RTCP (RFC 5761: payload types 64-95
/// with the marker bit, i.e. RTCP packet types 192-223), as str0m
/// demultiplexes them.
fn is_rtcp(data: &[u8]) -> bool {
    data.get(1).is_some_and(|b| (64..96).contains(&(b & 0x7f)))
}

/// Whether a DTLS datagram is a run of whole records, as RFC 9147 frames
/// them: each a 13-byte header (content type, version, epoch, sequence
/// number, length) and that many bytes. A record of a later kind (DTLS 1.3's
/// unified header, 32-63, or a connection id, 25) ends the check: it is
/// framed otherwise, and taken as it is.
fn whole_dtls_records(mut data: &[u8]) -> bool {
    const HEADER: usize = 13;
    while let Some(&kind) = data.first() {
        if !(20..=24).contains(&kind) {
            return true;
        }
        let Some(len) = data.get(11..13) else {
            return false;
        };
        let end = HEADER + usize::from(u16::from_be_bytes([len[0], len[1]]));
        let Some(rest) = data.get(end..) else {
            return false;
        };
        data = rest;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtls_framing_is_whole_records_or_not() {
        let record = |kind: u8, body: usize| {
            let mut r = vec![kind, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
            r.extend_from_slice(&(body as u16).to_be_bytes());
            r.extend(std::iter::repeat_n(7, body));
            r
        };
        assert!(whole_dtls_records(&record(22, 100)));
        assert!(whole_dtls_records(
            &[record(22, 3), record(20, 1), record(22, 40)].concat()
        ));
        // A DTLS 1.3 record after a whole one: taken as it is.
        assert!(whole_dtls_records(
            &[record(22, 3), vec![0x2f, 1, 2]].concat()
        ));
        assert!(!whole_dtls_records(&[22, 0xfe, 0xfd, 0, 0]));
        let mut short = record(23, 50);
        short.pop();
        assert!(!whole_dtls_records(&short));
        assert!(!whole_dtls_records(
            &[record(22, 3), vec![21, 0xfe]].concat()
        ));
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_its_packet_type() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 205, 0, 2]));
        assert!(!is_rtcp(&[0x80, 0x60, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0xe0, 0, 1]));
        assert!(!is_rtcp(&[0x80]));
    }
}
