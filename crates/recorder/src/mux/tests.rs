use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mp4_atom::{Any, Codec, Decode, Moov, StszSamples};

use super::*;

const SPS: [u8; 25] = [
    0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01,
    0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
];
const PPS: [u8; 5] = [0x68, 0xcb, 0x83, 0xcb, 0x20];

fn tracks() -> Vec<TrackConfig> {
    vec![
        TrackConfig::H264 {
            sps: SPS.to_vec(),
            pps: PPS.to_vec(),
            width: 640,
            height: 360,
        },
        TrackConfig::Opus { channels: 2 },
    ]
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
}

fn sample(dts: u64, keyframe: bool, size: usize, ms: u64) -> Sample {
    Sample {
        dts,
        cts_offset: 0,
        keyframe,
        data: vec![keyframe as u8; size],
        wall_clock: at(ms),
    }
}

/// Pushes `secs` of 30 fps video (keyframe every `gop` frames) and 20 ms
/// audio in time order; returns every fragment.
fn run(secs: u64, gop: u64) -> (Muxer, Vec<Fragment>) {
    let mut m = Muxer::new(tracks()).unwrap();
    let mut out = Vec::new();
    let (mut v, mut a) = (0u64, 0u64);
    loop {
        let vt = v * 3000 * 1000 / 90_000;
        let at_ms = a * 20;
        if vt >= secs * 1000 && at_ms >= secs * 1000 {
            break;
        }
        if vt <= at_ms {
            out.extend(
                m.push(0, sample(v * 3000, v % gop == 0, 100 + v as usize, vt))
                    .unwrap(),
            );
            v += 1;
        } else {
            out.extend(m.push(1, sample(a * 960, true, 10, at_ms)).unwrap());
            a += 1;
        }
    }
    out.extend(m.finish().unwrap());
    (m, out)
}

#[test]
fn init_segment_reads_back() {
    let m = Muxer::new(tracks()).unwrap();
    let init = m.init_segment().unwrap();
    let mut buf = init.as_slice();
    let Any::Ftyp(ftyp) = Any::decode(&mut buf).unwrap() else {
        panic!("no ftyp first");
    };
    assert!(ftyp.compatible_brands.contains(&b"cmfc".into()));
    let moov = Moov::decode(&mut buf).unwrap();
    assert!(buf.is_empty());
    assert_eq!(moov.mvex.as_ref().map(|m| m.trex.len()), Some(2));
    let Some(Codec::Avc1(avc1)) = moov.trak[0].mdia.minf.stbl.stsd.codecs.first() else {
        panic!("no avc1");
    };
    assert_eq!((avc1.visual.width, avc1.visual.height), (640, 360));
    assert_eq!(avc1.avcc.sequence_parameter_sets, vec![SPS.to_vec()]);
    let Some(Codec::Opus(opus)) = moov.trak[1].mdia.minf.stbl.stsd.codecs.first() else {
        panic!("no Opus");
    };
    assert_eq!(opus.dops.pre_skip, 0);
    assert_eq!(moov.trak[1].mdia.mdhd.timescale, 48_000);
    assert_eq!(m.codecs(), "avc1.42c01e,opus");
}

#[test]
fn fragments_cut_at_keyframes_after_the_minimum() {
    // A keyframe every 1.5 s: every fragment starts on one.
    let (_, frags) = run(9, 45);
    assert!(frags.len() >= 5, "{}", frags.len());
    for f in &frags {
        assert!(
            f.index.keyframe_start,
            "fragment {} starts on a delta",
            f.index.seq
        );
        let d = f.index.duration_secs();
        assert!(d <= 2.0 + 1e-9, "fragment {} lasts {d}", f.index.seq);
    }
    let starts: Vec<f64> = frags.iter().map(|f| f.index.start_secs()).collect();
    assert_eq!(&starts[..3], &[0.0, 1.5, 3.0]);
}

#[test]
fn a_long_gop_is_force_cut_at_two_seconds() {
    let (m, frags) = run(7, 1000);
    assert_eq!(frags[0].index.start_secs(), 0.0);
    assert!(frags[0].index.keyframe_start);
    for f in &frags[1..] {
        assert!(!f.index.keyframe_start);
        let video = &f.index.tracks[0];
        assert!(!video.samples[0].sync);
    }
    for f in &frags {
        assert!(f.index.duration_secs() <= 2.0 + 1e-9);
        // Audio follows the cut: it never starts more than a frame early
        // or ends more than a frame late.
        let [v, a] = f.index.tracks.as_slice() else {
            panic!("fragment {} lacks a track", f.index.seq);
        };
        let v_start = v.base_dts as f64 / 90_000.0;
        let a_start = a.base_dts as f64 / 48_000.0;
        assert!((v_start - a_start).abs() < 0.04, "{v_start} vs {a_start}");
    }
    // Every sample came out once.
    let video: usize = frags.iter().map(|f| f.index.tracks[0].samples.len()).sum();
    assert_eq!(video, 210);
    assert_eq!(m.stats().samples as usize, video + 350);
}

#[test]
fn fragment_index_survives_json_and_parsing() {
    let (m, frags) = run(3, 45);
    let init = m.init_segment().unwrap();
    for f in &frags {
        let json = serde_json::to_string(&f.index).unwrap();
        let back: FragmentIndex = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f.index);
        assert_eq!(parse_fragment_index(&init, &f.bytes).unwrap(), f.index);
        // prft first, then moof; its time is the first video sample's.
        assert_eq!(&f.bytes[4..8], b"prft");
    }
    assert_eq!(frags[0].index.ntp_time, ntp(at(0)));
    assert!(parse_fragment_index(&init, &frags[0].bytes[..40]).is_err());
}

#[test]
fn progressive_tables_cover_every_sample() {
    let (m, frags) = run(5, 45);
    let init = m.init_segment().unwrap();
    let indexes: Vec<_> = frags.iter().map(|f| f.index.clone()).collect();
    let p = progressive(&init, &indexes).unwrap();
    let payload: u64 = indexes.iter().map(|i| i.mdat_len).sum();
    assert_eq!(p.len, p.header.len() as u64 + payload);
    assert_eq!(p.copies.len(), frags.len());
    let mut buf = p.header.as_slice();
    let _ftyp = Any::decode(&mut buf).unwrap();
    let moov = Moov::decode(&mut buf).unwrap();
    assert!(moov.mvex.is_none());
    let StszSamples::Different { sizes } = &moov.trak[0].mdia.minf.stbl.stsz.samples else {
        panic!("stsz");
    };
    assert_eq!(sizes.len(), 150);
    let stco = moov.trak[0].mdia.minf.stbl.stco.as_ref().unwrap();
    assert_eq!(stco.entries.len(), frags.len());
    assert_eq!(u64::from(stco.entries[0]), p.header.len() as u64);
    assert_eq!(p.info.codecs, "avc1.42c01e,opus");
    assert_eq!((p.info.width, p.info.height), (Some(640), Some(360)));
    assert_eq!(p.info.duration, Duration::from_secs(5));
}

#[test]
fn out_of_order_and_empty_samples_are_dropped() {
    let mut m = Muxer::new(tracks()).unwrap();
    assert!(m.push(0, sample(3000, true, 10, 0)).unwrap().is_none());
    assert!(m.push(0, sample(3000, false, 10, 0)).unwrap().is_none());
    assert!(m.push(0, sample(0, false, 10, 0)).unwrap().is_none());
    assert!(m.push(0, sample(6000, false, 0, 0)).unwrap().is_none());
    assert_eq!(m.stats().out_of_order, 2);
    assert_eq!(m.stats().empty, 1);
    assert!(matches!(
        m.push(5, sample(1, true, 1, 0)),
        Err(MuxError::UnknownTrack(5))
    ));
    let frags = m.finish().unwrap();
    assert_eq!(frags.len(), 1);
    // The last sample repeats... nothing came before it: the default.
    assert_eq!(frags[0].index.tracks[0].samples[0].duration, 3000);
}

#[test]
fn ntp_of_unix_epoch() {
    assert_eq!(ntp(UNIX_EPOCH) >> 32, 2_208_988_800);
    assert_eq!(
        ntp(UNIX_EPOCH + Duration::from_millis(500)) & 0xffff_ffff,
        1 << 31
    );
}

#[test]
fn keyframe_is_due_after_the_minimum() {
    let mut m = Muxer::new(tracks()).unwrap();
    assert!(!m.keyframe_due());
    for i in 0..31u64 {
        let _ = m.push(0, sample(i * 3000, i == 0, 10, 0)).unwrap();
        // Frame 30 (1 s) is held back, frames 0..29 are queued.
        assert_eq!(m.keyframe_due(), i >= 30, "frame {i}");
    }
}

#[test]
fn a_lost_fragment_becomes_a_gap_not_a_shift() {
    let (m, frags) = run(6, 45);
    let init = m.init_segment().unwrap();
    let mut indexes: Vec<_> = frags.iter().map(|f| f.index.clone()).collect();
    indexes.remove(1);
    let p = progressive(&init, &indexes).unwrap();
    // The timeline still ends at 6 s: the sample before the hole lasts
    // until the fragment after it.
    assert_eq!(p.info.duration, Duration::from_secs(6));
    assert_eq!(
        p.copies.iter().map(|c| c.fragment).collect::<Vec<_>>(),
        (0..indexes.len()).collect::<Vec<_>>()
    );
}

#[test]
fn truncated_fragments_never_panic() {
    let (m, frags) = run(2, 45);
    let init = m.init_segment().unwrap();
    let bytes = &frags[0].bytes;
    for n in (0..bytes.len()).step_by(3) {
        let _ = parse_fragment_index(&init, &bytes[..n]);
        let _ = parse_fragment_index(&bytes[..n.min(bytes.len())], bytes);
    }
    for n in 0..init.len() {
        let _ = progressive(&init[..n], &[frags[0].index.clone()]);
    }
}
