//! `grpc-lb`: the command-line face of the grpc-lb workspace.
//!
//! - `serve`: helloworld Greeter servers that name the backend that answered,
//!   with `grpc.health.v1` beside them;
//! - `call`: drives `SayHello` (or any method) through a
//!   [`grpc_lb::Channel`], open loop on a const, step or line schedule, and
//!   reports calls per backend, status codes, latency percentiles, the rate
//!   of each window and the channel's and subchannels' states, as a summary,
//!   JSON, CSV or an HTML page; or calls any method once, its JSON body
//!   parsed against a schema from server reflection, `.proto` files or
//!   protosets;
//! - `list`, `describe`: services, methods and messages, by server
//!   reflection or from `.proto` files and protosets, as grpcurl shows them;
//! - `watch`: the live connectivity state of a channel and its subchannels;
//! - `demo`: three in-process servers, a round_robin channel and steady
//!   traffic through a kill, a restart and an added backend.
//!
//! Exit codes: 0 success, 1 failure (a call failed, a server could not
//! start), 2 bad usage (bad flags, a bad target). Logs go to stderr through
//! `tracing`, filtered by `RUST_LOG` (default `warn`). The flags and the
//! `--json` schema are documented in `docs/cli.md`.

mod body;
mod call;
mod channel;
mod codec;
mod demo;
mod describe;
mod grpclb;
mod html;
mod in_force;
mod invoke;
mod load;
mod options;
mod progress;
mod report;
mod request;
mod rpc;
mod schedule;
mod schema;
mod serve;
mod stack;
mod time;
mod timeline;
mod tree_policy;
mod tree_stack;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load balancing, reconnection and connectivity of gRPC channels, from the
/// command line.
#[derive(Debug, Parser)]
#[command(name = "grpc-lb", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve helloworld Greeters whose replies name the backend that answered.
    Serve(serve::ServeArgs),
    /// Drive SayHello (or any METHOD) through a balanced channel on a load
    /// schedule and report what happened; or call any METHOD once, with a
    /// JSON body.
    Call(Box<call::CallArgs>),
    /// List the services (or one service's methods) by server reflection,
    /// --proto or --protoset.
    List(describe::ListArgs),
    /// Show a service, method, message or enum as proto source.
    Describe(describe::DescribeArgs),
    /// Print the channel's and each subchannel's connectivity changes.
    Watch(watch::WatchArgs),
    /// Three servers, round_robin, traffic; kill, restart, add a fourth.
    Demo(demo::DemoArgs),
}

/// Why a command did not succeed; decides the exit code.
#[derive(Debug)]
enum CliError {
    /// Bad usage: a bad flag value, a bad target. Exit code 2.
    Usage(String),
    /// The command ran and failed. Exit code 1.
    Failed(String),
}

impl CliError {
    fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    fn failed(message: impl Into<String>) -> Self {
        CliError::Failed(message.into())
    }
}

/// What a command returns: the exit code it chose, or an error.
type CliResult = Result<ExitCode, CliError>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return clap_exit(&error),
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("grpc-lb: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Call(args) => call::run(*args).await,
            Command::List(args) => describe::list(args).await,
            Command::Describe(args) => describe::describe(args).await,
            Command::Watch(args) => watch::run(args).await,
            Command::Demo(args) => demo::run(args).await,
        }
    });
    // Servers' connection tasks may still be running; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(CliError::Usage(message)) => {
            eprintln!("grpc-lb: error: {}", one_line(&message));
            ExitCode::from(2)
        }
        Err(CliError::Failed(message)) => {
            eprintln!("grpc-lb: {}", one_line(&message));
            ExitCode::FAILURE
        }
    }
}

/// What clap's parse error becomes: `--help` and `--version` print as clap
/// prints them (exit 0); a usage error is one line on stderr, exit 2.
fn clap_exit(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return match error.kind() {
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::from(2),
            _ => ExitCode::SUCCESS,
        };
    }
    eprintln!("grpc-lb: error: {}", clap_line(&error.render().to_string()));
    ExitCode::from(2)
}

/// clap's rendered error (message, blank line, tips, usage) as one line: the
/// message, then its tips in parentheses; the usage is left out (`--help`).
fn clap_line(rendered: &str) -> String {
    // Paragraphs: the message (a list of missing arguments follows it on
    // lines of their own), tips, the usage, the pointer to --help.
    let paragraphs: Vec<Vec<&str>> = rendered
        .split("\n\n")
        .map(|p| p.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
        .filter(|p: &Vec<&str>| !p.is_empty())
        .collect();
    let message = paragraphs
        .first()
        .map(|lines| lines.join(" "))
        .unwrap_or_else(|| "bad usage".to_owned());
    let message = message.trim_start_matches("error:").trim().to_owned();
    let tips: Vec<&str> = paragraphs
        .iter()
        .skip(1)
        .flatten()
        .filter_map(|line| line.strip_prefix("tip:"))
        .map(str::trim)
        .collect();
    if tips.is_empty() {
        message
    } else {
        format!("{message} (tip: {})", tips.join("; "))
    }
}

/// A message on one line, whatever its causes printed.
fn one_line(message: &str) -> String {
    message
        .split('\n')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn clap_errors_become_one_line_with_their_tips() {
        let rendered = "error: unexpected argument '--request' found\n\n  tip: a similar argument exists: '--requests'\n\nUsage: grpc-lb call <TARGET>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_line(rendered),
            "unexpected argument '--request' found (tip: a similar argument exists: '--requests')"
        );
        assert_eq!(clap_line("error: bad\n"), "bad");
        let missing = "error: the following required arguments were not provided:\n  <TARGET>\n\nUsage: grpc-lb call <TARGET>\n";
        assert_eq!(
            clap_line(missing),
            "the following required arguments were not provided: <TARGET>"
        );
        assert_eq!(one_line("a\n  b"), "a b");
    }
}
