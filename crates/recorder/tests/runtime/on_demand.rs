//! The policies: on demand (start and stop through the API while live),
//! off (start refused), and the errors of the API.

use lumen_auth::recordings::RecordingState;
use lumen_recorder::{Policy, RecorderError};

use crate::common::workdir;
use crate::publisher::{FPS, Publisher, fake_opus};
use crate::{Env, config, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_records_between_start_and_stop() {
    let dir = workdir("on-demand");
    let mut cfg = config();
    cfg.policy = Policy::OnDemand;
    let env = Env::start(dir.path(), cfg).await;
    let h = env.node.handle();
    let r = &env.recorder;
    assert!(matches!(
        r.start_recording("cam").await,
        Err(RecorderError::NotLive(_))
    ));
    let publisher = Publisher::start(&h, "cam", fake_opus()).await;
    r.publisher_live("cam", "brd_od");
    until("the publisher sends", || {
        let n = publisher.sent();
        async move { n >= FPS }
    })
    .await;
    assert_eq!(r.recording_of("cam"), None);
    assert!(matches!(
        r.stop_recording("cam").await,
        Err(RecorderError::NotRecording(_))
    ));

    let id = r.start_recording("cam").await.expect("started");
    assert_eq!(r.recording_of("cam").as_deref(), Some(id.as_str()));
    assert!(matches!(
        r.start_recording("cam").await,
        Err(RecorderError::AlreadyRecording { .. })
    ));
    assert_eq!(r.active_recordings(), 1);
    until("two fragments are written", || {
        let f = r.fragments_written();
        async move { f >= 2 }
    })
    .await;
    assert!(matches!(
        r.delete(&id).await,
        Err(RecorderError::InProgress(_))
    ));
    assert_eq!(r.stop_recording("cam").await.expect("stopped"), id);
    assert_eq!(r.recording_of("cam"), None);
    let rec = env.ready(&id).await;
    assert!(rec.duration_ms > 0);
    assert_eq!(rec.broadcast.as_deref(), Some("brd_od"));

    // Still live, not recording: the thumbnail keeps coming.
    assert!(r.live_thumbnail("cam").is_some());
    publisher.stop();
    r.publisher_gone("cam");
    until("the stream is forgotten", || {
        let gone = r.live_thumbnail("cam").is_none();
        async move { gone }
    })
    .await;
    let all = env
        .auth
        .recordings()
        .list(Some("cam"), None, 10)
        .await
        .expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, RecordingState::Ready);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_off_records_nothing() {
    let dir = workdir("off");
    let mut cfg = config();
    cfg.policy = Policy::Off;
    let env = Env::start(dir.path(), cfg).await;
    let h = env.node.handle();
    let publisher = Publisher::start(&h, "cam", fake_opus()).await;
    env.recorder.publisher_live("cam", "brd_off");
    until("a live thumbnail", || {
        let t = env.recorder.live_thumbnail("cam").is_some();
        async move { t }
    })
    .await;
    assert!(matches!(
        env.recorder.start_recording("cam").await,
        Err(RecorderError::PolicyOff)
    ));
    assert_eq!(env.recorder.recording_of("cam"), None);
    drop(publisher);
    let all = env
        .auth
        .recordings()
        .list(None, None, 10)
        .await
        .expect("list");
    assert!(all.is_empty());
    env.stop().await;
}
