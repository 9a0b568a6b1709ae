//! The harness of the integration tests (`tests/*.rs`), written once: the
//! agent process ([`Agent`]), the centre process ([`Centre`]), a subscriber playing the command
//! centre ([`Sub`]), HTTP on loopback ([`http`]), headless Chromium
//! ([`browser`]), the project's files
//! ([`clip`], [`detector`], [`model`], [`project_file`]), the event schema,
//! and time ([`serial`], [`wait_until`]).
//!
//! The camera and the broker the tests stand up come from
//! `alleywatch-devkit` (`RtspServer`, `Mosquitto`), as for the demo.

pub mod agent;
pub mod browser;
pub mod centre;
pub mod files;
pub mod http;
pub mod mqtt;
pub mod schema;
pub mod wait;

pub use agent::{agent_bin, lane_camera, write_config, Agent, Launch, BASE};
pub use centre::{centre_bin, write_centre_config, Centre};
pub use files::{clip, detector, model, models_dir, project_file};
pub use mqtt::{camera_is, is_event, Msg, Sub};
pub use schema::{assert_valid, event_schema};
pub use wait::{serial, wait_until};
