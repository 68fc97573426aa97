//! The boxes of the init segment and of fragments, written with `mp4-atom`.

use mp4_atom::{
    Audio, Avcc, AvccExt, Codec, Dinf, Dops, Dref, DrefEntry, Encode, FixedPoint, Ftyp, Hdlr,
    Header, Matrix, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Opus, Prft, ReferenceTime,
    Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd,
    Vp08, VpcC,
};

use super::{Fragment, FragmentIndex, MuxError, SampleInfo, TrackConfig, TrackRun};

/// `sample_depends_on` = 2 (depends on no other sample).
pub(super) const SYNC_FLAGS: u32 = 0x0200_0000;
/// `sample_depends_on` = 1 and `sample_is_non_sync_sample`.
pub(super) const NON_SYNC_FLAGS: u32 = 0x0101_0000;

/// The movie timescale (`mvhd`): milliseconds.
pub(super) const MOVIE_TIMESCALE: u32 = 1000;

/// Refuses a track configuration the boxes cannot carry.
pub(super) fn check(track: usize, config: &TrackConfig) -> Result<(), MuxError> {
    let bad = |reason| Err(MuxError::BadTrack { track, reason });
    match config {
        TrackConfig::H264 {
            sps, width, height, ..
        } => {
            if sps.len() < 4 {
                return bad("SPS shorter than 4 bytes");
            }
            if u16::try_from(*width).is_err() || u16::try_from(*height).is_err() {
                return bad("picture larger than 65535");
            }
        }
        TrackConfig::Vp8 { width, height } => {
            if u16::try_from(*width).is_err() || u16::try_from(*height).is_err() {
                return bad("picture larger than 65535");
            }
        }
        TrackConfig::Opus { channels } => {
            if !(1..=2).contains(channels) {
                return bad("Opus without a channel mapping table has 1 or 2 channels");
            }
        }
    }
    Ok(())
}

pub(super) fn init_segment(configs: &[TrackConfig]) -> Result<Vec<u8>, MuxError> {
    let mut brands = vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()];
    if configs
        .iter()
        .any(|c| matches!(c, TrackConfig::H264 { .. }))
    {
        brands.push(b"avc1".into());
    }
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: brands,
    };
    let moov = Moov {
        mvhd: mvhd(configs.len(), 0),
        meta: None,
        mvex: Some(Mvex {
            mehd: None,
            trex: (1..=configs.len() as u32)
                .map(|track_id| Trex {
                    track_id,
                    default_sample_description_index: 1,
                    ..Default::default()
                })
                .collect(),
        }),
        trak: configs
            .iter()
            .enumerate()
            .map(|(i, c)| trak(i as u32 + 1, c))
            .collect::<Result<_, _>>()?,
        udta: None,
        ainf: None,
    };
    let mut out = Vec::new();
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(out)
}

pub(super) fn mvhd(tracks: usize, duration: u64) -> Mvhd {
    Mvhd {
        // No clock is read here; the recordings table has the times.
        creation_time: 0,
        modification_time: 0,
        timescale: MOVIE_TIMESCALE,
        duration,
        rate: 1u16.into(),
        volume: 1u8.into(),
        matrix: Matrix::default(),
        next_track_id: tracks as u32 + 1,
    }
}

fn trak(track_id: u32, config: &TrackConfig) -> Result<Trak, MuxError> {
    let (width, height) = match config {
        TrackConfig::H264 { width, height, .. } | TrackConfig::Vp8 { width, height } => {
            (*width as u16, *height as u16)
        }
        TrackConfig::Opus { .. } => (0, 0),
    };
    let video = config.is_video();
    let visual = Visual {
        data_reference_index: 1,
        width,
        height,
        ..Default::default()
    };
    let codec: Codec = match config {
        TrackConfig::H264 { sps, pps, .. } => {
            let mut avcc = Avcc::new(sps, pps)?;
            // ISO/IEC 14496-15 §5.3.3.1: these profiles carry the chroma
            // format and bit depths after the parameter sets.
            if let Ok(parsed) = crate::h264::parse_sps(sps)
                && matches!(parsed.profile_idc, 100 | 110 | 122 | 144)
            {
                avcc.ext = Some(AvccExt {
                    chroma_format: parsed.chroma_format_idc,
                    bit_depth_luma: parsed.bit_depth_luma,
                    bit_depth_chroma: parsed.bit_depth_chroma,
                    sequence_parameter_sets_ext: Vec::new(),
                });
            }
            mp4_atom::Avc1 {
                visual,
                avcc,
                ..Default::default()
            }
            .into()
        }
        TrackConfig::Vp8 { .. } => Vp08 {
            visual,
            vpcc: VpcC {
                profile: 0,
                level: 0,
                bit_depth: 8,
                chroma_subsampling: 1,
                video_full_range_flag: false,
                // WebRTC does not signal colour: "unspecified".
                color_primaries: 2,
                transfer_characteristics: 2,
                matrix_coefficients: 2,
                codec_initialization_data: Vec::new(),
            },
            ..Default::default()
        }
        .into(),
        TrackConfig::Opus { channels } => Opus {
            audio: Audio {
                data_reference_index: 1,
                channel_count: u16::from(*channels),
                sample_size: 16,
                sample_rate: 48_000u16.into(),
            },
            dops: Dops {
                output_channel_count: *channels,
                // The recording joins the stream mid-way: there are no
                // encoder priming samples to skip, and a live viewer's
                // WebRTC decoder skips none either, so 0 keeps A/V sync as
                // viewers saw it and needs no edit list.
                pre_skip: 0,
                input_sample_rate: 48_000,
                output_gain: 0,
                channel_mapping: None,
            },
            btrt: None,
        }
        .into(),
    };
    Ok(Trak {
        tkhd: Tkhd {
            track_id,
            enabled: true,
            in_movie: true,
            volume: if video { 0u8.into() } else { 1u8.into() },
            width: FixedPoint::from(width),
            height: FixedPoint::from(height),
            ..Default::default()
        },
        edts: None,
        meta: None,
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: config.timescale(),
                language: "und".to_owned(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: if video { b"vide" } else { b"soun" }.into(),
                name: if video {
                    "VideoHandler"
                } else {
                    "SoundHandler"
                }
                .to_owned(),
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf {
                    dref: Dref {
                        entries: vec![DrefEntry::Url(Url::default())],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![codec],
                    },
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        senc: None,
        tref: None,
        udta: None,
    })
}

/// One track's samples for [`fragment`].
pub(super) struct Run<'a> {
    pub track_id: u32,
    pub timescale: u32,
    pub samples: Vec<RunSample<'a>>,
}

pub(super) struct RunSample<'a> {
    pub dts: u64,
    pub info: SampleInfo,
    pub data: &'a [u8],
}

/// Writes `prft` + `moof` + `mdat` of the runs (each non-empty), the
/// runs' data one after the other in the `mdat`.
pub(super) fn fragment(
    seq: u32,
    reference_track: u32,
    keyframe_start: bool,
    ntp_time: u64,
    runs: &[Run<'_>],
) -> Result<Fragment, MuxError> {
    let mut offsets = Vec::with_capacity(runs.len());
    let mut payload_len = 0u64;
    for run in runs {
        offsets.push(payload_len);
        payload_len += run
            .samples
            .iter()
            .map(|s| u64::from(s.info.size))
            .sum::<u64>();
    }
    let reference = runs
        .iter()
        .find(|r| r.track_id == reference_track)
        .or_else(|| runs.first());
    let prft = Prft {
        reference_track_id: reference.map_or(reference_track, |r| r.track_id),
        ntp_timestamp: ntp_time,
        media_time: reference
            .and_then(|r| r.samples.first())
            .map_or(0, |s| s.dts),
        utc_time_semantics: ReferenceTime::Input,
    };
    let mdat_header = Header {
        kind: b"mdat".into(),
        size: Some(payload_len as usize),
    };
    let mut mdat_header_bytes = Vec::new();
    mdat_header.encode(&mut mdat_header_bytes)?;

    // trun data offsets count from the moof's first byte, so the moof is
    // written once to learn its size (it does not depend on the offsets'
    // values), then again with them.
    let moof_with = |base: u64| -> Result<Moof, MuxError> {
        let traf = runs
            .iter()
            .zip(&offsets)
            .map(|(run, offset)| {
                let data_offset =
                    i32::try_from(base + offset).map_err(|_| mp4_atom::Error::InvalidSize)?;
                let any_cts = run.samples.iter().any(|s| s.info.cts_offset != 0);
                Ok(Traf {
                    tfhd: Tfhd {
                        track_id: run.track_id,
                        default_base_is_moof: true,
                        ..Default::default()
                    },
                    tfdt: Some(Tfdt {
                        base_media_decode_time: run.samples.first().map_or(0, |s| s.dts),
                    }),
                    trun: vec![Trun {
                        data_offset: Some(data_offset),
                        samples: run
                            .samples
                            .iter()
                            .map(|s| TrunEntry {
                                duration: Some(s.info.duration),
                                size: Some(s.info.size),
                                flags: Some(if s.info.sync {
                                    SYNC_FLAGS
                                } else {
                                    NON_SYNC_FLAGS
                                }),
                                cts: any_cts.then_some(i64::from(s.info.cts_offset)),
                            })
                            .collect::<Vec<_>>()
                            .into(),
                    }],
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, MuxError>>()?;
        Ok(Moof {
            mfhd: Mfhd {
                sequence_number: seq,
            },
            traf,
        })
    };
    let mut probe = Vec::new();
    moof_with(0)?.encode(&mut probe)?;
    let moof_len = probe.len() as u64;

    let mut bytes = Vec::with_capacity(256 + probe.len() + payload_len as usize);
    prft.encode(&mut bytes)?;
    let moof_start = bytes.len() as u64;
    moof_with(moof_len + mdat_header_bytes.len() as u64)?.encode(&mut bytes)?;
    bytes.extend_from_slice(&mdat_header_bytes);
    let mdat_offset = bytes.len() as u64;
    debug_assert_eq!(
        mdat_offset,
        moof_start + moof_len + mdat_header_bytes.len() as u64
    );
    for run in runs {
        for s in &run.samples {
            bytes.extend_from_slice(s.data);
        }
    }
    Ok(Fragment {
        bytes,
        index: FragmentIndex {
            seq,
            ntp_time,
            reference_track,
            keyframe_start,
            mdat_offset,
            mdat_len: payload_len,
            tracks: runs
                .iter()
                .zip(&offsets)
                .map(|(run, offset)| TrackRun {
                    track_id: run.track_id,
                    timescale: run.timescale,
                    base_dts: run.samples.first().map_or(0, |s| s.dts),
                    data_offset: *offset,
                    samples: run.samples.iter().map(|s| s.info).collect(),
                })
                .collect(),
        },
    })
}
