//! Retention: with `retention_days` set, a finished recording older than
//! that is deleted (its row, its journal and every object), and a younger
//! one is kept.

use std::time::{SystemTime, UNIX_EPOCH};

use lumen_recorder::{Policy, paths};

use crate::common::workdir;
use crate::publisher::{FPS, Publisher, fake_opus};
use crate::{Env, config, until};

/// Records `stream` on demand for two fragments; answers the ready id.
async fn record_one(env: &Env, stream: &str) -> String {
    let h = env.node.handle();
    let r = &env.recorder;
    let publisher = Publisher::start(&h, stream, fake_opus()).await;
    r.publisher_live(stream, &format!("brd_{stream}"));
    until("the publisher sends", || {
        let n = publisher.sent();
        async move { n >= FPS }
    })
    .await;
    let before = r.fragments_written();
    let id = r.start_recording(stream).await.expect("started");
    until("two fragments are written", || {
        let f = r.fragments_written();
        async move { f >= before + 2 }
    })
    .await;
    r.stop_recording(stream).await.expect("stopped");
    env.ready(&id).await;
    publisher.stop();
    r.publisher_gone(stream);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_older_than_the_retention_are_deleted_and_younger_ones_kept() {
    let dir = workdir("retention");
    let mut cfg = config();
    cfg.policy = Policy::OnDemand;
    let env = Env::start(dir.path(), cfg.clone()).await;
    let old = record_one(&env, "old").await;
    let young = record_one(&env, "young").await;
    // Three days ago: past a two-day retention.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    assert!(
        env.auth
            .recordings()
            .backdate(&old, now_ms - 3 * 86_400_000)
            .await
            .expect("database")
    );
    let listed = |id: &str| {
        let objects = env.recorder.objects().clone();
        let prefix = paths::prefix(id);
        async move { objects.list(&prefix).await.expect("list").len() }
    };
    assert!(listed(&old).await > 2, "the old recording has its objects");
    env.stop().await;

    // The sweep runs when the recorder starts, then hourly.
    cfg.retention_days = 2;
    let env = Env::start(dir.path(), cfg).await;
    let recordings = env.auth.recordings();
    until("the old recording is deleted", || async {
        recordings.get(&old).await.expect("database").is_none()
    })
    .await;
    let objects = env.recorder.objects().clone();
    until("its objects are deleted", || {
        let objects = objects.clone();
        let prefix = paths::prefix(&old);
        async move { objects.list(&prefix).await.expect("list").is_empty() }
    })
    .await;
    assert!(
        recordings
            .fragments(&old)
            .await
            .expect("database")
            .is_empty()
    );
    // The young one is untouched, and still plays.
    let kept = env.recording(&young).await;
    assert_eq!(kept.id, young);
    let mp4 = env.mp4_file(dir.path(), &young).await;
    assert!(std::fs::metadata(&mp4).expect("mp4").len() > 1000);
    env.stop().await;
}
