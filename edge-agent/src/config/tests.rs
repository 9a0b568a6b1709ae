//! Unit tests of `config`.

use super::*;

const GOOD: &str = r#"agent_id = "edge-1"
site = { district = "d", street = "s", community = "c" }

[broker]
host = "127.0.0.1"

[detector]
path = "m.onnx"
format = "nanodet"
input_size = 416

[[cameras]]
id = "cam-1"
name = "Camera 1"
url = "rtsp://u:p@10.0.0.1/sub"
lanes = [{ name = "lane", polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]], classes = ["car"], dwell_s = 30 }]
"#;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
}

/// `GOOD` with one substring replaced; the replacement must apply.
fn bad(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} not in GOOD");
    let text = GOOD.replacen(from, to, 1);
    parse(&text).expect_err("config should be rejected")
}

#[test]
fn obstruction_thresholds_are_checked() {
    let e = bad("[[cameras]]", "[obstruction]\nmotion_hold_s = -1\n\n[[cameras]]");
    assert!(e.contains("obstruction.motion_hold_s: -1 must be ≥ 0"), "{e}");
    let e = bad("[[cameras]]", "[obstruction]\nncc_min = 2\n\n[[cameras]]");
    assert!(e.contains("obstruction.ncc_min"), "{e}");
}

#[test]
fn good_config_parses_with_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.broker.port, 1883);
    assert_eq!(c.broker.topic_root, "alleywatch");
    assert_eq!(c.cameras[0].fps, 5.0);
    assert_eq!(c.cameras[0].lanes[0].clear_s, 3.0);
    assert_eq!(c.http.bind.to_string(), "127.0.0.1:9464");
    assert_eq!(c.site.path(), "d/s/c");
    assert_eq!(c.labels().len(), 80);
}

#[test]
fn example_config_parses() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/alleywatch.example.toml");
    let c = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.cameras.len(), 2);
    assert!(c.broker.tls);
    assert!(c.detector.path.ends_with("models/nanodet.onnx"), "relative to the file: {:?}", c.detector.path);
}

#[test]
fn start_warnings_name_a_clear_text_broker_password_and_a_token_that_also_changes() {
    let with = |broker: &str, http: &str| {
        let text = GOOD.replacen("host = \"127.0.0.1\"", &format!("host = \"127.0.0.1\"\n{broker}"), 1).replacen(
            "[broker]",
            &format!("http = {{ {http} }}\n\n[broker]"),
            1,
        );
        parse(&text).unwrap().start_warnings()
    };
    let w = with("username = \"u\"\npassword = \"p\"", "");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("broker.password") && w[0].contains("broker.tls"), "{w:?}");
    let w = with("username = \"u\"\npassword_file = \"p\"", "");
    assert!(w[0].contains("broker.password_file") && w[0].contains("clear text"), "{w:?}");
    assert!(with("", "").is_empty(), "no password, no token: nothing to warn about");
    let w = with("", r#"token = "0123456789abcdef0""#);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("http.change_token_file"), "{w:?}");
    assert!(with("", r#"token = "0123456789abcdef0", change_token = "0123456789abcdef1""#).is_empty());
    let e = parse(&GOOD.replacen(
        "[broker]",
        "http = { token = \"0123456789abcdef0\", change_token = \"0123456789abcdef0\" }\n\n[broker]",
        1,
    ))
    .unwrap_err();
    assert!(e.contains("http.change_token") && e.contains("must differ"), "{e}");
    let e = parse(&GOOD.replacen("[broker]", "http = { max_connections = 0 }\n\n[broker]", 1)).unwrap_err();
    assert!(e.contains("http.max_connections"), "{e}");
    let e = parse(&GOOD.replacen("[broker]", "http = { header_timeout_s = 0 }\n\n[broker]", 1)).unwrap_err();
    assert!(e.contains("http.header_timeout_s"), "{e}");
    let c = parse(GOOD).unwrap();
    assert_eq!((c.http.header_timeout_s, c.http.idle_timeout_s, c.http.max_connections), (10.0, 60.0, 64));
}

#[test]
fn an_open_http_listener_needs_a_token() {
    let open = |http: &str| GOOD.replacen("[broker]", &format!("http = {{ {http} }}\n\n[broker]"), 1);
    let e = parse(&open(r#"bind = "0.0.0.0:9464""#)).unwrap_err();
    assert!(e.contains("http.token_file") && e.contains("not loopback"), "{e}");
    assert!(parse(&open(r#"bind = "0.0.0.0:9464", token_file = "t""#)).is_ok());
    assert!(parse(&open(r#"bind = "[::1]:9464""#)).is_ok(), "IPv6 loopback is loopback");
    let e = parse(&open(r#"bind = "0.0.0.0:9464", token = "short""#)).unwrap_err();
    assert!(e.contains("http.token") && e.contains("16"), "{e}");
    let e = parse(&open(r#"token = "0123456789abcdef0", token_file = "t""#)).unwrap_err();
    assert!(e.contains("not both"), "{e}");
}

mod hostile_files {
    //! The config door: random edits of the example config never panic,
    //! and every refusal names the file, a line and a key.
    use super::super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = include_str!("../../../deploy/alleywatch.example.toml");

    /// Values a careless or hostile edit may leave behind.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("-1".to_string()),
            Just("0".to_string()),
            Just("1e309".to_string()),
            Just("nan".to_string()),
            Just("-inf".to_string()),
            Just("99999999999999999999".to_string()),
            Just("18446744073709551615".to_string()),
            Just("\"\"".to_string()),
            Just("true".to_string()),
            Just("[]".to_string()),
            Just("[[0, 0], [1, 1]]".to_string()),
            Just("{}".to_string()),
            Just("\"rtsp://u:p@h/s\"".to_string()),
            Just("\"../../etc/passwd\"".to_string()),
            Just(format!("\"{}\"", "x".repeat(5000))),
            "[ -~]{0,12}",
        ]
    }

    #[derive(Debug, Clone)]
    enum Edit {
        SetValue(usize, String),
        Delete(usize),
        RenameKey(usize),
        Duplicate(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            4 => (any::<usize>(), value()).prop_map(|(i, v)| Edit::SetValue(i, v)),
            1 => any::<usize>().prop_map(Edit::Delete),
            1 => any::<usize>().prop_map(Edit::RenameKey),
            1 => any::<usize>().prop_map(Edit::Duplicate),
        ]
    }

    fn apply(edits: &[Edit]) -> String {
        let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_string).collect();
        for e in edits {
            // Only lines that set something: comments stay comments.
            let keyed: Vec<usize> = (0..lines.len())
                .filter(|&i| !lines[i].trim_start().starts_with('#') && lines[i].contains('='))
                .collect();
            let pick = |i: usize| keyed[i % keyed.len()];
            match e {
                Edit::SetValue(i, v) => {
                    let at = pick(*i);
                    let key = lines[at].split('=').next().unwrap_or("").to_string();
                    lines[at] = format!("{key}= {v}");
                }
                Edit::Delete(i) => {
                    lines.remove(pick(*i));
                }
                Edit::RenameKey(i) => {
                    let at = pick(*i);
                    lines[at] = lines[at].replacen('=', "_x =", 1);
                }
                Edit::Duplicate(i) => {
                    let at = pick(*i);
                    let line = lines[at].clone();
                    lines.insert(at, line);
                }
            }
        }
        lines.join("\n")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn every_refusal_names_file_line_and_key(edits in proptest::collection::vec(edit(), 1..4)) {
            let text = apply(&edits);
            let file = Path::new("/etc/alleywatch/alleywatch.toml");
            match Config::from_text(&text, file) {
                Ok(_) => {}
                Err(ConfigError::Invalid { file: f, line, key, message }) => {
                    prop_assert_eq!(f.as_path(), file);
                    prop_assert!(line.is_some(), "no line: {}: {}\n{}", key, message, text);
                    prop_assert!(!key.is_empty() && !message.is_empty());
                    let shown = ConfigError::Invalid { file: f, line, key, message }.to_string();
                    prop_assert!(!shown.contains("secret@"), "{}", shown);
                }
                Err(other) => prop_assert!(false, "{}", other),
            }
        }
    }
}

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        bad("agent_id", "agnet_id = \"x\"\nagent_id"),
        "test.toml:1: agnet_id: unknown field `agnet_id`, expected one of `agent_id`, `site`, `broker`, `ort_library`, `require_model_hash`, `detector`, `pose`, `tracking`, `falls`, `fire`, `alerts`, `http`, `spool`, `obstruction`, `source`, `cameras`"
    );
}

#[test]
fn unknown_lane_key_names_the_path() {
    assert_eq!(
        bad("dwell_s = 30", "dwell = 30"),
        "test.toml:16: cameras[0].lanes[0].dwell: unknown field `dwell`, expected one of `name`, `polygon`, `classes`, `dwell_s`, `clear_s`, `cue`, `min_occupancy`"
    );
}

#[test]
fn a_value_past_i64_still_names_its_line() {
    // Found by the hostile-files property: toml_edit (which finds lines)
    // refuses what the parser read as a float.
    let text = format!("{GOOD}\n[falls]\nwindow_s = 18446744073709551615\n");
    let e = parse(&text).unwrap_err();
    assert!(e.starts_with("test.toml:19: falls.window_s: "), "{e}");
}

#[test]
fn a_key_that_would_do_nothing_is_refused() {
    // `snapshot_url` was accepted and used nowhere: snapshots come from
    // the analysed frame. A file that still has it is told so.
    let e = bad(
        "url = \"rtsp://u:p@10.0.0.1/sub\"",
        "url = \"rtsp://u:p@10.0.0.1/sub\"\nsnapshot_url = \"rtsp://u:p@10.0.0.1/main\"",
    );
    assert!(e.starts_with("test.toml:16: cameras[0].snapshot_url: unknown field `snapshot_url`"), "{e}");
    assert!(!e.contains("u:p@"), "{e}");
}

#[test]
fn missing_required_key() {
    assert_eq!(bad("input_size = 416\n", ""), "test.toml:7: detector: missing field `input_size`");
}

#[test]
fn wrong_type() {
    assert_eq!(
        bad("dwell_s = 30", "dwell_s = \"30s\""),
        "test.toml:16: cameras[0].lanes[0].dwell_s: invalid type: string \"30s\", expected f64"
    );
}

#[test]
fn unknown_model_format() {
    assert_eq!(
        bad("format = \"nanodet\"", "format = \"yolo5\""),
        "test.toml:9: detector.format: unknown variant `yolo5`, expected one of `nanodet`, `yolox`, `yolov8`, `centernet`"
    );
}

#[test]
fn polygon_out_of_range() {
    assert_eq!(
        bad("[0.9, 0.9]]", "[900, 600]]"),
        "test.toml:16: cameras[0].lanes[0].polygon: point 2 [900, 600] is outside 0–1 (coordinates are normalised)"
    );
}

#[test]
fn polygon_and_lane_count_are_bounded() {
    let ring: Vec<String> = (0..=MAX_POLYGON_POINTS)
        .map(|k| {
            let a = k as f64 / (MAX_POLYGON_POINTS + 1) as f64 * std::f64::consts::TAU;
            format!("[{:.4}, {:.4}]", 0.5 + 0.4 * a.cos(), 0.5 + 0.4 * a.sin())
        })
        .collect();
    assert_eq!(
        bad("[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]", &format!("[{}]", ring.join(", "))),
        format!("test.toml:16: cameras[0].lanes[0].polygon: 65 points: at most {MAX_POLYGON_POINTS}")
    );
    let lane = |j: usize| {
        format!(
            "{{ name = \"l{j}\", polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]], classes = [\"car\"], dwell_s = 30 }}"
        )
    };
    let at_most: Vec<String> = (0..MAX_LANES_PER_CAMERA).map(lane).collect();
    let from = GOOD.lines().find(|l| l.starts_with("lanes = ")).unwrap();
    parse(&GOOD.replacen(from, &format!("lanes = [{}]", at_most.join(", ")), 1)).expect("16 lanes are fine");
    let over: Vec<String> = (0..=MAX_LANES_PER_CAMERA).map(lane).collect();
    let e = bad(from, &format!("lanes = [{}]", over.join(", ")));
    assert!(e.ends_with(&format!("cameras[0].lanes: 17 lanes: at most {MAX_LANES_PER_CAMERA} per camera")), "{e}");
}

#[test]
fn polygon_too_few_points() {
    assert_eq!(
        bad("[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]", "[[0.1, 0.1], [0.9, 0.1]]"),
        "test.toml:16: cameras[0].lanes[0].polygon: needs at least 3 points, got 2"
    );
}

#[test]
fn unknown_class() {
    assert_eq!(
        bad("classes = [\"car\"]", "classes = [\"cars\"]"),
        "test.toml:16: cameras[0].lanes[0].classes: unknown class \"cars\": not among the detector's labels"
    );
}

#[test]
fn negative_dwell() {
    assert_eq!(bad("dwell_s = 30", "dwell_s = -1"), "test.toml:16: cameras[0].lanes[0].dwell_s: -1 must be ≥ 0");
}

#[test]
fn bad_url_scheme_is_redacted() {
    assert_eq!(
        bad("rtsp://u:p@10.0.0.1/sub", "http://u:p@10.0.0.1/sub"),
        "test.toml:15: cameras[0].url: http://***@10.0.0.1/sub: unsupported scheme \"http\" (use rtsp, rtsps, file or test)"
    );
}

#[test]
fn keyframe_decode_refuses_a_camera_that_runs_falls() {
    let pose = GOOD.replace("[[cameras]]", "[pose]\npath = \"p.onnx\"\n\n[[cameras]]");
    let e = parse(&(pose.clone() + "decode = \"keyframes\"\n")).unwrap_err().to_string();
    assert!(e.contains("cameras[0].decode") && e.contains("falls.enabled = false"), "{e}");
    let c = parse(&(pose + "decode = \"keyframes\"\nfalls = { enabled = false }\n")).unwrap();
    assert_eq!(c.cameras[0].decode, Decode::Keyframes);
    assert_eq!(parse(GOOD).unwrap().cameras[0].decode, Decode::All, "default");
    let e = parse(&(GOOD.to_string() + "decode = \"some\"\n")).unwrap_err().to_string();
    assert!(e.contains("decode") && e.contains("keyframes"), "{e}");
    // The fire rule's flicker check needs the camera's frame rate too.
    let fire = GOOD.replace("[[cameras]]", "[fire]\npath = \"f.onnx\"\n\n[[cameras]]");
    let e = parse(&(fire.clone() + "decode = \"keyframes\"\n")).unwrap_err().to_string();
    assert!(e.contains("cameras[0].decode") && e.contains("flicker"), "{e}");
    assert!(parse(&(fire.clone() + "decode = \"keyframes\"\nfire = false\n")).is_ok());
    let no_flicker = fire.replace("[[cameras]]", "[fire.flicker]\nenabled = false\n\n[[cameras]]");
    assert!(parse(&(no_flicker + "decode = \"keyframes\"\n")).is_ok());
    // …and enough frames in its window to judge motion.
    let e = parse(&(fire.clone() + "fps = 1\n")).unwrap_err().to_string();
    assert!(e.contains("cameras[0].fps") && e.contains("min_frames"), "{e}");
    assert!(parse(&(fire.clone() + "fps = 2\n")).is_err(), "4 thumbnails in 2 s, 5 needed");
    assert!(parse(&(fire + "fps = 3\n")).is_ok());
}

#[test]
fn model_precision_and_provider_keys() {
    let c = parse(GOOD).unwrap();
    assert_eq!(
        (c.detector.precision, c.detector.execution_provider, c.detector.fallback),
        (Precision::Fp32, Provider::Cpu, false)
    );
    assert_eq!(c.detector.threads, 1, "single-threaded sessions");
    assert!(c.detector.sessions >= 1, "a default session count from the cores");
    let text = GOOD.replace(
        "format = \"nanodet\"",
        "format = \"nanodet\"\nprecision = \"int8\"\nexecution_provider = \"cuda\"\nfallback = true",
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        (c.detector.precision, c.detector.execution_provider, c.detector.fallback),
        (Precision::Int8, Provider::Cuda, true)
    );
    let e = parse(&GOOD.replace("format = \"nanodet\"", "format = \"nanodet\"\nexecution_provider = \"npu\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("execution_provider") && e.contains("openvino"), "{e}");
}

#[test]
fn batch_defaults_by_provider_and_is_checked() {
    assert_eq!(parse(GOOD).unwrap().detector.batch(), 1, "off on the CPU");
    let cuda = GOOD.replace("format = \"nanodet\"", "format = \"nanodet\"\nexecution_provider = \"cuda\"");
    assert_eq!(parse(&cuda).unwrap().detector.batch(), 4, "on on an accelerator");
    let set = GOOD.replace("format = \"nanodet\"", "format = \"nanodet\"\nbatch = 8");
    assert_eq!(parse(&set).unwrap().detector.batch(), 8);
    let e = parse(&GOOD.replace("format = \"nanodet\"", "format = \"nanodet\"\nbatch = 0")).unwrap_err();
    assert!(e.contains("detector.batch") && e.contains("1–16"), "{e}");
}

#[test]
fn falls_need_pose_and_take_camera_overrides() {
    let c = parse(GOOD).unwrap();
    assert!(!c.falls_for(&c.cameras[0]).enabled, "no [pose]: no falls");
    let text = GOOD.replace("[[cameras]]", "[pose]\npath = \"p.onnx\"\n\n[falls]\nconfirm_s = 1.5\n\n[[cameras]]")
        + "falls = { lost_s = 30 }\n";
    let c = parse(&text).unwrap();
    let f = c.falls_for(&c.cameras[0]);
    assert!(f.enabled);
    assert_eq!((f.confirm_s, f.lost_s, f.window_s), (1.5, 30.0, 2.0), "global, camera, default");
    assert_eq!(c.pose.as_ref().unwrap().input_size, 384);
}

#[test]
fn bad_fall_override_names_camera_key_and_line() {
    let text = format!("{GOOD}falls = {{ min_drop = 3.0 }}\n");
    assert_eq!(parse(&text).unwrap_err(), "test.toml:17: cameras[0].falls.min_drop: 3 is outside 0–2");
    let text = format!("{GOOD}falls = {{ confirm = 1.0 }}\n");
    let e = parse(&text).unwrap_err();
    assert!(e.starts_with("test.toml:17: cameras[0].falls.confirm: unknown field `confirm`, expected one of `enabled`, `window_s`, `confirm_s`"), "{e}");
}

#[test]
fn tracker_must_outlive_the_vanish_window() {
    let text = GOOD.replace("[[cameras]]", "[pose]\npath = \"p.onnx\"\n\n[tracking]\nmax_age_s = 1\n\n[[cameras]]");
    let e = parse(&text).unwrap_err();
    assert!(e.starts_with("test.toml:16: tracking.max_age_s: 1 is shorter than falls.vanish_within_s (1.2)"), "{e}");
    // Without the vanish path it is fine, and without a pose model falls do not run.
    let no_vanish = text.replace("[[cameras]]", "[falls]\nvanish = false\n\n[[cameras]]");
    assert!(parse(&no_vanish).is_ok());
    assert!(parse(&text.replace("[pose]\npath = \"p.onnx\"\n", "")).is_ok());
}

#[test]
fn bad_pose_input_size() {
    let text = GOOD.replace("[[cameras]]", "[pose]\npath = \"p.onnx\"\ninput_size = 100\n\n[[cameras]]");
    assert_eq!(
        parse(&text).unwrap_err(),
        "test.toml:14: pose.input_size: 100 is not a multiple of 32 between 32 and 1024"
    );
}

#[test]
fn duplicate_camera_id() {
    let text = format!("{GOOD}\n[[cameras]]\nid = \"cam-1\"\nname = \"again\"\nurl = \"test://ball\"\n");
    assert_eq!(parse(&text).unwrap_err(), "test.toml:19: cameras[1].id: duplicate camera id \"cam-1\"");
}

#[test]
fn topic_unsafe_camera_id() {
    assert_eq!(
        bad("id = \"cam-1\"", "id = \"cam/1\""),
        "test.toml:13: cameras[0].id: \"cam/1\" contains '/'; use letters, digits, '-', '_' or '.'"
    );
}

#[test]
fn tls_without_ca_file() {
    assert_eq!(
        bad("host = \"127.0.0.1\"", "host = \"127.0.0.1\"\ntls = true"),
        "test.toml:4: broker.ca_file: is required when broker.tls = true"
    );
}

#[test]
fn input_size_not_multiple_of_32() {
    assert_eq!(
        bad("input_size = 416", "input_size = 400"),
        "test.toml:10: detector.input_size: 400 is not a multiple of 32 between 32 and 2048"
    );
}

#[test]
fn fps_out_of_range() {
    assert_eq!(
        bad("name = \"Camera 1\"", "name = \"Camera 1\"\nfps = 0"),
        "test.toml:15: cameras[0].fps: 0 is outside (0, 60]"
    );
}

#[test]
fn syntax_error_has_a_line() {
    assert_eq!(bad("[broker]", "[broker"), "test.toml:4: (syntax): unclosed table, expected `]`");
}

#[test]
fn no_cameras() {
    let text = "cameras = []\n".to_string() + GOOD.split("[[cameras]]").next().unwrap();
    assert_eq!(parse(&text).unwrap_err(), "test.toml:1: cameras: at least one camera is required");
}

#[test]
fn unreadable_file_names_it() {
    let err = Config::load(Path::new("/nonexistent/alleywatch.toml")).unwrap_err().to_string();
    assert!(err.starts_with("/nonexistent/alleywatch.toml: cannot read config:"), "{err}");
}
