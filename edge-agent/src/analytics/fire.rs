//! The fire rule: candidate regions from the fire model → `fire` and `smoke`
//! events, per camera and per region.
//!
//! One frame proves little, so the rule follows the wildfire systems
//! (Pyronear): a region *hits* on an analysed frame when a candidate there
//! scores at least `min_score` and covers between `min_area` and `max_area`
//! of the frame; it `start`s when at least `k` of its last `n` analysed
//! frames hit *and* the flicker check ([`super::flicker`]) says it behaves
//! like flame or smoke; it `end`s after `clear_s` without a hit.
//!
//! Regions are per kind: a candidate joins the region its box overlaps,
//! otherwise it opens a new one, so a second fire across the yard is a
//! second event. Fire and smoke are separate kinds with their own
//! thresholds; smoke usually shows first, and nothing waits for the other.

use std::collections::VecDeque;

use super::flicker::FlickerStats;
use super::Phase;
use crate::config::{Fire, FireKind, Flicker, KindRule};
use crate::infer::fire::FireHit;
use crate::infer::BBox;

/// One analysed frame in a region's window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: f64,
    /// The region's best candidate score on this frame, if it hit.
    pub score: Option<f32>,
    pub bbox: Option<BBox>,
}

/// What the flicker check decided, with what it measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FlickerVerdict {
    pub passed: bool,
    /// False when `[fire.flicker] enabled = false`: `passed` is then true.
    pub checked: bool,
    /// Seconds the region has been a candidate (smoke persistence).
    pub persisted_s: f64,
    /// Smoke only: a fire region that passed its own flicker check was next
    /// to this one, so the `near_fire_*` thresholds applied.
    pub near_fire: bool,
    #[serde(flatten)]
    pub stats: FlickerStats,
}

/// A change in one region's event.
#[derive(Debug, Clone, PartialEq)]
pub struct FireTransition {
    pub kind: FireKind,
    pub phase: Phase,
    pub region: u64,
    /// The region's latest box.
    pub bbox: BBox,
    /// The window's samples, oldest first (`n` at most).
    pub window: Vec<Sample>,
    pub flicker: Option<FlickerVerdict>,
    /// Best score since `start`, and the current one.
    pub peak: f32,
    pub score: f32,
    /// Rule time of the first hit of the window that started the event.
    pub since: f64,
    /// On `end`: rule time of the last hit.
    pub ended_at: Option<f64>,
}

#[derive(Debug, Clone)]
struct Region {
    id: u64,
    bbox: BBox,
    window: VecDeque<Sample>,
    /// First hit of the current run of candidate frames (no gap ≥ clear_s).
    first_hit: f64,
    last_hit: f64,
    open: Option<Open>,
    verdict: Option<FlickerVerdict>,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    since: f64,
    peak: f32,
    last_update: f64,
}

impl Region {
    /// Samples of the window scoring at least `min`.
    fn hits(&self, min: f32) -> usize {
        self.window.iter().filter(|s| s.score.is_some_and(|v| v >= min)).count()
    }

    fn transition(&self, kind: FireKind, phase: Phase, now: f64) -> FireTransition {
        let score = self.window.back().and_then(|s| s.score).unwrap_or(0.0);
        let open = self.open.unwrap_or(Open { since: now, peak: score, last_update: now });
        FireTransition {
            kind,
            phase,
            region: self.id,
            bbox: self.bbox,
            window: self.window.iter().copied().collect(),
            flicker: self.verdict,
            peak: open.peak,
            score,
            since: open.since,
            ended_at: (phase == Phase::End).then_some(self.last_hit),
        }
    }
}

/// One kind's regions on one camera.
#[derive(Debug, Clone)]
struct KindState {
    kind: FireKind,
    rule: KindRule,
    regions: Vec<Region>,
}

/// The fire rule of one camera.
#[derive(Debug, Clone)]
pub struct FireRule {
    kinds: [KindState; 2],
    flicker: Flicker,
    update_interval_s: f64,
    next_id: u64,
    /// Per kind, this frame's candidates that passed score and area.
    scratch: Vec<FireHit>,
    /// This frame's fire regions that passed the flicker check.
    lively: Vec<BBox>,
}

impl FireRule {
    pub fn new(cfg: &Fire, update_interval_s: f64) -> FireRule {
        let state = |kind| KindState { kind, rule: cfg.rule(kind), regions: Vec::new() };
        FireRule {
            kinds: [state(FireKind::Fire), state(FireKind::Smoke)],
            flicker: cfg.flicker,
            update_interval_s,
            next_id: 1,
            scratch: Vec::with_capacity(16),
            lively: Vec::with_capacity(4),
        }
    }

    /// New parameters from a reload; regions being followed stay followed.
    pub fn reconfigure(&mut self, cfg: &Fire, update_interval_s: f64) {
        for k in &mut self.kinds {
            k.rule = cfg.rule(k.kind);
        }
        self.flicker = cfg.flicker;
        self.update_interval_s = update_interval_s;
    }

    pub fn flicker(&self) -> &Flicker {
        &self.flicker
    }

    pub fn rule(&self, kind: FireKind) -> &KindRule {
        &self.kinds[kind as usize].rule
    }

    /// Regions with an open event, for drawing: (kind, box).
    pub fn open_regions(&self) -> impl Iterator<Item = (FireKind, BBox)> + '_ {
        self.kinds.iter().flat_map(|k| k.regions.iter().filter(|r| r.open.is_some()).map(|r| (k.kind, r.bbox)))
    }

    /// Candidate regions not (yet) open, for drawing: (kind, box, hits in window).
    pub fn candidates(&self) -> impl Iterator<Item = (FireKind, BBox, usize)> + '_ {
        self.kinds
            .iter()
            .flat_map(|k| k.regions.iter().filter(|r| r.open.is_none()).map(|r| (k.kind, r.bbox, r.hits(0.0))))
    }

    /// Feeds one analysed frame's candidates. `flicker` measures a region
    /// (called only for regions about to start, so its cost stays off the
    /// common path). Transitions are appended to `out`.
    pub fn observe(
        &mut self,
        now: f64,
        hits: &[FireHit],
        flicker: &mut dyn FnMut(FireKind, &BBox) -> FlickerStats,
        out: &mut Vec<FireTransition>,
    ) {
        // Fire regions that hit on this frame and behave like flame: smoke
        // next to one is corroborated (fire runs first, kinds are in order).
        self.lively.clear();
        for ki in 0..self.kinds.len() {
            let kind = self.kinds[ki].kind;
            let rule = self.kinds[ki].rule;
            let gate = match kind {
                FireKind::Fire => rule.min_score,
                FireKind::Smoke => rule.min_score.min(rule.near_fire_min_score),
            };
            self.scratch.clear();
            self.scratch.extend(hits.iter().filter(|h| {
                let a = h.bbox.area();
                h.kind == kind && h.score >= gate && a >= rule.min_area && a <= rule.max_area
            }));
            merge_overlapping(&mut self.scratch);
            // Each candidate joins the region it overlaps most; several
            // candidates on one region merge (union box, best score).
            let regions = &mut self.kinds[ki].regions;
            let mut matched: Vec<Option<(f32, BBox)>> = vec![None; regions.len()];
            for h in &self.scratch {
                let best = regions
                    .iter()
                    .enumerate()
                    // An open event holds on to its fire or smoke as it drifts
                    // or grows: one fire, one event.
                    .map(|(i, r)| (i, overlap(&grow_by(&r.bbox, if r.open.is_some() { 1.0 } else { 0.5 }), &h.bbox)))
                    .filter(|&(_, o)| o > 0.0)
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i);
                match best {
                    Some(i) => {
                        matched[i] = Some(match matched[i] {
                            Some((s, b)) => (s.max(h.score), union(&b, &h.bbox)),
                            None => (h.score, h.bbox),
                        })
                    }
                    None => {
                        regions.push(Region {
                            id: self.next_id,
                            bbox: h.bbox,
                            window: VecDeque::with_capacity(rule.n as usize + 1),
                            first_hit: now,
                            last_hit: now,
                            open: None,
                            verdict: None,
                        });
                        self.next_id += 1;
                        matched.push(Some((h.score, h.bbox)));
                    }
                }
            }
            let mut i = 0;
            while i < regions.len() {
                let r = &mut regions[i];
                let m = matched[i];
                match m {
                    Some((score, bbox)) => {
                        if now - r.last_hit >= rule.clear_s {
                            r.first_hit = now;
                        }
                        r.bbox = bbox;
                        r.last_hit = now;
                        r.window.push_back(Sample { t: now, score: Some(score), bbox: Some(bbox) });
                    }
                    None => r.window.push_back(Sample { t: now, score: None, bbox: None }),
                }
                while r.window.len() > rule.n as usize {
                    r.window.pop_front();
                }
                let mut remove = false;
                let near_fire = kind == FireKind::Smoke && self.lively.iter().any(|b| overlap(&grow(&r.bbox), b) > 0.0);
                // Corroboration only ever relaxes the rule.
                let (min, k) = if near_fire {
                    (rule.near_fire_min_score.min(rule.min_score), rule.near_fire_k.min(rule.k))
                } else {
                    (rule.min_score, rule.k)
                };
                match r.open.as_mut() {
                    None => {
                        let ready = m.is_some() && r.hits(min) >= k as usize;
                        // A fire region that hit is judged even before it is
                        // ready: its verdict is what corroborates smoke.
                        let judge_now = ready || (kind == FireKind::Fire && m.is_some());
                        if judge_now {
                            let verdict =
                                judge(&self.flicker, kind, now - r.first_hit, near_fire, || flicker(kind, &r.bbox));
                            r.verdict = Some(verdict);
                            if kind == FireKind::Fire && verdict.passed {
                                self.lively.push(r.bbox);
                            }
                        }
                        let passed = r.verdict.is_some_and(|v| v.passed);
                        if ready && passed {
                            let since = r.window.iter().find(|s| s.score.is_some()).map_or(now, |s| s.t);
                            let score = m.map_or(0.0, |(s, _)| s);
                            r.open = Some(Open { since, peak: score, last_update: now });
                            out.push(r.transition(kind, Phase::Start, now));
                        } else if r.hits(0.0) == 0 && now - r.last_hit >= rule.clear_s {
                            remove = true;
                        }
                    }
                    Some(open) => {
                        if kind == FireKind::Fire && m.is_some() {
                            self.lively.push(r.bbox);
                        }
                        if let Some((score, _)) = m {
                            open.peak = open.peak.max(score);
                            if now - open.last_update >= self.update_interval_s {
                                open.last_update = now;
                                out.push(r.transition(kind, Phase::Update, now));
                            }
                        } else if now - r.last_hit >= rule.clear_s {
                            out.push(r.transition(kind, Phase::End, now));
                            remove = true;
                        }
                    }
                }
                if remove {
                    regions.swap_remove(i);
                    matched.swap_remove(i);
                } else {
                    i += 1;
                }
            }
        }
    }
}

/// The flicker check's verdict for a region about to start.
fn judge(
    f: &Flicker,
    kind: FireKind,
    persisted_s: f64,
    near_fire: bool,
    measure: impl FnOnce() -> FlickerStats,
) -> FlickerVerdict {
    if !f.enabled {
        return FlickerVerdict { passed: true, checked: false, persisted_s, near_fire, stats: FlickerStats::default() };
    }
    let stats = measure();
    let passed = match kind {
        FireKind::Fire => {
            stats.colour >= f.fire_min_colour && stats.shape >= f.fire_min_shape && stats.change >= f.fire_min_change
        }
        FireKind::Smoke => {
            stats.change >= f.smoke_min_change
                && stats.chroma <= f.smoke_max_chroma
                && stats.edges <= f.smoke_max_edges
                // Smoke rising from a confirmed flame needs no persistence.
                && (near_fire || persisted_s >= f.smoke_min_persist_s)
        }
    };
    FlickerVerdict { passed, checked: true, persisted_s, near_fire, stats }
}

/// Merges candidates whose boxes overlap into one (union box, best score):
/// a box detector often puts several boxes on one fire.
fn merge_overlapping(hits: &mut Vec<FireHit>) {
    let mut merged = true;
    while merged {
        merged = false;
        'outer: for i in 0..hits.len() {
            for j in i + 1..hits.len() {
                if overlap(&hits[i].bbox, &hits[j].bbox) > 0.0 {
                    let other = hits.swap_remove(j);
                    hits[i].bbox = union(&hits[i].bbox, &other.bbox);
                    hits[i].score = hits[i].score.max(other.score);
                    merged = true;
                    break 'outer;
                }
            }
        }
    }
}

/// A region's box widened by half its size each way: flame and smoke move
/// and change shape between analysed frames.
fn grow(b: &BBox) -> BBox {
    grow_by(b, 0.5)
}

/// `b` widened by `f` times its size on each side.
fn grow_by(b: &BBox, f: f32) -> BBox {
    let (w, h) = ((b.x2 - b.x1) * f, (b.y2 - b.y1) * f);
    BBox { x1: b.x1 - w, y1: b.y1 - h, x2: b.x2 + w, y2: b.y2 + h }
}

/// Intersection over the smaller box: a flame's box grows and shrinks.
fn overlap(a: &BBox, b: &BBox) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let small = a.area().min(b.area());
    if small <= 0.0 {
        0.0
    } else {
        iw * ih / small
    }
}

fn union(a: &BBox, b: &BBox) -> BBox {
    BBox { x1: a.x1.min(b.x1), y1: a.y1.min(b.y1), x2: a.x2.max(b.x2), y2: a.y2.max(b.y2) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Fire {
        toml::from_str(&format!("path = \"x.onnx\"\n{text}")).unwrap()
    }

    fn hit(kind: FireKind, score: f32, x: f32) -> FireHit {
        FireHit { kind, score, bbox: BBox { x1: x, y1: 0.4, x2: x + 0.1, y2: 0.5 } }
    }

    /// Stats that pass every check.
    fn lively(_: FireKind, _: &BBox) -> FlickerStats {
        FlickerStats { frames: 10, colour: 0.3, shape: 0.4, change: 10.0, luma: 120.0, chroma: 10.0, edges: 3.0 }
    }

    fn still(_: FireKind, _: &BBox) -> FlickerStats {
        FlickerStats { frames: 10, colour: 0.3, shape: 0.0, change: 0.2, luma: 120.0, chroma: 10.0, edges: 3.0 }
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

    /// While open, updates come at most every `update_interval_s`.
    #[test]
    fn updates_are_rate_limited() {
        let mut rule = FireRule::new(&cfg("[fire]\nk = 1\nn = 1\n[flicker]\nenabled = false"), 2.0);
        let frames: Vec<Vec<FireHit>> = (0..9).map(|_| vec![hit(FireKind::Fire, 0.9, 0.3)]).collect();
        let phases: Vec<(f64, Phase)> = run(&mut rule, &frames, lively).into_iter().map(|(t, _, p)| (t, p)).collect();
        assert_eq!(phases, vec![(0.0, Phase::Start), (2.0, Phase::Update), (4.0, Phase::Update)]);
    }
}
