//! Letterbox preprocessing: an RGB frame into a model's input tensor.
//!
//! The frame is resized with its aspect ratio kept (SIMD, via
//! `fast_image_resize`) so its long side fits the model input, then padded.
//! Squashing a 16:9 frame into a square measurably breaks the detectors we
//! ship (see `models/models.toml`), so this is not optional.
//!
//! Per camera, one [`Preprocessor`] owns the resize scratch and the tensor
//! and reuses both on every frame: the hot path does not allocate. Pixel
//! normalisation goes through a per-channel 256-entry lookup table, so the
//! inner loop is a load, a lookup and a store.

use fast_image_resize::{images::Image, images::ImageRef, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::InferError;

/// Memory order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[1, 3, H, W]`: planar, as PyTorch exports.
    Nchw,
    /// `[1, H, W, 3]`: interleaved, as TensorFlow exports.
    Nhwc,
}

/// How a model wants its pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    pub size: u32,
    pub layout: Layout,
    /// Feed channels as B, G, R instead of R, G, B.
    pub bgr: bool,
    /// Per model channel (in model order): value = (pixel − mean) / std.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Grey level of the padding, in raw pixel units.
    pub pad: u8,
    /// Centre the image in the square (Ultralytics) or put it top-left
    /// (YOLOX, NanoDet).
    pub centered: bool,
}

/// The geometry of one letterbox: maps model pixels back to the frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    pub frame_w: u32,
    pub frame_h: u32,
}

impl Letterbox {
    pub fn new(frame_w: u32, frame_h: u32, size: u32, centered: bool) -> Letterbox {
        let scale = (size as f32 / frame_w as f32).min(size as f32 / frame_h as f32);
        let (w, h) = Letterbox::scaled(frame_w, frame_h, scale, size);
        let (pad_x, pad_y) = if centered { (((size - w) / 2) as f32, ((size - h) / 2) as f32) } else { (0.0, 0.0) };
        Letterbox { scale, pad_x, pad_y, frame_w, frame_h }
    }

    fn scaled(frame_w: u32, frame_h: u32, scale: f32, size: u32) -> (u32, u32) {
        let w = ((frame_w as f32 * scale).round() as u32).clamp(1, size);
        let h = ((frame_h as f32 * scale).round() as u32).clamp(1, size);
        (w, h)
    }

    /// Size of the resized image inside the square.
    pub fn inner(&self, size: u32) -> (u32, u32) {
        Letterbox::scaled(self.frame_w, self.frame_h, self.scale, size)
    }

    /// A box in model-input pixels → normalised frame coordinates, clamped.
    pub fn to_frame(&self, x1: f32, y1: f32, x2: f32, y2: f32) -> super::BBox {
        let fx = |x: f32| ((x - self.pad_x) / self.scale / self.frame_w as f32).clamp(0.0, 1.0);
        let fy = |y: f32| ((y - self.pad_y) / self.scale / self.frame_h as f32).clamp(0.0, 1.0);
        super::BBox { x1: fx(x1), y1: fy(y1), x2: fx(x2), y2: fy(y2) }
    }
}

/// Reusable frame → tensor converter for one camera and one model.
pub struct Preprocessor {
    spec: InputSpec,
    resizer: Resizer,
    /// Resized RGB image; reallocated only when the frame size changes.
    scratch: Vec<u8>,
    /// The model input, `size * size * 3` floats.
    tensor: Vec<f32>,
    /// `lut[c][v]`: normalised value of raw level `v` for model channel `c`.
    lut: [[f32; 256]; 3],
    last: Option<Letterbox>,
}

impl Preprocessor {
    pub fn new(spec: InputSpec) -> Preprocessor {
        let n = (spec.size * spec.size * 3) as usize;
        let mut lut = [[0.0; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 - spec.mean[c]) / spec.std[c];
            }
        }
        Preprocessor { spec, resizer: Resizer::new(), scratch: Vec::new(), tensor: vec![0.0; n], lut, last: None }
    }

    pub fn spec(&self) -> &InputSpec {
        &self.spec
    }

    /// The tensor filled by the last [`Preprocessor::run`].
    pub fn tensor(&self) -> &[f32] {
        &self.tensor
    }

    /// The tensor shape for `ort`.
    pub fn shape(&self) -> [usize; 4] {
        let s = self.spec.size as usize;
        match self.spec.layout {
            Layout::Nchw => [1, 3, s, s],
            Layout::Nhwc => [1, s, s, 3],
        }
    }

    /// Letterboxes a packed RGB frame (`width * height * 3` bytes) into the
    /// tensor and returns the geometry needed to map boxes back.
    pub fn run(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<Letterbox, InferError> {
        let size = self.spec.size;
        let lb = Letterbox::new(width, height, size, self.spec.centered);
        let (w, h) = lb.inner(size);
        let src = ImageRef::new(width, height, rgb, PixelType::U8x3)
            .map_err(|e| InferError::Preprocess(format!("frame {width}x{height}: {e}")))?;
        self.scratch.resize((w * h * 3) as usize, 0);
        let mut dst = Image::from_slice_u8(w, h, &mut self.scratch, PixelType::U8x3)
            .map_err(|e| InferError::Preprocess(e.to_string()))?;
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fast_image_resize::FilterType::Bilinear));
        self.resizer.resize(&src, &mut dst, &opts).map_err(|e| InferError::Preprocess(e.to_string()))?;

        // The padding only changes when the geometry does.
        if self.last != Some(lb) {
            self.fill_padding();
            self.last = Some(lb);
        }
        self.write_image(w, h, lb.pad_x as usize, lb.pad_y as usize);
        Ok(lb)
    }

    fn fill_padding(&mut self) {
        let s = (self.spec.size * self.spec.size) as usize;
        let p = self.spec.pad as usize;
        match self.spec.layout {
            Layout::Nchw => {
                for c in 0..3 {
                    self.tensor[c * s..(c + 1) * s].fill(self.lut[c][p]);
                }
            }
            Layout::Nhwc => {
                for px in self.tensor.chunks_exact_mut(3) {
                    px.copy_from_slice(&[self.lut[0][p], self.lut[1][p], self.lut[2][p]]);
                }
            }
        }
    }

    /// Copies the resized image into the tensor at (ox, oy), normalising and
    /// reordering channels on the way.
    fn write_image(&mut self, w: u32, h: u32, ox: usize, oy: usize) {
        let size = self.spec.size as usize;
        let plane = size * size;
        let (w, h) = (w as usize, h as usize);
        // Source channel feeding model channel c.
        let src_ch: [usize; 3] = if self.spec.bgr { [2, 1, 0] } else { [0, 1, 2] };
        let [l0, l1, l2] = &self.lut;
        for y in 0..h {
            let row = &self.scratch[y * w * 3..(y + 1) * w * 3];
            let base = (oy + y) * size + ox;
            match self.spec.layout {
                Layout::Nchw => {
                    let (c0, rest) = self.tensor.split_at_mut(plane);
                    let (c1, c2) = rest.split_at_mut(plane);
                    let (d0, d1, d2) = (&mut c0[base..base + w], &mut c1[base..base + w], &mut c2[base..base + w]);
                    for (i, px) in row.chunks_exact(3).enumerate() {
                        d0[i] = l0[px[src_ch[0]] as usize];
                        d1[i] = l1[px[src_ch[1]] as usize];
                        d2[i] = l2[px[src_ch[2]] as usize];
                    }
                }
                Layout::Nhwc => {
                    let dst = &mut self.tensor[base * 3..(base + w) * 3];
                    for (d, px) in dst.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                        d[0] = l0[px[src_ch[0]] as usize];
                        d[1] = l1[px[src_ch[1]] as usize];
                        d[2] = l2[px[src_ch[2]] as usize];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: u32, layout: Layout, centered: bool) -> InputSpec {
        InputSpec { size, layout, bgr: false, mean: [0.0; 3], std: [1.0; 3], pad: 114, centered }
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

    #[test]
    fn short_buffer_is_an_error_not_a_panic() {
        let mut p = Preprocessor::new(spec(32, Layout::Nchw, false));
        assert!(p.run(&[0u8; 10], 64, 64).is_err());
    }
}
