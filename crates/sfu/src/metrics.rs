//! Counters of one worker. Plain integers: the shell copies them out for
//! Prometheus, no locks or atomics on the media path.

/// Counters since the worker started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Datagrams handed to the worker.
    pub datagrams_in: u64,
    /// Bytes handed to the worker.
    pub bytes_in: u64,
    /// Datagrams that were neither STUN, DTLS, RTP nor RTCP.
    pub dropped_malformed: u64,
    /// Datagrams from an address no peer has, that were not a STUN check for one.
    pub dropped_unknown_source: u64,
    /// Datagrams a peer's connection refused: a connectivity check from a
    /// new address that fails the session's credentials, a datagram str0m
    /// returns an error for, DTLS that is not whole records, and RTP
    /// shorter than its header or of an SSRC the session does not have. (SRTP of one of the session's own
    /// SSRCs that fails authentication is discarded inside str0m without a
    /// word, as a duplicate is: no counter sees it.)
    pub dropped_rejected: u64,
    /// Connectivity checks (with the session's ufrag) from a new address of
    /// a session that already has [`SfuConfig::max_addrs_per_session`]
    /// addresses: dropped before str0m sees them.
    ///
    /// [`SfuConfig::max_addrs_per_session`]: crate::SfuConfig::max_addrs_per_session
    pub dropped_address_limit: u64,
    /// Trickled candidates refused because their session had
    /// [`SfuConfig::max_remote_candidates`] already.
    ///
    /// [`SfuConfig::max_remote_candidates`]: crate::SfuConfig::max_remote_candidates
    pub candidates_refused: u64,
    /// Offers refused before parsing for their size: more m-lines than
    /// [`SfuConfig::max_m_lines`] or more candidates than
    /// [`SfuConfig::max_remote_candidates`].
    ///
    /// [`SfuConfig::max_m_lines`]: crate::SfuConfig::max_m_lines
    /// [`SfuConfig::max_remote_candidates`]: crate::SfuConfig::max_remote_candidates
    pub offers_too_large: u64,
    /// Peers closed because ICE and DTLS did not complete within
    /// [`SfuConfig::connect_timeout`].
    ///
    /// [`SfuConfig::connect_timeout`]: crate::SfuConfig::connect_timeout
    pub connect_timeouts: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written towards viewers.
    pub rtp_forwarded: u64,
    /// RTP packets handed to mirrors on other workers for their viewers
    /// (one per packet and mirror).
    pub rtp_mirrored: u64,
    /// RTP packets handed to sinks outside the SFU ([`SinkId::External`]:
    /// the recorder, ...), one per packet and sink.
    ///
    /// [`SinkId::External`]: crate::SinkId::External
    pub rtp_to_sinks: u64,
    /// RTP packets of layers made by a sink (a transcoder's rungs,
    /// [`SinkBody::Inject`](crate::SinkBody::Inject)) taken into a Router.
    pub sink_packets_injected: u64,
    /// Packets a sink injected that did not fit the stream (no such track,
    /// a payload type it did not negotiate, a rid the publisher sends, no
    /// room for another layer, too big), dropped.
    pub sink_packets_refused: u64,
    /// Per copy of a packet forwarded to a viewer: from the packet's arrival
    /// (at the stream's origin worker) to the moment the shell reported the
    /// copy handed to the socket ([`Sfu::sent`](crate::Sfu::sent)),
    /// microseconds.
    pub forwarding_delay_us: Histogram,
    /// Datagrams handed out for sending.
    pub datagrams_out: u64,
    /// Bytes handed out for sending.
    pub bytes_out: u64,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests received from viewers.
    pub keyframe_requests_received: u64,
    /// NACK messages received from viewers (packets they asked for again).
    pub nacks_received: u64,
    /// NACK messages sent to publishers.
    pub nacks_sent: u64,
    /// Viewers started on a cached keyframe instead of waiting for a new one.
    pub starts_from_cache: u64,
    /// Viewers switched from one simulcast layer to another.
    pub layer_switches: u64,
    /// Peers ever created.
    pub peers_created: u64,
    /// Peers closed.
    pub peers_closed: u64,
    /// Viewer's time to first frame at the server, ms: from the WHEP offer
    /// to the first video packet written to it (a keyframe).
    pub ttff_ms: Histogram,
    /// Viewers' bandwidth estimates as str0m reports them, bit/s.
    pub bwe_bps: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            datagrams_in: 0,
            bytes_in: 0,
            dropped_malformed: 0,
            dropped_unknown_source: 0,
            dropped_rejected: 0,
            dropped_address_limit: 0,
            candidates_refused: 0,
            offers_too_large: 0,
            connect_timeouts: 0,
            rtp_in: 0,
            rtp_forwarded: 0,
            rtp_mirrored: 0,
            rtp_to_sinks: 0,
            sink_packets_injected: 0,
            sink_packets_refused: 0,
            datagrams_out: 0,
            bytes_out: 0,
            keyframe_requests_sent: 0,
            keyframe_requests_received: 0,
            nacks_received: 0,
            nacks_sent: 0,
            starts_from_cache: 0,
            layer_switches: 0,
            peers_created: 0,
            peers_closed: 0,
            ttff_ms: Histogram::new(&TTFF_MS_BOUNDS),
            bwe_bps: Histogram::new(&BWE_BPS_BOUNDS),
            forwarding_delay_us: Histogram::new(&FORWARDING_DELAY_US_BOUNDS),
        }
    }
}

/// Upper bounds of the forwarding-delay buckets, µs.
pub const FORWARDING_DELAY_US_BOUNDS: [u64; 12] = [
    100, 250, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000,
];
/// Upper bounds of the time-to-first-frame buckets, ms.
pub const TTFF_MS_BOUNDS: [u64; 10] = [5, 10, 25, 50, 100, 150, 250, 500, 1000, 2500];
/// Upper bounds of the bandwidth-estimate buckets, bit/s.
pub const BWE_BPS_BOUNDS: [u64; 10] = [
    100_000, 250_000, 500_000, 750_000, 1_000_000, 1_500_000, 2_500_000, 5_000_000, 10_000_000,
    25_000_000,
];

/// A Prometheus-style histogram: counts per upper bound (the last bucket is
/// everything above), their sum and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Upper bounds, increasing.
    pub bounds: &'static [u64],
    /// One count per bound, then one for above the last (not cumulative).
    pub counts: Vec<u64>,
    /// Sum of the observed values.
    pub sum: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds.
    pub fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0,
            count: 0,
        }
    }

    /// Counts one value.
    pub fn observe(&mut self, v: u64) {
        self.observe_n(v, 1);
    }

    /// Counts the same value `n` times.
    pub fn observe_n(&mut self, v: u64, n: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i] += n;
        self.sum = self.sum.saturating_add(v.saturating_mul(n));
        self.count += n;
    }

    /// Adds another histogram with the same bounds (another worker's).
    pub fn merge(&mut self, other: &Histogram) {
        if self.bounds != other.bounds {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.count += other.count;
    }

    /// Cumulative counts per bound, `le` style, the last for `+Inf`.
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0, |acc, c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let mut h = Histogram::new(&TTFF_MS_BOUNDS);
        for v in [0, 5, 6, 2500, 2501] {
            h.observe(v);
        }
        let c = h.cumulative();
        assert_eq!(c[0], 2, "0 and 5 are <= 5");
        assert_eq!(c[1], 3, "6 is <= 10");
        assert_eq!(c[TTFF_MS_BOUNDS.len() - 1], 4, "2500 is <= 2500");
        assert_eq!(c[TTFF_MS_BOUNDS.len()], 5, "+Inf holds all");
        assert_eq!((h.sum, h.count), (5012, 5));
        let mut g = Histogram::new(&TTFF_MS_BOUNDS);
        g.merge(&h);
        g.merge(&h);
        assert_eq!(g.count, 10);
        assert_eq!(g.cumulative()[0], 4);
    }
}
