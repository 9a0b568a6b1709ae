//! `alleywatch-centre`: the command line. Errors stop here as one clear
//! line (anyhow); the library says what went wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use alleywatch_centre::config::Config;
use alleywatch_centre::store::Store;

#[derive(Parser)]
#[command(
    name = "alleywatch-centre",
    version,
    about = "alleywatch command centre: receives and keeps the agents' alerts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the centre: ingest from the broker, store, serve HTTP.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Checks a config file and says what it would do.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Prints the stored alerts (most severe, then newest, first) and the
    /// gaps in the agents' `seq`, as JSON lines.
    Alerts {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rumqttc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alleywatch-centre: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli.command {
        Command::CheckConfig { config } => {
            let c = Config::load(&config)?;
            println!(
                "{}: ok: {} centre {:?} of {}, subscribes to {} on {}:{} as {}, database {}, snapshots in {}, HTTP on {}",
                config.display(),
                c.centre.level.as_str(),
                c.centre.name,
                c.centre.site,
                c.topic_filter(),
                c.broker.host,
                c.broker.port,
                c.client_id(),
                c.database.url,
                c.snapshots.dir.display(),
                c.http.bind
            );
            Ok(())
        }
        Command::Run { config } => runtime.block_on(run(&config)),
        Command::Alerts { config } => runtime.block_on(alerts(&config)),
    }
}

async fn run(file: &Path) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(file)?);
    let store = Store::open(&config).await.with_context(|| format!("{}: database.url", file.display()))?;
    let listener = tokio::net::TcpListener::bind(config.http.bind)
        .await
        .with_context(|| format!("{}: http.bind: cannot listen on {}", file.display(), config.http.bind))?;
    tracing::info!(
        centre = %config.centre.name,
        filter = %config.topic_filter(),
        http = %listener.local_addr()?,
        "centre started"
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping");
        let _ = stop.send(true);
    });
    alleywatch_centre::run(config, store, listener, shutdown).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn alerts(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let store = Store::open(&config).await?;
    for a in store.alerts().await? {
        let line = serde_json::json!({
            "id": a.id, "site": a.site, "agent": a.agent, "camera": a.camera, "camera_name": a.camera_name,
            "kind": a.kind, "zone": a.zone, "severity": a.severity, "phase": a.phase, "last_seq": a.last_seq,
            "started_at_ms": a.started_at_ms, "ended_at_ms": a.ended_at_ms, "escalated_to": a.escalated_to,
            "snapshots": store.snapshots(&a.id).await?.len(),
        });
        println!("{line}");
    }
    for g in store.gaps().await? {
        println!(
            "{}",
            serde_json::json!({"gap": {"site": g.site, "agent": g.agent, "first": g.first, "last": g.last}})
        );
    }
    Ok(())
}
