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

/// Element type of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    F32,
    /// Raw 0–255 levels as `int32` (the TF.js MoveNet export).
    I32,
}

/// How a model wants its pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    /// Input width and height in pixels (detectors are square; pose models
    /// may keep the stream's aspect ratio).
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub element: Element,
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
    /// Fits a frame into a square `size` input.
    pub fn new(frame_w: u32, frame_h: u32, size: u32, centered: bool) -> Letterbox {
        Letterbox::fit(frame_w, frame_h, size, size, centered)
    }

    /// Fits a frame into an `in_w` × `in_h` input.
    pub fn fit(frame_w: u32, frame_h: u32, in_w: u32, in_h: u32, centered: bool) -> Letterbox {
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
    pub fn inner_wh(&self, in_w: u32, in_h: u32) -> (u32, u32) {
        Letterbox::scaled(self.frame_w, self.frame_h, self.scale, in_w, in_h)
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
    /// The model input, `width * height * 3` values, for `Element::F32`.
    tensor: Vec<f32>,
    /// The same for `Element::I32` (the other one stays empty).
    tensor_i32: Vec<i32>,
    /// `lut[c][v]`: normalised value of raw level `v` for model channel `c`.
    lut: [[f32; 256]; 3],
    lut_i32: [[i32; 256]; 3],
    last: Option<Letterbox>,
}

impl Preprocessor {
    pub fn new(spec: InputSpec) -> Preprocessor {
        let n = (spec.width * spec.height * 3) as usize;
        let mut lut = [[0.0; 256]; 3];
        let mut lut_i32 = [[0; 256]; 3];
        for c in 0..3 {
            for v in 0..256 {
                lut[c][v] = (v as f32 - spec.mean[c]) / spec.std[c];
                lut_i32[c][v] = lut[c][v].round() as i32;
            }
        }
        let (tensor, tensor_i32) = match spec.element {
            Element::F32 => (vec![0.0; n], Vec::new()),
            Element::I32 => (Vec::new(), vec![0; n]),
        };
        Preprocessor {
            spec,
            resizer: Resizer::new(),
            scratch: Vec::new(),
            tensor,
            tensor_i32,
            lut,
            lut_i32,
            last: None,
        }
    }

    pub fn spec(&self) -> &InputSpec {
        &self.spec
    }

    /// The tensor filled by the last [`Preprocessor::run`] (`Element::F32`).
    pub fn tensor(&self) -> &[f32] {
        &self.tensor
    }

    /// The tensor filled by the last [`Preprocessor::run`] (`Element::I32`).
    pub fn tensor_i32(&self) -> &[i32] {
        &self.tensor_i32
    }

    /// The tensor shape for `ort`.
    pub fn shape(&self) -> [usize; 4] {
        let (w, h) = (self.spec.width as usize, self.spec.height as usize);
        match self.spec.layout {
            Layout::Nchw => [1, 3, h, w],
            Layout::Nhwc => [1, h, w, 3],
        }
    }

    /// Letterboxes a packed RGB frame (`width * height * 3` bytes) into the
    /// tensor and returns the geometry needed to map boxes back.
    pub fn run(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<Letterbox, InferError> {
        let (in_w, in_h) = (self.spec.width, self.spec.height);
        let lb = Letterbox::fit(width, height, in_w, in_h, self.spec.centered);
        let (w, h) = lb.inner_wh(in_w, in_h);
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
        let plane = (self.spec.width * self.spec.height) as usize;
        let (p, layout) = (self.spec.pad as usize, self.spec.layout);
        match self.spec.element {
            Element::F32 => fill(&mut self.tensor, &self.lut, p, plane, layout),
            Element::I32 => fill(&mut self.tensor_i32, &self.lut_i32, p, plane, layout),
        }
    }

    /// Copies the resized image into the tensor at (ox, oy), normalising and
    /// reordering channels on the way.
    fn write_image(&mut self, w: u32, h: u32, ox: usize, oy: usize) {
        let geo = Placement {
            in_w: self.spec.width as usize,
            plane: (self.spec.width * self.spec.height) as usize,
            w: w as usize,
            h: h as usize,
            ox,
            oy,
            // Source channel feeding model channel c.
            src_ch: if self.spec.bgr { [2, 1, 0] } else { [0, 1, 2] },
            layout: self.spec.layout,
        };
        match self.spec.element {
            Element::F32 => write(&mut self.tensor, &self.lut, &self.scratch, &geo),
            Element::I32 => write(&mut self.tensor_i32, &self.lut_i32, &self.scratch, &geo),
        }
    }
}

/// Where the resized image goes in the tensor.
struct Placement {
    in_w: usize,
    plane: usize,
    w: usize,
    h: usize,
    ox: usize,
    oy: usize,
    src_ch: [usize; 3],
    layout: Layout,
}

fn fill<T: Copy>(tensor: &mut [T], lut: &[[T; 256]; 3], p: usize, plane: usize, layout: Layout) {
    match layout {
        Layout::Nchw => {
            for c in 0..3 {
                tensor[c * plane..(c + 1) * plane].fill(lut[c][p]);
            }
        }
        Layout::Nhwc => {
            for px in tensor.chunks_exact_mut(3) {
                px.copy_from_slice(&[lut[0][p], lut[1][p], lut[2][p]]);
            }
        }
    }
}

fn write<T: Copy>(tensor: &mut [T], lut: &[[T; 256]; 3], scratch: &[u8], g: &Placement) {
    let [l0, l1, l2] = lut;
    let sc = g.src_ch;
    for y in 0..g.h {
        let row = &scratch[y * g.w * 3..(y + 1) * g.w * 3];
        let base = (g.oy + y) * g.in_w + g.ox;
        match g.layout {
            Layout::Nchw => {
                let (c0, rest) = tensor.split_at_mut(g.plane);
                let (c1, c2) = rest.split_at_mut(g.plane);
                let (d0, d1, d2) = (&mut c0[base..base + g.w], &mut c1[base..base + g.w], &mut c2[base..base + g.w]);
                for (i, px) in row.chunks_exact(3).enumerate() {
                    d0[i] = l0[px[sc[0]] as usize];
                    d1[i] = l1[px[sc[1]] as usize];
                    d2[i] = l2[px[sc[2]] as usize];
                }
            }
            Layout::Nhwc => {
                let dst = &mut tensor[base * 3..(base + g.w) * 3];
                for (d, px) in dst.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                    d[0] = l0[px[sc[0]] as usize];
                    d[1] = l1[px[sc[1]] as usize];
                    d[2] = l2[px[sc[2]] as usize];
                }
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

    #[test]
    fn short_buffer_is_an_error_not_a_panic() {
        let mut p = Preprocessor::new(spec(32, Layout::Nchw, false));
        assert!(p.run(&[0u8; 10], 64, 64).is_err());
    }
}
