//! The agent's configuration: one TOML file, read with `serde` + `toml`.
//!
//! This module owns the shape of the file, its defaults and its validation.
//! Every later stage receives plain, already-validated values from here, so
//! no stage re-checks a threshold or a polygon at run time.
//!
//! Errors always name the file, the line and the key path
//! (`cameras[1].lanes[0].dwell_s`), because the person reading them is a
//! technician on a box with nothing but the file and this message.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod coco;
mod falls;
mod fire;
mod obstruction;
pub mod overlay;
mod people;
mod session;

pub use coco::COCO80;
pub use fire::{ClassMap, Fire, FireFormat, FireKind, Flicker, KindOverrides, KindRule};
pub use obstruction::ObstructionParams;
pub use people::{FallOverrides, Falls, Pose, Tracking};
pub use session::{Precision, Provider};

/// `alerts.snapshot_max_kb` when unset: a snapshot a phone loads quickly.
pub const DEFAULT_SNAPSHOT_MAX_KIB: u32 = 512;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This agent's id: the third level of every topic, so it must be
    /// topic-safe and unique per site.
    pub agent_id: String,
    /// Where the box sits in the district → street → community chain.
    pub site: Site,
    /// The command centres' MQTT broker.
    pub broker: Broker,
    /// Path to `libonnxruntime.so`. Optional: `ORT_DYLIB_PATH` and the setup
    /// folder (`.deps/onnxruntime`) are tried next.
    #[serde(default)]
    pub ort_library: Option<PathBuf>,
    /// Refuse to load a model (or its INT8 variant) that has no expected
    /// sha256, neither in its section nor in the `models.toml` beside it.
    /// Off by default so that a model brought along without a hash loads
    /// with a warning; on, a box runs only files someone pinned.
    #[serde(default)]
    pub require_model_hash: bool,
    /// The object detector shared by every camera.
    pub detector: Detector,
    /// The pose model; falls are detected only when it is set.
    #[serde(default)]
    pub pose: Option<Pose>,
    /// How detections become tracks.
    #[serde(default)]
    pub tracking: Tracking,
    /// The fall rule's defaults; cameras may override any key.
    #[serde(default)]
    pub falls: Falls,
    /// The fire/smoke model and rule; fire and smoke are detected only when
    /// it is set.
    #[serde(default)]
    pub fire: Option<Fire>,
    /// Timing of event messages.
    #[serde(default)]
    pub alerts: Alerts,
    /// The HTTP listener (metrics and health).
    #[serde(default)]
    pub http: Http,
    /// Where alerts wait for the broker's acknowledgement.
    #[serde(default)]
    pub spool: Spool,
    /// Thresholds of the class-agnostic obstruction cue (lanes with
    /// `cue = "obstruction"` or `"both"`).
    #[serde(default)]
    pub obstruction: ObstructionParams,
    /// Defaults for how every camera stream is pulled.
    #[serde(default)]
    pub source: SourceDefaults,
    /// The cameras this agent watches.
    pub cameras: Vec<Camera>,
}

/// The three-level place path, e.g. `shapingba/fengwen/xiangxieli`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub district: String,
    pub street: String,
    pub community: String,
}

impl Site {
    /// The site as it appears in topics and payloads.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.district, self.street, self.community)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    pub host: String,
    #[serde(default = "default_broker_port")]
    pub port: u16,
    /// Use TLS to the broker.
    #[serde(default)]
    pub tls: bool,
    /// PEM file with the CA that signed the broker's certificate (TLS only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    /// Inline password. Prefer `password_file`, so the config can be shown
    /// and shared without the secret.
    #[serde(default)]
    pub password: Option<String>,
    /// A file whose first line is the password (read at start: a changed
    /// password needs a restart).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// First level of every topic.
    #[serde(default = "default_topic_root")]
    pub topic_root: String,
    /// MQTT keep-alive; also bounds how fast the broker notices a dead agent
    /// and publishes its last will.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
}

/// Which output layout (and matching preprocessing) a detector model uses.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// NanoDet (GFL heads per stride; BGR mean/std input). The default model.
    Nanodet,
    /// YOLOX: `[1, anchors, 5 + classes]`, raw grid offsets, BGR 0–255 input.
    Yolox,
    /// YOLOv8 / YOLO11 export: `[1, 4 + classes, anchors]`, RGB 0–1 input.
    Yolov8,
    /// MobileNetV3-CenterNet (TF.js): `[1, 100, 6]`, NHWC RGB 0–255 input.
    Centernet,
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ModelFormat::Nanodet => "nanodet",
            ModelFormat::Yolox => "yolox",
            ModelFormat::Yolov8 => "yolov8",
            ModelFormat::Centernet => "centernet",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detector {
    /// The ONNX file. Relative paths are resolved against the config file.
    pub path: PathBuf,
    pub format: ModelFormat,
    /// Square model input side in pixels (letterboxed).
    pub input_size: u32,
    /// Class names in model order. Default: the 80 COCO names.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Detections below this score are discarded before the rules see them.
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    /// IoU above which two boxes of one class are the same object.
    #[serde(default = "default_nms_iou")]
    pub nms_iou: f32,
    /// Expected sha256 of the file. Default: the entry for this file in the
    /// `models.toml` manifest next to it, when there is one.
    #[serde(default)]
    pub sha256: Option<String>,
    /// ONNX Runtime intra-op threads.
    #[serde(default = "crate::config::session::default_threads")]
    pub threads: usize,
    /// ONNX Runtime sessions of this model that cameras share: as many
    /// frames run at once.
    #[serde(default = "crate::config::session::default_sessions")]
    pub sessions: usize,
    /// Most frames, from different cameras, that one inference may carry
    /// when the model has a dynamic batch axis: frames that find every
    /// session busy run together on the next free one. 1 turns it off.
    /// Default ([`Detector::batch`]): 1 on the CPU, where single-threaded
    /// sessions side by side measured better (benches/README.md), 4 on an
    /// accelerator.
    #[serde(default)]
    pub batch: Option<usize>,
    /// `fp32` (the file `path` names) or `int8` (its quantised variant).
    #[serde(default)]
    pub precision: Precision,
    /// ONNX Runtime execution provider: `cpu`, `cuda`, `tensorrt` or
    /// `openvino` (the loaded library must have it).
    #[serde(default)]
    pub execution_provider: Provider,
    /// When the library lacks `execution_provider`: warn and use the CPU
    /// instead of refusing to start.
    #[serde(default)]
    pub fallback: bool,
    /// Analysis rate of the detector (it serves the lane rules), frames per
    /// second: a lane blocks over many seconds, so a low rate loses nothing
    /// and leaves the CPU to the fall rule, which needs the camera's fps.
    #[serde(default = "default_detector_fps")]
    pub fps: f64,
    /// Skip the detector on frames where nothing moved since its last run.
    #[serde(default)]
    pub motion_gate: MotionGate,
}

/// `[detector.motion_gate]`: when the detector may skip a frame (see
/// `infer::gate`). Skipped frames reuse the last run's detections.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MotionGate {
    pub enabled: bool,
    /// Fraction of the frame's thumbnail pixels that must have changed
    /// since the last run for the detector to run again.
    pub min_changed: f64,
    /// Grey-level difference (0–255) that counts a thumbnail pixel changed;
    /// above sensor noise and compression flicker.
    pub pixel_delta: u8,
    /// The detector runs at least this often whatever the gate sees, so a
    /// change too slow or too small for it is still found.
    pub full_check_s: f64,
}

impl Default for MotionGate {
    fn default() -> Self {
        MotionGate { enabled: true, min_changed: 0.002, pixel_delta: 10, full_check_s: 5.0 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Minimum seconds between two `update` messages of one event.
    #[serde(default = "default_update_interval_s")]
    pub update_interval_s: f64,
    /// JPEG quality of snapshots (1–100).
    #[serde(default = "default_jpeg_quality")]
    pub snapshot_quality: u8,
    /// Cap on one snapshot's size, KiB (16–960; default 512). Over it the
    /// snapshot is re-encoded at lower quality, then scaled down, then left
    /// out, so no message exceeds the MQTT client's 1 MiB packet limit (or a
    /// broker's `message_size_limit` set at or above this).
    #[serde(default = "default_snapshot_max_kb")]
    pub snapshot_max_kb: u32,
    /// Minimum seconds between two `update`s of an event a centre has
    /// acknowledged (`ack` command).
    #[serde(default = "default_acked_update_interval_s")]
    pub acked_update_interval_s: f64,
    /// Seconds a `start` may go unacknowledged before the agent escalates it
    /// to the next level up of the site path; 0 turns escalation off.
    #[serde(default = "default_escalate_after_s")]
    pub escalate_after_s: f64,
    /// Events below this severity are never escalated.
    #[serde(default = "default_escalate_min_severity")]
    pub escalate_min_severity: crate::vocab::Severity,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            update_interval_s: default_update_interval_s(),
            snapshot_quality: default_jpeg_quality(),
            snapshot_max_kb: default_snapshot_max_kb(),
            acked_update_interval_s: default_acked_update_interval_s(),
            escalate_after_s: default_escalate_after_s(),
            escalate_min_severity: default_escalate_min_severity(),
        }
    }
}

/// The durable alert spool (see `alert::spool`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spool {
    /// The SQLite file. Relative paths resolve against the config file.
    #[serde(default = "default_spool_path")]
    pub path: PathBuf,
    /// Bound on spooled payload bytes, in MiB. When full, the oldest
    /// `update`s go first, never a `start` or an `end`.
    #[serde(default = "default_spool_max_mb")]
    pub max_mb: f64,
}

impl Default for Spool {
    fn default() -> Self {
        Spool { path: default_spool_path(), max_mb: default_spool_max_mb() }
    }
}

impl Spool {
    pub fn max_bytes(&self) -> u64 {
        (self.max_mb * 1024.0 * 1024.0) as u64
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Address of the metrics/health listener. Loopback by default: the box
    /// should not expose it unless the technician says so.
    #[serde(default = "default_http_bind")]
    pub bind: SocketAddr,
    /// Bearer token every path but `/healthz` and `/readyz` then needs.
    /// Required (or `change_token`) when `bind` is not loopback. Prefer
    /// `token_file`. With a `change_token` beside it, this token only
    /// reads (Prometheus, the page's views); alone, it also changes (the
    /// behaviour before the two were split, with a warning at start).
    pub token: Option<String>,
    /// A file whose first line is the token.
    pub token_file: Option<PathBuf>,
    /// The token that may change lanes and references (every request that
    /// is not a GET or HEAD). It reads too. Prefer `change_token_file`.
    pub change_token: Option<String>,
    /// A file whose first line is the change token.
    pub change_token_file: Option<PathBuf>,
    /// Seconds a connection has to deliver a whole request head, from its
    /// opening or from the previous response (so it also ends idle
    /// keep-alive connections): sockets that never send a request are
    /// closed instead of held.
    #[serde(default = "default_http_header_timeout_s")]
    pub header_timeout_s: f64,
    /// Seconds with nothing read or written, mid-request included (a
    /// stalled upload, a client that stops reading), before a connection is
    /// closed. Keep it above 30 s: a change waits up to 30 s for the agent.
    #[serde(default = "default_http_idle_timeout_s")]
    pub idle_timeout_s: f64,
    /// Open connections at most; one more is answered 503 and closed, so
    /// idle sockets cannot use up the process's file descriptors.
    #[serde(default = "default_http_max_connections")]
    pub max_connections: usize,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            bind: default_http_bind(),
            token: None,
            token_file: None,
            change_token: None,
            change_token_file: None,
            header_timeout_s: default_http_header_timeout_s(),
            idle_timeout_s: default_http_idle_timeout_s(),
            max_connections: default_http_max_connections(),
        }
    }
}

fn default_http_header_timeout_s() -> f64 {
    10.0
}
fn default_http_idle_timeout_s() -> f64 {
    60.0
}
fn default_http_max_connections() -> usize {
    64
}

/// A token goes into headers, a cookie and a query string unescaped: at
/// least 16 characters, URL- and cookie-safe ones only.
fn check_token(t: &str) -> Result<(), String> {
    if t.len() < 16 {
        return Err("must be at least 16 characters (e.g. `openssl rand -hex 24`)".into());
    }
    if !t.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)) {
        return Err("may use only letters, digits and - . _ ~ (e.g. `openssl rand -hex 24`)".into());
    }
    Ok(())
}

impl Http {
    /// The configured token, read from `token_file` if that is how it is
    /// given. An error names the key and the file.
    pub fn read_token(&self) -> Result<Option<String>, String> {
        token_from(&self.token, &self.token_file, "http.token_file")
    }

    /// The change token, read from `change_token_file` if that is how it is
    /// given. An error names the key and the file.
    pub fn read_change_token(&self) -> Result<Option<String>, String> {
        token_from(&self.change_token, &self.change_token_file, "http.change_token_file")
    }
}

fn token_from(inline: &Option<String>, file: &Option<PathBuf>, key: &str) -> Result<Option<String>, String> {
    match (inline, file) {
        (Some(t), _) => Ok(Some(t.clone())),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{key} {}: {e}", f.display()))?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            check_token(&line).map_err(|m| format!("{key} {}: the token {m}", f.display()))?;
            Ok(Some(line))
        }
        (None, None) => Ok(None),
    }
}

impl Config {
    /// What the agent warns about at start (one line each): settings that
    /// work but expose something an operator should decide on knowingly.
    pub fn start_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let b = &self.broker;
        if (b.password.is_some() || b.password_file.is_some()) && !b.tls {
            out.push(format!(
                "broker.password{} is set but broker.tls is false: the password crosses the network in clear text; set broker.tls = true (and broker.ca_file)",
                if b.password_file.is_some() { "_file" } else { "" }
            ));
        }
        let h = &self.http;
        let read = h.token.is_some() || h.token_file.is_some();
        let change = h.change_token.is_some() || h.change_token_file.is_some();
        if read && !change {
            out.push(
                "http.token also grants changes (lanes, references): set http.change_token_file so the token Prometheus and viewers hold can only read"
                    .into(),
            );
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDefaults {
    /// `rtspsrc` jitter-buffer latency.
    #[serde(default = "default_latency_ms")]
    pub latency_ms: u32,
    /// First reconnect delay; doubles on every failure.
    #[serde(default = "default_backoff_initial_s")]
    pub backoff_initial_s: f64,
    /// Cap on the reconnect delay. Retries never stop.
    #[serde(default = "default_backoff_max_s")]
    pub backoff_max_s: f64,
    /// A camera with no frame for this long is restarted (watchdog). Some
    /// RTSP servers vanish without closing the stream, and only this
    /// notices.
    #[serde(default = "default_stall_timeout_s")]
    pub stall_timeout_s: f64,
}

impl Default for SourceDefaults {
    fn default() -> Self {
        SourceDefaults {
            latency_ms: default_latency_ms(),
            backoff_initial_s: default_backoff_initial_s(),
            backoff_max_s: default_backoff_max_s(),
            stall_timeout_s: default_stall_timeout_s(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    /// Topic-safe id, unique within the agent.
    pub id: String,
    /// Human-readable name shown to operators.
    pub name: String,
    /// `rtsp://…` (sub-stream preferred), `file:///…`, or `test://` for a
    /// synthetic pattern. May carry credentials; they never leave the agent.
    pub url: String,
    /// Frames per second handed to analysis; the rest are dropped before
    /// colour conversion.
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Width of the analysed frame; height follows the stream's aspect ratio.
    #[serde(default = "default_analysis_width")]
    pub analysis_width: u32,
    #[serde(default)]
    pub lanes: Vec<Lane>,
    /// Overrides of `[falls]` for this camera.
    #[serde(default)]
    pub falls: FallOverrides,
    /// Run the fire rule on this camera (when `[fire]` is set).
    #[serde(default = "default_true")]
    pub fire: bool,
    /// `all` decodes every frame; `keyframes` hands the decoder only the
    /// stream's keyframes (one per GOP, typically 1–2 s) and drops the rest
    /// before decoding: several times less decode CPU, for cameras that only
    /// run lanes at ≤ 1 fps. Falls and the fire rule's flicker check need
    /// the camera's frame rate, so both refuse it. A GOP longer than
    /// `source.stall_timeout_s` would read as a stalled stream.
    #[serde(default)]
    pub decode: Decode,
}

/// Which frames of a camera's stream are decoded.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decode {
    #[default]
    All,
    Keyframes,
}

/// A lane (zone) that must stay clear.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    pub name: String,
    /// Normalised `[x, y]` vertices (0–1, origin top-left), at least three.
    pub polygon: Vec<[f64; 2]>,
    /// Detector class names that count as blocking.
    pub classes: Vec<String>,
    /// Seconds the lane must stay occupied before `start`.
    pub dwell_s: f64,
    /// Seconds the lane must stay empty before `end`; short detection gaps
    /// inside this window do not reset the dwell.
    #[serde(default = "default_clear_s")]
    pub clear_s: f64,
    /// What counts as blocking: tracked objects of `classes`, the
    /// class-agnostic obstruction cue (the lane differs from its clear
    /// reference), or either.
    #[serde(default)]
    pub cue: LaneCue,
    /// Obstruction cue: the fraction of the lane's cells that must differ
    /// from the clear reference.
    #[serde(default = "default_min_occupancy")]
    pub min_occupancy: f64,
}

/// Which cue blocks a lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LaneCue {
    #[default]
    Objects,
    Obstruction,
    Both,
}

impl LaneCue {
    pub fn objects(self) -> bool {
        self != LaneCue::Obstruction
    }

    pub fn obstruction(self) -> bool {
        self != LaneCue::Objects
    }
}

fn default_min_occupancy() -> f64 {
    0.3
}

fn default_broker_port() -> u16 {
    1883
}
fn default_topic_root() -> String {
    "alleywatch".into()
}
fn default_keep_alive_s() -> u64 {
    15
}
fn default_score_threshold() -> f32 {
    0.35
}
fn default_nms_iou() -> f32 {
    0.6
}
fn default_update_interval_s() -> f64 {
    10.0
}
fn default_jpeg_quality() -> u8 {
    80
}
fn default_snapshot_max_kb() -> u32 {
    DEFAULT_SNAPSHOT_MAX_KIB
}
fn default_acked_update_interval_s() -> f64 {
    60.0
}
fn default_escalate_after_s() -> f64 {
    120.0
}
fn default_escalate_min_severity() -> crate::vocab::Severity {
    crate::vocab::Severity::Warning
}
fn default_spool_path() -> PathBuf {
    PathBuf::from("/var/lib/alleywatch/spool.sqlite")
}
fn default_spool_max_mb() -> f64 {
    256.0
}
fn default_http_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_latency_ms() -> u32 {
    200
}
fn default_backoff_initial_s() -> f64 {
    1.0
}
fn default_backoff_max_s() -> f64 {
    30.0
}
fn default_stall_timeout_s() -> f64 {
    10.0
}
fn default_fps() -> f64 {
    5.0
}
fn default_analysis_width() -> u32 {
    640
}
fn default_detector_fps() -> f64 {
    2.0
}
impl Detector {
    /// The configured `batch`, or its default for the execution provider.
    pub fn batch(&self) -> usize {
        self.batch.unwrap_or(match self.execution_provider {
            Provider::Cpu => 1,
            _ => 4,
        })
    }
}
fn default_true() -> bool {
    true
}
fn default_clear_s() -> f64 {
    3.0
}

/// Most lanes one camera may have: every lane costs analysis time on every
/// frame, and the file and remote changes (which may add lanes) alike are
/// bounded by it.
pub const MAX_LANES_PER_CAMERA: usize = 16;
/// Most vertices of a lane's polygon (a hand-drawn lane has a handful).
pub const MAX_POLYGON_POINTS: usize = 64;

/// A configuration error, located in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}{}: {key}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        /// Dotted key path, e.g. `cameras[0].lanes[1].dwell_s`.
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it
    /// are resolved against the file's directory.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.to_path_buf(), source })?;
        Config::from_text(&text, file)
    }

    /// Parses and validates config text as if it were the file `file`:
    /// relative paths resolve against its folder (used by `eval`, which
    /// builds each clip's config from a base file plus overlays).
    pub fn from_text(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text, file)?;
        config.resolve_paths(file.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// Parses and validates config text; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: String, message: String, line: Option<usize>| ConfigError::Invalid {
            file: file.to_path_buf(),
            line,
            key,
            message,
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            invalid("(syntax)".into(), first_line(e.message()), line)
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.span().map(|s| line_of(text, s.start));
            // `?` is serde_path_to_error's "unknown position"; the root.
            let key = if key == "." || key == "?" { "(top level)".into() } else { key };
            invalid(key, first_line(inner.message()), line)
        })?;
        if let Err((key, message)) = config.validate() {
            let line = locate(text, &key);
            return Err(invalid(key, message, line));
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.detector.path);
        if let Some(p) = self.pose.as_mut() {
            resolve(&mut p.path);
        }
        if let Some(f) = self.fire.as_mut() {
            resolve(&mut f.path);
        }
        if let Some(p) = self.ort_library.as_mut() {
            resolve(p);
        }
        for p in [&mut self.broker.ca_file, &mut self.broker.client_cert, &mut self.broker.client_key]
            .into_iter()
            .chain([&mut self.broker.password_file, &mut self.http.token_file, &mut self.http.change_token_file])
            .flatten()
        {
            resolve(p);
        }
        resolve(&mut self.spool.path);
    }

    /// The fall parameters in force on `camera`: `[falls]` with the camera's
    /// overrides applied, and disabled when there is no pose model.
    pub fn falls_for(&self, camera: &Camera) -> Falls {
        let mut f = camera.falls.apply(&self.falls);
        f.enabled &= self.pose.is_some();
        f
    }

    /// The detector's class names: the configured list or COCO-80.
    pub fn labels(&self) -> Vec<String> {
        match &self.detector.labels {
            Some(l) => l.clone(),
            None => COCO80.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Semantic checks serde cannot express. Returns the key path and message
    /// of the first problem.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        topic_safe(&self.agent_id).or_else(|m| err("agent_id", m))?;
        topic_safe(&self.site.district).or_else(|m| err("site.district", m))?;
        topic_safe(&self.site.street).or_else(|m| err("site.street", m))?;
        topic_safe(&self.site.community).or_else(|m| err("site.community", m))?;

        let o = &self.obstruction;
        let times = [("learn_s", o.learn_s), ("adapt_s", o.adapt_s), ("motion_hold_s", o.motion_hold_s)];
        let levels = [
            ("ncc_min", o.ncc_min),
            ("flat_std", o.flat_std),
            ("chroma_max", o.chroma_max),
            ("luma_max", o.luma_max),
            ("motion_min", o.motion_min),
            ("night_luma", o.night_luma),
        ];
        for (key, v) in times.into_iter().chain(levels.map(|(k, v)| (k, v as f64))) {
            if !at_least(v, 0.0) {
                return err(&format!("obstruction.{key}"), format!("{v} must be ≥ 0"));
            }
        }
        if o.ncc_min > 1.0 {
            return err("obstruction.ncc_min", format!("{} must be ≤ 1 (a correlation)", o.ncc_min));
        }

        let b = &self.broker;
        if b.host.trim().is_empty() {
            return err("broker.host", "must not be empty".into());
        }
        if b.port == 0 {
            return err("broker.port", "must be 1–65535".into());
        }
        if b.tls && b.ca_file.is_none() {
            return err("broker.ca_file", "is required when broker.tls = true".into());
        }
        if !b.tls && b.ca_file.is_some() {
            return err("broker.tls", "ca_file is set but tls is false".into());
        }
        if (b.password.is_some() || b.password_file.is_some()) && b.username.is_none() {
            return err("broker.username", "is required when a password is set".into());
        }
        if b.password.is_some() && b.password_file.is_some() {
            return err("broker.password_file", "set either password or password_file, not both".into());
        }
        let h = &self.http;
        if h.token.is_some() && h.token_file.is_some() {
            return err("http.token_file", "set either token or token_file, not both".into());
        }
        if let Some(t) = &h.token {
            check_token(t).or_else(|m| err("http.token", m))?;
        }
        if h.change_token.is_some() && h.change_token_file.is_some() {
            return err("http.change_token_file", "set either change_token or change_token_file, not both".into());
        }
        if let Some(t) = &h.change_token {
            check_token(t).or_else(|m| err("http.change_token", m))?;
            if h.token.as_ref() == Some(t) {
                return err("http.change_token", "must differ from http.token (the read-only token)".into());
            }
        }
        let tokens = [&h.token, &h.change_token].iter().any(|t| t.is_some())
            || [&h.token_file, &h.change_token_file].iter().any(|t| t.is_some());
        if !h.bind.ip().is_loopback() && !tokens {
            return err(
                "http.token_file",
                format!(
                    "http.bind {} is not loopback: set http.token_file (or http.token) so the page, /api and /metrics need a token",
                    h.bind
                ),
            );
        }
        if !(h.header_timeout_s > 0.0 && h.header_timeout_s <= 3600.0) {
            return err("http.header_timeout_s", format!("{} must be > 0 and ≤ 3600", h.header_timeout_s));
        }
        if !(h.idle_timeout_s > 0.0 && h.idle_timeout_s <= 86400.0) {
            return err("http.idle_timeout_s", format!("{} must be > 0 and ≤ 86400", h.idle_timeout_s));
        }
        if !(1..=65536).contains(&h.max_connections) {
            return err("http.max_connections", format!("{} must be 1–65536", h.max_connections));
        }
        if b.client_cert.is_some() != b.client_key.is_some() {
            return err("broker.client_key", "client_cert and client_key go together".into());
        }
        if !b.tls && b.client_cert.is_some() {
            return err("broker.tls", "client_cert is set but tls is false".into());
        }
        for (i, level) in b.topic_root.split('/').enumerate() {
            topic_safe(level).or_else(|m| err("broker.topic_root", format!("level {}: {m}", i + 1)))?;
        }
        if b.keep_alive_s < 5 {
            return err("broker.keep_alive_s", "must be at least 5".into());
        }

        let d = &self.detector;
        if d.input_size < 32 || d.input_size > 2048 || d.input_size % 32 != 0 {
            return err("detector.input_size", format!("{} is not a multiple of 32 between 32 and 2048", d.input_size));
        }
        if !(0.0..=1.0).contains(&d.score_threshold) {
            return err("detector.score_threshold", format!("{} is outside 0–1", d.score_threshold));
        }
        if !(0.0..=1.0).contains(&d.nms_iou) {
            return err("detector.nms_iou", format!("{} is outside 0–1", d.nms_iou));
        }
        if d.threads == 0 || d.threads > 64 {
            return err("detector.threads", "must be 1–64".into());
        }
        if d.sessions == 0 || d.sessions > 64 {
            return err("detector.sessions", "must be 1–64".into());
        }
        if let Some(b) = d.batch.filter(|b| !(1..=16).contains(b)) {
            return err("detector.batch", format!("{b} is outside 1–16"));
        }
        if !(d.fps > 0.0 && d.fps <= 60.0) {
            return err("detector.fps", format!("{} is outside (0, 60]", d.fps));
        }
        let g = &d.motion_gate;
        if !(0.0..=1.0).contains(&g.min_changed) {
            return err("detector.motion_gate.min_changed", format!("{} is outside 0–1", g.min_changed));
        }
        if g.pixel_delta == 0 {
            return err("detector.motion_gate.pixel_delta", "must be 1–255".into());
        }
        if !(g.full_check_s > 0.0 && g.full_check_s <= 3600.0) {
            return err("detector.motion_gate.full_check_s", format!("{} is outside (0, 3600]", g.full_check_s));
        }
        if let Some(l) = &d.labels {
            if l.is_empty() {
                return err("detector.labels", "must not be empty".into());
            }
        }
        if let Some(h) = &d.sha256 {
            if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                return err("detector.sha256", "must be 64 hex digits".into());
            }
        }

        if !(1..=100).contains(&self.alerts.snapshot_quality) {
            return err("alerts.snapshot_quality", "must be 1–100".into());
        }
        if !(16..=960).contains(&self.alerts.snapshot_max_kb) {
            return err(
                "alerts.snapshot_max_kb",
                "must be 16–960 (KiB; a message must stay under the MQTT client's 1 MiB packet limit)".into(),
            );
        }
        if !at_least(self.alerts.update_interval_s, 0.0) {
            return err("alerts.update_interval_s", "must be ≥ 0".into());
        }
        if !at_least(self.alerts.acked_update_interval_s, 0.0) {
            return err("alerts.acked_update_interval_s", "must be ≥ 0".into());
        }
        if !at_least(self.alerts.escalate_after_s, 0.0) {
            return err("alerts.escalate_after_s", "must be ≥ 0 (0 turns escalation off)".into());
        }
        if !(self.spool.max_mb >= 0.01 && self.spool.max_mb <= 1_048_576.0) {
            return err("spool.max_mb", format!("{} is outside 0.01–1048576", self.spool.max_mb));
        }
        let s = &self.source;
        if !at_least(s.backoff_initial_s, 0.001) {
            return err("source.backoff_initial_s", "must be > 0".into());
        }
        if !at_least(s.backoff_max_s, s.backoff_initial_s) {
            return err("source.backoff_max_s", "must be ≥ source.backoff_initial_s".into());
        }

        if !at_least(s.stall_timeout_s, 1.0) {
            return err("source.stall_timeout_s", "must be at least 1".into());
        }

        people::validate(self.pose.as_ref(), &self.tracking, &self.falls, self.detector.score_threshold)?;
        if let Some(f) = &self.fire {
            f.validate()?;
        }

        if self.cameras.is_empty() {
            return err("cameras", "at least one camera is required".into());
        }
        let labels = self.labels();
        let mut ids = HashSet::new();
        for (i, c) in self.cameras.iter().enumerate() {
            let at = |k: &str| format!("cameras[{i}].{k}");
            topic_safe(&c.id).or_else(|m| err(&at("id"), m))?;
            if !ids.insert(c.id.as_str()) {
                return err(&at("id"), format!("duplicate camera id {:?}", c.id));
            }
            if let Err(m) = check_url(&c.url) {
                return err(&at("url"), m);
            }
            if !(at_least(c.fps, 0.01) && c.fps <= 60.0) {
                return err(&at("fps"), format!("{} is outside (0, 60]", c.fps));
            }
            if c.analysis_width < 64 || c.analysis_width > 3840 || c.analysis_width % 2 != 0 {
                return err(&at("analysis_width"), "must be an even number between 64 and 3840".into());
            }
            let falls = c.falls.apply(&self.falls);
            falls.validate(&format!("cameras[{i}].falls"))?;
            if falls.vanish_after_s > falls.vanish_within_s {
                return err("falls.vanish_after_s", "must be ≤ falls.vanish_within_s".into());
            }
            let falls_run = falls.enabled && self.pose.is_some();
            let flicker_runs = c.fire && self.fire.as_ref().is_some_and(|f| f.flicker.enabled);
            if flicker_runs && c.decode == Decode::Keyframes {
                return err(
                    &at("decode"),
                    "\"keyframes\" leaves about one frame per GOP, too few for the fire rule's flicker check: set \
                     fire = false for this camera, fire.flicker.enabled = false, or decode = \"all\""
                        .into(),
                );
            }
            if let Some(f) = self.fire.as_ref().filter(|_| flicker_runs) {
                // Thumbnails in the check's window at this camera's rate,
                // counted without the end frame: a 29.97 fps source taken
                // at 2 a second spaces them a little over 1/fps apart.
                let frames = (c.fps * f.flicker.window_s).floor() as usize;
                if frames < f.flicker.min_frames {
                    return err(
                        &at("fps"),
                        format!(
                            "{} frames/s gives {frames} frames in fire.flicker.window_s ({} s), fewer than \
                             fire.flicker.min_frames ({}): the fire rule could never start; raise fps or window_s, \
                             or lower min_frames",
                            c.fps, f.flicker.window_s, f.flicker.min_frames
                        ),
                    );
                }
            }
            if falls_run && c.decode == Decode::Keyframes {
                return err(
                    &at("decode"),
                    "\"keyframes\" leaves about one frame per GOP, too few for the fall rule: set \
                     falls.enabled = false for this camera, or decode = \"all\""
                        .into(),
                );
            }
            if falls_run && falls.vanish && falls.vanish_within_s > self.tracking.max_age_s {
                return err(
                    "tracking.max_age_s",
                    format!(
                        "{} is shorter than falls.vanish_within_s ({}): the tracker would forget a person before the \
                         fall rule's vanish path could judge them",
                        self.tracking.max_age_s, falls.vanish_within_s
                    ),
                );
            }
            if c.lanes.len() > MAX_LANES_PER_CAMERA {
                return err(
                    &format!("cameras[{i}].lanes"),
                    format!("{} lanes: at most {MAX_LANES_PER_CAMERA} per camera", c.lanes.len()),
                );
            }
            let mut names = HashSet::new();
            for (j, lane) in c.lanes.iter().enumerate() {
                let at = |k: &str| format!("cameras[{i}].lanes[{j}].{k}");
                topic_safe(&lane.name).or_else(|m| err(&at("name"), m))?;
                if !names.insert(lane.name.as_str()) {
                    return err(&at("name"), format!("duplicate lane name {:?}", lane.name));
                }
                if lane.polygon.len() < 3 {
                    return err(&at("polygon"), format!("needs at least 3 points, got {}", lane.polygon.len()));
                }
                if lane.polygon.len() > MAX_POLYGON_POINTS {
                    return err(&at("polygon"), format!("{} points: at most {MAX_POLYGON_POINTS}", lane.polygon.len()));
                }
                for (k, p) in lane.polygon.iter().enumerate() {
                    if !p.iter().all(|v| (0.0..=1.0).contains(v)) {
                        return err(
                            &at("polygon"),
                            format!("point {k} [{}, {}] is outside 0–1 (coordinates are normalised)", p[0], p[1]),
                        );
                    }
                }
                if crate::vocab::polygon_area(&lane.polygon) < 1e-4 {
                    return err(&at("polygon"), "has no area (points in a line?)".into());
                }
                if lane.classes.is_empty() && lane.cue.objects() {
                    return err(&at("classes"), "must list at least one class (or set cue = \"obstruction\")".into());
                }
                if !(lane.min_occupancy > 0.0 && lane.min_occupancy <= 1.0) {
                    return err(&at("min_occupancy"), format!("{} must be in (0, 1]", lane.min_occupancy));
                }
                for class in &lane.classes {
                    if !labels.contains(class) {
                        return err(
                            &at("classes"),
                            format!("unknown class {class:?}: not among the detector's labels"),
                        );
                    }
                }
                if !at_least(lane.dwell_s, 0.0) {
                    return err(&at("dwell_s"), format!("{} must be ≥ 0", lane.dwell_s));
                }
                if !at_least(lane.clear_s, 0.0) {
                    return err(&at("clear_s"), format!("{} must be ≥ 0", lane.clear_s));
                }
            }
        }
        Ok(())
    }
}

/// `v >= min`, and not NaN or infinite (TOML allows both).
fn at_least(v: f64, min: f64) -> bool {
    v.is_finite() && v >= min
}

/// Topic levels and ids: no MQTT wildcards or separators, nothing that needs
/// escaping in a URL or a metric label.
fn topic_safe(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 64 {
        return Err("must be at most 64 characters".into());
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("{s:?} contains {c:?}; use letters, digits, '-', '_' or '.'"));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), String> {
    let shown = crate::redact::redact_url(url);
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("rtsp" | "rtsps" | "file" | "test") => {}
        Some(other) => return Err(format!("{shown}: unsupported scheme {other:?} (use rtsp, rtsps, file or test)")),
        None => return Err(format!("{shown}: not a URL (expected rtsp://host/path)")),
    }
    let rest = &url[url.find("://").map(|i| i + 3).unwrap_or(0)..];
    if rest.is_empty() {
        return Err(format!("{shown}: nothing after the scheme"));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!("{shown}: contains whitespace"));
    }
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Finds the line of a key path such as `cameras[1].lanes[0].dwell_s` in the
/// original text, so semantic errors point at the line too.
fn locate(text: &str, key: &str) -> Option<usize> {
    // toml_edit is stricter than the parser that accepted the file (an
    // integer past i64, say); then find the line by reading the text.
    let Ok(doc) = toml_edit::Document::parse(text) else { return locate_in_lines(text, key) };
    let mut item: &toml_edit::Item = doc.as_item();
    let mut span = None;
    for seg in key.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        // A missing key (e.g. a required one) points at its parent.
        let Some(next) = item.get(name) else { break };
        item = next;
        span = item.span().or(span);
        if let Some(i) = index {
            let Some(next) = item.get(i) else { break };
            item = next;
            span = item.span().or(span);
        }
    }
    span.map(|s| line_of(text, s.start))
}

/// The line of `key` found by reading lines: `leaf = …` under the table
/// header of its parent (`[falls]`, `[[cameras]]`), else that header.
fn locate_in_lines(text: &str, key: &str) -> Option<usize> {
    let names: Vec<&str> = key.split('.').map(|seg| seg.split('[').next().unwrap_or(seg)).collect();
    let (leaf, parent) = names.split_last()?;
    let mut table: Vec<&str> = Vec::new();
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_start_matches('[');
            let name = h.split(']').next().unwrap_or("");
            table = name.split('.').map(str::trim).collect();
            if table == parent {
                header = Some(i + 1);
            }
            continue;
        }
        let sets_leaf = t.strip_prefix(leaf).is_some_and(|rest| rest.trim_start().starts_with('='));
        if sets_leaf && table == parent {
            return Some(i + 1);
        }
    }
    header.or(Some(1))
}

/// The smallest valid config (one camera, no lanes, models never loaded),
/// for tests of the stages after the config.
#[cfg(test)]
pub(crate) fn minimal() -> Config {
    let text = r#"agent_id = "a"
site = { district = "d", street = "s", community = "c" }
broker = { host = "127.0.0.1" }
detector = { path = "/m.onnx", format = "nanodet", input_size = 416 }
[[cameras]]
id = "cam"
name = "Cam"
url = "rtsp://h/s"
"#;
    Config::parse(text, Path::new("t.toml")).expect("the minimal config is valid")
}

#[cfg(test)]
mod tests;
