//! Drawing on RGB frames: lines, boxes, polygons, skeletons and text.
//!
//! Used by event snapshots (so an operator sees *why* an alert fired) and by
//! `replay --annotate` (so an operator tuning a rule sees why one did not).
//! A handful of straight lines and an 8×8 bitmap font (`font8x8`) cover it;
//! a drawing crate would bring a large dependency tree for the same result.
//! Coordinates come in normalised (0–1) like everything after `infer`.

use crate::infer::pose::Keypoint;
use crate::vocab::BBox;

pub(crate) type Rgb = [u8; 3];

pub const YELLOW: Rgb = [255, 210, 0];
pub const RED: Rgb = [255, 40, 40];
pub(crate) const GREEN: Rgb = [40, 220, 80];
pub(crate) const CYAN: Rgb = [0, 200, 255];
pub(crate) const WHITE: Rgb = [255, 255, 255];
pub(crate) const GREY: Rgb = [150, 150, 150];

/// COCO skeleton edges between keypoint indices.
const SKELETON: [(usize, usize); 16] = [
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (5, 6),
    (5, 7),
    (7, 9),
    (6, 8),
    (8, 10),
    (5, 11),
    (6, 12),
    (11, 12),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
];

/// A packed RGB frame to draw on.
pub struct Canvas<'a> {
    px: &'a mut [u8],
    w: u32,
    h: u32,
}

impl<'a> Canvas<'a> {
    /// `None` when `px` is shorter than `w * h * 3`.
    pub(crate) fn new(px: &'a mut [u8], w: u32, h: u32) -> Option<Canvas<'a>> {
        (px.len() >= w as usize * h as usize * 3).then_some(Canvas { px, w, h })
    }

    fn put(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && x < self.w as i64 && y < self.h as i64 {
            let i = (y as usize * self.w as usize + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line between normalised points, `thick` pixels wide, clipped.
    pub(crate) fn line(&mut self, a: [f32; 2], b: [f32; 2], c: Rgb, thick: u32) {
        let (w, h) = (self.w as f32, self.h as f32);
        let (x0, y0, x1, y1) = (a[0] * w, a[1] * h, b[0] * w, b[1] * h);
        if ![x0, y0, x1, y1].iter().all(|v| v.is_finite()) {
            return;
        }
        // Bounded so a wild coordinate cannot make a huge loop.
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().clamp(1.0, 8192.0) as u32;
        for s in 0..=steps {
            let t = s as f32 / steps as f32;
            let (x, y) = ((x0 + (x1 - x0) * t) as i64, (y0 + (y1 - y0) * t) as i64);
            for dy in 0..thick as i64 {
                for dx in 0..thick as i64 {
                    self.put(x + dx, y + dy, c);
                }
            }
        }
    }

    pub fn rect(&mut self, b: &BBox, c: Rgb) {
        let (tl, tr, br, bl) = ([b.x1, b.y1], [b.x2, b.y1], [b.x2, b.y2], [b.x1, b.y2]);
        for (p, q) in [(tl, tr), (tr, br), (br, bl), (bl, tl)] {
            self.line(p, q, c, 2);
        }
    }

    /// A closed polygon.
    pub fn polygon(&mut self, pts: &[[f32; 2]], c: Rgb) {
        for i in 0..pts.len() {
            self.line(pts[i], pts[(i + 1) % pts.len()], c, 2);
        }
    }

    /// A skeleton: bones between keypoints that both score ≥ `min`.
    pub(crate) fn skeleton(&mut self, kps: &[Keypoint; 17], min: f32, c: Rgb) {
        for (a, b) in SKELETON {
            let (p, q) = (kps[a], kps[b]);
            if p.score >= min && q.score >= min {
                self.line([p.x, p.y], [q.x, q.y], c, 2);
            }
        }
        for k in kps.iter().filter(|k| k.score >= min && k.x.is_finite() && k.y.is_finite()) {
            let (x, y) = ((k.x * self.w as f32) as i64, (k.y * self.h as f32) as i64);
            for dy in -2..=2 {
                for dx in -2..=2 {
                    self.put(x + dx, y + dy, WHITE);
                }
            }
        }
    }

    /// ASCII text at pixel (x, y), scaled `scale` times, on a dark band so
    /// it reads on any background. Non-ASCII characters show as `?`.
    pub(crate) fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb, scale: u32) {
        let scale = scale.max(1) as i64;
        let width = s.chars().count() as i64 * 8 * scale;
        for yy in y - 1..y + 8 * scale + 1 {
            for xx in x - 1..x + width + 1 {
                if xx >= 0 && yy >= 0 && xx < self.w as i64 && yy < self.h as i64 {
                    let i = (yy as usize * self.w as usize + xx as usize) * 3;
                    for v in &mut self.px[i..i + 3] {
                        *v /= 3;
                    }
                }
            }
        }
        for (n, ch) in s.chars().enumerate() {
            let code = if ch.is_ascii() { ch as usize } else { '?' as usize };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        for sy in 0..scale {
                            for sx in 0..scale {
                                let px = x + (n as i64 * 8 + col) * scale + sx;
                                self.put(px, y + row as i64 * scale + sy, c);
                            }
                        }
                    }
                }
            }
        }
    }

    /// A small picture (packed RGB, `w` × `h`) in the top-right corner,
    /// scaled to a quarter of the frame's width, framed and labelled: the
    /// clear-lane reference beside the frame that differs from it.
    pub(crate) fn inset(&mut self, rgb: &[u8], w: u32, h: u32, label: &str) {
        if w == 0 || h == 0 || rgb.len() < (w * h * 3) as usize {
            return;
        }
        let iw = (self.w / 4).max(1) as i64;
        let ih = (iw * h as i64 / w as i64).max(1);
        let (x0, y0) = (self.w as i64 - iw - 4, 4i64);
        for y in -2..ih + 2 {
            for x in -2..iw + 2 {
                let c = if x < 0 || y < 0 || x >= iw || y >= ih {
                    WHITE
                } else {
                    let (sx, sy) = ((x * w as i64 / iw) as usize, (y * h as i64 / ih) as usize);
                    let i = (sy * w as usize + sx) * 3;
                    [rgb[i], rgb[i + 1], rgb[i + 2]]
                };
                self.put(x0 + x, y0 + y, c);
            }
        }
        self.text(x0, y0 + ih + 4, label, WHITE, 1);
    }

    /// A label at the top-left corner of a normalised box.
    pub(crate) fn label(&mut self, b: &BBox, s: &str, c: Rgb) {
        let (x, y) = ((b.x1 * self.w as f32) as i64, (b.y1 * self.h as f32) as i64 - 10);
        self.text(x, y.max(0), s, c, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_inside_and_clips_outside() {
        let mut px = vec![0u8; 20 * 10 * 3];
        let mut c = Canvas::new(&mut px, 20, 10).unwrap();
        c.line([0.0, 0.5], [2.0, 0.5], RED, 1); // runs off the right edge
        c.line([f32::NAN, 0.0], [1.0, 1.0], RED, 1); // ignored
        assert_eq!(&px[(5 * 20 + 10) * 3..(5 * 20 + 10) * 3 + 3], &RED);
        assert!(Canvas::new(&mut [0u8; 5], 20, 10).is_none());
    }

    #[test]
    fn text_sets_glyph_pixels() {
        let mut px = vec![100u8; 32 * 16 * 3];
        let mut c = Canvas::new(&mut px, 32, 16).unwrap();
        c.text(2, 2, "I", WHITE, 1);
        let lit = px.chunks(3).filter(|p| p == &WHITE).count();
        assert!(lit > 5, "{lit} pixels of the glyph");
        // The background band is darkened, not left at 100.
        assert_eq!(px[(2 * 32 + 9) * 3], 33);
    }
}
