//! The checkout's files the tests read, found the way the agent finds them
//! ([`edge_agent::project::find_in_project`]): the demo clip, the models,
//! the schema and deploy files. A missing one is a panic that says so.

use std::path::PathBuf;

use alleywatch_devkit::DEMO_CLIP;
use edge_agent::project::{find_in_project, DEFAULT_MODEL};

/// `rel` (from the project root), or a panic naming it.
pub fn project_file(rel: &str) -> PathBuf {
    find_in_project(rel).unwrap_or_else(|| panic!("{rel} not found in the checkout (run deploy/setup.sh)"))
}

/// The demo clip the setup makes: 4 s empty pavement, 16 s parked cars,
/// 10 s empty pavement (H.264 MP4, 640x272).
pub fn clip() -> PathBuf {
    find_in_project(DEMO_CLIP).expect("demo clip missing: run deploy/setup.sh (it makes .deps/media/demo_lane.mp4)")
}

/// The project's default detector (`models/nanodet.onnx`).
pub fn detector() -> PathBuf {
    project_file(DEFAULT_MODEL)
}

/// `models/NAME`.
pub fn model(name: &str) -> PathBuf {
    models_dir().join(name)
}

/// The project's models folder (where `models.toml` is).
pub fn models_dir() -> PathBuf {
    project_file("models/models.toml").parent().unwrap().to_path_buf()
}
