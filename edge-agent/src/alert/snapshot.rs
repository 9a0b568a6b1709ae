//! The JPEG that goes with an event: the analysed frame with the evidence
//! drawn on it (lane outline in yellow, boxes in red, skeletons), so an
//! operator sees at a glance *why* the alert fired. The drawing itself is
//! [`crate::overlay`]; this module copies the frame and encodes it.

use image::codecs::jpeg::JpegEncoder;

use crate::overlay::Canvas;

/// Draws with `draw` on a copy of the RGB frame and encodes it as JPEG.
pub fn render(rgb: &[u8], width: u32, height: u32, quality: u8, draw: impl FnOnce(&mut Canvas)) -> Option<Vec<u8>> {
    let mut px = rgb.get(..width as usize * height as usize * 3)?.to_vec();
    draw(&mut Canvas::new(&mut px, width, height)?);
    let mut out = Vec::with_capacity(width as usize * height as usize / 4);
    JpegEncoder::new_with_quality(&mut out, quality).encode(&px, width, height, image::ExtendedColorType::Rgb8).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::BBox;

    #[test]
    fn draws_and_encodes_a_decodable_jpeg() {
        let (w, h) = (64u32, 48u32);
        let rgb = vec![0u8; (w * h * 3) as usize];
        let lane = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]];
        let boxes = [BBox { x1: 0.25, y1: 0.25, x2: 0.5, y2: 0.5 }];
        let jpeg = render(&rgb, w, h, 90, |c| {
            c.polygon(&lane, crate::overlay::YELLOW);
            c.rect(&boxes[0], crate::overlay::RED);
        })
        .unwrap();
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
        assert!(render(&[0; 10], 64, 48, 80, |_| {}).is_none());
    }
}
