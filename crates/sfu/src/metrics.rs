//! Counters of one worker. Plain integers: the shell copies them out for
//! Prometheus, no locks or atomics on the media path.

/// Counters since the worker started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Datagrams handed to the worker.
    pub datagrams_in: u64,
    /// Bytes handed to the worker.
    pub bytes_in: u64,
    /// Datagrams that were neither STUN, DTLS, RTP nor RTCP.
    pub dropped_malformed: u64,
    /// Datagrams from an address no peer has, that were not a STUN check for one.
    pub dropped_unknown_source: u64,
    /// Datagrams a peer's connection rejected (bad SRTP, bad DTLS, ...).
    pub dropped_rejected: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written towards viewers.
    pub rtp_forwarded: u64,
    /// Datagrams handed out for sending.
    pub datagrams_out: u64,
    /// Bytes handed out for sending.
    pub bytes_out: u64,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests received from viewers.
    pub keyframe_requests_received: u64,
    /// Viewers started on a cached keyframe instead of waiting for a new one.
    pub starts_from_cache: u64,
    /// Viewers switched from one simulcast layer to another.
    pub layer_switches: u64,
    /// Peers ever created.
    pub peers_created: u64,
    /// Peers closed.
    pub peers_closed: u64,
}
