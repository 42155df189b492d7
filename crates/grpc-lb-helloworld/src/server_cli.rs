//! `greeter-server`: serves the helloworld `Greeter` as a [`NamedGreeter`].
//!
//! ```text
//! greeter-server [--listen ADDR] [--name NAME]
//! ```
//!
//! * `--listen ADDR`: address to bind (default `127.0.0.1:50051`; port `0`
//!   picks a free port).
//! * `--name NAME`: backend name put into replies (default: the actual bound
//!   address, e.g. `127.0.0.1:41234`).
//!
//! Once bound it prints exactly one line, `listening on <addr>` with the
//! actual address, to stdout and flushes it, so a test harness can wait for
//! it. It serves until SIGINT/SIGTERM (ctrl-c), shuts down gracefully and
//! exits 0.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use crate::{serve, NamedGreeter};
use tokio::net::TcpListener;

const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const USAGE: &str = "usage: greeter-server [--listen ADDR] [--name NAME]";

#[derive(Debug)]
struct Args {
    listen: String,
    name: Option<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: DEFAULT_LISTEN.to_owned(),
        name: None,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = |flag: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => parsed.listen = value("--listen")?,
            "--name" => parsed.name = Some(value("--name")?),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Some(parsed))
}

/// Runs the `greeter-server` command line: parses `std::env::args`, serves until
/// SIGINT or SIGTERM, and returns the process exit code (2 for bad arguments).
pub fn server_main() -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(async_main()),
        Err(err) => {
            eprintln!("greeter-server: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("greeter-server: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("greeter-server: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    let addr = listener.local_addr()?;
    let name = args.name.unwrap_or_else(|| addr.to_string());

    // Install the signal handlers before announcing readiness, so a signal
    // sent right after the line is seen is not lost.
    let signal = shutdown_signal()?;

    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {addr}")?;
        stdout.flush()?;
    }

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = serve(listener, NamedGreeter::new(name), async {
        let _ = stopped.await;
    });
    tokio::pin!(server);

    tokio::select! {
        res = &mut server => return Ok(res?),
        res = signal => res?,
    }
    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(res) => res?,
        Err(_) => eprintln!(
            "greeter-server: connections still open after {SHUTDOWN_GRACE:?}; exiting anyway"
        ),
    }
    Ok(())
}

/// Registers SIGINT/SIGTERM handlers now and returns a future that resolves
/// on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        Ok(())
    })
}

/// Returns a future that resolves on ctrl-c.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    Ok(tokio::signal::ctrl_c())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap().unwrap();
        assert_eq!(args.listen, DEFAULT_LISTEN);
        assert_eq!(args.name, None);
    }

    #[test]
    fn flags() {
        let args = parse(&["--listen", "127.0.0.1:0", "--name=b1"])
            .unwrap()
            .unwrap();
        assert_eq!(args.listen, "127.0.0.1:0");
        assert_eq!(args.name.as_deref(), Some("b1"));
        let args = parse(&["--listen=[::1]:0"]).unwrap().unwrap();
        assert_eq!(args.listen, "[::1]:0");
    }

    #[test]
    fn errors() {
        assert!(parse(&["--listen"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }
}
