//! The qemu-nbd command line of an export: cache and AIO modes chosen for what the export is,
//! flushes skipped for targets that are fsynced before they count, the listening address.
//! It depends on the spec, the configuration and whether the file's filesystem takes O_DIRECT;
//! starting, supervising and recording the process is the parent module's.

use super::ExportSpec;
use crate::config::QemuNbdConfig;
use crate::error::Result;
use crate::nbd::NbdUrl;
use std::path::{Path, PathBuf};

/// Where an export listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listening {
    /// A port on 127.0.0.1.
    Port(u16),
    /// A Unix socket.
    Socket(PathBuf),
}

/// The arguments of `qemu-nbd` (without `--fork`) for `spec`, and the URL it will serve at.
pub(crate) fn qemu_nbd_args(
    spec: &ExportSpec,
    cfg: &QemuNbdConfig,
    pid_file: &Path,
    listen: &Listening,
) -> Result<(Vec<String>, NbdUrl)> {
    // O_DIRECT (cache=none) was measured fastest for targets; filesystems without it (tmpfs)
    // fall back to the page cache, which is as safe: a copy ends with FLUSH, and a backup
    // fsyncs its images before it commits them.
    let direct = matches!(cfg.cache.as_str(), "none" | "directsync");
    let dir = spec.file.parent().unwrap_or(Path::new("."));
    // Read-only exports (sources, restore points) read through the page cache: O_DIRECT only
    // pays off for the writes of a target.
    let cache = if spec.read_only || (direct && !crate::fsutil::supports_direct_io(dir)) {
        "writeback"
    } else {
        cfg.cache.as_str()
    };
    // Linux native AIO needs O_DIRECT: where the page cache is used, threads do the IO.
    let o_direct = matches!(cache, "none" | "directsync");
    let aio = if cfg.aio == "native" && !o_direct {
        "threads"
    } else {
        cfg.aio.as_str()
    };
    let skip_flushes = spec.skip_flushes && !spec.read_only && !spec.discard_writes;
    let mut args: Vec<String> = Vec::new();
    if !spec.format.is_empty() && !skip_flushes {
        // An empty format means a `json:` filename that names its own driver.
        args.extend(["-f".into(), spec.format.clone()]);
    }
    args.extend::<Vec<String>>(vec![
        "-x".into(),
        spec.name.clone(),
        format!("--shared={}", spec.shared.max(1)),
        "--persistent".into(),
    ]);
    if !skip_flushes {
        args.extend([format!("--cache={cache}"), format!("--aio={aio}")]);
    }
    args.extend(["--pid-file".into(), pid_file.to_string_lossy().into_owned()]);
    let url = match listen {
        Listening::Port(port) => {
            args.extend([
                "-b".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ]);
            NbdUrl::tcp("127.0.0.1", *port, &spec.name)
        }
        Listening::Socket(sock) => {
            args.extend(["-k".into(), sock.to_string_lossy().into_owned()]);
            NbdUrl::unix(sock, &spec.name)
        }
    };
    if spec.read_only {
        args.push("--read-only".into());
    }
    if let Some(b) = &spec.bitmap {
        args.extend(["-B".into(), b.clone()]);
    }
    if spec.discard_writes {
        args.push("--snapshot".into());
    }
    if skip_flushes {
        // The cache mode as options: O_DIRECT as chosen above, flushes off; a JSON filename
        // also keeps any path intact.
        let filename = crate::repo::chain::json_path(&spec.file)?;
        let mut opts = serde_json::json!({
            "driver": spec.format,
            "discard": "unmap",
            "cache": {"direct": o_direct, "no-flush": true},
            "file": {"driver": "file", "filename": filename, "aio": aio},
        });
        if spec.alone {
            opts["backing"] = serde_json::Value::Null;
        }
        args.push(format!("json:{opts}"));
    } else {
        if spec.format == "qcow2" && !spec.read_only && !spec.discard_writes {
            args.push("--discard=unmap".into());
        }
        args.push(spec.file.to_string_lossy().into_owned());
    }
    Ok((args, url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(file: &Path) -> ExportSpec {
        ExportSpec::target(file.to_path_buf(), "t".into(), (0, 0), 3, None)
    }

    #[test]
    fn sources_read_through_the_page_cache_and_targets_skip_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.qcow2");
        let cfg = QemuNbdConfig::default();
        let pid = dir.path().join("pid");
        // A read-only export on a socket.
        let mut ro = spec(&file);
        ro.read_only = true;
        let sock = dir.path().join("s.sock");
        let (args, url) = qemu_nbd_args(&ro, &cfg, &pid, &Listening::Socket(sock.clone())).unwrap();
        assert!(args.contains(&"--read-only".to_string()), "{args:?}");
        assert!(args.contains(&"--cache=writeback".to_string()), "{args:?}");
        assert!(args.contains(&"--shared=3".to_string()), "{args:?}");
        assert!(args
            .windows(2)
            .any(|w| w[0] == "-k" && w[1] == sock.to_string_lossy()));
        assert_eq!(url, NbdUrl::unix(&sock, "t"));
        assert_eq!(args.last().unwrap(), &file.to_string_lossy());
        // A target that skips flushes: its options in a JSON filename, on 127.0.0.1 only.
        let mut target = spec(&file);
        target.skip_flushes = true;
        target.alone = true;
        let (args, url) = qemu_nbd_args(&target, &cfg, &pid, &Listening::Port(10100)).unwrap();
        assert!(
            args.windows(2).any(|w| w[0] == "-b" && w[1] == "127.0.0.1"),
            "{args:?}"
        );
        assert_eq!(url, NbdUrl::tcp("127.0.0.1", 10100, "t"));
        let json = args.last().unwrap();
        assert!(json.starts_with("json:"), "{json}");
        assert!(
            json.contains("\"no-flush\":true") && json.contains("\"backing\":null"),
            "{json}"
        );
        assert!(!args.iter().any(|a| a.starts_with("--cache")), "{args:?}");
    }
}
