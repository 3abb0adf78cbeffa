//! The vSphere Web Services API (SOAP, `urn:vim25`): a call is an envelope POSTed to `/sdk`;
//! its answer is parsed with namespaces resolved (vCenter writes `xsi:type`, the simulator
//! `XMLSchema-instance:type`: one namespace, two prefixes). A SOAP fault becomes an error that
//! names the fault. The session is the `vmware_soap_session` cookie Login sets.

use super::https::{Https, Pin};
use crate::error::{Error, ErrorKind, Result};
use std::sync::Mutex;
use std::time::Duration;

/// The vSphere API namespace.
pub const VIM_NS: &str = "urn:vim25";
const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The namespace of `type` attributes of polymorphic values.
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Longest one call may take (a task is polled, not waited for).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// `text` with the five XML special characters escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A managed object reference: its type and value (`VirtualMachine`, `vm-42`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MoRef {
    /// Its type.
    pub kind: String,
    /// Its value.
    pub value: String,
}

impl MoRef {
    /// A reference.
    pub fn new(kind: &str, value: &str) -> MoRef {
        MoRef {
            kind: kind.to_string(),
            value: value.to_string(),
        }
    }

    /// As the element `name` of a request.
    pub fn xml(&self, name: &str) -> String {
        format!(
            "<{name} type=\"{}\">{}</{name}>",
            escape(&self.kind),
            escape(&self.value)
        )
    }

    /// Read from an element of an answer (`type` attribute without a namespace, text).
    pub fn of(node: roxmltree::Node<'_, '_>) -> Option<MoRef> {
        let kind = node
            .attributes()
            .find(|a| a.name() == "type" && a.namespace().is_none())?;
        Some(MoRef::new(kind.value(), node.text()?.trim()))
    }
}

/// What a vCenter says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct About {
    /// `VMware vCenter Server 8.0.2 build-...`.
    pub full_name: String,
    /// The API version (`8.0.2.0`).
    pub api_version: String,
    /// `VirtualCenter` or `HostAgent` (an ESXi host).
    pub api_type: String,
    /// Its instance UUID.
    pub instance_uuid: String,
}

/// The references of the service content a client needs.
#[derive(Debug, Clone)]
pub struct ServiceContent {
    /// `propertyCollector`.
    pub property_collector: MoRef,
    /// `sessionManager`.
    pub session_manager: MoRef,
    /// `searchIndex`.
    pub search_index: MoRef,
    /// `rootFolder`.
    pub root_folder: MoRef,
    /// `viewManager`.
    pub view_manager: MoRef,
    /// `about`.
    pub about: About,
}

/// A SOAP client of one vCenter (or ESXi host).
pub struct Vim {
    https: Https,
    path: String,
    /// The session cookie (`vmware_soap_session=...`) once logged in.
    cookie: Mutex<Option<String>>,
    /// The `SOAPAction` version, from the service content once read.
    version: Mutex<String>,
    /// How it logged in (session manager, user, password), to log in again when the server
    /// ended the session (vCenter ends idle sessions after about 30 minutes).
    login_as: Mutex<Option<(MoRef, String, String)>>,
}

impl std::fmt::Debug for Vim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the session cookie nor the password.
        f.debug_struct("Vim")
            .field("server", &self.https.what)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Vim {
    /// A client of `host:port` at `path` (`/sdk`), its certificate checked as `pin` says;
    /// `what` names it in messages.
    pub fn new(what: &str, host: &str, port: u16, path: &str, pin: Pin) -> Vim {
        Vim {
            https: Https::new(host, port, pin, what, CALL_TIMEOUT),
            path: path.to_string(),
            cookie: Mutex::new(None),
            version: Mutex::new("6.5".to_string()),
            login_as: Mutex::new(None),
        }
    }

    /// The SHA-1 thumbprint of the certificate the server presented last.
    pub fn thumbprint_seen(&self) -> Option<String> {
        self.https.seen()
    }

    /// From now on, only the certificate the server presented last: what a first contact
    /// accepted is what the password goes to.
    pub fn pin_seen(&mut self) {
        self.https.pin_seen();
    }

    /// What it is called in messages.
    pub fn what(&self) -> &str {
        &self.https.what
    }

    /// Calls `method` on `this` with `args` (request elements, escaped); returns the answer's
    /// document text, whose `<method>Response` holds the result. A session the server ended
    /// is logged in again, once, and the call repeated.
    pub fn call(&self, method: &str, this: &MoRef, args: &str) -> Result<String> {
        match self.call_once(method, this, args) {
            Err(e) if e.message().ends_with("(NotAuthenticated)") && method != "Login" => {
                let login = self.login_as.lock().ok().and_then(|l| l.clone());
                let Some((manager, user, password)) = login else {
                    return Err(e);
                };
                tracing::info!("{}: the session ended; logging in again", self.what());
                self.login_with(&manager, &user, &password)?;
                self.call_once(method, this, args)
            }
            other => other,
        }
    }

    fn call_once(&self, method: &str, this: &MoRef, args: &str) -> Result<String> {
        let envelope = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soapenv:Envelope xmlns:soapenv=\"{SOAP_NS}\" xmlns:xsi=\"{XSI_NS}\" \
             xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns=\"{VIM_NS}\">\
             <soapenv:Body><{method}>{}{args}</{method}></soapenv:Body></soapenv:Envelope>",
            this.xml("_this")
        );
        let action = format!(
            "\"urn:vim25/{}\"",
            self.version.lock().map(|v| v.clone()).unwrap_or_default()
        );
        let cookie = self.cookie.lock().ok().and_then(|c| c.clone());
        let mut headers = vec![
            ("Content-Type", "text/xml; charset=utf-8"),
            ("SOAPAction", action.as_str()),
        ];
        if let Some(c) = &cookie {
            headers.push(("Cookie", c.as_str()));
        }
        let response = self.https.post(&self.path, &headers, envelope.as_bytes())?;
        for v in response.header_values("set-cookie") {
            if let Some(session) = v
                .split(';')
                .next()
                .filter(|c| c.trim_start().starts_with("vmware_soap_session="))
            {
                if let Ok(mut c) = self.cookie.lock() {
                    *c = Some(session.trim().to_string());
                }
            }
        }
        let text = String::from_utf8(response.body)
            .map_err(|_| self.protocol(format!("{method}: the answer is not UTF-8")))?;
        if response.status == 500 || text.contains("Fault>") {
            if let Some(e) = self.fault(method, &text) {
                return Err(e);
            }
        }
        // A property collector answers an ended session per property, not with a fault.
        if method.starts_with("RetrieveProperties")
            && text.contains("missingSet")
            && text.contains("NotAuthenticated")
        {
            return Err(Error::new(
                ErrorKind::External,
                format!("{}: {method} failed (NotAuthenticated)", self.what()),
            ));
        }
        if response.status != 200 {
            return Err(self.protocol(format!(
                "{method}: HTTP status {} from {}",
                response.status, self.path
            )));
        }
        Ok(text)
    }

    /// The error for a SOAP fault in `text`, if it holds one.
    fn fault(&self, method: &str, text: &str) -> Option<Error> {
        let doc = roxmltree::Document::parse(text).ok()?;
        let fault = doc
            .descendants()
            .find(|n| n.has_tag_name((SOAP_NS, "Fault")))?;
        let string = fault
            .children()
            .find(|n| n.has_tag_name("faultstring"))
            .and_then(|n| n.text())
            .unwrap_or_default()
            .trim()
            .to_string();
        let kind = fault
            .children()
            .find(|n| n.has_tag_name("detail"))
            .and_then(|d| d.children().find(|n| n.is_element()))
            .map(|d| {
                d.attribute((XSI_NS, "type"))
                    .map(String::from)
                    .unwrap_or_else(|| d.tag_name().name().trim_end_matches("Fault").to_string())
            })
            .unwrap_or_default();
        let what = self.what();
        let message = match (string.is_empty(), kind.is_empty()) {
            (false, false) => format!("{what}: {method}: {string} ({kind})"),
            (false, true) => format!("{what}: {method}: {string}"),
            (true, false) => format!("{what}: {method} failed ({kind})"),
            (true, true) => format!("{what}: {method} failed"),
        };
        Some(match kind.as_str() {
            "InvalidLogin" => Error::new(ErrorKind::External, message).with_help(
                "Check the user and the password file (`sendense vcenter test`); the account needs the privileges listed in the guide.",
            ),
            "NotAuthenticated" => Error::new(ErrorKind::External, message),
            "ManagedObjectNotFound" => Error::not_found(message),
            "NoPermission" => Error::refused(message).with_help(
                "Give the vCenter account the privileges listed in the guide (VMware source).",
            ),
            _ => Error::new(ErrorKind::External, message),
        })
    }

    fn protocol(&self, what: String) -> Error {
        Error::new(ErrorKind::Protocol, format!("{}: {what}", self.what()))
    }

    /// Reads the service content (no session needed): the certificate is checked here first.
    pub fn service_content(&self) -> Result<ServiceContent> {
        let text = self.call(
            "RetrieveServiceContent",
            &MoRef::new("ServiceInstance", "ServiceInstance"),
            "",
        )?;
        let doc = self.parse(&text)?;
        let ret = self.returnval(&doc, "RetrieveServiceContent")?;
        let moref = |name: &str| {
            child(ret, name)
                .and_then(MoRef::of)
                .ok_or_else(|| self.protocol(format!("the service content has no {name}")))
        };
        let about = child(ret, "about")
            .ok_or_else(|| self.protocol("the service content has no about".into()))?;
        let text_of = |name: &str| child_text(about, name).unwrap_or_default();
        let content = ServiceContent {
            property_collector: moref("propertyCollector")?,
            session_manager: moref("sessionManager")?,
            search_index: moref("searchIndex")?,
            root_folder: moref("rootFolder")?,
            view_manager: moref("viewManager")?,
            about: About {
                full_name: text_of("fullName"),
                api_version: text_of("apiVersion"),
                api_type: text_of("apiType"),
                instance_uuid: text_of("instanceUuid"),
            },
        };
        let version = &content.about.api_version;
        if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.') {
            if let Ok(mut v) = self.version.lock() {
                *v = version.clone();
            }
        }
        Ok(content)
    }

    /// Logs in as `user` with `password` (never logged, never in an error).
    pub fn login(&self, content: &ServiceContent, user: &str, password: &str) -> Result<()> {
        self.login_with(&content.session_manager, user, password)?;
        if let Ok(mut l) = self.login_as.lock() {
            *l = Some((
                content.session_manager.clone(),
                user.to_string(),
                password.to_string(),
            ));
        }
        Ok(())
    }

    fn login_with(&self, manager: &MoRef, user: &str, password: &str) -> Result<()> {
        let args = format!(
            "<userName>{}</userName><password>{}</password>",
            escape(user),
            escape(password)
        );
        self.call_once("Login", manager, &args)
            .map(drop)
            .map_err(|e| e.context(format!("logging in as `{user}`")))
    }

    /// Ends the session (errors ignored: it expires by itself); no login again after it.
    pub fn logout(&self, content: &ServiceContent) {
        if let Ok(mut l) = self.login_as.lock() {
            *l = None;
        }
        if self.cookie.lock().map(|c| c.is_some()).unwrap_or(false) {
            let _ = self.call_once("Logout", &content.session_manager, "");
            if let Ok(mut c) = self.cookie.lock() {
                *c = None;
            }
        }
    }

    /// Parses an answer.
    pub fn parse<'t>(&self, text: &'t str) -> Result<roxmltree::Document<'t>> {
        roxmltree::Document::parse(text)
            .map_err(|e| self.protocol(format!("an answer that is not XML: {e}")))
    }

    /// The `returnval` of `<method>Response` in `doc`.
    pub fn returnval<'a, 'd>(
        &self,
        doc: &'a roxmltree::Document<'d>,
        method: &str,
    ) -> Result<roxmltree::Node<'a, 'd>> {
        child(self.response(doc, method)?, "returnval")
            .ok_or_else(|| self.protocol(format!("{method} answered without a result")))
    }

    /// The `<method>Response` element of `doc` (its `returnval` may be missing: nothing found).
    pub fn response<'a, 'd>(
        &self,
        doc: &'a roxmltree::Document<'d>,
        method: &str,
    ) -> Result<roxmltree::Node<'a, 'd>> {
        let name = format!("{method}Response");
        doc.descendants()
            .find(|n| n.has_tag_name((VIM_NS, name.as_str())))
            .ok_or_else(|| self.protocol(format!("{method} answered without a response")))
    }
}

/// The first child element of `node` named `name` (any namespace).
pub fn child<'a, 'd>(node: roxmltree::Node<'a, 'd>, name: &str) -> Option<roxmltree::Node<'a, 'd>> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// The text of child `name` of `node`.
pub fn child_text(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    child(node, name)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
}

/// The polymorphic type of a value (`xsi:type`, whatever its prefix).
pub fn xsi_type<'a>(node: roxmltree::Node<'a, '_>) -> Option<&'a str> {
    node.attribute((XSI_NS, "type"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_by_namespace_not_by_prefix() {
        // vCenter's prefix and the simulator's, and a plain `type` attribute beside it.
        for prefix in ["xsi", "XMLSchema-instance"] {
            let text = format!(
                r#"<r xmlns:{prefix}="{XSI_NS}"><result {prefix}:type="ManagedObjectReference" type="VirtualMachineSnapshot">snapshot-73</result></r>"#
            );
            let doc = roxmltree::Document::parse(&text).unwrap();
            let result = doc
                .descendants()
                .find(|n| n.has_tag_name("result"))
                .unwrap();
            assert_eq!(xsi_type(result), Some("ManagedObjectReference"));
            assert_eq!(
                MoRef::of(result),
                Some(MoRef::new("VirtualMachineSnapshot", "snapshot-73"))
            );
        }
        assert_eq!(escape(r#"<a&"'>"#), "&lt;a&amp;&quot;&apos;&gt;");
    }

    #[test]
    fn faults_are_named() {
        let vim = Vim::new("vCenter `vc`", "127.0.0.1", 1, "/sdk", Pin::Accept);
        let text = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Login failure</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let e = vim.fault("Login", text).unwrap();
        assert_eq!(
            e.message(),
            "vCenter `vc`: Login: Login failure (InvalidLogin)"
        );
        assert!(vim.fault("Login", "<ok/>").is_none());
    }
}
