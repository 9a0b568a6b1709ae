//! The JPEG that goes with an event: the analysed frame with the evidence
//! drawn on it (lane outline in yellow, boxes in red, skeletons), so an
//! operator sees at a glance *why* the alert fired. The drawing itself is
//! [`crate::draw`]; this module copies the frame and encodes it.

use image::codecs::jpeg::JpegEncoder;

use crate::draw::Canvas;

/// Draws with `draw` on a copy of the RGB frame and encodes it as JPEG.
pub fn render(rgb: &[u8], width: u32, height: u32, quality: u8, draw: impl FnOnce(&mut Canvas)) -> Option<Vec<u8>> {
    let mut px = rgb.get(..width as usize * height as usize * 3)?.to_vec();
    draw(&mut Canvas::new(&mut px, width, height)?);
    let mut out = Vec::with_capacity(width as usize * height as usize / 4);
    JpegEncoder::new_with_quality(&mut out, quality).encode(&px, width, height, image::ExtendedColorType::Rgb8).ok()?;
    Some(out)
}

/// The default cap on one snapshot's bytes (`alerts.snapshot_max_kb`):
/// well below the MQTT client's outgoing packet limit (1 MiB) and
/// mosquitto's common `message_size_limit` settings, so a snapshot is never
/// the message the broker refuses.
pub(crate) const DEFAULT_MAX_BYTES: usize = crate::config::DEFAULT_SNAPSHOT_MAX_KIB as usize * 1024;

/// JPEG qualities tried, in order, when a snapshot is over its cap.
const QUALITIES: [u8; 4] = [70, 55, 40, 25];
/// Quality of the scaled-down attempts.
const SCALED_QUALITY: u8 = 50;
/// Scaling stops below this width: a smaller picture shows nothing useful.
const MIN_WIDTH: u32 = 160;

/// What [`cap`] did to fit a snapshot under its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capped {
    /// It fitted as it was.
    Kept,
    /// Re-encoded at a lower JPEG quality.
    Quality,
    /// Scaled down (and re-encoded).
    Scaled,
    /// Nothing fitted (or it would not decode): the event goes without it.
    Dropped,
}

impl Capped {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Capped::Kept => "kept",
            Capped::Quality => "quality",
            Capped::Scaled => "scaled",
            Capped::Dropped => "dropped",
        }
    }
}

/// A snapshot that fits: the JPEG and its width and height.
pub(crate) type Fitted = (Vec<u8>, u32, u32);

/// Fits a JPEG under `max_bytes`: as it is, else re-encoded at lower
/// qualities, else scaled down by steps of 3/4 to [`MIN_WIDTH`], else
/// nothing. A message over the client's or the broker's limit would be
/// refused and block the spool behind it, so an event without its picture
/// is the better outcome.
pub(crate) fn cap(jpeg: Vec<u8>, max_bytes: usize) -> (Option<Fitted>, Capped) {
    let Ok(img) = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg) else {
        return (None, Capped::Dropped);
    };
    let img = img.to_rgb8();
    let (w, h) = img.dimensions();
    if jpeg.len() <= max_bytes {
        return (Some((jpeg, w, h)), Capped::Kept);
    }
    drop(jpeg);
    let encode = |px: &[u8], w: u32, h: u32, q: u8| -> Option<Vec<u8>> {
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, q).encode(px, w, h, image::ExtendedColorType::Rgb8).ok()?;
        Some(out)
    };
    for q in QUALITIES {
        if let Some(out) = encode(img.as_raw(), w, h, q).filter(|o| o.len() <= max_bytes) {
            return (Some((out, w, h)), Capped::Quality);
        }
    }
    let (mut sw, mut sh) = (w, h);
    loop {
        (sw, sh) = (sw * 3 / 4, (sh * 3 / 4).max(1));
        if sw < MIN_WIDTH {
            return (None, Capped::Dropped);
        }
        let small = image::imageops::resize(&img, sw, sh, image::imageops::FilterType::Triangle);
        if let Some(out) = encode(small.as_raw(), sw, sh, SCALED_QUALITY).filter(|o| o.len() <= max_bytes) {
            return (Some((out, sw, sh)), Capped::Scaled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::BBox;

    #[test]
    fn draws_and_encodes_a_decodable_jpeg() {
        let (w, h) = (64u32, 48u32);
        let rgb = vec![0u8; (w * h * 3) as usize];
        let lane = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]];
        let boxes = [BBox { x1: 0.25, y1: 0.25, x2: 0.5, y2: 0.5 }];
        let jpeg = render(&rgb, w, h, 90, |c| {
            c.polygon(&lane, crate::draw::YELLOW);
            c.rect(&boxes[0], crate::draw::RED);
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

    /// A real JPEG that does not compress: random noise at quality 100.
    fn noisy_jpeg(w: u32, h: u32) -> Vec<u8> {
        let mut x: u32 = 0x9E37_79B9;
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        render(&rgb, w, h, 100, |_| {}).unwrap()
    }

    #[test]
    fn a_huge_snapshot_is_capped_by_quality_then_scale_then_dropped() {
        let big = noisy_jpeg(1280, 720);
        assert!(big.len() > 1 << 20, "the test image is over the client's 1 MiB packet limit: {}", big.len());
        let (fitted, how) = cap(big.clone(), DEFAULT_MAX_BYTES);
        let (jpeg, w, h) = fitted.expect("fits under 512 KiB");
        assert!(jpeg.len() <= DEFAULT_MAX_BYTES, "{}", jpeg.len());
        assert!(matches!(how, Capped::Quality | Capped::Scaled), "{how:?}");
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (w, h), "the reported size is the JPEG's");

        // A tight cap needs scaling; the picture keeps its aspect.
        let (fitted, how) = cap(big.clone(), 64 * 1024);
        let (jpeg, w, h) = fitted.expect("fits scaled down");
        assert_eq!(how, Capped::Scaled);
        assert!(jpeg.len() <= 64 * 1024 && w < 1280 && (w as f32 / h as f32 - 16.0 / 9.0).abs() < 0.05);

        // Nothing fits: no snapshot rather than a message the broker refuses.
        let (fitted, how) = cap(big, 300);
        assert!(fitted.is_none() && how == Capped::Dropped, "{how:?}");
        // Small ones pass untouched; garbage is dropped, never a panic.
        let small = noisy_jpeg(32, 32);
        assert!(cap(small.clone(), DEFAULT_MAX_BYTES) == (Some((small, 32, 32)), Capped::Kept));
        assert_eq!(cap(vec![0xFF, 0xD8, 1, 2, 3], DEFAULT_MAX_BYTES).1, Capped::Dropped);
    }

    #[test]
    fn short_buffer_gives_none() {
        assert!(render(&[0; 10], 64, 48, 80, |_| {}).is_none());
    }
}
