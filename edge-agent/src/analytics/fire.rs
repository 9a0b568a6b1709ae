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
//! Regions are per kind. **One fire, one event:** a fire's flames drift,
//! split into fronts and merge again, so a candidate joins an open event
//! when it is *near* it (it touches the event's box widened by its own size,
//! or the gap between the boxes is at most `merge_gap` of the frame), and a
//! candidate region that comes near an open event is folded into it
//! (windows combined); a region near an event that opens on the same frame
//! joins it instead of starting. So a second `start` only comes from a
//! region farther than that from every open event of its kind: a second
//! fire across the yard. The event ends when its fire (all its parts) has
//! been gone for `clear_s`. Candidates are never merged with each other:
//! scattered weak hits must not add up to a start.
//! Fire and smoke are separate kinds with their own thresholds; smoke
//! usually shows first, and nothing waits for the other.

use std::collections::VecDeque;

use super::flicker::FlickerStats;
use crate::config::{Fire, FireKind, Flicker, KindRule};
use crate::infer::fire::FireHit;
use crate::vocab::BBox;
use crate::vocab::Phase;

/// One analysed frame in a region's window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub(crate) t: f64,
    /// The region's best candidate score on this frame, if it hit.
    pub(crate) score: Option<f32>,
    pub(crate) bbox: Option<BBox>,
}

/// What the flicker check decided, with what it measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct FlickerVerdict {
    pub(crate) passed: bool,
    /// False when `[fire.flicker] enabled = false`: `passed` is then true.
    pub(crate) checked: bool,
    /// Seconds the region has been a candidate (smoke persistence).
    pub(crate) persisted_s: f64,
    /// Smoke only: a fire region that passed its own flicker check was next
    /// to this one, so the `near_fire_*` thresholds applied.
    pub(crate) near_fire: bool,
    /// Smoke only: everything passed but persistence (it has not been a
    /// candidate for `smoke_min_persist_s` yet): a wait, not a verdict on
    /// what the region looks like.
    #[serde(skip)]
    pub(crate) waiting: bool,
    #[serde(flatten)]
    pub(crate) stats: FlickerStats,
}

/// How often the flicker check judged a region that was otherwise ready to
/// start (k of n hits), and how often it said no: on footage that really
/// burns, every veto is a delay or a miss (`eval` reports it per kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct FlickerTally {
    pub(crate) judged: u32,
    pub(crate) vetoed: u32,
    /// Of the vetoes, smoke that only had not persisted long enough yet.
    pub(crate) waiting: u32,
}

/// A change in one region's event.
#[derive(Debug, Clone, PartialEq)]
pub struct FireTransition {
    pub(crate) kind: FireKind,
    pub(crate) phase: Phase,
    pub(crate) region: u64,
    /// The region's latest box.
    pub(crate) bbox: BBox,
    /// The window's samples, oldest first (`n` at most).
    pub(crate) window: Vec<Sample>,
    pub(crate) flicker: Option<FlickerVerdict>,
    /// Best score since `start`, and the current one.
    pub(crate) peak: f32,
    pub(crate) score: f32,
    /// Rule time of the first hit of the window that started the event.
    pub(crate) since: f64,
    /// On `end`: rule time of the last hit.
    pub(crate) ended_at: Option<f64>,
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
    /// Takes in `other`'s history: both windows end on the same frame (every
    /// region gets one sample per analysed frame), so they line up from the
    /// back; a frame hit when either part hit.
    fn absorb(&mut self, other: &Region) {
        for (mine, theirs) in self.window.iter_mut().rev().zip(other.window.iter().rev()) {
            mine.score = match (mine.score, theirs.score) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            mine.bbox = match (mine.bbox, theirs.bbox) {
                (Some(a), Some(b)) => Some(union(&a, &b)),
                (a, b) => a.or(b),
            };
        }
        self.first_hit = self.first_hit.min(other.first_hit);
        self.last_hit = self.last_hit.max(other.last_hit);
        if let (Some(open), Some(peak)) =
            (self.open.as_mut(), other.window.iter().filter_map(|s| s.score).reduce(f32::max))
        {
            open.peak = open.peak.max(peak);
        }
        if self.verdict.is_none() {
            self.verdict = other.verdict;
        }
    }

    /// Everywhere the region hit within its window: a large fire's heat-map
    /// breaks into fragments that move from frame to frame, so an event is
    /// as large as all of them, not the last frame's box.
    fn extent(&self) -> BBox {
        self.window.iter().filter_map(|s| s.bbox).fold(self.bbox, |a, b| union(&a, &b))
    }

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
    /// Per kind: the flicker check's verdicts on ready regions.
    tally: [FlickerTally; 2],
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
            tally: [FlickerTally::default(); 2],
        }
    }

    /// The flicker check's verdicts on ready regions so far, per kind
    /// (fire, smoke).
    pub(crate) fn tally(&self) -> [FlickerTally; 2] {
        self.tally
    }

    /// New parameters from a reload; regions being followed stay followed.
    pub(crate) fn reconfigure(&mut self, cfg: &Fire, update_interval_s: f64) {
        for k in &mut self.kinds {
            k.rule = cfg.rule(k.kind);
        }
        self.flicker = cfg.flicker;
        self.update_interval_s = update_interval_s;
    }

    pub(crate) fn flicker(&self) -> &Flicker {
        &self.flicker
    }

    pub(crate) fn rule(&self, kind: FireKind) -> &KindRule {
        &self.kinds[kind as usize].rule
    }

    /// Regions with an open event, for drawing: (kind, box).
    pub(crate) fn open_regions(&self) -> impl Iterator<Item = (FireKind, BBox)> + '_ {
        self.kinds.iter().flat_map(|k| k.regions.iter().filter(|r| r.open.is_some()).map(|r| (k.kind, r.bbox)))
    }

    /// Candidate regions not (yet) open, for drawing: (kind, box, hits in window).
    pub(crate) fn candidates(&self) -> impl Iterator<Item = (FireKind, BBox, usize)> + '_ {
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
                // An open event holds on to its fire or smoke as it drifts,
                // grows or splits: one fire, one event. Otherwise the
                // candidate region it overlaps most.
                let best = nearest_open(regions, &h.bbox, rule.merge_gap, None).or_else(|| {
                    regions
                        .iter()
                        .enumerate()
                        .map(|(i, r)| (i, overlap(&grow(&r.bbox), &h.bbox)))
                        .filter(|&(_, o)| o > 0.0)
                        .max_by(|a, b| a.1.total_cmp(&b.1))
                        .map(|(i, _)| i)
                });
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
            for (r, m) in regions.iter_mut().zip(&matched) {
                match *m {
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
            }
            fold_near(regions, &mut matched, rule.merge_gap);
            let mut i = 0;
            while i < regions.len() {
                // A part of a fire whose event opened on this very frame:
                // it joins that event (folded below), never starts its own.
                // Only a region that hit on this frame can become ready.
                let joins_open = matched[i].is_some()
                    && regions[i].open.is_none()
                    && nearest_open(regions, &regions[i].bbox, rule.merge_gap, Some(i)).is_some();
                let r = &mut regions[i];
                let m = matched[i];
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
                        if ready && r.verdict.is_some_and(|v| v.checked) {
                            self.tally[ki].judged += 1;
                            self.tally[ki].vetoed += u32::from(!passed);
                            self.tally[ki].waiting += u32::from(r.verdict.is_some_and(|v| v.waiting));
                            tracing::debug!(
                                t = now,
                                kind = kind.as_str(),
                                region = r.id,
                                passed,
                                "flicker verdict on a ready region"
                            );
                        }
                        if ready && passed && !joins_open {
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
            fold_near(regions, &mut matched, rule.merge_gap);
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
        return FlickerVerdict {
            passed: true,
            checked: false,
            persisted_s,
            near_fire,
            waiting: false,
            stats: FlickerStats::default(),
        };
    }
    let stats = measure();
    let looks = stats.frames >= f.min_frames
        && match kind {
            FireKind::Fire => {
                stats.colour_core >= f.fire_min_colour
                    && (stats.flame_change >= f.fire_min_flicker
                        || (stats.shape >= f.fire_min_shape && stats.change >= f.fire_min_change))
            }
            FireKind::Smoke => {
                stats.change >= f.smoke_min_change
                    && stats.chroma <= f.smoke_max_chroma
                    && stats.edges <= f.smoke_max_edges
            }
        };
    // Smoke rising from a confirmed flame needs no persistence.
    let persisted = kind == FireKind::Fire || near_fire || persisted_s >= f.smoke_min_persist_s;
    FlickerVerdict {
        passed: looks && persisted,
        checked: true,
        persisted_s,
        near_fire,
        waiting: looks && !persisted,
        stats,
    }
}

/// Folds every candidate region that is near an open event into that
/// event, so that a fire's new fronts add to its event instead of starting
/// their own. Candidates are never merged with each other (that would let
/// scattered weak hits add up to a start), and two open events (fires that
/// started far apart) never merge: each ends on its own.
fn fold_near(regions: &mut Vec<Region>, matched: &mut Vec<Option<(f32, BBox)>>, gap: f32) {
    let mut b = 0;
    while b < regions.len() {
        let target = regions[b].open.is_none().then(|| nearest_open(regions, &regions[b].bbox, gap, Some(b))).flatten();
        let Some(a) = target else {
            b += 1;
            continue;
        };
        let gone = regions.swap_remove(b);
        let gone_match = matched.swap_remove(b);
        // swap_remove moved the last region into `b`; `a` may have been it.
        let a = if a == regions.len() { b } else { a };
        regions[a].absorb(&gone);
        matched[a] = match (matched[a], gone_match) {
            (Some((s1, b1)), Some((s2, b2))) => Some((s1.max(s2), union(&b1, &b2))),
            (x, None) | (None, x) => x,
        };
        if let Some((_, bbox)) = matched[a] {
            regions[a].bbox = bbox;
        }
        // Index `b` now holds another region: look at it again.
    }
}

/// The open event that `bbox` is part of, if any: of the open regions (but
/// `skip`) whose extent is [`near_either`] it, the closest.
fn nearest_open(regions: &[Region], bbox: &BBox, gap: f32, skip: Option<usize>) -> Option<usize> {
    regions
        .iter()
        .enumerate()
        .filter(|&(i, r)| Some(i) != skip && r.open.is_some())
        .map(|(i, r)| (i, r.extent()))
        .filter(|(_, e)| near_either(e, bbox, gap))
        .max_by(|a, b| closeness(&a.1, bbox).total_cmp(&closeness(&b.1, bbox)))
        .map(|(i, _)| i)
}

/// Whether two boxes belong to one fire: `a` widened by its own size
/// touches `b`, or the gap between them is at most `gap` (frame fractions).
fn near(a: &BBox, b: &BBox, gap: f32) -> bool {
    overlap(&grow_by(a, 1.0), b) > 0.0 || box_gap(a, b) <= gap
}

/// [`near`] either way round: whichever of the two boxes is the larger, a
/// small new front next to a big fire and a big one next to a small fire
/// are both one fire.
fn near_either(a: &BBox, b: &BBox, gap: f32) -> bool {
    near(a, b, gap) || near(b, a, gap)
}

/// Larger is closer: the overlap of `b` with `a` widened, minus their gap.
fn closeness(a: &BBox, b: &BBox) -> f32 {
    overlap(&grow_by(a, 1.0), b) - box_gap(a, b)
}

/// The gap between two boxes along the axis where they are farthest apart
/// (0 when they overlap).
fn box_gap(a: &BBox, b: &BBox) -> f32 {
    let gx = (a.x1 - b.x2).max(b.x1 - a.x2).max(0.0);
    let gy = (a.y1 - b.y2).max(b.y1 - a.y2).max(0.0);
    gx.max(gy)
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
mod tests;
