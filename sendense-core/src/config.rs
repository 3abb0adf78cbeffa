//! The YAML configuration (`<state-dir>/config.yaml`, or `--config FILE`).
//!
//! Every key is optional and has the default documented in [`DEFAULT_CONFIG_TEXT`], which
//! `sendense init` writes out, commented. An unknown key is an error that names the key and its
//! line: a typo must never silently fall back to a default.

use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a backup moves its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransferMode {
    /// The hub copies the data itself (hub = node).
    #[default]
    InProcess,
    /// The hub spawns `sendense-sna transfer` and speaks the node protocol with it.
    Process,
}

/// Where a VM's source side runs (discover, snapshot, checkpoints, repair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceSide {
    /// In the hub's own process.
    #[default]
    Hub,
    /// In a `sendense-sna source` process, the way a remote node runs it (live QEMU VMs).
    Node,
}

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (inclusive).
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 10100,
            last: 10200,
        }
    }
}

/// Tuning of the copy engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CopyConfig {
    /// NBD connections per disk, at most.
    pub connections: u32,
    /// Requests in flight per connection, at most.
    pub requests: u32,
    /// Largest single read or write, in bytes.
    pub request_size: u32,
}

impl Default for CopyConfig {
    fn default() -> Self {
        CopyConfig {
            connections: 4,
            requests: 4,
            request_size: 1024 * 1024,
        }
    }
}

/// Settings for the qemu-nbd processes that export backup targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QemuNbdConfig {
    /// Seconds to wait after SIGTERM before SIGKILL.
    pub stop_timeout_secs: u64,
    /// qemu-nbd `--cache` mode for backup targets.
    pub cache: String,
    /// qemu-nbd `--aio` mode for backup targets.
    pub aio: String,
}

impl Default for QemuNbdConfig {
    fn default() -> Self {
        QemuNbdConfig {
            stop_timeout_secs: 5,
            cache: "none".into(),
            aio: "threads".into(),
        }
    }
}

/// How `schedule run` and the daemon retry a scheduled backup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Further attempts after a failure that may pass (an external tool, I/O, a peer; not a
    /// refusal, a missing VM or a cancellation).
    pub retries: u32,
    /// Seconds before the first retry; each further one waits twice as long.
    pub retry_delay_secs: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            retries: 2,
            retry_delay_secs: 60,
        }
    }
}

/// VMware's data path: nbdkit's VDDK plugin and VMware's VDDK library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VddkConfig {
    /// Where VDDK is installed (`libdir=` of the plugin).
    pub libdir: PathBuf,
    /// nbdkit's VDDK plugin: its name, or the path of its `.so`.
    pub plugin: String,
    /// The transport modes VDDK may use, in order (`transports=`).
    pub transports: String,
}

impl Default for VddkConfig {
    fn default() -> Self {
        VddkConfig {
            libdir: PathBuf::from("/usr/lib/vmware-vix-disklib"),
            plugin: "vddk".into(),
            transports: "nbdssl:nbd".into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How backups move data.
    pub transfer: TransferMode,
    /// Where the source side of live QEMU VMs runs.
    pub source_side: SourceSide,
    /// Ports handed out to qemu-nbd target exports.
    pub nbd_ports: PortRange,
    /// Copy engine tuning.
    pub copy: CopyConfig,
    /// qemu-nbd settings.
    pub qemu_nbd: QemuNbdConfig,
    /// Where fleecing overlays and temporary files go (default `<state-dir>/scratch`).
    pub scratch_dir: Option<PathBuf>,
    /// Seconds a pre/post hook command may run before it is killed.
    pub hook_timeout_secs: u64,
    /// The `sendense-sna` binary for `transfer: process` and `source_side: node` (default:
    /// next to `sendense`, else `$PATH`).
    pub sna_path: Option<PathBuf>,
    /// Longest chain a disk may have, in links (the backup itself included): when a backup
    /// makes a disk's chain longer, it is consolidated into a standalone full at once. 0: no
    /// limit.
    pub max_chain_length: u32,
    /// Retries of scheduled backups.
    pub schedule: ScheduleConfig,
    /// The receive window of each SSH channel to a node, in MiB: one channel moves at most one
    /// window per round trip.
    pub node_window_mib: u32,
    /// VMware's data path.
    pub vddk: VddkConfig,
    /// Seconds a mounted restore point may go unread (and unused) before it is unmounted by
    /// itself. 0: never.
    pub mount_idle_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            transfer: TransferMode::default(),
            source_side: SourceSide::default(),
            nbd_ports: PortRange::default(),
            copy: CopyConfig::default(),
            qemu_nbd: QemuNbdConfig::default(),
            scratch_dir: None,
            hook_timeout_secs: 300,
            sna_path: None,
            max_chain_length: 0,
            schedule: ScheduleConfig::default(),
            node_window_mib: 16,
            vddk: VddkConfig::default(),
            mount_idle_secs: 3600,
        }
    }
}

impl Config {
    /// Parses configuration text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        let only_comments = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        if only_comments {
            return Ok(Config::default());
        }
        let config: Config = serde_yaml_ng::from_str(text).map_err(|e| config_error(origin, &e))?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Loads `path`. A missing file gives the defaults only when `optional` is set.
    pub fn load(path: &Path, optional: bool) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional => {
                Ok(Config::default())
            }
            Err(e) => Err(Error::io("reading config file", path, e)
                .with_help("Pass an existing file with --config, or omit --config to use <state-dir>/config.yaml.")),
        }
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |key: &str, why: &str| {
            Err(Error::new(
                ErrorKind::Config,
                format!("{}: `{key}` {why}", origin.display()),
            )
            .with_help(format!(
                "Fix `{key}` in {} (see `man sendense` for every key and its default).",
                origin.display()
            )))
        };
        if !(1..=1024).contains(&self.node_window_mib) {
            return bad("node_window_mib", "must be between 1 and 1024");
        }
        if self.nbd_ports.first == 0 || self.nbd_ports.first > self.nbd_ports.last {
            return bad(
                "nbd_ports",
                "must have 0 < first <= last (for example first: 10100, last: 10200)",
            );
        }
        if !["writeback", "none", "directsync", "writethrough"]
            .contains(&self.qemu_nbd.cache.as_str())
        {
            return bad(
                "qemu_nbd.cache",
                "must be one of writeback, none, directsync, writethrough",
            );
        }
        if !["threads", "native", "io_uring"].contains(&self.qemu_nbd.aio.as_str()) {
            return bad("qemu_nbd.aio", "must be one of threads, native, io_uring");
        }
        if self.hook_timeout_secs == 0 {
            return bad("hook_timeout_secs", "must be at least 1");
        }
        if !(1..=64).contains(&self.copy.connections) {
            return bad("copy.connections", "must be between 1 and 64");
        }
        if !(1..=1024).contains(&self.copy.requests) {
            return bad("copy.requests", "must be between 1 and 1024");
        }
        if !(4096..=32 * 1024 * 1024).contains(&self.copy.request_size)
            || !self.copy.request_size.is_power_of_two()
        {
            return bad(
                "copy.request_size",
                "must be a power of two between 4096 and 33554432 bytes",
            );
        }
        // Relative paths would depend on the directory each command runs in.
        for (key, path) in [
            ("scratch_dir", &self.scratch_dir),
            ("sna_path", &self.sna_path),
        ] {
            if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                return bad(key, "must be an absolute path");
            }
        }
        Ok(())
    }
}

fn config_error(origin: &Path, e: &serde_yaml_ng::Error) -> Error {
    // serde_yaml_ng appends " at line L column C" to its message; we say it our way.
    let text = e.to_string();
    let reason = text
        .split(" at line ")
        .next()
        .unwrap_or(&text)
        .trim()
        .to_string();
    let place = match e.location() {
        Some(loc) => format!("{} line {}", origin.display(), loc.line()),
        None => origin.display().to_string(),
    };
    Error::new(ErrorKind::Config, format!("{place}: {reason}")).with_help(format!(
        "Fix or remove that line in {}; every key and its default are listed in `man sendense` and in the file `sendense init` writes.",
        origin.display()
    ))
}

/// The commented configuration that `sendense init` writes: every key with its default.
pub const DEFAULT_CONFIG_TEXT: &str = "\
# Sendense configuration.
# Every key is optional; the value shown is the default. Uncomment a line to change it.
# An unknown key is an error, so a typo never silently falls back to a default.

# How a backup moves its data: `in-process` (the hub copies the disks itself) or
# `process` (the hub spawns `sendense-sna transfer`, the same protocol a remote node speaks).
# transfer: in-process

# Where the source side of live QEMU VMs runs — discover, snapshot, checkpoints, repair: `hub`
# (this process) or `node` (a `sendense-sna source` process, as on a remote node).
# source_side: hub

# TCP ports handed out to qemu-nbd for backup targets (inclusive; bound on 127.0.0.1 only).
# nbd_ports:
#   first: 10100
#   last: 10200

# Copy engine: NBD connections per disk, requests in flight per connection (both at most:
# a copy with little to do uses fewer), and the largest single request in bytes (a power of
# two, 4096 .. 33554432).
# copy:
#   connections: 4
#   requests: 4
#   request_size: 1048576

# qemu-nbd target exports: seconds between SIGTERM and SIGKILL when stopping one, and the
# cache (none, writeback, directsync, writethrough) and aio (threads, native, io_uring) modes.
# cache=none (O_DIRECT) measured fastest; where the filesystem has no O_DIRECT (tmpfs) the
# target falls back to writeback. aio=native needs O_DIRECT: exports that use the page cache
# (read-only sources, targets on tmpfs) use threads. Backup targets skip QCOW2's
# metadata-ordering flushes while they grow; a backup fsyncs its images before it commits them,
# so nothing is lost either way.
# qemu_nbd:
#   stop_timeout_secs: 5
#   cache: none
#   aio: threads

# Directory for fleecing overlays and other temporary files, an absolute path
# (default: <state-dir>/scratch).
# scratch_dir: /var/lib/sendense/scratch

# Seconds a --pre-hook or --post-hook command may run before it is killed.
# hook_timeout_secs: 300

# The sendense-sna binary used with `transfer: process` and `source_side: node` (default: next
# to sendense, else $PATH).
# sna_path: /usr/local/bin/sendense-sna

# Longest chain a disk may have, in backups: when a backup makes a chain longer, its image is
# made a standalone full at once (`backup consolidate`: from the repository, not the source),
# and the next incrementals build on it. Restores of a long chain open every link; prune
# removes the older backups without merges. 0: no limit.
# max_chain_length: 0

# Scheduled backups (`schedule run`, the daemon) that fail in a way that may pass — an external
# tool, I/O, a peer; not a refusal or a cancellation — are tried again this many times, the
# first after retry_delay_secs seconds, each further one after twice as long as the one before.
# schedule:
#   retries: 2
#   retry_delay_secs: 60

# The receive window of each SSH channel to a remote node, in MiB (1-1024). A channel moves at
# most one window per round trip: 16 MiB allows 800 MiB/s at 20 ms. Larger only for fast links
# with long round trips (at 100 ms, 1 GiB/s needs 100).
# node_window_mib: 16

# VMware VMs are read through nbdkit's VDDK plugin (`plugin`: its name or the path of its .so)
# and VMware's VDDK library installed at `libdir`; `transports` are the modes VDDK may use, in
# order (nbdssl, nbd, hotadd, san).
# vddk:
#   libdir: /usr/lib/vmware-vix-disklib
#   plugin: vddk
#   transports: nbdssl:nbd

# A restore point mounted with `sendense mount` is unmounted by itself after this many seconds
# in which nothing read from it and no program had a file or directory of it open. 0: never.
# mount_idle_secs: 3600
";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("config.yaml"))
    }

    #[test]
    fn default_text_parses_to_defaults() {
        let c = parse(DEFAULT_CONFIG_TEXT).unwrap();
        assert_eq!(c, Config::default());
        // Uncommenting every line gives the same values: the text documents the real defaults.
        let is_setting = |l: &str| {
            let body = l.trim_start_matches(' ');
            let key = body.split(':').next().unwrap_or("");
            body.contains(':')
                && !key.is_empty()
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        };
        let uncommented: String = DEFAULT_CONFIG_TEXT
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| is_setting(l) && !l.contains("scratch_dir") && !l.contains("sna_path"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(uncommented.contains("request_size"), "{uncommented}");
        let c2 = parse(&uncommented).unwrap();
        assert_eq!(c2, Config::default(), "{uncommented}");
    }

    #[test]
    fn empty_gives_defaults() {
        assert_eq!(parse("").unwrap().hook_timeout_secs, 300);
        assert_eq!(parse("# nothing\n\n").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("transfer: process\n\nbogus_key: 1\n").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("bogus_key"), "{}", err.message());
        assert!(err.message().contains("line 3"), "{}", err.message());
        let err = parse("copy:\n  connections: 2\n  conections: 3\n").unwrap_err();
        assert!(err.message().contains("conections"), "{}", err.message());
        assert!(err.message().contains("line 3"), "{}", err.message());
    }

    #[test]
    fn values_are_read_and_validated() {
        let c = parse("transfer: process\nnbd_ports: {first: 2000, last: 2001}\n").unwrap();
        assert_eq!(c.transfer, TransferMode::Process);
        assert_eq!(
            c.nbd_ports,
            PortRange {
                first: 2000,
                last: 2001
            }
        );
        assert!(parse("nbd_ports: {first: 3, last: 2}\n").is_err());
        assert!(parse("copy: {request_size: 5000}\n").is_err());
        assert!(parse("transfer: sideways\n").is_err());
        // Paths that would depend on the directory a command runs in.
        for text in ["scratch_dir: scratch\n", "sna_path: bin/sendense-sna\n"] {
            let err = parse(text).unwrap_err();
            assert!(err.message().contains("must be an absolute path"), "{err}");
        }
        assert!(parse("scratch_dir: /var/tmp/sendense\n").is_ok());
    }
}
