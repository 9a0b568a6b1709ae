//! Model outputs → candidate boxes, one function per output layout, and NMS.
//!
//! Boxes here are in model-input pixels; [`super::Letterbox::to_frame`] maps
//! them to the frame afterwards. Each decoder filters by score first, so NMS
//! only sees the handful of boxes that can survive.

/// A candidate box in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub(crate) x1: f32,
    pub(crate) y1: f32,
    pub(crate) x2: f32,
    pub(crate) y2: f32,
    pub(crate) class_id: usize,
    pub(crate) score: f32,
}

impl Candidate {
    /// A box from its centre and size (the YOLO layouts).
    fn from_centre(cx: f32, cy: f32, w: f32, h: f32, class_id: usize, score: f32) -> Candidate {
        Candidate { x1: cx - w / 2.0, y1: cy - h / 2.0, x2: cx + w / 2.0, y2: cy + h / 2.0, class_id, score }
    }

    fn iou(&self, o: &Candidate) -> f32 {
        let b = |c: &Candidate| super::BBox { x1: c.x1, y1: c.y1, x2: c.x2, y2: c.y2 };
        b(self).iou(&b(o))
    }
}

/// Standard strides of the YOLOX and NanoDet heads.
pub(crate) const STRIDES: [usize; 3] = [8, 16, 32];

/// YOLOX: `[anchors, 5 + classes]` rows of (dx, dy, log w, log h, objectness,
/// class scores…); objectness and classes are already sigmoid-ed by the
/// export, the box is not: `x = (dx + col) * stride`, `w = exp(log w) * stride`.
/// Anchors run stride by stride, row by row.
pub fn yolox(out: &[f32], classes: usize, input: usize, threshold: f32, found: &mut Vec<Candidate>) {
    let row = 5 + classes;
    let mut i = 0;
    for s in STRIDES {
        let g = input / s;
        for cy in 0..g {
            for cx in 0..g {
                let Some(r) = out.get(i * row..(i + 1) * row) else { return };
                i += 1;
                let obj = r[4];
                if obj < threshold {
                    continue;
                }
                let (class_id, cls) = argmax(&r[5..]);
                let score = obj * cls;
                if score < threshold {
                    continue;
                }
                let x = (r[0] + cx as f32) * s as f32;
                let y = (r[1] + cy as f32) * s as f32;
                let w = r[2].exp() * s as f32;
                let h = r[3].exp() * s as f32;
                found.push(Candidate::from_centre(x, y, w, h, class_id, score));
            }
        }
    }
}

/// YOLOv8 / YOLO11: `[4 + classes, anchors]`, column-major per anchor:
/// centre x, centre y, width, height (input pixels), then class scores.
pub fn yolov8(out: &[f32], classes: usize, anchors: usize, threshold: f32, found: &mut Vec<Candidate>) {
    if out.len() < (4 + classes) * anchors {
        return;
    }
    let at = |r: usize, a: usize| out[r * anchors + a];
    for a in 0..anchors {
        let (mut best, mut class_id) = (0.0f32, 0);
        for c in 0..classes {
            let v = at(4 + c, a);
            if v > best {
                best = v;
                class_id = c;
            }
        }
        if best < threshold {
            continue;
        }
        let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
        found.push(Candidate::from_centre(cx, cy, w, h, class_id, best));
    }
}

/// Bins per side of a NanoDet (GFL) box distribution: `reg_max + 1`.
pub(crate) const NANODET_BINS: usize = 11;

/// NanoDet: per stride, class scores `[cells, classes]` (sigmoid-ed) and box
/// distributions `[cells, 4 * 11]` (left, top, right, bottom). Each side is
/// the softmax expectation over its 11 bins, times the stride, measured from
/// the cell centre `((col + 0.5) * stride, (row + 0.5) * stride)`, as in
/// upstream NanoDet's GFL head (checked against CenterNet and YOLOX boxes on
/// real frames: with the corner instead, boxes shift by half a stride).
pub fn nanodet(
    level: usize,
    scores: &[f32],
    boxes: &[f32],
    classes: usize,
    input: usize,
    threshold: f32,
    found: &mut Vec<Candidate>,
) {
    let s = STRIDES[level];
    let g = input.div_ceil(s);
    let cells = scores.len() / classes;
    for cell in 0..cells.min(boxes.len() / (4 * NANODET_BINS)) {
        let (class_id, score) = argmax(&scores[cell * classes..(cell + 1) * classes]);
        if score < threshold {
            continue;
        }
        let (cx, cy) = (((cell % g) as f32 + 0.5) * s as f32, ((cell / g) as f32 + 0.5) * s as f32);
        let dist = &boxes[cell * 4 * NANODET_BINS..(cell + 1) * 4 * NANODET_BINS];
        let side = |k: usize| softmax_expectation(&dist[k * NANODET_BINS..(k + 1) * NANODET_BINS]) * s as f32;
        found.push(Candidate {
            x1: cx - side(0),
            y1: cy - side(1),
            x2: cx + side(2),
            y2: cy + side(3),
            class_id,
            score,
        });
    }
}

/// MobileNetV3-CenterNet (TF.js): `[100, 6]` rows of x1, y1, x2, y2 (input
/// pixels), score, class; top-k is built into the graph.
pub(crate) fn centernet(out: &[f32], threshold: f32, found: &mut Vec<Candidate>) {
    for r in out.chunks_exact(6) {
        if r[4] >= threshold && r[5] >= 0.0 {
            found.push(Candidate { x1: r[0], y1: r[1], x2: r[2], y2: r[3], class_id: r[5] as usize, score: r[4] });
        }
    }
}

fn argmax(v: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::MIN);
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best
}

fn softmax_expectation(bins: &[f32]) -> f32 {
    let max = bins.iter().copied().fold(f32::MIN, f32::max);
    let (mut sum, mut acc) = (0.0, 0.0);
    for (i, &b) in bins.iter().enumerate() {
        let e = (b - max).exp();
        sum += e;
        acc += e * i as f32;
    }
    acc / sum
}

/// Greedy per-class non-maximum suppression, in place: keeps the best box
/// of each overlapping group (IoU > `iou`), ordered by score, at most `max`.
pub fn nms(found: &mut Vec<Candidate>, iou: f32, max: usize) {
    found.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept = 0;
    for i in 0..found.len() {
        let c = found[i];
        if found[..kept].iter().all(|k| k.class_id != c.class_id || k.iou(&c) <= iou) {
            found[kept] = c;
            kept += 1;
            if kept == max {
                break;
            }
        }
    }
    found.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(x1: f32, y1: f32, x2: f32, y2: f32, class_id: usize, score: f32) -> Candidate {
        Candidate { x1, y1, x2, y2, class_id, score }
    }

    #[test]
    fn nms_hand_computed() {
        // A and B: IoU = 64 / (100 + 100 - 64) = 0.47; C far away; D same
        // place as A but another class.
        let a = cand(0.0, 0.0, 10.0, 10.0, 0, 0.9);
        let b = cand(2.0, 2.0, 12.0, 12.0, 0, 0.8);
        let c = cand(50.0, 50.0, 60.0, 60.0, 0, 0.7);
        let d = cand(0.0, 0.0, 10.0, 10.0, 1, 0.6);
        let mut v = vec![c, b, d, a];
        nms(&mut v, 0.45, 100);
        assert_eq!(v, vec![a, c, d], "B overlaps A above 0.45");
        let mut v = vec![c, b, d, a];
        nms(&mut v, 0.5, 100);
        assert_eq!(v, vec![a, b, c, d], "0.47 is under 0.5: B stays");
        let mut v = vec![c, b, d, a];
        nms(&mut v, 0.5, 2);
        assert_eq!(v, vec![a, b]);
    }

    #[test]
    fn yolov8_layout_is_channel_major() {
        // 2 classes, 3 anchors; anchor 1 holds a class-1 box at (50,40) 20x10.
        let anchors = 3;
        let mut out = vec![0.0f32; 6 * anchors];
        let set = |out: &mut Vec<f32>, r: usize, a: usize, v: f32| out[r * anchors + a] = v;
        set(&mut out, 0, 1, 50.0);
        set(&mut out, 1, 1, 40.0);
        set(&mut out, 2, 1, 20.0);
        set(&mut out, 3, 1, 10.0);
        set(&mut out, 5, 1, 0.8);
        set(&mut out, 4, 2, 0.1); // below threshold
        let mut found = Vec::new();
        yolov8(&out, 2, anchors, 0.25, &mut found);
        assert_eq!(found, vec![cand(40.0, 35.0, 60.0, 45.0, 1, 0.8)]);
    }

    #[test]
    fn yolox_grid_decode() {
        // 32-px input: stride 8 → 4x4 cells, 16 → 2x2, 32 → 1x1: 21 anchors.
        let classes = 2;
        let mut out = vec![0.0f32; 21 * (5 + classes)];
        // Anchor 6 = stride 8, row 1, col 2. dx=0.5, dy=0.5, w=h=exp(0)*8.
        let r = &mut out[6 * 7..7 * 7];
        r.copy_from_slice(&[0.5, 0.5, 0.0, 0.0, 0.9, 0.1, 0.5]);
        let mut found = Vec::new();
        yolox(&out, classes, 32, 0.3, &mut found);
        // centre ((2.5)*8, (1.5)*8) = (20, 12), size 8.
        assert_eq!(found.len(), 1);
        let c = found[0];
        assert_eq!((c.x1, c.y1, c.x2, c.y2, c.class_id), (16.0, 8.0, 24.0, 16.0, 1));
        assert!((c.score - 0.45).abs() < 1e-6);
    }

    #[test]
    fn nanodet_distribution_decode() {
        // 32-px input, stride 8 level: 4x4 cells. Cell 5 = row 1, col 1.
        let classes = 1;
        let mut scores = vec![0.0f32; 16];
        scores[5] = 0.7;
        let mut boxes = vec![0.0f32; 16 * 44];
        // Put all mass on bin 1 for left/top and bin 2 for right/bottom.
        let d = &mut boxes[5 * 44..6 * 44];
        for (k, bin) in [(0, 1), (1, 1), (2, 2), (3, 2)] {
            d[k * 11 + bin] = 50.0;
        }
        let mut found = Vec::new();
        nanodet(0, &scores, &boxes, classes, 32, 0.3, &mut found);
        assert_eq!(found.len(), 1);
        let c = found[0];
        // Cell centre (12, 12); left/top 1*8, right/bottom 2*8.
        assert!((c.x1 - 4.0).abs() < 1e-3 && (c.y1 - 4.0).abs() < 1e-3, "{c:?}");
        assert!((c.x2 - 28.0).abs() < 1e-3 && (c.y2 - 28.0).abs() < 1e-3, "{c:?}");
    }

    #[test]
    fn centernet_rows() {
        let out = [1.0, 2.0, 3.0, 4.0, 0.9, 2.0, 5.0, 5.0, 6.0, 6.0, 0.1, 0.0];
        let mut found = Vec::new();
        centernet(&out, 0.3, &mut found);
        assert_eq!(found, vec![cand(1.0, 2.0, 3.0, 4.0, 2, 0.9)]);
    }

    #[test]
    fn truncated_output_does_not_panic() {
        let mut found = Vec::new();
        yolox(&[0.5; 10], 80, 416, 0.1, &mut found);
        yolov8(&[0.5; 10], 80, 3549, 0.1, &mut found);
        assert!(found.is_empty());
    }
}
