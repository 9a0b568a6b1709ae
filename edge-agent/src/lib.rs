//! alleywatch edge agent: RTSP cameras in, ONNX analytics, MQTT alerts out.
//!
//! The modules follow the data path of one frame, floor by floor (a module
//! uses only the floors below it; `layers.rs` checks it):
//!
//! ```text
//!            source ──▶ infer ──▶ analytics ──▶ alert ──▶ broker
//!  camera:   (GStreamer,  (models:     (rules: lanes,  (evidence, event
//!   stages    latest-      detector,    falls, fire;    messages, spool,
//!   per cam.  frame slot)  pose, fire)  trackers)       MQTT QoS 1)
//!
//!  beside it: config (what the operator wrote) · control (what may be asked)
//!             metrics · http (the technician's page) · agent (the wiring)
//!  under all: vocab (Phase, Severity, EventKind, boxes, frames, time)
//! ```
//!
//! - [`vocab`]: the words every layer uses, and the MQTT contract's.
//! - [`config`]: the TOML file, one table per file, each validating itself.
//! - [`control`]: changes asked of a running agent (centre or page).
//! - [`source`]: one GStreamer pipeline per camera, supervised, into a
//!   latest-frame slot.
//! - [`infer`]: ONNX Runtime sessions, letterboxing, model output decoding,
//!   motion thumbnails and the detector's motion gate.
//! - [`analytics`]: the rules — lanes, falls, fire — and their trackers.
//! - [`draw`]: boxes, polygons, skeletons and text on frames.
//! - [`alert`]: each rule's evidence, event messages with snapshots, the
//!   durable spool, the centres' ledger and commands, the MQTT publisher.
//! - [`camera`]: one camera's analysis, one stage per rule family, a frame
//!   in and messages out; the live agent and `replay` both drive it.
//! - [`metrics`]: Prometheus counters and per-stage histograms.
//! - [`http`]: `/metrics`, health, `/api` and the technician's page.
//! - [`agent`]: runs the agent — cameras, analysis threads, alert stage,
//!   HTTP, reloads.
//! - [`replay`]: the same analysis on a file: `replay`, `eval`,
//!   `eval-images`.
//! - [`service`]: systemd readiness and watchdog.
//! - [`demo`] (feature `demo`, on by default): the self-contained demo, run
//!   against the in-process camera and broker of `alleywatch-devkit`.
//! - [`project`]: the checkout's own files (models, media), found from the
//!   working directory or the binary.
//! - [`redact`], [`shutdown`]: credential scrubbing and the stop signal.

pub mod agent;
pub mod alert;
pub mod analytics;
pub mod camera;
pub mod config;
pub mod control;
#[cfg(feature = "demo")]
pub mod demo;
pub mod draw;
pub mod http;
pub mod infer;
#[cfg(test)]
mod layers;
pub mod metrics;
pub mod project;
pub(crate) mod redact;
pub mod replay;
pub(crate) mod service;
pub mod shutdown;
pub mod source;
pub mod vocab;
