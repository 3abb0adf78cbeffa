//! The copy engine against real NBD servers (nbdkit, qemu-nbd) on Unix sockets and loopback TCP.

use sendense_core::nbd::{ConnectOptions, NbdClient, NbdUrl};
use sendense_core::transfer::{copy, Changes, CopyReport, CopyRequest};
use sendense_core::{ErrorKind, NullSink, SharedSink};
use sendense_testkit::{
    allocated_bytes, create_image, images_equal, nbdkit, qcow2_with, qemu_io, qemu_nbd,
    qemu_nbd_tcp, run,
};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1 << 20;

fn sink() -> SharedSink {
    Arc::new(NullSink)
}

async fn copy_urls(
    src: &str,
    dst: &str,
    tune: impl FnOnce(&mut CopyRequest),
) -> sendense_core::Result<CopyReport> {
    let mut req = CopyRequest::new(src.parse().unwrap(), dst.parse().unwrap());
    req.io_timeout = Some(Duration::from_secs(60));
    tune(&mut req);
    tokio::time::timeout(
        Duration::from_secs(300),
        copy(&req, &sink(), &CancellationToken::new()),
    )
    .await
    .expect("copy hung")
}

/// A fresh qcow2 of `size` served writable by qemu-nbd.
fn fresh_target(
    dir: &Path,
    name: &str,
    size: &str,
) -> (std::path::PathBuf, sendense_testkit::Server) {
    let path = create_image(&dir.join(format!("{name}.qcow2")), "qcow2", size);
    let server = qemu_nbd(dir, &path, "qcow2", name, &["--shared=8"]);
    (path, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_copy_of_sparse_random_is_identical_and_stays_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let src = nbdkit(
        dir.path(),
        "src",
        &["sparse-random", "size=4G", "percent=5", "seed=4242"],
    );
    let (dst_path, mut dst) = fresh_target(dir.path(), "dst", "4G");
    let report = copy_urls(&src.url, &dst.url, |r| r.destination_is_zero = true)
        .await
        .unwrap();
    assert_eq!(report.size, 4 << 30);
    assert!(report.bytes_written > 0);
    dst.proc.stop();
    assert!(images_equal(dst_path.to_str().unwrap(), "qcow2", &src.url));
    // Holes stay holes: the target holds about the data that was written, not 4 GiB.
    let allocated = allocated_bytes(&dst_path, "qcow2");
    assert!(
        allocated <= report.bytes_written + report.bytes_written / 5 + 16 * MIB,
        "target allocates {allocated} bytes for {} written",
        report.bytes_written
    );
    assert!(report.bytes_written < (4 << 30) / 10, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_moves_exactly_the_dirty_bytes_and_the_chain_equals_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src_path = create_image(&d.join("src.qcow2"), "qcow2", "256M");
    qemu_io(
        &src_path,
        "qcow2",
        &["write -P 0x11 0 64M", "write -P 0x22 128M 32M"],
    );

    // Full copy into base.qcow2.
    {
        let src = qemu_nbd(d, &src_path, "qcow2", "src", &["-r", "--shared=8"]);
        let (_base, mut dst) = fresh_target(d, "base", "256M");
        copy_urls(&src.url, &dst.url, |r| r.destination_is_zero = true)
            .await
            .unwrap();
        dst.proc.stop();
    }
    // Start change tracking, then change the source: data, a zeroed region written as data,
    // an efficient zero write, and a write crossing a 64 KiB bitmap granule.
    run(
        "qemu-img",
        &["bitmap", "--add", src_path.to_str().unwrap(), "b1"],
    );
    qemu_io(
        &src_path,
        "qcow2",
        &[
            "write -P 0x33 1M 1M",
            "write -P 0x00 8M 2M",
            "write -z 130M 4M",
            "write -P 0x44 200M 64K",
            "write -P 0x55 262139904 8K",
        ],
    );
    let dirty: u64 = MIB + 2 * MIB + 4 * MIB + 64 * 1024 + 2 * 64 * 1024;

    let overlay = sendense_testkit::create_overlay(&d.join("inc1.qcow2"), "base.qcow2");
    let src = qemu_nbd(
        d,
        &src_path,
        "qcow2",
        "src",
        &["-r", "--shared=8", "-B", "b1"],
    );
    let mut dst = qemu_nbd(d, &overlay, "qcow2", "inc1", &["--shared=8"]);
    let report = copy_urls(&src.url, &dst.url, |r| {
        r.changes = Some(Changes::Bitmap("b1".into()))
    })
    .await
    .unwrap();
    assert_eq!(report.bytes_planned, dirty, "{report:?}");
    assert_eq!(
        report.bytes_read,
        dirty - 4 * MIB,
        "only dirty data is read: {report:?}"
    );
    // A dozen requests: one connection is enough.
    assert_eq!(report.connections, 1, "{report:?}");
    dst.proc.stop();
    assert!(images_equal(overlay.to_str().unwrap(), "qcow2", &src.url));
    // The overlay holds about the changed data only.
    let top = allocated_bytes(&overlay, "qcow2");
    assert!(
        top <= dirty + 2 * MIB,
        "overlay allocates {top} bytes for {dirty} dirty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_from_a_list_of_changed_extents_is_exact() {
    // Change tracking that answers with extents (as VMware's does) instead of a bitmap on the
    // export: the source is served plainly, the changes come with the request.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src_path = qcow2_with(&d.join("src.qcow2"), "256M", &["write -P 0x11 0 64M"]);
    {
        let src = qemu_nbd(d, &src_path, "qcow2", "src", &["-r", "--shared=8"]);
        let (_base, mut dst) = fresh_target(d, "base", "256M");
        copy_urls(&src.url, &dst.url, |r| r.destination_is_zero = true)
            .await
            .unwrap();
        dst.proc.stop();
    }
    qemu_io(
        &src_path,
        "qcow2",
        &[
            "write -P 0x33 1M 1M",
            "write -z 8M 2M",
            "write -P 0x44 200M 64K",
            "write -P 0x55 262139904 8K",
        ],
    );
    let changed = vec![
        (MIB, MIB),
        (8 * MIB, 2 * MIB),
        (200 * MIB, 64 * 1024),
        (262139904, 8 * 1024),
    ];
    let overlay = sendense_testkit::create_overlay(&d.join("inc1.qcow2"), "base.qcow2");
    let src = qemu_nbd(d, &src_path, "qcow2", "src", &["-r", "--shared=8"]);
    let mut dst = qemu_nbd(d, &overlay, "qcow2", "inc1", &["--shared=8"]);
    let report = copy_urls(&src.url, &dst.url, |r| {
        r.changes = Some(Changes::Extents(changed.clone()))
    })
    .await
    .unwrap();
    // Whole 64 KiB blocks: the 8 KiB write crosses a block boundary.
    let planned = MIB + 2 * MIB + 64 * 1024 + 2 * 64 * 1024;
    assert_eq!(report.bytes_planned, planned, "{report:?}");
    assert_eq!(report.bytes_read, planned - 2 * MIB, "{report:?}");
    dst.proc.stop();
    assert!(images_equal(overlay.to_str().unwrap(), "qcow2", &src.url));

    // Extents out of order, overlapping or past the end are refused, naming the first.
    for (i, bad) in [
        vec![(2 * MIB, MIB), (MIB, MIB)],
        vec![(MIB, 2 * MIB), (2 * MIB, MIB)],
        vec![(255 * MIB, 2 * MIB)],
        vec![(MIB, 0)],
    ]
    .into_iter()
    .enumerate()
    {
        // A socket of its own each time: the previous server, stopped as it is dropped, may
        // remove its socket after the next one created it under the same name.
        let (_t, _dst2) = fresh_target(d, &format!("bad{i}"), "256M");
        let err = copy_urls(&src.url, &_dst2.url, |r| {
            r.changes = Some(Changes::Extents(bad.clone()))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
        assert!(err.message().contains("changed extent"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_between_zeroes_in_one_extent_survives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src_path = create_image(&d.join("src.raw"), "raw", "96M");
    // One allocated 64 MiB extent of zeroes with three single bytes hidden inside.
    qemu_io(
        &src_path,
        "raw",
        &[
            "write -P 0 0 64M",
            "write -P 0x7f 33554439 1",
            "write -P 0x01 1048575 1",
            "write -P 0xff 67108863 1",
        ],
    );
    let src = qemu_nbd(d, &src_path, "raw", "src", &["-r", "--shared=8"]);
    let (dst_path, mut dst) = fresh_target(d, "dst", "96M");
    let report = copy_urls(&src.url, &dst.url, |r| r.destination_is_zero = true)
        .await
        .unwrap();
    dst.proc.stop();
    assert!(images_equal(dst_path.to_str().unwrap(), "qcow2", &src.url));
    assert_eq!(
        report.bytes_written,
        3 * 64 * 1024,
        "only the three blocks with data: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_maximum_request_size_splits_large_extents() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src_raw = create_image(&d.join("src.raw"), "raw", "64M");
    qemu_io(
        &src_raw,
        "raw",
        &["write -P 0x5a 1M 40M", "write -P 0 10M 1M"],
    );
    let dst_raw = create_image(&d.join("dst.raw"), "raw", "64M");
    qemu_io(&dst_raw, "raw", &["write -P 0xee 0 64M"]);
    let policy = ["--filter=blocksize-policy", "file"];
    let limits = ["blocksize-maximum=64K", "blocksize-error-policy=error"];
    let src_args: Vec<&str> = policy
        .iter()
        .copied()
        .chain([src_raw.to_str().unwrap()])
        .chain(limits)
        .collect();
    let dst_args: Vec<&str> = policy
        .iter()
        .copied()
        .chain([dst_raw.to_str().unwrap()])
        .chain(limits)
        .collect();
    let src = nbdkit(d, "src", &src_args);
    let dst = nbdkit(d, "dst", &dst_args);
    // Default mode: the destination is not zero, so holes must be written as zeroes too.
    let report = copy_urls(&src.url, &dst.url, |r| r.request_size = 8 << 20)
        .await
        .unwrap();
    assert_eq!(report.size, 64 * MIB);
    assert!(images_equal(dst_raw.to_str().unwrap(), "raw", &src.url));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeroes_go_in_large_requests_and_in_small_ones_to_a_server_refusing_those() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src_raw = create_image(&d.join("src.raw"), "raw", "256M");
    qemu_io(&src_raw, "raw", &["write -P 0x5a 100M 1M"]);
    let src = qemu_nbd(d, &src_raw, "raw", "src", &["-r", "--shared=8"]);
    // An existing disk whose server refuses zero requests over 32 MiB with EINVAL (and says
    // so in `refused`); it advertises no block sizes, so 32 MiB is its maximum block.
    let dst_raw = create_image(&d.join("dst.raw"), "raw", "256M");
    qemu_io(&dst_raw, "raw", &["write -P 0xee 0 256M"]);
    let (file, refused) = (dst_raw.display(), d.join("refused").display().to_string());
    let script = format!(
        r#"case "$1" in
  get_size) echo 268435456 ;;
  can_write|can_zero|can_flush|can_multi_conn) exit 0 ;;
  flush) exit 0 ;;
  pread) dd if={file} skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none ;;
  pwrite) dd of={file} seek=$4 conv=notrunc oflag=seek_bytes status=none ;;
  zero)
    if [ "$3" -gt 33554432 ]; then echo "$3" >> {refused}; echo "EINVAL too large" >&2; exit 1; fi
    fallocate -z -o "$4" -l "$3" {file} ;;
  *) exit 2 ;;
esac"#
    );
    let script_path = d.join("dst.sh");
    std::fs::write(&script_path, script).unwrap();
    std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dst = nbdkit(d, "dst", &["sh", script_path.to_str().unwrap()]);
    let report = copy_urls(&src.url, &dst.url, |_| ()).await.unwrap();
    assert_eq!(report.size, 256 * MIB);
    assert!(images_equal(dst_raw.to_str().unwrap(), "raw", &src.url));
    // The first zero requests were larger than the server's maximum block, then split.
    let refused = std::fs::read_to_string(&refused).unwrap_or_default();
    assert!(
        !refused.is_empty(),
        "no zero request was larger than 32 MiB"
    );
    assert!(refused.lines().count() <= 8, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_write_errors_end_the_copy_with_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = nbdkit(
        d,
        "src",
        &[
            "--filter=error",
            "sparse-random",
            "size=256M",
            "seed=1",
            "error-pread=EIO",
            "error-pread-rate=100%",
        ],
    );
    let (_p, _dst) = fresh_target(d, "dst", "256M");
    let err = copy_urls(&src.url, &_dst.url, |_| {}).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("EIO") && msg.contains("reading source at offset"),
        "{msg}"
    );

    let good = nbdkit(d, "good", &["sparse-random", "size=256M", "seed=1"]);
    let bad_dst = nbdkit(
        d,
        "baddst",
        &[
            "--filter=error",
            "memory",
            "size=256M",
            "error-pwrite=ENOSPC",
            "error-pwrite-rate=100%",
        ],
    );
    let err = copy_urls(&good.url, &bad_dst.url, |r| r.destination_is_zero = true)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ENOSPC") && msg.contains("writing destination at offset"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_disconnects_mid_copy_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut src = nbdkit(
        d,
        "src",
        &[
            "--filter=delay",
            "sparse-random",
            "size=1G",
            "percent=50",
            "seed=3",
            "rdelay=20ms",
        ],
    );
    let (_p, _dst) = fresh_target(d, "dst", "1G");
    let url = src.url.clone();
    let dst_url = _dst.url.clone();
    let task = tokio::spawn(async move { copy_urls(&url, &dst_url, |_| {}).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    src.proc.kill();
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = nbdkit(
        d,
        "src",
        &[
            "--filter=delay",
            "sparse-random",
            "size=1G",
            "percent=50",
            "rdelay=20ms",
        ],
    );
    let (_p, dst) = fresh_target(d, "dst", "1G");
    let req = CopyRequest::new(src.url.parse().unwrap(), dst.url.parse().unwrap());
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c2.cancel();
    });
    let err = tokio::time::timeout(Duration::from_secs(60), copy(&req, &sink(), &cancel))
        .await
        .expect("cancel did not stop the copy")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_and_multi_conn_on_one_qemu_nbd_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = create_image(&d.join("t.qcow2"), "qcow2", "64M");
    let srv = qemu_nbd_tcp(&img, "qcow2", "t", &["--shared=2"]);
    let url: NbdUrl = srv.url.parse().unwrap();
    let opts = ConnectOptions::default();
    let a = NbdClient::connect(&url, &opts).await.unwrap();
    let b = NbdClient::connect(&url, &opts).await.unwrap();
    a.write(0, &[7u8; 4096], false).await.unwrap();
    a.flush().await.unwrap();
    let back = b.read(0, vec![0; 4096]).await.unwrap();
    assert_eq!(
        back,
        vec![7u8; 4096],
        "second connection sees the first one's write"
    );
    drop((a, b));

    // With the default --shared=1 a second connection is never served: the lesson behind
    // --shared >= connections + 1.
    let img1 = create_image(&d.join("one.qcow2"), "qcow2", "64M");
    let one = qemu_nbd_tcp(&img1, "qcow2", "one", &[]);
    let url1: NbdUrl = one.url.parse().unwrap();
    let _first = NbdClient::connect(&url1, &opts).await.unwrap();
    let short = ConnectOptions {
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    assert!(NbdClient::connect(&url1, &short).await.is_err());

    // A 4-connection copy over TCP into an export shared for 5 (small requests: enough work
    // for all of them).
    let src = nbdkit(
        d,
        "src",
        &["sparse-random", "size=512M", "percent=20", "seed=9"],
    );
    let tgt = create_image(&d.join("m.qcow2"), "qcow2", "512M");
    let mut dst = qemu_nbd_tcp(&tgt, "qcow2", "m", &["--shared=5"]);
    let report = copy_urls(&src.url, &dst.url, |r| {
        r.connections = 4;
        r.requests = 2;
        r.request_size = 256 * 1024;
        r.destination_is_zero = true;
    })
    .await
    .unwrap();
    assert_eq!(report.connections, 4);
    dst.proc.stop();
    assert!(images_equal(tgt.to_str().unwrap(), "qcow2", &src.url));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_target_and_a_missing_bitmap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = nbdkit(d, "src", &["sparse-random", "size=128M"]);
    let (_p, dst) = fresh_target(d, "dst", "64M");
    let err = copy_urls(&src.url, &dst.url, |_| {}).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    let (_p2, dst2) = fresh_target(d, "dst2", "128M");
    let err = copy_urls(&src.url, &dst2.url, |r| {
        r.changes = Some(Changes::Bitmap("nope".into()))
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
