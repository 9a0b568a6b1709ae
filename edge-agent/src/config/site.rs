//! `site`: where the box sits in the district → street → community chain.

use serde::Deserialize;

use super::check::{fail, topic_safe, Check};

/// The three-level place path, e.g. `shapingba/fengwen/xiangxieli`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub(crate) district: String,
    pub(crate) street: String,
    pub(crate) community: String,
}

impl Site {
    /// The site as it appears in topics and payloads.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.district, self.street, self.community)
    }
}

impl Site {
    pub(super) fn validate(&self) -> Check {
        topic_safe(&self.district).or_else(|m| fail("site.district", m))?;
        topic_safe(&self.street).or_else(|m| fail("site.street", m))?;
        topic_safe(&self.community).or_else(|m| fail("site.community", m))
    }
}
