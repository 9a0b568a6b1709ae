//! The centre's config file: which level of the chain of command this
//! centre is and which part of the site tree it watches, where its broker,
//! database and snapshot folder are, and where its HTTP port listens.
//! Errors name the file, line and key, as the agent's do (one crate,
//! `alleywatch-tomlconfig`, reads both).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alleywatch_contract::check_level;
use alleywatch_tomlconfig::{fail, Check};
use serde::Deserialize;

pub use alleywatch_tomlconfig::ConfigError;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub centre: Centre,
    pub broker: Broker,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub snapshots: Snapshots,
    #[serde(default)]
    pub http: Http,
    #[serde(default)]
    pub ingest: Ingest,
    #[serde(default)]
    pub console: Console,
    /// How long each step of the loop may take, by kind and severity; the
    /// first entry that matches an alert applies. Without any, the
    /// defaults of [`default_deadlines`].
    #[serde(default = "default_deadlines")]
    pub deadlines: Vec<Deadline>,
    #[serde(default)]
    pub fleet: Fleet,
}

/// Which centre this is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Centre {
    /// Shown in the console and used in the MQTT client id.
    pub name: String,
    pub level: Level,
    /// The site path of this centre's level: `district` for a district
    /// centre, `district/street` for a street, `district/street/community`
    /// for a community.
    pub site: String,
}

/// The three levels of the chain of command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    District,
    Street,
    Community,
}

impl Level {
    /// How many levels of the site path this level names.
    pub fn depth(self) -> usize {
        match self {
            Level::District => 1,
            Level::Street => 2,
            Level::Community => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::District => "district",
            Level::Street => "street",
            Level::Community => "community",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// The agents' topic root (their `broker.topic_root`).
    #[serde(default = "default_root")]
    pub root: String,
    /// The MQTT client id of the centre's persistent session. It must stay
    /// the same across restarts (the broker queues what arrives while the
    /// centre is down under this id) and differ between centres.
    /// Default: `alleywatch-centre-{centre.name}`.
    pub client_id: Option<String>,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    pub username: Option<String>,
    /// Read from this environment variable, so the file holds no secret.
    pub password_env: Option<String>,
}

fn default_mqtt_port() -> u16 {
    1883
}
fn default_root() -> String {
    "alleywatch".into()
}
fn default_keep_alive_s() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// `sqlite:PATH` (relative to the config file's folder). PostgreSQL
    /// (`postgres://…`) is the production choice the store is written for;
    /// its backend is not in this build yet.
    #[serde(default = "default_database_url")]
    pub url: String,
}

impl Default for Database {
    fn default() -> Self {
        Database { url: default_database_url() }
    }
}

fn default_database_url() -> String {
    "sqlite:centre.sqlite".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshots {
    /// Content-addressed JPEG store (relative to the config file's folder).
    #[serde(default = "default_snapshot_dir")]
    pub dir: PathBuf,
    /// Snapshots older than this are deleted.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// The folder's bound; the oldest snapshots go first past it.
    #[serde(default = "default_max_total_mib")]
    pub max_total_mib: u64,
    /// A larger message on a snapshot topic is refused (and counted).
    #[serde(default = "default_max_snapshot_kib")]
    pub max_snapshot_kib: u32,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots {
            dir: default_snapshot_dir(),
            retention_days: default_retention_days(),
            max_total_mib: default_max_total_mib(),
            max_snapshot_kib: default_max_snapshot_kib(),
        }
    }
}

fn default_snapshot_dir() -> PathBuf {
    "snapshots".into()
}
fn default_retention_days() -> u32 {
    90
}
fn default_max_total_mib() -> u64 {
    10 * 1024
}
fn default_max_snapshot_kib() -> u32 {
    2048
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
}

impl Default for Http {
    fn default() -> Self {
        Http { bind: default_bind() }
    }
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingest {
    /// A larger message on an event, status or reply topic is refused.
    #[serde(default = "default_max_json_kib")]
    pub max_json_kib: u32,
    /// Messages written in one database transaction at most.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest { max_json_kib: default_max_json_kib(), batch: default_batch() }
    }
}

fn default_max_json_kib() -> u32 {
    256
}
fn default_batch() -> usize {
    256
}

/// The console's sessions and logins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// A session ends this long after login, used or not.
    #[serde(default = "default_session_hours")]
    pub session_hours: u32,
    /// Marks the session cookie `Secure`: set it when the console is served
    /// over HTTPS (behind a TLS proxy), so the cookie never travels in clear.
    #[serde(default)]
    pub secure_cookies: bool,
    /// Failed logins allowed per user name, and per client address (ten
    /// times as many), within `login_window_s`; more are refused with 429
    /// until the window has passed.
    #[serde(default = "default_login_attempts")]
    pub login_attempts: u32,
    #[serde(default = "default_login_window_s")]
    pub login_window_s: u64,
    /// Live board streams open at once, over all users.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            session_hours: default_session_hours(),
            secure_cookies: false,
            login_attempts: default_login_attempts(),
            login_window_s: default_login_window_s(),
            max_streams: default_max_streams(),
        }
    }
}

fn default_session_hours() -> u32 {
    12
}
fn default_login_attempts() -> u32 {
    5
}
fn default_login_window_s() -> u64 {
    900
}
fn default_max_streams() -> usize {
    256
}

/// The deadlines of one kind and severity, in seconds from the alert's
/// start: assessed within `assess_s`, a real alert dispatched within
/// `dispatch_s`, closed within `close_s`. Past one, the alert is late and
/// goes up a level (a community's to its street); past it by as long
/// again, up to the district.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deadline {
    /// An event kind (`fire`, `smoke`, `fall`, `lane_blocked`,
    /// `camera_offline`) or `*`.
    pub kind: String,
    /// `info`, `warning`, `critical` or `*`.
    #[serde(default = "any")]
    pub severity: String,
    pub assess_s: u32,
    pub dispatch_s: u32,
    pub close_s: u32,
}

fn any() -> String {
    "*".into()
}

/// Fire first (a fire must be dispatched within two minutes), then by
/// severity.
pub fn default_deadlines() -> Vec<Deadline> {
    let d = |kind: &str, severity: &str, assess_s, dispatch_s, close_s| Deadline {
        kind: kind.into(),
        severity: severity.into(),
        assess_s,
        dispatch_s,
        close_s,
    };
    vec![
        d("fire", "*", 60, 120, 3600),
        d("smoke", "*", 60, 180, 3600),
        d("*", "critical", 120, 300, 3600),
        d("*", "warning", 300, 900, 4 * 3600),
        d("*", "*", 1800, 3600, 24 * 3600),
    ]
}

impl Deadline {
    pub fn matches(&self, kind: &str, severity: &str) -> bool {
        (self.kind == "*" || self.kind == kind) && (self.severity == "*" || self.severity == severity)
    }
}

/// Fleet health: when a silent agent or a failed camera becomes an alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// An agent offline, or a camera failed, for this long raises a
    /// `camera_offline` alert (one per camera, or per agent).
    #[serde(default = "default_offline_after_s")]
    pub offline_after_s: u64,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet { offline_after_s: default_offline_after_s() }
    }
}

fn default_offline_after_s() -> u64 {
    300
}

/// Where the database lives, from `database.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
}

impl Config {
    /// Reads and validates `file`; relative paths resolve against its folder.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = alleywatch_tomlconfig::load(file, Config::validate)?;
        let base = file.parent().unwrap_or(Path::new("."));
        if config.snapshots.dir.is_relative() {
            config.snapshots.dir = base.join(&config.snapshots.dir);
        }
        if let Some(path) = config.database.url.strip_prefix("sqlite:") {
            if Path::new(path).is_relative() {
                config.database.url = format!("sqlite:{}", base.join(path).display());
            }
        }
        Ok(config)
    }

    /// The levels of `centre.site`.
    pub fn site_levels(&self) -> Vec<&str> {
        self.centre.site.split('/').collect()
    }

    /// What the centre subscribes to: everything under its site.
    pub fn topic_filter(&self) -> String {
        alleywatch_contract::Topics::filter(&self.broker.root, &self.site_levels())
    }

    pub fn client_id(&self) -> String {
        self.broker.client_id.clone().unwrap_or_else(|| format!("alleywatch-centre-{}", self.centre.name))
    }

    pub fn database_url(&self) -> DatabaseUrl {
        // validate() accepted nothing else.
        DatabaseUrl::Sqlite(PathBuf::from(self.database.url.strip_prefix("sqlite:").unwrap_or(&self.database.url)))
    }

    fn validate(&self) -> Check {
        if let Err(e) = check_level(&self.centre.name) {
            return fail("centre.name", e);
        }
        let levels = self.site_levels();
        if levels.len() != self.centre.level.depth() {
            return fail(
                "centre.site",
                format!(
                    "{:?} has {} level(s); a {} centre's site has {} ({})",
                    self.centre.site,
                    levels.len(),
                    self.centre.level.as_str(),
                    self.centre.level.depth(),
                    ["district", "district/street", "district/street/community"][self.centre.level.depth() - 1]
                ),
            );
        }
        for level in levels {
            if let Err(e) = check_level(level) {
                return fail("centre.site", e);
            }
        }
        if self.broker.host.trim().is_empty() {
            return fail("broker.host", "must not be empty");
        }
        if self.broker.port == 0 {
            return fail("broker.port", "must be 1–65535");
        }
        for level in self.broker.root.split('/') {
            if let Err(e) = check_level(level) {
                return fail("broker.root", e);
            }
        }
        if let Some(id) = &self.broker.client_id {
            if let Err(e) = check_level(id) {
                return fail("broker.client_id", e);
            }
        }
        if !(5..=3600).contains(&self.broker.keep_alive_s) {
            return fail("broker.keep_alive_s", format!("{} must be 5–3600", self.broker.keep_alive_s));
        }
        let url = &self.database.url;
        match url.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => {}
            Some(("postgres" | "postgresql", _)) => {
                return fail("database.url", "PostgreSQL is not in this build yet; use sqlite:PATH")
            }
            _ => return fail("database.url", format!("{url:?}: expected sqlite:PATH")),
        }
        if self.snapshots.retention_days == 0 {
            return fail("snapshots.retention_days", "must be at least 1");
        }
        if self.snapshots.max_total_mib == 0 {
            return fail("snapshots.max_total_mib", "must be at least 1");
        }
        if !(16..=16384).contains(&self.snapshots.max_snapshot_kib) {
            return fail("snapshots.max_snapshot_kib", format!("{} must be 16–16384", self.snapshots.max_snapshot_kib));
        }
        if !(4..=4096).contains(&self.ingest.max_json_kib) {
            return fail("ingest.max_json_kib", format!("{} must be 4–4096", self.ingest.max_json_kib));
        }
        if !(1..=10_000).contains(&self.ingest.batch) {
            return fail("ingest.batch", format!("{} must be 1–10000", self.ingest.batch));
        }
        let c = &self.console;
        if !(1..=720).contains(&c.session_hours) {
            return fail("console.session_hours", format!("{} must be 1–720", c.session_hours));
        }
        if !(1..=100).contains(&c.login_attempts) {
            return fail("console.login_attempts", format!("{} must be 1–100", c.login_attempts));
        }
        if !(10..=86_400).contains(&c.login_window_s) {
            return fail("console.login_window_s", format!("{} must be 10–86400", c.login_window_s));
        }
        if !(1..=10_000).contains(&c.max_streams) {
            return fail("console.max_streams", format!("{} must be 1–10000", c.max_streams));
        }
        const KINDS: [&str; 6] = ["*", "fire", "smoke", "fall", "lane_blocked", "camera_offline"];
        for (i, d) in self.deadlines.iter().enumerate() {
            let key = |field: &str| format!("deadlines[{i}].{field}");
            if !KINDS.contains(&d.kind.as_str()) {
                return fail(&key("kind"), format!("{:?}: expected one of {}", d.kind, KINDS.join(", ")));
            }
            if !["*", "info", "warning", "critical"].contains(&d.severity.as_str()) {
                return fail(&key("severity"), format!("{:?}: expected info, warning, critical or *", d.severity));
            }
            for (field, v) in [("assess_s", d.assess_s), ("dispatch_s", d.dispatch_s), ("close_s", d.close_s)] {
                if !(1..=30 * 86_400).contains(&v) {
                    return fail(&key(field), format!("{v} must be 1–2592000 (30 days)"));
                }
            }
            if !(d.assess_s <= d.dispatch_s && d.dispatch_s <= d.close_s) {
                return fail(&key("dispatch_s"), "the deadlines must not shrink: assess_s ≤ dispatch_s ≤ close_s");
            }
        }
        if !(1..=7 * 86_400).contains(&self.fleet.offline_after_s) {
            return fail("fleet.offline_after_s", format!("{} must be 1–604800", self.fleet.offline_after_s));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[centre]
name = "fengwen"
level = "street"
site = "shapingba/fengwen"

[broker]
host = "127.0.0.1"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        alleywatch_tomlconfig::parse(text, Path::new("centre.toml"), Config::validate)
    }

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.topic_filter(), "alleywatch/shapingba/fengwen/#");
        assert_eq!(c.client_id(), "alleywatch-centre-fengwen");
        assert_eq!(c.database_url(), DatabaseUrl::Sqlite("centre.sqlite".into()));
        assert_eq!(c.ingest.batch, 256);
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let bad = GOOD.replace("site = \"shapingba/fengwen\"", "site = \"shapingba\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("centre.toml:5: centre.site:") && e.contains("a street centre's site has 2"), "{e}");
        let bad = GOOD.replace("level = \"street\"", "level = \"city\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("centre.toml:4: centre.level:") && e.contains("unknown variant"), "{e}");
        let bad = format!("{GOOD}\n[database]\nurl = \"mysql://x\"\n");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("centre.toml:11: database.url:"), "{e}");
        let bad = format!("{GOOD}port = 0\n");
        assert!(parse(&bad).unwrap_err().to_string().contains("broker.port: must be 1–65535"));
        let bad = GOOD.replace("shapingba/fengwen", "shapingba/#");
        assert!(parse(&bad).unwrap_err().to_string().contains("centre.site: \"#\" contains '#'"));
        let bad = format!("{GOOD}colour = \"red\"\n");
        assert!(parse(&bad).unwrap_err().to_string().contains("unknown field `colour`"));
    }
}
