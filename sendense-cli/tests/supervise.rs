//! Every child Sendense starts is recorded and reconciled the same way: a hook that leaves a
//! daemon behind, under a hub killed with SIGKILL, is found by its record and stopped by the
//! next command — and only it.

use sendense_testkit::{cli, cli_json, nbdkit, temp_hub};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(
            s.rsplit(')').next().and_then(|r| r.trim().chars().next()),
            Some('Z')
        )
    })
}

fn wait_for_pid(file: &Path, hub: &mut std::process::Child) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Ok(pid) = text.trim().parse() {
                if text.ends_with('\n') {
                    return pid;
                }
            }
        }
        assert!(
            hub.try_wait().unwrap().is_none(),
            "the backup ended before its hook ran"
        );
        assert!(Instant::now() < deadline, "the hook did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn what_a_hook_left_running_under_a_killed_hub_is_stopped_by_the_next_command() {
    let (dir, state) = temp_hub(BIN, "r");
    let d = dir.path();
    let export = nbdkit(d, "ext", &["memory", "size=4M"]);
    let left = d.join("left.pid");
    let hook = d.join("hook.pid");
    // The hook starts a daemon in a session of its own (out of the hook's process group), then
    // hangs: the hub is killed while it waits for it.
    let pre = format!(
        "sh -c 'setsid sleep 300 & echo $! > {}; echo $$ > {}; sleep 300'",
        left.display(),
        hook.display()
    );
    cli_json(
        BIN,
        &state,
        &["vm", "add", "ext", "--nbd", &export.url, "--pre-hook", &pre],
    );
    // Someone else's process with the same command line is never touched.
    let mut bystander = Command::new("sleep").arg("300").spawn().unwrap();

    let mut hub = Command::new(BIN)
        .args(["backup", "start", "ext"])
        .env("SENDENSE_HOME", &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = wait_for_pid(&left, &mut hub);
    let hook_pid = wait_for_pid(&hook, &mut hub);
    hub.kill().unwrap();
    hub.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(hook_pid) {
        assert!(Instant::now() < deadline, "the hook outlived the hub");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        alive(daemon),
        "the hook's daemon is what the kernel cannot end"
    );

    let dry = cli_json(BIN, &state, &["cleanup", "--dry-run"]);
    let stops: Vec<&serde_json::Value> = dry["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "stop_hook")
        .collect();
    assert_eq!(stops.len(), 1, "{dry}");
    assert_eq!(stops[0]["target"], daemon.to_string());
    assert!(
        stops[0]["reason"]
            .as_str()
            .unwrap()
            .contains("pre-hook of VM ext"),
        "{dry}"
    );
    assert!(alive(daemon), "a dry run stops nothing");

    // Any command reconciles first; `job list` is enough.
    let out = cli(BIN, &state, &["job", "list"]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(daemon) {
        assert!(Instant::now() < deadline, "the hook's daemon survived");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        alive(bystander.id()),
        "a process Sendense did not start was touched"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();

    let after = cli_json(BIN, &state, &["cleanup", "--dry-run"]);
    assert_eq!(after["actions"], serde_json::json!([]), "{after}");
}
