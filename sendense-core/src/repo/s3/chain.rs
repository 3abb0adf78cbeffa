//! A disk's chain in an S3 repository, opened for reading by range: each object's length and
//! QCOW2 header checked against what the catalog recorded (the backing name of each link the
//! next link's name, the disk's size), then the chain reader over the objects and, to check
//! every block read, the chain's packed digest files.

use super::{S3Client, S3Object};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::chain::ExpectedLink;
use crate::repo::chain_check::ChainCheck;
use crate::repo::chain_read::ChainReader;
use crate::repo::digests::packed::PackedDigests;
use crate::repo::read_at::ReadAt;
use std::sync::OnceLock;

/// The packed digest file of an image (`x/<id>.qcow2` → `x/<id>.digests.packed`): packed, as
/// an object cannot be sparse; named apart from a directory repository's sparse one.
pub fn digests_rel(image_rel: &str) -> String {
    let stem = image_rel.strip_suffix(".qcow2").unwrap_or(image_rel);
    format!("{stem}.digests.packed")
}

/// The runtime range reads run on while blocking code waits for them: one per process, never
/// shut down (a reader may live on any thread).
pub fn io_runtime() -> Result<tokio::runtime::Handle> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("sendense-s3")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map(|rt| rt.handle().clone())
    .map_err(|e| Error::internal(format!("starting the S3 runtime: {e}")))
}

/// One link of a chain in a bucket: as the catalog recorded it, and its image's path there.
#[derive(Debug, Clone)]
pub struct BucketLink {
    /// The link as recorded (its `file` is empty: there is no local file).
    pub expected: ExpectedLink,
    /// Its image's path in the repository.
    pub rel: String,
    /// The versions of its image and packed digest file Sendense wrote (or found committed),
    /// on a versioned bucket: read whatever was written over them since.
    pub versions: [Option<String>; 2],
}

/// An error naming damage in the bucket (exit 1), about backup `backup`'s link.
fn damaged(backup: &str, why: String) -> Error {
    Error::new(ErrorKind::External, format!("backup {backup}: {why}"))
}

/// Object `rel` (at `version`, when known) opened for range reads at its length now; missing
/// is damage.
pub fn open_object(
    client: &S3Client,
    backup: &str,
    rel: &str,
    version: Option<&str>,
) -> Result<S3Object> {
    let key = client.location().key(rel);
    let size = crate::rt::block_on(client.size_of_version(&key, version))??
        .ok_or_else(|| damaged(backup, format!("object {key} is missing")))?;
    Ok(S3Object::new(client.clone(), key, size, io_runtime()?)
        .at_version(version.map(str::to_string)))
}

/// What is wrong with the chain `links` (top first) in the bucket, as [`chain_problems`] says
/// for files; the opened images, top first, when nothing is.
///
/// [`chain_problems`]: crate::repo::chain::chain_problems
pub fn open_images(client: &S3Client, links: &[BucketLink]) -> Result<Vec<S3Object>> {
    let name = |rel: &str| rel.rsplit('/').next().unwrap_or(rel).to_string();
    let mut out = Vec::with_capacity(links.len());
    for (i, link) in links.iter().enumerate() {
        let backup = &link.expected.backup;
        let object = open_object(client, backup, &link.rel, link.versions[0].as_deref())?;
        let len = object
            .len()
            .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
        if let Some(want) = link.expected.image_bytes {
            if len != want {
                return Err(damaged(
                    backup,
                    format!("its image object is {len} bytes long; the copy left it {want} bytes"),
                ));
            }
        }
        // A read that fails is the bucket out of reach, not damage: told apart first (the
        // header is then read from the chunk kept).
        let mut head = vec![0u8; len.min(4096) as usize];
        object.read_full_at(&mut head, 0).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("reading {}: {e}", client.location().key(&link.rel)),
            )
        })?;
        let header = crate::repo::chain::qcow2_header_of(&object)
            .map_err(|e| damaged(backup, format!("its image cannot be opened: {e}")))?;
        let want = links.get(i + 1).map(|p| name(&p.rel));
        if header.backing != want {
            return Err(damaged(
                backup,
                format!(
                    "its image is backed by {}, not by {}",
                    header.backing.as_deref().unwrap_or("nothing"),
                    want.as_deref().unwrap_or("nothing (it is a full)")
                ),
            ));
        }
        if header.backing.is_some() && header.backing_format.as_deref() != Some("qcow2") {
            return Err(damaged(
                backup,
                format!(
                    "its image names its backing file's format {:?}, not qcow2",
                    header.backing_format
                ),
            ));
        }
        if header.size != link.expected.size.div_ceil(512) * 512 {
            return Err(damaged(
                backup,
                format!(
                    "its image says its disk has {} bytes; the backup recorded {}",
                    header.size, link.expected.size
                ),
            ));
        }
        out.push(object);
    }
    Ok(out)
}

/// The chain `links` (top first) of disk `key`, opened for reading (see the module docs), with
/// the check of every block read unless `verify` is false.
pub fn open_chain(
    client: &S3Client,
    key: u32,
    links: &[BucketLink],
    verify: bool,
) -> Result<(ChainReader, Option<ChainCheck>)> {
    let objects = open_images(client, links)?;
    let images: Vec<(String, Box<dyn ReadAt>)> = objects
        .into_iter()
        .zip(links)
        .map(|(o, l)| {
            (
                client.location().key(&l.rel),
                Box::new(o) as Box<dyn ReadAt>,
            )
        })
        .collect();
    let reader = ChainReader::open_images(images)?.ok_or_else(|| {
        Error::new(
            ErrorKind::Refused,
            format!(
                "disk {key}: an image in the bucket has a layout only QEMU reads; download the chain and restore it with qemu-img"
            ),
        )
    })?;
    if !verify {
        return Ok((reader, None));
    }
    let mut packed = Vec::with_capacity(links.len());
    for link in links {
        let rel = digests_rel(&link.rel);
        let object = open_object(
            client,
            &link.expected.backup,
            &rel,
            link.versions[1].as_deref(),
        )?;
        let name = client.location().key(&rel);
        packed.push(Some(PackedDigests::open(Box::new(object), &name).map_err(
            |e| damaged(&link.expected.backup, e.message().to_string()),
        )?));
    }
    let check = ChainCheck::open_packed(
        key,
        &links.iter().map(|l| l.expected.clone()).collect::<Vec<_>>(),
        packed,
    )?;
    Ok((reader, Some(check)))
}
