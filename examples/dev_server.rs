//! A dev server with a readiness probe: start Python's built-in HTTP server on a free port,
//! wait until it says it is serving and accepts connections, make a request, then drop it —
//! which kills the server and everything it spawned.
//!
//! Run it with `cargo run --example dev_server` (needs `python3` on `PATH`).

use processkit::{Command, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> processkit::Result<()> {
    // `-u`: unbuffered, so the banner arrives as soon as it is printed.
    let mut server = Command::new("python3")
        .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .start()
        .await?;
    println!("started {} (pid {})", server.program(), server.pid());

    // Readiness 1: the banner, e.g. "Serving HTTP on 127.0.0.1 port 41235 (...) ...".
    let banner = server
        .wait_for_line(|l| l.starts_with("Serving HTTP"), Duration::from_secs(10))
        .await?;
    println!("banner: {banner}");
    let port: u16 = banner
        .split_whitespace()
        .nth(5)
        .and_then(|p| p.parse().ok())
        .expect("a port in the banner");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Readiness 2: the port accepts connections.
    server.wait_for_port(addr, Duration::from_secs(10)).await?;
    println!("ready after {:?}", server.elapsed());

    // Use it: fetch the crate's Cargo.toml over HTTP.
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the dev server");
    conn.write_all(b"GET /Cargo.toml HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .await
        .expect("read the response");
    let status = response.lines().next().unwrap_or_default();
    println!("GET /Cargo.toml -> {status}");
    assert!(status.contains("200"), "unexpected response: {status}");

    // The server logs each request on stderr; stream it live.
    let mut log = server.stderr_lines();
    if let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(5), log.next()).await {
        println!("server log: {line}");
    }

    let pid = server.pid();
    drop(log);
    drop(server); // kills the server's whole tree and reaps it
    println!("dropped the handle: server {pid} is gone");
    Ok(())
}
