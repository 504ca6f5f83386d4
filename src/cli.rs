//! Subcommands: run, status, check-config, maintenance, transfer, release, reload,
//! import-keepalived.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use raftvip::api::client;
use raftvip::auth::Authenticator;
use raftvip::config::{Config, LoadConfigError};
use raftvip::daemon;
use raftvip::membership;
use raftvip::peer::wire::MembershipOutcome;
use raftvip::peer::{PeerCallError, PeerClient};
use raftvip::release;

const DEFAULT_CONFIG: &str = "/etc/raftvip/raftvip.toml";

#[derive(Parser)]
#[command(
    version,
    about = "Keeps a virtual IP on exactly one healthy HAProxy box, decided by Raft"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

impl Args {
    /// `raftvip run`, as opposed to a command that prints and exits.
    pub fn runs_daemon(&self) -> bool {
        matches!(self.command, Command::Run { .. })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (logs to stderr).
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show this node's view of the cluster.
    Status {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the JSON status document instead of a summary.
        #[arg(long)]
        json: bool,
        /// List every VIP (by default a summary, and each VIP only when there are few).
        #[arg(long)]
        vips: bool,
    },
    /// Validate a config file; exits non-zero and names every problem.
    CheckConfig {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Put a node into maintenance (it hands the VIPs over and never takes them) or back.
    Maintenance {
        state: OnOff,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The node to change (default: this node).
        #[arg(long)]
        node: Option<u64>,
        /// Turn it on even when the node leads and no other node can take the VIPs over
        /// (refused without it: the VIPs would go down).
        #[arg(long)]
        force: bool,
    },
    /// Move leadership and the VIPs to another node, make-before-break (no dropped
    /// connection). Refused, with the reason, when the target cannot lead (unhealthy, in
    /// maintenance, a witness, unreachable). Run on any node: a follower forwards to the leader.
    Transfer {
        /// The node to move to, or `any` (the first node after the leader that can lead).
        #[arg(long)]
        to: TransferTarget,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Remove this box's configured VIPs (systemd's ExecStopPost=, or by hand after a crash).
    /// Exits 0 when nothing is left bound, also when nothing was.
    Release {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Make the running daemon re-read its config file (as SIGHUP does) and print what it
    /// applied, or every problem and restart-only change it rejected (exit 1; the running
    /// config is kept).
    Reload {
        /// The daemon's config file (the one it was started with).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print a raftvip.toml converted from a keepalived.conf (its vrrp_instances); every
    /// option that does not map is written as a comment saying why.
    ImportKeepalived {
        /// The keepalived.conf to convert (includes are followed).
        file: PathBuf,
    },
    /// Write the man pages (DIR/man/*.1) and shell completions (DIR/completions/) generated
    /// from this CLI; used by scripts/package.sh, so they can never disagree with the binary.
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

pub async fn dispatch(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Run { config } => run(&config).await,
        Command::Status { config, json, vips } => status(&config, json, vips).await,
        Command::CheckConfig { config } => check_config(&config),
        Command::Maintenance {
            state,
            config,
            node,
            force,
        } => maintenance(&config, state, node, force).await,
        Command::Transfer { to, config } => transfer(&config, to).await,
        Command::Release { config } => release(&config),
        Command::Reload { config } => reload(&config).await,
        Command::ImportKeepalived { file } => import_keepalived(&file),
        Command::GenerateDocs { dir } => generate_docs(&dir),
    }
}

/// `raftvip run`: the daemon owns start-up and shutdown; this only supplies the signals.
async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    daemon::run(path, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

fn release(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::read(path)?;
    let vips = config.own_vips();
    if vips.is_empty() {
        println!("{}: no VIPs configured for this node", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    for released in release::release(vips) {
        failed |= matches!(released.outcome, release::Outcome::Failed(_));
        println!("{released}");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn status(path: &Path, json: bool, all_vips: bool) -> anyhow::Result<ExitCode> {
    let config = Config::read(path)?;
    let address = config.status_listen.unwrap_or(config.listen);
    let mut status = client::fetch_status(&address.to_string()).await?;
    // Against the file as it is now, so an edit not yet applied shows.
    membership::file_differences(&mut status, &membership::addresses(&config.peers));
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render_text_with(all_vips));
    }
    Ok(ExitCode::SUCCESS)
}

fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = Config::load(path).and_then(|(config, secret)| {
        let problems = config.host_problems();
        if problems.is_empty() {
            Ok((config, secret))
        } else {
            Err(LoadConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    });
    match loaded {
        Ok((config, _)) => {
            println!(
                "{}: ok (node {} of {}, {} peer(s), {} VIP(s))",
                path.display(),
                config.node_id,
                config.cluster,
                config.peers.len(),
                config.vips.len()
            );
            for note in config.notes() {
                println!("note: {note}");
            }
            for warning in config.warnings().into_iter().chain(config.host_warnings()) {
                println!("warning: {warning}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn maintenance(
    path: &Path,
    state: OnOff,
    node: Option<u64>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let (config, secret) = Config::load(path)?;
    let node_id = node.unwrap_or(config.node_id);
    if config.peer(node_id).is_none() {
        bail!("node {node_id} is not a [[peer]] in {}", path.display());
    }
    let peer_client = PeerClient::new(Arc::new(Authenticator::new(
        secret,
        &config.cluster,
        config.node_id,
    )));
    let on = matches!(state, OnOff::On);
    client::set_maintenance(
        &peer_client,
        config.node_id,
        &config.listen.to_string(),
        node_id,
        on,
        force,
    )
    .await
    .with_context(|| {
        format!(
            "turning maintenance {} for node {node_id}",
            if on { "on" } else { "off" }
        )
    })?;
    println!(
        "node {node_id}: maintenance {}",
        if on {
            "on (it hands the VIPs over and will not take them)"
        } else {
            "off"
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn import_keepalived(path: &Path) -> anyhow::Result<ExitCode> {
    use raftvip::keepalived;
    let text = raftvip::config::read_config_text(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let nodes = keepalived::parse(path, &text, &keepalived::read_files)?;
    let converted = keepalived::convert(&nodes, &path.display().to_string())?;
    print!("{}", converted.toml);
    for warning in &converted.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

fn generate_docs(dir: &Path) -> anyhow::Result<ExitCode> {
    use clap_complete::Shell;
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    clap_mangen::generate_to(Args::command().name("raftvip"), &man)
        .with_context(|| format!("cannot write man pages to {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut public_command(), "raftvip", &completions)
            .with_context(|| format!("cannot write {shell} completions"))?;
    }
    println!(
        "man pages in {}, completions in {}",
        man.display(),
        completions.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The CLI without its hidden subcommands, for the completions: clap_complete 4.6 offers a
/// hidden subcommand like any other (clap_mangen skips it), and clap cannot remove one, so
/// this is a copy of the top level holding only the visible subcommands.
fn public_command() -> clap::Command {
    let full = Args::command();
    clap::Command::new("raftvip")
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .subcommand_required(true)
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned())
}

/// `raftvip reload`: the file only needs to parse and name a readable secret for the CLI to
/// reach and sign for the daemon; the daemon checks everything else and answers.
async fn reload(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::read(path).with_context(|| {
        "the daemon was not asked to reload (its address and secret are in this file); the running config is unchanged"
    })?;
    let secret = config.read_secret().map_err(|p| anyhow::anyhow!("{p}"))?;
    let peer_client = PeerClient::new(Arc::new(Authenticator::new(
        secret,
        &config.cluster,
        config.node_id,
    )));
    let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let outcome = match client::reload(
        &peer_client,
        config.node_id,
        &config.listen.to_string(),
        &shown.display().to_string(),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(PeerCallError::Unauthorized { .. }) => {
            eprintln!(
                "{}: reload rejected, the running config is kept:",
                shown.display()
            );
            eprintln!("  - {}", refused_signature(&config).await);
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(anyhow::Error::new(e).context("asking the daemon to reload")),
    };
    if !outcome.accepted() {
        eprintln!(
            "{}: reload rejected, the running config is kept:",
            outcome.path
        );
        for problem in &outcome.problems {
            eprintln!("  - {problem}");
        }
        return Ok(ExitCode::FAILURE);
    }
    if outcome.applied.is_empty() {
        println!("{}: reloaded, nothing changed", outcome.path);
    } else {
        println!("{}: reloaded", outcome.path);
        for change in &outcome.applied {
            println!("  - {change}");
        }
    }
    for warning in config.host_warnings() {
        println!("warning: {warning}");
    }
    match &outcome.membership {
        None => {}
        Some(MembershipOutcome::Applied(voters)) => {
            println!("  - membership: the [[peer]] list is the membership, voters {voters:?}");
        }
        Some(MembershipOutcome::Pending) => println!(
            "  - membership: the change is still under way; the log says how it ends, and raftvip status shows where the file and the cluster differ"
        ),
        Some(MembershipOutcome::Failed(reason)) => {
            eprintln!(
                "{}: the [[peer]] list was not made the membership (the rest of the file is in force): {reason}",
                outcome.path
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why the daemon refused a reload request signed with the edited file's `cluster` and
/// secret: both are restart-only, so a file that changes either cannot even ask.
async fn refused_signature(config: &Config) -> String {
    const RESTART: &str = "needs a restart: change it on every node, then restart them one by one (docs/operations.md)";
    let address = config.status_listen.unwrap_or(config.listen).to_string();
    match client::fetch_status(&address).await {
        Ok(status) if status.cluster != config.cluster => format!(
            "cluster: {:?} -> {:?} {RESTART}",
            status.cluster, config.cluster
        ),
        _ => format!(
            "the daemon refused this file's signature: the content of secret_file differs from the secret it runs with, which {RESTART}"
        ),
    }
}

/// `--to ID|any` of `raftvip transfer`.
#[derive(Clone, Copy)]
struct TransferTarget(Option<u64>);

impl std::str::FromStr for TransferTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "any" {
            return Ok(Self(None));
        }
        s.parse()
            .map(|id| Self(Some(id)))
            .map_err(|_| format!("`{s}` is neither a node id nor `any`"))
    }
}

async fn transfer(path: &Path, to: TransferTarget) -> anyhow::Result<ExitCode> {
    let (config, secret) = Config::load(path)?;
    if let Some(id) = to.0.filter(|id| config.peer(*id).is_none()) {
        bail!("node {id} is not a [[peer]] in {}", path.display());
    }
    let peer_client = PeerClient::new(Arc::new(Authenticator::new(
        secret,
        &config.cluster,
        config.node_id,
    )));
    let target =
        to.0.map_or_else(|| "any node".to_owned(), |id| format!("node {id}"));
    let leader = client::transfer(
        &peer_client,
        config.node_id,
        &config.listen.to_string(),
        to.0,
    )
    .await
    .with_context(|| format!("transferring leadership to {target}"))?;
    println!("node {leader} leads and holds the VIPs now");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_offer_every_command_but_the_hidden_one() {
        let dir = std::env::temp_dir().join(format!("raftvip-docs-{}", std::process::id()));
        generate_docs(&dir).expect("docs written");
        for file in ["raftvip.bash", "_raftvip", "raftvip.fish"] {
            let text = std::fs::read_to_string(dir.join("completions").join(file)).expect(file);
            assert!(
                !text.contains("generate-docs"),
                "{file} offers generate-docs"
            );
            let public = Args::command();
            for command in public.get_subcommands().filter(|c| !c.is_hide_set()) {
                let command = command.get_name();
                assert!(text.contains(command), "{file} does not offer {command}");
            }
        }
        assert!(dir.join("man/raftvip-run.1").exists());
        assert!(!dir.join("man/raftvip-generate-docs.1").exists());
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
