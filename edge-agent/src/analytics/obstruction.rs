//! The class-agnostic obstruction cue: does a lane look different from the
//! way it looks when clear?
//!
//! Fire-escape lanes are mostly blocked by things no detector names (stacked
//! goods, covered e-bikes, bins), and seen from above detectors misname even
//! cars. So besides the detector's objects a lane can compare itself with a
//! **clear-lane reference**, learned from quiet frames, cell by cell:
//!
//! - the frame is the 160-px YCbCr thumbnail the fire path already makes
//!   ([`ColourThumb`]); the lane is the grid cells (8×8 px) whose centre lies
//!   in its polygon;
//! - a cell *differs* when its structure changed (normalised
//!   cross-correlation of its luma with the reference's, which ignores gain
//!   and offset: a light change is not a difference), when texture appeared
//!   on a flat cell or vanished from a textured one, when its normalised
//!   colour moved, or — for flat cells — when its brightness moved against
//!   the lane's overall gain;
//! - cells under a person or a moving object, and cells that changed since
//!   the previous analysed frame, are left out: passers-by are no blockage;
//! - occupancy is the fraction of the remaining lane cells that differ.
//!
//! The reference is kept per light regime (day and night, by frame
//! brightness), learned from
//! frames where the lane is quiet — nothing masked, nothing moving — over
//! `learn_s`, and then follows slow changes (the sun moving) while the lane
//! reads clear. An operator can also say "the lane is clear now"
//! ([`ObstructionCue::set_reference`]). References are plain thumbnails, so
//! they persist as small PNG files ([`Plane::to_png`]).
//!
//! This module owns the cue only; the lane rule decides what occupancy over
//! how long is a blockage.

use std::path::{Path, PathBuf};

use super::flicker::ColourThumb;
use crate::config::ObstructionParams;
use crate::vocab::BBox;
use crate::vocab::Polygon;

/// Cell side in thumbnail pixels (a 160-px thumbnail has 20 columns).
pub(crate) const CELL: u32 = 8;

/// Which reference a frame is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Light {
    Day,
    Night,
}

impl Light {
    pub(crate) const ALL: [Light; 2] = [Light::Day, Light::Night];

    fn index(self) -> usize {
        self as usize
    }

    /// Night when the frame is dark. Brightness only: colour would flip
    /// with the scene (grey asphalt reads as a colourless IR image until a
    /// red car parks on it, and that car must not pick the other reference).
    pub(crate) fn of(thumb: &ColourThumb, night_luma: f32) -> Light {
        let n = thumb.px.len().max(1) as f32;
        let luma = thumb.px.iter().map(|p| p[0] as f32).sum::<f32>() / n;
        if luma < night_luma {
            Light::Night
        } else {
            Light::Day
        }
    }
}

/// A reference image: the thumbnail's three planes as running means.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plane {
    pub(crate) w: u32,
    pub(crate) h: u32,
    /// `[y, cb, cr]` per pixel.
    pub(crate) px: Vec<[f32; 3]>,
}

impl Plane {
    fn from_thumb(t: &ColourThumb) -> Plane {
        Plane { w: t.w, h: t.h, px: t.px.iter().map(|p| [p[0] as f32, p[1] as f32, p[2] as f32]).collect() }
    }

    /// Moves towards `t` by `alpha` (0–1).
    fn blend(&mut self, t: &ColourThumb, alpha: f32) {
        for (r, p) in self.px.iter_mut().zip(&t.px) {
            for c in 0..3 {
                r[c] += alpha * (p[c] as f32 - r[c]);
            }
        }
    }

    /// The reference as a PNG (Y, Cb, Cr in the R, G, B channels), for the
    /// state folder.
    pub(crate) fn to_png(&self) -> Option<Vec<u8>> {
        let raw: Vec<u8> = self.px.iter().flat_map(|p| p.map(|v| v.round().clamp(0.0, 255.0) as u8)).collect();
        let img = image::RgbImage::from_raw(self.w, self.h, raw)?;
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).ok()?;
        Some(out.into_inner())
    }

    /// The reference as packed RGB (for the snapshot's inset).
    pub(crate) fn to_rgb(&self) -> Vec<u8> {
        self.px
            .iter()
            .flat_map(|&[y, cb, cr]| {
                let (cb, cr) = (cb - 128.0, cr - 128.0);
                [y + 1.402 * cr, y - 0.344_136 * cb - 0.714_136 * cr, y + 1.772 * cb].map(|v| v.clamp(0.0, 255.0) as u8)
            })
            .collect()
    }

    /// Reads what [`Plane::to_png`] wrote.
    pub(crate) fn from_png(bytes: &[u8]) -> Option<Plane> {
        let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).ok()?.to_rgb8();
        let (w, h) = img.dimensions();
        Some(Plane { w, h, px: img.pixels().map(|p| p.0.map(|v| v as f32)).collect() })
    }
}

/// One reference slot: learning, then in use.
#[derive(Debug, Clone, Default)]
struct Slot {
    plane: Option<Plane>,
    /// While learning: the first quiet frame's time and the frames so far.
    learning: Option<(f64, u32)>,
    ready: bool,
    /// When the reference was last compared (for the adaptation rate).
    last: Option<f64>,
}

/// One grid cell: its pixel rectangle in the thumbnail.
#[derive(Debug, Clone, Copy)]
struct Cell {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

/// What the cue reads on one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Fraction of the considered lane cells that differ from the reference.
    pub(crate) occupancy: f32,
    /// The differing cells, as normalised boxes (for the snapshot's mask).
    pub(crate) changed: Vec<BBox>,
    /// Lane cells compared (the rest were masked or moving).
    pub(crate) considered: usize,
    /// Lane cells in all.
    pub(crate) cells: usize,
    pub(crate) light: Light,
}

/// The cue for one lane. Feed it every analysed frame of the lane.
#[derive(Debug, Clone)]
pub struct ObstructionCue {
    params: ObstructionParams,
    polygon: Polygon,
    grid: (u32, u32),
    cells: Vec<Cell>,
    slots: [Slot; 2],
    prev: Option<ColourThumb>,
    /// Per lane cell: when it last moved.
    moved_at: Vec<f64>,
    /// Set when a reference changed since [`ObstructionCue::take_changed`].
    dirty: bool,
    /// When the references were last saved ([`ObstructionCue::save_due`]).
    saved_at: Option<f64>,
    /// The reference follows the scene only while occupancy is at most
    /// this (the lane rule sets half its `min_occupancy`).
    adapt_below: f32,
}

impl ObstructionCue {
    pub fn new(polygon: Polygon, params: ObstructionParams) -> ObstructionCue {
        ObstructionCue {
            params,
            polygon,
            grid: (0, 0),
            cells: Vec::new(),
            slots: Default::default(),
            prev: None,
            moved_at: Vec::new(),
            dirty: false,
            saved_at: None,
            adapt_below: 0.0,
        }
    }

    /// Lets the reference follow the scene while occupancy is at most
    /// `occupancy`, so a few stale cells (someone who stood there while it
    /// learnt) heal, while a blockage is never learnt in.
    pub(crate) fn adapt_below(&mut self, occupancy: f32) {
        self.adapt_below = occupancy;
    }

    /// New thresholds or polygon from a reload; the references stay.
    pub(crate) fn reconfigure(&mut self, polygon: Polygon, params: ObstructionParams) {
        self.params = params;
        self.polygon = polygon;
        self.grid = (0, 0);
    }

    /// Compares `thumb` with the reference for its light, learning or
    /// following it when the lane is quiet. `masks` are normalised boxes to
    /// leave out (tracked people, moving objects). `None` while there is no
    /// reference for this light yet.
    pub fn observe(&mut self, t: f64, thumb: &ColourThumb, masks: &[BBox]) -> Option<Reading> {
        if thumb.w == 0 || thumb.h == 0 {
            return None;
        }
        self.layout(thumb.w, thumb.h);
        let light = Light::of(thumb, self.params.night_luma);
        let moving = self.moving(t, thumb);
        let free: Vec<bool> = self
            .cells
            .iter()
            .zip(&moving)
            .map(|(c, &m)| !m && !masks.iter().any(|b| overlaps(b, c, thumb.w, thumb.h)))
            .collect();
        // Quiet: at least 90 % of the lane is unmasked and still, so a
        // corner that never stops moving (a flag, a tree, a screen) does not
        // keep the lane from ever learning.
        let quiet = free.iter().filter(|&&f| f).count() * 10 >= free.len() * 9;
        self.prev.get_or_insert_with(ColourThumb::default).clone_from(thumb);

        let p = self.params;
        let slot = &mut self.slots[light.index()];
        let usable = slot.ready && slot.plane.as_ref().is_some_and(|r| r.w == thumb.w && r.h == thumb.h);
        if !usable {
            if quiet {
                self.dirty |= learn(slot, t, thumb, p.learn_s);
            } else {
                slot.learning = None;
            }
            return None;
        }
        let reference = slot.plane.as_ref()?;
        let gain = lane_gain(&self.cells, &free, thumb, reference);
        let mut changed = Vec::new();
        let mut considered = 0;
        for (c, &f) in self.cells.iter().zip(&free) {
            if !f {
                continue;
            }
            considered += 1;
            if differs(c, thumb, reference, gain, &p) {
                changed.push(cell_box(c, thumb.w, thumb.h));
            }
        }
        let occupancy = if considered == 0 { 0.0 } else { changed.len() as f32 / considered as f32 };
        // Follow slow changes only while the lane reads clear and quiet, so
        // an object that stays is never learnt into the reference.
        if quiet && occupancy <= self.adapt_below && p.adapt_s > 0.0 {
            let alpha = slot.last.map_or(0.0, |last| ((t - last) / p.adapt_s).clamp(0.0, 1.0)) as f32;
            if let Some(r) = slot.plane.as_mut() {
                r.blend(thumb, alpha);
            }
            self.dirty = true;
        }
        slot.last = Some(t);
        Some(Reading { occupancy, changed, considered, cells: self.cells.len(), light })
    }

    /// "The lane is clear now": `thumb` becomes the reference for its
    /// light, in use at once.
    pub fn set_reference(&mut self, t: f64, thumb: &ColourThumb) -> Light {
        let light = Light::of(thumb, self.params.night_luma);
        self.slots[light.index()] =
            Slot { plane: Some(Plane::from_thumb(thumb)), learning: None, ready: true, last: Some(t) };
        self.dirty = true;
        light
    }

    /// Installs a saved reference (from the state folder at start).
    pub(crate) fn load_reference(&mut self, light: Light, plane: Plane) {
        self.slots[light.index()] = Slot { plane: Some(plane), learning: None, ready: true, last: None };
    }

    /// The reference in use for `light`.
    pub(crate) fn reference(&self, light: Light) -> Option<&Plane> {
        self.references().find(|(l, _)| *l == light).map(|(_, p)| p)
    }

    /// The references in use, to save.
    pub(crate) fn references(&self) -> impl Iterator<Item = (Light, &Plane)> {
        Light::ALL.into_iter().filter_map(|l| {
            let s = &self.slots[l.index()];
            s.ready.then_some(()).and(s.plane.as_ref()).map(|p| (l, p))
        })
    }

    /// Whether a reference changed since the last call (then save it).
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Whether to save now: a reference changed, and the last save is at
    /// least `every_s` old (a reference that follows the light changes a
    /// little on every clear frame; the disk needs it now and then).
    pub(crate) fn save_due(&mut self, t: f64, every_s: f64) -> bool {
        if !self.dirty || self.saved_at.is_some_and(|s| t - s < every_s) {
            return false;
        }
        self.dirty = false;
        self.saved_at = Some(t);
        true
    }

    /// Writes the references in use to `dir` ([`reference_path`]), each
    /// atomically (a crash never leaves half a PNG).
    pub(crate) fn save(&self, dir: &Path, camera: &str, lane: &str) -> std::io::Result<()> {
        for (light, plane) in self.references() {
            let path = reference_path(dir, camera, lane, light);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let png = plane.to_png().ok_or_else(|| std::io::Error::other("PNG encoding failed"))?;
            let tmp = path.with_extension("png.tmp");
            std::fs::write(&tmp, png)?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    /// Installs the references saved in `dir`; returns the lights found.
    pub(crate) fn load(&mut self, dir: &Path, camera: &str, lane: &str) -> Vec<Light> {
        let mut found = Vec::new();
        for light in Light::ALL {
            let path = reference_path(dir, camera, lane, light);
            if let Some(plane) = std::fs::read(&path).ok().and_then(|b| Plane::from_png(&b)) {
                self.load_reference(light, plane);
                found.push(light);
            }
        }
        found
    }

    fn layout(&mut self, w: u32, h: u32) {
        if self.grid == (w, h) {
            return;
        }
        self.grid = (w, h);
        self.cells.clear();
        for y0 in (0..h).step_by(CELL as usize) {
            for x0 in (0..w).step_by(CELL as usize) {
                let c = Cell { x0, y0, x1: (x0 + CELL).min(w), y1: (y0 + CELL).min(h) };
                let (cx, cy) = ((c.x0 + c.x1) as f32 / 2.0 / w as f32, (c.y0 + c.y1) as f32 / 2.0 / h as f32);
                if self.polygon.contains(cx, cy) {
                    self.cells.push(c);
                }
            }
        }
        self.prev = None;
        self.moved_at = vec![f64::NEG_INFINITY; self.cells.len()];
    }

    /// Per lane cell: is it left out as moving? It changed since the
    /// previous analysed frame, or did so within `motion_hold_s`.
    fn moving(&mut self, t: f64, thumb: &ColourThumb) -> Vec<bool> {
        let prev = self.prev.as_ref().filter(|p| p.w == thumb.w && p.h == thumb.h);
        let (hold, min) = (self.params.motion_hold_s, self.params.motion_min);
        self.cells
            .iter()
            .zip(&mut self.moved_at)
            .map(|(c, at)| {
                let moved_now = prev.is_some_and(|prev| {
                    let (mut sum, mut n) = (0.0f32, 0.0f32);
                    for_each_px(c, thumb.w, |i| {
                        sum += (thumb.px[i][0] as f32 - prev.px[i][0] as f32).abs();
                        n += 1.0;
                    });
                    sum / n.max(1.0) >= min
                });
                if moved_now {
                    *at = t;
                }
                moved_now || t - *at < hold
            })
            .collect()
    }
}

/// Where a lane's reference for `light` is kept:
/// `{dir}/{camera}/{lane}-{day|night}.png`, names escaped by [`file_name`]
/// so that two cameras (or lanes) never share a file.
pub(crate) fn reference_path(dir: &Path, camera: &str, lane: &str, light: Light) -> PathBuf {
    let light = match light {
        Light::Day => "day",
        Light::Night => "night",
    };
    dir.join(file_name(camera)).join(format!("{}-{light}.png", file_name(lane)))
}

/// A camera or lane name as one safe path component, without collisions:
/// `[A-Za-z0-9_-]` stay as they are and every other byte becomes `%XX`
/// (so `cam.1` → `cam%2E1`, `cam_1` → `cam_1`, `..` → `%2E%2E`). A plain
/// mapping of unsafe characters to `_` made `cam.1` and `cam_1` share
/// their references. The empty name (refused by the config) is `%`, which
/// nothing else becomes.
pub(crate) fn file_name(name: &str) -> String {
    if name.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Learning step; true when the slot became ready.
fn learn(slot: &mut Slot, t: f64, thumb: &ColourThumb, learn_s: f64) -> bool {
    match (&mut slot.plane, &mut slot.learning) {
        (Some(p), Some((since, n))) if p.w == thumb.w && p.h == thumb.h => {
            *n += 1;
            p.blend(thumb, 1.0 / *n as f32);
            if t - *since >= learn_s && *n >= 5 {
                slot.ready = true;
                slot.learning = None;
                slot.last = Some(t);
                return true;
            }
        }
        _ => {
            slot.plane = Some(Plane::from_thumb(thumb));
            slot.learning = Some((t, 1));
        }
    }
    false
}

fn for_each_px(c: &Cell, w: u32, mut f: impl FnMut(usize)) {
    for y in c.y0..c.y1 {
        for x in c.x0..c.x1 {
            f((y * w + x) as usize);
        }
    }
}

fn cell_box(c: &Cell, w: u32, h: u32) -> BBox {
    BBox {
        x1: c.x0 as f32 / w as f32,
        y1: c.y0 as f32 / h as f32,
        x2: c.x1 as f32 / w as f32,
        y2: c.y1 as f32 / h as f32,
    }
}

fn overlaps(b: &BBox, c: &Cell, w: u32, h: u32) -> bool {
    let cb = cell_box(c, w, h);
    b.x1 < cb.x2 && b.x2 > cb.x1 && b.y1 < cb.y2 && b.y2 > cb.y1
}

/// The lane's overall brightness gain against the reference: the median of
/// the free cells' mean-luma ratios. A global light change moves every cell
/// alike; an object moves a few.
fn lane_gain(cells: &[Cell], free: &[bool], thumb: &ColourThumb, reference: &Plane) -> f32 {
    let mut ratios: Vec<f32> = cells
        .iter()
        .zip(free)
        .filter(|(_, &f)| f)
        .map(|(c, _)| {
            let (mut a, mut b) = (0.0f32, 0.0f32);
            for_each_px(c, thumb.w, |i| {
                a += thumb.px[i][0] as f32;
                b += reference.px[i][0];
            });
            (a + 8.0) / (b + 8.0)
        })
        .collect();
    if ratios.is_empty() {
        return 1.0;
    }
    let mid = ratios.len() / 2;
    *ratios.select_nth_unstable_by(mid, |x, y| x.total_cmp(y)).1
}

/// Does this cell differ from the reference (beyond a light change)?
fn differs(c: &Cell, thumb: &ColourThumb, reference: &Plane, gain: f32, p: &ObstructionParams) -> bool {
    let mut n = 0.0f32;
    let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
    let (mut cba, mut cra, mut cbb, mut crb) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for_each_px(c, thumb.w, |i| {
        let [ya, cb1, cr1] = thumb.px[i].map(|v| v as f32);
        let [yb, cb2, cr2] = reference.px[i];
        n += 1.0;
        sa += ya;
        sb += yb;
        saa += ya * ya;
        sbb += yb * yb;
        sab += ya * yb;
        cba += cb1;
        cra += cr1;
        cbb += cb2;
        crb += cr2;
    });
    let (ma, mb) = (sa / n, sb / n);
    let va = (saa / n - ma * ma).max(0.0);
    let vb = (sbb / n - mb * mb).max(0.0);
    let (sda, sdb) = (va.sqrt(), vb.sqrt());
    // Colour, normalised by brightness: a light change scales Cb−128 and
    // Cr−128 with Y; an object of another colour moves them.
    let chroma = |cb: f32, cr: f32, y: f32| [(cb / n - 128.0) / (y + 16.0), (cr / n - 128.0) / (y + 16.0)];
    let (ca, cb) = (chroma(cba, cra, ma), chroma(cbb, crb, mb));
    if (ca[0] - cb[0]).abs() + (ca[1] - cb[1]).abs() > p.chroma_max {
        return true;
    }
    let flat = p.flat_std;
    match (sda < flat, sdb < flat) {
        // Both flat: only brightness against the lane's gain tells.
        (true, true) => ((ma + 8.0) / (gain * (mb + 8.0)) - 1.0).abs() > p.luma_max,
        // Texture appeared or vanished (by a clear margin, not noise).
        (true, false) | (false, true) => sda.max(sdb) > 2.0 * flat && sda.max(sdb) > 2.0 * sda.min(sdb),
        (false, false) => {
            let ncc = (sab / n - ma * mb) / (sda * sdb);
            ncc < p.ncc_min
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Synthetic thumbnails for the cue's tests and the lane rule's.
    use super::ColourThumb;

    pub(crate) const W: u32 = 160;
    pub(crate) const H: u32 = 90;

    /// A textured "pavement": a brick-like pattern with colour.
    pub(crate) fn scene(gain: f32) -> ColourThumb {
        let mut px = Vec::with_capacity((W * H) as usize);
        for y in 0..H {
            for x in 0..W {
                let brick = if (x / 6 + (y / 4) % 2 * 3) % 2 == 0 { 150.0 } else { 90.0 };
                let joint = if y % 4 == 0 || (x + (y / 4) % 2 * 3) % 6 == 0 { 60.0 } else { brick };
                let yy = (joint * gain).clamp(0.0, 255.0);
                // Cb/Cr offsets scale with brightness, as under real light.
                let cb = 128.0 - 10.0 * gain * joint / 120.0;
                let cr = 128.0 + 14.0 * gain * joint / 120.0;
                px.push([yy as u8, cb as u8, cr as u8]);
            }
        }
        ColourThumb { w: W, h: H, px }
    }

    /// `base` with a flat box (a stack of goods) over `[x0, x1) × [y0, y1)`.
    pub(crate) fn with_box(mut t: ColourThumb, x0: u32, y0: u32, x1: u32, y1: u32) -> ColourThumb {
        for y in y0..y1 {
            for x in x0..x1 {
                t.px[(y * W + x) as usize] = [200, 110, 135];
            }
        }
        t
    }
}

#[cfg(test)]
mod tests;
