//! `lockctl`: lease locks from the shell. See `lockctl --help`.

#[macro_use]
mod say;

mod bench;
mod cli;
mod conformance;
mod error;
mod exit;
mod run;
mod status;
mod store;

use std::process::ExitCode;

use clap::FromArgMatches;

use cli::{Cli, Command};
use error::CliError;

fn main() -> ExitCode {
    keep_freed_memory_apart();
    let parsed = cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version print to stdout and succeed; bad arguments are usage errors.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    if let Command::Keeper(args) = &cli.command {
        // A process of its own, with one thread and no runtime: see run/keeper.rs.
        return finish(run::keeper::keep(args));
    }
    init_logging(cli.verbose);
    // One thread: the command is spawned from the main thread, whose death signal it follows.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return finish(Err(CliError::io("cannot start the async runtime", error))),
    };
    finish(runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Status(args) => status::status(args).await,
            Command::Release(args) => status::release(args).await,
            Command::Conformance(args) => conformance::conformance(args).await,
            Command::Bench(args) => bench::bench(args).await,
            Command::BenchWorker(args) => bench::worker(args).await,
            Command::Keeper(_) => unreachable!("the keeper runs without a runtime"),
        }
    }))
}

/// Turns off glibc's fastbins for this process (small freed blocks still go to the
/// per-thread cache). With fastbins on, every allocation or free of more than about 1 KiB
/// (the boxed futures of a store call, SQLite's page buffers: several per acquisition)
/// first merges every small block freed since, and in a process that slept between two
/// lock operations those blocks are cold: measured on hand-offs between 8 `bench-worker`s
/// pinned to one CPU (SQLite, three alternating rounds), p50 254-273 µs without fastbins
/// against 271-313 µs with them. See BENCHMARKS.md.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory_apart() {
    // SAFETY: mallopt only sets an allocator parameter; M_MXFAST may be changed at any time.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory_apart() {}

/// lockctl's exit: a subcommand's code, or its error on one line of stderr and the error's
/// code.
fn finish(result: Result<u8, CliError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            say!("lockctl: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(verbose > 0)
        .init();
}
