//! Scripted sequences at 5 fps through the real person tracker and the
//! rule. Boxes are normalised; the frame is 16:9. A standing person is
//! 0.1 wide and 0.6 tall (pixel aspect 0.3).
use super::*;
use crate::analytics::tracker::{Tracker, TrackerParams};
use crate::infer::pose::kp;
use crate::infer::Detection;

const DT: f64 = 0.2;
const STAND: [f32; 4] = [0.45, 0.2, 0.55, 0.8];

fn b(v: [f32; 4]) -> BBox {
    BBox { x1: v[0], y1: v[1], x2: v[2], y2: v[3] }
}

struct Script {
    tracker: Tracker,
    rule: FallRule,
    t: f64,
    log: Vec<(f64, Phase, f64)>,
    triggers: Vec<FallFeatures>,
    /// Every transition, `update`s included (`log` and `phases` leave
    /// the still-down updates out).
    all: Vec<(f64, FallTransition)>,
    thumbs: Option<(Thumb, Thumb)>,
}

impl Script {
    fn new() -> Script {
        let params = TrackerParams {
            high: 0.2,
            low: 0.05,
            match_iou: 0.3,
            low_match_iou: 0.2,
            min_hits: 2,
            max_age_s: 2.0,
            predict: false,
        };
        Script {
            tracker: Tracker::new(params),
            rule: FallRule::new(Falls::default(), 0.2),
            t: 0.0,
            log: Vec::new(),
            triggers: Vec::new(),
            all: Vec::new(),
            thumbs: None,
        }
    }

    /// One frame with these people (box, score).
    fn frame(&mut self, people: &[([f32; 4], f32)]) {
        let poses: Vec<Pose> =
            people.iter().map(|(v, s)| Pose { bbox: b(*v), score: *s, keypoints: body(b(*v)) }).collect();
        let dets: Vec<Detection> =
            poses.iter().map(|p| Detection { bbox: p.bbox, class_id: 0, score: p.score, track_id: None }).collect();
        let pinned: Vec<u64> = self.rule.pinned().collect();
        self.tracker.update_pinned(self.t, &dets, &pinned);
        let mut out = Vec::new();
        let thumbs = self.thumbs.as_ref().map(|(a, b)| (a, b));
        self.rule.observe(self.t, self.tracker.tracks(), &poses, thumbs, 16.0 / 9.0, &mut out);
        for tr in out {
            self.all.push((self.t, tr.clone()));
            if tr.phase == Phase::Update {
                continue;
            }
            self.log.push((self.t, tr.phase, tr.fell_at));
            self.triggers.push(tr.trigger);
        }
        self.t += DT;
    }

    /// `n` frames of the same people.
    fn hold(&mut self, n: usize, people: &[([f32; 4], f32)]) {
        for _ in 0..n {
            self.frame(people);
        }
    }

    fn phases(&self) -> Vec<Phase> {
        self.log.iter().map(|l| l.1).collect()
    }
}

/// Runs `scenario` with the default parameters and with `weakened`
/// ones (one guard switched off). The negative tests assert that the
/// default stays silent *and* that the weakened rule fires, so each test
/// proves its guard is what holds.
fn with_and_without(weakened: Falls, scenario: impl Fn(&mut Script)) -> (Vec<Phase>, Vec<Phase>) {
    let mut a = Script::new();
    scenario(&mut a);
    let mut b = Script::new();
    b.rule = FallRule::new(weakened, 0.2);
    scenario(&mut b);
    (a.phases(), b.phases())
}

/// A skeleton filling the box: head up for a tall box, lying head-left
/// for a wide one (pixel aspect over 1).
fn body(bx: BBox) -> [Keypoint; 17] {
    let (w, h) = (bx.x2 - bx.x1, bx.y2 - bx.y1);
    let lying = w * 16.0 / 9.0 > h;
    // Position along the body (0 head, 1 feet) and across it (-1..1).
    let at = |along: f32, across: f32| {
        let (x, y) = if lying {
            (bx.x1 + along * w, bx.y1 + h / 2.0 + across * h * 0.3)
        } else {
            (bx.x1 + w / 2.0 + across * w * 0.3, bx.y1 + along * h)
        };
        Keypoint { x, y, score: 0.6 }
    };
    let mut k = [Keypoint::default(); 17];
    k[kp::NOSE] = at(0.05, 0.0);
    k[kp::LEFT_EAR] = at(0.05, -0.3);
    k[kp::RIGHT_EAR] = at(0.05, 0.3);
    k[kp::LEFT_SHOULDER] = at(0.2, -1.0);
    k[kp::RIGHT_SHOULDER] = at(0.2, 1.0);
    k[kp::LEFT_HIP] = at(0.55, -0.6);
    k[kp::RIGHT_HIP] = at(0.55, 0.6);
    k[kp::LEFT_ANKLE] = at(1.0, -0.5);
    k[kp::RIGHT_ANKLE] = at(1.0, 0.5);
    k
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Standing for 2 s, then down within 0.4 s.
fn fall(s: &mut Script) {
    s.hold(10, &[(STAND, 0.6)]);
    s.frame(&[([0.42, 0.4, 0.6, 0.84], 0.4)]); // t = 2.0, going down
    s.frame(&[([0.38, 0.6, 0.68, 0.85], 0.3)]); // t = 2.2, collapsed
}

#[test]
fn fast_fall_starts_after_confirm_then_recovers() {
    let mut s = Script::new();
    fall(&mut s);
    // Lying: the pose model scores low, the tracker's second stage keeps it.
    s.hold(10, &[([0.38, 0.6, 0.68, 0.85], 0.12)]);
    assert_eq!(s.log.len(), 1, "{:?}", s.log);
    let (t, phase, fell_at) = s.log[0];
    assert_eq!(phase, Phase::Start);
    assert!(close(fell_at, 2.2), "collapse seen at 2.2, got {fell_at}");
    assert!(close(t, 2.8), "start after confirm_s 0.6, got {t}");
    // What fired it, as the event reports it.
    let f = s.triggers[0];
    assert_eq!(f.path, "pose");
    assert!(f.height_ratio < 0.45 && f.drop > 0.6 && f.width_ratio > 1.5, "{f:?}");
    assert!(f.torso_deg.is_some_and(|a| a > 80.0), "lying skeleton: {f:?}");
    assert!(f.hip_speed.is_some_and(|v| v > 0.1), "hips went down: {f:?}");
    assert_eq!(s.rule.down().count(), 1);
    // Getting up, through a crouch, then upright for recover_s.
    s.frame(&[([0.42, 0.4, 0.6, 0.84], 0.4)]);
    s.hold(15, &[(STAND, 0.6)]);
    assert_eq!(s.phases(), vec![Phase::Start, Phase::End]);
    assert_eq!(s.rule.down().count(), 0);
}

#[test]
fn staying_down_sends_updates_with_the_time_down_and_then_the_long_lie() {
    let mut s = Script::new();
    fall(&mut s); // collapse seen at 2.2
    s.hold(380, &[([0.38, 0.6, 0.68, 0.85], 0.12)]); // 76 s down
    let phases: Vec<Phase> = s.all.iter().map(|(_, tr)| tr.phase).collect();
    assert_eq!(phases[0], Phase::Start);
    assert!(phases[1..].iter().all(|p| *p == Phase::Update), "{phases:?}");
    let (t0, start) = &s.all[0];
    assert!(!start.long_lie, "a fall is not a long lie at its start");
    assert!(close(start.down_s, t0 - 2.2), "down since the collapse: {}", start.down_s);
    // Every update says how long, growing; the one at long_lie_s (60 s
    // after the collapse) raises the flag, which then stays up.
    let mut last = start.down_s;
    let mut long_at = None;
    for (t, tr) in &s.all[1..] {
        assert!(tr.down_s > last && close(tr.down_s, t - 2.2), "{} after {last}", tr.down_s);
        last = tr.down_s;
        if tr.long_lie && long_at.is_none() {
            long_at = Some(*t);
        }
        assert_eq!(tr.long_lie, long_at.is_some(), "the flag never drops at {t}");
    }
    let long_at = long_at.expect("a long-lie update");
    assert!((62.2 - 1e-6..62.2 + DT).contains(&long_at), "long lie at 60 s down: {long_at}");
    // Start at 2.8; updates every down_update_s (15 s) and the long-lie one.
    let times: Vec<f64> = s.all[1..].iter().map(|(t, _)| *t).collect();
    assert_eq!(times.len(), 5, "{times:?}");
    for (got, want) in times.iter().zip([17.8, 32.8, 47.8, 62.2, 77.2]) {
        assert!((got - want).abs() < DT, "{times:?}");
    }
}

#[test]
fn getting_up_sends_no_update_and_a_reload_to_zero_raises_an_open_fall() {
    let mut s = Script::new();
    fall(&mut s);
    s.hold(70, &[([0.38, 0.6, 0.68, 0.85], 0.12)]); // down until t = 16.4
    s.frame(&[([0.42, 0.4, 0.6, 0.84], 0.4)]);
    s.hold(12, &[(STAND, 0.6)]); // upright from 16.6 (end at 18.6), past the 17.8 update
    let phases: Vec<Phase> = s.all.iter().map(|(_, tr)| tr.phase).collect();
    assert_eq!(phases, vec![Phase::Start, Phase::End], "no update while getting up");

    let mut s = Script::new();
    fall(&mut s);
    s.hold(10, &[([0.38, 0.6, 0.68, 0.85], 0.12)]);
    assert!(!s.all[0].1.long_lie);
    s.rule.set_params(Falls { long_lie_s: 0.0, ..Falls::default() });
    s.frame(&[([0.38, 0.6, 0.68, 0.85], 0.12)]);
    let (_, last) = s.all.last().expect("an update");
    assert!(last.phase == Phase::Update && last.long_lie, "0 means critical now, for an open fall too");
}

#[test]
fn long_lie_zero_is_critical_from_the_start_and_end_says_how_long() {
    let mut s = Script::new();
    s.rule = FallRule::new(Falls { long_lie_s: 0.0, down_update_s: 0.0, ..Falls::default() }, 0.2);
    fall(&mut s);
    s.hold(100, &[([0.38, 0.6, 0.68, 0.85], 0.12)]);
    s.frame(&[([0.42, 0.4, 0.6, 0.84], 0.4)]); // getting up, through a crouch
    s.hold(15, &[(STAND, 0.6)]);
    let phases: Vec<Phase> = s.all.iter().map(|(_, tr)| tr.phase).collect();
    assert_eq!(phases, vec![Phase::Start, Phase::End], "no updates with down_update_s 0");
    assert!(s.all[0].1.long_lie && s.all[1].1.long_lie);
    let end = &s.all[1].1;
    let ended = end.ended_at.expect("end time");
    assert!(close(end.down_s, ended - 2.2), "down from the collapse to getting up: {}", end.down_s);
}

#[test]
fn lost_fallen_person_ends_after_lost_s_not_before() {
    let mut s = Script::new();
    fall(&mut s);
    s.hold(5, &[([0.38, 0.6, 0.68, 0.85], 0.12)]); // start at 2.8
    let last_seen = s.t - DT;
    // Occlusion gap of 4 s: the tracker keeps the pinned track, no end.
    s.hold(20, &[]);
    assert_eq!(s.phases(), vec![Phase::Start]);
    s.hold(5, &[([0.38, 0.6, 0.68, 0.85], 0.1)]);
    assert_eq!(s.phases(), vec![Phase::Start], "seen again: still the same event, no second start");
    let seen_again = s.t - DT;
    s.hold(60, &[]);
    assert_eq!(s.phases(), vec![Phase::Start, Phase::End]);
    let (t_end, _, _) = s.log[1];
    assert!(t_end >= seen_again + 10.0 - 1e-6 && t_end < seen_again + 10.0 + DT, "end at lost_s: {t_end}");
    assert!(last_seen < seen_again);
}

#[test]
fn slow_sit_is_not_a_fall() {
    let (rule, weak) = with_and_without(Falls { fall_height_ratio: 0.8, ..Falls::default() }, |s| {
        s.hold(10, &[(STAND, 0.6)]);
        // Over 2 s the box loses 0.18 of its 0.6 height and stays there: seated.
        for i in 1..=10 {
            let k = i as f32 / 10.0;
            s.frame(&[([0.44, 0.2 + 0.18 * k, 0.56 + 0.02 * k, 0.8], 0.55)]);
        }
        s.hold(20, &[([0.44, 0.38, 0.58, 0.8], 0.5)]);
    });
    assert!(rule.is_empty(), "{rule:?}");
    assert_eq!(weak, vec![Phase::Start], "a looser height ratio would call sitting a fall");
}

#[test]
fn bending_over_is_not_a_fall() {
    let weak = Falls { fall_height_ratio: 0.8, down_height_ratio: 0.8, ..Falls::default() };
    let (rule, weak) = with_and_without(weak, |s| {
        s.hold(10, &[(STAND, 0.6)]);
        // Picking something up: the box drops to 0.75 of its height, wider, and back.
        s.frame(&[([0.43, 0.3, 0.6, 0.8], 0.5)]);
        s.hold(4, &[([0.42, 0.36, 0.62, 0.8], 0.4)]);
        s.frame(&[([0.43, 0.3, 0.6, 0.8], 0.5)]);
        s.hold(10, &[(STAND, 0.6)]);
    });
    assert!(rule.is_empty(), "{rule:?}");
    assert_eq!(weak[0], Phase::Start, "the hips-stay-high margin is what holds");
}

#[test]
fn lying_from_the_start_is_not_a_fall() {
    let mut s = Script::new();
    // Someone (or a "person" on a table base) lies there from the first frame.
    s.hold(50, &[([0.3, 0.65, 0.7, 0.85], 0.35)]);
    assert!(s.log.is_empty(), "no standing reference, no fall: {:?}", s.log);
}

#[test]
fn walking_out_of_frame_is_not_a_fall() {
    let (rule, weak) = with_and_without(Falls { min_width_ratio: 0.0, ..Falls::default() }, |s| {
        s.hold(10, &[([0.87, 0.2, 0.97, 0.8], 0.6)]);
        // Leaving at the right edge: the box is cut, narrow and short.
        s.frame(&[([0.91, 0.35, 0.99, 0.8], 0.4)]);
        s.frame(&[([0.94, 0.55, 0.995, 0.8], 0.3)]);
        s.hold(10, &[]);
    });
    assert!(rule.is_empty(), "{rule:?}");
    assert_eq!(weak, vec![Phase::Start], "without the width guard the cut box looks like a collapse");
}

/// Thumbnails where the region below `y_from` changed (a body going down).
fn burst(y_from: f32) -> (Thumb, Thumb) {
    let (w, h) = (96u32, 54u32);
    let prev = Thumb { w, h, px: vec![50; (w * h) as usize] };
    let mut cur = prev.clone();
    for y in (y_from * h as f32) as u32..h {
        for x in 0..w {
            cur.px[(y * w + x) as usize] = 160;
        }
    }
    (cur, prev)
}

fn still() -> (Thumb, Thumb) {
    let t = Thumb { w: 96, h: 54, px: vec![50; 96 * 54] };
    (t.clone(), t)
}

#[test]
fn vanishing_with_a_low_burst_of_motion_is_a_fall() {
    let mut s = Script::new();
    s.thumbs = Some(still());
    s.hold(15, &[(STAND, 0.5)]);
    // The pose model loses the person as they go down; the lower part of
    // where they stood churns…
    s.thumbs = Some(burst(0.55));
    s.hold(2, &[]);
    assert!(s.log.is_empty());
    // …then everything is still: down.
    s.thumbs = Some(still());
    s.hold(5, &[]);
    assert_eq!(s.phases(), vec![Phase::Start], "{:?}", s.log);
}

#[test]
fn vanishing_behind_another_person_is_not_a_fall() {
    let weak = Falls { occlusion_ioa: 2.0, reappear_dist: 0.0, ..Falls::default() };
    let (rule, weak) = with_and_without(weak, |s| {
        s.thumbs = Some(still());
        // A stands still while B, nearer the camera (taller), walks
        // across in front of them.
        let b_at = |x: f32| ([x, 0.1, x + 0.16, 0.95], 0.6);
        s.hold(10, &[(STAND, 0.5), b_at(0.1)]);
        for i in 1..=8 {
            s.frame(&[(STAND, 0.5), b_at(0.1 + 0.04 * i as f32)]);
        }
        // B now covers A: A vanishes, and B's legs churn the region.
        s.thumbs = Some(burst(0.55));
        s.hold(2, &[b_at(0.42)]);
        s.thumbs = Some(still());
        s.hold(5, &[b_at(0.42)]);
    });
    assert!(rule.is_empty(), "occluded, not fallen: {rule:?}");
    assert_eq!(weak, vec![Phase::Start], "the occlusion guard is what holds");
}

#[test]
fn vanish_cancelled_when_the_person_reappears_upright() {
    let (rule, weak) = with_and_without(Falls { reappear_dist: 0.0, ..Falls::default() }, |s| {
        s.thumbs = Some(still());
        s.hold(15, &[(STAND, 0.5)]);
        s.thumbs = Some(burst(0.55));
        s.hold(2, &[]);
        // Back in view, upright, beside where they vanished: too far to
        // match the old track, close enough to be the same person.
        s.thumbs = Some(still());
        s.hold(5, &[([0.56, 0.21, 0.66, 0.8], 0.5)]);
    });
    assert!(rule.is_empty(), "{rule:?}");
    assert_eq!(weak, vec![Phase::Start]);
}

#[test]
fn a_bystander_already_there_does_not_cancel_a_vanish_fall() {
    let mut s = Script::new();
    s.thumbs = Some(still());
    // A caregiver stands right beside the person the whole time.
    let carer = ([0.56, 0.2, 0.66, 0.8], 0.6);
    s.hold(15, &[(STAND, 0.5), carer]);
    s.thumbs = Some(burst(0.55));
    s.hold(2, &[carer]);
    s.thumbs = Some(still());
    s.hold(5, &[carer]);
    assert_eq!(s.phases(), vec![Phase::Start], "{:?}", s.log);
}

#[test]
fn getting_up_ends_the_event_even_when_scored_low() {
    let mut s = Script::new();
    fall(&mut s);
    s.hold(5, &[([0.38, 0.6, 0.68, 0.85], 0.12)]);
    // Up again, but the model only gives them 0.1 (under track_score).
    s.frame(&[([0.42, 0.4, 0.6, 0.84], 0.1)]);
    s.hold(15, &[(STAND, 0.1)]);
    assert_eq!(s.phases(), vec![Phase::Start, Phase::End]);
}

#[test]
fn lost_s_zero_does_not_end_an_event_while_the_person_is_seen() {
    let mut s = Script::new();
    s.rule = FallRule::new(Falls { lost_s: 0.0, ..Falls::default() }, 0.2);
    fall(&mut s);
    s.hold(10, &[([0.38, 0.6, 0.68, 0.85], 0.12)]);
    assert_eq!(s.phases(), vec![Phase::Start]);
    s.frame(&[]);
    assert_eq!(s.phases(), vec![Phase::Start, Phase::End], "unseen: ends at once");
}

#[test]
fn motion_cue_off_means_no_vanish_path() {
    let mut s = Script::new();
    s.rule = FallRule::new(Falls { vanish: false, ..Falls::default() }, 0.2);
    s.thumbs = Some(still());
    s.hold(15, &[(STAND, 0.5)]);
    s.thumbs = Some(burst(0.55));
    s.hold(2, &[]);
    s.thumbs = Some(still());
    s.hold(5, &[]);
    assert!(s.log.is_empty());
}
