//! Letterbox preprocessing: an RGB frame into a model's input tensor.
//!
//! The frame is resized with its aspect ratio kept so its long side fits
//! the model input, then padded. Squashing a 16:9 frame into a square
//! measurably breaks the detectors we ship (see `models/models.toml`), so
//! this is not optional.
//!
//! The resize is our own, because it is the hot path's first step and a
//! general resizer rebuilt its filter tables on every call (656 heap
//! allocations a frame). It is a separable triangle (bilinear) filter whose
//! support widens with the scale factor, as PIL's and `fast_image_resize`'s
//! are, so a 1080p frame shrunk 4.6× is averaged, not aliased. The filter
//! taps are computed once per frame geometry. Each output row is filtered
//! vertically into one row of floats, then horizontally, and each value is
//! normalised and written straight into the tensor: no intermediate image,
//! no rounding between the passes.
//!
//! On x86-64 with AVX2 (most edge boxes) both passes have hand-vectorised
//! copies, picked at run time, because the plain loops left most of the
//! vector units idle: the vertical pass multiplies bytes by 16-bit weights
//! sixteen at a time, and the horizontal pass filters two output rows in
//! the two halves of one register. The plain loops stay for other CPUs, and
//! a test holds the two within a twentieth of a level at the agent's
//! scales.
//!
//! Per camera, one [`Preprocessor`] owns the taps, the row and the tensor
//! and reuses them on every frame: the hot path does not allocate.

use super::InferError;

/// Memory order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `[1, 3, H, W]`: planar, as PyTorch exports.
    Nchw,
    /// `[1, H, W, 3]`: interleaved, as TensorFlow exports.
    Nhwc,
}

/// Element type of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Element {
    F32,
    /// Raw 0–255 levels as `int32` (the TF.js MoveNet export).
    I32,
}

/// How a model wants its pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    /// Input width and height in pixels (detectors are square; pose models
    /// may keep the stream's aspect ratio).
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) layout: Layout,
    pub(crate) element: Element,
    /// Feed channels as B, G, R instead of R, G, B.
    pub(crate) bgr: bool,
    /// Per model channel (in model order): value = (pixel − mean) / std.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Grey level of the padding, in raw pixel units.
    pub(crate) pad: u8,
    /// Centre the image in the square (Ultralytics) or put it top-left
    /// (YOLOX, NanoDet).
    pub(crate) centered: bool,
}

impl InputSpec {
    /// The input tensor's shape for `batch` frames, as ONNX Runtime takes it.
    pub(crate) fn dims(&self, batch: usize) -> [i64; 4] {
        let (n, w, h) = (batch as i64, self.width as i64, self.height as i64);
        match self.layout {
            Layout::Nchw => [n, 3, h, w],
            Layout::Nhwc => [n, h, w, 3],
        }
    }

    /// Values in one frame's tensor.
    pub(crate) fn values(&self) -> usize {
        (self.width * self.height * 3) as usize
    }
}

/// The geometry of one letterbox: maps model pixels back to the frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub(crate) scale: f32,
    pub(crate) pad_x: f32,
    pub(crate) pad_y: f32,
    pub(crate) frame_w: u32,
    pub(crate) frame_h: u32,
}

impl Letterbox {
    /// Fits a frame into a square `size` input.
    pub fn new(frame_w: u32, frame_h: u32, size: u32, centered: bool) -> Letterbox {
        Letterbox::fit(frame_w, frame_h, size, size, centered)
    }

    /// Fits a frame into an `in_w` × `in_h` input.
    pub(crate) fn fit(frame_w: u32, frame_h: u32, in_w: u32, in_h: u32, centered: bool) -> Letterbox {
        let scale = (in_w as f32 / frame_w as f32).min(in_h as f32 / frame_h as f32);
        let (w, h) = Letterbox::scaled(frame_w, frame_h, scale, in_w, in_h);
        let (pad_x, pad_y) = if centered { (((in_w - w) / 2) as f32, ((in_h - h) / 2) as f32) } else { (0.0, 0.0) };
        Letterbox { scale, pad_x, pad_y, frame_w, frame_h }
    }

    fn scaled(frame_w: u32, frame_h: u32, scale: f32, in_w: u32, in_h: u32) -> (u32, u32) {
        let w = ((frame_w as f32 * scale).round() as u32).clamp(1, in_w);
        let h = ((frame_h as f32 * scale).round() as u32).clamp(1, in_h);
        (w, h)
    }

    /// Size of the resized image inside a square `size` input.
    pub fn inner(&self, size: u32) -> (u32, u32) {
        self.inner_wh(size, size)
    }

    /// Size of the resized image inside an `in_w` × `in_h` input.
    pub(crate) fn inner_wh(&self, in_w: u32, in_h: u32) -> (u32, u32) {
        Letterbox::scaled(self.frame_w, self.frame_h, self.scale, in_w, in_h)
    }

    /// A box in model-input pixels → normalised frame coordinates, clamped.
    pub(crate) fn to_frame(self, x1: f32, y1: f32, x2: f32, y2: f32) -> super::BBox {
        let fx = |x: f32| ((x - self.pad_x) / self.scale / self.frame_w as f32).clamp(0.0, 1.0);
        let fy = |y: f32| ((y - self.pad_y) / self.scale / self.frame_h as f32).clamp(0.0, 1.0);
        super::BBox { x1: fx(x1), y1: fy(y1), x2: fx(x2), y2: fy(y2) }
    }
}

/// Reusable frame → tensor converter for one camera and one model.
pub struct Preprocessor {
    spec: InputSpec,
    /// Filter taps across and down, for the last frame geometry.
    taps_x: Taps,
    taps_y: Taps,
    /// Two output rows filtered vertically: `frame width * 3` floats each
    /// (and one of slack).
    rows: [Vec<f32>; 2],
    /// Two output rows' sums across, per pixel.
    sums: [Vec<[f32; 4]>; 2],
    /// The model input, `width * height * 3` values, for `Element::F32`.
    tensor: Vec<f32>,
    /// The same for `Element::I32` (the other one stays empty).
    tensor_i32: Vec<i32>,
    /// Per model channel: value = level * scale + offset.
    scale: [f32; 3],
    offset: [f32; 3],
    last: Option<Letterbox>,
}

impl Preprocessor {
    pub fn new(spec: InputSpec) -> Preprocessor {
        let n = spec.values();
        let (tensor, tensor_i32) = match spec.element {
            Element::F32 => (vec![0.0; n], Vec::new()),
            Element::I32 => (Vec::new(), vec![0; n]),
        };
        Preprocessor {
            spec,
            taps_x: Taps::default(),
            taps_y: Taps::default(),
            rows: [Vec::new(), Vec::new()],
            sums: [Vec::new(), Vec::new()],
            tensor,
            tensor_i32,
            scale: spec.std.map(|s| 1.0 / s),
            offset: [0, 1, 2].map(|c| -spec.mean[c] / spec.std[c]),
            last: None,
        }
    }

    pub(crate) fn spec(&self) -> &InputSpec {
        &self.spec
    }

    /// The tensor filled by the last [`Preprocessor::run`] (`Element::F32`).
    pub fn tensor(&self) -> &[f32] {
        &self.tensor
    }

    /// Lends the `Element::F32` tensor out, for a batched run on another
    /// thread; [`Preprocessor::put_tensor`] must give it back before the
    /// next [`Preprocessor::run`].
    pub(crate) fn take_tensor(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.tensor)
    }

    /// Returns the tensor [`Preprocessor::take_tensor`] lent.
    pub(crate) fn put_tensor(&mut self, tensor: Vec<f32>) {
        self.tensor = tensor;
    }

    /// The tensor filled by the last [`Preprocessor::run`] (`Element::I32`).
    pub(crate) fn tensor_i32(&self) -> &[i32] {
        &self.tensor_i32
    }

    /// The same, to adjust in place before the run (low-light stretch).
    pub(crate) fn tensor_i32_mut(&mut self) -> &mut [i32] {
        &mut self.tensor_i32
    }

    /// The tensor shape as ONNX Runtime takes it.
    pub(crate) fn dims(&self) -> [i64; 4] {
        self.spec.dims(1)
    }

    /// The tensor shape.
    pub fn shape(&self) -> [usize; 4] {
        self.dims().map(|d| d as usize)
    }

    /// Letterboxes a packed RGB frame (`width * height * 3` bytes) into the
    /// tensor and returns the geometry needed to map boxes back.
    pub fn run(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<Letterbox, InferError> {
        let need = width as usize * height as usize * 3;
        if width == 0 || height == 0 || rgb.len() < need {
            return Err(InferError::Preprocess(format!(
                "frame {width}x{height} needs {need} bytes of RGB, got {}",
                rgb.len()
            )));
        }
        let (in_w, in_h) = (self.spec.width, self.spec.height);
        let lb = Letterbox::fit(width, height, in_w, in_h, self.spec.centered);
        let (w, h) = lb.inner_wh(in_w, in_h);
        // Taps and padding only change when the geometry does.
        if self.last != Some(lb) {
            self.taps_x = Taps::new(width as usize, w as usize);
            self.taps_y = Taps::new(height as usize, h as usize);
            for row in &mut self.rows {
                // One float of slack: the horizontal pass reads pixels four
                // lanes wide.
                row.resize(width as usize * 3 + 1, 0.0);
                // Shrunk from a wider frame, it would hold an old value:
                // never read (the fourth lane is ignored), but keep it plain.
                row[width as usize * 3] = 0.0;
            }
            for sums in &mut self.sums {
                sums.resize(w as usize, [0.0; 4]);
            }
            self.fill_padding();
            self.last = Some(lb);
        }
        let geo = Placement {
            in_w: in_w as usize,
            plane: (in_w * in_h) as usize,
            ox: lb.pad_x as usize,
            oy: lb.pad_y as usize,
            // Source channel feeding model channel c.
            src_ch: if self.spec.bgr { [2, 1, 0] } else { [0, 1, 2] },
            layout: self.spec.layout,
            scale: self.scale,
            offset: self.offset,
        };
        let stride = width as usize * 3;
        let rgb = &rgb[..need];
        let (h, mut y) = (h as usize, 0);
        while y < h {
            // Two rows at a time where the CPU can filter them across
            // together; the last odd row alone.
            #[cfg(target_arch = "x86_64")]
            if y + 1 < h && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                let [ra, rb] = &mut self.rows;
                vertical(rgb, stride, &self.taps_y, y, &mut ra[..stride]);
                vertical(rgb, stride, &self.taps_y, y + 1, &mut rb[..stride]);
                let [sa, sb] = &mut self.sums;
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                unsafe { horizontal_pair_avx2([ra, rb], &self.taps_x, [sa, sb]) };
                self.emit(&geo, y, 0);
                self.emit(&geo, y + 1, 1);
                y += 2;
                continue;
            }
            vertical(rgb, stride, &self.taps_y, y, &mut self.rows[0][..stride]);
            let [sums, _] = &mut self.sums;
            match self.spec.element {
                Element::F32 => horizontal(&self.rows[0], &self.taps_x, &geo, y, sums, &mut self.tensor, |v| v),
                Element::I32 => {
                    horizontal(&self.rows[0], &self.taps_x, &geo, y, sums, &mut self.tensor_i32, |v| v.round() as i32)
                }
            }
            y += 1;
        }
        Ok(lb)
    }

    /// Sums `which` normalised into row `y` of the tensor.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn emit(&mut self, geo: &Placement, y: usize, which: usize) {
        let sums = &self.sums[which];
        match self.spec.element {
            Element::F32 => emit(sums, geo, y, &mut self.tensor, |v| v),
            Element::I32 => emit(sums, geo, y, &mut self.tensor_i32, |v| v.round() as i32),
        }
    }

    fn fill_padding(&mut self) {
        let plane = (self.spec.width * self.spec.height) as usize;
        let p = self.spec.pad as f32;
        let value: [f32; 3] = [0, 1, 2].map(|c| p * self.scale[c] + self.offset[c]);
        match self.spec.element {
            Element::F32 => fill(&mut self.tensor, value, plane, self.spec.layout),
            Element::I32 => fill(&mut self.tensor_i32, value.map(|v| v.round() as i32), plane, self.spec.layout),
        }
    }
}

/// The triangle filter's taps for one axis: output pixel `i` reads
/// `window` source pixels from `start[i]` with `weights[i * window..]`
/// (zero-padded, so every pixel has the same window and the inner loop a
/// fixed trip count).
#[derive(Debug, Default, Clone)]
struct Taps {
    start: Vec<usize>,
    weights: Vec<f32>,
    /// Per output pixel, its first nonzero tap's source pixel and the
    /// number of nonzero taps (the window is zero-padded).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    runs: Vec<(usize, usize)>,
    /// The run's weights in 1/65536ths, each repeated across sixteen 16-bit
    /// lanes (one load, no broadcast), `window` entries a pixel: what the
    /// integer vertical pass multiplies by.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    wide: Vec<[u16; 16]>,
    window: usize,
    /// One past the last source pixel any tap reads (≤ the source size).
    end: usize,
}

impl Taps {
    /// PIL's bilinear resampling taps from `src` pixels to `dst`: the
    /// triangle's support is scaled up when shrinking, so every source
    /// pixel contributes.
    fn new(src: usize, dst: usize) -> Taps {
        let scale = src as f64 / dst as f64;
        let filter_scale = scale.max(1.0);
        // The triangle's support is 1, widened by the shrink factor.
        let support = filter_scale;
        // Each output pixel's nonzero taps: its first source pixel and the
        // normalised weights.
        let runs: Vec<(usize, Vec<f32>)> = (0..dst)
            .map(|i| {
                let center = (i as f64 + 0.5) * scale;
                let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
                let hi = ((center + support + 0.5).floor() as usize).min(src);
                let taps: Vec<f64> = (lo..hi.max(lo))
                    .map(|p| (1.0 - ((p as f64 - center + 0.5) / filter_scale).abs()).max(0.0))
                    .collect();
                let sum: f64 = taps.iter().sum();
                // Only the nonzero run: the triangle's ends weigh nothing.
                let a = taps.iter().position(|&t| t > 0.0).unwrap_or(0);
                let b = taps.iter().rposition(|&t| t > 0.0).map_or(a, |k| k + 1);
                (lo + a, taps[a..b].iter().map(|&t| (t / sum) as f32).collect())
            })
            .collect();
        // The window is the longest run: every pixel gets the same fixed
        // trip count, and none pays for taps that weigh nothing (PIL's
        // window, ceil(support) * 2 + 1, is up to two taps longer).
        let window = runs.iter().map(|(_, w)| w.len()).max().unwrap_or(1).clamp(1, src.max(1));
        let mut start = Vec::with_capacity(dst);
        let mut weights = vec![0.0f32; dst * window];
        let mut wide = vec![[0u16; 16]; dst * window];
        for (i, (lo, run)) in runs.iter().enumerate() {
            // Keep the window inside the source: shift it left at the right
            // edge and put the taps where their pixels are.
            let first = (*lo).min(src - window);
            for (k, &v) in run.iter().enumerate() {
                weights[i * window + lo - first + k] = v;
                wide[i * window + k] = [(v as f64 * 65536.0).round().min(65535.0) as u16; 16];
            }
            start.push(first);
        }
        let end = start.iter().map(|&f| f + window).max().unwrap_or(0);
        let runs = runs.iter().map(|(lo, w)| (*lo, w.len())).collect();
        Taps { start, weights, runs, wide, window, end }
    }

    fn of(&self, i: usize) -> (usize, &[f32]) {
        (self.start[i], &self.weights[i * self.window..(i + 1) * self.window])
    }

    /// Output pixel `i`'s first nonzero source pixel and its run of
    /// 16-lane fixed weights.
    #[cfg(target_arch = "x86_64")]
    fn wide_of(&self, i: usize) -> (usize, &[[u16; 16]]) {
        let (first, n) = self.runs[i];
        (first, &self.wide[i * self.window..i * self.window + n])
    }
}

/// Output row `y` filtered down the source's columns into `row` (every
/// source column, all three channels; the one float past them stays 0).
///
/// This is most of the letterbox's arithmetic (a 1080p frame into 416: 15
/// million multiply-adds), so on x86-64 CPUs with AVX2 it runs in integers
/// ([`vertical_avx2`], for windows up to 256 taps: a 128× shrink);
/// elsewhere in floats the compiler vectorises.
fn vertical(rgb: &[u8], stride: usize, taps: &Taps, y: usize, row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if taps.window <= 256 && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { vertical_avx2(rgb, stride, taps, y, row) };
    }
    vertical_floats(rgb, stride, taps, y, row)
}

/// The vertical pass in 16-bit integers. Each byte goes into the high half
/// of a 16-bit lane (one unpack: the value times 256) and `vpmulhuw` takes
/// the high half of its product with the weight in 1/65536ths: the product
/// in 1/256ths of a level, sixteen at once, where floats need a widening, a
/// conversion and an FMA for eight. The widenings (shuffles, which share
/// one port) bound the float copy; this one needs fewer per multiply-add.
///
/// The sums cannot overflow: the rounded weights add up to at most
/// 65536 + n/2, so a sum is at most 255 × 256 + n/2, under 65536 while n
/// stays under 512 ([`vertical`] keeps windows over 256 taps on floats).
/// Each product is rounded down, by half a unit on average, which the
/// final step adds back; the error left is about n/512 of a level, at most
/// n/256: 0.02–0.04 for the 10 taps of 1080p into 416, 0.04–0.08 for a 4K
/// frame into 384.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn vertical_avx2(rgb: &[u8], stride: usize, taps: &Taps, y: usize, row: &mut [f32]) {
    use std::arch::x86_64::*;
    const BLOCK: usize = 64;
    let (first, wide) = taps.wide_of(y);
    let n = wide.len();
    let src = &rgb[first * stride..(first + n) * stride];
    let row = &mut row[..stride];
    let zero = _mm256_setzero_si256();
    let unit = _mm256_set1_ps(1.0 / 256.0);
    let bias = _mm256_set1_ps(n as f32 * 0.5 / 256.0);
    let mut col = 0;
    while col + BLOCK <= stride {
        // Columns 0-7|16-23 and 8-15|24-31 of each 32-byte half: the
        // unpacks work within 128-bit lanes.
        let mut acc = [zero; 4];
        // SAFETY: each load is 32 bytes at column col or col + 32 (col + 64
        // <= stride) of a row k < n, so inside `src`, which holds n rows;
        // each weight is one 32-byte array.
        unsafe {
            let mut p = src.as_ptr().add(col);
            for w in wide {
                let w = _mm256_loadu_si256(w.as_ptr() as *const __m256i);
                for half in 0..2 {
                    let a = _mm256_loadu_si256(p.add(32 * half) as *const __m256i);
                    let (lo, hi) = (_mm256_unpacklo_epi8(zero, a), _mm256_unpackhi_epi8(zero, a));
                    acc[2 * half] = _mm256_add_epi16(acc[2 * half], _mm256_mulhi_epu16(lo, w));
                    acc[2 * half + 1] = _mm256_add_epi16(acc[2 * half + 1], _mm256_mulhi_epu16(hi, w));
                }
                p = p.add(stride);
            }
        }
        for half in 0..2 {
            let (lo, hi) = (acc[2 * half], acc[2 * half + 1]);
            // 16 to 32 bits, then floats: columns 0-3|16-19, 4-7|20-23,
            // 8-11|24-27, 12-15|28-31.
            let f = [
                _mm256_unpacklo_epi16(lo, zero),
                _mm256_unpackhi_epi16(lo, zero),
                _mm256_unpacklo_epi16(hi, zero),
                _mm256_unpackhi_epi16(hi, zero),
            ]
            .map(|v| _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), unit, bias));
            // Back to column order: low halves hold columns 0-15, high
            // halves 16-31.
            let out = &mut row[col + 32 * half..col + 32 * half + 32];
            _mm256_storeu_ps(out[0..8].as_mut_ptr(), _mm256_permute2f128_ps(f[0], f[1], 0x20));
            _mm256_storeu_ps(out[8..16].as_mut_ptr(), _mm256_permute2f128_ps(f[2], f[3], 0x20));
            _mm256_storeu_ps(out[16..24].as_mut_ptr(), _mm256_permute2f128_ps(f[0], f[1], 0x31));
            _mm256_storeu_ps(out[24..32].as_mut_ptr(), _mm256_permute2f128_ps(f[2], f[3], 0x31));
        }
        col += BLOCK;
    }
    // The last columns (fewer than 64) in floats.
    let (first, weights) = taps.of(y);
    for (c, out) in row.iter_mut().enumerate().skip(col) {
        *out = weights.iter().enumerate().map(|(k, &w)| rgb[(first + k) * stride + c] as f32 * w).sum();
    }
}

/// The vertical pass in floats, for CPUs without AVX2.
fn vertical_floats(rgb: &[u8], stride: usize, taps: &Taps, y: usize, row: &mut [f32]) {
    // Eight AVX registers of sums: the per-tap cost (a bounds check, a
    // broadcast) is shared by 64 columns.
    const LANES: usize = 64;
    let (first, weights) = taps.of(y);
    // Only the taps that touch this row (the window is zero-padded).
    let lo = weights.iter().position(|&w| w != 0.0).unwrap_or(0);
    let hi = weights.iter().rposition(|&w| w != 0.0).map_or(0, |i| i + 1);
    let (weights, first) = (&weights[lo..hi], first + lo);
    let src = &rgb[first * stride..(first + weights.len()) * stride];
    // Column blocks outermost, so each block's sum stays in registers over
    // all the taps and is stored once.
    let mut col = 0;
    while col + LANES <= stride {
        let mut acc = [0.0f32; LANES];
        for (k, &wk) in weights.iter().enumerate() {
            let px: &[u8; LANES] = src[k * stride + col..k * stride + col + LANES].try_into().expect("in bounds");
            for j in 0..LANES {
                acc[j] += px[j] as f32 * wk;
            }
        }
        row[col..col + LANES].copy_from_slice(&acc);
        col += LANES;
    }
    for (c, out) in row.iter_mut().enumerate().take(stride).skip(col) {
        *out = weights.iter().enumerate().map(|(k, &wk)| src[k * stride + c] as f32 * wk).sum();
    }
}

/// Where the resized image goes in the tensor, and how values are made.
struct Placement {
    in_w: usize,
    plane: usize,
    ox: usize,
    oy: usize,
    src_ch: [usize; 3],
    layout: Layout,
    scale: [f32; 3],
    offset: [f32; 3],
}

/// A vertically filtered row filtered across into output row `y` of the
/// tensor, normalised, channels reordered.
///
/// Each tap adds a whole pixel at once (four lanes: R, G, B and the next
/// pixel's R, ignored), and four output pixels are summed side by side, so
/// the multiply-adds in flight do not wait on each other as one pixel's
/// running sum would.
fn horizontal<T: Copy>(
    row: &[f32],
    taps: &Taps,
    g: &Placement,
    y: usize,
    sums: &mut [[f32; 4]],
    tensor: &mut [T],
    convert: impl Fn(f32) -> T,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { horizontal_avx2(row, taps, g, y, sums, tensor, convert) };
    }
    horizontal_body::<T, false>(row, taps, g, y, sums, tensor, convert)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn horizontal_avx2<T: Copy>(
    row: &[f32],
    taps: &Taps,
    g: &Placement,
    y: usize,
    sums: &mut [[f32; 4]],
    tensor: &mut [T],
    convert: impl Fn(f32) -> T,
) {
    horizontal_body::<T, true>(row, taps, g, y, sums, tensor, convert)
}

#[inline(always)]
fn horizontal_body<T: Copy, const FMA: bool>(
    row: &[f32],
    taps: &Taps,
    g: &Placement,
    y: usize,
    sums: &mut [[f32; 4]],
    tensor: &mut [T],
    convert: impl Fn(f32) -> T,
) {
    const GROUP: usize = 4;
    let n = taps.start.len();
    let window = taps.window;
    let sums = &mut sums[..n];
    // Every pixel read below starts at `(start + k) * 3` with k < window and
    // is four floats wide; this bound makes all of them in range, so the
    // inner loop can skip per-read checks (the compiler could not prove it,
    // and the checks and the registers they take were half its time).
    assert!(taps.end * 3 < row.len(), "the row is one float longer than the source's widest tap");
    assert_eq!(taps.weights.len(), n * window);
    let pixel = |first: usize, k: usize| -> [f32; 4] {
        let o = (first + k) * 3;
        // SAFETY: first + k < taps.end, so o + 4 <= end * 3 + 1 <= row.len()
        // (asserted above).
        unsafe {
            [*row.get_unchecked(o), *row.get_unchecked(o + 1), *row.get_unchecked(o + 2), *row.get_unchecked(o + 3)]
        }
    };
    let mut x = 0;
    while x + GROUP <= n {
        let starts: [usize; GROUP] = taps.start[x..x + GROUP].try_into().expect("in bounds");
        let weights = &taps.weights[x * window..(x + GROUP) * window];
        let mut acc = [[0.0f32; 4]; GROUP];
        for k in 0..window {
            for i in 0..GROUP {
                // SAFETY: i * window + k < GROUP * window == weights.len().
                let wk = unsafe { *weights.get_unchecked(i * window + k) };
                let px = pixel(starts[i], k);
                for j in 0..4 {
                    acc[i][j] = if FMA { px[j].mul_add(wk, acc[i][j]) } else { acc[i][j] + px[j] * wk };
                }
            }
        }
        sums[x..x + GROUP].copy_from_slice(&acc);
        x += GROUP;
    }
    for (i, acc) in sums.iter_mut().enumerate().skip(x) {
        let (first, weights) = taps.of(i);
        *acc = [0.0; 4];
        for (k, &wk) in weights.iter().enumerate() {
            let px = pixel(first, k);
            for j in 0..4 {
                acc[j] += px[j] * wk;
            }
        }
    }
    emit(sums, g, y, tensor, convert)
}

/// Rows y and y + 1 filtered across at once: both use the same taps, so
/// each step loads one pixel of each row into the two halves of an AVX
/// register and multiplies both by one broadcast weight, twice the work of
/// [`horizontal`]'s four-lane step for one more load.
///
/// SAFETY: the caller checked AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn horizontal_pair_avx2(rows: [&[f32]; 2], taps: &Taps, sums: [&mut [[f32; 4]]; 2]) {
    use std::arch::x86_64::*;
    const GROUP: usize = 4;
    let n = taps.start.len();
    let window = taps.window;
    let [sa, sb] = sums;
    let (sa, sb) = (&mut sa[..n], &mut sb[..n]);
    // The bound that makes every read below in range (see `horizontal`).
    for row in rows {
        assert!(taps.end * 3 < row.len(), "the row is one float longer than the source's widest tap");
    }
    assert_eq!(taps.weights.len(), n * window);
    // SAFETY: first + k < taps.end, so o + 4 <= end * 3 + 1 <= row.len()
    // for both rows (asserted above).
    let pixels = |first: usize, k: usize| unsafe {
        let o = (first + k) * 3;
        _mm256_insertf128_ps(
            _mm256_castps128_ps256(_mm_loadu_ps(rows[0].as_ptr().add(o))),
            _mm_loadu_ps(rows[1].as_ptr().add(o)),
            1,
        )
    };
    let store = |acc: __m256, a: &mut [f32; 4], b: &mut [f32; 4]| {
        // SAFETY: `a` and `b` are four floats each.
        unsafe {
            _mm_storeu_ps(a.as_mut_ptr(), _mm256_castps256_ps128(acc));
            _mm_storeu_ps(b.as_mut_ptr(), _mm256_extractf128_ps(acc, 1));
        }
    };
    let mut x = 0;
    while x + GROUP <= n {
        let starts: [usize; GROUP] = taps.start[x..x + GROUP].try_into().expect("in bounds");
        let weights = &taps.weights[x * window..(x + GROUP) * window];
        let mut acc = [_mm256_setzero_ps(); GROUP];
        for k in 0..window {
            for i in 0..GROUP {
                // SAFETY: i * window + k < GROUP * window == weights.len().
                let w = _mm256_broadcast_ss(unsafe { weights.get_unchecked(i * window + k) });
                acc[i] = _mm256_fmadd_ps(pixels(starts[i], k), w, acc[i]);
            }
        }
        for i in 0..GROUP {
            store(acc[i], &mut sa[x + i], &mut sb[x + i]);
        }
        x += GROUP;
    }
    for i in x..n {
        let (first, weights) = taps.of(i);
        let mut acc = _mm256_setzero_ps();
        for (k, wk) in weights.iter().enumerate() {
            acc = _mm256_fmadd_ps(pixels(first, k), _mm256_broadcast_ss(wk), acc);
        }
        store(acc, &mut sa[i], &mut sb[i]);
    }
}

/// One output row's sums normalised into row `y` of the tensor, channels
/// reordered.
fn emit<T: Copy>(sums: &[[f32; 4]], g: &Placement, y: usize, tensor: &mut [T], convert: impl Fn(f32) -> T) {
    let n = sums.len();
    let base = (g.oy + y) * g.in_w + g.ox;
    let [s0, s1, s2] = g.src_ch;
    let v = |acc: &[f32; 4], c: usize, s: usize| convert(acc[s].clamp(0.0, 255.0) * g.scale[c] + g.offset[c]);
    match g.layout {
        Layout::Nchw => {
            let (c0, rest) = tensor.split_at_mut(g.plane);
            let (c1, c2) = rest.split_at_mut(g.plane);
            let (d0, d1, d2) = (&mut c0[base..base + n], &mut c1[base..base + n], &mut c2[base..base + n]);
            for (x, acc) in sums.iter().enumerate() {
                d0[x] = v(acc, 0, s0);
                d1[x] = v(acc, 1, s1);
                d2[x] = v(acc, 2, s2);
            }
        }
        Layout::Nhwc => {
            for (d, acc) in tensor[base * 3..(base + n) * 3].chunks_exact_mut(3).zip(sums.iter()) {
                d[0] = v(acc, 0, s0);
                d[1] = v(acc, 1, s1);
                d[2] = v(acc, 2, s2);
            }
        }
    }
}

fn fill<T: Copy>(tensor: &mut [T], value: [T; 3], plane: usize, layout: Layout) {
    match layout {
        Layout::Nchw => {
            for c in 0..3 {
                tensor[c * plane..(c + 1) * plane].fill(value[c]);
            }
        }
        Layout::Nhwc => {
            for px in tensor.chunks_exact_mut(3) {
                px.copy_from_slice(&value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: u32, layout: Layout, centered: bool) -> InputSpec {
        InputSpec {
            width: size,
            height: size,
            layout,
            element: Element::F32,
            bgr: false,
            mean: [0.0; 3],
            std: [1.0; 3],
            pad: 114,
            centered,
        }
    }

    #[test]
    fn non_square_int32_input() {
        // A 64x32 frame into a 32x32 NHWC int32 input: scale 0.5, inner
        // 32x16, padding 0 below.
        let rgb = vec![200u8; 64 * 32 * 3];
        let mut p = Preprocessor::new(InputSpec {
            width: 32,
            height: 32,
            element: Element::I32,
            pad: 0,
            ..spec(32, Layout::Nhwc, false)
        });
        let lb = p.run(&rgb, 64, 32).unwrap();
        assert_eq!(lb.inner_wh(32, 32), (32, 16));
        assert_eq!(p.shape(), [1, 32, 32, 3]);
        let t = p.tensor_i32();
        assert_eq!(t.len(), 32 * 32 * 3);
        assert_eq!(t[0], 200);
        assert_eq!(t[(20 * 32 + 5) * 3], 0);
        assert!(p.tensor().is_empty());
        // A wide input keeps a 16:9 frame's aspect: 160x90 into 64x32 → scale 0.3556, inner 57x32.
        let lb = Letterbox::fit(160, 90, 64, 32, false);
        assert_eq!(lb.inner_wh(64, 32), (57, 32));
    }

    #[test]
    fn geometry_wide_frame_top_left() {
        // 1920x1080 into 416: scale 416/1920 = 0.21667, inner 416x234.
        let lb = Letterbox::new(1920, 1080, 416, false);
        assert!((lb.scale - 0.216_666_67).abs() < 1e-6);
        assert_eq!(lb.inner(416), (416, 234));
        assert_eq!((lb.pad_x, lb.pad_y), (0.0, 0.0));
    }

    #[test]
    fn geometry_centered_pads_evenly() {
        // 640x272 into 640: inner 640x272, pad (640-272)/2 = 184 top.
        let lb = Letterbox::new(640, 272, 640, true);
        assert_eq!(lb.scale, 1.0);
        assert_eq!(lb.pad_y, 184.0);
        // A box at model (0,184)-(640,456) is the whole frame.
        let b = lb.to_frame(0.0, 184.0, 640.0, 456.0);
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (0.0, 0.0, 1.0, 1.0));
    }

    #[test]
    fn tall_frame_and_back_mapping() {
        // 100x200 into 64: scale 0.32, inner 32x64, centered pad_x 16.
        let lb = Letterbox::new(100, 200, 64, true);
        assert_eq!(lb.inner(64), (32, 64));
        assert_eq!(lb.pad_x, 16.0);
        let b = lb.to_frame(16.0 + 8.0, 16.0, 16.0 + 16.0, 32.0);
        // model x 8..16 of 32 → 0.25..0.5; y 16..32 of 64 → 0.25..0.5.
        assert!((b.x1 - 0.25).abs() < 1e-6 && (b.x2 - 0.5).abs() < 1e-6);
        assert!((b.y1 - 0.25).abs() < 1e-6 && (b.y2 - 0.5).abs() < 1e-6);
    }

    #[test]
    fn nchw_values_padding_and_channel_order() {
        // A 4x2 frame, left half red, right half blue, into an 8x8 NCHW BGR
        // tensor with /255 scaling: inner 8x4 at the top.
        let mut rgb = Vec::new();
        for _y in 0..2 {
            for x in 0..4 {
                rgb.extend_from_slice(if x < 2 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        let mut p = Preprocessor::new(InputSpec { bgr: true, std: [255.0; 3], ..spec(8, Layout::Nchw, false) });
        let lb = p.run(&rgb, 4, 2).unwrap();
        assert_eq!(lb.inner(8), (8, 4));
        let t = p.tensor();
        let at = |c: usize, y: usize, x: usize| t[c * 64 + y * 8 + x];
        // Model channel 0 is blue, channel 2 is red.
        assert_eq!(at(2, 0, 0), 1.0);
        assert_eq!(at(0, 0, 0), 0.0);
        assert_eq!(at(0, 0, 7), 1.0);
        assert_eq!(at(2, 0, 7), 0.0);
        // Rows 4..8 are padding: 114/255 in every channel.
        for c in 0..3 {
            assert!((at(c, 6, 3) - 114.0 / 255.0).abs() < 1e-6);
        }
        assert_eq!(p.shape(), [1, 3, 8, 8]);
    }

    #[test]
    fn nhwc_interleaved_with_mean_std() {
        let rgb = vec![10u8, 20, 30, 10, 20, 30, 10, 20, 30, 10, 20, 30];
        let mut p =
            Preprocessor::new(InputSpec { mean: [10.0, 20.0, 30.0], std: [2.0; 3], ..spec(2, Layout::Nhwc, false) });
        p.run(&rgb, 2, 2).unwrap();
        assert_eq!(&p.tensor()[..3], &[0.0, 0.0, 0.0]);
        assert_eq!(p.shape(), [1, 2, 2, 3]);
    }

    /// Our resize against `fast_image_resize`'s convolution with the same
    /// (bilinear) filter, on a textured frame with hard edges: it rounds to
    /// bytes after each pass, we do not, so values may differ by a level.
    #[test]
    fn resize_matches_a_reference_resizer() {
        use fast_image_resize::{images::Image, images::ImageRef, PixelType, ResizeAlg, ResizeOptions, Resizer};
        // Includes an odd number of output rows (640x361 → 416x235: the
        // last row goes alone) and widths that leave columns past the
        // integer pass's 64-byte blocks.
        for (fw, fh, size) in
            [(640u32, 360u32, 416u32), (640, 361, 416), (1280, 720, 416), (200, 100, 416), (97, 61, 64)]
        {
            let mut rgb = vec![0u8; (fw * fh * 3) as usize];
            for (i, v) in rgb.iter_mut().enumerate() {
                let (p, c) = (i / 3, i % 3);
                let (x, y) = (p as u32 % fw, p as u32 / fw);
                *v = (((x * 7 + y * 13) % 256) as u8)
                    ^ (if (x / 9 + y / 5) % 2 == 0 { 0 } else { 0xa0 })
                    ^ (c as u8 * 40);
            }
            let mut p = Preprocessor::new(spec(size, Layout::Nchw, false));
            let lb = p.run(&rgb, fw, fh).unwrap();
            let (w, h) = lb.inner(size);
            let mut want = vec![0u8; (w * h * 3) as usize];
            let src = ImageRef::new(fw, fh, &rgb, PixelType::U8x3).unwrap();
            let mut dst = Image::from_slice_u8(w, h, &mut want, PixelType::U8x3).unwrap();
            let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fast_image_resize::FilterType::Bilinear));
            Resizer::new().resize(&src, &mut dst, &opts).unwrap();
            let plane = (size * size) as usize;
            let (mut worst, mut sum) = (0.0f32, 0.0f32);
            for y in 0..h as usize {
                for x in 0..w as usize {
                    for c in 0..3 {
                        let ours = p.tensor()[c * plane + y * size as usize + x];
                        let d = (ours - want[(y * w as usize + x) * 3 + c] as f32).abs();
                        worst = worst.max(d);
                        sum += d;
                    }
                }
            }
            let mean = sum / (w * h * 3) as f32;
            assert!(worst <= 1.5 && mean < 0.5, "{fw}x{fh} → {size}: worst {worst}, mean {mean}");
        }
    }

    #[test]
    fn short_buffer_is_an_error_not_a_panic() {
        let mut p = Preprocessor::new(spec(32, Layout::Nchw, false));
        assert!(p.run(&[0u8; 10], 64, 64).is_err());
    }

    /// The vectorised passes against the plain ones on noise, at the
    /// scales the agent uses (1080p and 640x360 into 416, and a stretch):
    /// the integer vertical pass within a twentieth of a level, the
    /// two-row horizontal pass equal to the one-row pass.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_passes_match_the_plain_ones() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return;
        }
        for (fw, fh, ow, oh) in [(1920usize, 1080usize, 416usize, 234usize), (640, 360, 416, 234), (100, 50, 300, 150)]
        {
            let mut seed = 0x2545_f491_u32;
            let rgb: Vec<u8> = (0..fw * fh * 3)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let (tx, ty) = (Taps::new(fw, ow), Taps::new(fh, oh));
            let stride = fw * 3;
            let mut rows = [vec![0.0f32; stride + 1], vec![0.0f32; stride + 1]];
            let mut worst = 0.0f32;
            for y in 0..oh {
                // SAFETY: AVX2 and FMA checked above.
                unsafe { vertical_avx2(&rgb, stride, &ty, y, &mut rows[0][..stride]) };
                vertical_floats(&rgb, stride, &ty, y, &mut rows[1][..stride]);
                for (a, b) in rows[0].iter().zip(&rows[1]) {
                    worst = worst.max((a - b).abs());
                }
            }
            assert!(worst < 0.05, "{fw}x{fh} → {ow}x{oh}: vertical differs by {worst}");
            // Two different rows across, together and one by one.
            unsafe { vertical_avx2(&rgb, stride, &ty, oh / 3, &mut rows[0][..stride]) };
            unsafe { vertical_avx2(&rgb, stride, &ty, oh / 2, &mut rows[1][..stride]) };
            let mut pair = [vec![[0.0f32; 4]; ow], vec![[0.0f32; 4]; ow]];
            let [pa, pb] = &mut pair;
            unsafe { horizontal_pair_avx2([&rows[0], &rows[1]], &tx, [pa, pb]) };
            let g = Placement {
                in_w: ow,
                plane: ow * oh,
                ox: 0,
                oy: 0,
                src_ch: [0, 1, 2],
                layout: Layout::Nchw,
                scale: [1.0; 3],
                offset: [0.0; 3],
            };
            let mut tensor = vec![0.0f32; ow * oh * 3];
            let mut single = vec![[0.0f32; 4]; ow];
            for (r, want) in pair.iter().enumerate() {
                horizontal(&rows[r], &tx, &g, 0, &mut single, &mut tensor, |v| v);
                for (a, b) in single.iter().zip(want) {
                    for c in 0..3 {
                        assert!((a[c] - b[c]).abs() < 1e-3, "{fw}x{fh}: row {r} across differs: {a:?} vs {b:?}");
                    }
                }
            }
        }
    }
}
