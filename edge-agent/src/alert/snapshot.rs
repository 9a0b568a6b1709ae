//! The JPEG that goes with an event: the analysed frame with the lane
//! outline (yellow) and the evidence boxes (red) drawn on it, so an
//! operator sees at a glance *why* the alert fired.
//!
//! Drawing is a few straight lines, done here rather than pulling a drawing
//! crate and its dependency tree into the build.

use image::{codecs::jpeg::JpegEncoder, Rgb, RgbImage};

use crate::infer::BBox;

const LANE: Rgb<u8> = Rgb([255, 210, 0]);
const OBJECT: Rgb<u8> = Rgb([255, 40, 40]);

/// Draws `lane` (normalised polygon) and `boxes` (normalised) on a copy of
/// the RGB frame and encodes it as JPEG.
pub fn render(rgb: &[u8], width: u32, height: u32, lane: &[[f32; 2]], boxes: &[BBox], quality: u8) -> Option<Vec<u8>> {
    let mut img = RgbImage::from_raw(width, height, rgb.get(..(width * height * 3) as usize)?.to_vec())?;
    let (w, h) = (width as f32, height as f32);
    for i in 0..lane.len() {
        let (a, b) = (lane[i], lane[(i + 1) % lane.len()]);
        line(&mut img, a[0] * w, a[1] * h, b[0] * w, b[1] * h, LANE);
    }
    for bx in boxes {
        let (x1, y1, x2, y2) = (bx.x1 * w, bx.y1 * h, bx.x2 * w, bx.y2 * h);
        line(&mut img, x1, y1, x2, y1, OBJECT);
        line(&mut img, x2, y1, x2, y2, OBJECT);
        line(&mut img, x2, y2, x1, y2, OBJECT);
        line(&mut img, x1, y2, x1, y1, OBJECT);
    }
    let mut out = Vec::with_capacity((width * height / 4) as usize);
    JpegEncoder::new_with_quality(&mut out, quality).encode_image(&img).ok()?;
    Some(out)
}

/// A 2-px line, clipped to the image.
fn line(img: &mut RgbImage, x0: f32, y0: f32, x1: f32, y1: f32, colour: Rgb<u8>) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as u32;
    let (w, h) = (img.width() as i64, img.height() as i64);
    for s in 0..=steps {
        let t = s as f32 / steps as f32;
        let (x, y) = ((x0 + (x1 - x0) * t) as i64, (y0 + (y1 - y0) * t) as i64);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let (px, py) = (x + dx, y + dy);
            if px >= 0 && py >= 0 && px < w && py < h {
                img.put_pixel(px as u32, py as u32, colour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_and_encodes_a_decodable_jpeg() {
        let (w, h) = (64u32, 48u32);
        let rgb = vec![0u8; (w * h * 3) as usize];
        let lane = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]];
        let boxes = [BBox { x1: 0.25, y1: 0.25, x2: 0.5, y2: 0.5 }];
        let jpeg = render(&rgb, w, h, &lane, &boxes, 90).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG magic");
        let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (w, h));
        // The box's top-left corner is red-ish, the centre still black.
        let p = img.get_pixel(16, 12);
        assert!(p[0] > 150 && p[1] < 100, "{p:?}");
        assert!(img.get_pixel(32, 30)[0] < 40);
    }

    #[test]
    fn short_buffer_gives_none() {
        assert!(render(&[0; 10], 64, 48, &[], &[], 80).is_none());
    }
}
