//! Thumbnails: one keyframe decoded and written as a small JPEG, for a
//! recording's poster and the home page's live stream cards. H.264 is
//! decoded by openh264. A VP8 keyframe is exactly the bitstream a lossy
//! WebP image holds, so it is wrapped in a WebP container and decoded by
//! `image-webp` (pure Rust; no libvpx).

use jpeg_encoder::{ColorType, Encoder};
use openh264::decoder::{DecodedYUV, Decoder};
use openh264::formats::YUVSource;
use thiserror::Error;

/// Why a keyframe gave no thumbnail.
#[derive(Debug, Error)]
pub enum ThumbnailError {
    /// openh264 could not start or refused the picture.
    #[error("decoding the keyframe: {0}")]
    Decode(String),
    /// The access unit held no complete picture.
    #[error("the keyframe decoded to no picture")]
    NoPicture,
    /// The JPEG writer failed.
    #[error("writing the JPEG: {0}")]
    Encode(String),
}

/// A JPEG (quality 80) of the picture in one H.264 access unit that starts
/// with SPS and PPS and holds an IDR picture, given as 4-byte
/// length-prefixed NAL units (AVCC, as the depacketizer and the muxer hold
/// frames), scaled down to at most `max_width` pixels wide.
pub fn h264_jpeg(avcc_access_unit: &[u8], max_width: u32) -> Result<Vec<u8>, ThumbnailError> {
    let annexb = avcc_to_annexb(avcc_access_unit);
    let mut decoder = Decoder::new().map_err(|e| ThumbnailError::Decode(e.to_string()))?;
    let (w, h, rgb) = {
        let picture = decoder
            .decode(&annexb)
            .map_err(|e| ThumbnailError::Decode(e.to_string()))?;
        match picture {
            Some(p) => rgb_of(&p),
            None => {
                let mut rest = decoder
                    .flush_remaining()
                    .map_err(|e| ThumbnailError::Decode(e.to_string()))?;
                let p = rest.pop().ok_or(ThumbnailError::NoPicture)?;
                rgb_of(&p)
            }
        }
    };
    jpeg_of(&rgb, w, h, max_width)
}

/// [`h264_jpeg`] for a VP8 keyframe (the frame as depacketized, its
/// uncompressed header first).
pub fn vp8_jpeg(keyframe: &[u8], max_width: u32) -> Result<Vec<u8>, ThumbnailError> {
    // RIFF, size, WEBP, then one `VP8 ` chunk (padded to even).
    let len = u32::try_from(keyframe.len())
        .ok()
        .filter(|n| *n < u32::MAX - 64)
        .ok_or_else(|| ThumbnailError::Decode("keyframe too large".into()))?;
    let pad = len % 2;
    let mut webp = Vec::with_capacity(keyframe.len() + 21);
    webp.extend_from_slice(b"RIFF");
    webp.extend_from_slice(&(4 + 8 + len + pad).to_le_bytes());
    webp.extend_from_slice(b"WEBPVP8 ");
    webp.extend_from_slice(&len.to_le_bytes());
    webp.extend_from_slice(keyframe);
    if pad == 1 {
        webp.push(0);
    }
    let decode = |e: image_webp::DecodingError| ThumbnailError::Decode(e.to_string());
    let mut decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(webp)).map_err(decode)?;
    let (w, h) = decoder.dimensions();
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| ThumbnailError::Decode("picture too large".into()))?;
    let mut pixels = vec![0u8; size];
    decoder.read_image(&mut pixels).map_err(decode)?;
    let rgb = if decoder.has_alpha() {
        pixels
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect()
    } else {
        pixels
    };
    jpeg_of(&rgb, w as usize, h as usize, max_width)
}

/// The JPEG of an RGB picture, scaled down to at most `max_width` wide.
fn jpeg_of(rgb: &[u8], w: usize, h: usize, max_width: u32) -> Result<Vec<u8>, ThumbnailError> {
    let (tw, th, small) = shrink(rgb, w, h, max_width.max(16) as usize);
    let mut out = Vec::new();
    let tw = u16::try_from(tw).map_err(|_| ThumbnailError::Encode("too wide".into()))?;
    let th = u16::try_from(th).map_err(|_| ThumbnailError::Encode("too tall".into()))?;
    Encoder::new(&mut out, 80)
        .encode(&small, tw, th, ColorType::Rgb)
        .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
    Ok(out)
}

fn rgb_of(p: &DecodedYUV<'_>) -> (usize, usize, Vec<u8>) {
    let (w, h) = p.dimensions();
    let mut rgb = vec![0u8; w * h * 3];
    p.write_rgb8(&mut rgb);
    (w, h, rgb)
}

/// Length-prefixed NAL units to start-code separated ones; a truncated
/// last unit is dropped.
fn avcc_to_annexb(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    while data.len() >= 4 {
        let n = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let Some(nal) = data.get(4..4 + n) else { break };
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        data = &data[4 + n..];
    }
    out
}

/// Box-filtered downscale of an RGB picture to at most `max_w` wide (the
/// same aspect ratio); a picture that fits is returned as it is.
fn shrink(rgb: &[u8], w: usize, h: usize, max_w: usize) -> (usize, usize, Vec<u8>) {
    if w <= max_w || w == 0 || h == 0 {
        return (w, h, rgb.to_vec());
    }
    let tw = max_w;
    let th = (h * tw / w).max(1);
    let mut out = vec![0u8; tw * th * 3];
    for ty in 0..th {
        let (y0, y1) = (ty * h / th, ((ty + 1) * h / th).max(ty * h / th + 1));
        for tx in 0..tw {
            let (x0, x1) = (tx * w / tw, ((tx + 1) * w / tw).max(tx * w / tw + 1));
            let mut sum = [0u32; 3];
            for y in y0..y1.min(h) {
                for x in x0..x1.min(w) {
                    let i = (y * w + x) * 3;
                    for (c, s) in sum.iter_mut().enumerate() {
                        *s += u32::from(rgb[i + c]);
                    }
                }
            }
            let n = ((y1.min(h) - y0) * (x1.min(w) - x0)).max(1) as u32;
            let o = (ty * tw + tx) * 3;
            for (c, s) in sum.iter().enumerate() {
                out[o + c] = (s / n) as u8;
            }
        }
    }
    (tw, th, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::encoder::Encoder as H264Encoder;
    use openh264::formats::{RgbSliceU8, YUVBuffer};

    /// An IDR picture of `w`×`h`: red on top, blue below, as AVCC.
    fn keyframe(w: usize, h: usize) -> Vec<u8> {
        let mut rgb = vec![0u8; w * h * 3];
        for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
            let top = i / w < h / 2;
            px.copy_from_slice(if top { &[220, 20, 20] } else { &[20, 20, 220] });
        }
        let yuv = YUVBuffer::from_rgb_source(RgbSliceU8::new(&rgb, (w, h)));
        let mut enc = H264Encoder::new().expect("encoder");
        let annexb = enc.encode(&yuv).expect("encode").to_vec();
        // Annex B → AVCC.
        let mut avcc = Vec::new();
        let mut starts = Vec::new();
        let mut i = 0;
        while i + 3 <= annexb.len() {
            if annexb[i..].starts_with(&[0, 0, 1]) {
                starts.push(i + 3);
                i += 3;
            } else {
                i += 1;
            }
        }
        for (k, &s) in starts.iter().enumerate() {
            let mut end = starts.get(k + 1).map_or(annexb.len(), |&n| n - 3);
            while end > s && annexb[end - 1] == 0 {
                end -= 1;
            }
            avcc.extend_from_slice(&((end - s) as u32).to_be_bytes());
            avcc.extend_from_slice(&annexb[s..end]);
        }
        avcc
    }

    #[test]
    fn a_keyframe_becomes_a_small_jpeg_of_its_picture() {
        let jpeg = h264_jpeg(&keyframe(640, 360), 320).expect("a thumbnail");
        let mut d = jpeg_decoder::Decoder::new(&jpeg[..]);
        let px = d.decode().expect("a JPEG");
        let info = d.info().expect("info");
        assert_eq!((info.width, info.height), (320, 180));
        let at = |x: usize, y: usize| &px[(y * 320 + x) * 3..(y * 320 + x) * 3 + 3];
        let (top, bottom) = (at(160, 40), at(160, 140));
        assert!(top[0] > 150 && top[2] < 90, "top is red: {top:?}");
        assert!(
            bottom[2] > 150 && bottom[0] < 90,
            "bottom is blue: {bottom:?}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(h264_jpeg(&[0, 0, 0, 3, 0x65, 1, 2], 320).is_err());
        assert!(h264_jpeg(&[], 320).is_err());
        assert!(h264_jpeg(&[0, 0, 0, 200, 1], 320).is_err());
    }
}
