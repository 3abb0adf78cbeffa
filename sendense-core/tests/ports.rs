//! The port allocator across real processes: 101 ports handed out by several concurrent
//! sendense processes are all different, a port held by a foreign listener is skipped, running
//! out is a clear `Busy` error, and the allocations of processes that died are reclaimed.

use sendense_core::catalog::Listen;
use sendense_core::{ErrorKind, OpenOptions};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};

const WORKER_ENV: &str = "SENDENSE_PORT_WORKER_STATE";

fn bindable(p: u16) -> bool {
    TcpListener::bind(("127.0.0.1", p)).is_ok()
}

/// Helper process: allocates `SENDENSE_PORT_WORKER_COUNT` ports, prints each, then holds them
/// until stdin closes.
#[test]
#[ignore = "helper process for ports_are_unique_across_processes"]
fn port_worker() {
    let state = std::env::var_os(WORKER_ENV).expect("run by ports_are_unique_across_processes");
    let count: usize = std::env::var("SENDENSE_PORT_WORKER_COUNT")
        .unwrap()
        .parse()
        .unwrap();
    let first: u16 = std::env::var("SENDENSE_PORT_WORKER_FIRST")
        .unwrap()
        .parse()
        .unwrap();
    let mut sd = OpenOptions::new().state_dir(state).open().unwrap();
    let range = Listen::PortRange(first, first + 100);
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        match sd.catalog_mut().allocate_export(
            &range,
            &format!("w{}-{i}", std::process::id()),
            None,
            None,
            bindable,
        ) {
            Ok(r) => writeln!(out, "PORT {}", r.port.unwrap()).unwrap(),
            Err(e) if e.kind() == ErrorKind::Busy => writeln!(out, "BUSY {}", e.message()).unwrap(),
            Err(e) => writeln!(out, "ERROR {e}").unwrap(),
        }
        out.flush().unwrap();
    }
    writeln!(out, "DONE").unwrap();
    out.flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

#[test]
fn ports_are_unique_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    OpenOptions::new().state_dir(&state).init().unwrap();
    // A range with all 101 ports free right now.
    let first = (20000..60000u16)
        .step_by(101)
        .find(|f| (*f..=*f + 100).all(bindable))
        .expect("no free range of 101 ports on 127.0.0.1");
    let foreign = TcpListener::bind(("127.0.0.1", first + 7)).unwrap();

    let mut workers: Vec<_> = (0..4)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "port_worker",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(WORKER_ENV, &state)
                .env("SENDENSE_PORT_WORKER_COUNT", "26")
                .env("SENDENSE_PORT_WORKER_FIRST", first.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ports = Vec::new();
    let mut busy = Vec::new();
    for w in &mut workers {
        let mut reader = BufReader::new(w.stdout.take().unwrap());
        // The test harness prints "test port_worker ... " without a newline first.
        for line in (&mut reader).lines() {
            let line = line.unwrap();
            if let Some(i) = line.find("PORT ") {
                ports.push(line[i + 5..].trim().parse::<u16>().unwrap());
            } else if let Some(i) = line.find("BUSY ") {
                busy.push(line[i + 5..].to_string());
            } else if line.contains("DONE") {
                break;
            } else if line.contains("ERROR") {
                panic!("worker failed: {line}");
            }
        }
        // Keep draining, so the worker's last lines never hit a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    }
    let unique: HashSet<_> = ports.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ports.len(),
        "a port was handed out twice: {ports:?}"
    );
    let missing: Vec<u16> = (first..=first + 100)
        .filter(|p| !unique.contains(p))
        .collect();
    assert_eq!(
        ports.len(),
        100,
        "101 ports minus the foreign one; missing {missing:?}; busy: {busy:?}"
    );
    assert!(
        !unique.contains(&(first + 7)),
        "the foreign listener's port was handed out"
    );
    assert!(ports.iter().all(|p| (first..=first + 100).contains(p)));
    assert_eq!(busy.len(), 4, "{busy:?}");
    assert!(busy[0].contains("no free NBD port"), "{}", busy[0]);

    // While the holders live, nothing is free; once they exit, their ports are reclaimed.
    let mut sd = OpenOptions::new().state_dir(&state).open().unwrap();
    let range = Listen::PortRange(first, first + 100);
    let err = sd
        .catalog_mut()
        .allocate_export(&range, "late", None, None, bindable)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    for mut w in workers {
        drop(w.stdin.take());
        w.wait().unwrap();
    }
    let r = sd
        .catalog_mut()
        .allocate_export(&range, "late", None, None, bindable)
        .unwrap();
    assert_eq!(
        r.port,
        Some(first),
        "the lowest free port, reclaimed from a dead process"
    );
    assert_eq!(sd.catalog().exports().unwrap().len(), 1);
    drop(foreign);
}
