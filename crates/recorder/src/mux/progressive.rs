//! The finalised recording: one progressive MP4 (ftyp, moov, mdat; moov
//! first so a browser starts playing before the whole file arrives) made
//! from the init segment and the fragments' indexes, and a plan of byte
//! ranges to copy from the stored fragments, so no more than the header is
//! ever in memory. Each fragment's `mdat` payload becomes one chunk per
//! track, so audio and video stay interleaved at fragment granularity.

use std::time::Duration;

use mp4_atom::{
    Co64, Codec, Ctts, CttsEntry, Decode, Edts, Elst, ElstEntry, Encode, Ftyp, Header, Moof, Moov,
    Prft, Stco, Stsc, StscEntry, Stss, Stsz, StszSamples, Stts, SttsEntry,
};

use super::boxes::{self, MOVIE_TIMESCALE};
use super::{FragmentIndex, IndexError, SampleInfo, TrackRun};

/// The header of the progressive file and how to fill in the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progressive {
    /// `ftyp` + `moov` + the `mdat` box header: the file's first bytes.
    pub header: Vec<u8>,
    /// The rest of the file: these ranges of the stored fragments, in order.
    pub copies: Vec<CopyRange>,
    /// The whole file's length.
    pub len: u64,
    /// What the recordings table wants to know.
    pub info: RecordingInfo,
}

/// A byte range of one stored fragment to append to the progressive file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyRange {
    /// Index of the fragment in the slice given to [`progressive`].
    pub fragment: usize,
    /// First byte in the fragment.
    pub offset: u64,
    /// Bytes to copy.
    pub len: u64,
}

/// A finished recording's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingInfo {
    /// How long it plays (the longest track, from the recording's start).
    pub duration: Duration,
    /// Bytes of the progressive file.
    pub size: u64,
    /// RFC 6381 codecs, comma-separated (`avc1.42e01f,opus`).
    pub codecs: String,
    /// Width of the first video track.
    pub width: Option<u32>,
    /// Height of the first video track.
    pub height: Option<u32>,
}

/// Plans the progressive MP4 of a recording from its init segment and the
/// indexes of its fragments, in order. A fragment missing from the list
/// (lost in a crash) becomes a gap: the sample before it lasts until the
/// next one.
pub fn progressive(init: &[u8], fragments: &[FragmentIndex]) -> Result<Progressive, IndexError> {
    let mut moov = read_init(init)?;
    moov.mvex = None;

    // Where each fragment's payload lands, counted from the mdat payload.
    let mut payload_at = Vec::with_capacity(fragments.len());
    let mut payload_len = 0u64;
    for f in fragments {
        payload_at.push(payload_len);
        payload_len += f.mdat_len;
    }

    let tables: Vec<Tables> = moov
        .trak
        .iter()
        .map(|trak| {
            Tables::collect(
                trak.tkhd.track_id,
                trak.mdia.mdhd.timescale,
                fragments,
                &payload_at,
            )
        })
        .collect();

    let mut movie_duration = 0u64;
    for (trak, t) in moov.trak.iter_mut().zip(&tables) {
        let timescale = trak.mdia.mdhd.timescale.max(1);
        let media = t.durations.iter().map(|&d| u64::from(d)).sum::<u64>();
        let lead = to_movie(t.first_dts, timescale);
        let total = lead + to_movie(media, timescale);
        movie_duration = movie_duration.max(total);
        trak.mdia.mdhd.duration = media;
        trak.tkhd.duration = total;
        trak.edts = (t.first_dts > 0).then(|| Edts {
            // A track that starts after the recording does: an empty edit
            // first keeps it in sync with the others.
            elst: Some(Elst {
                entries: vec![
                    ElstEntry {
                        segment_duration: lead,
                        media_time: None,
                        media_rate: 1i16.into(),
                    },
                    ElstEntry {
                        segment_duration: total - lead,
                        media_time: Some(0),
                        media_rate: 1i16.into(),
                    },
                ],
            }),
        });
    }
    moov.mvhd = boxes::mvhd(moov.trak.len(), movie_duration);

    let h264 = moov
        .trak
        .iter()
        .any(|t| matches!(t.mdia.minf.stbl.stsd.codecs.first(), Some(Codec::Avc1(_))));
    let mut brands = vec![b"isom".into(), b"iso2".into(), b"mp41".into()];
    if h264 {
        brands.push(b"avc1".into());
    }
    let ftyp = Ftyp {
        major_brand: b"isom".into(),
        minor_version: 512,
        compatible_brands: brands,
    };
    let mut ftyp_bytes = Vec::new();
    ftyp.encode(&mut ftyp_bytes)?;
    let mut mdat_header = Vec::new();
    Header {
        kind: b"mdat".into(),
        size: Some(usize::try_from(payload_len).map_err(|_| IndexError::Layout("mdat too large"))?),
    }
    .encode(&mut mdat_header)?;

    // Chunk offsets depend on the moov's size, which depends only on how
    // wide the offsets are: write it with relative offsets to learn the
    // size, then with the real ones.
    let mut wide = false;
    let moov_bytes = loop {
        set_tables(&mut moov, &tables, 0, wide);
        let mut probe = Vec::new();
        moov.encode(&mut probe)?;
        let data_start = (ftyp_bytes.len() + probe.len() + mdat_header.len()) as u64;
        if !wide && data_start + payload_len > u64::from(u32::MAX) {
            wide = true;
            continue;
        }
        set_tables(&mut moov, &tables, data_start, wide);
        let mut real = Vec::new();
        moov.encode(&mut real)?;
        if real.len() != probe.len() {
            return Err(IndexError::Layout("moov size changed with its offsets"));
        }
        break real;
    };

    let mut header = ftyp_bytes;
    header.extend_from_slice(&moov_bytes);
    header.extend_from_slice(&mdat_header);
    let len = header.len() as u64 + payload_len;
    let copies = fragments
        .iter()
        .enumerate()
        .filter(|(_, f)| f.mdat_len > 0)
        .map(|(i, f)| CopyRange {
            fragment: i,
            offset: f.mdat_offset,
            len: f.mdat_len,
        })
        .collect();

    let visual = moov
        .trak
        .iter()
        .find_map(|t| t.mdia.minf.stbl.stsd.codecs.first().and_then(Codec::visual));
    let codecs: Vec<String> = moov
        .trak
        .iter()
        .filter_map(|t| t.mdia.minf.stbl.stsd.codecs.first().map(codec_string))
        .collect();
    Ok(Progressive {
        header,
        copies,
        len,
        info: RecordingInfo {
            duration: Duration::from_millis(movie_duration),
            size: len,
            codecs: codecs.join(","),
            width: visual.map(|v| u32::from(v.width)),
            height: visual.map(|v| u32::from(v.height)),
        },
    })
}

/// Rebuilds the index of a stored fragment this muxer wrote, from its bytes
/// and the recording's init segment (for the timescales): for a crash
/// recovery whose journal lacks the index.
pub fn parse_fragment_index(init: &[u8], fragment: &[u8]) -> Result<FragmentIndex, IndexError> {
    let moov = read_init(init)?;
    let reference_track = moov
        .trak
        .iter()
        .find(|t| t.mdia.hdlr.handler == b"vide".into())
        .or_else(|| moov.trak.first())
        .map_or(1, |t| t.tkhd.track_id);

    let mut rest = fragment;
    let mut prft = None;
    let mut moof: Option<(u64, Moof)> = None;
    let mut mdat = None;
    while !rest.is_empty() {
        let at = (fragment.len() - rest.len()) as u64;
        let mut peek = rest;
        let header = Header::decode(&mut peek)?;
        let header_len = rest.len() - peek.len();
        let body_len = header.size.unwrap_or(peek.len());
        let total = header_len
            .checked_add(body_len)
            .filter(|t| *t <= rest.len())
            .ok_or(IndexError::Layout("box runs past the end"))?;
        let mut whole = &rest[..total];
        if header.kind == b"prft".into() {
            prft = Some(Prft::decode(&mut whole)?);
        } else if header.kind == b"moof".into() {
            moof = Some((at, Moof::decode(&mut whole)?));
        } else if header.kind == b"mdat".into() {
            mdat = Some((at + header_len as u64, body_len as u64));
        }
        rest = &rest[total..];
    }
    let (moof_at, moof) = moof.ok_or(IndexError::Layout("no moof"))?;
    let (mdat_offset, mdat_len) = mdat.ok_or(IndexError::Layout("no mdat"))?;

    let mut tracks = Vec::with_capacity(moof.traf.len());
    for traf in &moof.traf {
        let track_id = traf.tfhd.track_id;
        let timescale = moov
            .trak
            .iter()
            .find(|t| t.tkhd.track_id == track_id)
            .map(|t| t.mdia.mdhd.timescale)
            .ok_or(IndexError::Layout("traf of a track the init segment lacks"))?;
        let [trun] = traf.trun.as_slice() else {
            return Err(IndexError::Layout("not one trun per traf"));
        };
        let offset = u64::try_from(
            trun.data_offset
                .ok_or(IndexError::Layout("trun without data offset"))?,
        )
        .map_err(|_| IndexError::Layout("negative data offset"))?;
        let data_offset = (moof_at + offset)
            .checked_sub(mdat_offset)
            .ok_or(IndexError::Layout("trun data before the mdat"))?;
        let samples = trun
            .samples
            .iter()
            .map(|e| {
                let flags = e.flags.or(traf.tfhd.default_sample_flags).unwrap_or(0);
                Ok(SampleInfo {
                    size: e
                        .size
                        .or(traf.tfhd.default_sample_size)
                        .ok_or(IndexError::Layout("sample without a size"))?,
                    duration: e
                        .duration
                        .or(traf.tfhd.default_sample_duration)
                        .ok_or(IndexError::Layout("sample without a duration"))?,
                    cts_offset: i32::try_from(e.cts.unwrap_or(0))
                        .map_err(|_| IndexError::Layout("composition offset out of range"))?,
                    sync: flags & 0x0001_0000 == 0,
                })
            })
            .collect::<Result<Vec<_>, IndexError>>()?;
        let run = TrackRun {
            track_id,
            timescale,
            base_dts: traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time),
            data_offset,
            samples,
        };
        if run.data_offset + run.size() > mdat_len {
            return Err(IndexError::Layout("samples run past the mdat"));
        }
        tracks.push(run);
    }
    let keyframe_start = tracks
        .iter()
        .find(|t| t.track_id == reference_track)
        .is_none_or(|t| t.samples.first().is_some_and(|s| s.sync));
    Ok(FragmentIndex {
        seq: moof.mfhd.sequence_number,
        ntp_time: prft.map_or(0, |p| p.ntp_timestamp),
        reference_track,
        keyframe_start,
        mdat_offset,
        mdat_len,
        tracks,
    })
}

/// One track's sample tables, collected over the fragments.
struct Tables {
    first_dts: u64,
    sizes: Vec<u32>,
    durations: Vec<u32>,
    cts: Vec<i32>,
    sync: Vec<bool>,
    /// (offset from the mdat payload's start, samples) per chunk.
    chunks: Vec<(u64, u32)>,
}

impl Tables {
    fn collect(
        track_id: u32,
        timescale: u32,
        fragments: &[FragmentIndex],
        payload_at: &[u64],
    ) -> Self {
        let mut t = Tables {
            first_dts: 0,
            sizes: Vec::new(),
            durations: Vec::new(),
            cts: Vec::new(),
            sync: Vec::new(),
            chunks: Vec::new(),
        };
        let mut next_dts: Option<u64> = None;
        for (f, at) in fragments.iter().zip(payload_at) {
            for run in f
                .tracks
                .iter()
                .filter(|r| r.track_id == track_id && !r.samples.is_empty())
            {
                // Runs from an index of another timescale would be garbage.
                if run.timescale != timescale {
                    continue;
                }
                match next_dts {
                    None => t.first_dts = run.base_dts,
                    // A gap (a fragment lost in a crash): the sample before
                    // it lasts until this run starts. Overlaps are left be.
                    Some(expected) if run.base_dts > expected => {
                        if let Some(last) = t.durations.last_mut() {
                            let gap = u32::try_from(run.base_dts - expected).unwrap_or(u32::MAX);
                            *last = last.saturating_add(gap);
                        }
                    }
                    Some(_) => {}
                }
                next_dts = Some(run.base_dts + run.duration());
                t.chunks
                    .push((at + run.data_offset, run.samples.len() as u32));
                for s in &run.samples {
                    push_sample(&mut t, s);
                }
            }
        }
        t
    }
}

fn push_sample(t: &mut Tables, s: &SampleInfo) {
    t.sizes.push(s.size);
    t.durations.push(s.duration);
    t.cts.push(s.cts_offset);
    t.sync.push(s.sync);
}

fn set_tables(moov: &mut Moov, tables: &[Tables], data_start: u64, wide: bool) {
    for (trak, t) in moov.trak.iter_mut().zip(tables) {
        let stbl = &mut trak.mdia.minf.stbl;
        stbl.stts = Stts {
            entries: run_lengths(&t.durations)
                .map(|(sample_delta, sample_count)| SttsEntry {
                    sample_count,
                    sample_delta,
                })
                .collect(),
        };
        stbl.ctts = t.cts.iter().any(|&c| c != 0).then(|| Ctts {
            entries: run_lengths(&t.cts)
                .map(|(offset, sample_count)| CttsEntry {
                    sample_count,
                    sample_offset: i64::from(offset),
                })
                .collect(),
        });
        // No stss means every sample is a sync sample.
        stbl.stss = t.sync.iter().any(|s| !s).then(|| Stss {
            entries: t
                .sync
                .iter()
                .enumerate()
                .filter(|(_, s)| **s)
                .map(|(i, _)| i as u32 + 1)
                .collect(),
        });
        let mut stsc = Vec::new();
        let mut last = None;
        for (i, (_, n)) in t.chunks.iter().enumerate() {
            if last != Some(*n) {
                stsc.push(StscEntry {
                    first_chunk: i as u32 + 1,
                    samples_per_chunk: *n,
                    sample_description_index: 1,
                });
                last = Some(*n);
            }
        }
        stbl.stsc = Stsc { entries: stsc };
        stbl.stsz = Stsz {
            samples: StszSamples::Different {
                sizes: t.sizes.clone(),
            },
        };
        let offsets = t.chunks.iter().map(|(o, _)| data_start + o);
        if wide {
            stbl.stco = None;
            stbl.co64 = Some(Co64 {
                entries: offsets.collect(),
            });
        } else {
            stbl.co64 = None;
            stbl.stco = Some(Stco {
                // Only reached when every offset fits (checked by the caller).
                entries: offsets.map(|o| o as u32).collect(),
            });
        }
    }
}

/// (value, count) of each run of equal values.
fn run_lengths<T: Copy + PartialEq>(values: &[T]) -> impl Iterator<Item = (T, u32)> + '_ {
    values
        .chunk_by(|a, b| a == b)
        .map(|run| (run[0], run.len() as u32))
}

fn to_movie(ticks: u64, timescale: u32) -> u64 {
    (u128::from(ticks) * u128::from(MOVIE_TIMESCALE) / u128::from(timescale.max(1))) as u64
}

fn read_init(init: &[u8]) -> Result<Moov, IndexError> {
    let mut rest = init;
    while !rest.is_empty() {
        let mut peek = rest;
        let header = Header::decode(&mut peek)?;
        if header.kind == b"moov".into() {
            return Ok(Moov::decode(&mut rest)?);
        }
        let skip = (rest.len() - peek.len())
            .checked_add(header.size.unwrap_or(peek.len()))
            .filter(|s| *s <= rest.len())
            .ok_or(IndexError::Layout("box runs past the end"))?;
        rest = &rest[skip..];
    }
    Err(IndexError::Layout("init segment without moov"))
}

fn codec_string(codec: &Codec) -> String {
    match codec {
        Codec::Avc1(avc1) => format!(
            "avc1.{:02x}{:02x}{:02x}",
            avc1.avcc.avc_profile_indication,
            avc1.avcc.profile_compatibility,
            avc1.avcc.avc_level_indication
        ),
        Codec::Vp08(_) => "vp8".to_owned(),
        Codec::Opus(_) => "opus".to_owned(),
        _ => "unknown".to_owned(),
    }
}
