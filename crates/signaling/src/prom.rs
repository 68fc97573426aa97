//! `/metrics` in the Prometheus text format, summed over the workers.

use std::fmt::Write;

use std::sync::atomic::Ordering;

use lumen_node::{WorkerSnapshot, merge_streams};

use crate::state::AppState;

pub(crate) fn render(snaps: &[WorkerSnapshot]) -> String {
    let mut out = String::new();
    let sum = |f: fn(&lumen_sfu::Metrics) -> u64| snaps.iter().map(|s| f(&s.metrics)).sum::<u64>();
    let counters: &[(&str, &str, u64)] = &[
        (
            "lumen_datagrams_received_total",
            "UDP datagrams received by the SFU workers",
            sum(|m| m.datagrams_in),
        ),
        (
            "lumen_bytes_received_total",
            "UDP bytes received by the SFU workers",
            sum(|m| m.bytes_in),
        ),
        (
            "lumen_datagrams_sent_total",
            "UDP datagrams sent by the SFU workers",
            sum(|m| m.datagrams_out),
        ),
        (
            "lumen_bytes_sent_total",
            "UDP bytes sent by the SFU workers",
            sum(|m| m.bytes_out),
        ),
        (
            "lumen_rtp_packets_received_total",
            "RTP packets received from publishers",
            sum(|m| m.rtp_in),
        ),
        (
            "lumen_rtp_packets_forwarded_total",
            "RTP packets forwarded to viewers",
            sum(|m| m.rtp_forwarded),
        ),
        (
            "lumen_rtp_packets_mirrored_total",
            "RTP packets handed to another worker's mirror of their stream, for its viewers",
            sum(|m| m.rtp_mirrored),
        ),
        (
            "lumen_mirror_batches_dropped_total",
            "batches of packets for another worker's mirror dropped because its queue was full",
            snaps.iter().map(|s| s.mirror_dropped).sum(),
        ),
        (
            "lumen_rtp_packets_to_sinks_total",
            "RTP packets handed to sinks outside the node (the recorder)",
            sum(|m| m.rtp_to_sinks),
        ),
        (
            "lumen_sink_packets_injected_total",
            "RTP packets of layers made by a sink (the transcoder's rungs) taken into a stream",
            sum(|m| m.sink_packets_injected),
        ),
        (
            "lumen_sink_packets_refused_total",
            "RTP packets a sink injected that did not fit the stream, dropped",
            sum(|m| m.sink_packets_refused),
        ),
        (
            "lumen_sink_batches_dropped_total",
            "batches of packets for a sink outside the node dropped because its feed was full",
            snaps.iter().map(|s| s.sink_dropped).sum(),
        ),
        (
            "lumen_keyframe_requests_sent_total",
            "PLIs sent to publishers",
            sum(|m| m.keyframe_requests_sent),
        ),
        (
            "lumen_keyframe_requests_received_total",
            "keyframe requests received from viewers",
            sum(|m| m.keyframe_requests_received),
        ),
        (
            "lumen_nacks_received_total",
            "NACK messages received from viewers",
            sum(|m| m.nacks_received),
        ),
        (
            "lumen_nacks_sent_total",
            "NACK messages sent to publishers",
            sum(|m| m.nacks_sent),
        ),
        (
            "lumen_viewer_starts_from_cache_total",
            "viewers started on the cached keyframe of their layer",
            sum(|m| m.starts_from_cache),
        ),
        (
            "lumen_layer_switches_total",
            "switches of a viewer from one simulcast layer to another",
            sum(|m| m.layer_switches),
        ),
        (
            "lumen_sessions_created_total",
            "peer connections created",
            sum(|m| m.peers_created),
        ),
        (
            "lumen_sessions_closed_total",
            "peer connections closed",
            sum(|m| m.peers_closed),
        ),
        (
            "lumen_sessions_connect_timeouts_total",
            "peer connections closed because ICE and DTLS did not complete in time",
            sum(|m| m.connect_timeouts),
        ),
        (
            "lumen_candidates_refused_total",
            "trickled ICE candidates refused: their session had the most it may",
            sum(|m| m.candidates_refused),
        ),
        (
            "lumen_offers_too_large_total",
            "SDP offers refused before parsing: too many m-lines or candidates",
            sum(|m| m.offers_too_large),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    for (name, help, pick) in [
        (
            "lumen_time_to_first_frame_ms",
            "viewer offer to its first video packet sent, milliseconds",
            (|m: &lumen_sfu::Metrics| &m.ttff_ms)
                as fn(&lumen_sfu::Metrics) -> &lumen_sfu::Histogram,
        ),
        (
            "lumen_bandwidth_estimate_bps",
            "viewers' bandwidth estimates as they change, bits per second",
            |m: &lumen_sfu::Metrics| &m.bwe_bps,
        ),
        (
            "lumen_forwarding_delay_us",
            "per copy of a packet forwarded to a viewer: the packet's arrival \
             at its stream's worker to the copy handed to the socket, microseconds",
            |m: &lumen_sfu::Metrics| &m.forwarding_delay_us,
        ),
    ] {
        let mut h = pick(&lumen_sfu::Metrics::default()).clone();
        for s in snaps {
            h.merge(pick(&s.metrics));
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let cumulative = h.cumulative();
        for (bound, c) in h.bounds.iter().zip(&cumulative) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            h.count, h.sum, h.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP lumen_datagrams_dropped_total datagrams dropped, by reason\n\
         # TYPE lumen_datagrams_dropped_total counter"
    );
    for (reason, v) in [
        ("malformed", sum(|m| m.dropped_malformed)),
        ("unknown_source", sum(|m| m.dropped_unknown_source)),
        ("rejected", sum(|m| m.dropped_rejected)),
        ("address_limit", sum(|m| m.dropped_address_limit)),
    ] {
        let _ = writeln!(
            out,
            "lumen_datagrams_dropped_total{{reason=\"{reason}\"}} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP lumen_stream_viewers viewers attached to a stream\n# TYPE lumen_stream_viewers gauge"
    );
    let streams = merge_streams(snaps.iter().flat_map(|s| s.streams.iter().cloned()));
    for s in &streams {
        let _ = writeln!(
            out,
            "lumen_stream_viewers{{stream=\"{}\"}} {}",
            s.name, s.viewers
        );
    }
    let live = streams.iter().filter(|s| s.live).count();
    let viewers: usize = streams.iter().map(|s| s.viewers).sum();
    let _ = writeln!(
        out,
        "# HELP lumen_sessions active sessions by kind\n# TYPE lumen_sessions gauge\n\
         lumen_sessions{{kind=\"whip\"}} {live}\nlumen_sessions{{kind=\"whep\"}} {viewers}"
    );
    let _ = writeln!(
        out,
        "# HELP lumen_worker_busy_ratio share of wall time a worker spent working\n\
         # TYPE lumen_worker_busy_ratio gauge"
    );
    for (i, s) in snaps.iter().enumerate() {
        let _ = writeln!(
            out,
            "lumen_worker_busy_ratio{{worker=\"{i}\"}} {:.4}",
            s.busy_ratio
        );
    }
    out
}

/// The transcoder's figures: ladders running and refused, frames in and
/// out, the source frames that did not decode.
pub(crate) fn render_transcoder(out: &mut String, t: &lumen_transcoder::TranscoderStats) {
    let _ = writeln!(
        out,
        "# HELP lumen_transcoder_streams streams being transcoded
         # TYPE lumen_transcoder_streams gauge
lumen_transcoder_streams {}",
        t.active
    );
    for (name, help, v) in [
        (
            "lumen_transcoder_started_total",
            "ladders started",
            t.started,
        ),
        (
            "lumen_transcoder_refused_total",
            "streams not transcoded because transcode.max_streams were",
            t.refused_over_budget,
        ),
        (
            "lumen_transcoder_frames_in_total",
            "source frames read by the transcoder",
            t.frames_in,
        ),
        (
            "lumen_transcoder_frames_out_total",
            "rung frames made",
            t.frames_out,
        ),
        (
            "lumen_transcoder_keyframes_out_total",
            "rung frames made as IDR (where the source had one, or a viewer asked)",
            t.keyframes_out,
        ),
        (
            "lumen_transcoder_decode_errors_total",
            "source frames the transcoder could not read or decode (the source is forwarded as it is)",
            t.decode_errors,
        ),
        (
            "lumen_transcoder_batches_dropped_total",
            "batches of rung packets dropped because the origin worker's queue was full",
            t.batches_dropped,
        ),
        (
            "lumen_transcoder_faults_total",
            "ladders stopped by a fault of the codec library",
            t.faults,
        ),
        (
            "lumen_transcoder_av1_skipped_total",
            "pictures an AV1 rung skipped because its encoder was still busy with the one before",
            t.av1_skipped,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
}

/// The HTTP side's own figures: sessions and event-stream readers held,
/// and the requests and connections each limit refused.
pub(crate) fn render_http(out: &mut String, st: &AppState) {
    let _ = writeln!(
        out,
        "# HELP lumen_http_sessions WHIP and WHEP sessions the HTTP side holds\n\
         # TYPE lumen_http_sessions gauge\nlumen_http_sessions {}\n\
         # HELP lumen_event_stream_readers WHEP event streams being read\n\
         # TYPE lumen_event_stream_readers gauge\nlumen_event_stream_readers {}",
        st.sessions.len(),
        st.readers.len()
    );
    let _ = writeln!(
        out,
        "# HELP lumen_http_refused_total requests and connections refused, by limit\n\
         # TYPE lumen_http_refused_total counter"
    );
    let r = &st.refusals;
    for (limit, v) in [
        ("session_rate", &r.session_rate),
        ("sessions_per_client", &r.sessions_per_client),
        ("sessions_per_user", &r.sessions_per_user),
        ("credentials", &r.unauthorized),
        ("max_sessions", &r.max_sessions),
        ("event_readers", &r.event_readers),
        ("connections", &*r.connections),
    ] {
        let _ = writeln!(
            out,
            "lumen_http_refused_total{{limit=\"{limit}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
}
