//! alleywatch edge agent: RTSP cameras in, ONNX analytics, MQTT alerts out.
//!
//! The modules follow the data path:
//!
//! ```text
//! config ─▶ source ─▶ infer ─▶ analytics ─▶ alert
//!           (GStreamer,  (ort session,  (lane rule:  (events, snapshots,
//!            latest-      letterbox,     dwell and    MQTT QoS 1)
//!            frame slot)  decode, NMS)   clear)
//! ```
//!
//! - [`config`]: the TOML file, its defaults and validation.
//! - [`source`]: one GStreamer pipeline per camera, supervised, into a
//!   latest-frame slot.
//! - [`infer`]: ONNX Runtime loading, letterboxing, detector output decoding.
//! - [`analytics`]: rules turning detections into event transitions.
//! - [`alert`]: event payloads, snapshots, topics and the MQTT publisher.
//! - [`metrics`]: Prometheus counters and per-stage histograms.
//! - [`http`]: `/metrics`, health, `/api` and the technician's page.
//! - [`pipeline`]: wires the stages together and runs the agent.
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
pub mod metrics;
pub mod project;
pub mod redact;
pub mod replay;
pub mod service;
pub mod shutdown;
pub mod source;
pub mod vocab;
