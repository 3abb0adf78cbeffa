//! The vSphere client against govmomi's vCenter simulator.

use sendense_core::vsphere::{Pin, Vim};
use sendense_testkit::vcsim::Vcsim;

/// A session the server ended (vCenter ends idle ones) is logged in again, once, and the call
/// goes through; after the client's own logout it is not.
#[test]
fn an_ended_session_is_logged_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Vcsim::start(dir.path(), "user", "pass");
    let port: u16 = sim
        .url
        .trim_start_matches("https://127.0.0.1:")
        .trim_end_matches("/sdk")
        .parse()
        .unwrap();
    let vim = Vim::new(
        "vCenter `t`",
        "127.0.0.1",
        port,
        "/sdk",
        Pin::Thumbprint(sim.thumbprint.clone()),
    );
    let content = vim.service_content().unwrap();
    vim.login(&content, "user", "pass").unwrap();
    assert!(!vim.list_vms(&content).unwrap().is_empty());
    // The server ends the session behind the client's back.
    vim.call("Logout", &content.session_manager, "").unwrap();
    assert!(!vim.list_vms(&content).unwrap().is_empty());
    // Logged out by the client itself: no login again.
    vim.logout(&content);
    let e = vim.list_vms(&content).unwrap_err();
    assert!(e.message().contains("NotAuthenticated"), "{e}");
}
