//! HTTPS to a vCenter: TLS (rustls, ring) whose server certificate is pinned by thumbprint —
//! as an SSH host key is: the SHA-1 fingerprint vSphere shows (`AA:BB:...`, 20 bytes) or a
//! SHA-256 one (32 bytes) — and a minimal HTTP/1.1 POST (one request per connection; a body by
//! `Content-Length` or chunked). Everything the server sends is bounded.

use crate::error::{Error, ErrorKind, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The largest response body taken (a property of a VM with many devices is kilobytes).
const MAX_BODY: usize = 64 << 20;

/// The longest header section taken.
const MAX_HEADERS: usize = 64 << 10;

/// Which server certificate to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// Only the one with this thumbprint (SHA-1 or SHA-256, colon-separated hex).
    Thumbprint(String),
    /// Whichever the server presents: it is reported, to be pinned (first contact, accepted
    /// explicitly by the operator).
    Accept,
    /// None: connect only to learn the server's thumbprint, and fail naming it.
    Show,
}

/// A thumbprint as `AA:BB:...`: upper-case hex pairs.
pub fn thumbprint_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Checks and normalises a thumbprint given by the operator: 20 or 32 bytes in hex, with or
/// without colons, any case.
pub fn parse_thumbprint(text: &str) -> Result<String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let ok = (hex.len() == 40 || hex.len() == 64) && hex.chars().all(|c| c.is_ascii_hexdigit());
    if !ok {
        return Err(Error::invalid(format!(
            "--thumbprint `{text}` is not a certificate thumbprint"
        ))
        .with_help("Give the SHA-1 thumbprint vSphere shows (AA:BB:... , 20 bytes) or a SHA-256 one (32 bytes)."));
    }
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    Ok(thumbprint_text(&bytes))
}

/// The thumbprints (SHA-1, SHA-256) of a certificate.
fn thumbprints(der: &[u8]) -> (String, String) {
    use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY, SHA256};
    (
        thumbprint_text(digest(&SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()),
        thumbprint_text(digest(&SHA256, der).as_ref()),
    )
}

/// Accepts the server certificate `pin` allows, and remembers the SHA-1 thumbprint seen.
#[derive(Debug)]
struct PinVerifier {
    pin: Pin,
    seen: Arc<Mutex<Option<String>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let (sha1, sha256) = thumbprints(end_entity.as_ref());
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(sha1.clone());
        }
        let ok = match &self.pin {
            Pin::Thumbprint(t) => *t == sha1 || *t == sha256,
            Pin::Accept => true,
            Pin::Show => false,
        };
        if ok {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the certificate is not the pinned one".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An HTTPS endpoint with a pinned certificate.
#[derive(Debug, Clone)]
pub struct Https {
    /// The SHA-1 thumbprint of the certificate seen last.
    seen: Arc<Mutex<Option<String>>>,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Which certificate to accept.
    pub pin: Pin,
    /// For messages (`vCenter `vc1``).
    pub what: String,
    /// Longest a request may take.
    pub timeout: Duration,
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (names in lower case).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The values of header `name` (lower case).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Https {
    /// An endpoint.
    pub fn new(host: &str, port: u16, pin: Pin, what: &str, timeout: Duration) -> Https {
        Https {
            seen: Arc::default(),
            host: host.to_string(),
            port,
            pin,
            what: what.to_string(),
            timeout,
        }
    }

    /// The SHA-1 thumbprint of the certificate the server presented last.
    pub fn seen(&self) -> Option<String> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }

    /// From now on, only the certificate seen last (after a first contact that accepted any).
    pub fn pin_seen(&mut self) {
        if let Some(t) = self.seen() {
            self.pin = Pin::Thumbprint(t);
        }
    }

    /// POSTs `body` to `path` with `headers`. The certificate is checked during the handshake,
    /// before anything is sent: one other than the pinned one fails naming both thumbprints.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response> {
        let what = &self.what;
        let failed = |e: std::io::Error| {
            Error::new(
                ErrorKind::External,
                format!("{what} ({}:{}): {e}", self.host, self.port),
            )
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = self.seen.clone();
        let verifier = PinVerifier {
            pin: self.pin.clone(),
            seen: seen.clone(),
            provider: provider.clone(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("TLS settings: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|_| {
            Error::invalid(format!("`{}` is not a host name or address", self.host))
        })?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| Error::internal(format!("TLS: {e}")))?;
        let addrs: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(&(self.host.as_str(), self.port))
                .map_err(failed)?
                .collect();
        let addr = addrs.first().ok_or_else(|| {
            failed(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name has no address",
            ))
        })?;
        let tcp = std::net::TcpStream::connect_timeout(addr, self.timeout).map_err(|e| {
            failed(e).with_help("Check the URL, and that the vCenter is reachable from here.")
        })?;
        tcp.set_read_timeout(Some(self.timeout)).map_err(failed)?;
        tcp.set_write_timeout(Some(self.timeout)).map_err(failed)?;
        let _ = tcp.set_nodelay(true);
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (n, v) in headers {
            request.push_str(&format!("{n}: {v}\r\n"));
        }
        request.push_str("\r\n");
        let sent = tls
            .write_all(request.as_bytes())
            .and_then(|()| tls.write_all(body))
            .and_then(|()| tls.flush());
        if let Err(e) = sent {
            return Err(self.handshake_error(&seen, e));
        }
        read_response(BufReader::new(tls)).map_err(|e| self.handshake_error(&seen, e))
    }

    /// The error for a failed exchange: a certificate other than the pinned one names both.
    fn handshake_error(&self, seen: &Mutex<Option<String>>, e: std::io::Error) -> Error {
        let seen = seen.lock().ok().and_then(|s| s.clone());
        let what = &self.what;
        let refused_cert = e.to_string().contains("not the pinned one");
        match (&self.pin, seen) {
            (Pin::Thumbprint(want), Some(got)) if refused_cert => Error::refused(format!(
                "{what} presented a certificate with thumbprint {got}, but {want} is pinned for it: this is not the vCenter that was added, or its certificate was replaced"
            ))
            .with_help("Nothing was sent. If the certificate was replaced on purpose, check its thumbprint in the vSphere client, then remove the vCenter and add it again with --thumbprint."),
            (Pin::Show, Some(got)) => Error::refused(format!(
                "{what} presented a certificate with thumbprint {got}, which is not pinned yet"
            ))
            .with_help(format!(
                "Check that thumbprint in the vSphere client (or `openssl x509 -fingerprint -sha1`), then add the vCenter with --thumbprint {got} (or --accept-certificate)."
            )),
            _ => Error::new(
                ErrorKind::External,
                format!("{what} ({}:{}): {e}", self.host, self.port),
            ),
        }
    }
}

/// Reads an HTTP/1.1 response: status line, headers, body (by length, chunked, or to the end).
fn read_response(mut r: impl BufRead) -> std::io::Result<Response> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut head = 0usize;
    let mut line = String::new();
    let mut next_line = |r: &mut dyn BufRead, line: &mut String| -> std::io::Result<()> {
        line.clear();
        let n = r
            .take((MAX_HEADERS - head.min(MAX_HEADERS)) as u64)
            .read_line(line)?;
        head += n;
        if n == 0 || !line.ends_with('\n') {
            return Err(bad("the response ended in its header"));
        }
        Ok(())
    };
    next_line(&mut r, &mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| bad("not an HTTP response"))?;
    let mut headers = Vec::new();
    loop {
        next_line(&mut r, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            r.by_ref().take(1024).read_line(&mut size_line)?;
            let size =
                usize::from_str_radix(size_line.trim().split(';').next().unwrap_or_default(), 16)
                    .map_err(|_| bad("a chunk size that is not one"))?;
            if size == 0 {
                break;
            }
            if size > MAX_BODY - body.len() {
                return Err(bad("the response is larger than 64 MiB"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
            if &crlf != b"\r\n" {
                return Err(bad("a chunk that does not end where its size says"));
            }
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad("a Content-Length that is not a number"))?;
        if len > MAX_BODY {
            return Err(bad("the response is larger than 64 MiB"));
        }
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(bad("the response is larger than 64 MiB"));
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_by_length_chunked_and_to_the_end() {
        let r = read_response(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=b\r\n\r\nhelloextra"[..],
        )
        .unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
        assert_eq!(r.header_values("set-cookie").collect::<Vec<_>>(), ["a=b"]);
        let r = read_response(
            &b"HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n"[..],
        )
        .unwrap();
        assert_eq!((r.status, &r.body[..]), (500, &b"abcde"[..]));
        let r = read_response(&b"HTTP/1.0 200 OK\r\n\r\nall of it"[..]).unwrap();
        assert_eq!(r.body, b"all of it");
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n"[..],
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            &b"HTTP/1.1 200 OK\r\nno end"[..],
        ] {
            assert!(
                read_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn thumbprints_are_normalised_and_checked() {
        let sha1 = "2c:11:ed:d7:13:87:7d:b5:74:18:b8:1c:42:c2:56:1f:0d:b9:5b:b9";
        assert_eq!(
            parse_thumbprint(sha1).unwrap(),
            "2C:11:ED:D7:13:87:7D:B5:74:18:B8:1C:42:C2:56:1F:0D:B9:5B:B9"
        );
        assert_eq!(
            parse_thumbprint(&sha1.replace(':', "")).unwrap(),
            parse_thumbprint(sha1).unwrap()
        );
        for bad in ["", "AA:BB", &"G".repeat(40), &"A".repeat(41)] {
            assert!(parse_thumbprint(bad).is_err(), "{bad}");
        }
    }
}
