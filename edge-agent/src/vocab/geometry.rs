//! Boxes and polygons in normalised frame coordinates (0–1, origin
//! top-left): what the models output, the rules compare and the snapshots
//! draw.

/// An axis-aligned box. Normalised frame coordinates everywhere
/// outside the model decoders.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub(crate) fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    pub(crate) fn iou(&self, o: &BBox) -> f32 {
        let iw = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let ih = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// A lane polygon, normalised, with its bounding box kept for quick rejects.
#[derive(Debug, Clone)]
pub struct Polygon {
    pub(crate) points: Vec<[f32; 2]>,
    min: [f32; 2],
    max: [f32; 2],
}

impl Polygon {
    pub fn new(points: &[[f64; 2]]) -> Polygon {
        let points: Vec<[f32; 2]> = points.iter().map(|p| [p[0] as f32, p[1] as f32]).collect();
        let mut min = [f32::MAX; 2];
        let mut max = [f32::MIN; 2];
        for p in &points {
            for k in 0..2 {
                min[k] = min[k].min(p[k]);
                max[k] = max[k].max(p[k]);
            }
        }
        Polygon { points, min, max }
    }

    pub(crate) fn contains(&self, x: f32, y: f32) -> bool {
        x >= self.min[0]
            && x <= self.max[0]
            && y >= self.min[1]
            && y <= self.max[1]
            && point_in_polygon(&self.points, x, y)
    }

    /// Fraction of the polygon covered by the union of `boxes`, estimated on
    /// a fixed 24×24 sample grid over the polygon's bounding box. Exact
    /// polygon clipping is not worth it for an evidence number.
    pub(crate) fn coverage(&self, boxes: &[BBox]) -> f32 {
        const N: usize = 24;
        let (mut inside, mut covered) = (0u32, 0u32);
        for j in 0..N {
            let y = self.min[1] + (self.max[1] - self.min[1]) * (j as f32 + 0.5) / N as f32;
            for i in 0..N {
                let x = self.min[0] + (self.max[0] - self.min[0]) * (i as f32 + 0.5) / N as f32;
                if point_in_polygon(&self.points, x, y) {
                    inside += 1;
                    if boxes.iter().any(|b| x >= b.x1 && x <= b.x2 && y >= b.y1 && y <= b.y2) {
                        covered += 1;
                    }
                }
            }
        }
        if inside == 0 {
            0.0
        } else {
            covered as f32 / inside as f32
        }
    }
}

/// Even-odd ray casting.
pub fn point_in_polygon(poly: &[[f32; 2]], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = poly.len().wrapping_sub(1);
    for i in 0..poly.len() {
        let (xi, yi) = (poly[i][0], poly[i][1]);
        let (xj, yj) = (poly[j][0], poly[j][1]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Shoelace area (absolute), used to reject degenerate lanes in config.
pub fn polygon_area(poly: &[[f64; 2]]) -> f64 {
    let n = poly.len();
    let mut a = 0.0;
    for i in 0..n {
        let (p, q) = (poly[i], poly[(i + 1) % n]);
        a += p[0] * q[1] - q[0] * p[1];
    }
    (a / 2.0).abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> Polygon {
        Polygon::new(&[[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]])
    }

    #[test]
    fn contains_inside_outside() {
        let p = square();
        assert!(p.contains(0.4, 0.4));
        assert!(!p.contains(0.1, 0.4));
        assert!(!p.contains(0.4, 0.7));
    }

    #[test]
    fn concave_polygon() {
        // An L shape: the notch at top-right is outside.
        let l = Polygon::new(&[[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]);
        assert!(l.contains(0.25, 0.25));
        assert!(!l.contains(0.75, 0.25));
        assert!(l.contains(0.75, 0.75));
    }

    #[test]
    fn area_and_coverage() {
        assert!((polygon_area(&[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]) - 1.0).abs() < 1e-12);
        assert_eq!(polygon_area(&[[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]), 0.0);
        let p = square();
        let half = BBox { x1: 0.2, y1: 0.2, x2: 0.4, y2: 0.6 };
        assert!((p.coverage(&[half]) - 0.5).abs() < 0.05);
        assert_eq!(p.coverage(&[]), 0.0);
    }
}
