//! The publisher's test pattern: a moving picture with the frame number drawn
//! into it, encoded with openh264 into Annex B access units that carry the
//! lumen timing SEI (frame number + send time) in front of the slices.
//!
//! The frame number is both visible (for a human looking at a browser viewer)
//! and machine-readable (the SEI, for `lumen watch` and tests).

use anyhow::Context;
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile, RateControlMode,
    UsageType,
};
use openh264::formats::YUVBuffer;

use super::sei::{FrameTiming, NAL_IDR, NAL_SLICE, nal_type, split_annex_b, write_timing_sei};

/// One encoded picture, ready to packetize.
#[derive(Clone, Debug)]
pub struct EncodedFrame {
    /// Annex B access unit: [SPS, PPS,] timing SEI, slice(s).
    pub data: Vec<u8>,
    /// Whether the access unit is an IDR (and so carries SPS/PPS).
    pub keyframe: bool,
    /// The frame number drawn into the picture and carried in the SEI.
    pub frame_number: u64,
}

/// Draws the pattern and encodes it.
pub struct PatternEncoder {
    width: usize,
    height: usize,
    fps: u32,
    encoder: Encoder,
    yuv: Vec<u8>,
    /// With [`PatternEncoder::looping`]: the access units of the first
    /// group of pictures, then sent round.
    looped: Option<Loop>,
}

/// One group of pictures encoded once and sent round.
struct Loop {
    len: usize,
    units: Vec<Unit>,
    next: usize,
}

/// An encoded access unit split where the timing SEI goes (before the
/// first slice), so every send can carry a fresh one.
#[derive(Clone)]
struct Unit {
    /// Annex B NAL units before the first slice (SPS and PPS of an IDR).
    before: Vec<u8>,
    /// Annex B NAL units from the first slice on.
    slices: Vec<u8>,
    keyframe: bool,
}

impl Unit {
    /// Splits openh264's output; `None` when it holds no slice.
    fn split(raw: &[u8]) -> Option<Self> {
        let mut unit = Unit {
            before: Vec::new(),
            slices: Vec::with_capacity(raw.len() + 8),
            keyframe: false,
        };
        for nal in split_annex_b(raw) {
            let t = nal_type(nal);
            let to = if unit.slices.is_empty() && !matches!(t, Some(NAL_SLICE..=NAL_IDR)) {
                &mut unit.before
            } else {
                &mut unit.slices
            };
            to.extend_from_slice(&[0, 0, 0, 1]);
            to.extend_from_slice(nal);
            unit.keyframe |= t == Some(NAL_IDR);
        }
        (!unit.slices.is_empty()).then_some(unit)
    }

    /// The access unit with `timing` in front of its first slice.
    fn frame(&self, timing: FrameTiming) -> EncodedFrame {
        let sei = write_timing_sei(timing);
        let mut data = Vec::with_capacity(self.before.len() + 4 + sei.len() + self.slices.len());
        data.extend_from_slice(&self.before);
        data.extend_from_slice(&[0, 0, 0, 1]);
        data.extend_from_slice(&sei);
        data.extend_from_slice(&self.slices);
        EncodedFrame {
            data,
            keyframe: self.keyframe,
            frame_number: timing.frame_number,
        }
    }
}

impl PatternEncoder {
    /// Creates an encoder for `width` x `height` (rounded down to even
    /// numbers, at least 16x16) at `fps`, targeting `bitrate_bps`, with an IDR
    /// every two seconds.
    pub fn new(width: u32, height: u32, fps: u32, bitrate_bps: u32) -> anyhow::Result<Self> {
        let width = (width.max(16) & !1) as usize;
        let height = (height.max(16) & !1) as usize;
        let fps = fps.clamp(1, 120);
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate_bps.max(10_000)))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            // Every generated picture must go out: a skipped frame would show
            // up as a frame-number gap at the viewer.
            .skip_frames(false)
            .usage_type(UsageType::CameraVideoRealTime)
            // Constrained baseline, as negotiated (profile-level-id 42e01f).
            .profile(Profile::Baseline)
            // openh264 repeats SPS/PPS in front of every IDR, so a late
            // joiner can start at any IDR.
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * 2));
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .context("creating the openh264 encoder")?;
        Ok(Self {
            width,
            height,
            fps,
            encoder,
            yuv: vec![0; width * height * 3 / 2],
            looped: None,
        })
    }

    /// Encodes only the first group of pictures (two seconds: an IDR and
    /// its P frames) and then sends it round, with a fresh timing SEI and
    /// frame number each time; a keyframe request restarts the round at
    /// its IDR. The stream is valid H.264 (an IDR resets every reference)
    /// at the bitrate asked for, and costs no encoding after two seconds:
    /// for load tests, where the encoder would take a core's share from the
    /// server being measured. The picture repeats every two seconds.
    pub fn looping(mut self) -> Self {
        let len = (self.fps * 2) as usize;
        self.looped = Some(Loop {
            len,
            units: Vec::with_capacity(len),
            next: 0,
        });
        self
    }

    /// Picture size actually encoded.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width as u32, self.height as u32)
    }

    /// Makes the next frame an IDR (answer to a keyframe request).
    pub fn force_keyframe(&mut self) {
        match &mut self.looped {
            Some(l) if l.units.len() == l.len => l.next = 0,
            _ => self.encoder.force_intra_frame(),
        }
    }

    /// Draws frame `frame_number`, encodes it, and returns the access unit
    /// with the timing SEI inserted before the first slice. The send time is
    /// read from `clock` after encoding, so latency measured from it is the
    /// network and the server, not the encoder. Returns `None` when the
    /// encoder produced no picture.
    pub fn encode(
        &mut self,
        frame_number: u64,
        clock: impl FnOnce() -> u64,
    ) -> anyhow::Result<Option<EncodedFrame>> {
        if let Some(l) = &mut self.looped
            && l.units.len() == l.len
        {
            let unit = &l.units[l.next];
            l.next = (l.next + 1) % l.len;
            return Ok(Some(unit.frame(FrameTiming {
                frame_number,
                sent_at_micros: clock(),
            })));
        }
        draw_pattern(&mut self.yuv, self.width, self.height, frame_number);
        let source = YUVBuffer::from_vec(self.yuv.clone(), self.width, self.height);
        let millis = frame_number.saturating_mul(1000) / u64::from(self.fps);
        let bitstream = self
            .encoder
            .encode_at(&source, openh264::Timestamp::from_millis(millis))
            .context("openh264 encode")?;
        let timing = FrameTiming {
            frame_number,
            sent_at_micros: clock(),
        };
        let Some(unit) = Unit::split(&bitstream.to_vec()) else {
            return Ok(None);
        };
        let frame = unit.frame(timing);
        if let Some(l) = &mut self.looped
            // The round starts at an IDR.
            && (unit.keyframe || !l.units.is_empty())
        {
            l.units.push(unit);
        }
        Ok(Some(frame))
    }
}

/// Draws frame `n` into an I420 buffer: a slowly scrolling luma gradient, a
/// box bouncing across, a chroma tint cycling with time, and the frame number
/// in 7-segment digits in the top-left corner.
pub fn draw_pattern(yuv: &mut [u8], width: usize, height: usize, n: u64) {
    let (luma, chroma) = yuv.split_at_mut(width * height);
    let (u_plane, v_plane) = chroma.split_at_mut(width * height / 4);

    // Pixel (x, y) is 40 + (x + y + shift) % 160: every row is a window of
    // one periodic ramp, so copy it rather than compute each pixel (this
    // runs per frame per simulcast layer, unoptimised in debug builds).
    let shift = ((n % 80) * 2) as usize;
    let ramp: Vec<u8> = (0..width + 160).map(|i| (40 + i % 160) as u8).collect();
    for (y, row) in luma.chunks_exact_mut(width).enumerate() {
        let start = (y + shift) % 160;
        row.copy_from_slice(&ramp[start..start + width]);
    }

    // A box moving horizontally and bouncing back: motion for the encoder and
    // for the eye.
    let box_size = (height / 4).max(8);
    let travel = width.saturating_sub(box_size).max(1);
    let phase = (n as usize * 8) % (2 * travel);
    let bx = if phase < travel {
        phase
    } else {
        2 * travel - phase
    };
    let by = height / 2 - box_size / 2;
    fill_rect(luma, width, bx, by, box_size, box_size, 235);

    // Chroma: a hue that turns over about every four seconds at 30 fps.
    let hue = (n % 128) as f32 / 128.0 * std::f32::consts::TAU;
    let u = (128.0 + 60.0 * hue.cos()) as u8;
    let v = (128.0 + 60.0 * hue.sin()) as u8;
    u_plane.fill(u);
    v_plane.fill(v);
    // Keep the digit area neutral so the numbers stay black on white.
    let cw = width / 2;
    let scale = (height / 60).max(2);
    let digits = n.to_string();
    let digit_w = 6 * scale;
    let digit_h = 11 * scale;
    let panel_w = (digits.len() * (digit_w + 2 * scale) + 2 * scale).min(width);
    let panel_h = (digit_h + 4 * scale).min(height);
    for y in 0..panel_h / 2 {
        for x in 0..panel_w / 2 {
            u_plane[y * cw + x] = 128;
            v_plane[y * cw + x] = 128;
        }
    }
    fill_rect(luma, width, 0, 0, panel_w, panel_h, 235);
    for (i, ch) in digits.bytes().enumerate() {
        let x0 = 2 * scale + i * (digit_w + 2 * scale);
        draw_digit(luma, width, height, x0, 2 * scale, scale, ch - b'0');
    }
}

/// Segments a..g of each digit, bit 0 = a (top), clockwise, g = middle.
const SEGMENTS: [u8; 10] = [
    0b011_1111, 0b000_0110, 0b101_1011, 0b100_1111, 0b110_0110, 0b110_1101, 0b111_1101, 0b000_0111,
    0b111_1111, 0b110_1111,
];

fn draw_digit(
    luma: &mut [u8],
    width: usize,
    height: usize,
    x0: usize,
    y0: usize,
    s: usize,
    digit: u8,
) {
    let Some(&mask) = SEGMENTS.get(usize::from(digit)) else {
        return;
    };
    let (w, h, t) = (6 * s, 11 * s, s.max(1) + s / 2);
    let half = h / 2;
    let rects = [
        (0, 0, w, t),                // a
        (w - t, 0, t, half + t / 2), // b
        (w - t, half, t, h - half),  // c
        (0, h - t, w, t),            // d
        (0, half, t, h - half),      // e
        (0, 0, t, half + t / 2),     // f
        (0, half - t / 2, w, t),     // g
    ];
    for (i, &(x, y, rw, rh)) in rects.iter().enumerate() {
        if mask & (1 << i) != 0 && x0 + x + rw <= width && y0 + y + rh <= height {
            fill_rect(luma, width, x0 + x, y0 + y, rw, rh, 16);
        }
    }
}

fn fill_rect(plane: &mut [u8], stride: usize, x: usize, y: usize, w: usize, h: usize, value: u8) {
    let rows = plane.len() / stride;
    for row in y..(y + h).min(rows) {
        let start = row * stride + x.min(stride);
        let end = row * stride + (x + w).min(stride);
        plane[start..end].fill(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::sei::{NAL_SEI, access_unit_has_idr, find_timing_in_access_unit};
    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;

    #[test]
    fn a_looping_pattern_sends_its_first_group_round_and_decodes() {
        // 5 fps: a round of 10 frames.
        let mut enc = PatternEncoder::new(320, 180, 5, 300_000)
            .expect("encoder")
            .looping();
        let mut dec = Decoder::new().expect("decoder");
        let mut frames = Vec::new();
        for n in 0..25u64 {
            if n == 17 {
                // A keyframe request mid-round: the round restarts at its IDR.
                enc.force_keyframe();
            }
            let f = enc
                .encode(n, || 5_000 + n)
                .expect("encode")
                .expect("a picture");
            let timing = find_timing_in_access_unit(&f.data).expect("timing SEI");
            assert_eq!((timing.frame_number, timing.sent_at_micros), (n, 5_000 + n));
            assert_eq!(f.frame_number, n);
            let pic = dec.decode(&f.data).expect("decodes").expect("a picture");
            assert_eq!(pic.dimensions(), (320, 180));
            frames.push(f);
        }
        // Everything but the timing SEI.
        let slices = |f: &EncodedFrame| {
            split_annex_b(&f.data)
                .into_iter()
                .filter(|n| nal_type(n) != Some(NAL_SEI))
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        let key: Vec<u64> = frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.frame_number)
            .collect();
        assert_eq!(
            key,
            vec![0, 10, 17],
            "IDRs at the round's starts and on request"
        );
        // Past the first round, each frame is the round's frame again.
        for n in 10..17 {
            assert_eq!(slices(&frames[n]), slices(&frames[n - 10]), "frame {n}");
        }
        for n in 17..25 {
            assert_eq!(slices(&frames[n]), slices(&frames[n - 17]), "frame {n}");
        }
    }

    #[test]
    fn encoded_frame_decodes_and_carries_its_number() {
        let mut enc = PatternEncoder::new(320, 180, 30, 300_000).expect("encoder");
        let mut dec = Decoder::new().expect("decoder");
        let mut decoded = 0;
        for n in 0..3u64 {
            let frame = enc
                .encode(n, || 1_000 + n)
                .expect("encode")
                .expect("a picture");
            assert_eq!(frame.frame_number, n);
            assert_eq!(frame.keyframe, n == 0);
            assert_eq!(access_unit_has_idr(&frame.data), n == 0);
            let timing = find_timing_in_access_unit(&frame.data).expect("timing SEI");
            assert_eq!(timing.frame_number, n);
            assert_eq!(timing.sent_at_micros, 1_000 + n);
            if let Some(pic) = dec.decode(&frame.data).expect("decode") {
                assert_eq!(pic.dimensions(), (320, 180));
                decoded += 1;
            }
        }
        assert_eq!(decoded, 3);
    }

    #[test]
    fn forced_keyframe_repeats_parameter_sets() {
        let mut enc = PatternEncoder::new(160, 96, 30, 200_000).expect("encoder");
        enc.encode(0, || 0).expect("encode");
        enc.encode(1, || 0).expect("encode");
        enc.force_keyframe();
        let frame = enc.encode(2, || 0).expect("encode").expect("a picture");
        assert!(frame.keyframe);
        let types: Vec<_> = split_annex_b(&frame.data)
            .into_iter()
            .filter_map(nal_type)
            .collect();
        assert_eq!(&types[..], &[7, 8, 6, 5]);
    }

    #[test]
    fn gradient_matches_the_per_pixel_formula() {
        let (w, h) = (50, 100);
        for n in [0u64, 1, 79, 80, 81, 1234567890] {
            let mut buf = vec![0; w * h * 3 / 2];
            draw_pattern(&mut buf, w, h, n);
            // Row 90 is below the digit panel and the bouncing box.
            let y = 90;
            for x in 0..w {
                let want = (40 + ((x + y + (n * 2) as usize) % 160)) as u8;
                assert_eq!(buf[y * w + x], want, "n={n} x={x}");
            }
        }
    }

    #[test]
    fn pattern_draws_odd_sizes_without_panicking() {
        for (w, h) in [(16, 16), (34, 18), (640, 360)] {
            let mut buf = vec![0; w * h * 3 / 2];
            draw_pattern(&mut buf, w, h, 1234567890);
        }
    }
}
