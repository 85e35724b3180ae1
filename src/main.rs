//! The `xforge` command line. Exit codes: 0 ok, 2 bad input or unsupported, 1 internal error.
mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("XFORGE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Cli::parse();
    // a panic is a bug: report it as an internal error, never as a crash dump
    std::panic::set_hook(Box::new(|info| eprintln!("xforge: internal error: {info}")));
    match std::panic::catch_unwind(|| cli::run(args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            let code = cli::exit_code(&e);
            eprintln!("xforge: error: {e:#}");
            ExitCode::from(code)
        }
        Err(_) => ExitCode::from(1),
    }
}
