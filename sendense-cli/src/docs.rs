//! Generated documentation: one man page per command (clap_mangen) and shell completions
//! (clap_complete), both from the clap definitions in [`crate::cli`] — and the man pages of
//! `sendense-sna`, from its own. The committed `man/` and
//! `completions/` must equal [`render_all`]; a test fails when they are stale
//! (`make docs` rewrites them).

use clap_complete::Shell;
use roff::{roman, Roff};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Every generated file, by path relative to the repository root.
pub fn render_all() -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut cmd = crate::cli::command();
    cmd.build();
    add_man_pages(&cmd, &mut files);
    let mut sna = <sendense_sna::cli::Cli as clap::CommandFactory>::command();
    sna.build();
    add_man_pages(&sna, &mut files);
    for (shell, name) in [
        (Shell::Bash, "sendense.bash"),
        (Shell::Zsh, "_sendense"),
        (Shell::Fish, "sendense.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut crate::cli::command(), "sendense", &mut buf);
        files.insert(PathBuf::from("completions").join(name), buf);
    }
    files
}

fn add_man_pages(cmd: &clap::Command, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    files.insert(
        PathBuf::from("man").join(format!("{name}.1")),
        man_page(cmd),
    );
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        add_man_pages(sub, files);
    }
}

fn man_page(cmd: &clap::Command) -> Vec<u8> {
    // The standard sections come from clap_mangen; `after_long_help` is ours: upper-case lines
    // are section headings, everything else is kept preformatted (JSON shapes, tables).
    let details = cmd.get_after_long_help().map(|h| h.to_string());
    let man = clap_mangen::Man::new(cmd.clone().after_long_help(None::<&str>))
        .title(
            cmd.get_display_name()
                .unwrap_or_else(|| cmd.get_name())
                .to_uppercase(),
        )
        .source(format!("sendense {}", env!("CARGO_PKG_VERSION")))
        .manual("Sendense Manual");
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        let _ = man.render_options_section(&mut out);
    }
    if cmd.has_subcommands() {
        let _ = man.render_subcommands_section(&mut out);
    }
    if let Some(details) = details {
        let _ = details_roff(&details).to_writer(&mut out);
    }
    let _ = man.render_version_section(&mut out);
    out
}

fn details_roff(text: &str) -> Roff {
    let mut roff = Roff::default();
    let mut open = false;
    let is_heading = |l: &str| {
        !l.is_empty()
            && !l.starts_with(' ')
            && l.chars().all(|c| c.is_ascii_uppercase() || c == ' ')
    };
    for line in text.lines() {
        if is_heading(line) {
            if open {
                roff.control("fi", [] as [&str; 0]);
            }
            roff.control("SH", [line]);
            roff.control("nf", [] as [&str; 0]);
            open = true;
            continue;
        }
        if !open {
            roff.control("SH", ["NOTES"]);
            roff.control("nf", [] as [&str; 0]);
            open = true;
        }
        roff.text([roman(line)]);
    }
    if open {
        roff.control("fi", [] as [&str; 0]);
    }
    roff
}
