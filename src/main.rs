//! The `raftvip` binary: parse the command line, set up logging, dispatch. The only place
//! (with cli.rs) where errors become `anyhow` and exit codes.

mod cli;

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Default log filter. openraft logs routine events (every vote, a heartbeat that missed its
/// 20 ms timeout on a busy box) at INFO/ERROR; raftvip logs the transitions that matter itself.
const DEFAULT_LOG_FILTER: &str = "info,openraft=off";

/// Bound on waiting for leftover runtime threads at exit (SIGTERM must stop within a second).
const RUNTIME_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

fn main() -> std::process::ExitCode {
    small_heap();
    let args = cli::Args::parse();
    if !args.runs_daemon() {
        quiet_on_closed_pipe();
    }
    let filter = EnvFilter::try_from_env("RAFTVIP_LOG")
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();

    // One thread: the daemon's work is a few small messages every 37 ms. A multi-thread
    // runtime spent a third more CPU on cross-thread wake-ups (measured: leader idle CPU
    // 2.35 % -> 1.8 %, RSS 13.4 -> 12.7 MB). Blocking work (redb fsync) goes to the
    // blocking pool, so a slow disk does not stall heartbeats.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(raftvip::realtime::raise_blocking_thread)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("raftvip: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::dispatch(args));
    // Idle blocking-pool threads (name resolution, store I/O) would otherwise hold the exit
    // back by seconds; everything that matters has already stopped in order.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("raftvip: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Our error types already name their cause in their
/// message, so a cause whose text is already there is not repeated.
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// A command whose output goes into a pipe that closes early (`raftvip import-keepalived … |
/// head`) ends quietly, as other command-line tools do, instead of panicking in `println!`.
/// Rust ignores SIGPIPE so that a write returns EPIPE; the daemon keeps that (a peer that
/// hangs up must not kill it), the printing commands get the default action back.
fn quiet_on_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restores the default disposition; no handler runs, no other thread exists yet.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        eprintln!("raftvip: cannot restore SIGPIPE's default action: {e}");
    }
}

/// Blocks at least this large are mapped on their own and given back when freed, and a free
/// top of the heap this large is returned to the kernel.
#[cfg(target_env = "gnu")]
const MALLOC_GIVE_BACK_BYTES: libc::c_int = 64 * 1024;

/// Keeps the daemon's heap small (measured in docs/benchmarks.md, "Footprint"):
/// - glibc gives every thread that allocates its own malloc arena (the VIP thread, the blocking
///   pool's threads), each with its own partly used pages. The daemon's threads allocate a few
///   small buffers per heartbeat and never contend, so one shared arena costs no time.
/// - glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB), so the
///   large buffers of start-up end up on the heap and stay resident for good. A fixed
///   threshold and trim threshold give them back; nothing that large is allocated per request.
///
/// Called first, before any thread exists.
fn small_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets glibc tunables; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_GIVE_BACK_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_GIVE_BACK_BYTES);
    }
}
