//! The recorder's runtime against real parts: a lumen node with two
//! workers on loopback UDP, a str0m publisher sending live-encoded H.264
//! and Opus, SQLite through lumen-auth, a local-directory store; results
//! checked with ffprobe and decoded with ffmpeg.

// Shared with the ffprobe tests; this binary uses part of it.
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
mod publisher;

mod bench;
mod crash;
mod on_demand;
mod record;
mod retention;
mod sealed;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lumen_auth::recordings::{Recording, RecordingState};
use lumen_auth::{Auth, AuthConfig};
use lumen_node::{Node, NodeConfig};
use lumen_recorder::{Recorder, RecorderConfig, paths};

/// A bound on every wait, only there so a broken build fails instead of
/// hanging. No assertion is about how long anything took.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub fn node_config() -> NodeConfig {
    NodeConfig {
        rtc_addr: "127.0.0.1:0".parse().expect("addr"),
        workers: 2,
        ..NodeConfig::new()
    }
}

/// A node, the database and a recorder over `dir`.
pub struct Env {
    pub node: Node,
    pub auth: Auth,
    pub recorder: Recorder,
}

impl Env {
    pub async fn start(dir: &Path, config: RecorderConfig) -> Env {
        let node = Node::start(&node_config()).expect("node starts");
        let auth = Auth::open(AuthConfig::new(dir)).await.expect("database");
        let recorder = Recorder::start(config, dir, auth.clone(), node.handle())
            .await
            .expect("recorder starts");
        Env {
            node,
            auth,
            recorder,
        }
    }

    pub async fn stop(self) {
        self.recorder.shutdown().await;
        self.node.shutdown().await;
    }

    pub async fn recording(&self, id: &str) -> Recording {
        self.auth
            .recordings()
            .get(id)
            .await
            .expect("database")
            .expect("the recording exists")
    }

    /// The id of the recording of `stream` (its row is made by the
    /// stream's task, so it may take a moment).
    pub async fn recording_id(&self, stream: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(id) = self.recorder.recording_of(stream) {
                return id;
            }
            assert!(Instant::now() < deadline, "never: {stream} recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until recording `id` is ready (panics if it failed).
    pub async fn ready(&self, id: &str) -> Recording {
        until("the recording is finalised", || async {
            let r = self.recording(id).await;
            assert_ne!(r.state, RecordingState::Failed, "{r:?}");
            r.state == RecordingState::Ready
        })
        .await;
        self.recording(id).await
    }

    /// Copies the recording's MP4 (plaintext) to a file in `dir`.
    pub async fn mp4_file(&self, dir: &Path, id: &str) -> PathBuf {
        let bytes = self
            .recorder
            .objects()
            .get(&paths::mp4(id))
            .await
            .expect("the MP4 is stored");
        let path = dir.join(format!("{id}.mp4"));
        std::fs::write(&path, &bytes).expect("write");
        path
    }
}

/// Waits until `f` holds (checked every 50 ms), within [`PATIENCE`].
pub async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !f().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A recorder configuration with its store in the data dir.
pub fn config() -> RecorderConfig {
    RecorderConfig::default()
}

/// The top-level boxes of an MP4 file.
pub fn top_boxes(data: &[u8]) -> Vec<String> {
    let mut at = 0;
    let mut kinds = Vec::new();
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().expect("4")) as usize;
        kinds.push(String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned());
        let size = if size == 1 {
            u64::from_be_bytes(data[at + 8..at + 16].try_into().expect("8")) as usize
        } else {
            size
        };
        at += size.max(8);
    }
    kinds
}

/// Video packets' presentation times, in file order.
pub fn video_pts(path: &Path) -> Vec<f64> {
    let report = common::probe_with(
        path,
        &["-select_streams", "v", "-show_entries", "packet=pts_time"],
    );
    report["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| common::num(&p["pts_time"]))
        .collect()
}
