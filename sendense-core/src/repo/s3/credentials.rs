//! The keys of an S3 repository, never in argv, logs or JSON: from a credentials file named at
//! `repo add` (AWS's INI format, a `[default]` or named profile, or bare `key = value` lines),
//! else from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), else from the usual AWS profile files (`AWS_SHARED_CREDENTIALS_FILE` or
//! `~/.aws/credentials`, profile `AWS_PROFILE` or `default`). A credentials file others may read
//! is refused, as ssh refuses such a key.

use crate::error::{Error, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An access key pair (and session token). Its Debug shows the key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Keys {
    /// The access key id.
    pub access_key: String,
    /// The secret.
    pub secret_key: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
    /// Where they came from, for messages: a file, or `the environment`.
    pub source: String,
}

impl std::fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Keys")
            .field("access_key", &self.access_key)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Where to look: the file named at `repo add` (with its profile), or nothing.
pub fn resolve(file: Option<&Path>, profile: Option<&str>) -> Result<S3Keys> {
    resolve_with(file, profile, &|name| std::env::var(name).ok())
}

fn resolve_with(
    file: Option<&Path>,
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<S3Keys> {
    if let Some(file) = file {
        return from_file(file, profile.unwrap_or("default"));
    }
    if let (Some(access_key), Some(secret_key)) =
        (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok(S3Keys {
            access_key,
            secret_key,
            session_token: env("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
            source: "the environment".into(),
        });
    }
    let shared = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")));
    let profile = profile
        .map(str::to_string)
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    match shared {
        Some(path) if path.exists() => from_file(&path, &profile),
        _ => Err(Error::invalid("no S3 credentials found").with_help(
            "Name a credentials file with --credentials-file (0600: `[default]`, \
             aws_access_key_id = ..., aws_secret_access_key = ...), or set \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with \
             ~/.aws/credentials.",
        )),
    }
}

/// The keys of `profile` in `path` (a file without sections is one profile).
fn from_file(path: &Path, profile: &str) -> Result<S3Keys> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
    if meta.mode() & 0o077 != 0 {
        return Err(Error::refused(format!(
            "the credentials file {} may be read by others (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        ))
        .with_help(format!("Run `chmod 600 {}`.", path.display())));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    let mut section: Option<String> = None;
    let mut sections = false;
    let (mut access, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections = true;
            let name = name.trim();
            section = Some(
                name.strip_prefix("profile ")
                    .unwrap_or(name)
                    .trim()
                    .to_string(),
            );
            continue;
        }
        if sections && section.as_deref() != Some(profile) {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" | "access_key" | "access_key_id" => access = Some(v),
            "aws_secret_access_key" | "secret_key" | "secret_access_key" => secret = Some(v),
            "aws_session_token" | "session_token" => token = Some(v),
            _ => {}
        }
    }
    match (access, secret) {
        (Some(access_key), Some(secret_key))
            if !access_key.is_empty() && !secret_key.is_empty() =>
        {
            Ok(S3Keys {
                access_key,
                secret_key,
                session_token: token.filter(|t| !t.is_empty()),
                source: path.display().to_string(),
            })
        }
        _ => Err(Error::invalid(format!(
            "{} has no aws_access_key_id and aws_secret_access_key{}",
            path.display(),
            if sections {
                format!(" in profile [{profile}]")
            } else {
                String::new()
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn keys_come_from_the_file_the_environment_or_the_profile_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ini = write(
            d,
            "creds",
            "# keys\n[default]\naws_access_key_id = AK1\naws_secret_access_key = sekrit-one\n\
             [profile offsite]\naws_access_key_id=AK2\naws_secret_access_key=s2\naws_session_token=t2\n",
            0o600,
        );
        let none = |_: &str| None;
        let k = resolve_with(Some(&ini), None, &none).unwrap();
        assert_eq!(
            (k.access_key.as_str(), k.secret_key.as_str()),
            ("AK1", "sekrit-one")
        );
        let k = resolve_with(Some(&ini), Some("offsite"), &none).unwrap();
        assert_eq!(
            (k.access_key.as_str(), k.session_token.as_deref()),
            ("AK2", Some("t2"))
        );
        assert!(resolve_with(Some(&ini), Some("nope"), &none).is_err());
        let bare = write(d, "bare", "access_key=AK3\nsecret_key=s3\n", 0o400);
        assert_eq!(
            resolve_with(Some(&bare), None, &none).unwrap().access_key,
            "AK3"
        );
        // Readable by others: refused, and the secret is in no message.
        let open = write(d, "open", "access_key=AK4\nsecret_key=hunter2\n", 0o644);
        let e = resolve_with(Some(&open), None, &none).unwrap_err();
        assert!(e.to_string().contains("read by others"), "{e}");
        assert!(!format!("{e:?}").contains("hunter2"));
        // The environment, then the shared file and profile.
        let env = |n: &str| match n {
            "AWS_ACCESS_KEY_ID" => Some("AKE".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("se".to_string()),
            _ => None,
        };
        assert_eq!(
            resolve_with(None, None, &env).unwrap().source,
            "the environment"
        );
        let shared = ini.display().to_string();
        let env = |n: &str| match n {
            "AWS_SHARED_CREDENTIALS_FILE" => Some(shared.clone()),
            "AWS_PROFILE" => Some("offsite".to_string()),
            _ => None,
        };
        assert_eq!(resolve_with(None, None, &env).unwrap().access_key, "AK2");
        assert!(resolve_with(None, None, &none).is_err());
        let k = resolve_with(Some(&ini), None, &none).unwrap();
        assert!(!format!("{k:?}").contains("sekrit-one"));
    }
}
