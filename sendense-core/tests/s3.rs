//! The S3 client against a real S3 server (Ceph RGW, started once per test run; see the test
//! kit's `rgw` module): multipart uploads with checksums on every part, range reads, listings,
//! versions, conditional writes, aborted uploads, and Object Lock.

use sendense_core::repo::s3::{
    credentials, Committed, Lock, LockMode, S3Client, S3Location, S3Options,
};
use sendense_core::ErrorKind;
use sendense_testkit::rgw;

fn client(bucket: &str, prefix: &str, dir: &std::path::Path) -> S3Client {
    let server = rgw::shared();
    let url = if prefix.is_empty() {
        format!("{}/{bucket}", server.endpoint)
    } else {
        format!("{}/{bucket}/{prefix}", server.endpoint)
    };
    let keys = credentials::resolve(Some(&server.credentials_file(dir)), None).unwrap();
    S3Client::new(
        &S3Options {
            location: S3Location::parse(&url).unwrap(),
            region: "us-east-1".into(),
            path_style: true,
            ca_file: None,
        },
        &keys,
    )
    .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A file of `len` bytes that differ from part to part.
fn pattern_file(path: &std::path::Path, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len)
        .map(|i| ((i / 4093) % 251) as u8 ^ (i as u8))
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_reads_listings_and_aborted_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = rgw::shared().bucket("plain", false);
    let c = client(&bucket, "site/hub", dir.path());
    let loc = c.location().clone();

    // A file of several parts (16 MiB each), uploaded in parallel, read back by ranges.
    let file = dir.path().join("disk.qcow2");
    let data = pattern_file(&file, 40 << 20);
    let key = loc.key("pg/2000/b1.qcow2");
    let written = c.upload_file(&file, &key, None).await.unwrap();
    assert_eq!(written.size, 40 << 20);
    assert_eq!(c.size_of(&key).await.unwrap(), Some(40 << 20));
    for (off, len) in [
        (0u64, 4096u64),
        ((16 << 20) - 100, 300),
        ((40 << 20) - 7, 7),
    ] {
        let got = c.get_range(&key, off, len).await.unwrap();
        assert!(
            got == data[off as usize..(off + len) as usize],
            "range {off}+{len}"
        );
    }
    // A small object, and one written only if new.
    c.put(
        &loc.key("pg/2000/b1.digests"),
        b"records".to_vec(),
        None,
        false,
    )
    .await
    .unwrap();
    let manifest = loc.key("pg/manifests/b1.yaml");
    c.put(&manifest, b"first".to_vec(), None, true)
        .await
        .unwrap();
    let again = c.put(&manifest, b"second".to_vec(), None, true).await;
    assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert_eq!(c.get(&manifest, 1024).await.unwrap(), b"first");
    assert!(c.get(&manifest, 3).await.is_err(), "larger than the limit");
    // Listings stay under the prefix.
    let listed: Vec<String> = c
        .list(&loc.list_prefix())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        listed,
        [
            "site/hub/pg/2000/b1.digests",
            "site/hub/pg/2000/b1.qcow2",
            "site/hub/pg/manifests/b1.yaml"
        ]
    );
    assert_eq!(c.size_of(&loc.key("nothing")).await.unwrap(), None);
    assert_eq!(
        c.get_range(&loc.key("nothing"), 0, 1)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    // An upload a process left: listed, then aborted, and nothing of it is visible.
    let left = loc.key("pg/2000/b2.qcow2");
    // (started, never completed: as a killed process leaves it)
    let id = c.begin_upload(&left, None).await.unwrap();
    let pending = c.multipart_uploads(&loc.list_prefix()).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].key.as_str(), pending[0].upload_id.as_str()),
        (left.as_str(), id.as_str())
    );
    c.abort_upload(&left, &id).await.unwrap();
    assert!(c
        .multipart_uploads(&loc.list_prefix())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(c.size_of(&left).await.unwrap(), None);

    // Deletes.
    c.delete(&key, None).await.unwrap();
    assert_eq!(c.size_of(&key).await.unwrap(), None);
    assert!(!c.object_lock_enabled().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_keeps_versions_until_their_date() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = rgw::shared().bucket("locked", true);
    let c = client(&bucket, "", dir.path());
    assert!(c.object_lock_enabled().await.unwrap());
    let until = now() + 86400;
    let lock = Lock {
        mode: LockMode::Compliance,
        until,
    };
    let small = c
        .put("a.qcow2", vec![7u8; 1000], Some(lock), false)
        .await
        .unwrap();
    let file = dir.path().join("big");
    pattern_file(&file, 20 << 20);
    let big = c.upload_file(&file, "b.qcow2", Some(lock)).await.unwrap();
    for (key, w) in [("a.qcow2", &small), ("b.qcow2", &big)] {
        let version = w
            .version
            .as_deref()
            .expect("a versioned bucket names versions");
        let r = c.retention(key, Some(version)).await.unwrap().unwrap();
        assert_eq!((r.mode, r.until), (LockMode::Compliance, until), "{key}");
        // Deleting the exact version is refused; extending the retention is not, shortening is.
        let e = c.delete(key, Some(version)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
        let longer = Lock {
            until: until + 3600,
            ..lock
        };
        c.set_retention(key, Some(version), longer).await.unwrap();
        assert!(c.set_retention(key, Some(version), lock).await.is_err());
    }
    // A delete without a version only adds a delete marker: the locked data stays.
    c.delete("a.qcow2", None).await.unwrap();
    let versions = c.versions("a.qcow2").await.unwrap();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions.iter().filter(|v| v.delete_marker).count(), 1);
    // Governance: removable by the exact version only with a bypass, which Sendense never asks.
    let g = c
        .put(
            "g.qcow2",
            vec![1u8; 10],
            Some(Lock {
                mode: LockMode::Governance,
                until,
            }),
            false,
        )
        .await
        .unwrap();
    assert!(c.delete("g.qcow2", g.version.as_deref()).await.is_err());
}

/// A chain of three images uploaded as they are reads, through range requests, exactly as QEMU
/// reads the local chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_in_a_bucket_reads_as_qemu_reads_it() {
    use sendense_core::repo::chain_read::ChainReader;
    use sendense_core::repo::read_at::ReadAt;
    use sendense_core::repo::s3::S3Object;
    use sendense_testkit::{create_image, create_overlay, qemu_io};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = create_image(&d.join("base.qcow2"), "qcow2", "24M");
    qemu_io(
        &base,
        "qcow2",
        &["write -P 0x11 0 9M", "write -P 0x12 20M 64k"],
    );
    let mid = create_overlay(&d.join("mid.qcow2"), "base.qcow2");
    qemu_io(&mid, "qcow2", &["write -P 0x21 1M 5M", "write -z 7M 64k"]);
    let top = create_overlay(&d.join("top.qcow2"), "mid.qcow2");
    qemu_io(&top, "qcow2", &["write -P 0x31 4100k 8M", "write -z 0 64k"]);
    let bucket = rgw::shared().bucket("chain", false);
    let c = client(&bucket, "r", dir.path());
    let mut images: Vec<(String, Box<dyn ReadAt>)> = Vec::new();
    for (name, path) in [("top", &top), ("mid", &mid), ("base", &base)] {
        let key = c.location().key(&format!("vm/2000/{name}.qcow2"));
        let w = c.upload_file(path, &key, None).await.unwrap();
        let object = S3Object::new(
            c.clone(),
            key.clone(),
            w.size,
            tokio::runtime::Handle::current(),
        );
        images.push((key, Box::new(object)));
    }
    let want = sendense_testkit::qemu_reads(&top);
    let got = tokio::task::spawn_blocking(move || {
        let reader = ChainReader::open_images(images).unwrap().unwrap();
        let mut all = vec![0xAAu8; reader.size() as usize];
        reader.read(0, &mut all).unwrap();
        let mut part = vec![0u8; 3_000_001];
        reader.read(4_000_003, &mut part).unwrap();
        (all, part)
    })
    .await
    .unwrap();
    assert!(
        got.0 == want,
        "the chain read from the bucket differs from QEMU's"
    );
    assert!(got.1[..] == want[4_000_003..7_000_004]);
}

/// A manifest is committed once: on an unversioned bucket by `If-None-Match`, on a versioned
/// one (which ignores it) by its oldest version; ancestors' locks are extended, never
/// shortened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_committed_once_and_locks_are_extended() {
    let dir = tempfile::tempdir().unwrap();
    let plain = client(&rgw::shared().bucket("once", false), "", dir.path());
    assert!(matches!(
        plain
            .commit_once("m.yaml", b"first".to_vec(), None)
            .await
            .unwrap(),
        Committed::Written { version: None }
    ));
    assert_eq!(
        plain
            .commit_once("m.yaml", b"second".to_vec(), None)
            .await
            .unwrap(),
        Committed::Lost
    );
    assert_eq!(plain.get("m.yaml", 100).await.unwrap(), b"first");

    let locked = client(&rgw::shared().bucket("once-locked", true), "", dir.path());
    let until = now() + 3600;
    let lock = Lock {
        mode: LockMode::Compliance,
        until,
    };
    let Committed::Written {
        version: Some(first),
    } = locked
        .commit_once("m.yaml", b"first".to_vec(), Some(lock))
        .await
        .unwrap()
    else {
        panic!("the first write of a versioned key is the committed one");
    };
    // The second writer's version lands (the bucket ignores If-None-Match) but loses; without
    // a lock it is removed again.
    assert_eq!(
        locked
            .commit_once("m.yaml", b"second".to_vec(), None)
            .await
            .unwrap(),
        Committed::Lost
    );
    assert_eq!(
        locked.committed_version("m.yaml").await.unwrap(),
        Some(Some(first.clone()))
    );
    assert_eq!(locked.versions("m.yaml").await.unwrap().len(), 1);
    // Extended to a later date, not to an earlier one; the mode stays.
    let later = Lock {
        mode: LockMode::Governance,
        until: until + 7200,
    };
    assert!(locked
        .extend_retention("m.yaml", Some(&first), later)
        .await
        .unwrap());
    let r = locked
        .retention("m.yaml", Some(&first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.mode, r.until), (LockMode::Compliance, until + 7200));
    assert!(!locked
        .extend_retention("m.yaml", Some(&first), lock)
        .await
        .unwrap());
}
