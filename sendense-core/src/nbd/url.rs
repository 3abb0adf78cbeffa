//! NBD URLs: `nbd://host[:port]/export` and `nbd+unix:///export?socket=PATH`.

use crate::error::{Error, Result};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The default NBD TCP port.
pub const DEFAULT_PORT: u16 = 10809;

/// Where an NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// TCP host (name or address) and port.
    Tcp {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix domain socket.
    Unix(PathBuf),
}

/// An NBD export address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NbdUrl {
    /// The server.
    pub endpoint: Endpoint,
    /// The export name (may be empty: the default export).
    pub export: String,
}

impl NbdUrl {
    /// A TCP URL.
    pub fn tcp(host: impl Into<String>, port: u16, export: impl Into<String>) -> NbdUrl {
        NbdUrl {
            endpoint: Endpoint::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
        }
    }

    /// A Unix-socket URL.
    pub fn unix(socket: impl Into<PathBuf>, export: impl Into<String>) -> NbdUrl {
        NbdUrl {
            endpoint: Endpoint::Unix(socket.into()),
            export: export.into(),
        }
    }
}

fn invalid(url: &str, why: &str) -> Error {
    Error::invalid(format!("invalid NBD URL `{url}`: {why}"))
        .with_help("Use nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=/path/to/socket.")
}

fn percent_decode(url: &str, s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid(url, "bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(url, "export name is not UTF-8"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FromStr for NbdUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<NbdUrl> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid(url, "missing scheme"))?;
        let (before_query, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i + 1..]),
            None => (before_query, ""),
        };
        let export = percent_decode(url, path)?;
        match scheme {
            "nbd" => {
                if query.is_some() {
                    return Err(invalid(url, "nbd:// URLs take no query"));
                }
                let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
                    let (h, after) = v6
                        .split_once(']')
                        .ok_or_else(|| invalid(url, "unclosed `[` in host"))?;
                    (h, after.strip_prefix(':'))
                } else {
                    match authority.rsplit_once(':') {
                        Some((h, p)) => (h, Some(p)),
                        None => (authority, None),
                    }
                };
                if host.is_empty() {
                    return Err(invalid(url, "missing host"));
                }
                let port = match port {
                    Some(p) => p
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| invalid(url, "port must be 1..65535"))?,
                    None => DEFAULT_PORT,
                };
                Ok(NbdUrl::tcp(host, port, export))
            }
            "nbd+unix" => {
                if !authority.is_empty() {
                    return Err(invalid(
                        url,
                        "nbd+unix URLs have no host (use three slashes)",
                    ));
                }
                let socket = query
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .find_map(|kv| kv.strip_prefix("socket="))
                    .ok_or_else(|| invalid(url, "missing ?socket=PATH"))?;
                let socket = percent_decode(url, socket)?;
                if socket.is_empty() {
                    return Err(invalid(url, "empty socket path"));
                }
                Ok(NbdUrl::unix(socket, export))
            }
            "nbds" | "nbds+unix" => Err(invalid(url, "TLS is not supported")),
            _ => Err(invalid(url, "scheme must be nbd or nbd+unix")),
        }
    }
}

impl fmt::Display for NbdUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let export = percent_encode(&self.export);
        match &self.endpoint {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "nbd://[{host}]:{port}/{export}")
            }
            Endpoint::Tcp { host, port } => write!(f, "nbd://{host}:{port}/{export}"),
            Endpoint::Unix(path) => write!(
                f,
                "nbd+unix:///{export}?socket={}",
                percent_encode(&path.to_string_lossy()).replace("%2F", "/")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let cases = [
            (
                "nbd://127.0.0.1:10100/pgtest1-disk-2000",
                NbdUrl::tcp("127.0.0.1", 10100, "pgtest1-disk-2000"),
            ),
            ("nbd://localhost/", NbdUrl::tcp("localhost", 10809, "")),
            ("nbd://[::1]:99/a%20b", NbdUrl::tcp("::1", 99, "a b")),
            (
                "nbd+unix:///disk?socket=/tmp/x.sock",
                NbdUrl::unix("/tmp/x.sock", "disk"),
            ),
            (
                "nbd+unix:///?socket=/run/a%20b.sock",
                NbdUrl::unix("/run/a b.sock", ""),
            ),
        ];
        for (text, want) in cases {
            let got: NbdUrl = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            let again: NbdUrl = got.to_string().parse().unwrap();
            assert_eq!(again, want, "{text} -> {got}");
        }
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "127.0.0.1:10809",
            "http://x/y",
            "nbd:///x",
            "nbd://h:0/x",
            "nbd://h:99999/x",
            "nbd+unix:///x",
            "nbd+unix://host/x?socket=/s",
            "nbd://h/%zz",
            "nbds://h/x",
        ] {
            let err = bad.parse::<NbdUrl>().unwrap_err();
            assert!(err.message().contains(bad), "{bad}: {}", err.message());
        }
    }
}
