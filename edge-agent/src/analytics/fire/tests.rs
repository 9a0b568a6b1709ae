//! Unit tests of `analytics::fire`.

use super::*;

fn cfg(text: &str) -> Fire {
    toml::from_str(&format!("path = \"x.onnx\"\n{text}")).unwrap()
}

fn hit(kind: FireKind, score: f32, x: f32) -> FireHit {
    FireHit { kind, score, bbox: BBox { x1: x, y1: 0.4, x2: x + 0.1, y2: 0.5 } }
}

/// Stats that pass every check.
fn lively(_: FireKind, _: &BBox) -> FlickerStats {
    FlickerStats {
        frames: 10,
        colour: 0.3,
        shape: 0.4,
        change: 10.0,
        colour_core: 0.5,
        flame_change: 20.0,
        luma: 120.0,
        chroma: 10.0,
        edges: 3.0,
    }
}

fn still(_: FireKind, _: &BBox) -> FlickerStats {
    FlickerStats {
        frames: 10,
        colour: 0.3,
        shape: 0.0,
        change: 0.2,
        colour_core: 0.5,
        flame_change: 0.2,
        luma: 120.0,
        chroma: 10.0,
        edges: 3.0,
    }
}

/// Feeds `frames` (hits per frame) at 2 fps; returns (time, kind, phase).
fn run(
    rule: &mut FireRule,
    frames: &[Vec<FireHit>],
    f: fn(FireKind, &BBox) -> FlickerStats,
) -> Vec<(f64, FireKind, Phase)> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    let mut measure = f;
    for (i, hits) in frames.iter().enumerate() {
        out.clear();
        let t = i as f64 * 0.5;
        rule.observe(t, hits, &mut measure, &mut out);
        seen.extend(out.iter().map(|tr| (t, tr.kind, tr.phase)));
    }
    seen
}

/// k of n: k − 1 hits never start; the k-th does, with the window's
/// scores and a `since` at the first hit; `clear_s` of misses end it.
#[test]
fn k_of_n_starts_and_clear_s_ends() {
    let mut rule = FireRule::new(&cfg("[fire]\nk = 3\nn = 5\nclear_s = 2.0\n[flicker]\nenabled = false"), 60.0);
    let f = |s| vec![hit(FireKind::Fire, s, 0.3)];
    let mut frames = vec![f(0.9), vec![], f(0.8), vec![], vec![], vec![], vec![], f(0.9), f(0.7), vec![], f(0.95)];
    frames.extend(std::iter::repeat_n(vec![], 5));
    let mut out = Vec::new();
    let mut all = Vec::new();
    for (i, hits) in frames.iter().enumerate() {
        rule.observe(i as f64 * 0.5, hits, &mut lively, &mut out);
        all.append(&mut out);
    }
    // Hits at 0.0, 1.0 (2 of 5), then the window slides past them;
    // 3.5, 4.0, 5.0 are 3 of the last 5 → start at 5.0.
    assert_eq!(all.len(), 2, "{all:?}");
    let start = &all[0];
    assert_eq!((start.phase, start.since), (Phase::Start, 3.5));
    let scores: Vec<Option<f32>> = start.window.iter().map(|s| s.score).collect();
    assert_eq!(scores, vec![None, Some(0.9), Some(0.7), None, Some(0.95)]);
    assert_eq!(start.peak, 0.95);
    assert!(!start.flicker.unwrap().checked);
    // Last hit 5.0; clear_s 2.0 → end at 7.0.
    assert_eq!(all[1].phase, Phase::End);
    assert_eq!(all[1].ended_at, Some(5.0));
}

/// Score and area gates: weak, tiny and frame-filling candidates never
/// count; fire and smoke keep separate thresholds.
#[test]
fn score_and_area_gates_per_kind() {
    let c = cfg(
        "[fire]\nk = 2\nn = 3\nmin_score = 0.6\n[smoke]\nk = 2\nn = 3\nmin_score = 0.3\n[flicker]\nenabled = false",
    );
    let weak_fire = vec![hit(FireKind::Fire, 0.5, 0.3), hit(FireKind::Smoke, 0.5, 0.6)];
    let mut rule = FireRule::new(&c, 60.0);
    let got = run(&mut rule, &[weak_fire.clone(), weak_fire], lively);
    assert_eq!(got, vec![(0.5, FireKind::Smoke, Phase::Start)]);
    let huge = FireHit { kind: FireKind::Fire, score: 0.99, bbox: BBox { x1: 0.0, y1: 0.0, x2: 1.0, y2: 1.0 } };
    let tiny = FireHit { kind: FireKind::Fire, score: 0.99, bbox: BBox { x1: 0.5, y1: 0.5, x2: 0.501, y2: 0.501 } };
    let mut rule = FireRule::new(&c, 60.0);
    assert_eq!(run(&mut rule, &[vec![huge, tiny], vec![huge, tiny], vec![huge, tiny]], lively), vec![]);
}

/// Overlapping candidates on one frame are one region; boxes that
/// touch a merged box join it too.
#[test]
fn overlapping_candidates_merge() {
    let b = |x1, x2| FireHit { kind: FireKind::Fire, score: x1, bbox: BBox { x1, y1: 0.1, x2, y2: 0.2 } };
    let mut hits = vec![b(0.1, 0.2), b(0.35, 0.45), b(0.15, 0.36), b(0.7, 0.8)];
    merge_overlapping(&mut hits);
    assert_eq!(hits.len(), 2, "{hits:?}");
    let first = hits.iter().find(|h| h.bbox.x1 == 0.1).unwrap();
    assert_eq!((first.bbox.x2, first.score), (0.45, 0.35));
}

/// Two separate candidates are two regions, hence two events.
#[test]
fn separate_regions_are_separate_events() {
    let mut rule = FireRule::new(&cfg("[fire]\nk = 2\nn = 3\n[flicker]\nenabled = false"), 60.0);
    let both = vec![hit(FireKind::Fire, 0.9, 0.1), hit(FireKind::Fire, 0.9, 0.7)];
    let got = run(&mut rule, &[both.clone(), both], lively);
    assert_eq!(got.len(), 2);
    assert_eq!(rule.open_regions().count(), 2);
}

/// With the flicker check on, a still region (a lamp) never starts; a
/// lively one does. Smoke must also persist `smoke_min_persist_s` and
/// be grey.
#[test]
fn flicker_suppresses_still_lights_and_short_puffs() {
    let c = cfg("[fire]\nk = 2\nn = 3\n[smoke]\nk = 2\nn = 3\n[flicker]\nsmoke_min_persist_s = 2.0");
    let frames: Vec<Vec<FireHit>> = (0..8).map(|_| vec![hit(FireKind::Fire, 0.9, 0.3)]).collect();
    let mut rule = FireRule::new(&c, 60.0);
    assert_eq!(run(&mut rule, &frames, still), vec![]);
    let mut rule = FireRule::new(&c, 60.0);
    assert_eq!(run(&mut rule, &frames, lively), vec![(0.5, FireKind::Fire, Phase::Start)]);
    let smoke: Vec<Vec<FireHit>> = (0..8).map(|_| vec![hit(FireKind::Smoke, 0.9, 0.3)]).collect();
    let mut rule = FireRule::new(&c, 60.0);
    // Candidate from 0.0; 2 s of persistence reached at 2.0.
    assert_eq!(run(&mut rule, &smoke, lively), vec![(2.0, FireKind::Smoke, Phase::Start)]);
    // A puff: three frames, then gone; never starts.
    let mut rule = FireRule::new(&c, 60.0);
    assert_eq!(run(&mut rule, &smoke[..3], lively), vec![]);
    // Lively but colourful (a flashing sign): never smoke.
    let mut rule = FireRule::new(&c, 60.0);
    assert_eq!(
        run(&mut rule, &smoke, |_, _| FlickerStats {
            chroma: 30.0,
            ..lively(FireKind::Smoke, &BBox { x1: 0.0, y1: 0.0, x2: 1.0, y2: 1.0 })
        }),
        vec![]
    );
}

/// Smoke below its own `min_score` starts after `near_fire_k` hits when
/// a fire region that passes the flicker check is next to it, without
/// waiting for persistence; next to a fire that fails the check (a
/// lamp), it does not start at all.
#[test]
fn smoke_next_to_a_lively_fire_is_corroborated() {
    let c = cfg("[fire]\nk = 7\nn = 7\n[smoke]\nmin_score = 0.8\nnear_fire_min_score = 0.5\nnear_fire_k = 3");
    let frame = vec![hit(FireKind::Fire, 0.9, 0.3), hit(FireKind::Smoke, 0.6, 0.35)];
    let frames: Vec<Vec<FireHit>> = (0..6).map(|_| frame.clone()).collect();
    let mut rule = FireRule::new(&c, 60.0);
    let mut out = Vec::new();
    let mut starts = Vec::new();
    for (i, hits) in frames.iter().enumerate() {
        rule.observe(i as f64 * 0.5, hits, &mut lively, &mut out);
        starts.extend(out.drain(..).map(|t| (i as f64 * 0.5, t.kind, t.flicker.map(|f| f.near_fire))));
    }
    assert_eq!(starts, vec![(1.0, FireKind::Smoke, Some(true))]);
    let mut rule = FireRule::new(&c, 60.0);
    assert_eq!(run(&mut rule, &frames, still), vec![]);
}

/// One fire whose flames split into fronts and drift across the frame
/// stays one event, and ends only once every part has been gone for
/// `clear_s`.
#[test]
fn a_fire_that_splits_and_drifts_is_one_event() {
    let mut rule = FireRule::new(&cfg("[fire]\nk = 2\nn = 3\nclear_s = 2.0\n[flicker]\nenabled = false"), 60.0);
    let f = |x: f32| hit(FireKind::Fire, 0.9, x);
    let mut frames = vec![vec![f(0.3)], vec![f(0.3)]];
    // Two fronts, 0.05 and 0.1 from the first box.
    frames.extend((0..4).map(|_| vec![f(0.25), f(0.45)]));
    // The far front carries on and drifts right; the near one dies out.
    frames.extend((0..6).map(|i| vec![f(0.5 + 0.05 * i as f32)]));
    frames.extend(std::iter::repeat_n(vec![], 6));
    let got = run(&mut rule, &frames, lively);
    let phases: Vec<Phase> = got.iter().map(|g| g.2).collect();
    assert_eq!(phases, vec![Phase::Start, Phase::End], "{got:?}");
    // Last hit at frame 11 (5.5 s); clear_s 2 → end at 7.5 s.
    assert_eq!(got[1].0, 7.5);
}

/// Fronts that show up apart on the same frames add up to one region
/// and start one event; a fire farther than `merge_gap` is a second.
#[test]
fn fronts_together_start_once_and_a_distant_fire_is_another() {
    let c = cfg("[fire]\nk = 2\nn = 3\nmerge_gap = 0.1\n[flicker]\nenabled = false");
    let mut rule = FireRule::new(&c, 60.0);
    let fronts = vec![hit(FireKind::Fire, 0.9, 0.3), hit(FireKind::Fire, 0.8, 0.48)];
    let got = run(&mut rule, &[fronts.clone(), fronts.clone(), fronts], lively);
    assert_eq!(got, vec![(0.5, FireKind::Fire, Phase::Start)]);
    assert_eq!(rule.open_regions().count(), 1);
    // The open region's box covers both fronts.
    let (_, b) = rule.open_regions().next().unwrap();
    assert!((b.x1 - 0.3).abs() < 1e-6 && (b.x2 - 0.58).abs() < 1e-6, "{b:?}");
    // 0.1 wide boxes 0.25 apart: with merge_gap 0.1, two fires.
    let mut rule = FireRule::new(&c, 60.0);
    let apart = vec![hit(FireKind::Fire, 0.9, 0.1), hit(FireKind::Fire, 0.9, 0.45)];
    let got = run(&mut rule, &[apart.clone(), apart], lively);
    assert_eq!(got.len(), 2, "{got:?}");
    // With merge_gap 0.3 they are one.
    let mut rule = FireRule::new(&cfg("[fire]\nk = 2\nn = 3\nmerge_gap = 0.3\n[flicker]\nenabled = false"), 60.0);
    let apart = vec![hit(FireKind::Fire, 0.9, 0.1), hit(FireKind::Fire, 0.9, 0.45)];
    assert_eq!(run(&mut rule, &[apart.clone(), apart], lively).len(), 1);
}

/// A large fire's heat-map breaks into fragments that wander: the event
/// is as large as everywhere it hit in its window, so a fragment next to
/// that extent (though not next to the last frame's box) joins it.
#[test]
fn fragments_of_a_large_fire_stay_one_event() {
    let f = |x: f32| hit(FireKind::Fire, 0.9, x);
    let frames = vec![vec![f(0.1)], vec![f(0.1)], vec![f(0.22)], vec![f(0.45)], vec![f(0.45)], vec![f(0.45)]];
    one_event_and_nothing_left_over(&frames);
}

/// Feeds `frames` with k = 2 of n = 3 and the check off: one fire event
/// starts on the second frame, and no candidate is left beside it.
fn one_event_and_nothing_left_over(frames: &[Vec<FireHit>]) {
    let mut rule = FireRule::new(&cfg("[fire]\nk = 2\nn = 3\nmerge_gap = 0.1\n[flicker]\nenabled = false"), 60.0);
    assert_eq!(run(&mut rule, frames, lively), vec![(0.5, FireKind::Fire, Phase::Start)]);
    assert_eq!(rule.candidates().count(), 0);
}

/// A candidate that appears near an open event later (a new front) is
/// folded into it instead of starting its own.
#[test]
fn a_new_front_next_to_an_open_fire_joins_it() {
    let mut frames: Vec<Vec<FireHit>> = (0..3).map(|_| vec![hit(FireKind::Fire, 0.9, 0.3)]).collect();
    frames.extend((0..5).map(|_| vec![hit(FireKind::Fire, 0.9, 0.3), hit(FireKind::Fire, 0.95, 0.48)]));
    one_event_and_nothing_left_over(&frames);
}

/// While open, updates come at most every `update_interval_s`.
#[test]
fn updates_are_rate_limited() {
    let mut rule = FireRule::new(&cfg("[fire]\nk = 1\nn = 1\n[flicker]\nenabled = false"), 2.0);
    let frames: Vec<Vec<FireHit>> = (0..9).map(|_| vec![hit(FireKind::Fire, 0.9, 0.3)]).collect();
    let phases: Vec<(f64, Phase)> = run(&mut rule, &frames, lively).into_iter().map(|(t, _, p)| (t, p)).collect();
    assert_eq!(phases, vec![(0.0, Phase::Start), (2.0, Phase::Update), (4.0, Phase::Update)]);
}
