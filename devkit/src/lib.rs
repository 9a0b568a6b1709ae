//! Local stand-ins for what an edge box talks to, for the `edge-agent demo`
//! command, the end-to-end tests and the benches: never part of the product
//! (`edge-agent` reaches it only through its `demo` feature).
//!
//! - [`rtsp_server`]: an in-process RTSP server, the camera;
//! - [`mosquitto`]: a private mosquitto on a free loopback port, the broker;
//! - the demo scene: [`DEMO_CLIP`], the clip the setup makes, and
//!   [`DEMO_LANE`], a lane over its parked cars.

pub mod mosquitto;
pub mod rtsp_server;

pub use mosquitto::{free_port, Mosquitto};
pub use rtsp_server::RtspServer;

/// Where the setup script puts the demo clip, relative to the project root.
pub const DEMO_CLIP: &str = ".deps/media/demo_lane.mp4";

/// The demo lane: covers the cars parked behind the fence in the clip's
/// "street" still (see `deploy/make-demo-clip.sh`).
pub const DEMO_LANE: &str = "[[0.0, 0.35], [1.0, 0.35], [1.0, 0.85], [0.0, 0.85]]";
