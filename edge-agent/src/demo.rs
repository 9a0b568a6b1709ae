//! The self-contained demo (`edge-agent demo`, behind the `demo` feature):
//! its configuration and how it prints what the agent publishes.
//!
//! The demo runs the real agent ([`crate::agent::run`]) against the two
//! local services of `alleywatch-devkit`: an in-process RTSP camera serving
//! the demo clip and a mosquitto broker on a free loopback port. It
//! subscribes to everything the agent publishes and prints it readably.

use std::path::Path;
use std::time::Duration;

use alleywatch_devkit::{free_port, DEMO_LANE};

use crate::config::Config;

/// The demo's configuration: one camera looking at the parked cars, one
/// lane over them, the default detector, a local broker.
pub fn demo_config(
    rtsp_url: &str,
    broker_port: u16,
    model: &Path,
    state: &Path,
) -> Result<Config, crate::config::ConfigError> {
    let text = format!(
        r#"
agent_id = "demo-agent"
site = {{ district = "demo-district", street = "demo-street", community = "demo-community" }}
broker = {{ host = "127.0.0.1", port = {broker_port} }}
detector = {{ path = "{model}", format = "nanodet", input_size = 416, score_threshold = 0.35 }}
alerts = {{ update_interval_s = 5 }}
source = {{ backoff_initial_s = 0.5, backoff_max_s = 5 }}
spool = {{ path = "{spool}" }}
http = {{ bind = "127.0.0.1:{http_port}" }}

[[cameras]]
id = "demo-cam"
name = "Demo street, parked cars"
url = "{rtsp_url}"
fps = 5
lanes = [{{ name = "kerb-lane", polygon = {polygon}, classes = ["car", "truck", "bus"], dwell_s = 4, clear_s = 2 }}]
"#,
        model = model.display(),
        polygon = DEMO_LANE,
        spool = state.join("spool.sqlite").display(),
        http_port = free_port().unwrap_or(9464),
    );
    Config::parse(&text, Path::new("<demo>"))
}

/// One line per MQTT message, as the demo prints it.
pub fn describe(topic: &str, payload: &[u8], t: Duration) -> String {
    let at = format!("[{:6.1}s]", t.as_secs_f64());
    if topic.ends_with("/snapshot") {
        return format!("{at} snapshot  {:.1} KB JPEG  {}", payload.len() as f64 / 1024.0, topic);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return format!("{at} {topic}: {} bytes", payload.len());
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    if topic.contains("/events/") {
        let objects: Vec<String> = v["evidence"]["objects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| {
                        format!("{} {:.2}", o["label"].as_str().unwrap_or("?"), o["score"].as_f64().unwrap_or(0.0))
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "{at} {:<12} {:<6} camera={} zone={} objects=[{}] occupancy={:.0}% peak={:.2} duration={:.1}s seq={} id={}",
            s("kind"),
            s("type").to_uppercase(),
            v["camera"]["id"].as_str().unwrap_or("?"),
            s("zone"),
            objects.join(", "),
            v["evidence"]["occupancy"].as_f64().unwrap_or(0.0) * 100.0,
            v["score"]["peak"].as_f64().unwrap_or(0.0),
            v["duration_s"].as_f64().unwrap_or(0.0),
            v["seq"],
            s("id"),
        )
    } else if topic.contains("/cameras/") {
        let err = v.get("last_error").and_then(|e| e.as_str()).map(|e| format!(" ({e})")).unwrap_or_default();
        format!("{at} camera {} is {}{err}", s("camera"), s("state"))
    } else {
        format!("{at} agent {} is {}", s("agent"), s("state"))
    }
}
