//! A tiny TCP and UDP responder for the stack's network tests, run inside a
//! test's network namespace (`ip netns exec NS kst-echo ...`), so a test can
//! tell *who* answered (MACHINE.md: this machine's default gateway accepts
//! any TCP connection, so "it connected" proves nothing).
//!
//! ```text
//! kst-echo serve TOKEN [--tcp PORT]... [--udp PORT]...   answer TOKEN to every
//!     TCP connection (then close) and every UDP datagram; prints "ready"
//!     once every socket is bound
//! kst-echo ask tcp|udp ADDR:PORT [TIMEOUT_MS]            print the answer (or
//!     exit 1 naming what failed); UDP sends one datagram and waits
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

fn serve(token: &str, rest: &[String]) -> Result<(), String> {
    let mut handles = Vec::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let port: u16 = it
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("{flag} needs a port number"))?;
        let answer = format!("{token}\n").into_bytes();
        match flag.as_str() {
            "--tcp" => {
                let l = TcpListener::bind(("0.0.0.0", port))
                    .map_err(|e| format!("binding TCP port {port}: {e}"))?;
                handles.push(std::thread::spawn(move || {
                    for mut c in l.incoming().flatten() {
                        let _ = c.write_all(&answer);
                    }
                }));
            }
            "--udp" => {
                let s = UdpSocket::bind(("0.0.0.0", port))
                    .map_err(|e| format!("binding UDP port {port}: {e}"))?;
                handles.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while let Ok((_, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&answer, from);
                    }
                }));
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn ask(proto: &str, addr: &str, timeout: Duration) -> Result<String, String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let mut buf = Vec::new();
    match proto {
        "tcp" => {
            let mut c = TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("TCP connect to {addr}: {e}"))?;
            c.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            c.read_to_end(&mut buf)
                .map_err(|e| format!("TCP read from {addr}: {e}"))?;
        }
        "udp" => {
            let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            s.send_to(b"ask\n", addr)
                .map_err(|e| format!("UDP send to {addr}: {e}"))?;
            buf.resize(2048, 0);
            let (n, _) = s
                .recv_from(&mut buf)
                .map_err(|e| format!("UDP answer from {addr}: {e}"))?;
            buf.truncate(n);
        }
        other => return Err(format!("unknown protocol {other}: tcp or udp")),
    }
    Ok(String::from_utf8_lossy(&buf).trim().to_owned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("serve") if args.len() >= 2 => serve(&args[1], &args[2..]),
        Some("ask") if args.len() >= 3 => {
            let ms = args.get(3).and_then(|m| m.parse().ok()).unwrap_or(3000);
            ask(&args[1], &args[2], Duration::from_millis(ms)).map(|a| println!("{a}"))
        }
        _ => Err("usage: kst-echo serve TOKEN [--tcp PORT]... [--udp PORT]... | kst-echo ask tcp|udp ADDR:PORT [TIMEOUT_MS]".into()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kst-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
