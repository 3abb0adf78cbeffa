//! Where an S3 repository is: `https://ENDPOINT/BUCKET[/PREFIX]`, as `repo add --s3` takes it.
//!
//! The endpoint is a scheme and a host (with a port); the bucket must be a valid S3 bucket name;
//! the prefix is a `/`-separated key prefix of plain segments — no empty, `.` or `..` segment,
//! nothing a key could be made to climb out of.

use crate::error::{Error, Result};

/// An S3 repository's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `https://host[:port]` (or `http://` for a server on loopback).
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (empty: the bucket's root).
    pub prefix: String,
}

impl S3Location {
    /// Parses `https://ENDPOINT/BUCKET[/PREFIX]`.
    pub fn parse(url: &str) -> Result<S3Location> {
        let bad = |why: &str| {
            Error::invalid(format!("{url:?} is not an S3 repository address: {why}"))
                .with_help("Give it as https://ENDPOINT/BUCKET or https://ENDPOINT/BUCKET/PREFIX.")
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("it has no scheme"))?;
        if scheme != "https" && scheme != "http" {
            return Err(bad("the scheme must be https (or http)"));
        }
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it names no bucket"))?;
        if host.is_empty()
            || host.contains(['@', '?', '#', ' '])
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        {
            return Err(bad(
                "the endpoint must be a host name or address, with a port",
            ));
        }
        if scheme == "http" && !is_loopback(host) {
            return Err(bad(
                "plain http is taken only for a server on this host (127.0.0.1, [::1], localhost)",
            ));
        }
        if path.contains(['?', '#', '\\']) {
            return Err(bad("it may not have a query, a fragment or backslashes"));
        }
        let path = path.trim_end_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        check_bucket(bucket).map_err(|why| bad(&why))?;
        for segment in prefix.split('/').filter(|_| !prefix.is_empty()) {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(bad("the prefix has an empty, `.` or `..` segment"));
            }
            if segment.chars().any(char::is_control) {
                return Err(bad("the prefix has a control character"));
            }
        }
        Ok(S3Location {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The key of `rel` (a `/`-separated relative name) in the repository.
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// The repository's own prefix for listings: `PREFIX/`, or empty.
    pub fn list_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.endpoint, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(h, port)| !h.ends_with(':') && port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    matches!(name, "localhost" | "[::1]")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// S3's bucket naming rules (the DNS-compatible ones every service accepts).
fn check_bucket(b: &str) -> std::result::Result<(), String> {
    if !(3..=63).contains(&b.len()) {
        return Err("a bucket name has 3 to 63 characters".into());
    }
    if !b
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err("a bucket name has lowercase letters, digits, `-` and `.` only".into());
    }
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !ends_ok(b.chars().next()) || !ends_ok(b.chars().last()) || b.contains("..") {
        return Err("a bucket name begins and ends with a letter or digit".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_parsed_and_checked() {
        let l = S3Location::parse("https://s3.example.com/backups/site-a/hub1/").unwrap();
        assert_eq!(l.endpoint, "https://s3.example.com");
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("backups", "site-a/hub1")
        );
        assert_eq!(l.key("pg/2000/x.qcow2"), "site-a/hub1/pg/2000/x.qcow2");
        assert_eq!(l.to_string(), "https://s3.example.com/backups/site-a/hub1");
        let l = S3Location::parse("http://127.0.0.1:7480/bkt").unwrap();
        assert_eq!(
            (l.endpoint.as_str(), l.prefix.as_str()),
            ("http://127.0.0.1:7480", "")
        );
        assert_eq!(l.key("a"), "a");
        for bad in [
            "s3.example.com/b",
            "ftp://h/bucket",
            "https://h",
            "https://h/",
            "https://h/Bucket",
            "https://h/ab",
            "https://h/-bucket",
            "https://h/bucket/../x",
            "https://h/bucket/a//b",
            "https://h/bucket/a?x=1",
            "https://user@h/bucket",
            "http://s3.example.com/bucket",
            "http://127.0.0.1.evil.com/bucket",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
        assert!(S3Location::parse("http://[::1]:80/bucket").is_ok());
        assert!(S3Location::parse("http://localhost:9000/bucket").is_ok());
    }
}
