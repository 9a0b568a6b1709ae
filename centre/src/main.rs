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
    /// Manages the console's users (there is no default account).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Adds a user. The password is read from the first line of standard
    /// input (at least 12 characters), so it never appears in the shell's
    /// history or the process list.
    Add {
        #[arg(long, short)]
        config: PathBuf,
        /// Letters, digits and . _ - @ (at most 64).
        name: String,
        /// viewer, operator, supervisor or admin.
        #[arg(long)]
        role: String,
        /// The part of the site tree the user sees and acts on:
        /// district[/street[/community]], within the centre's site.
        #[arg(long)]
        scope: String,
    },
    /// Removes a user and ends their sessions.
    Remove {
        #[arg(long, short)]
        config: PathBuf,
        name: String,
    },
    /// Lists the users: name, role, scope.
    List {
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
        Command::User { command } => runtime.block_on(user(command)),
    }
}

async fn user(command: UserCommand) -> anyhow::Result<()> {
    use alleywatch_centre::access::{check_name, check_password, hash_password, Role, Scope};
    match command {
        UserCommand::Add { config: file, name, role, scope } => {
            let config = Config::load(&file)?;
            check_name(&name).map_err(|e| anyhow::anyhow!("user name: {e}"))?;
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("--role {role:?}: expected viewer, operator, supervisor or admin"))?;
            let scope = Scope::parse(&scope).map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            let centre = Scope::parse(&config.centre.site).map_err(|e| anyhow::anyhow!("centre.site: {e}"))?;
            if !centre.covers(&scope) {
                anyhow::bail!("--scope {scope}: outside this centre's site {centre}");
            }
            let mut password = String::new();
            std::io::stdin().read_line(&mut password).context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            check_password(password).map_err(|e| anyhow::anyhow!("password {e}"))?;
            let phc = hash_password(password).map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
            let store = Store::open(&config).await?;
            if !store.add_user(&name, &phc, role, &scope).await? {
                anyhow::bail!("user {name:?} exists already (remove it first to change it)");
            }
            println!("added {name}: {} of {scope}", role.as_str());
        }
        UserCommand::Remove { config, name } => {
            let store = Store::open(&Config::load(&config)?).await?;
            if !store.remove_user(&name).await? {
                anyhow::bail!("no user {name:?}");
            }
            println!("removed {name}");
        }
        UserCommand::List { config } => {
            let store = Store::open(&Config::load(&config)?).await?;
            for (name, role, scope) in store.users().await? {
                println!("{name}\t{role}\t{scope}");
            }
        }
    }
    Ok(())
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
            "state": a.state, "verdict": a.verdict, "handler": a.handler,
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
