//! The `edge-agent` binary: flag parsing, logging, signals; everything else
//! lives in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use edge_agent::config::Config;
#[cfg(feature = "demo")]
use edge_agent::demo;
#[cfg(feature = "demo")]
mod demo_centre;
use edge_agent::metrics::Metrics;
use edge_agent::shutdown::Shutdown;

#[derive(Parser)]
#[command(
    name = "edge-agent",
    version,
    about = "alleywatch edge agent: RTSP cameras in, ONNX analytics, MQTT alerts out"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent.
    Run {
        /// The configuration file.
        #[arg(short, long, default_value = "/etc/alleywatch/alleywatch.toml")]
        config: PathBuf,
        /// Reload only on SIGHUP, not when the file changes.
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate a configuration file (and its model and ONNX Runtime) and exit.
    CheckConfig { file: PathBuf },
    /// Run the agent's analysis on a video file or still image and print
    /// each event as one JSON line (times relative to the clip).
    Replay {
        /// Video file (anything GStreamer decodes) or a .jpg/.png still.
        file: PathBuf,
        /// Agent config to use (default: the project's models, falls on).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Which camera's settings (lanes, fps, overrides) to use; default the first.
        #[arg(long)]
        camera: Option<String>,
        /// Play at the clip's own speed instead of as fast as possible.
        #[arg(long)]
        realtime: bool,
        /// Write an annotated MP4: boxes, track ids, skeletons, lanes, event banner.
        #[arg(long, value_name = "OUT.mp4")]
        annotate: Option<PathBuf>,
        /// Seconds a still image is shown.
        #[arg(long, default_value_t = 10.0)]
        still_s: f64,
        /// Seconds to keep showing a video's last frame after it ends.
        #[arg(long, default_value_t = 0.0)]
        hold_last_s: f64,
        /// Set a lane key on every lane, e.g. `--lane cue=obstruction
        /// --lane min_occupancy=0.2 --lane dwell_s=20` (repeatable).
        #[arg(long = "lane", value_name = "KEY=VALUE")]
        lane: Vec<edge_agent::replay::LaneSet>,
    },
    /// Replay every clip of a labels file and print TP, FP, FN, precision,
    /// recall and detection delay per event kind.
    Eval {
        /// The labels file (TOML; see the README, "Measured quality").
        labels: PathBuf,
        /// Base agent config for every clip (default: the project's models).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Also write the full report as JSON here.
        #[arg(long, value_name = "OUT.json")]
        json: Option<PathBuf>,
        /// Only clips whose path contains this text.
        #[arg(long)]
        only: Option<String>,
        /// Turn the fire rule's flicker check off (to measure what it adds).
        #[arg(long)]
        no_flicker: bool,
        /// Set a lane key on every clip's lanes, e.g. `--lane cue=obstruction`
        /// (repeatable): compare cues and tune thresholds on labelled clips.
        #[arg(long = "lane", value_name = "KEY=VALUE")]
        lane: Vec<edge_agent::replay::LaneSet>,
    },
    /// Score a fire/smoke model on a folder of labelled stills (YOLO labels):
    /// per kind precision and recall at the configured thresholds, the
    /// precision-recall curve (JSON and PNG) and the false positives by score.
    EvalImages {
        /// A folder of images (searched recursively; labels in `../labels/`
        /// or beside each image), or a text file listing image paths.
        set: PathBuf,
        /// Agent config whose `[fire]` table (model, thresholds, area gates)
        /// is used (default: the project's fire model and defaults).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Another ONNX model instead of the config's `fire.path`.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Its format: heatmap, yolov8, yolox or nanodet.
        #[arg(long)]
        format: Option<String>,
        /// Its class names in output order, comma-separated (box formats).
        #[arg(long, value_delimiter = ',')]
        labels: Option<Vec<String>>,
        /// Its input size (a multiple of 32).
        #[arg(long)]
        input_size: Option<u32>,
        /// The set's class names in label-id order, comma-separated
        /// (default: its data.yaml, else fire,smoke).
        #[arg(long, value_delimiter = ',')]
        names: Option<Vec<String>>,
        /// Folder for report.json and pr.png.
        #[arg(long, default_value = "eval-images-out")]
        out: PathBuf,
        /// False positives and negatives printed per kind.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Run the demo: an in-process RTSP camera, a private broker, the agent,
    /// and every alert printed as it arrives.
    #[cfg(feature = "demo")]
    Demo {
        /// H.264 MP4 to serve as the camera (default: the setup's demo clip).
        #[arg(long)]
        clip: Option<PathBuf>,
        /// Folder for the received snapshot JPEGs.
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
        /// Give up after this many seconds without a complete event.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
        /// Also run the command centre (this `alleywatch-centre` binary) on
        /// the same broker, with SQLite under OUT/centre and a demo login,
        /// and check that the alert reached its board.
        #[arg(long)]
        centre: Option<PathBuf>,
        /// With --centre: keep the broker and the centre running after the
        /// event, so the console can be opened, until Ctrl-C.
        #[arg(long)]
        stay: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints alerts itself; its logs default to warnings only.
    #[cfg(feature = "demo")]
    let default_filter = if matches!(cli.command, Cmd::Demo { .. }) { "warn" } else { "info" };
    #[cfg(not(feature = "demo"))]
    let default_filter = "info";
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Cmd::CheckConfig { file } => check_config(&file),
        Cmd::Replay { file, config, camera, realtime, annotate, still_s, hold_last_s, lane } => {
            let opts = edge_agent::replay::ReplayOptions { realtime, annotate, still_s, hold_last_s };
            replay(&file, config.as_deref(), camera.as_deref(), &opts, &lane)
        }
        Cmd::Eval { labels, config, json, only, no_flicker, lane } => {
            eval(&labels, config.as_deref(), json.as_deref(), only.as_deref(), !no_flicker, &lane)
        }
        Cmd::EvalImages { set, config, model, format, labels, input_size, names, out, top } => {
            let model = ModelChoice { path: model, format, labels, input_size };
            eval_images(&set, config.as_deref(), &model, names, &out, top)
        }
        Cmd::Run { config, no_watch } => runtime().and_then(|rt| rt.block_on(run(config, !no_watch))),
        #[cfg(feature = "demo")]
        Cmd::Demo { clip, out, timeout_s, centre, stay } => {
            runtime().and_then(|rt| rt.block_on(run_demo(clip, out, timeout_s, centre, stay)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    if config.require_model_hash {
        for spec in edge_agent::config::ModelSession::all_of(&config) {
            edge_agent::infer::runtime::require_pinned(&spec)?;
        }
    }
    edge_agent::infer::runtime::verify_model(&config.detector.path, config.detector.sha256.as_deref())?;
    if let Some(p) = &config.pose {
        edge_agent::infer::runtime::verify_model(&p.path, p.sha256.as_deref())?;
    }
    if let Some(f) = &config.fire {
        edge_agent::infer::runtime::verify_model(&f.path, f.sha256.as_deref())?;
    }
    let fire = if config.fire.is_some() { config.cameras.iter().filter(|c| c.fire).count() } else { 0 };
    let lib = edge_agent::infer::runtime::find_library(config.ort_library.as_deref())?;
    let falls = config.cameras.iter().filter(|c| config.falls_for(c).enabled).count();
    // Secret files are read at start; say now if one is missing or unreadable.
    let b = &config.broker;
    let files = [
        ("broker.password_file", &b.password_file),
        ("broker.ca_file", &b.ca_file),
        ("broker.client_cert", &b.client_cert),
        ("broker.client_key", &b.client_key),
    ];
    let mut problems: Vec<String> = files
        .iter()
        .filter_map(|(key, path)| {
            let path = path.as_ref()?;
            std::fs::File::open(path).err().map(|e| format!("{key} {}: {e}", path.display()))
        })
        .collect();
    problems.extend(config.http.read_token().err());
    problems.extend(config.http.read_change_token().err());
    for p in &problems {
        eprintln!("warning: {p} (the agent will not start until this is fixed)");
    }
    for w in config.start_warnings() {
        eprintln!("warning: {w}");
    }
    println!(
        "{}: ok — agent {} at {}, {} camera(s), {} lane(s), falls on {} camera(s), fire on {} camera(s), model {} ({}), ONNX Runtime {}",
        file.display(),
        config.agent_id,
        config.site.path(),
        config.cameras.len(),
        config.cameras.iter().map(|c| c.lanes.len()).sum::<usize>(),
        falls,
        fire,
        config.detector.path.display(),
        config.detector.format,
        lib.display()
    );
    Ok(())
}

fn replay(
    file: &std::path::Path,
    config: Option<&std::path::Path>,
    camera: Option<&str>,
    opts: &edge_agent::replay::ReplayOptions,
    lanes: &[edge_agent::replay::LaneSet],
) -> anyhow::Result<()> {
    use edge_agent::replay;
    let config = replay::load_config_with(config, lanes)?;
    let camera = replay::pick_camera(&config, camera)?.clone();
    let models = edge_agent::camera::Models::load(&config)?;
    let report = replay::run(&config, &camera, &models, file, opts, &mut |ev| {
        println!("{}", serde_json::to_string(ev).unwrap_or_default());
    })?;
    eprintln!(
        "replayed {}: {} frames ({:.1} s of clip) in {:.1} s: {:.1} frames/s, {} event messages",
        file.display(),
        report.frames,
        report.clip_s,
        report.wall_s,
        report.fps(),
        report.events.len()
    );
    if let Some(a) = &opts.annotate {
        eprintln!("annotated video: {}", a.display());
    }
    Ok(())
}

fn eval(
    labels: &std::path::Path,
    config: Option<&std::path::Path>,
    json: Option<&std::path::Path>,
    only: Option<&str>,
    flicker: bool,
    lanes: &[edge_agent::replay::LaneSet],
) -> anyhow::Result<()> {
    use edge_agent::replay::eval;
    let report = eval::run(labels, config, only, flicker, lanes, &mut |c| {
        let starts: Vec<String> = c.starts.iter().map(|s| format!("{}@{:.1}s", s.kind, s.t)).collect();
        let want: Vec<String> = c.labelled.iter().map(|l| format!("{}@{:.1}s", l.kind, l.at)).collect();
        let verdict = match &c.error {
            Some(e) => format!("ERROR {e}"),
            None if c.false_positives.is_empty() && c.labelled.iter().all(|l| l.matched.is_some()) => "ok".into(),
            None => "MISS".into(),
        };
        println!(
            "{:<52} labelled [{}] started [{}] {:.0} frames/s {verdict}",
            c.file,
            want.join(", "),
            starts.join(", "),
            c.fps
        );
    })?;
    println!("\n{}", eval::table(&report));
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

/// `eval-images`' model flags: each replaces its `[fire]` key.
struct ModelChoice {
    path: Option<PathBuf>,
    format: Option<String>,
    labels: Option<Vec<String>>,
    input_size: Option<u32>,
}

fn eval_images(
    set: &std::path::Path,
    config: Option<&std::path::Path>,
    choice: &ModelChoice,
    names: Option<Vec<String>>,
    out: &std::path::Path,
    top: usize,
) -> anyhow::Result<()> {
    use edge_agent::replay::{self, images};
    let config = replay::load_config(config)?;
    let camera = replay::pick_camera(&config, None)?.clone();
    let Some(mut fire) = config.fire.clone() else {
        bail!("the config has no [fire] table: name a fire model there, or use the default config");
    };
    if let Some(p) = &choice.path {
        fire.path = p.clone();
        fire.sha256 = None;
    }
    if let Some(f) = &choice.format {
        fire.format = toml::Value::String(f.clone())
            .try_into()
            .map_err(|_| anyhow::anyhow!("--format {f:?}: expected heatmap, yolov8, yolox or nanodet"))?;
    }
    if let Some(l) = &choice.labels {
        fire.labels = Some(l.clone());
    }
    if let Some(s) = choice.input_size {
        fire.input_size = s;
    }
    if let Err((key, message)) = fire.validate() {
        bail!("{key}: {message}");
    }
    // The curve reads every threshold from one run: the model must report
    // candidates down to the lowest one.
    let mut lowered = fire.clone();
    for kind in edge_agent::config::FireKind::ALL {
        let rule = fire.rule(kind);
        let o = match kind {
            edge_agent::config::FireKind::Fire => &mut lowered.fire,
            edge_agent::config::FireKind::Smoke => &mut lowered.smoke,
        };
        o.min_score = Some(rule.min_score.min(0.05));
        o.near_fire_min_score = Some(rule.near_fire_min_score.min(0.05));
    }
    let env = edge_agent::infer::runtime::init(config.ort_library.as_deref())?;
    let model = edge_agent::infer::fire::FireModel::load(&lowered, env)?;
    let opts = images::ImageEvalOptions { names, top };
    let set_images = images::load_set(set, &opts, &fire)?;
    let total = set_images.len();
    eprintln!("{}: {total} images", set.display());
    let started = Instant::now();
    let report = images::evaluate(set, &set_images, &model, &fire, &camera, &mut |n| {
        if n % 100 == 0 {
            eprintln!("  {n}/{total} images");
        }
    })?;
    eprintln!("scored in {:.1} s", started.elapsed().as_secs_f64());
    print!("{}", images::summary(&report, top));
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let png = out.join("pr.png");
    std::fs::write(&png, images::plot(&report)?).with_context(|| format!("cannot write {}", png.display()))?;
    println!("\nreport: {}\nplot:   {}", json.display(), png.display());
    Ok(())
}

/// First Ctrl-C / SIGTERM: graceful stop. Second: exit at once.
fn on_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for n in 0.. {
            let term_recv = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term_recv => {}
            }
            if n == 0 {
                tracing::info!("stopping (signal again to exit at once)");
                shutdown.trigger();
            } else {
                std::process::exit(130);
            }
        }
    });
}

async fn run(config_path: PathBuf, watch: bool) -> anyhow::Result<()> {
    // The config file with whatever centres `set` since (the overlay); an
    // overlay that cannot be used is set aside, never a reason not to start.
    let (config, set_aside) = edge_agent::config::overlay::load_at_start(&config_path)?;
    let metrics = Arc::new(Metrics::new());
    if set_aside.is_some() {
        metrics.overlay_set_aside.inc();
    }
    tracing::info!(agent = %config.agent_id, site = %config.site.path(), cameras = config.cameras.len(), "starting");
    let shutdown = Shutdown::new();
    on_signals(shutdown.clone());
    let source = edge_agent::agent::ConfigSource { file: config_path, watch };
    edge_agent::agent::run(config, Some(source), shutdown, metrics).await?;
    Ok(())
}

#[cfg(feature = "demo")]
async fn run_demo(
    clip: Option<PathBuf>,
    out: PathBuf,
    timeout_s: u64,
    centre_bin: Option<PathBuf>,
    stay: bool,
) -> anyhow::Result<()> {
    use std::time::Duration;

    use alleywatch_devkit::{Mosquitto, RtspServer, DEMO_CLIP};
    use edge_agent::project::{find_in_project, DEFAULT_MODEL};
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    let clip = clip
        .or_else(|| find_in_project(DEMO_CLIP))
        .context("demo clip not found: run deploy/setup.sh first (it makes .deps/media/demo_lane.mp4)")?;
    let model =
        find_in_project(DEFAULT_MODEL).context("models/nanodet.onnx not found: run the demo from the checkout")?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    let server = RtspServer::start(&clip, 0, "/demo")?;
    let broker = Mosquitto::start().context("cannot start mosquitto")?;
    let state = tempfile::tempdir().context("cannot make a folder for the demo's spool")?;
    let config = demo::demo_config(&server.url(), broker.port(), &model, state.path())?;
    println!("alleywatch demo");
    println!("  camera : {} (serving {})", server.url(), clip.display());
    println!("  broker : mosquitto on 127.0.0.1:{}", broker.port());
    println!("  lane   : \"kerb-lane\" over the parked cars; classes car/truck/bus; dwell 4 s, clear 2 s");
    let centre = match &centre_bin {
        Some(bin) => Some(demo_centre::DemoCentre::start(bin, &out.join("centre"), broker.port())?),
        None => None,
    };
    if let Some(c) = &centre {
        println!("  centre : console at {} (log in as \"demo\", password \"{}\")", c.url(), c.password);
    }
    println!("  waiting for lane_blocked start and end (snapshots go to {}/)\n", out.display());

    let mut opts = MqttOptions::new("alleywatch-demo-viewer", "127.0.0.1", broker.port());
    opts.set_max_packet_size(8 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    client.subscribe("alleywatch/#", QoS::AtLeastOnce).await?;
    // Wait for the subscription before the agent starts publishing.
    loop {
        if let Event::Incoming(Packet::SubAck(_)) =
            events.poll().await.context("demo viewer cannot reach the broker")?
        {
            break;
        }
    }

    let shutdown = Shutdown::new();
    on_signals(shutdown.clone());
    let agent = tokio::spawn(edge_agent::agent::run(config, None, shutdown.clone(), Arc::new(Metrics::new())));
    let started = Instant::now();
    let deadline = tokio::time::sleep(Duration::from_secs(timeout_s));
    tokio::pin!(deadline);
    let (mut saw_start, mut saw_end) = (false, false);
    let mut event_id = String::new();
    while !saw_end {
        tokio::select! {
            ev = events.poll() => {
                let Event::Incoming(Packet::Publish(p)) = ev.context("demo viewer lost the broker")? else { continue };
                println!("{}", demo::describe(&p.topic, &p.payload, started.elapsed()));
                if p.topic.ends_with("/snapshot") {
                    let id = p.topic.rsplit('/').nth(1).unwrap_or("snapshot");
                    let file = out.join(format!("{id}-{}.jpg", started.elapsed().as_millis()));
                    std::fs::write(&file, &p.payload).with_context(|| format!("cannot write {}", file.display()))?;
                } else if p.topic.ends_with("/events/lane_blocked") {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                    match v["type"].as_str() {
                        Some("start") => {
                            saw_start = true;
                            event_id = v["id"].as_str().unwrap_or_default().to_string();
                        }
                        Some("end") if saw_start => saw_end = true,
                        _ => {}
                    }
                }
            }
            _ = &mut deadline => break,
            _ = shutdown.wait() => break,
        }
    }
    shutdown.trigger();
    agent.await.context("agent task")??;
    drop(server);
    if !saw_end {
        bail!("no complete lane_blocked event within {timeout_s} s (start seen: {saw_start})");
    }
    println!("\ndemo done: lane_blocked start and end received in {:.1} s", started.elapsed().as_secs_f64());
    if let Some(c) = &centre {
        c.wait_for_alert(&event_id, Duration::from_secs(20)).await?;
        println!("the centre stored it: alert {event_id} is on the board at {}", c.url());
        if stay {
            println!("log in as \"demo\" with password \"{}\"; Ctrl-C ends the demo", c.password);
            let mut events = events;
            // Keep the broker session polled (the centre and the page go on
            // working) until a signal.
            loop {
                tokio::select! {
                    ev = events.poll() => { ev.context("demo viewer lost the broker")?; }
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
    }
    Ok(())
}
