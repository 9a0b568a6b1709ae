//! The models a camera's stages run, loaded once and shared by every camera.

use std::sync::Arc;

use crate::config::Config;
use crate::config::ModelSession;
use crate::infer::fire::FireModel;
use crate::infer::pose::PoseModel;
use crate::infer::runtime::require_pinned;
use crate::infer::{Detector, InferError};

/// The models every camera shares.
#[derive(Clone)]
pub struct Models {
    pub detector: Arc<Detector>,
    pub pose: Option<Arc<PoseModel>>,
    pub fire: Option<Arc<FireModel>>,
}

impl Models {
    /// Loads every model the config names.
    pub fn load(config: &Config) -> Result<Models, InferError> {
        if config.require_model_hash {
            ModelSession::all_of(config).iter().try_for_each(require_pinned)?;
        }
        let detector = Arc::new(crate::infer::detector::load_from_config(config)?);
        let pose = crate::infer::pose::load_from_config(config)?.map(Arc::new);
        let fire = crate::infer::fire::load_from_config(config)?.map(Arc::new);
        Ok(Models { detector, pose, fire })
    }
}
