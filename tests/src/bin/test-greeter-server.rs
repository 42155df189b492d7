//! The helloworld Greeter server that the integration tests start, kill and
//! restart as a real process. Same flags as `greeter-server`.

fn main() -> std::process::ExitCode {
    grpc_lb_helloworld::server_main()
}
