//! Downscaling I420 pictures: each output sample is the average of the
//! source samples its area covers (a box filter), which keeps fine detail
//! (the test pattern's digits, text in a screen share) from aliasing the
//! way point or bilinear sampling would at 2× and 4×. One pass per plane,
//! integer sums: every source sample is read once per rung.

/// An I420 picture with tight strides: `y` is `width × height`, `u` and
/// `v` are `⌈width/2⌉ × ⌈height/2⌉`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Picture {
    /// Luma width in samples.
    pub width: usize,
    /// Luma height in rows.
    pub height: usize,
    /// Luma plane.
    pub y: Vec<u8>,
    /// Cb plane.
    pub u: Vec<u8>,
    /// Cr plane.
    pub v: Vec<u8>,
}

/// A borrowed I420 picture with any strides (as a decoder hands it out).
#[derive(Debug, Clone, Copy)]
pub struct Planes<'a> {
    /// Luma width and height.
    pub width: usize,
    /// See `width`.
    pub height: usize,
    /// Planes.
    pub y: &'a [u8],
    /// See `y`.
    pub u: &'a [u8],
    /// See `y`.
    pub v: &'a [u8],
    /// Bytes from one row to the next, per plane.
    pub strides: (usize, usize, usize),
}

/// The planes are smaller than their size and strides say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an I420 plane is shorter than its size and stride say")]
pub struct ShortPlane;

impl Picture {
    /// A black picture of this size.
    pub fn new(width: usize, height: usize) -> Picture {
        let (cw, ch) = chroma(width, height);
        Picture {
            width,
            height,
            y: vec![16; width * height],
            u: vec![128; cw * ch],
            v: vec![128; cw * ch],
        }
    }

    /// Borrowed as [`Planes`].
    pub fn planes(&self) -> Planes<'_> {
        let (cw, _) = chroma(self.width, self.height);
        Planes {
            width: self.width,
            height: self.height,
            y: &self.y,
            u: &self.u,
            v: &self.v,
            strides: (self.width, cw, cw),
        }
    }
}

impl openh264::formats::YUVSource for Picture {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let (cw, _) = chroma(self.width, self.height);
        (self.width, cw, cw)
    }

    fn y(&self) -> &[u8] {
        &self.y
    }

    fn u(&self) -> &[u8] {
        &self.u
    }

    fn v(&self) -> &[u8] {
        &self.v
    }
}

/// The size of a rung whose picture fits in `box_w × box_h` with the
/// source's aspect ratio, rounded to even numbers; `None` when that is not
/// smaller than the source (a rung must cost less than the source).
pub fn fit(src_w: usize, src_h: usize, box_w: usize, box_h: usize) -> Option<(usize, usize)> {
    if src_w == 0 || src_h == 0 {
        return None;
    }
    // Scale by the tighter side, in integers: w = src_w * k, h = src_h * k.
    let (w, h) = if box_w * src_h <= box_h * src_w {
        (box_w, (src_h * box_w + src_w / 2) / src_w)
    } else {
        ((src_w * box_h + src_h / 2) / src_h, box_h)
    };
    let (w, h) = (w & !1, h & !1);
    (w >= 16 && h >= 16 && w < src_w && h < src_h).then_some((w, h))
}

/// Scales `src` into `dst` (whose `width` and `height` say the size
/// wanted; its planes are resized to fit).
pub fn scale_i420(src: &Planes<'_>, dst: &mut Picture) -> Result<(), ShortPlane> {
    let (scw, sch) = chroma(src.width, src.height);
    let (dcw, dch) = chroma(dst.width, dst.height);
    dst.y.resize(dst.width * dst.height, 0);
    dst.u.resize(dcw * dch, 0);
    dst.v.resize(dcw * dch, 0);
    let (sy, su, sv) = src.strides;
    scale_plane(
        src.y, src.width, src.height, sy, &mut dst.y, dst.width, dst.height,
    )?;
    scale_plane(src.u, scw, sch, su, &mut dst.u, dcw, dch)?;
    scale_plane(src.v, scw, sch, sv, &mut dst.v, dcw, dch)
}

/// Scales one plane of `sw × sh` samples (rows `stride` bytes apart) to
/// `dw × dh` in `dst` (tight rows), averaging the source samples each
/// output sample covers.
pub fn scale_plane(
    src: &[u8],
    sw: usize,
    sh: usize,
    stride: usize,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
) -> Result<(), ShortPlane> {
    if dw == 0 || dh == 0 {
        return Ok(());
    }
    let fits = sw > 0 && sh > 0 && stride >= sw && src.len() >= (sh - 1) * stride + sw;
    if !fits || dst.len() < dw * dh {
        return Err(ShortPlane);
    }
    let xs = spans(sw, dw);
    let ys = spans(sh, dh);
    let mut acc = vec![0u32; dw];
    for (out, &(y0, y1)) in dst.chunks_exact_mut(dw).zip(&ys) {
        acc.fill(0);
        for row in src[y0 * stride..].chunks(stride).take(y1 - y0) {
            for (a, &(x0, x1)) in acc.iter_mut().zip(&xs) {
                *a += row[x0..x1].iter().map(|&p| u32::from(p)).sum::<u32>();
            }
        }
        let rows = (y1 - y0) as u32;
        for ((d, &a), &(x0, x1)) in out.iter_mut().zip(&acc).zip(&xs) {
            let n = rows * (x1 - x0) as u32;
            *d = ((a + n / 2) / n) as u8;
        }
    }
    Ok(())
}

/// For each of `dst` output samples, the range of the `src` source samples
/// it covers (at least one).
fn spans(src: usize, dst: usize) -> Vec<(usize, usize)> {
    (0..dst)
        .map(|i| {
            let a = (i * src / dst).min(src - 1);
            let b = ((i + 1) * src / dst).clamp(a + 1, src);
            (a, b)
        })
        .collect()
}

/// The chroma planes' size for a luma size.
fn chroma(width: usize, height: usize) -> (usize, usize) {
    (width.div_ceil(2), height.div_ceil(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_averages_each_two_by_two_block() {
        // 4x2: blocks [10 20 / 30 40] and [0 0 / 0 255].
        let src = [10, 20, 0, 0, 30, 40, 0, 255];
        let mut dst = [0u8; 2];
        scale_plane(&src, 4, 2, 4, &mut dst, 2, 1).unwrap();
        assert_eq!(dst, [25, 64]);
    }

    #[test]
    fn a_stride_wider_than_the_picture_is_not_read_as_picture() {
        // 2x2 picture in rows of 4: the padding (99) must not leak in.
        let src = [100, 100, 99, 99, 100, 100, 99, 99];
        let mut dst = [0u8; 1];
        scale_plane(&src, 2, 2, 4, &mut dst, 1, 1).unwrap();
        assert_eq!(dst, [100]);
    }

    #[test]
    fn quartering_a_720p_picture_keeps_its_pattern() {
        // Vertical stripes 4 px wide, alternating 0 and 200: at 1/4 each
        // output column covers exactly one stripe.
        let (w, h) = (1280, 720);
        let mut src = Picture::new(w, h);
        for (i, p) in src.y.iter_mut().enumerate() {
            *p = if (i % w) / 4 % 2 == 0 { 0 } else { 200 };
        }
        let mut dst = Picture {
            width: 320,
            height: 180,
            ..Picture::default()
        };
        scale_i420(&src.planes(), &mut dst).unwrap();
        assert_eq!(dst.y.len(), 320 * 180);
        assert_eq!(dst.u.len(), 160 * 90);
        for row in dst.y.chunks(320) {
            for (x, &p) in row.iter().enumerate() {
                assert_eq!(p, if x % 2 == 0 { 0 } else { 200 }, "column {x}");
            }
        }
        assert!(dst.u.iter().chain(&dst.v).all(|&c| c == 128));
    }

    #[test]
    fn a_non_integer_ratio_covers_every_source_sample_once() {
        // 5 -> 2: spans [0,2) and [2,5).
        assert_eq!(spans(5, 2), [(0, 2), (2, 5)]);
        let src = [0, 0, 90, 90, 90];
        let mut dst = [0u8; 2];
        scale_plane(&src, 5, 1, 5, &mut dst, 2, 1).unwrap();
        assert_eq!(dst, [0, 90]);
    }

    #[test]
    fn short_planes_are_an_error_not_a_panic() {
        let mut dst = [0u8; 4];
        assert_eq!(
            scale_plane(&[0; 10], 4, 4, 4, &mut dst, 2, 2),
            Err(ShortPlane)
        );
        assert_eq!(
            scale_plane(&[0; 16], 4, 4, 3, &mut dst, 2, 2),
            Err(ShortPlane)
        );
    }

    #[test]
    fn rungs_fit_the_source_aspect_and_never_exceed_it() {
        assert_eq!(fit(1280, 720, 640, 360), Some((640, 360)));
        assert_eq!(fit(1280, 720, 320, 180), Some((320, 180)));
        // 4:3 into a 16:9 box: the height decides.
        assert_eq!(fit(640, 480, 640, 360), Some((480, 360)));
        // A source no bigger than the box gets no rung.
        assert_eq!(fit(640, 360, 640, 360), None);
        assert_eq!(fit(320, 180, 640, 360), None);
        assert_eq!(fit(0, 0, 640, 360), None);
        // Odd results round down to even.
        assert_eq!(fit(1920, 1080, 200, 200), Some((200, 112)));
    }
}
