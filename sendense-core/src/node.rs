//! Remote nodes: `sendense-sna` on a hypervisor host, driven by the hub over SSH.
//!
//! The first thing the hub asks a node is who it is: `sendense-sna hello` prints a [`Hello`]
//! — its version and the protocols it speaks. A node of another version is refused with the
//! way to fix it (`sendense node install`): both sides of a backup must agree on every
//! message, and the simplest rule that guarantees it is one version everywhere.

pub mod ssh;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// What `sendense-sna hello` prints: who the node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The `sendense-sna` package version.
    pub version: String,
    /// The transfer protocol it speaks ([`crate::backup::node::PROTOCOL`]).
    pub node_protocol: u32,
    /// The source session protocol it speaks ([`crate::source::node::SOURCE_PROTOCOL`]).
    pub source_protocol: u32,
}

impl Hello {
    /// This build's answer.
    pub fn this() -> Hello {
        Hello {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_protocol: crate::backup::node::PROTOCOL,
            source_protocol: crate::source::node::SOURCE_PROTOCOL,
        }
    }

    /// Reads a node's answer (untrusted input: a node that answers something else is named).
    pub fn parse(node: &str, text: &str) -> Result<Hello> {
        serde_json::from_str(text.trim()).map_err(|e| {
            Error::new(
                crate::ErrorKind::Protocol,
                format!(
                    "node `{node}`: `sendense-sna hello` did not answer as sendense-sna does ({e})"
                ),
            )
            .with_help(format!(
                "Install this hub's sendense-sna on the node: `sendense node install {node}`."
            ))
        })
    }

    /// Refuses a node whose `sendense-sna` is not this hub's version.
    pub fn check(&self, node: &str) -> Result<()> {
        let hub = Hello::this();
        if *self == hub {
            return Ok(());
        }
        Err(Error::refused(format!(
            "node `{node}` runs sendense-sna {} (node protocol {}, source protocol {}), this hub is {} (node protocol {}, source protocol {})",
            self.version,
            self.node_protocol,
            self.source_protocol,
            hub.version,
            hub.node_protocol,
            hub.source_protocol
        ))
        .with_help(format!(
            "Copy this hub's sendense-sna to the node: `sendense node install {node}`."
        )))
    }
}

/// Checks a path of `sendense-sna` on a node (it goes into a command line there): letters,
/// digits and `/ . _ -`, no part starting with `-`, `~/` only in front (the account's home).
pub fn check_sna_path(sna: &str) -> Result<()> {
    let rest = sna.strip_prefix("~/").unwrap_or(sna);
    let ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
        && !rest.split('/').any(|part| part.starts_with('-'));
    if ok {
        Ok(())
    } else {
        Err(
            Error::invalid(format!("`{sna}` is not a plain path for sendense-sna")).with_help(
                "Letters, digits and / . _ - only, no part starting with -, ~/ only in front.",
            ),
        )
    }
}

/// `sna` (checked by [`check_sna_path`]) as a word of a shell command line on the node:
/// quoted, `~/` as the account's home.
pub fn shell_word(sna: &str) -> String {
    match sna.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/'{rest}'"),
        None => format!("'{sna}'"),
    }
}

/// The subcommands a hub runs on a node.
const NODE_SUBCOMMANDS: &[&str] = &["hello", "source", "transfer", "send-test"];

/// For `sendense-sna ssh-command` (an `authorized_keys` `command=`): the arguments of the
/// command line the hub asked for (`SSH_ORIGINAL_COMMAND`), when it is `sendense-sna` with one of
/// its node subcommands (`[--json] hello | source | transfer | send-test PORT BYTES`) and nothing
/// else; an error naming it otherwise.
pub fn node_command(original: &str) -> Result<Vec<String>> {
    let refused = || {
        Error::refused(format!(
            "this node account runs only sendense-sna's node commands, not `{original}`"
        ))
        .with_help(
            "Its authorized_keys entry has command=\"... sendense-sna ssh-command\". Install or \
             upgrade sendense-sna on the node by hand (or lift the restriction while `sendense \
             node install` runs).",
        )
    };
    let mut words = Vec::new();
    let (mut word, mut quote, mut started) = (String::new(), None, false);
    for c in original.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if quote.is_some() {
        return Err(refused());
    }
    if started {
        words.push(word);
    }
    let Some((program, args)) = words.split_first() else {
        return Err(refused());
    };
    if program.rsplit('/').next() != Some("sendense-sna") {
        return Err(refused());
    }
    let rest = match args.first().map(String::as_str) {
        Some("--json") => &args[1..],
        _ => args,
    };
    let fits = match rest {
        [sub] => NODE_SUBCOMMANDS.contains(&sub.as_str()) && sub != "send-test",
        [sub, port, bytes] => {
            sub == "send-test" && port.parse::<u16>().is_ok() && bytes.parse::<u64>().is_ok()
        }
        _ => false,
    };
    if !fits {
        return Err(refused());
    }
    Ok(args.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restricted_node_runs_only_sendense_sna_s_node_commands() {
        let path = shell_word("/opt/sendense/sendense-sna");
        let home = shell_word("~/.local/lib/sendense/sendense-sna");
        for (asked, args) in [
            (format!("{path} hello"), vec!["hello"]),
            (
                format!("{home} --json transfer"),
                vec!["--json", "transfer"],
            ),
            (format!("{path} source"), vec!["source"]),
            (
                format!("{path} send-test 4000 1024"),
                vec!["send-test", "4000", "1024"],
            ),
        ] {
            assert_eq!(node_command(&asked).unwrap(), args, "{asked}");
        }
        for bad in [
            "",
            "sh -c id",
            "'/bin/sh' hello",
            &format!("{path} hello; id"),
            &format!("{path} copy nbd://a nbd://b"),
            &format!("{path} send-test 1 x"),
            &format!("{path} source extra"),
            &format!("{path} 'hello"),
            "mktemp /tmp/x",
        ] {
            let err = node_command(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Refused, "{bad}");
        }
    }

    #[test]
    fn node_paths_are_plain_and_quoted() {
        for ok in [
            "sendense-sna",
            "/opt/sendense/sendense-sna",
            "~/bin/sendense-sna",
            ".local/x",
        ] {
            assert!(check_sna_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "~", "~root/x", "a b", "x;rm", "$(x)", "-x", "/tmp/-rf", "a'b", "a~b",
        ] {
            assert!(check_sna_path(bad).is_err(), "{bad}");
        }
        assert_eq!(shell_word("/opt/s"), "'/opt/s'");
        assert_eq!(shell_word("~/bin/s"), "\"$HOME\"/'bin/s'");
    }

    #[test]
    fn another_version_is_refused_with_the_way_to_fix_it() {
        let this = Hello::this();
        assert!(this.check("n1").is_ok());
        let older = Hello {
            version: "0.0.1".into(),
            ..this.clone()
        };
        let e = older.check("n1").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Refused);
        assert!(e.message().contains("0.0.1") && e.message().contains(&this.version));
        assert!(e.help().unwrap().contains("sendense node install n1"));
        let e = Hello::parse("n1", "bash: sendense-sna: command not found").unwrap_err();
        assert!(e.help().unwrap().contains("node install"));
        let text = serde_json::to_string(&this).unwrap();
        assert_eq!(Hello::parse("n1", &text).unwrap(), this);
    }
}
