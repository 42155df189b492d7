//! A helloworld Greeter server whose replies name the backend that answered.
//!
//! ```text
//! cargo run -p examples --example helloworld_server -- 127.0.0.1:50051 alpha
//! ```
//!
//! Stop it with ctrl-c and start it again to watch `helloworld_client` recover.

use grpc_lb_helloworld::NamedGreeter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:50051".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    let name = args.next().unwrap_or_else(|| addr.to_string());
    println!("listening on {addr} as {name}");
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    grpc_lb_helloworld::serve(listener, NamedGreeter::new(name), ctrl_c).await?;
    Ok(())
}
