//! The flicker check: does a candidate fire or smoke region behave like
//! flame or smoke, over the last couple of seconds of frames?
//!
//! The fire model looks at one frame; many things look like fire in one
//! frame (a neon sign, a lamp, tail lights, a sunset) and like smoke (steam,
//! vapour, fog on the lens). Over time they differ:
//!
//! - flame has flame colours (Çelik & Demirel's YCbCr rule) and its shape
//!   changes from frame to frame (flicker, 1–15 Hz);
//! - a lamp is static, and a sign that flashes does so *as a whole*: its lit
//!   area grows and shrinks but does not move;
//! - smoke keeps moving and keeps coming; exhaled vapour is one puff that
//!   disperses within seconds.
//!
//! So every frame the fire path analyses at the *camera's* rate (not the
//! model's 1–2 fps) becomes a small YCbCr thumbnail, and [`measure`] reads a
//! region's statistics from the ring. 160 px wide keeps a distant fire a
//! few pixels across while costing well under a millisecond per frame.

use std::collections::VecDeque;

use crate::infer::motion::{span, thumb_size};
use crate::vocab::BBox;

/// Width of every thumbnail; the height keeps the frame's aspect.
pub(crate) const THUMB_W: u32 = 160;

/// One YCbCr thumbnail (BT.601, full range), one `[y, cb, cr]` per pixel.
#[derive(Debug, Clone, Default)]
pub struct ColourThumb {
    pub w: u32,
    pub(crate) h: u32,
    pub px: Vec<[u8; 3]>,
}

impl ColourThumb {
    /// Refills from a packed RGB frame by area averaging.
    pub fn fill(&mut self, rgb: &[u8], width: u32, height: u32) {
        let (tw, th) = thumb_size(THUMB_W, width, height);
        self.w = tw;
        self.h = th;
        self.px.clear();
        self.px.resize(tw as usize * th as usize, [0, 128, 128]);
        if rgb.len() < width as usize * height as usize * 3 {
            return;
        }
        let w = width as usize;
        for ty in 0..th {
            let (y0, y1) = span(ty, th, height);
            let (y0, y1) = (y0 as usize, y1 as usize);
            for tx in 0..tw {
                let (x0, x1) = span(tx, tw, width);
                let (x0, x1) = (x0 as usize, x1 as usize);
                let (mut r, mut g, mut b) = (0u32, 0u32, 0u32);
                for y in y0..y1 {
                    for p in rgb[(y * w + x0) * 3..(y * w + x1) * 3].chunks_exact(3) {
                        r += p[0] as u32;
                        g += p[1] as u32;
                        b += p[2] as u32;
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)).max(1) as f32;
                let (r, g, b) = (r as f32 / n, g as f32 / n, b as f32 / n);
                let yy = 0.299 * r + 0.587 * g + 0.114 * b;
                let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
                let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
                self.px[(ty * tw + tx) as usize] = [yy as u8, cb.clamp(0.0, 255.0) as u8, cr.clamp(0.0, 255.0) as u8];
            }
        }
    }
}

/// The last seconds of thumbnails of one camera, with their times. Buffers
/// are reused: nothing allocates once the ring is full.
#[derive(Debug, Clone)]
pub struct FlickerHistory {
    ring: VecDeque<(f64, ColourThumb)>,
    keep_s: f64,
}

impl FlickerHistory {
    /// Keeps thumbnails for `keep_s` seconds.
    pub fn new(keep_s: f64) -> FlickerHistory {
        FlickerHistory { ring: VecDeque::new(), keep_s }
    }

    pub fn push(&mut self, t: f64, rgb: &[u8], width: u32, height: u32) {
        // Time going backwards (a replay restarting) starts a fresh ring.
        if self.ring.back().is_some_and(|(last, _)| t < *last) {
            self.ring.clear();
        }
        let mut thumb = match self.ring.front() {
            Some((old, _)) if t - old > self.keep_s => self.ring.pop_front().map(|(_, th)| th).unwrap_or_default(),
            _ => ColourThumb::default(),
        };
        thumb.fill(rgb, width, height);
        self.ring.push_back((t, thumb));
    }

    /// Thumbnails from the last `window_s` seconds up to `now`, oldest first.
    fn window(&self, now: f64, window_s: f64) -> impl Iterator<Item = &ColourThumb> {
        self.ring.iter().filter(move |(t, _)| *t <= now && now - t <= window_s + 1e-6).map(|(_, th)| th)
    }
}

/// What the check measured on one region.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct FlickerStats {
    /// Thumbnails measured.
    pub(crate) frames: usize,
    /// Mean fraction of the region's pixels with flame colour.
    pub(crate) colour: f32,
    /// Mean shape change of the flame-coloured area between consecutive
    /// thumbnails, 0–1: `2·min(|A∖B|, |B∖A|) / |A ∪ B|`. Growing or
    /// shrinking in place (a sign flashing) scores 0; moving pixels score.
    pub(crate) shape: f32,
    /// Mean non-uniform brightness change between consecutive thumbnails,
    /// in grey levels: `mean |d − median(d)|` over the region's pixels,
    /// where `d` is each pixel's change. A whole-region flash moves the
    /// median, not the residual.
    pub(crate) change: f32,
    /// Mean fraction of the pixels of the model's own box (not widened)
    /// with flame colour.
    pub(crate) colour_core: f32,
    /// The `change` measure over flame-coloured pixels only (either frame
    /// of a pair): a flame flickers where it is, a lamp or a lit wall does
    /// not, however small the flame is in its box.
    pub(crate) flame_change: f32,
    /// Mean brightness of the region (Y, 0–255): smoke must be visible.
    pub(crate) luma: f32,
    /// Mean colourfulness of the region, `|Cb − 128| + |Cr − 128|`: smoke
    /// is grey; signs, lamps and lit walls are not.
    pub(crate) chroma: f32,
    /// Mean local contrast of the region, `|∂Y/∂x| + |∂Y/∂y|` in grey
    /// levels per thumbnail pixel: smoke is soft and blurs what is behind
    /// it; people, signs and furniture have sharp edges.
    pub(crate) edges: f32,
}

/// Reads a region's statistics over the last `window_s` seconds. The region
/// is widened by half its size each way: flame and smoke move out of the box
/// the model drew on one frame.
pub fn measure(history: &FlickerHistory, now: f64, window_s: f64, region: &BBox) -> FlickerStats {
    let thumbs: Vec<&ColourThumb> = history.window(now, window_s).collect();
    let Some(first) = thumbs.first() else { return FlickerStats::default() };
    let (w, h) = (first.w, first.h);
    let (bw, bh) = (region.x2 - region.x1, region.y2 - region.y1);
    let grow = |v: f32, d: f32| v.clamp(0.0, 1.0) + d;
    let x0 = ((grow(region.x1, -bw / 2.0)).max(0.0) * w as f32) as usize;
    let y0 = ((grow(region.y1, -bh / 2.0)).max(0.0) * h as f32) as usize;
    let x1 = (((grow(region.x2, bw / 2.0)).min(1.0) * w as f32).ceil() as usize).min(w as usize);
    let y1 = (((grow(region.y2, bh / 2.0)).min(1.0) * h as f32).ceil() as usize).min(h as usize);
    if x1 <= x0 || y1 <= y0 {
        return FlickerStats::default();
    }
    let same = |t: &&ColourThumb| t.w == w && t.h == h && t.px.len() == (w * h) as usize;
    let thumbs: Vec<&ColourThumb> = thumbs.into_iter().filter(same).collect();
    let idx = |x: usize, y: usize| y * w as usize + x;
    // The model's own box inside the widened one: how much of what the
    // model called fire has flame colour (the widened box dilutes a small
    // or distant fire with its surroundings).
    let cx0 = ((region.x1.clamp(0.0, 1.0) * w as f32) as usize).clamp(x0, x1 - 1);
    let cy0 = ((region.y1.clamp(0.0, 1.0) * h as f32) as usize).clamp(y0, y1 - 1);
    let cx1 = ((region.x2.clamp(0.0, 1.0) * w as f32).ceil() as usize).clamp(cx0 + 1, x1);
    let cy1 = ((region.y2.clamp(0.0, 1.0) * h as f32).ceil() as usize).clamp(cy0 + 1, y1);
    let rw = x1 - x0;
    let mut masks: Vec<Vec<bool>> = Vec::with_capacity(thumbs.len());
    let (mut colour, mut luma, mut chroma, mut edges, mut edge_n) = (0.0, 0u64, 0u64, 0u64, 0u64);
    let mut colour_core = 0.0f32;
    for th in &thumbs {
        let mask = flame_mask(th, x0, y0, x1, y1);
        colour += mask.iter().filter(|&&m| m).count() as f32 / mask.len() as f32;
        let core: usize = (cy0..cy1)
            .map(|y| mask[(y - y0) * rw + cx0 - x0..(y - y0) * rw + cx1 - x0].iter().filter(|&&m| m).count())
            .sum();
        colour_core += core as f32 / ((cx1 - cx0) * (cy1 - cy0)) as f32;
        masks.push(mask);
        for y in y0..y1 {
            for &[py, cb, cr] in &th.px[idx(x0, y)..idx(x1, y)] {
                luma += py as u64;
                chroma += (cb as i32 - 128).unsigned_abs() as u64 + (cr as i32 - 128).unsigned_abs() as u64;
            }
        }
        for y in y0..y1.saturating_sub(1) {
            for x in x0..x1.saturating_sub(1) {
                let p = th.px[idx(x, y)][0] as i32;
                edges += ((th.px[idx(x + 1, y)][0] as i32 - p).unsigned_abs()
                    + (th.px[idx(x, y + 1)][0] as i32 - p).unsigned_abs()) as u64;
                edge_n += 1;
            }
        }
    }
    let samples = (thumbs.len() * (x1 - x0) * (y1 - y0)).max(1) as f32;
    let (mut shape, mut shape_n, mut change) = (0.0f32, 0usize, 0.0f32);
    let (mut flame_change, mut flame_n) = (0.0f32, 0usize);
    let mut diffs: Vec<i16> = Vec::with_capacity((x1 - x0) * (y1 - y0));
    let mut order: Vec<i16> = Vec::with_capacity((x1 - x0) * (y1 - y0));
    for k in 1..thumbs.len() {
        let (a, b) = (&masks[k - 1], &masks[k]);
        let (mut only_a, mut only_b, mut union) = (0usize, 0usize, 0usize);
        for (&ma, &mb) in a.iter().zip(b) {
            only_a += (ma && !mb) as usize;
            only_b += (mb && !ma) as usize;
            union += (ma || mb) as usize;
        }
        if union >= 2 {
            shape += 2.0 * only_a.min(only_b) as f32 / union as f32;
            shape_n += 1;
        }
        diffs.clear();
        for y in y0..y1 {
            for x in x0..x1 {
                let i = idx(x, y);
                diffs.push(thumbs[k].px[i][0] as i16 - thumbs[k - 1].px[i][0] as i16);
            }
        }
        order.clear();
        order.extend_from_slice(&diffs);
        let mid = order.len() / 2;
        let median = *order.select_nth_unstable(mid).1 as f32;
        change += diffs.iter().map(|&d| (d as f32 - median).abs()).sum::<f32>() / diffs.len() as f32;
        // The same residual where either frame shows flame colour: a flame
        // flickers there, a lamp does not, however small it is in the box.
        let (mut sum, mut n) = (0.0f32, 0usize);
        for ((&d, &ma), &mb) in diffs.iter().zip(a).zip(b) {
            if ma || mb {
                sum += (d as f32 - median).abs();
                n += 1;
            }
        }
        if n >= 2 {
            flame_change += sum / n as f32;
            flame_n += 1;
        }
    }
    let pairs = thumbs.len().saturating_sub(1).max(1) as f32;
    FlickerStats {
        frames: thumbs.len(),
        colour: colour / thumbs.len().max(1) as f32,
        shape: if shape_n > 0 { shape / shape_n as f32 } else { 0.0 },
        change: change / pairs,
        colour_core: colour_core / thumbs.len().max(1) as f32,
        flame_change: if flame_n > 0 { flame_change / flame_n as f32 } else { 0.0 },
        luma: luma as f32 / samples,
        chroma: chroma as f32 / samples,
        edges: edges as f32 / edge_n.max(1) as f32,
    }
}

/// Flame-coloured pixels of a thumbnail's sub-rectangle: Çelik & Demirel's
/// rule (2009: Y > Cb, Cr > Cb, Cr − Cb ≥ 40, and brighter, less blue and
/// redder than the thumbnail's mean), or a white-hot core: CCTV cameras
/// blow a flame's core out to near-white (Y ≥ 220, not bluish, far brighter
/// than the scene), which the colour rule alone misses. A lamp or a white
/// sign is white-hot too, but does not flicker: the motion measures decide.
fn flame_mask(th: &ColourThumb, x0: usize, y0: usize, x1: usize, y1: usize) -> Vec<bool> {
    let n = th.px.len().max(1) as u64;
    let (mut sy, mut scb, mut scr) = (0u64, 0u64, 0u64);
    for p in &th.px {
        sy += p[0] as u64;
        scb += p[1] as u64;
        scr += p[2] as u64;
    }
    let (my, mcb, mcr) = ((sy / n) as u8, (scb / n) as u8, (scr / n) as u8);
    let mut mask = Vec::with_capacity((x1 - x0) * (y1 - y0));
    for y in y0..y1 {
        for x in x0..x1 {
            let [py, cb, cr] = th.px[y * th.w as usize + x];
            let celik = py > cb && cr > cb && cr as i16 - cb as i16 >= 40 && py >= my && cb <= mcb && cr >= mcr;
            let white_hot = py >= 220 && cr >= cb && py as u16 >= my as u16 + 60;
            mask.push(celik || white_hot);
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 160;
    const H: u32 = 90;

    /// A grey frame with an orange blob at `(cx, cy)` of radius `r` pixels.
    fn frame(blobs: &[(f32, f32, f32)], orange: bool) -> Vec<u8> {
        let mut rgb = vec![90u8; (W * H * 3) as usize];
        for y in 0..H {
            for x in 0..W {
                for &(cx, cy, r) in blobs {
                    let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                    if d <= r && orange {
                        let i = ((y * W + x) * 3) as usize;
                        rgb[i..i + 3].copy_from_slice(&[250, 140, 20]);
                    }
                }
            }
        }
        rgb
    }

    fn region() -> BBox {
        BBox { x1: 0.35, y1: 0.3, x2: 0.65, y2: 0.7 }
    }

    /// A blob that moves and changes shape every frame (flame) scores on
    /// colour, shape and change; the same blob held still (a lamp) scores
    /// on colour only; switched on and off as a whole (a flashing sign), it
    /// has no shape change.
    #[test]
    fn flame_lamp_and_flashing_sign_differ() {
        let mut flame = FlickerHistory::new(3.0);
        let mut lamp = FlickerHistory::new(3.0);
        let mut sign = FlickerHistory::new(3.0);
        for i in 0..10 {
            let t = i as f64 * 0.2;
            let wobble = if i % 2 == 0 { (80.0, 42.0, 8.0) } else { (83.0, 47.0, 7.0) };
            flame.push(t, &frame(&[wobble], true), W, H);
            lamp.push(t, &frame(&[(80.0, 45.0, 8.0)], true), W, H);
            sign.push(t, &frame(&[(80.0, 45.0, 8.0)], i % 3 != 0), W, H);
        }
        let f = measure(&flame, 1.8, 2.0, &region());
        let l = measure(&lamp, 1.8, 2.0, &region());
        let s = measure(&sign, 1.8, 2.0, &region());
        assert_eq!(f.frames, 10);
        // The blob covers about 3 % of the widened region.
        assert!(f.colour > 0.02 && l.colour > 0.02, "{f:?} {l:?}");
        assert!(f.shape > 0.3, "flame {f:?}");
        assert!(f.change > 1.0, "flame {f:?}");
        assert_eq!(l.shape, 0.0, "lamp {l:?}");
        assert!(l.change < 0.5, "lamp {l:?}");
        assert!(s.shape < 0.01, "sign {s:?}");
        // Grey everywhere: no flame colour at all.
        let mut grey = FlickerHistory::new(3.0);
        for i in 0..5 {
            grey.push(i as f64 * 0.2, &frame(&[], true), W, H);
        }
        assert_eq!(measure(&grey, 0.8, 2.0, &region()).colour, 0.0);
    }

    /// The ring forgets thumbnails older than it keeps, and the window
    /// counts only the last `window_s` seconds.
    #[test]
    fn window_is_by_time() {
        let mut h = FlickerHistory::new(1.0);
        for i in 0..20 {
            h.push(i as f64 * 0.25, &frame(&[], false), W, H);
        }
        assert!(h.ring.len() <= 6, "{}", h.ring.len());
        assert_eq!(measure(&h, 4.75, 0.5, &region()).frames, 3);
        assert_eq!(measure(&h, 100.0, 0.5, &region()).frames, 0);
    }
}
