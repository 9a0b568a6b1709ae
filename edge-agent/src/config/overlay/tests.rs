//! Unit tests of `config::overlay`.

use super::*;

/// A config file in `dir` (one camera with one lane; its model, a
/// stand-in, beside it; the state folder below `dir`).
pub(crate) fn base(dir: &Path) -> PathBuf {
    let model = dir.join("m.onnx");
    std::fs::write(&model, b"x").unwrap();
    let file = dir.join("agent.toml");
    std::fs::write(
        &file,
        format!(
            r#"agent_id = "a"
site = {{ district = "d", street = "s", community = "c" }}
broker = {{ host = "127.0.0.1" }}
detector = {{ path = "m.onnx", format = "nanodet", input_size = 416 }}
spool = {{ path = "{}/state/spool.sqlite" }}

[[cameras]]
id = "cam-1"
name = "One"
url = "rtsp://u:p@h/s"
lanes = [{{ name = "kerb", polygon = [[0, 0], [1, 0], [1, 1]], classes = ["car"], dwell_s = 30 }}]
"#,
            dir.display()
        ),
    )
    .unwrap();
    file
}

fn changes(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn set_changes_a_lane_persists_and_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = base(dir.path());
    let c = set(&file, &changes(serde_json::json!({"cameras.cam-1.lanes.kerb.dwell_s": 5})), "op").unwrap();
    assert_eq!(c.cameras[0].lanes[0].dwell_s, 5.0);
    assert_eq!(load(&file).unwrap().cameras[0].lanes[0].dwell_s, 5.0, "the overlay applies at every load");
    let c = set(&file, &changes(serde_json::json!({"falls.confirm_s": 0.6})), "op").unwrap();
    assert_eq!((c.falls.confirm_s, c.cameras[0].lanes[0].dwell_s), (0.6, 5.0), "changes accumulate");
}

#[test]
fn a_new_lane_can_be_drawn_and_bad_values_are_rejected_without_saving() {
    let dir = tempfile::tempdir().unwrap();
    let file = base(dir.path());
    let lane = serde_json::json!({
        "cameras.cam-1.lanes.door.polygon": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]],
        "cameras.cam-1.lanes.door.classes": ["car"],
        "cameras.cam-1.lanes.door.dwell_s": 10,
    });
    let c = set(&file, &changes(lane), "tech").unwrap();
    assert_eq!(c.cameras[0].lanes.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["kerb", "door"]);

    let e = set(&file, &changes(serde_json::json!({"cameras.cam-1.lanes.kerb.dwell_s": -1})), "op").unwrap_err();
    assert!(e.to_string().contains("cameras[0].lanes[0].dwell_s"), "{e}");
    assert_eq!(load(&file).unwrap().cameras[0].lanes[0].dwell_s, 30.0, "a rejected set is not saved");

    let e = set(&file, &changes(serde_json::json!({"cameras.cam-1.url": "rtsp://x"})), "op").unwrap_err();
    assert!(e.to_string().contains("cannot be set remotely"), "{e}");
    // What the box loads and how it decodes stays local too.
    for (key, value) in [
        ("detector.execution_provider", serde_json::json!("cuda")),
        ("detector.precision", serde_json::json!("int8")),
        ("detector.sessions", serde_json::json!(4)),
        ("cameras.cam-1.decode", serde_json::json!("keyframes")),
    ] {
        let e = set(&file, &changes(serde_json::json!({ key: value })), "op").unwrap_err();
        assert!(e.to_string().contains("cannot be set remotely"), "{key}: {e}");
    }
    let e = set(&file, &changes(serde_json::json!({"cameras.nope.lanes.kerb.dwell_s": 1})), "op").unwrap_err();
    assert!(e.to_string().contains("no camera \"nope\""), "{e}");
}

#[test]
fn a_camera_removed_from_the_file_does_not_stop_the_agent_loading() {
    let dir = tempfile::tempdir().unwrap();
    let file = base(dir.path());
    set(&file, &changes(serde_json::json!({"cameras.cam-1.lanes.kerb.dwell_s": 5})), "op").unwrap();
    let text = std::fs::read_to_string(&file).unwrap().replace("id = \"cam-1\"", "id = \"cam-2\"");
    std::fs::write(&file, text).unwrap();
    let c = load(&file).expect("the stale overlay key is skipped, not fatal");
    assert_eq!((c.cameras[0].id.as_str(), c.cameras[0].lanes[0].dwell_s), ("cam-2", 30.0));
}

/// What only the config file decides, as text: ids, names, URLs,
/// models, broker, HTTP, spool, source. A remote change must never
/// change any of it.
fn local_part(c: &Config) -> String {
    let d = &c.detector;
    format!(
        "{:?}",
        (
            (&c.agent_id, &c.site, format!("{:?}", c.broker), &c.ort_library, format!("{:?}", c.http)),
            (format!("{:?}", c.spool), format!("{:?}", c.source), c.pose.as_ref().map(|p| (&p.path, p.sha256.clone()))),
            (&d.path, d.format, d.input_size, &d.labels, &d.sha256, d.threads, d.sessions, d.batch, d.fps),
            (format!("{:?}", (d.precision, d.execution_provider, d.fallback, d.motion_gate))),
            c.fire.as_ref().map(|f| (&f.path, f.format.to_string(), f.input_size, &f.labels, &f.sha256, f.fps)),
            c.cameras.iter().map(|k| (&k.id, &k.name, &k.url, k.fps, k.analysis_width, k.decode)).collect::<Vec<_>>(),
        )
    )
}

#[test]
fn hostile_changes_are_refused_by_their_leaf_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = base(dir.path());
    let before = local_part(&load(&file).unwrap());
    let hostile = [
        // The review's two attacks.
        (serde_json::json!({"cameras": [{"id": "x", "name": "x", "url": "rtsp://elsewhere/s"}]}), "cameras[0]"),
        (serde_json::json!({"fire": {"path": "/dev/zero"}}), "fire.path"),
        (serde_json::json!({"fire.path": "/dev/zero"}), "fire.path"),
        // A table under an allowed prefix, or at an allowed leaf.
        (serde_json::json!({"cameras.cam-1.lanes.kerb": {"url": "rtsp://x"}}), "cameras.cam-1.lanes.kerb.url"),
        (serde_json::json!({"cameras.cam-1.lanes.kerb": {"dwell_s": 5}}), "cameras.cam-1.lanes.kerb"),
        (serde_json::json!({"falls": {"confirm_s": 1}}), "falls"),
        (serde_json::json!({"cameras.cam-1.lanes.kerb.dwell_s": {"x": 1}}), "cameras.cam-1.lanes.kerb.dwell_s"),
        (serde_json::json!({"cameras.cam-1.lanes.kerb.dwell_s": [1]}), "cameras.cam-1.lanes.kerb.dwell_s"),
        (serde_json::json!({"cameras.cam-1.lanes.kerb.polygon": [{"x": 1}]}), "cameras.cam-1.lanes.kerb.polygon[0]"),
        (serde_json::json!({"cameras.cam-1.lanes.kerb.classes": "car"}), "cameras.cam-1.lanes.kerb.classes"),
        (serde_json::json!({"cameras.cam-1": {"lanes": []}}), "cameras.cam-1.lanes"),
        // Renames, ids, and what the box connects to or loads.
        (serde_json::json!({"cameras.cam-1.lanes.kerb.name": "other"}), "cameras.cam-1.lanes.kerb.name"),
        (serde_json::json!({"cameras.cam-1.id": "cam-9"}), "cameras.cam-1.id"),
        (serde_json::json!({"cameras.cam-1.name": "x"}), "cameras.cam-1.name"),
        (serde_json::json!({"cameras.cam-1.snapshot_url": "rtsp://x"}), "cameras.cam-1.snapshot_url"),
        (serde_json::json!({"cameras.cam-1.fps": 30}), "cameras.cam-1.fps"),
        (serde_json::json!({"broker.host": "evil"}), "broker.host"),
        (serde_json::json!({"http.bind": "0.0.0.0:80"}), "http.bind"),
        (serde_json::json!({"spool.path": "/tmp/x"}), "spool.path"),
        (serde_json::json!({"spool.max_mb": 0.01}), "spool.max_mb"),
        (serde_json::json!({"source.latency_ms": 1}), "source.latency_ms"),
        (serde_json::json!({"ort_library": "/tmp/evil.so"}), "ort_library"),
        (serde_json::json!({"detector.path": "/dev/zero"}), "detector.path"),
        (serde_json::json!({"detector.sha256": "0"}), "detector.sha256"),
        (serde_json::json!({"detector.motion_gate.enabled": false}), "detector.motion_gate.enabled"),
        (serde_json::json!({"pose.path": "/dev/zero"}), "pose.path"),
        (serde_json::json!({"fire.fps": 30}), "fire.fps"),
        (serde_json::json!({"fire.labels": ["a"]}), "fire.labels[0]"),
        (serde_json::json!({"agent_id": "b"}), "agent_id"),
        (serde_json::json!({"overlay": 1}), "overlay"),
        (serde_json::json!({"cameras..lanes": 1}), "cameras..lanes"),
    ];
    for (change, at) in hostile {
        let e = set(&file, &changes(change.clone()), "attacker").unwrap_err();
        assert!(e.to_string().starts_with(&format!("{at}: ")), "{change}: {e}");
        assert!(!path_for(&load(&file).unwrap()).exists(), "{change}: nothing saved");
    }
    assert_eq!(local_part(&load(&file).unwrap()), before);
    let long = format!("falls.{}", "x".repeat(MAX_KEY_LEN));
    let e = set(&file, &changes(serde_json::json!({ long: 1 })), "a").unwrap_err();
    assert!(e.to_string().contains("longer than 256"), "{e}");
}

#[test]
fn every_rule_parameter_is_on_the_allow_list_and_nothing_else() {
    // The lists against the structs, so a new parameter is not silently
    // unsettable and a typo is not silently allowed.
    let keys = |v: serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let sorted = |l: &[&str]| -> Vec<String> {
        let mut k: Vec<String> = l.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    };
    assert_eq!(keys(serde_json::to_value(super::super::Falls::default()).unwrap()), sorted(FALLS));
    assert_eq!(keys(serde_json::to_value(super::super::Flicker::default()).unwrap()), sorted(FLICKER));
    let kind = super::super::fire::default_rule(super::super::FireKind::Fire);
    assert_eq!(keys(serde_json::to_value(kind).unwrap()), sorted(FIRE_KIND));
    let obstruction = crate::config::ObstructionParams::default();
    assert_eq!(keys(serde_json::to_value(obstruction).unwrap()), sorted(OBSTRUCTION));
    let c = load(&base(tempfile::tempdir().unwrap().path())).unwrap();
    let mut lane = keys(serde_json::to_value(&c.cameras[0].lanes[0]).unwrap());
    lane.retain(|k| k != "name");
    let mut allowed = sorted(LANE);
    allowed.extend(["classes".to_string(), "polygon".to_string()]);
    allowed.sort();
    assert_eq!(lane, allowed);
    // The keys without a Serialize impl: each is a real key (a value of
    // the right type is accepted, or refused by range, never as unknown).
    let dir = tempfile::tempdir().unwrap();
    let file = base(dir.path());
    for (section, list) in [("tracking", TRACKING), ("alerts", ALERTS), ("detector", DETECTOR)] {
        for k in list {
            let v = if *k == "escalate_min_severity" { serde_json::json!("critical") } else { serde_json::json!(1) };
            if let Err(e) = set(&file, &changes(serde_json::json!({ format!("{section}.{k}"): v })), "t") {
                assert!(!e.to_string().contains("unknown field"), "{section}.{k}: {e}");
            }
        }
    }
}

#[test]
fn a_corrupt_or_refused_overlay_is_set_aside_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = base(dir.path());
    let overlay = dir.path().join("state/overlay.toml");
    std::fs::create_dir_all(overlay.parent().unwrap()).unwrap();
    let refused_files = || {
        std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("overlay.toml.refused-"))
            .count()
    };
    for (text, why) in [
        ("[[set]\nkey = ", "TOML"),
        // Written by an older agent whose deny-list let this through.
        ("[[set]]\nkey = \"fire\"\nvalue = { path = \"/dev/zero\" }\n", "fire.path"),
        // Allowed key, but the merged config refuses the value.
        ("[[set]]\nkey = \"cameras.cam-1.lanes.kerb.dwell_s\"\nvalue = -4\n", "dwell_s"),
    ] {
        let n = refused_files();
        std::fs::write(&overlay, text).unwrap();
        assert!(load(&file).is_err(), "a reload still refuses it: {text}");
        let (c, aside) = load_at_start(&file).expect("the agent starts");
        let aside = aside.expect("set aside");
        assert!(aside.reason.contains(why), "{why}: {}", aside.reason);
        assert_eq!(c.cameras[0].lanes[0].dwell_s, 30.0, "the file alone");
        assert!(!overlay.exists());
        assert!(aside.moved_to.as_ref().is_some_and(|p| p.exists()));
        assert_eq!(refused_files(), n + 1);
        // The refused file's name tells when: UTC, compact.
        let name = aside.moved_to.unwrap().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.len() == "overlay.toml.refused-20250101T120000Z".len() && name.ends_with('Z'), "{name}");
        std::thread::sleep(std::time::Duration::from_millis(1100)); // distinct names per second
    }
    // A good overlay is applied, nothing set aside.
    set(&file, &changes(serde_json::json!({"cameras.cam-1.lanes.kerb.dwell_s": 7})), "op").unwrap();
    let (c, aside) = load_at_start(&file).unwrap();
    assert!(aside.is_none());
    assert_eq!(c.cameras[0].lanes[0].dwell_s, 7.0);
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// Real and hostile key segments.
    const SEGMENTS: &[&str] = &[
        "cameras",
        "cam-1",
        "cam-2",
        "lanes",
        "kerb",
        "door",
        "polygon",
        "classes",
        "dwell_s",
        "clear_s",
        "cue",
        "min_occupancy",
        "name",
        "id",
        "url",
        "path",
        "sha256",
        "falls",
        "confirm_s",
        "enabled",
        "fire",
        "smoke",
        "min_score",
        "flicker",
        "alerts",
        "escalate_after_s",
        "broker",
        "host",
        "spool",
        "http",
        "source",
        "ort_library",
        "detector",
        "score_threshold",
        "motion_gate",
        "pose",
        "tracking",
        "obstruction",
        "",
        "..",
        "0",
        "[0]",
        "fps",
    ];

    /// Whole key paths: allowed ones (so that some changes go through)
    /// and the attacks of the review.
    const KEYS: &[&str] = &[
        "cameras.cam-1.lanes.kerb.dwell_s",
        "cameras.cam-1.lanes.door.dwell_s",
        "cameras.cam-1.lanes.door.polygon",
        "cameras.cam-1.lanes.door.classes",
        "cameras.cam-1.lanes.kerb.cue",
        "cameras.cam-1.falls.confirm_s",
        "cameras.cam-1.fire",
        "falls.confirm_s",
        "alerts.escalate_after_s",
        "cameras",
        "cameras.cam-1",
        "cameras.cam-1.url",
        "fire",
        "fire.path",
    ];

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(prop::sample::select(SEGMENTS), 1..7).prop_map(|p| p.join(".")),
            prop::sample::select(KEYS).prop_map(str::to_string),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| serde_json::json!(i)),
            (-2.0f64..2.0).prop_map(|f| serde_json::json!(f)),
            (0.0f64..60.0).prop_map(|f| serde_json::json!(f)),
            Just(serde_json::json!([[0.1, 0.1], [0.6, 0.1], [0.6, 0.6]])),
            Just(serde_json::json!(["car"])),
            "[a-z/:.]{0,12}".prop_map(Value::String),
            (0usize..3).prop_map(|i| Value::String(["car", "objects", "/dev/zero"][i].into())),
            (1usize..20_000).prop_map(|n| Value::String("x".repeat(n))),
        ];
        leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(SEGMENTS), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]
        /// Random `set` changes: never a panic, one result per call, and
        /// the config only ever changes through allowed leaves.
        #[test]
        fn random_changes_only_ever_touch_allowed_leaves(
            batch in prop::collection::vec(prop::collection::vec((key(), value()), 1..4), 1..4)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let file = base(dir.path());
            let before = local_part(&load(&file).unwrap());
            for change in batch {
                let map: serde_json::Map<String, Value> = change.into_iter().collect();
                let saved = std::fs::read(path_for(&load(&file).unwrap())).ok();
                match set(&file, &map, "fuzz") {
                    Ok(_) => {
                        for (k, v) in &map {
                            prop_assert!(check_change(k, v).is_ok(), "{k} accepted");
                        }
                    }
                    Err(_) => {
                        let now = std::fs::read(path_for(&load(&file).unwrap())).ok();
                        prop_assert_eq!(now, saved, "a refused set saves nothing");
                    }
                }
                let (c, aside) = load_at_start(&file).unwrap();
                prop_assert!(aside.is_none(), "a saved overlay always loads");
                prop_assert_eq!(local_part(&c), before.clone());
                for (k, v) in read(&path_for(&c)).unwrap() {
                    prop_assert!(check_change(&k, &v).is_ok(), "{k} in the overlay");
                }
            }
        }
    }

    /// Property cases per run (see the notes: the count is reported).
    pub(crate) const CASES: u32 = 256;
}
