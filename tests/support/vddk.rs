//! VMware's data path without VMware: nbdkit's real VDDK plugin, built at first use from the
//! vendored nbdkit source (`tests/vendor/`), over Sendense's stand-in for VMware's proprietary
//! VDDK library (`vddk/vixstandin.c`, a stand-in: it serves `[datastore] path.vmdk` from raw
//! files under `$VDDK_STANDIN_DATASTORES`, answers allocated blocks from SEEK_DATA/SEEK_HOLE and
//! logs each connection's arguments to `$VDDK_STANDIN_LOG`, never a password). Both are cached
//! outside the clone ([`super::vcsim::cache_dir`]).

use super::require;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The vendored nbdkit source.
const NBDKIT_TARBALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vendor/nbdkit-1.32.5.tar.gz");

/// The stand-in library's source.
const STANDIN_C: &str = include_str!("vddk/vixstandin.c");

fn run_in(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed in {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nbdkit-vddk-plugin.so`, built from the vendored source (about a minute the first time;
/// once per process: the tests of a process wait for one build).
pub fn plugin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_plugin).clone()
}

fn build_plugin() -> PathBuf {
    for (tool, package) in [
        ("autoreconf", "autoconf"),
        ("automake", "automake"),
        ("libtoolize", "libtool"),
        ("make", "make"),
        ("cc", "gcc"),
        ("nbdkit", "nbdkit"),
    ] {
        require(tool, package);
    }
    let cache = super::vcsim::cache_dir();
    let done = cache.join("nbdkit-vddk-1.32.5/nbdkit-vddk-plugin.so");
    if done.is_file() {
        return done;
    }
    let work = super::vcsim::build_dir(&cache, "nbdkit");
    std::fs::create_dir_all(&work).unwrap();
    run_in(&work, "tar", &["xzf", NBDKIT_TARBALL]);
    let src = work.join("nbdkit-1.32.5");
    run_in(&src, "autoreconf", &["-i"]);
    let mut configure = vec!["--disable-dependency-tracking".to_string()];
    for lang in [
        "perl",
        "python",
        "ocaml",
        "rust",
        "ruby",
        "tcl",
        "lua",
        "golang",
        "torrent",
        "linuxdisk",
        "valgrind",
        "libguestfs-tests",
    ] {
        configure.push(format!("--disable-{lang}"));
    }
    for lib in [
        "iconv",
        "selinux",
        "gnutls",
        "bash-completions",
        "manpages",
        "curl",
        "ssh",
        "iso",
        "libvirt",
        "zlib",
        "libnbd",
        "liblzma",
        "libzstd",
        "libguestfs",
        "ext2",
    ] {
        configure.push(format!("--without-{lib}"));
    }
    let configure: Vec<&str> = configure.iter().map(String::as_str).collect();
    run_in(&src, "./configure", &configure);
    run_in(&src, "make", &["-C", "common/utils", "libutils.la"]);
    run_in(&src, "make", &["-C", "plugins/vddk"]);
    let built = src.join("plugins/vddk/.libs/nbdkit-vddk-plugin.so");
    let dir = done.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let partial = work.join("plugin.so");
    std::fs::copy(&built, &partial).unwrap();
    std::fs::rename(&partial, &done).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    done
}

/// A directory laid out as a VDDK installation (`lib64/libvixDiskLib.so.8`) holding the
/// stand-in library: what `vddk.libdir` points at.
pub fn standin_libdir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_standin).clone()
}

fn build_standin() -> PathBuf {
    require("cc", "gcc");
    let key = STANDIN_C.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let libdir = super::vcsim::cache_dir().join(format!("vddk-standin-{key:016x}"));
    let lib = libdir.join("lib64/libvixDiskLib.so.8");
    if lib.is_file() {
        return libdir;
    }
    let work = super::vcsim::build_dir(&super::vcsim::cache_dir(), "vddk-standin");
    std::fs::create_dir_all(work.join("lib64")).unwrap();
    let src = work.join("vixstandin.c");
    std::fs::write(&src, STANDIN_C).unwrap();
    run_in(
        &work,
        "cc",
        &[
            "-O2",
            "-fPIC",
            "-fvisibility=hidden",
            "-shared",
            "-Wl,-soname,libvixDiskLib.so.8",
            "-Wl,-z,defs",
            "-o",
            "lib64/libvixDiskLib.so.8",
            "vixstandin.c",
        ],
    );
    std::fs::remove_file(&src).unwrap();
    // Whole or not at all, also when tests build it side by side.
    if std::fs::rename(&work, &libdir).is_err() {
        let _ = std::fs::remove_dir_all(&work);
    }
    libdir
}
