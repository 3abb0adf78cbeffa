//! External programs Sendense drives (qemu-img, qemu-nbd, ...).
//!
//! Every call goes through [`run`], which turns "not installed" into an error that names the
//! Debian package to install and "exited non-zero" into an error that carries the tool's stderr.
//! Arguments are passed as a vector, never through a shell.

pub mod qemu_img;

use crate::error::{Error, ErrorKind, Result};
use std::ffi::OsStr;
use std::process::{Command, Output};

/// An external program and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// Program name, looked up in `$PATH`.
    pub program: &'static str,
    /// Debian package that installs it.
    pub package: &'static str,
}

/// `qemu-img` from qemu-utils.
pub const QEMU_IMG: Tool = Tool {
    program: "qemu-img",
    package: "qemu-utils",
};

impl Tool {
    /// A `Command` for this tool.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.program);
        cmd.env("LC_ALL", "C");
        cmd
    }

    /// The error for "this tool is not installed".
    pub fn missing(&self) -> Error {
        Error::new(
            ErrorKind::MissingTool,
            format!("`{}` is not installed or not in PATH", self.program),
        )
        .with_help(format!(
            "Install the Debian package `{}` (apt-get install {}).",
            self.package, self.package
        ))
    }
}

/// Runs `tool` with `args` and returns its output; a non-zero exit is an error. The tool dies
/// with the calling thread ([`crate::supervise::die_with_parent`]): killed with Sendense, it
/// cannot create a file after the reconciliation looked for it.
pub fn run<I, S>(tool: Tool, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tool.command();
    cmd.args(args);
    crate::supervise::die_with_parent(&mut cmd);
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            tool.missing()
        } else {
            Error::new(
                ErrorKind::External,
                format!("cannot run `{}`: {e}", tool.program),
            )
            .with_source(e)
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr.trim();
        return Err(Error::new(
            ErrorKind::External,
            format!(
                "`{}` failed ({}): {}",
                tool.program,
                out.status,
                if detail.is_empty() {
                    "no output"
                } else {
                    detail
                }
            ),
        ));
    }
    Ok(out)
}
