//! The `sendense` binary end to end, in temp state directories, with real qemu-img images.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = env.run(&["init"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        env
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendense"));
        cmd.args(args)
            .env("SENDENSE_HOME", self.state())
            .env("NO_COLOR", "1")
            .env_remove("SENDENSE_LOG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs with `--json`, expects success and returns the document.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&out)))
    }

    /// Creates an image with qemu-img.
    fn image(&self, name: &str, format: &str, size: &str) -> PathBuf {
        let path = self.path(name);
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", format])
            .arg(&path)
            .arg(size)
            .status()
            .expect("qemu-img is needed for these tests: apt-get install qemu-utils");
        assert!(st.success());
        path
    }

    fn sql(&self, sql: &str) {
        let conn = rusqlite::Connection::open(self.state().join("sendense.db")).unwrap();
        conn.execute_batch(sql).unwrap();
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_private_state_and_is_idempotent() {
    let env = Env::new();
    assert_eq!(mode(&env.state()), 0o700);
    assert_eq!(mode(&env.state().join("sendense.db")), 0o600);
    assert_eq!(mode(&env.state().join("config.yaml")), 0o600);
    std::fs::write(env.state().join("config.yaml"), "transfer: process\n").unwrap();
    let again = env.json(&["init"]);
    assert_eq!(again["catalog_created"], false);
    assert_eq!(again["config_created"], false);
    assert_eq!(again["schema_version"], 11);
    // The operator's config is never overwritten.
    assert_eq!(
        std::fs::read_to_string(env.state().join("config.yaml")).unwrap(),
        "transfer: process\n"
    );
}

#[test]
fn commands_before_init_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sendense"))
        .args(["vm", "list", "--state-dir"])
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 4);
    assert!(stderr(&out).contains("sendense init"), "{}", stderr(&out));
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn repo_lifecycle_and_json_shapes() {
    let env = Env::new();
    let repo_dir = env.path("repo");
    let added = env.json(&["repo", "add", "local", "--path", repo_dir.to_str().unwrap()]);
    assert_eq!(added["name"], "local");
    assert_eq!(
        added["is_default"], true,
        "the first repository is the default"
    );
    assert!(repo_dir.join("sendense-repo.yaml").is_file());
    assert_eq!(mode(&repo_dir), 0o700);

    let shown = env.json(&["repo", "show", "local"]);
    assert_eq!(shown["path"], repo_dir.to_str().unwrap());
    assert!(shown["total_bytes"].as_u64().unwrap() > 0);
    assert!(shown["available_bytes"].as_u64().unwrap() <= shown["total_bytes"].as_u64().unwrap());
    assert_eq!(shown["problem"], Value::Null);
    insta::assert_json_snapshot!("repo_show", shown, {
        ".path" => "[path]", ".repo_id" => "[uuid]", ".created_at" => "[ts]",
        ".refreshed_at" => "[ts]", ".total_bytes" => "[bytes]", ".available_bytes" => "[bytes]",
    });

    let tested = env.json(&["repo", "test", "local"]);
    assert_eq!(tested["ok"], true);
    assert_eq!(tested["probe_bytes"], 1048576);
    assert_eq!(
        std::fs::read_dir(&repo_dir).unwrap().count(),
        1,
        "probe left behind"
    );

    let second = env.path("repo2");
    env.json(&[
        "repo",
        "add",
        "offsite",
        "--path",
        second.to_str().unwrap(),
        "--default",
    ]);
    let list = env.json(&["repo", "list"]);
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, ["local", "offsite"]);
    assert_eq!(list[0]["is_default"], false);
    assert_eq!(list[1]["is_default"], true);

    let refreshed = env.json(&["repo", "refresh"]);
    assert_eq!(refreshed.as_array().unwrap().len(), 2);

    // Duplicates: name, path, and a directory that already is a repository.
    let out = env.run(&[
        "repo",
        "add",
        "local",
        "--path",
        env.path("x").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let out = env.run(&["repo", "add", "again", "--path", repo_dir.to_str().unwrap()]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("local"), "{}", stderr(&out));

    let removed = env.json(&["repo", "remove", "offsite"]);
    assert_eq!(removed["name"], "offsite");
    assert!(
        second.join("sendense-repo.yaml").exists(),
        "remove keeps the files"
    );
    let out = env.run(&["repo", "show", "offsite"]);
    assert_eq!(code(&out), 4);
    assert!(
        stderr(&out).contains("Registered repositories: local"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn repo_problems_are_reported() {
    let env = Env::new();
    let dir = env.path("gone");
    env.json(&["repo", "add", "gone", "--path", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    let out = env.run(&["repo", "test", "gone"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("repository `gone`"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["repo", "refresh", "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let shown = env.json(&["repo", "show", "gone"]);
    assert!(shown["problem"]
        .as_str()
        .unwrap()
        .contains("sendense-repo.yaml"));
}

#[test]
fn repo_remove_is_refused_while_backups_exist() {
    let env = Env::new();
    let disk = env.image("d.qcow2", "qcow2", "64M");
    env.json(&[
        "repo",
        "add",
        "r",
        "--path",
        env.path("r").to_str().unwrap(),
    ]);
    env.json(&["vm", "add", "vm1", "--disk", disk.to_str().unwrap()]);
    env.sql(
        "INSERT INTO backups (id, vm_id, repo_id, status, created_at) \
         VALUES ('b1', (SELECT id FROM vms), (SELECT id FROM repositories), 'completed', '2026-01-01T00:00:00Z');",
    );
    let out = env.run(&["repo", "remove", "r"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("still holds 1 backup"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["vm", "remove", "vm1"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert_eq!(env.json(&["repo", "list"]).as_array().unwrap().len(), 1);
    assert_eq!(env.json(&["vm", "show", "vm1"])["backups"], 1);
}

#[test]
fn vm_add_show_remove_with_qcow2_and_raw() {
    let env = Env::new();
    let d0 = env.image("os.qcow2", "qcow2", "1G");
    let d1 = env.image("data.raw", "raw", "100M");
    let vm = env.json(&[
        "vm",
        "add",
        "pgtest1",
        "--disk",
        d0.to_str().unwrap(),
        "--disk",
        d1.to_str().unwrap(),
    ]);
    assert_eq!(vm["disks"][0]["key"], 2000);
    assert_eq!(vm["disks"][0]["format"], "qcow2");
    assert_eq!(vm["disks"][0]["size_bytes"], 1u64 << 30);
    assert_eq!(vm["disks"][1]["key"], 2001);
    assert_eq!(vm["disks"][1]["format"], "raw");
    assert_eq!(vm["disks"][1]["size_bytes"], 100u64 << 20);

    let shown = env.json(&["vm", "show", "pgtest1"]);
    assert_eq!(shown["name"], "pgtest1");
    assert_eq!(shown["source"], "image");
    assert_eq!(
        shown["disks"][1]["identity"],
        d1.canonicalize().unwrap().to_str().unwrap()
    );
    insta::assert_json_snapshot!("vm_show", shown, {
        ".created_at" => "[ts]", ".updated_at" => "[ts]", ".disks[].identity" => "[path]",
    });

    let text = stdout(&env.run(&["vm", "list"]));
    assert!(
        text.contains("pgtest1") && text.contains("1.1 GiB"),
        "{text}"
    );

    // A relative path is stored canonical, and a disk cannot join two VMs.
    let mut cmd = env.cmd(&["vm", "add", "other", "--disk", "os.qcow2"]);
    let out = cmd.current_dir(env.dir.path()).output().unwrap();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already belongs to VM `pgtest1`"),
        "{}",
        stderr(&out)
    );

    let removed = env.json(&["vm", "remove", "pgtest1"]);
    assert_eq!(removed["name"], "pgtest1");
    assert!(
        d0.exists() && d1.exists(),
        "vm remove must not touch the disks"
    );
    assert_eq!(env.json(&["vm", "list"]), serde_json::json!([]));
}

#[test]
fn exit_codes_and_messages_for_bad_input() {
    let env = Env::new();
    let disk = env.image("a.qcow2", "qcow2", "16M");
    let disk = disk.to_str().unwrap();
    let fresh = env.image("b.qcow2", "qcow2", "16M");
    let fresh = fresh.to_str().unwrap();
    env.json(&["vm", "add", "vm1", "--disk", disk]);

    let cases: &[(&[&str], i32, &str)] = &[
        (&["vm", "show", "nope"], 4, "no VM named `nope`"),
        (&["vm", "remove", "nope"], 4, "Registered VMs: vm1"),
        (&["repo", "show", "nope"], 4, "sendense repo add"),
        (&["repo", "test", "nope"], 4, "no repository named `nope`"),
        (&["job", "show", "42"], 4, "no job with id 42"),
        (
            &["vm", "add", "vm1", "--disk", disk],
            5,
            "already registered",
        ),
        (
            &["vm", "add", "vm2", "--disk", "/does/not/exist.qcow2"],
            4,
            "/does/not/exist.qcow2",
        ),
        (
            &["vm", "add", "bad/name", "--disk", disk],
            2,
            "invalid VM name",
        ),
        (&["vm", "add", "vm3"], 2, "--disk"),
        (
            &["vm", "add", "vm3", "--disk", fresh, "--disk", fresh],
            2,
            "more than once",
        ),
        (&["job", "list", "--status", "sideways"], 2, "sideways"),
        (&["frobnicate"], 2, "frobnicate"),
    ];
    for (args, want, text) in cases {
        let out = env.run(args);
        assert_eq!(code(&out), *want, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(text), "{args:?}: {}", stderr(&out));
    }
    // Nothing half-written by the failures.
    assert_eq!(env.json(&["vm", "list"]).as_array().unwrap().len(), 1);

    // A disk that is not an image at all.
    std::fs::create_dir(env.path("adir")).unwrap();
    let out = env.run(&[
        "vm",
        "add",
        "vm4",
        "--disk",
        env.path("adir").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    // --json errors are a document on stdout too.
    let out = env.run(&["vm", "show", "nope", "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["code"], "sendense::not_found");
    assert_eq!(doc["error"]["kind"], "not_found");
}

#[test]
fn error_render_for_logs() {
    let env = Env::new();
    let out = env.run(&["vm", "show", "ghost"]);
    insta::assert_snapshot!("error_unknown_vm", stderr(&out));
}

#[test]
fn bad_config_names_key_and_line() {
    let env = Env::new();
    std::fs::write(
        env.state().join("config.yaml"),
        "# comment\ntransfer: process\ncopy:\n  conections: 4\n",
    )
    .unwrap();
    let out = env.run(&["vm", "list"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("conections") && err.contains("line 4"),
        "{err}"
    );

    let other = env.path("other.yaml");
    std::fs::write(&other, "nbd_ports: {first: 9, last: 1}\n").unwrap();
    let out = env.run(&["vm", "list", "--config", other.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("nbd_ports"), "{}", stderr(&out));

    let out = env.run(&[
        "vm",
        "list",
        "--config",
        env.path("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
}

#[test]
fn jobs_are_listed_from_the_catalog() {
    let env = Env::new();
    assert_eq!(env.json(&["job", "list"]), serde_json::json!([]));
    let disk = env.image("a.qcow2", "qcow2", "16M");
    env.json(&["vm", "add", "vm1", "--disk", disk.to_str().unwrap()]);
    env.sql(
        "INSERT INTO jobs (kind, vm_id, vm_name, status, created_at, started_at, ended_at, error) VALUES \
         ('backup', (SELECT id FROM vms), 'vm1', 'failed', '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', '2026-01-01T00:00:02Z', 'disk full'), \
         ('backup', (SELECT id FROM vms), 'vm1', 'completed', '2026-01-02T00:00:00Z', '2026-01-02T00:00:01Z', '2026-01-02T00:00:09Z', NULL), \
         ('verify', NULL, NULL, 'running', '2026-01-03T00:00:00Z', NULL, NULL, NULL);",
    );
    let all = env.json(&["job", "list"]);
    let ids: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [3, 2, 1], "newest first");
    // The `running` job has no live process behind it: the first command marks it failed.
    assert_eq!(all[0]["status"], "failed");
    assert_eq!(all[0]["error"], "no process is running it");
    let failed = env.json(&["job", "list", "--status", "failed"]);
    assert_eq!(failed.as_array().unwrap().len(), 2);
    assert_eq!(failed[1]["error"], "disk full");
    assert_eq!(
        env.json(&["job", "list", "--status", "running"]),
        serde_json::json!([])
    );
    assert_eq!(
        env.json(&["job", "list", "--vm", "vm1"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        env.json(&["job", "list", "--limit", "1"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    insta::assert_json_snapshot!("job_show", env.json(&["job", "show", "1"]));
    let text = stdout(&env.run(&["job", "list"]));
    assert!(
        text.contains("disk full") && text.contains("verify"),
        "{text}"
    );
}

#[test]
fn two_processes_write_the_catalog_at_once() {
    let env = Env::new();
    let disks: Vec<PathBuf> = (0..40)
        .map(|i| env.image(&format!("d{i}.qcow2"), "qcow2", "1M"))
        .collect();
    let env = &env;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let disks = &disks;
                s.spawn(move || {
                    for i in (w..40).step_by(2) {
                        let name = format!("vm{i}");
                        let out =
                            env.run(&["vm", "add", &name, "--disk", disks[i].to_str().unwrap()]);
                        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
                        let out = env.run(&["repo", "refresh"]);
                        assert_eq!(code(&out), 0, "{}", stderr(&out));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
    assert_eq!(env.json(&["vm", "list"]).as_array().unwrap().len(), 40);
}

#[test]
fn usage_errors_under_json_are_json_too() {
    let env = Env::new();
    for args in [
        &["backup", "start", "--json"][..],
        &["backup", "bogus", "--json"],
        &[
            "restore", "x", "--json", "--to", "/tmp/x", "--format", "vmdk",
        ],
    ] {
        let out = env.run(args);
        assert_eq!(code(&out), 2, "{args:?}");
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(doc["error"]["code"], "sendense::invalid_input", "{doc}");
        assert!(
            !doc["error"]["message"].as_str().unwrap().is_empty(),
            "{doc}"
        );
        assert!(!stderr(&out).is_empty(), "clap's message stays on stderr");
    }
    // Without --json, stdout stays empty; --help and --version are not errors.
    let out = env.run(&["backup", "start"]);
    assert_eq!(code(&out), 2);
    assert!(out.stdout.is_empty());
    assert_eq!(code(&env.run(&["--version"])), 0);
    assert_eq!(code(&env.run(&["backup", "--help"])), 0);
}
