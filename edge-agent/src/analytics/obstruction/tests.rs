//! Unit tests of `analytics::obstruction`.

use super::fixtures::{scene, with_box, H, W};
use super::*;

fn lane() -> Polygon {
    Polygon::new(&[[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]])
}

fn learnt() -> ObstructionCue {
    let mut cue = ObstructionCue::new(lane(), ObstructionParams::default());
    for i in 0..=10 {
        assert_eq!(cue.observe(i as f64 * 0.5, &scene(1.0), &[]), None, "learning");
    }
    assert!(cue.take_changed(), "the learnt reference is to be saved");
    cue
}

#[test]
fn learns_then_reads_a_clear_lane_as_clear() {
    let mut cue = learnt();
    let r = cue.observe(6.5, &scene(1.0), &[]).expect("a reference after learn_s");
    assert_eq!(r.occupancy, 0.0);
    assert_eq!(r.light, Light::Day);
    assert!(r.considered > 100, "{} lane cells", r.considered);
}

#[test]
fn an_object_that_stays_is_occupancy_and_is_not_learnt() {
    let mut cue = learnt();
    let boxed = with_box(scene(1.0), 40, 50, 104, 90);
    // First frame: the box appeared since the last frame: moving, masked.
    let first = cue.observe(7.0, &boxed, &[]).unwrap();
    assert!(first.occupancy < 0.05, "just arrived counts as moving: {}", first.occupancy);
    // Still left out while it may be moving (motion_hold_s).
    assert!(cue.observe(7.5, &boxed, &[]).unwrap().occupancy < 0.05);
    for i in 0..600 {
        let r = cue.observe(9.0 + i as f64 * 0.5, &boxed, &[]).unwrap();
        // 8 of 20 columns × the 5 lane rows under the box: ~0.36 of the lane.
        assert!((0.25..0.5).contains(&r.occupancy), "frame {i}: {}", r.occupancy);
    }
    let cleared = cue.observe(400.0, &scene(1.0), &[]).unwrap();
    assert!(cleared.occupancy < 0.05, "the box left (moving this frame): {}", cleared.occupancy);
    let after = cue.observe(402.0, &scene(1.0), &[]).unwrap();
    assert_eq!(after.considered, after.cells, "nothing moving any more");
    assert_eq!(after.occupancy, 0.0, "the reference never took the box in");
}

#[test]
fn a_global_light_change_is_not_an_obstruction() {
    let mut cue = learnt();
    // A slow ramp to 60 % and to 140 % brightness, 2 % per frame.
    for i in 0..=40 {
        let g = 1.0 - 0.01 * i as f32;
        let r = cue.observe(10.0 + i as f64, &scene(g), &[]).unwrap();
        assert!(r.occupancy < 0.1, "gain {g}: {}", r.occupancy);
    }
    let mut cue = learnt();
    for i in 0..=40 {
        let g = 1.0 + 0.01 * i as f32;
        let r = cue.observe(10.0 + i as f64, &scene(g), &[]).unwrap();
        assert!(r.occupancy < 0.1, "gain {g}: {}", r.occupancy);
    }
}

#[test]
fn a_plain_passer_by_is_left_out_inside_as_well_as_at_its_edges() {
    let mut cue = learnt();
    // 16 × 40 px of one colour walking 2 px a frame: the cells inside
    // it do not change between frames, only its edges do.
    let mut worst = 0.0f32;
    for i in 0..60u32 {
        let x = 10 + 2 * i;
        let r = cue.observe(7.0 + i as f64 * 0.2, &with_box(scene(1.0), x, 45, x + 16, 85), &[]).unwrap();
        worst = worst.max(r.occupancy);
    }
    assert!(worst < 0.02, "a passer-by read as obstruction: {worst}");
    let params = ObstructionParams { motion_hold_s: 0.0, ..Default::default() };
    let mut no_hold = ObstructionCue::new(lane(), params);
    for i in 0..=10 {
        no_hold.observe(i as f64 * 0.5, &scene(1.0), &[]);
    }
    let counted = (0..60u32)
        .filter_map(|i| {
            let x = 10 + 2 * i;
            no_hold.observe(7.0 + i as f64 * 0.2, &with_box(scene(1.0), x, 45, x + 16, 85), &[])
        })
        .any(|r| r.occupancy > 0.0);
    assert!(counted, "without the hold its still inside would count (the test's premise)");
}

#[test]
fn masked_cells_are_left_out() {
    let mut cue = learnt();
    let boxed = with_box(scene(1.0), 40, 50, 104, 90);
    cue.observe(7.0, &boxed, &[]);
    let person = BBox { x1: 0.2, y1: 0.5, x2: 0.7, y2: 1.0 };
    let r = cue.observe(7.5, &boxed, &[person]).unwrap();
    assert!(r.occupancy < 0.05, "the box lies under a person's box: {}", r.occupancy);
    assert!(r.considered < r.cells);
}

#[test]
fn night_has_its_own_reference_and_an_explicit_one_is_used_at_once() {
    let mut cue = learnt();
    let dark = scene(0.2);
    assert_eq!(Light::of(&dark, 40.0), Light::Night);
    assert_eq!(cue.observe(10.0, &dark, &[]), None, "night learns on its own");
    let covered = with_box(scene(1.0), 0, 36, 160, 90);
    let light = cue.set_reference(10.5, &covered);
    assert_eq!(light, Light::Day);
    cue.observe(11.0, &covered, &[]);
    let r = cue.observe(13.0, &covered, &[]).unwrap();
    assert_eq!(r.considered, r.cells, "nothing moving");
    assert_eq!(r.occupancy, 0.0, "the operator's reference replaces the learnt one");
    let r = cue.observe(14.0, &scene(1.0), &[]).unwrap();
    let r2 = cue.observe(16.0, &scene(1.0), &[]).unwrap();
    assert!(r.considered < r.cells && r2.occupancy > 0.5, "against it, the bare lane differs: {}", r2.occupancy);
    assert_eq!(cue.references().count(), 1, "only day is ready");
}

#[test]
fn references_round_trip_through_png() {
    let cue = learnt();
    let (light, plane) = cue.references().next().unwrap();
    let png = plane.to_png().unwrap();
    let back = Plane::from_png(&png).unwrap();
    assert_eq!((back.w, back.h), (W, H));
    let mut other = ObstructionCue::new(lane(), ObstructionParams::default());
    other.load_reference(light, back);
    assert_eq!(other.observe(0.0, &scene(1.0), &[]).unwrap().occupancy, 0.0);
    assert!(Plane::from_png(b"not a png").is_none());
}

#[test]
fn names_that_differ_never_share_a_reference_file() {
    let dir = Path::new("/state/references");
    let names = ["cam.1", "cam_1", "cam-1", "cam/1", "cam%2E1", "..", ".", "", "cam 1", "câm"];
    let mut seen = std::collections::HashSet::new();
    for camera in names {
        let p = reference_path(dir, camera, "kerb", Light::Day);
        assert!(seen.insert(p.clone()), "{camera:?} collides: {}", p.display());
        assert_eq!(p.parent().unwrap().parent().unwrap(), dir, "{camera:?} stays one level down");
        let component = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
        assert!(component.chars().all(|c| c.is_ascii_alphanumeric() || "-_%".contains(c)), "{component}");
    }
    assert_ne!(reference_path(dir, "c", "a.b", Light::Day), reference_path(dir, "c", "a_b", Light::Day), "lanes too");
}

#[test]
fn references_survive_a_restart_through_the_state_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mut cue = learnt();
    cue.observe(6.0, &scene(1.0), &[]); // a clear frame: the reference follows it
    assert!(cue.save_due(6.0, 60.0), "a changed reference is saved");
    cue.save(dir.path(), "cam/1", "fire escape").unwrap();
    assert!(dir.path().join("cam%2F1/fire%20escape-day.png").is_file());
    assert!(!cue.save_due(7.0, 60.0), "nothing changed since");

    // The next start: no learning needed, the goods read at once.
    let mut restarted = ObstructionCue::new(lane(), ObstructionParams::default());
    assert_eq!(restarted.load(dir.path(), "cam/1", "fire escape"), [Light::Day]);
    let goods = with_box(scene(1.0), 40, 50, 104, 90);
    restarted.observe(0.0, &goods, &[]);
    assert!(restarted.observe(0.5, &goods, &[]).unwrap().occupancy > 0.25);
    assert!(ObstructionCue::new(lane(), ObstructionParams::default()).load(dir.path(), "other", "x").is_empty());
}
