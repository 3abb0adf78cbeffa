//! A damaged catalog is named, never trusted, and rebuilt from the repositories by following
//! `sendense doctor`'s advice.

use sendense_testkit::output_text as text;
use sendense_testkit::{add_image_vm, cli, cli_json, qcow2_with, temp_hub};
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Output;

fn run(state: &Path, args: &[&str]) -> Output {
    cli(env!("CARGO_BIN_EXE_sendense"), state, args)
}

/// Overwrites the page holding table `table` (its root page: the table is small) with garbage.
fn damage_table(db: &Path, table: &str) {
    let (page, size): (i64, i64) = {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let page = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        let size = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        (page, size)
    };
    let f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.write_all_at(&vec![0x55u8; size as usize], ((page - 1) * size) as u64)
        .unwrap();
}

#[test]
fn a_damaged_catalog_is_named_and_rebuilt_from_the_repositories() {
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "r");
    let disk = qcow2_with(&dir.path().join("vm1.qcow2"), "8M", &["write -P 0x71 0 1M"]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "vm1", &[&disk]);
    let mut ids = Vec::new();
    for i in 0..2u8 {
        sendense_testkit::qemu_io(&disk, "qcow2", &[&format!("write -P {} 2M 64k", 0x72 + i)]);
        let b = cli_json(
            env!("CARGO_BIN_EXE_sendense"),
            &state,
            &["backup", "start", "vm1"],
        );
        ids.push(b["backup"].as_str().unwrap().to_string());
    }
    let o = run(&state, &["doctor"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("is whole"), "{}", text(&o));

    damage_table(&state.join("sendense.db"), "backups");
    // Commands fail pointing at doctor; init does not call it fine.
    for args in [&["backup", "list"][..], &["init"]] {
        let o = run(&state, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("sendense doctor"),
            "{args:?}: {}",
            text(&o)
        );
    }
    let o = run(&state, &["doctor", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        !report["problems"].as_array().unwrap().is_empty(),
        "{report}"
    );
    let repo = dir.path().join("repo");
    let advice: Vec<String> = report["advice"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let import = format!(
        "sendense repo import {} --name r --take-over",
        repo.display()
    );
    assert!(advice.iter().any(|a| a.trim() == import), "{advice:#?}");

    // The advice, followed: a fresh state directory and the import bring every backup back.
    let aside = dir.path().join("state.damaged");
    std::fs::rename(&state, &aside).unwrap();
    assert!(run(&state, &["init"]).status.success());
    let o = run(
        &state,
        &[
            "repo",
            "import",
            repo.to_str().unwrap(),
            "--name",
            "r",
            "--take-over",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let list = cli_json(env!("CARGO_BIN_EXE_sendense"), &state, &["backup", "list"]);
    let mut found: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    let top = ids[1].clone();
    found.sort();
    ids.sort();
    assert_eq!(found, ids);
    let out = dir.path().join("out.qcow2");
    sendense_testkit::assert_restore_equals(
        env!("CARGO_BIN_EXE_sendense"),
        &state,
        &top,
        &out,
        &disk,
    );
}
