//! Helpers of the ffprobe tests: finding ffmpeg, encoding test media with
//! it, reading the containers it writes (Annex B, IVF, Ogg), and an RTP
//! packetizer for each codec, so the recorder sees what a publisher sends.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether ffmpeg and ffprobe run. Without them a test prints a loud SKIP
/// and passes, unless `LUMEN_REQUIRE_ALL=1` (CI), where it fails.
pub fn ffmpeg_available(test: &str) -> bool {
    let ok = ["ffmpeg", "ffprobe"].iter().all(|tool| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        if std::env::var("LUMEN_REQUIRE_ALL").is_ok_and(|v| v == "1") {
            panic!("{test}: ffmpeg/ffprobe not installed and LUMEN_REQUIRE_ALL=1");
        }
        eprintln!("\n\n*** SKIP {test}: ffprobe not installed (apt-get install ffmpeg) ***\n\n");
    }
    ok
}

/// Runs ffmpeg quietly; panics with its stderr if it fails.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Decodes every stream of `input` to nowhere and returns what ffmpeg said
/// at level `error` (empty when the file decodes cleanly).
pub fn decode_errors(input: &Path, extra: &[&str]) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error"])
        .args(extra)
        .arg("-i")
        .arg(input)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        text.push_str("(ffmpeg failed)");
    }
    text
}

/// `ffprobe -show_streams -show_format -count_frames` as JSON.
pub fn probe(input: &Path) -> serde_json::Value {
    probe_with(input, &["-show_streams", "-show_format", "-count_frames"])
}

/// ffprobe with these options, as JSON.
pub fn probe_with(input: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(input)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

/// The stream of `codec_type` in an ffprobe report.
pub fn stream<'a>(report: &'a serde_json::Value, codec_type: &str) -> &'a serde_json::Value {
    report["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_type"] == codec_type))
        .unwrap_or_else(|| panic!("no {codec_type} stream in {report:#}"))
}

/// A JSON field ffprobe writes as a string, parsed.
pub fn num(v: &serde_json::Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_f64())
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Encodes `secs` of ffmpeg's test pattern at 640x360, 30 fps, with a
/// keyframe every `gop` frames, to raw H.264 (constrained baseline, one AUD
/// per access unit) and returns its access units as lists of NAL units.
pub fn h264_access_units(dir: &Path, secs: u32, gop: u32) -> Vec<Vec<Vec<u8>>> {
    let path = dir.join("video.h264");
    let params = format!("keyint={gop}:min-keyint={gop}:scenecut=0:aud=1");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc=size=640x360:rate=30:duration={secs}"),
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-x264-params",
        &params,
        "-f",
        "h264",
        path.to_str().expect("path"),
    ]);
    let data = std::fs::read(&path).expect("read h264");
    let mut units: Vec<Vec<Vec<u8>>> = Vec::new();
    for nal in split_annex_b(&data) {
        if nal.first().is_some_and(|h| h & 0x1f == 9) || units.is_empty() {
            units.push(Vec::new());
        }
        if let Some(au) = units.last_mut() {
            au.push(nal.to_vec());
        }
    }
    units.retain(|au| au.iter().any(|n| matches!(n[0] & 0x1f, 1 | 5)));
    units
}

fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
            // A 4-byte start code leaves a zero behind the NAL before it.
            while end > s && data[end - 1] == 0 {
                end -= 1;
            }
            &data[s..end]
        })
        .collect()
}

/// Encodes `secs` of the test pattern to VP8 (keyframe every `gop` frames)
/// and returns its frames.
pub fn vp8_frames(dir: &Path, secs: u32, gop: u32) -> Vec<Vec<u8>> {
    let path = dir.join("video.ivf");
    let gop = gop.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc=size=640x360:rate=30:duration={secs}"),
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libvpx",
        "-g",
        &gop,
        "-keyint_min",
        &gop,
        "-b:v",
        "500k",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-f",
        "ivf",
        path.to_str().expect("path"),
    ]);
    let data = std::fs::read(&path).expect("read ivf");
    let header_len = usize::from(u16::from_le_bytes([data[6], data[7]]));
    let mut at = header_len;
    let mut frames = Vec::new();
    while at + 12 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        frames.push(data[at + 12..at + 12 + len].to_vec());
        at += 12 + len;
    }
    frames
}

/// Encodes `secs` of a stereo tone to Opus in 20 ms packets and returns
/// the packets (without the Ogg headers).
pub fn opus_packets(dir: &Path, secs: u32) -> Vec<Vec<u8>> {
    let path = dir.join("audio.ogg");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=440:sample_rate=48000:duration={secs}"),
        "-ac",
        "2",
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        "-frame_duration",
        "20",
        "-f",
        "ogg",
        path.to_str().expect("path"),
    ]);
    let data = std::fs::read(&path).expect("read ogg");
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at + 27 <= data.len() && &data[at..at + 4] == b"OggS" {
        let segments = usize::from(data[at + 26]);
        let table = &data[at + 27..at + 27 + segments];
        let mut body = at + 27 + segments;
        for &len in table {
            current.extend_from_slice(&data[body..body + usize::from(len)]);
            body += usize::from(len);
            if len < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        at = body;
    }
    // OpusHead and OpusTags first.
    packets.drain(..2.min(packets.len()));
    packets
}

/// One RTP packet as the recorder receives it.
#[derive(Debug, Clone)]
pub struct Rtp {
    pub seq: u64,
    pub ts: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
}

const MTU: usize = 1100;

/// RFC 6184 packetization of one access unit: SPS and PPS in a STAP-A,
/// other NAL units single or in FU-A fragments; AUDs are not sent.
pub fn packetize_h264(au: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let params: Vec<&Vec<u8>> = au.iter().filter(|n| matches!(n[0] & 0x1f, 7 | 8)).collect();
    if !params.is_empty() {
        let mut stap = vec![0x78];
        for n in &params {
            stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
            stap.extend_from_slice(n);
        }
        out.push(stap);
    }
    for nal in au.iter().filter(|n| !matches!(n[0] & 0x1f, 7..=9)) {
        if nal.len() <= MTU {
            out.push(nal.clone());
            continue;
        }
        let chunks: Vec<&[u8]> = nal[1..].chunks(MTU).collect();
        let n = chunks.len();
        for (i, c) in chunks.into_iter().enumerate() {
            let mut fu = vec![(nal[0] & 0xe0) | 28, nal[0] & 0x1f];
            if i == 0 {
                fu[1] |= 0x80;
            }
            if i == n - 1 {
                fu[1] |= 0x40;
            }
            fu.extend_from_slice(c);
            out.push(fu);
        }
    }
    out
}

/// RFC 7741 packetization with a 15-bit PictureID.
pub fn packetize_vp8(frame: &[u8], picture_id: u16) -> Vec<Vec<u8>> {
    frame
        .chunks(MTU)
        .enumerate()
        .map(|(i, c)| {
            let s = if i == 0 { 0x10 } else { 0 };
            let mut p = vec![
                0x80 | s,
                0x80,
                0x80 | ((picture_id >> 8) as u8 & 0x7f),
                picture_id as u8,
            ];
            p.extend_from_slice(c);
            p
        })
        .collect()
}

/// A temporary directory for one test's files (its path is printed); kept
/// for inspection when `LUMEN_KEEP_TEST_FILES=1`.
pub fn workdir(test: &str) -> tempfile::TempDir {
    let keep = std::env::var("LUMEN_KEEP_TEST_FILES").is_ok_and(|v| v == "1");
    let dir = tempfile::Builder::new()
        .prefix(&format!("lumen-recorder-{test}-"))
        .disable_cleanup(keep)
        .tempdir()
        .expect("temp dir");
    eprintln!("{test}: files in {}", dir.path().display());
    dir
}

/// A path inside `dir`.
pub fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
