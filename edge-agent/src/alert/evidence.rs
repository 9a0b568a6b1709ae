//! Each rule's transition in a centre's words: the [`Draft`] of its event
//! message — evidence, the rule's parameters, the model, and what the
//! snapshot marks. [`super::compose`] does the rest, the same for every
//! rule.

use serde_json::json;

use super::compose::{Draft, EventKey};
use super::event::{Evidence, EvidenceObject, Scores};
use crate::analytics::{FallTransition, FireRule, FireTransition, LaneRule, LaneTransition};
use crate::config::{Falls, FireKind};
use crate::draw;
use crate::infer::pose::{Keypoint, KEYPOINT_NAMES};
use crate::infer::ModelInfo;
use crate::vocab::{BBox, EventKind, Severity};

/// A lane's blockage: the objects in it, or the obstruction cue's reading
/// (the changed cells, with the clear reference beside the frame).
pub(crate) fn lane(
    tr: &LaneTransition,
    rule: &LaneRule,
    labels: &[String],
    score_threshold: f32,
    model: &ModelInfo,
) -> Draft {
    let lane_cfg = rule.lane();
    let boxes: Vec<BBox> = tr.objects.iter().map(|d| d.bbox).collect();
    let changed: Vec<BBox> = tr.obstruction.as_ref().map_or_else(Vec::new, |r| r.changed.clone());
    // The clear reference the frame was compared with, beside it.
    let reference =
        tr.obstruction.as_ref().and_then(|r| rule.obstruction()?.reference(r.light)).map(|p| (p.to_rgb(), p.w, p.h));
    let polygon = rule.polygon().points.clone();
    let marks = Box::new(move |c: &mut draw::Canvas| {
        if let Some((rgb, w, h)) = &reference {
            c.inset(rgb, *w, *h, "clear reference");
        }
        c.polygon(&polygon, draw::YELLOW);
        // The obstruction cue's changed cells: why the lane reads blocked.
        for cell in &changed {
            c.rect(cell, draw::CYAN);
        }
        for b in &boxes {
            c.rect(b, draw::RED);
        }
    });
    let evidence = Evidence {
        objects: tr
            .objects
            .iter()
            .map(|d| EvidenceObject {
                label: labels.get(d.class_id).cloned().unwrap_or_else(|| d.class_id.to_string()),
                score: d.score,
                bbox: [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2],
                track_id: d.track_id,
            })
            .collect(),
        track_ids: tr.objects.iter().filter_map(|d| d.track_id).collect(),
        occupancy: Some(tr.occupancy),
        cause: Some(tr.cause),
        obstruction: tr.obstruction.as_ref().map(|r| {
            json!({
                "occupancy": r.occupancy,
                "light": r.light,
                "cells": r.cells,
                "considered": r.considered,
                "changed": r.changed.iter().map(|b| [b.x1, b.y1, b.x2, b.y2]).collect::<Vec<_>>(),
            })
        }),
        ..Evidence::default()
    };
    let rule_json = json!({
        "name": "lane_blocked",
        "lane": lane_cfg.name,
        "polygon": lane_cfg.polygon,
        "classes": lane_cfg.classes,
        "dwell_s": lane_cfg.dwell_s,
        "clear_s": lane_cfg.clear_s,
        "cue": lane_cfg.cue,
        "min_occupancy": lane_cfg.min_occupancy,
        "score_threshold": score_threshold,
    });
    Draft {
        kind: EventKind::LaneBlocked,
        key: EventKey::Lane(lane_cfg.name.clone()),
        phase: tr.phase,
        since: tr.since,
        ended: tr.cleared_at,
        severity: Severity::Warning,
        zone: Some(lane_cfg.name.clone()),
        score: Scores { peak: tr.peak, current: tr.score },
        evidence,
        rule: rule_json,
        model: model.clone(),
        marks,
    }
}

/// A fall: the person's box and skeleton, how long they have been down.
pub(crate) fn fall(tr: &FallTransition, params: &Falls, model: ModelInfo) -> Draft {
    let (bbox, keypoints, kp_min) = (tr.bbox, tr.keypoints, params.keypoint_score);
    let marks = Box::new(move |c: &mut draw::Canvas| {
        c.rect(&bbox, draw::RED);
        if let Some(k) = &keypoints {
            c.skeleton(k, kp_min, draw::RED);
        }
    });
    let b = tr.bbox;
    let evidence = Evidence {
        objects: vec![EvidenceObject {
            label: "person".into(),
            score: tr.score,
            bbox: [b.x1, b.y1, b.x2, b.y2],
            track_id: Some(tr.track_id),
        }],
        track_ids: vec![tr.track_id],
        keypoints: tr.keypoints.map(|k| keypoints_json(tr.track_id, &k)),
        down_s: Some((tr.down_s * 10.0).round() / 10.0),
        long_lie: Some(tr.long_lie),
        ..Evidence::default()
    };
    Draft {
        kind: EventKind::Fall,
        key: EventKey::Person(tr.track_id),
        phase: tr.phase,
        since: tr.fell_at,
        ended: tr.ended_at,
        // A fall is a warning until the person has stayed down
        // `long_lie_s`: then it is the emergency (README, "Falls").
        severity: if tr.long_lie { Severity::Critical } else { Severity::Warning },
        zone: None,
        score: Scores { peak: tr.peak, current: tr.score },
        evidence,
        rule: json!({ "name": "fall", "params": params, "fired_by": tr.trigger }),
        model,
        marks,
    }
}

/// Fire or smoke: the region, the model's recent hits in it, and the
/// flicker check's verdict. `now` is the rule time of the frame it was
/// decided on (the window's samples are given relative to it).
pub(crate) fn fire(tr: &FireTransition, now: f64, rule: &FireRule, fps: f64, model: &ModelInfo) -> Draft {
    let (kind, severity) = match tr.kind {
        FireKind::Fire => (EventKind::Fire, Severity::Critical),
        FireKind::Smoke => (EventKind::Smoke, Severity::Warning),
    };
    let hit_boxes: Vec<BBox> = tr.window.iter().filter_map(|s| s.bbox).collect();
    let (bbox, label) = (tr.bbox, tr.kind.as_str());
    let regions: Vec<[f32; 4]> = hit_boxes.iter().map(|b| [b.x1, b.y1, b.x2, b.y2]).collect();
    let marks = Box::new(move |c: &mut draw::Canvas| {
        for b in &hit_boxes {
            c.rect(b, draw::YELLOW);
        }
        c.rect(&bbox, draw::RED);
        c.label(&bbox, label, draw::RED);
    });
    let window: Vec<serde_json::Value> = tr
        .window
        .iter()
        .map(|s| json!({ "t_offset_s": ((s.t - now) * 1000.0).round() / 1000.0, "score": s.score }))
        .collect();
    let b = tr.bbox;
    let evidence = Evidence {
        objects: vec![EvidenceObject {
            label: label.into(),
            score: tr.score,
            bbox: [b.x1, b.y1, b.x2, b.y2],
            track_id: None,
        }],
        regions: Some(regions),
        window: Some(window),
        flicker: tr.flicker.map(|v| serde_json::to_value(v).unwrap_or_default()),
        ..Evidence::default()
    };
    Draft {
        kind,
        key: EventKey::Region(tr.kind, tr.region),
        phase: tr.phase,
        since: tr.since,
        ended: tr.ended_at,
        severity,
        zone: None,
        score: Scores { peak: tr.peak, current: tr.score },
        evidence,
        rule: json!({
            "name": label,
            "region": tr.region,
            "params": rule.rule(tr.kind),
            "fps": fps,
            "flicker": rule.flicker(),
        }),
        model: model.clone(),
        marks,
    }
}

/// A fall event's `evidence.keypoints`: the person's skeleton by keypoint
/// name, `[x, y, score]` each (see `contract/schema/event.schema.json`).
pub(crate) fn keypoints_json(track_id: u64, k: &[Keypoint; 17]) -> serde_json::Value {
    let named: serde_json::Map<String, serde_json::Value> =
        KEYPOINT_NAMES.iter().zip(k.iter()).map(|(n, p)| (n.to_string(), json!([p.x, p.y, p.score]))).collect();
    json!([{ "track_id": track_id, "points": named }])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fall payloads carry keypoints in the shape the published schema promises.
    #[test]
    fn keypoints_match_the_event_schema() {
        let schema: serde_json::Value = serde_json::from_str(alleywatch_contract::schema::EVENT).unwrap();
        let sub = &schema["properties"]["evidence"]["properties"]["keypoints"];
        let validator = jsonschema::validator_for(sub).unwrap();
        let mut k = [Keypoint::default(); 17];
        k[0] = Keypoint { x: 0.5, y: 0.25, score: 0.75 };
        let v = keypoints_json(7, &k);
        assert!(validator.is_valid(&v), "{v}");
        assert_eq!(v[0]["points"]["nose"], json!([0.5, 0.25, 0.75]));
        assert_eq!(v[0]["points"].as_object().unwrap().len(), 17);
        assert!(validator.is_valid(&serde_json::Value::Null));
        assert!(!validator.is_valid(&json!([{ "track_id": 1, "points": { "nose": [0.5] } }])));
    }
}
