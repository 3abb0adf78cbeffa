//! The one public error type of Sendense.
//!
//! Rules for every error that leaves the core:
//!
//! 1. It has a [`ErrorKind`]. Frontends map kinds to exit codes in one place; the kind is what a
//!    script can rely on, the message is for people.
//! 2. The message names the input that was wrong (the VM, the repository, the path, the config key
//!    and its line) in words an operator recognises.
//! 3. Where there is something to do about it, [`Error::help`] says what, as a complete sentence.
//! 4. The underlying cause (an `io::Error`, an SQLite error, a tool's stderr) is kept as the
//!    [`std::error::Error::source`], never glued into the message twice.
//! 5. No `unwrap`, `expect` or panics outside tests: a bad input or a failing tool is an `Error`.
//!
//! Modules build [`Error`]s directly with the kind that fits (`Error::not_found`, `Error::new`,
//! ...) and add context at each boundary ([`Error::context`]), so one type carries the message,
//! the kind and the help from the failing tool call up to the frontend.

use std::fmt;

/// What class of failure happened. Stable: frontends derive exit codes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A named thing (VM, repository, backup, job, disk key) does not exist.
    NotFound,
    /// Something with that name or identity exists already.
    AlreadyExists,
    /// A lock is held or a resource is in use (a running backup, ports exhausted).
    Busy,
    /// The operation is refused because it would lose data or break a rule.
    Refused,
    /// An argument or input value is invalid.
    InvalidInput,
    /// The configuration file is invalid.
    Config,
    /// A required external program is not installed.
    MissingTool,
    /// An external program (qemu-img, qemu-nbd, a hook) failed.
    External,
    /// Reading or writing the filesystem failed.
    Io,
    /// The catalog database failed.
    Catalog,
    /// A peer spoke the protocol wrongly or the connection broke.
    Protocol,
    /// The operation was cancelled (Ctrl-C, `job cancel`).
    Cancelled,
    /// Some parts succeeded and others failed.
    PartiallyFailed,
    /// A bug in Sendense: a state that should be impossible.
    Internal,
}

/// The documented exit codes of the `sendense` and `sendense-sna` commands (EXIT STATUS in
/// `man sendense`), for frontends and scripts alike.
pub mod exit {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// Failed: an external tool, I/O, the catalog or a peer failed; damage was found.
    pub const FAILED: u8 = 1;
    /// Usage error: bad arguments, an invalid name, an invalid config file.
    pub const USAGE: u8 = 2;
    /// Partly failed: some parts succeeded and others did not.
    pub const PARTIAL: u8 = 3;
    /// Not found: the named VM, repository, backup, job or disk does not exist.
    pub const NOT_FOUND: u8 = 4;
    /// Busy, locked or refused.
    pub const REFUSED: u8 = 5;
    /// Interrupted or cancelled.
    pub const INTERRUPTED: u8 = 130;
}

impl ErrorKind {
    /// The exit code a command ends with on an error of this kind (see [`exit`]).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::NotFound => exit::NOT_FOUND,
            ErrorKind::AlreadyExists | ErrorKind::Busy | ErrorKind::Refused => exit::REFUSED,
            ErrorKind::InvalidInput | ErrorKind::Config => exit::USAGE,
            ErrorKind::PartiallyFailed => exit::PARTIAL,
            ErrorKind::Cancelled => exit::INTERRUPTED,
            ErrorKind::MissingTool
            | ErrorKind::External
            | ErrorKind::Io
            | ErrorKind::Catalog
            | ErrorKind::Protocol
            | ErrorKind::Internal => exit::FAILED,
        }
    }

    /// The stable, machine-readable code, e.g. `sendense::not_found`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "sendense::not_found",
            ErrorKind::AlreadyExists => "sendense::already_exists",
            ErrorKind::Busy => "sendense::busy",
            ErrorKind::Refused => "sendense::refused",
            ErrorKind::InvalidInput => "sendense::invalid_input",
            ErrorKind::Config => "sendense::config",
            ErrorKind::MissingTool => "sendense::missing_tool",
            ErrorKind::External => "sendense::external",
            ErrorKind::Io => "sendense::io",
            ErrorKind::Catalog => "sendense::catalog",
            ErrorKind::Protocol => "sendense::protocol",
            ErrorKind::Cancelled => "sendense::cancelled",
            ErrorKind::PartiallyFailed => "sendense::partially_failed",
            ErrorKind::Internal => "sendense::internal",
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error returned by every fallible operation of the Sendense core.
pub struct Error {
    kind: ErrorKind,
    message: String,
    help: Option<String>,
    source: Option<BoxError>,
}

/// `Result` with the Sendense [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a message for people.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            help: None,
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::AlreadyExists`].
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }

    /// Shorthand for [`ErrorKind::Refused`].
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Refused, message)
    }

    /// Shorthand for [`ErrorKind::Busy`].
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, message)
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An I/O failure on `path` while doing `what` ("creating", "reading", ...).
    pub fn io(what: &str, path: &std::path::Path, err: std::io::Error) -> Self {
        let kind = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        Error::new(kind, format!("{what} {}: {err}", path.display())).with_source(err)
    }

    /// Adds the text that tells the operator what to do.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Keeps the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Puts `context` in front of the message ("repository backup1: ...").
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable machine-readable code of the kind.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// What went wrong, naming the input.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do about it, when there is something to do.
    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(help) = &self.help {
            d.field("help", help);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        let busy = matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        if busy {
            Error::busy(format!("the catalog is locked by another process: {err}"))
                .with_help("Another sendense command holds the catalog for too long; retry when it has finished.")
                .with_source(err)
        } else if matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        ) {
            Error::new(ErrorKind::Catalog, format!("catalog error: {err}"))
                .with_help(
                    "The catalog file is damaged. `sendense doctor` checks it and says how to \
                     rebuild it from the repositories, which describe every backup themselves.",
                )
                .with_source(err)
        } else {
            Error::new(ErrorKind::Catalog, format!("catalog error: {err}")).with_source(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_namespaced() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::Busy,
            ErrorKind::Refused,
            ErrorKind::InvalidInput,
            ErrorKind::Config,
            ErrorKind::MissingTool,
            ErrorKind::External,
            ErrorKind::Io,
            ErrorKind::Catalog,
            ErrorKind::Protocol,
            ErrorKind::Cancelled,
            ErrorKind::PartiallyFailed,
            ErrorKind::Internal,
        ];
        let mut codes: Vec<_> = kinds.iter().map(|k| k.code()).collect();
        assert!(codes.iter().all(|c| c.starts_with("sendense::")));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
    }

    #[test]
    fn io_not_found_keeps_source_and_kind() {
        let err = Error::io(
            "reading",
            std::path::Path::new("/nope"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.message().contains("/nope"));
        assert!(std::error::Error::source(&err).is_some());
    }
}
