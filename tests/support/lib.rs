//! Test kit for Sendense's tests against real components: processes started by the test are
//! killed by pid when their guard drops (also when the test fails), tools that are missing fail
//! the test with the Debian package to install, and images are generated at test time.

pub mod hosts;
pub mod rgw;
pub mod vcsim;
pub mod vddk;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails with an instruction when `tool` is not installed.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is required by this test: install the Debian package `{package}` (make test does)"
    );
}

/// A process the test started; killed (SIGTERM, then SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr discarded unless `SENDENSE_TEST_VERBOSE` is set.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        if std::env::var_os("SENDENSE_TEST_VERBOSE").is_none() {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// Takes over a child the caller started.
    pub fn adopt(name: &str, child: Child) -> Proc {
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// Spawns `cmd` with its stdout and stderr as the caller set them.
    pub fn spawn_keeping_output(name: &str, mut cmd: Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process with SIGTERM and waits up to 5 s before SIGKILL.
    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not exit on SIGTERM; killing it", self.name);
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `ready()` holds while `proc` runs, or panics (naming `what` the server did not
/// do) after 10 s or when it exits first.
fn wait_until(proc: &mut Proc, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(proc.alive(), "{} exited before it would {what}", proc.name);
        assert!(Instant::now() < deadline, "{} did not {what}", proc.name);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `holds()` comes true within `limit` (asked every 20 ms).
pub fn holds_within(limit: Duration, mut holds: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if holds() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `path` exists (a Unix socket being created), or panics after 10 s.
pub fn wait_for_path(path: &Path, proc: &mut Proc) {
    wait_until(proc, &format!("create {}", path.display()), || {
        path.exists()
    });
}

/// Waits until the server `proc` accepts connections on the Unix socket `path`: the file
/// appears when the socket is bound, a moment before it listens.
pub fn wait_for_socket(path: &Path, proc: &mut Proc) {
    wait_until(proc, &format!("listen on {}", path.display()), || {
        std::os::unix::net::UnixStream::connect(path).is_ok()
    });
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, proc: &mut Proc) {
    wait_until(proc, &format!("listen on port {port}"), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// The first of `n` consecutive ports on 127.0.0.1 that are free now. Starts at a pseudo-random
/// place so tests running at the same time pick different ranges.
pub fn free_port_range(n: u16) -> u16 {
    let seed = std::process::id() as u64 * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    let span = 30000u64;
    for i in 0..span / n as u64 {
        let first = 21000 + ((seed + i * n as u64 * 13) % (span - n as u64)) as u16;
        if (first..first + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return first;
        }
    }
    panic!("no {n} consecutive free ports on 127.0.0.1");
}

/// Writes a state-directory config that gives this test its own NBD port range.
pub fn private_port_config(state: &Path, n: u16) -> (u16, u16) {
    let first = free_port_range(n);
    std::fs::create_dir_all(state).expect("creating state dir");
    std::fs::write(
        state.join("config.yaml"),
        format!("nbd_ports: {{first: {first}, last: {}}}\n", first + n - 1),
    )
    .expect("writing config.yaml");
    (first, first + n - 1)
}

/// An NBD server started by a test, reachable at `url`.
#[derive(Debug)]
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// Its NBD URL.
    pub url: String,
}

/// Starts `nbdkit` in the foreground on a Unix socket in `dir`, with `args` after the socket
/// options (filters, plugin and plugin parameters).
pub fn nbdkit(dir: &Path, name: &str, args: &[&str]) -> Server {
    require("nbdkit", "nbdkit");
    let sock = dir.join(format!("{name}.sock"));
    let mut cmd = Command::new("nbdkit");
    cmd.args(["-f", "--exit-with-parent", "-U"])
        .arg(&sock)
        .args(args);
    let mut proc = Proc::spawn("nbdkit", cmd);
    wait_for_socket(&sock, &mut proc);
    Server {
        proc,
        url: format!("nbd+unix:///?socket={}", sock.display()),
    }
}

/// Serves `image` with qemu-nbd on a Unix socket in `dir` under the export name `export`.
/// `extra` adds flags (`-r`, `-B bitmap`, `--shared=N`, ...).
pub fn qemu_nbd(dir: &Path, image: &Path, format: &str, export: &str, extra: &[&str]) -> Server {
    require("qemu-nbd", "qemu-utils");
    let sock = dir.join(format!("{export}.sock"));
    let mut cmd = Command::new("qemu-nbd");
    cmd.args(["-f", format, "-x", export, "-k"])
        .arg(&sock)
        .args(["--cache=writeback", "--aio=threads", "--persistent"])
        .args(extra)
        .arg(image);
    let mut proc = Proc::spawn("qemu-nbd", cmd);
    wait_for_socket(&sock, &mut proc);
    Server {
        proc,
        url: format!("nbd+unix:///{export}?socket={}", sock.display()),
    }
}

/// Serves `image` with qemu-nbd on 127.0.0.1 and a free port.
pub fn qemu_nbd_tcp(image: &Path, format: &str, export: &str, extra: &[&str]) -> Server {
    require("qemu-nbd", "qemu-utils");
    let port = free_port();
    let mut cmd = Command::new("qemu-nbd");
    cmd.args([
        "-f",
        format,
        "-x",
        export,
        "-b",
        "127.0.0.1",
        "--persistent",
        "-p",
    ])
    .arg(port.to_string())
    .args(extra)
    .arg(image);
    let mut proc = Proc::spawn("qemu-nbd", cmd);
    wait_for_port(port, &mut proc);
    Server {
        proc,
        url: format!("nbd://127.0.0.1:{port}/{export}"),
    }
}

/// Runs a command and panics with its stderr when it fails; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img create -f FORMAT PATH SIZE`.
pub fn create_image(path: &Path, format: &str, size: &str) -> PathBuf {
    require("qemu-img", "qemu-utils");
    run(
        "qemu-img",
        &["create", "-q", "-f", format, path.to_str().unwrap(), size],
    );
    path.to_path_buf()
}

/// Creates a qcow2 overlay at `path` backed by the qcow2 `backing` (a path relative to the
/// overlay's directory, as the chain records it).
pub fn create_overlay(path: &Path, backing: &str) -> PathBuf {
    create_overlay_sized(path, backing, None)
}

/// [`create_overlay`] of `size` (`None`: the backing file's).
pub fn create_overlay_sized(path: &Path, backing: &str, size: Option<&str>) -> PathBuf {
    require("qemu-img", "qemu-utils");
    let mut args = vec![
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        backing,
        "-F",
        "qcow2",
        path.to_str().unwrap(),
    ];
    args.extend(size);
    run("qemu-img", &args);
    path.to_path_buf()
}

/// Every byte of the disk image `image` as `qemu-img convert` reads it through its chain
/// (converted to a raw file beside it).
pub fn qemu_reads(image: &Path) -> Vec<u8> {
    require("qemu-img", "qemu-utils");
    let raw = image.with_extension("read.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            image.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    bytes
}

/// Runs qemu-io commands (`write -P 0xab 0 1M`, ...) on an image.
pub fn qemu_io(path: &Path, format: &str, commands: &[&str]) {
    require("qemu-io", "qemu-utils");
    let mut args = vec!["-f", format];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    args.push(path.to_str().unwrap());
    run("qemu-io", &args);
}

/// True when `qemu-img compare` finds the two images identical. Arguments may be files or NBD
/// URLs; `fmt_a` applies to `a` (`qcow2`, `raw`) and is ignored for URLs.
pub fn images_equal(a: &str, fmt_a: &str, b: &str) -> bool {
    require("qemu-img", "qemu-utils");
    let mut cmd = Command::new("qemu-img");
    cmd.arg("compare").arg("-U");
    if !a.starts_with("nbd") {
        cmd.args(["-f", fmt_a]);
    }
    let out = cmd
        .arg(a)
        .arg(b)
        .output()
        .expect("running qemu-img compare");
    match out.status.code() {
        Some(0) => true,
        Some(1) => {
            eprintln!("qemu-img compare: {}", String::from_utf8_lossy(&out.stdout));
            false
        }
        _ => panic!(
            "qemu-img compare {a} {b} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Bytes allocated in the top layer of an image, from `qemu-img map --output=json`
/// (`depth == 0` and `data == true`).
pub fn allocated_bytes(path: &Path, format: &str) -> u64 {
    let out = run(
        "qemu-img",
        &[
            "map",
            "-U",
            "--output=json",
            "-f",
            format,
            path.to_str().unwrap(),
        ],
    );
    let map: serde_json::Value = serde_json::from_str(&out).expect("qemu-img map JSON");
    map.as_array()
        .expect("array")
        .iter()
        .filter(|e| e["depth"] == 0 && e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap_or(0))
        .sum()
}

/// A QEMU VM started by a test: disks on virtio-blk, no guest OS, two QMP sockets (one for
/// Sendense, one for the test's own commands, since QEMU serves one client per socket).
#[derive(Debug)]
pub struct QemuVm {
    /// The process.
    pub proc: Proc,
    /// QMP socket for Sendense.
    pub qmp: PathBuf,
    /// QMP socket for the test.
    pub control: PathBuf,
    /// The disk images, in device order (qdev ids vd0, vd1, ...).
    pub disks: Vec<PathBuf>,
}

impl QemuVm {
    /// Starts QEMU on `disks` (format, path) with QMP sockets in `dir`.
    pub fn start(dir: &Path, name: &str, disks: &[(&str, &Path)]) -> QemuVm {
        QemuVm::start_with(Command::new("qemu-system-x86_64"), dir, name, disks)
    }

    /// [`QemuVm::start`] through `cmd`, a command that runs `qemu-system-x86_64` (in a
    /// network namespace, say) as the process itself.
    pub fn start_with(mut cmd: Command, dir: &Path, name: &str, disks: &[(&str, &Path)]) -> QemuVm {
        require("qemu-system-x86_64", "qemu-system-x86");
        let qmp = dir.join(format!("{name}-qmp.sock"));
        let control = dir.join(format!("{name}-ctl.sock"));
        cmd.args([
            "-accel",
            "kvm",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-nodefaults",
            "-m",
            "64",
        ])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", control.display()));
        for (i, (fmt, path)) in disks.iter().enumerate() {
            cmd.arg("-blockdev").arg(format!(
                "driver=file,node-name=file{i},filename={}",
                path.display()
            ));
            cmd.arg("-blockdev")
                .arg(format!("driver={fmt},node-name=disk{i},file=file{i}"));
            cmd.arg("-device")
                .arg(format!("virtio-blk-pci,drive=disk{i},id=vd{i}"));
        }
        let mut proc = Proc::spawn("qemu-system-x86_64", cmd);
        wait_for_socket(&qmp, &mut proc);
        wait_for_socket(&control, &mut proc);
        QemuVm {
            proc,
            qmp,
            control,
            disks: disks.iter().map(|(_, p)| p.to_path_buf()).collect(),
        }
    }

    /// Runs a QMP command on the test's socket and returns the `return` value.
    pub fn qmp(&self, command: &str, args: serde_json::Value) -> serde_json::Value {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.control).expect("control socket");
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        for (cmd, a) in [("qmp_capabilities", serde_json::json!({})), (command, args)] {
            writeln!(s, "{}", serde_json::json!({"execute": cmd, "arguments": a})).unwrap();
            loop {
                line.clear();
                assert!(
                    r.read_line(&mut line).unwrap() > 0,
                    "QEMU closed QMP during {cmd}"
                );
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                if v.get("event").is_some() {
                    continue;
                }
                if let Some(e) = v.get("error") {
                    panic!("QMP {cmd} failed: {e}");
                }
                if cmd == command {
                    return v["return"].clone();
                }
                break;
            }
        }
        serde_json::Value::Null
    }

    /// A guest write through the virtio device: HMP `qemu-io -d vdN/virtio-backend "..."`.
    pub fn guest_io(&self, disk: usize, io: &str) {
        let out = self.qmp(
            "human-monitor-command",
            serde_json::json!({"command-line": format!("qemu-io -d vd{disk}/virtio-backend \"{io}\"")}),
        );
        let text = out.as_str().unwrap_or_default();
        assert!(!text.contains("rror"), "qemu-io {io}: {text}");
    }

    /// Quits QEMU cleanly (persistent bitmaps are saved) and waits for it.
    pub fn quit(mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.qmp("quit", serde_json::json!({}))
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.proc.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Running processes (zombies excluded) whose command line contains `text`, other than this
/// process and `except`, as "pid: command line".
pub fn processes_with(text: &str, except: &[u32]) -> Vec<String> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me || except.contains(&pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false);
        if cmdline.contains(text) && !zombie {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Every file below `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// `sendense restore ID --disk 2000 --to OUT [extra...]` on hub `state` (binary `bin`).
pub fn restore_disk(
    bin: &str,
    state: &Path,
    id: &str,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "restore",
        id,
        "--disk",
        "2000",
        "--to",
        out.to_str().expect("UTF-8 test path"),
    ];
    args.extend_from_slice(extra);
    cli(bin, state, &args)
}

/// `sendense restore ID --disk 2000 --to OUT` on hub `state` (binary `bin`) succeeds, and the
/// restored QCOW2 equals `reference`.
pub fn assert_restore_equals(bin: &str, state: &Path, id: &str, out: &Path, reference: &Path) {
    let o = restore_disk(bin, state, id, out, &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "restore {id}: {}",
        output_text(&o)
    );
    assert!(
        images_equal(out.to_str().unwrap(), "qcow2", reference.to_str().unwrap()),
        "restore of {id} differs from {}",
        reference.display()
    );
}

/// `sendense restore ID --disk 2000 --to <reference>.restored EXTRA...` on hub `state` (binary
/// `bin`) succeeds and the restored QCOW2 equals `reference`; the restored file is removed.
pub fn assert_restores_to(bin: &str, state: &Path, id: &str, extra: &[&str], reference: &Path) {
    let out = reference.with_extension("restored");
    let _ = std::fs::remove_file(&out);
    let o = restore_disk(bin, state, id, &out, extra);
    assert!(
        o.status.success(),
        "restore {id} {extra:?}: {}",
        output_text(&o)
    );
    assert!(
        images_equal(out.to_str().unwrap(), "qcow2", reference.to_str().unwrap()),
        "restore of {id} {extra:?} differs from {}",
        reference.display()
    );
    std::fs::remove_file(&out).expect("removing the restored file");
}

/// A restore point and the disks it must restore to: `(key, raw image)` each.
pub type RestorePoint = (String, Vec<(u32, PathBuf)>);

/// Every point restores — `restore ID --all --to DIR --format raw`, run by `hub` (exit code and
/// output), `DIR` under `scratch` — to exactly its raw images, disk by disk (`VM-disk-KEY.raw`).
pub fn assert_restore_points(
    hub: impl Fn(&[&str]) -> (i32, String),
    scratch: &Path,
    vm: &str,
    points: &[RestorePoint],
) {
    for (id, disks) in points {
        let out = scratch.join(format!("restore-{id}"));
        let (c, text) = hub(&[
            "restore",
            id,
            "--all",
            "--to",
            out.to_str().expect("UTF-8 test path"),
            "--format",
            "raw",
        ]);
        assert_eq!(c, 0, "restore {id}: {text}");
        for (key, kept) in disks {
            let file = out.join(format!("{vm}-disk-{key}.raw"));
            assert!(
                images_equal(file.to_str().unwrap(), "raw", kept.to_str().unwrap()),
                "restore point {id} disk {key} differs from {}",
                kept.display()
            );
        }
        std::fs::remove_dir_all(out).unwrap();
    }
}

/// A command's JSON document: its whole output, or the last line of a stream of events
/// (`Null` when there is none).
pub fn json_document(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout).unwrap_or_else(|_| {
        String::from_utf8_lossy(stdout)
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null)
    })
}

/// `sendense ARGS` (binary `bin`) on hub `state`: its exit code and its output (stdout then
/// stderr).
pub fn cli_status(bin: &str, state: &Path, args: &[&str]) -> (i32, String) {
    let out = cli(bin, state, args);
    (out.status.code().unwrap_or(-1), output_text(&out))
}

/// A command's stdout then stderr, for assertion messages and for looking for what it said.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the `sendense` binary `bin` on the state directory `state`.
pub fn cli(bin: &str, state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args(args)
        .env("SENDENSE_HOME", state)
        .env("NO_COLOR", "1")
        .output()
        .expect("running sendense")
}

/// Runs `sendense ... --json`, expects success and returns the document: the whole output, or
/// for long operations (NDJSON events first) the last line, the summary.
pub fn cli_json(bin: &str, state: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cli(bin, state, &all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().last().unwrap_or("null")).expect("JSON output")
    })
}

/// A hub in a fresh temporary directory with repository `repo` ([`cli_hub`]): the directory
/// (removed when dropped) and the state directory.
pub fn temp_hub(bin: &str, repo: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let state = cli_hub(bin, dir.path(), repo);
    (dir, state)
}

/// A qcow2 image of `size` at `path` with `writes` (qemu-io commands) done.
pub fn qcow2_with(path: &Path, size: &str, writes: &[&str]) -> PathBuf {
    let image = create_image(path, "qcow2", size);
    qemu_io(&image, "qcow2", writes);
    image
}

/// Registers an image VM: `sendense vm add NAME --disk FILE ...`, its JSON output.
pub fn add_image_vm(bin: &str, state: &Path, name: &str, disks: &[&Path]) -> serde_json::Value {
    let mut args = vec!["vm".to_string(), "add".into(), name.into()];
    for d in disks {
        args.push("--disk".into());
        args.push(d.to_str().expect("UTF-8 test path").into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli_json(bin, state, &args)
}

/// A hub for a CLI test: `<dir>/state` with its own port range, initialised, and a repository
/// `repo` at `<dir>/repo`. Returns the state directory.
pub fn cli_hub(bin: &str, dir: &Path, repo: &str) -> PathBuf {
    let state = dir.join("state");
    private_port_config(&state, 20);
    let out = cli(bin, &state, &["init"]);
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("repo");
    cli_json(
        bin,
        &state,
        &["repo", "add", repo, "--path", path.to_str().unwrap()],
    );
    state
}

/// Damage done to QCOW2 images the way disks, filesystems and people do it, for tests that must
/// see it caught. Reads the on-disk structures itself (QCOW2 version 3, 64 KiB clusters,
/// standard L2 entries).
pub mod qcow2 {
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    fn be64(f: &std::fs::File, at: u64) -> u64 {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, at).unwrap();
        u64::from_be_bytes(b)
    }

    fn be32(f: &std::fs::File, at: u64) -> u32 {
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, at).unwrap();
        u32::from_be_bytes(b)
    }

    fn open(path: &Path) -> std::fs::File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    /// Where the L2 entry of the cluster at `guest` offset is in the file, and its value.
    pub fn l2_entry(path: &Path, guest: u64) -> (u64, u64) {
        let f = open(path);
        let bits = be32(&f, 20);
        let l1 = be64(&f, 40);
        let per_l2 = (1u64 << bits) / 8;
        let cluster = guest >> bits;
        let l1e = be64(&f, l1 + cluster / per_l2 * 8) & 0x00ff_ffff_ffff_fe00;
        assert_ne!(
            l1e,
            0,
            "no L2 table for offset {guest} in {}",
            path.display()
        );
        let at = l1e + cluster % per_l2 * 8;
        (at, be64(&f, at))
    }

    /// Sets the L2 entry of the cluster at `guest`.
    pub fn set_l2_entry(path: &Path, guest: u64, value: u64) {
        let (at, _) = l2_entry(path, guest);
        open(path).write_all_at(&value.to_be_bytes(), at).unwrap();
    }

    /// The file offset of the data of the cluster at `guest` (standard, allocated).
    pub fn host_offset(path: &Path, guest: u64) -> u64 {
        let (_, e) = l2_entry(path, guest);
        let host = e & 0x00ff_ffff_ffff_fe00;
        assert_ne!(
            host,
            0,
            "cluster {guest} of {} is not allocated",
            path.display()
        );
        host
    }

    /// Flips one bit of the byte at `guest` in the image's own cluster (the L2 entry unchanged).
    pub fn flip_data_byte(path: &Path, guest: u64) {
        let at = host_offset(path, guest & !0xffff) + (guest & 0xffff);
        let f = open(path);
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    }

    /// Clears the zero flag (bit 0) of the L2 entry of the cluster at `guest`, which must have
    /// it: the cluster becomes "unallocated", a valid entry, and the backing file shows through.
    pub fn clear_zero_flag(path: &Path, guest: u64) {
        let (_, e) = l2_entry(path, guest);
        assert_eq!(
            e & 1,
            1,
            "cluster {guest} of {} is no zero cluster",
            path.display()
        );
        set_l2_entry(path, guest, e & !1);
    }

    /// Names `backing` (a file name in the same directory) as the image's backing file without
    /// touching its data: what an unsafe `qemu-img rebase -u` does.
    pub fn rebase_unsafe(path: &Path, backing: &str) {
        crate::run(
            "qemu-img",
            &[
                "rebase",
                "-u",
                "-f",
                "qcow2",
                "-b",
                backing,
                "-F",
                "qcow2",
                path.to_str().unwrap(),
            ],
        );
    }

    /// Overwrites the 4-byte magic with zeroes.
    pub fn zero_magic(path: &Path) {
        open(path).write_all_at(&[0u8; 4], 0).unwrap();
    }

    /// Sets the virtual size in the header.
    pub fn set_size(path: &Path, size: u64) {
        open(path).write_all_at(&size.to_be_bytes(), 24).unwrap();
    }
}

/// The id of a running job of `kind` on hub `state` (binary `bin`), waiting up to 30 s for one.
pub fn running_job(bin: &str, state: &Path, kind: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let jobs = cli_json(bin, state, &["job", "list", "--status", "running"]);
        if let Some(j) = jobs
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["kind"] == kind)
        {
            return j["id"].to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no {kind} job runs");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `sendense ARGS` (binary `bin`) in the background on hub `state`, with pause point `pause`
/// set (`SENDENSE_TEST_PAUSE_AT`); stderr piped.
pub fn spawn_paused(bin: &str, state: &Path, args: &[&str], pause: &str) -> std::process::Child {
    Command::new(bin)
        .args(args)
        .env("SENDENSE_HOME", state)
        .env("SENDENSE_TEST_PAUSE_AT", pause)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running sendense")
}

/// Runs `sendense ARGS` (binary `bin`) on hub `state` with crash point `point` set
/// (`SENDENSE_TEST_CRASH_AT`), and asserts it died there (SIGKILL).
pub fn cli_killed_at(bin: &str, state: &Path, args: &[&str], point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let out = Command::new(bin)
        .args(args)
        .env("SENDENSE_HOME", state)
        .env("NO_COLOR", "1")
        .env("SENDENSE_TEST_CRASH_AT", point)
        .output()
        .expect("running sendense");
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{args:?} did not reach {point}: {}",
        output_text(&out)
    );
}

/// Flips every bit of the byte at `at` of the file at `path` (bit rot, in place).
pub fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("opening the file to damage");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at)
        .expect("reading the byte to flip");
    b[0] ^= 0xff;
    f.write_all_at(&b, at).expect("writing the flipped byte");
}
