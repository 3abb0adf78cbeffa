//! S3-compatible object storage as a repository: AWS S3, Ceph RGW, MinIO, Wasabi.
//!
//! An S3 repository has the layout of a directory repository, as objects under its prefix, so
//! any S3 client and `qemu-img` can restore from it: one object per finished QCOW2 link (its
//! backing name relative, as on disk), its digest file beside it, and the VM-level manifest
//! uploaded last, only if no object of its name exists yet, to mark the restore point
//! committed.
//!
//! - [`location`]: `https://ENDPOINT/BUCKET[/PREFIX]`, checked.
//! - [`credentials`]: keys from a file, the environment or AWS's profile files — never argv.
//! - [`chain`]: a disk's chain in a bucket, checked and opened for range reads.

pub mod chain;
mod client;
mod commit;
pub mod credentials;
pub mod location;
mod object;
mod repository;

pub use client::{
    part_size, Lock, LockMode, ObjectInfo, PendingUpload, S3Client, S3Options, VersionInfo, Written,
};
pub use commit::Committed;
pub use credentials::S3Keys;
pub use location::S3Location;
pub use object::S3Object;
pub use repository::S3Probe;

/// The real time now (Unix seconds) — Object Lock dates are the server's, never a test clock's.
pub(crate) fn wall_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
