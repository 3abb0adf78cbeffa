//! The corruption matrix: ten kinds of damage — the way disks, filesystems and people damage
//! files — each applied to the full, the middle incremental and the top of a live VM's chain.
//! For every case, `backup verify` of the top must fail naming the damaged backup, `restore` of
//! the top must fail naming it (or restore exactly what was backed up, when the damage leaves
//! the data whole), `restore --no-verify` must say it did not verify, and the next `backup
//! start` must be a full that says why, exact, and verifiable. Every case runs; the report
//! lists each one and counts false successes (the goal is 0).

mod common;

use common::*;
use sendense_testkit::output_text as text;
use sendense_testkit::{images_equal, qcow2, run as tool};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const DAMAGES: [&str; 10] = [
    "data byte flipped",
    "L2 zero flag cleared",
    "L2 entry pointed elsewhere",
    "header size changed",
    "backing name rewired",
    "link truncated",
    "link deleted",
    "qcow2 magic zeroed",
    "manifest deleted",
    "digest file edited",
];
const POSITIONS: [&str; 3] = ["full", "middle", "top"];

/// The chain: B0 full (0x11 over 0..4M); B1 writes 0x22 at 1M and zeroes 2M (over B0's data);
/// B2 writes 0x33 at 3M and zeroes 512k. Per position: a guest offset whose data that backup
/// wrote and the top still reads, and a cluster it zeroed over older data.
const DATA_AT: [u64; 3] = [64 << 10, 1 << 20, 3 << 20];
const ZEROED_AT: [u64; 3] = [0, 2 << 20, 512 << 10];

struct Case {
    lab: Lab,
    ids: Vec<String>,
    /// The VM's disk at the top's snapshot.
    refs_top: Vec<PathBuf>,
}

fn build_chain() -> Case {
    let lab = Lab::new(&[8], "");
    let mut ids = Vec::new();
    let steps: [&[&str]; 3] = [
        &["write -P 0x11 0 4M"],
        &["write -P 0x22 1M 256k", "write -z 2M 256k"],
        &["write -P 0x33 3M 256k", "write -z 512k 128k"],
    ];
    for writes in steps {
        for w in writes {
            lab.write(0, w);
        }
        let (code, _, summary, err) = backup(&lab.state, &[]);
        assert_eq!(code, 0, "{err}");
        ids.push(summary["backup"].as_str().unwrap().to_string());
    }
    let refs_top = lab.keep_refs("top");
    Case { lab, ids, refs_top }
}

impl Case {
    fn image(&self, pos: usize) -> PathBuf {
        self.lab
            .repo()
            .join(format!("pgtest1/2000/{}.qcow2", self.ids[pos]))
    }

    fn damage(&self, damage: usize, pos: usize) -> String {
        let img = self.image(pos);
        match damage {
            0 => qcow2::flip_data_byte(&img, DATA_AT[pos] + 100),
            1 if pos == 0 => {
                // A full has no zero clusters (nothing below it to hide): one data cluster's
                // mapping is lost instead, a valid "unallocated" entry as well.
                qcow2::set_l2_entry(&img, DATA_AT[0], 0);
                return "L2 entry of a data cluster cleared".into();
            }
            1 => qcow2::clear_zero_flag(&img, ZEROED_AT[pos]),
            2 => {
                // At the cluster of the L2 table itself: other bytes than the backup wrote
                // (its neighbours hold the same pattern, and the digests are keyed by the
                // guest offset: pointing there would read the very bytes backed up).
                let (at, entry) = qcow2::l2_entry(&img, DATA_AT[pos]);
                let mask = 0x00ff_ffff_ffff_fe00u64;
                qcow2::set_l2_entry(&img, DATA_AT[pos], (entry & !mask) | (at & !0xffff));
            }
            3 => qcow2::set_size(&img, 4 << 20),
            4 => {
                let decoy = img.with_file_name("decoy.qcow2");
                if !decoy.exists() {
                    tool(
                        "qemu-img",
                        &["create", "-q", "-f", "qcow2", decoy.to_str().unwrap(), "8M"],
                    );
                    sendense_testkit::qemu_io(&decoy, "qcow2", &["write -P 0x66 0 8M"]);
                }
                qcow2::rebase_unsafe(&img, "decoy.qcow2");
            }
            5 => {
                let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
                let len = f.metadata().unwrap().len();
                f.set_len(len - (64 << 10)).unwrap();
            }
            6 => std::fs::remove_file(&img).unwrap(),
            7 => qcow2::zero_magic(&img),
            8 => std::fs::remove_file(
                self.lab
                    .repo()
                    .join(format!("pgtest1/manifests/{}.yaml", self.ids[pos])),
            )
            .unwrap(),
            9 => {
                // One bit of the first record that holds one.
                let d = img.with_extension("digests");
                let bytes = std::fs::read(&d).unwrap();
                let at = bytes.iter().position(|b| *b != 0).unwrap();
                let f = std::fs::OpenOptions::new().write(true).open(&d).unwrap();
                f.write_all_at(&[bytes[at] ^ 0x10], at as u64).unwrap();
            }
            _ => unreachable!(),
        }
        DAMAGES[damage].into()
    }
}

/// What one case showed; `failures` lists every requirement it did not meet, `false_successes`
/// the checks that reported success over wrong data.
#[derive(Debug, Default)]
struct Outcome {
    label: String,
    verify: String,
    restore: String,
    no_verify: String,
    next: String,
    failures: Vec<String>,
    false_successes: Vec<String>,
}

fn exit(o: &Output) -> String {
    format!("exit {}", o.status.code().unwrap_or(-1))
}

fn restore_top(case: &Case, out: &Path, extra: &[&str]) -> Output {
    let top = case.ids.last().unwrap();
    let mut args = vec![
        "restore",
        top,
        "--disk",
        "2000",
        "--to",
        out.to_str().unwrap(),
        "--format",
        "raw",
    ];
    args.extend_from_slice(extra);
    run(&case.lab.state, &args)
}

/// The next backup after damage: a full saying why, exact, verifiable.
fn check_next_backup(case: &Case, o: &mut Outcome) {
    case.lab.write(0, "write -P 0x44 6M 64k");
    let (code, _, summary, err) = backup(&case.lab.state, &[]);
    let mode = summary["disks"][0]["mode"].as_str().unwrap_or("none");
    let reason = summary["disks"][0]["reason"].as_str().unwrap_or("");
    o.next = format!("exit {code}, {mode}");
    if code != 0 {
        o.failures.push(format!("next backup failed: {err}"));
    } else if mode != "full" {
        o.false_successes
            .push(format!("next backup built on damage: {mode} ({reason})"));
    } else if !reason.starts_with("previous backup failed its check") {
        o.failures
            .push(format!("next full without the reason: {reason}"));
    } else {
        case.lab.assert_point(&summary);
        let id = summary["backup"].as_str().unwrap();
        let v = run(&case.lab.state, &["backup", "verify", id]);
        if v.status.code() != Some(0) {
            o.failures
                .push(format!("the new full does not verify: {}", text(&v)));
        }
    }
}

/// Damage the chain's structure and start the next backup straight away, nothing having
/// verified or read the chain before: its own check must refuse to build on it.
fn run_backup_only_case(damage: usize, pos: usize) -> Outcome {
    let case = build_chain();
    let what = case.damage(damage, pos);
    let mut o = Outcome {
        label: format!("{what} @ {}, backup first", POSITIONS[pos]),
        verify: "-".into(),
        restore: "-".into(),
        no_verify: "-".into(),
        ..Default::default()
    };
    check_next_backup(&case, &mut o);
    o
}

fn run_case(damage: usize, pos: usize) -> Outcome {
    let case = build_chain();
    let what = case.damage(damage, pos);
    let mut o = Outcome {
        label: format!("{what} @ {}", POSITIONS[pos]),
        ..Default::default()
    };
    let named = &case.ids[pos];
    let top = case.ids.last().unwrap().clone();
    let data_whole = damage == 8;

    // verify: exit 1, naming the damaged backup.
    let v = run(&case.lab.state, &["backup", "verify", &top]);
    o.verify = exit(&v);
    match v.status.code() {
        Some(1) if text(&v).contains(named.as_str()) => {}
        Some(0) => o
            .false_successes
            .push(format!("verify passed: {}", text(&v))),
        _ => o
            .failures
            .push(format!("verify did not name {named}: {}", text(&v))),
    }

    // restore: exit 1 naming it, nothing left; or, when the data is whole, exact.
    let out = case.lab.dir.path().join("restored.raw");
    let r = restore_top(&case, &out, &[]);
    o.restore = exit(&r);
    let exact = || {
        images_equal(
            out.to_str().unwrap(),
            "raw",
            case.refs_top[0].to_str().unwrap(),
        )
    };
    match r.status.code() {
        Some(0) if exact() && data_whole => o.restore.push_str(", exact"),
        Some(0) if exact() => o
            .failures
            .push("restore succeeded (exact) over damage it should name".into()),
        Some(0) => o
            .false_successes
            .push(format!("restore exit 0 with wrong data: {}", text(&r))),
        Some(1) if text(&r).contains(named.as_str()) && !out.exists() => {}
        _ => o.failures.push(format!(
            "restore did not fail naming {named} (or left a file): {}",
            text(&r)
        )),
    }
    let _ = std::fs::remove_file(&out);

    // restore --no-verify: refused, or restored and says it did not verify.
    let n = restore_top(&case, &out, &["--no-verify"]);
    o.no_verify = exit(&n);
    match n.status.code() {
        Some(0) if text(&n).contains("Not verified") => {
            if !exact() {
                o.no_verify.push_str(", said so (data wrong)");
            }
        }
        Some(0) => o
            .false_successes
            .push(format!("--no-verify did not say so: {}", text(&n))),
        Some(1) => {}
        _ => o.failures.push(format!("--no-verify: {}", text(&n))),
    }
    let _ = std::fs::remove_file(&out);

    check_next_backup(&case, &mut o);
    o
}

#[test]
fn every_damage_to_every_link_is_caught_and_never_restored_or_built_on() {
    // (damage, position, whether verify and restore run before the next backup). Damage to
    // the data inside a link is only found by reading it (verify, restore), which marks the
    // backup damaged; damage to the structure is found by the next backup's own check.
    let mut cases: Vec<(usize, usize, bool)> = (0..DAMAGES.len())
        .flat_map(|d| (0..POSITIONS.len()).map(move |p| (d, p, true)))
        .collect();
    cases.extend((3..DAMAGES.len()).flat_map(|d| (0..POSITIONS.len()).map(move |p| (d, p, false))));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&(d, p, read_first)) = cases.get(i) else {
                    return;
                };
                let outcome = std::panic::catch_unwind(|| {
                    if read_first {
                        run_case(d, p)
                    } else {
                        run_backup_only_case(d, p)
                    }
                })
                .unwrap_or_else(|e| {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Outcome {
                        label: format!("{} @ {}", DAMAGES[d], POSITIONS[p]),
                        failures: vec![format!("panicked: {msg}")],
                        ..Default::default()
                    }
                });
                results.lock().unwrap().push((i, outcome));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut report = String::from("corruption matrix:\n");
    for (_, o) in &results {
        report.push_str(&format!(
            "  {:<46} verify {:<9} restore {:<16} --no-verify {:<30} next {}\n",
            o.label, o.verify, o.restore, o.no_verify, o.next
        ));
        for f in o.failures.iter().chain(&o.false_successes) {
            report.push_str(&format!("      ! {f}\n"));
        }
    }
    let false_successes: usize = results.iter().map(|(_, o)| o.false_successes.len()).sum();
    let failures: usize = results.iter().map(|(_, o)| o.failures.len()).sum();
    report.push_str(&format!(
        "{} cases, {false_successes} false successes, {failures} other failures\n",
        results.len()
    ));
    eprintln!("{report}");
    assert_eq!(results.len(), 30 + 21);
    assert_eq!((false_successes, failures), (0, 0), "{report}");
}
