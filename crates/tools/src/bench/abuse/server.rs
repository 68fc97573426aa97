//! The server under attack: `lumen serve` as a child process with its
//! default limits, and what the bench reads of it from outside — its
//! resident memory, CPU and open file descriptors from `/proc`, its
//! sessions from `/api/streams` and `/metrics`.
//!
//! The viewers and the STUN flood reach the worker's own socket (no
//! announced port), and the bench reads `/proc/PID`.

use std::time::Instant;

use serde::Serialize;

use crate::load::ProcSample;

/// The server under attack (one worker, its default limits).
pub(super) use crate::bench::serve::ChildServer as Server;

/// One reading of the server's process.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    pub at: Instant,
    pub proc: ProcSample,
    pub fds: usize,
}

impl Sample {
    pub(super) fn read(pid: u32) -> Option<Sample> {
        Some(Sample {
            at: Instant::now(),
            proc: ProcSample::read(pid)?,
            fds: open_fds(pid)?,
        })
    }
}

/// Entries of `/proc/PID/fd`.
pub(super) fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// What the server holds, as it says over HTTP, and its descriptors.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Holdings {
    /// `/api/streams`: the live streams and their viewers.
    pub streams: Vec<(String, u64)>,
    /// `lumen_http_sessions`: sessions in the HTTP table, half-open ones too.
    pub http_sessions: Option<u64>,
    /// `lumen_sessions{kind="whip"}`: live publishers.
    pub whip_sessions: Option<u64>,
    /// `lumen_sessions{kind="whep"}`: connected viewers.
    pub whep_sessions: Option<u64>,
    /// `lumen_sessions_created_total - lumen_sessions_closed_total`: peer
    /// connections the SFU holds.
    pub sfu_peers: Option<u64>,
    /// `lumen_event_stream_readers`.
    pub event_readers: Option<u64>,
    /// Open file descriptors.
    pub fds: Option<usize>,
    /// Resident memory, MiB.
    pub rss_mib: Option<f64>,
}

impl Holdings {
    /// Reads it all; what cannot be read stays `None` (and fails the check).
    pub(super) async fn read(http: &reqwest::Client, base: &str, pid: u32) -> Holdings {
        let text = |path: &'static str| {
            let http = http.clone();
            let url = format!("{base}{path}");
            async move { http.get(url).send().await.ok()?.text().await.ok() }
        };
        let streams = text("/api/streams")
            .await
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v.as_array().map(|a| {
                    a.iter()
                        .map(|s| {
                            (
                                s["name"].as_str().unwrap_or_default().to_owned(),
                                s["viewers"].as_u64().unwrap_or_default(),
                            )
                        })
                        .collect()
                })
            })
            .unwrap_or_default();
        let metrics = text("/metrics").await.unwrap_or_default();
        let m = |name: &str| metric(&metrics, name).map(|v| v as u64);
        Holdings {
            streams,
            http_sessions: m("lumen_http_sessions"),
            whip_sessions: m("lumen_sessions{kind=\"whip\"}"),
            whep_sessions: m("lumen_sessions{kind=\"whep\"}"),
            sfu_peers: m("lumen_sessions_created_total")
                .zip(m("lumen_sessions_closed_total"))
                .map(|(c, d)| c.saturating_sub(d)),
            event_readers: m("lumen_event_stream_readers"),
            fds: open_fds(pid),
            rss_mib: ProcSample::read(pid).map(|p| p.rss_kib as f64 / 1024.0),
        }
    }
}

/// The value of one series (name with its labels, exactly as written) in
/// a Prometheus text exposition.
pub(super) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// One line of the state check.
#[derive(Clone, Debug, Serialize)]
pub struct CheckItem {
    /// What is compared.
    pub what: String,
    /// Before the attack window.
    pub before: String,
    /// After it, once the check passed or gave up.
    pub after: String,
    /// Whether `after` is what it should be.
    pub ok: bool,
}

/// Compares what the server holds after the attacks with what it held
/// before them (the legitimate stream and viewers): the same streams and
/// sessions, no event-stream reader, and at most a few more descriptors
/// (`fd_slack`).
pub(super) fn compare(before: &Holdings, after: &Holdings, fd_slack: usize) -> Vec<CheckItem> {
    let show = |v: &Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
    let streams = |h: &Holdings| {
        if h.streams.is_empty() {
            return "none".to_owned();
        }
        h.streams
            .iter()
            .map(|(n, v)| format!("{n} ({v} viewers)"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let same = |what: &str, b: &Option<u64>, a: &Option<u64>| CheckItem {
        what: what.to_owned(),
        before: show(b),
        after: show(a),
        ok: b.is_some() && a == b,
    };
    vec![
        CheckItem {
            what: "/api/streams".to_owned(),
            before: streams(before),
            after: streams(after),
            ok: after.streams == before.streams,
        },
        same(
            "lumen_http_sessions",
            &before.http_sessions,
            &after.http_sessions,
        ),
        same(
            "lumen_sessions{whip}",
            &before.whip_sessions,
            &after.whip_sessions,
        ),
        same(
            "lumen_sessions{whep}",
            &before.whep_sessions,
            &after.whep_sessions,
        ),
        same(
            "SFU peers (created - closed)",
            &before.sfu_peers,
            &after.sfu_peers,
        ),
        CheckItem {
            what: "lumen_event_stream_readers".to_owned(),
            before: show(&before.event_readers),
            after: show(&after.event_readers),
            ok: after.event_readers == Some(0),
        },
        CheckItem {
            what: format!("open fds (≤ before + {fd_slack})"),
            before: before.fds.map_or("?".to_owned(), |f| f.to_string()),
            after: after.fds.map_or("?".to_owned(), |f| f.to_string()),
            ok: matches!((before.fds, after.fds), (Some(b), Some(a)) if a <= b + fd_slack),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series_from_the_exposition() {
        let text = "# HELP lumen_sessions x\n# TYPE lumen_sessions gauge\n\
                    lumen_sessions{kind=\"whip\"} 1\nlumen_sessions{kind=\"whep\"} 50\n\
                    lumen_http_sessions 51\nlumen_http_sessions_other 3\n";
        assert_eq!(metric(text, "lumen_http_sessions"), Some(51.0));
        assert_eq!(metric(text, "lumen_sessions{kind=\"whep\"}"), Some(50.0));
        assert_eq!(metric(text, "lumen_sessions"), None);
        assert_eq!(metric(text, "nope"), None);
    }

    #[test]
    fn the_check_wants_the_state_of_before() {
        let before = Holdings {
            streams: vec![("abuse".into(), 50)],
            http_sessions: Some(51),
            whip_sessions: Some(1),
            whep_sessions: Some(50),
            sfu_peers: Some(51),
            event_readers: Some(0),
            fds: Some(70),
            rss_mib: Some(30.0),
        };
        assert!(compare(&before, &before, 16).iter().all(|c| c.ok));
        let mut after = before.clone();
        after.http_sessions = Some(151);
        after.fds = Some(87);
        let bad: Vec<String> = compare(&before, &after, 16)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.what)
            .collect();
        assert_eq!(bad, ["lumen_http_sessions", "open fds (≤ before + 16)"]);
        // Nothing read is no pass.
        assert!(
            compare(&Holdings::default(), &Holdings::default(), 16)
                .iter()
                .all(|c| !c.ok || c.what == "/api/streams")
        );
    }
}
