//! `greeter-server`: serves the helloworld `Greeter` as a `NamedGreeter`.
//!
//! ```text
//! greeter-server [--listen ADDR] [--name NAME]
//! ```
//!
//! It prints one line, `listening on <addr>`, once bound (port 0 picks a free
//! port), and serves until SIGINT or SIGTERM.

fn main() -> std::process::ExitCode {
    grpc_lb_helloworld::server_main()
}
