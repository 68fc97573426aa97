//! The recorder's media path end to end against ffmpeg: real encoded H.264,
//! VP8 and Opus (made by ffmpeg), packetized as RTP with loss and
//! timestamps that wrap, through the depacketizers and the muxer, and the
//! results (progressive MP4, init + fragments, the HLS playlist) checked
//! with ffprobe and decoded with ffmpeg.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use common::*;
use lumen_recorder::depacketize::{Codec, Depacketizer};
use lumen_recorder::hls::{self, Segment};
use lumen_recorder::mux::{
    Fragment, FragmentIndex, Muxer, Sample, TrackConfig, parse_fragment_index, progressive,
};

const VIDEO_TS0: u32 = u32::MAX - 3000 * 20; // wraps after 20 frames
const AUDIO_TS0: u32 = u32::MAX - 960 * 10; // wraps after 10 packets

/// One RTP packet and when it is sent (ms from the start).
struct Event {
    at: f64,
    video: bool,
    rtp: Rtp,
}

fn video_events(frames: Vec<Vec<Vec<u8>>>, drop: &dyn Fn(usize, usize) -> bool) -> Vec<Event> {
    let mut events = Vec::new();
    let mut seq = 1000u64;
    for (i, packets) in frames.into_iter().enumerate() {
        let n = packets.len();
        for (k, payload) in packets.into_iter().enumerate() {
            seq += 1;
            if drop(i, k) {
                continue;
            }
            events.push(Event {
                at: i as f64 * 1000.0 / 30.0,
                video: true,
                rtp: Rtp {
                    seq,
                    ts: VIDEO_TS0.wrapping_add(i as u32 * 3000),
                    marker: k == n - 1,
                    payload,
                },
            });
        }
    }
    events
}

fn audio_events(packets: Vec<Vec<u8>>, drop: &dyn Fn(usize) -> bool) -> Vec<Event> {
    packets
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop(*i))
        .map(|(i, payload)| Event {
            at: i as f64 * 20.0,
            video: false,
            rtp: Rtp {
                seq: 5000 + i as u64,
                ts: AUDIO_TS0.wrapping_add(i as u32 * 960),
                marker: i == 0,
                payload,
            },
        })
        .collect()
}

/// What the lead's glue does: depacketize both streams, start the muxer
/// once the video's parameters are known, and feed it samples whose decode
/// times count from the recording's start (each stream's first frame is
/// placed by its arrival time, later ones by their RTP timestamps).
struct Recorder {
    video: Depacketizer,
    audio: Depacketizer,
    origin: [Option<u64>; 2],
    pending: Vec<(usize, Sample)>,
    muxer: Option<Muxer>,
    init: Vec<u8>,
    fragments: Vec<Fragment>,
    keyframe_requests: usize,
    samples: [usize; 2],
}

impl Recorder {
    fn new(video: Codec) -> Self {
        Recorder {
            video: Depacketizer::new(video),
            audio: Depacketizer::new(Codec::Opus),
            origin: [None; 2],
            pending: Vec::new(),
            muxer: None,
            init: Vec::new(),
            fragments: Vec::new(),
            keyframe_requests: 0,
            samples: [0; 2],
        }
    }

    fn run(video: Codec, mut events: Vec<Event>) -> Self {
        events.sort_by(|a, b| a.at.total_cmp(&b.at));
        let mut r = Recorder::new(video);
        for e in events {
            let d = if e.video { &mut r.video } else { &mut r.audio };
            let push = d.push(e.rtp.seq, e.rtp.ts, e.rtp.marker, &e.rtp.payload);
            r.keyframe_requests += usize::from(push.keyframe_needed);
            let track = usize::from(!e.video);
            for f in push.frames {
                r.sample(track, f, e.at);
            }
        }
        for track in 0..2 {
            let push = if track == 0 {
                r.video.flush()
            } else {
                r.audio.flush()
            };
            for f in push.frames {
                r.sample(track, f, 0.0);
            }
        }
        let muxer = r.muxer.as_mut().expect("the video never got a keyframe");
        r.fragments.extend(muxer.finish().expect("finish"));
        r
    }

    /// `at`: when the frame arrived (ms from the recording's start); the
    /// first frame of each stream places its timeline on the recording's.
    fn sample(&mut self, track: usize, frame: lumen_recorder::depacketize::Frame, at: f64) {
        let rate = if track == 0 { 90 } else { 48 };
        let origin = *self.origin[track]
            .get_or_insert_with(|| frame.rtp_ts - (at * rate as f64).round() as u64);
        let dts = frame.rtp_ts - origin;
        let sample = Sample {
            dts,
            cts_offset: 0,
            keyframe: frame.keyframe,
            data: frame.data,
            wall_clock: UNIX_EPOCH
                + Duration::from_secs(1_700_000_000)
                + Duration::from_millis(dts / rate),
        };
        self.samples[track] += 1;
        if self.muxer.is_none() {
            self.pending.push((track, sample));
            let Some(video) = self.video.track_config() else {
                return;
            };
            let muxer = Muxer::new(vec![video, TrackConfig::Opus { channels: 2 }]).expect("muxer");
            self.init = muxer.init_segment().expect("init");
            self.muxer = Some(muxer);
            for (track, sample) in std::mem::take(&mut self.pending) {
                self.push(track, sample);
            }
            return;
        }
        self.push(track, sample);
    }

    fn push(&mut self, track: usize, sample: Sample) {
        let muxer = self.muxer.as_mut().expect("muxer");
        self.fragments
            .extend(muxer.push(track, sample).expect("push"));
    }

    fn indexes(&self) -> Vec<FragmentIndex> {
        self.fragments.iter().map(|f| f.index.clone()).collect()
    }
}

/// Stores the recording as the recorder would: init segment, fragments,
/// playlist, their concatenation (fMP4), and the progressive file built
/// by copying ranges of the stored fragments.
struct Outputs {
    progressive: PathBuf,
    fmp4: PathBuf,
    playlist: PathBuf,
}

fn write_outputs(dir: &Path, r: &Recorder) -> Outputs {
    std::fs::write(file(dir, "init.mp4"), &r.init).expect("write init");
    let mut cat = r.init.clone();
    let mut names = Vec::new();
    for f in &r.fragments {
        let name = format!("seg-{}.m4s", f.index.seq);
        std::fs::write(file(dir, &name), &f.bytes).expect("write fragment");
        cat.extend_from_slice(&f.bytes);
        names.push(name);
    }
    let fmp4 = file(dir, "fragmented.mp4");
    std::fs::write(&fmp4, &cat).expect("write fmp4");

    let segments: Vec<Segment<'_>> = r
        .fragments
        .iter()
        .zip(&names)
        .map(|(f, uri)| Segment {
            uri,
            duration: f.index.duration_secs(),
            independent: f.index.keyframe_start,
        })
        .collect();
    let playlist = file(dir, "index.m3u8");
    std::fs::write(&playlist, hls::playlist(&segments, "init.mp4", true)).expect("playlist");

    let plan = progressive(&r.init, &r.indexes()).expect("progressive");
    let path = file(dir, "recording.mp4");
    let mut out = std::fs::File::create(&path).expect("create");
    out.write_all(&plan.header).expect("write");
    for copy in &plan.copies {
        // As from object storage: a ranged read of the stored fragment.
        let stored = std::fs::read(file(dir, &names[copy.fragment])).expect("read fragment");
        out.write_all(&stored[copy.offset as usize..(copy.offset + copy.len) as usize])
            .expect("write");
    }
    drop(out);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), plan.len);
    assert_eq!(plan.info.size, plan.len);

    // Crash recovery: the indexes rebuilt from the stored bytes are the
    // journalled ones, and give the same file.
    let parsed: Vec<FragmentIndex> = r
        .fragments
        .iter()
        .map(|f| parse_fragment_index(&r.init, &f.bytes).expect("parse fragment"))
        .collect();
    assert_eq!(parsed, r.indexes());
    assert_eq!(
        progressive(&r.init, &parsed).expect("progressive").header,
        plan.header
    );

    Outputs {
        progressive: path,
        fmp4,
        playlist,
    }
}

/// Asserts the moov comes before the mdat (so playback starts at once).
fn assert_moov_first(path: &Path) {
    let data = std::fs::read(path).expect("read");
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
    assert_eq!(kinds, ["ftyp", "moov", "mdat"]);
}

fn check_av(
    report: &serde_json::Value,
    codec: &str,
    video_frames: usize,
    audio_frames: usize,
    secs: f64,
) {
    let v = stream(report, "video");
    assert_eq!(v["codec_name"], codec);
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert_eq!(num(&v["nb_read_frames"]) as usize, video_frames, "{v:#}");
    let a = stream(report, "audio");
    assert_eq!(a["codec_name"], "opus");
    assert_eq!(num(&a["sample_rate"]), 48_000.0);
    assert_eq!(a["channels"].as_u64(), Some(2));
    assert_eq!(num(&a["nb_read_frames"]) as usize, audio_frames, "{a:#}");
    let duration = num(&report["format"]["duration"]);
    assert!(
        (duration - secs).abs() < 0.1,
        "duration {duration}, expected {secs}"
    );
}

/// Video packets' (pts, keyframe) from ffprobe, in order.
fn video_packets(path: &Path) -> Vec<(f64, bool)> {
    let report = probe_with(
        path,
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time,flags",
        ],
    );
    report["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| {
            (
                num(&p["pts_time"]),
                p["flags"].as_str().unwrap_or("").contains('K'),
            )
        })
        .collect()
}

fn h264_frames(dir: &Path, secs: u32, gop: u32) -> Vec<Vec<Vec<u8>>> {
    h264_access_units(dir, secs, gop)
        .iter()
        .map(|au| packetize_h264(au))
        .collect()
}

fn vp8_rtp_frames(dir: &Path, secs: u32, gop: u32) -> Vec<Vec<Vec<u8>>> {
    vp8_frames(dir, secs, gop)
        .iter()
        .enumerate()
        .map(|(i, f)| packetize_vp8(f, i as u16))
        .collect()
}

#[test]
fn h264_and_opus_with_wrapping_timestamps() {
    if !ffmpeg_available("h264_and_opus_with_wrapping_timestamps") {
        return;
    }
    let dir = workdir("h264");
    let video = h264_frames(dir.path(), 6, 45);
    let audio = opus_packets(dir.path(), 6);
    let (nv, na) = (video.len(), audio.len());
    assert_eq!(nv, 180);
    let mut events = video_events(video, &|_, _| false);
    events.extend(audio_events(audio, &|_| false));
    let r = Recorder::run(Codec::H264, events);
    assert_eq!(r.samples, [nv, na]);
    assert_eq!(r.keyframe_requests, 0);
    for f in &r.fragments {
        assert!(f.index.keyframe_start);
        assert!(f.index.duration_secs() <= 2.0);
    }
    let out = write_outputs(dir.path(), &r);

    assert_moov_first(&out.progressive);
    check_av(&probe(&out.progressive), "h264", nv, na, 6.0);
    assert_eq!(decode_errors(&out.progressive, &[]), "");
    check_av(&probe(&out.fmp4), "h264", nv, na, 6.0);
    assert_eq!(decode_errors(&out.fmp4, &[]), "");
    assert_eq!(decode_errors(&out.playlist, &[]), "");
    let packets = video_packets(&out.progressive);
    assert_eq!(packets.len(), nv);
    // Every 45th frame (1.5 s) is a keyframe, and the wrap left no jump.
    for (i, (pts, key)) in packets.iter().enumerate() {
        assert!((pts - i as f64 / 30.0).abs() < 1e-3, "frame {i} at {pts}");
        assert_eq!(*key, i % 45 == 0, "frame {i}");
    }
    let playlist = std::fs::read_to_string(&out.playlist).expect("playlist");
    assert!(playlist.contains("#EXT-X-INDEPENDENT-SEGMENTS"));
    assert!(playlist.contains("#EXT-X-TARGETDURATION:2"));
}

#[test]
fn vp8_and_opus() {
    if !ffmpeg_available("vp8_and_opus") {
        return;
    }
    let dir = workdir("vp8");
    let video = vp8_rtp_frames(dir.path(), 5, 45);
    let audio = opus_packets(dir.path(), 5);
    let (nv, na) = (video.len(), audio.len());
    assert_eq!(nv, 150);
    let mut events = video_events(video, &|_, _| false);
    events.extend(audio_events(audio, &|_| false));
    let r = Recorder::run(Codec::Vp8, events);
    assert_eq!(r.samples, [nv, na]);
    let out = write_outputs(dir.path(), &r);

    assert_moov_first(&out.progressive);
    check_av(&probe(&out.progressive), "vp8", nv, na, 5.0);
    assert_eq!(decode_errors(&out.progressive, &[]), "");
    check_av(&probe(&out.fmp4), "vp8", nv, na, 5.0);
    assert_eq!(decode_errors(&out.fmp4, &[]), "");
    let packets = video_packets(&out.progressive);
    assert!(
        packets
            .iter()
            .enumerate()
            .all(|(i, (_, k))| *k == (i % 45 == 0))
    );
}

/// Frames after a loss up to the next keyframe are missing, and the first
/// one after the gap is a keyframe.
fn assert_resumes_at_keyframe(packets: &[(f64, bool)], lost_from: usize, resume: usize) {
    let frame = 1.0 / 30.0;
    let gap = packets
        .windows(2)
        .position(|w| w[1].0 - w[0].0 > frame * 1.5)
        .expect("no gap in the video");
    assert!((packets[gap].0 - (lost_from - 1) as f64 * frame).abs() < 1e-3);
    assert!((packets[gap + 1].0 - resume as f64 * frame).abs() < 1e-3);
    assert!(
        packets[gap + 1].1,
        "the frame after the gap is not a keyframe"
    );
}

#[test]
fn h264_loss_resumes_at_the_next_keyframe() {
    if !ffmpeg_available("h264_loss_resumes_at_the_next_keyframe") {
        return;
    }
    let dir = workdir("h264-loss");
    let video = h264_frames(dir.path(), 6, 45);
    let audio = opus_packets(dir.path(), 6);
    let (nv, na) = (video.len(), audio.len());
    // One packet of frame 70 is lost (frames 70..89 cannot decode; 90 is a
    // keyframe), and five audio packets.
    let mut events = video_events(video, &|i, k| i == 70 && k == 0);
    events.extend(audio_events(audio, &|i| (200..205).contains(&i)));
    let r = Recorder::run(Codec::H264, events);
    assert!(r.keyframe_requests >= 1);
    assert_eq!(r.samples, [nv - 20, na - 5]);
    let out = write_outputs(dir.path(), &r);

    for path in [&out.progressive, &out.fmp4] {
        assert_eq!(decode_errors(path, &[]), "", "{}", path.display());
        let report = probe(path);
        assert_eq!(
            num(&stream(&report, "video")["nb_read_frames"]) as usize,
            nv - 20
        );
        assert_resumes_at_keyframe(&video_packets(path), 70, 90);
    }
}

#[test]
fn vp8_loss_resumes_at_the_next_keyframe() {
    if !ffmpeg_available("vp8_loss_resumes_at_the_next_keyframe") {
        return;
    }
    let dir = workdir("vp8-loss");
    let video = vp8_rtp_frames(dir.path(), 4, 45);
    let audio = opus_packets(dir.path(), 4);
    let nv = video.len();
    // A whole frame (its only packets) is lost.
    let mut events = video_events(video, &|i, _| i == 50);
    events.extend(audio_events(audio, &|_| false));
    let r = Recorder::run(Codec::Vp8, events);
    assert!(r.keyframe_requests >= 1);
    assert_eq!(r.samples[0], nv - 40);
    let out = write_outputs(dir.path(), &r);
    assert_eq!(decode_errors(&out.progressive, &[]), "");
    assert_resumes_at_keyframe(&video_packets(&out.progressive), 50, 90);
}

#[test]
fn long_gop_is_force_cut_and_still_plays() {
    if !ffmpeg_available("long_gop_is_force_cut_and_still_plays") {
        return;
    }
    let dir = workdir("long-gop");
    let video = h264_frames(dir.path(), 5, 300);
    let audio = opus_packets(dir.path(), 5);
    let (nv, na) = (video.len(), audio.len());
    let mut events = video_events(video, &|_, _| false);
    events.extend(audio_events(audio, &|_| false));
    let r = Recorder::run(Codec::H264, events);
    assert!(r.fragments.len() >= 3);
    assert!(r.fragments[0].index.keyframe_start);
    assert!(r.fragments[1..].iter().all(|f| !f.index.keyframe_start));
    assert!(r.fragments.iter().all(|f| f.index.duration_secs() <= 2.0));
    let out = write_outputs(dir.path(), &r);
    let playlist = std::fs::read_to_string(&out.playlist).expect("playlist");
    assert!(!playlist.contains("INDEPENDENT"));
    check_av(&probe(&out.progressive), "h264", nv, na, 5.0);
    assert_eq!(decode_errors(&out.progressive, &[]), "");
    assert_eq!(decode_errors(&out.fmp4, &[]), "");
    assert_eq!(decode_errors(&out.playlist, &[]), "");
}

#[test]
fn video_starting_late_is_delayed_by_an_edit_list() {
    if !ffmpeg_available("video_starting_late_is_delayed_by_an_edit_list") {
        return;
    }
    let dir = workdir("late-video");
    let video = h264_frames(dir.path(), 4, 45);
    let audio = opus_packets(dir.path(), 4);
    let (nv, na) = (video.len(), audio.len());
    // The recorder joins after frame 10: delta frames until the keyframe at
    // frame 45 (1.5 s), while audio records from the start.
    let mut events = video_events(video, &|i, _| i < 10);
    events.extend(audio_events(audio, &|_| false));
    let r = Recorder::run(Codec::H264, events);
    assert!(r.keyframe_requests >= 1);
    assert_eq!(r.samples, [nv - 45, na]);
    assert!(r.fragments[0].index.tracks.iter().any(|t| t.track_id == 2));
    let out = write_outputs(dir.path(), &r);
    for path in [&out.progressive, &out.fmp4] {
        assert_eq!(decode_errors(path, &[]), "", "{}", path.display());
        let report = probe(path);
        let v = stream(&report, "video");
        assert_eq!(num(&v["nb_read_frames"]) as usize, nv - 45);
        assert!((num(&v["start_time"]) - 1.5).abs() < 1e-3, "{v:#}");
        assert!(num(&stream(&report, "audio")["start_time"]).abs() < 1e-3);
    }
    let packets = video_packets(&out.progressive);
    assert!(packets[0].1 && (packets[0].0 - 1.5).abs() < 1e-3);
}

/// A VP8 keyframe (libvpx's, through ffmpeg) becomes a JPEG thumbnail of
/// its picture, scaled to the width asked for, which ffprobe reads.
#[test]
fn a_vp8_keyframe_becomes_a_jpeg_thumbnail() {
    if !ffmpeg_available("a_vp8_keyframe_becomes_a_jpeg_thumbnail") {
        return;
    }
    let dir = workdir("vp8-thumbnail");
    let frames = vp8_frames(dir.path(), 1, 30);
    let key = frames.first().expect("a keyframe");
    assert_eq!(key[0] & 1, 0, "the first frame is a keyframe");
    let jpeg = lumen_recorder::thumbnail::vp8_jpeg(key, 320).expect("decodes");
    let path = dir.path().join("thumbnail.jpg");
    std::fs::write(&path, &jpeg).expect("write");
    let probe = probe_with(&path, &["-show_streams"]);
    let stream = &probe["streams"][0];
    assert_eq!(stream["codec_name"], "mjpeg", "{probe}");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(320), Some(180))
    );
    // Not a picture: an error, not a panic or a garbage image.
    assert!(lumen_recorder::thumbnail::vp8_jpeg(&key[..key.len() / 3], 320).is_err());
    assert!(lumen_recorder::thumbnail::vp8_jpeg(b"\x00\x01\x02", 320).is_err());
}
