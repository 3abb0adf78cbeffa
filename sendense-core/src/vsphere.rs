//! VMware vSphere: a small client of the vSphere Web Services API (SOAP over HTTPS with a
//! pinned certificate) for the calls Sendense needs.

pub mod https;
pub mod inventory;
pub mod ops;
pub mod soap;

pub use https::{parse_thumbprint, Pin};
pub use inventory::{VmDisk, VmInfo};
pub use soap::{About, MoRef, ServiceContent, Vim};

use crate::error::{Error, Result};

/// Where a vCenter's API is: `https://HOST[:PORT]/PATH` (the path is `/sdk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcenterUrl {
    /// Host name or address.
    pub host: String,
    /// Port (443).
    pub port: u16,
    /// Path (`/sdk`).
    pub path: String,
}

impl VcenterUrl {
    /// Parses `https://HOST[:PORT][/PATH]` (`[v6addr]` for IPv6); the path defaults to `/sdk`.
    pub fn parse(text: &str) -> Result<VcenterUrl> {
        let bad = || {
            Error::invalid(format!("--url `{text}` is not https://HOST[:PORT]/sdk"))
                .with_help("For example --url https://vcenter.example.com/sdk.")
        };
        let rest = text.strip_prefix("https://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/sdk"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (h, p.parse().map_err(|_| bad())?),
                None if after.is_empty() => (h, 443),
                None => return Err(bad()),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (authority, 443),
            }
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
        let path_ok = path.starts_with('/')
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c));
        if !host_ok || !path_ok || port == 0 {
            return Err(bad());
        }
        Ok(VcenterUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// As `https://HOST:PORT/PATH`.
    pub fn text(&self) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("https://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// A logged-in session with the vCenter at `url` (`https://HOST[:PORT]/sdk`) whose certificate
/// must have `thumbprint`, as `user`; `what` names it in messages (`vCenter \`vc1\``).
pub fn login(
    what: &str,
    url: &str,
    thumbprint: &str,
    user: &str,
    password: &str,
) -> crate::error::Result<(Vim, ServiceContent)> {
    let url = VcenterUrl::parse(url)?;
    let vim = Vim::new(
        what,
        &url.host,
        url.port,
        &url.path,
        Pin::Thumbprint(thumbprint.to_string()),
    );
    let content = vim.service_content()?;
    vim.login(&content, user, password)?;
    Ok((vim, content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_with_a_plain_host() {
        let u = VcenterUrl::parse("https://vc.example.com/sdk").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("vc.example.com", 443, "/sdk")
        );
        let u = VcenterUrl::parse("https://127.0.0.1:8989").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8989, "/sdk"));
        let u = VcenterUrl::parse("https://[::1]:443/sdk").unwrap();
        assert_eq!(u.text(), "https://[::1]:443/sdk");
        for bad in [
            "http://vc/sdk",
            "https://",
            "https://vc:0/sdk",
            "https://vc:x/sdk",
            "https://user@vc/sdk",
            "https://vc/sdk?x=1",
            "https://v c/sdk",
        ] {
            assert!(VcenterUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
