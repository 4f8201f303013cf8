use std::process::ExitCode;

use clap::Parser;
use dockwatch::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckPolicy { file }) => {
            match dockwatch::policy::check_policy(&file, cli.run.policy.reports_dir.is_some()) {
                Ok(summary) => {
                    print!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dockwatch: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Report(args)) => match dockwatch::anomaly::report::run(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dockwatch report: {e}");
                ExitCode::FAILURE
            }
        },
        None => {
            init_tracing(&cli.run.log_level, cli.run.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("dockwatch: starting the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(dockwatch::app::run(cli.run)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "dockwatch failed");
                    eprintln!("dockwatch: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs go to stderr, except violation and enforcement events (target `dockwatch::events`),
/// which go to stdout so that a log shipper can take them apart from the daemon's own logs.
fn init_tracing(level: &str, format: LogFormat) {
    use tracing_subscriber::fmt::writer::MakeWriterExt;

    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = std::io::stdout
        .with_filter(|meta: &tracing::Metadata<'_>| meta.target() == "dockwatch::events")
        .or_else(std::io::stderr);
    // A log write that fails (the reader of a pipe went away) must not panic the task that
    // logged: tracing-subscriber reports such failures with `eprintln!`, which panics when
    // stderr is that same broken pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
