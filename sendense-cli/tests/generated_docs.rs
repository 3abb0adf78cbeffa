//! `man/` and `completions/` must equal what the clap definitions generate.
//! `SENDENSE_UPDATE_DOCS=1 cargo test -p sendense-cli --test generated_docs` (or `make docs`)
//! rewrites them.

use std::path::PathBuf;

#[test]
fn committed_man_pages_and_completions_are_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = sendense_cli::docs::render_all();
    assert!(files.keys().any(|p| p.ends_with("sendense-vm-add.1")));
    assert!(files.keys().any(|p| p.ends_with("sendense-sna-transfer.1")));
    assert!(files.keys().any(|p| p.ends_with("sendense.bash")));
    let update = std::env::var_os("SENDENSE_UPDATE_DOCS").is_some();
    let mut stale = Vec::new();
    for (rel, content) in &files {
        let path = root.join(rel);
        if std::fs::read(&path).ok().as_deref() != Some(content.as_slice()) {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, content).unwrap();
            } else {
                stale.push(rel.display().to_string());
            }
        }
    }
    // Files for commands that no longer exist are stale too.
    for dir in ["man", "completions"] {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let rel = PathBuf::from(dir).join(entry.file_name());
            if !files.contains_key(&rel) {
                if update {
                    std::fs::remove_file(entry.path()).unwrap();
                } else {
                    stale.push(format!("{} (no such command)", rel.display()));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated docs are stale: {stale:?}\nrun `make docs` and commit the result"
    );
}
