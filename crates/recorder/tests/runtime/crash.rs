//! A crash mid-recording (the whole runtime dropped: no stream task, no
//! uploader, no finalisation runs again, as with SIGKILL) and a restart on
//! the same data dir and database: the recording is finalised from its
//! journal and the spool, and ends at most about one fragment before the
//! crash.

use std::time::Duration;

use lumen_auth::recordings::RecordingState;

use crate::common::{decode_errors, ffmpeg_available, opus_packets, workdir};
use crate::publisher::{FPS, Publisher};
use crate::{Env, config, top_boxes, until};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_recording_cut_by_a_crash_is_finalised_on_restart() {
    if !ffmpeg_available("a_recording_cut_by_a_crash_is_finalised_on_restart") {
        return;
    }
    let dir = workdir("crash");
    let opus = opus_packets(dir.path(), 4);

    // Before the crash.
    let rt = runtime();
    let (id, sent) = rt.block_on(async {
        let env = Env::start(dir.path(), config()).await;
        let h = env.node.handle();
        let publisher = Publisher::start(&h, "cam", opus).await;
        env.recorder.publisher_live("cam", "brd_crash");
        let id = env.recording_id("cam").await;
        until("a few seconds are recorded", || {
            let (n, f) = (publisher.sent(), env.recorder.fragments_written());
            async move { n >= 5 * FPS && f >= 2 }
        })
        .await;
        // What the publisher's pacer holds reaches the node, and the
        // recorder catches up; the open fragment stays open.
        let sent = publisher.pause(Duration::from_secs(1)).await;
        // Leak everything: nothing may run a destructor that finishes the
        // recording cleanly.
        std::mem::forget(publisher);
        std::mem::forget(env);
        (id, sent)
    });
    drop(rt);

    // After the restart.
    let rt = runtime();
    rt.block_on(async {
        let env = Env::start(dir.path(), config()).await;
        let rec = env.ready(&id).await;
        assert_eq!(rec.state, RecordingState::Ready);
        let at_crash = (sent * 1000 / FPS) as i64;
        // The open fragment (≤ 2 s) is lost, plus what was in flight.
        assert!(
            rec.duration_ms <= at_crash + 500 && rec.duration_ms >= at_crash - 2_500,
            "recorded {} ms of the {at_crash} ms sent before the crash",
            rec.duration_ms
        );
        let mp4 = env.mp4_file(dir.path(), &id).await;
        let data = std::fs::read(&mp4).expect("read");
        assert_eq!(top_boxes(&data), ["ftyp", "moov", "mdat"]);
        let errors = decode_errors(&mp4, &[]);
        assert!(errors.is_empty(), "ffmpeg: {errors}");
        env.stop().await;
    });
}
