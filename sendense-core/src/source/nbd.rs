//! Existing NBD exports, one per disk (an nbdkit vddk export of a VMware VM, rbd-nbd, another
//! tool), with optional hook commands around the backup.
//!
//! Sendense does not control these exports' change tracking, so every backup is full — a delta
//! against a bitmap Sendense did not start could silently miss writes.
//!
//! Hooks are argument vectors, executed without a shell (no injection through VM names or
//! arguments), with `SENDENSE_VM`, `SENDENSE_JOB` and `SENDENSE_PHASE` (`pre` or `post`, and
//! `SENDENSE_RESULT` = `success`/`failure` after) in the environment, a timeout, and their
//! output in the job log. A failing pre-hook aborts the backup before anything is read.

use super::{CheckpointState, DiscoveredDisk, SnapshotDisk, SnapshotRequest, Source, SourceHost};
use crate::catalog::{DiskRecord, VmRecord};
use crate::error::{Error, ErrorKind, Result};
use crate::nbd::NbdUrl;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Existing NBD exports.
#[derive(Debug)]
pub struct NbdSource {
    vm: String,
    disks: Vec<(String, u64)>,
    pre_hook: Option<Vec<String>>,
    post_hook: Option<Vec<String>>,
    timeout: Duration,
    active: Option<i64>,
}

const FULL_ONLY: &str = "nbd source: Sendense does not manage change tracking on external exports, so every backup is full";

impl NbdSource {
    /// From a registered VM's source options (`{"pre_hook": [...], "post_hook": [...]}`).
    pub fn from_options(vm: &VmRecord, timeout: Duration) -> Result<Self> {
        let argv = |key: &str| -> Option<Vec<String>> {
            vm.source_options[key].as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
        };
        Ok(NbdSource {
            vm: vm.name.clone(),
            disks: vm
                .disks
                .iter()
                .map(|d| (d.identity.clone(), d.size_bytes))
                .collect(),
            pre_hook: argv("pre_hook"),
            post_hook: argv("post_hook"),
            timeout,
            active: None,
        })
    }

    fn hook(
        &self,
        host: &mut dyn SourceHost,
        argv: &[String],
        job: i64,
        phase: &str,
        result: Option<&str>,
    ) -> Result<()> {
        let (program, args) = argv.split_first().ok_or_else(|| {
            Error::invalid(format!("the {phase}-hook of VM `{}` is empty", self.vm))
        })?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("SENDENSE_VM", &self.vm)
            .env("SENDENSE_JOB", job.to_string())
            .env("SENDENSE_PHASE", phase)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(r) = result {
            cmd.env("SENDENSE_RESULT", r);
        }
        host.log(&format!("{phase}-hook: {}", argv.join(" ")));
        let label = format!("{phase}-hook of VM {}", self.vm);
        let out = run_with_timeout(cmd, &label, self.timeout, host.ledger().as_ref())
            .map_err(|e| e.context(format!("{phase}-hook `{program}`")))?;
        for line in out.output.lines() {
            host.log(&format!("{phase}-hook: {line}"));
        }
        if out.timed_out {
            return Err(Error::new(
                ErrorKind::External,
                format!(
                    "{phase}-hook `{program}` did not finish within {}s and was killed",
                    self.timeout.as_secs()
                ),
            ));
        }
        if !out.success {
            return Err(Error::new(
                ErrorKind::External,
                format!(
                    "{phase}-hook `{program}` failed ({}): {}",
                    out.status,
                    out.output.trim()
                ),
            )
            .with_help("Fix the hook command or its environment; nothing was backed up."));
        }
        Ok(())
    }
}

struct HookOutput {
    success: bool,
    status: String,
    timed_out: bool,
    output: String,
}

/// Runs a hook, [`crate::supervise::Supervised`]: in a process group of its own that is killed
/// on timeout (with whatever the hook started), and that dies with Sendense.
fn run_with_timeout(
    cmd: Command,
    label: &str,
    timeout: Duration,
    ledger: Option<&crate::supervise::Ledger>,
) -> Result<HookOutput> {
    let mut hook = crate::supervise::Supervised::spawn(
        cmd,
        crate::supervise::ChildKind::Hook,
        label,
        Duration::from_secs(5),
        ledger,
    )
    .map_err(|e| Error::new(ErrorKind::External, e.message().to_string()))?;
    let (stdout, stderr) = match hook.child() {
        Some(c) => (c.stdout.take(), c.stderr.take()),
        None => (None, None),
    };
    let readers = [read_all(stdout), read_all(stderr)];
    // Whatever it left running in its group goes with it either way.
    let (status, timed_out) = if hook.exited_within(timeout) {
        (hook.wait().ok(), false)
    } else {
        (hook.stop(), true)
    };
    let mut output = String::new();
    for r in readers {
        output.push_str(&r.join().unwrap_or_default());
    }
    Ok(HookOutput {
        success: status.is_some_and(|s| s.success()) && !timed_out,
        status: status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "killed".into()),
        timed_out,
        output,
    })
}

/// Reads a pipe to its end on a thread of its own.
fn read_all<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// Splits a hook command line into arguments: whitespace separates, single and double quotes
/// group, backslash escapes. No shell is involved, so nothing else is special.
pub fn split_command(line: &str) -> Result<Vec<String>> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                let n = chars.next().ok_or_else(|| {
                    Error::invalid(format!("hook `{line}` ends with a backslash"))
                })?;
                cur.push(n);
                in_arg = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_arg = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_arg = true;
            }
        }
    }
    if quote.is_some() {
        return Err(Error::invalid(format!(
            "hook `{line}` has an unclosed quote"
        )));
    }
    if in_arg {
        args.push(cur);
    }
    if args.is_empty() {
        return Err(Error::invalid("a hook command must not be empty"));
    }
    Ok(args)
}

impl Source for NbdSource {
    fn kind(&self) -> &'static str {
        "nbd"
    }

    fn discover(&mut self) -> Result<Vec<DiscoveredDisk>> {
        Ok(self
            .disks
            .iter()
            .map(|(url, size)| DiscoveredDisk {
                identity: url.clone(),
                format: None,
                size_bytes: *size,
                detail: String::new(),
                key: None,
            })
            .collect())
    }

    fn checkpoints(&mut self, disks: &[DiskRecord]) -> Result<Vec<CheckpointState>> {
        Ok(disks
            .iter()
            .map(|_| CheckpointState::Unsupported(FULL_ONLY.into()))
            .collect())
    }

    fn snapshot(
        &mut self,
        host: &mut dyn SourceHost,
        req: &SnapshotRequest,
    ) -> Result<Vec<SnapshotDisk>> {
        self.active = Some(req.job);
        if let Some(pre) = self.pre_hook.clone() {
            self.hook(host, &pre, req.job, "pre", None)?;
        }
        req.disks
            .iter()
            .map(|d| {
                let url: NbdUrl = d.identity.parse()?;
                let size = self
                    .disks
                    .iter()
                    .find(|(u, _)| u == &d.identity)
                    .map(|(_, s)| *s)
                    .unwrap_or(0);
                Ok(SnapshotDisk {
                    key: d.key,
                    url,
                    size_bytes: size,
                    bitmap: None,
                    extents: None,
                    checkpoint: None,
                })
            })
            .collect()
    }

    fn finish(&mut self, host: &mut dyn SourceHost, success: bool) -> Result<()> {
        let Some(job) = self.active.take() else {
            return Ok(());
        };
        if let Some(post) = self.post_hook.clone() {
            self.hook(
                host,
                &post,
                job,
                "post",
                Some(if success { "success" } else { "failure" }),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_is_shell_like_without_a_shell() {
        let ok = [
            ("fsfreeze --vm a", vec!["fsfreeze", "--vm", "a"]),
            (
                "  a   'b c'  \"d e\" f\\ g ",
                vec!["a", "b c", "d e", "f g"],
            ),
            ("echo '$(rm -rf /)' ;", vec!["echo", "$(rm -rf /)", ";"]),
            ("x \"a\\\"b\"", vec!["x", "a\"b"]),
            ("e ''", vec!["e", ""]),
        ];
        for (line, want) in ok {
            assert_eq!(split_command(line).unwrap(), want, "{line}");
        }
        for bad in ["", "   ", "a 'b", "a \\"] {
            assert!(split_command(bad).is_err(), "{bad:?}");
        }
    }
}
