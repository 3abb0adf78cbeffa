//! A TCP relay that adds latency: every connection accepted on `--listen` is joined to a new
//! connection to `--to`, and each chunk read in either direction is written on half the
//! round trip later. TCP ends at the relay on both sides, so a protocol's own flow control (an
//! SSH channel window) meets the delay as it would on a long link. Used by the remote node
//! tests and benchmarks between two network namespaces.
//!
//! `sendense-delay-relay --listen ADDR:PORT --to ADDR:PORT --rtt-ms N` prints `listening
//! PORT` once it listens (port 0: one the system picks).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

/// Chunks in flight per direction (at most 64 KiB each): enough for 1 GiB/s at 100 ms.
const QUEUE: usize = 2048;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| {
                eprintln!(
                    "usage: sendense-delay-relay --listen ADDR:PORT --to ADDR:PORT --rtt-ms N"
                );
                std::process::exit(2)
            })
    };
    let listen = value("--listen");
    let to = value("--to");
    let rtt: u64 = value("--rtt-ms").parse().unwrap_or_else(|_| {
        eprintln!("--rtt-ms takes a number of milliseconds");
        std::process::exit(2)
    });
    let one_way = Duration::from_millis(rtt) / 2;
    let listener = TcpListener::bind(&listen).unwrap_or_else(|e| {
        eprintln!("listening on {listen}: {e}");
        std::process::exit(1)
    });
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("listening {port}");
    let _ = std::io::stdout().flush();
    for client in listener.incoming().flatten() {
        let to = to.clone();
        std::thread::spawn(move || {
            let Ok(server) = TcpStream::connect(&to) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            relay(client, server, one_way);
            relay(s2, c2, one_way);
        });
    }
}

/// Moves what `from` sends to `to`, each chunk `delay` after it arrived.
fn relay(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx): (SyncSender<(Instant, Vec<u8>)>, Receiver<_>) = sync_channel(QUEUE);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Read);
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
