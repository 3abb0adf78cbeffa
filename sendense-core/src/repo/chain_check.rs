//! What every block of a restore point must read as, from the digest records of its chain.
//!
//! The chain of a disk at a backup is its image and the images below it. Walking the links
//! newest first, the first record of a block decides it: the digest of the data that backup
//! wrote, or zeroes ([`Record::Zero`]). A block no link recorded reads as zeroes: nothing
//! was ever written there, and the full at the bottom has no backing file. A link whose scheme
//! does not record zero writes (backups made before it did) leaves a block it has no record for
//! undecided: that block is counted, not checked.
//!
//! A restore hands a [`ChainCheck`] to the copy engine, which checks every block it reads and
//! every range the chain reports as zeroes before writing anything of it. Records are read with
//! positional reads per request (one per link at most), ranges of zeroes only where the digest
//! files hold data, so a check costs the hashing of the data read and little else.

use super::chain::ExpectedLink;
use super::digests::packed::PackedDigests;
use super::digests::{self, Record, Scheme, RECORD};
use crate::error::{Error, ErrorKind, Result};
use crate::transfer::{BlockCheck, BLOCK};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a link's records are: its sparse digest file, or the packed form of it (an S3
/// repository's, read by range).
#[derive(Debug)]
pub enum Records {
    /// A sparse digest file, open.
    Sparse(File),
    /// A packed digest file, checked.
    Packed(PackedDigests),
}

/// One link's records.
#[derive(Debug)]
struct LinkRecords {
    backup: String,
    /// `None` when the backup recorded no digests: none of its blocks can be checked.
    file: Option<Records>,
    scheme: Scheme,
}

/// What a block must read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Data whose digest link `usize` recorded.
    Data(usize, [u8; 32]),
    /// Zeroes; written by link `Some(i)` or by no link.
    Zero(Option<usize>),
    /// Unknown: link `usize` records no zero writes and has no record.
    Unknown(usize),
}

/// Checks the blocks of one disk at one backup against its chain's digest records.
#[derive(Debug)]
pub struct ChainCheck {
    /// The backup restored.
    top: String,
    key: u32,
    /// The disk's size at the backup.
    size: u64,
    /// Top first.
    links: Vec<LinkRecords>,
    unchecked: AtomicU64,
    /// The first block found not as it must be.
    failure: std::sync::Mutex<Option<String>>,
}

impl ChainCheck {
    /// Opens the digest files of `links` (top first, as [`crate::catalog::Catalog::disk_chain`]
    /// gives them), each checked against its recorded digest first: a digest file changed
    /// since its backup is an error, never a reference.
    pub fn open(key: u32, links: &[ExpectedLink]) -> Result<ChainCheck> {
        ChainCheck::open_inner(key, links, true)
    }

    /// Opens the digest files of `links` without checking them again: for a caller that has
    /// just checked them, under a lock that keeps them as they are.
    pub fn open_trusted(key: u32, links: &[ExpectedLink]) -> Result<ChainCheck> {
        ChainCheck::open_inner(key, links, false)
    }

    fn open_inner(key: u32, links: &[ExpectedLink], check: bool) -> Result<ChainCheck> {
        ChainCheck::from_links(key, links, |_, link, recorded, damaged| {
            let path = digests::digests_of(&link.file);
            super::chain::check_inside(&link.repo, &path)?;
            // Checked through the handle that is then read: what was checked is what is used.
            let file = File::open(&path).map_err(|e| damaged(format!("cannot be read ({e})")))?;
            let checked = match digests::Scheme::of_digest(recorded) {
                Some(scheme) if !check => Ok(digests::Checked::Intact(scheme)),
                _ => digests::check_file(&file, &path, recorded),
            };
            Ok((checked, Records::Sparse(file)))
        })
    }

    /// The check of a chain whose records are packed digest files from elsewhere (an S3
    /// repository's, read by range): `packed[i]` is `links[i]`'s, checked here against the
    /// digest its backup recorded.
    pub fn open_packed(
        key: u32,
        links: &[ExpectedLink],
        packed: Vec<Option<PackedDigests>>,
    ) -> Result<ChainCheck> {
        if packed.len() != links.len() {
            return Err(Error::internal("packed digests for another chain"));
        }
        let mut packed: Vec<Option<PackedDigests>> = packed;
        ChainCheck::from_links(key, links, |i, _, recorded, damaged| {
            let p = packed
                .get_mut(i)
                .and_then(Option::take)
                .ok_or_else(|| damaged("is missing".into()))?;
            Ok((p.check(recorded), Records::Packed(p)))
        })
    }

    /// The check of `links`, each link's records opened and checked by `open` (given the
    /// link's place in `links`, the link, its recorded file digest, and the error to make of a
    /// problem).
    fn from_links(
        key: u32,
        links: &[ExpectedLink],
        mut open: impl FnMut(
            usize,
            &ExpectedLink,
            &str,
            &dyn Fn(String) -> Error,
        ) -> Result<(Result<digests::Checked>, Records)>,
    ) -> Result<ChainCheck> {
        let top = links
            .first()
            .ok_or_else(|| Error::internal("a chain without links"))?;
        let mut out = Vec::new();
        for (i, link) in links.iter().enumerate() {
            let Some(recorded) = &link.digest else {
                out.push(LinkRecords {
                    backup: link.backup.clone(),
                    file: None,
                    scheme: Scheme::OffsetPrefixed,
                });
                continue;
            };
            let path = digests::digests_of(&link.file);
            let damaged = |why: String| {
                Error::new(
                    ErrorKind::External,
                    format!(
                        "disk {key} of backup {}: the digest file {} {why}",
                        link.backup,
                        path.display()
                    ),
                )
                .with_help(format!(
                    "Run `sendense backup verify {}`; restore from another backup or repository, \
                     or pass --no-verify to restore without checking.",
                    link.backup
                ))
            };
            let (checked, records) = open(i, link, recorded, &damaged)?;
            let scheme = match checked {
                Ok(digests::Checked::Intact(scheme)) => scheme,
                Ok(digests::Checked::Changed) => {
                    return Err(damaged("was changed since the backup".into()))
                }
                Ok(digests::Checked::UnknownScheme) => {
                    return Err(damaged(format!(
                        "has a digest in a scheme this Sendense does not know (`{recorded}`)"
                    )))
                }
                Err(e) => return Err(damaged(format!("cannot be read ({})", e.message()))),
            };
            out.push(LinkRecords {
                backup: link.backup.clone(),
                file: Some(records),
                scheme,
            });
        }
        Ok(ChainCheck {
            top: top.backup.clone(),
            key,
            size: top.size,
            links: out,
            unchecked: AtomicU64::new(0),
            failure: std::sync::Mutex::new(None),
        })
    }

    /// Bytes read that no record could decide (backups whose scheme records no zero writes).
    pub fn unchecked_bytes(&self) -> u64 {
        self.unchecked.load(Ordering::Relaxed)
    }

    /// What the `n` blocks from block `first` must read as.
    fn expect(&self, first: u64, n: usize) -> Result<Vec<Expect>> {
        let mut out: Vec<Option<Expect>> = vec![None; n];
        let mut buf = vec![0u8; n * RECORD as usize];
        for (i, link) in self.links.iter().enumerate() {
            if out.iter().all(Option::is_some) {
                break;
            }
            let Some(file) = &link.file else {
                out.iter_mut()
                    .filter(|e| e.is_none())
                    .for_each(|e| *e = Some(Expect::Unknown(i)));
                break;
            };
            read_records(file, first, &mut buf, &link.backup)?;
            let root = i + 1 == self.links.len();
            for (b, slot) in out.iter_mut().enumerate().filter(|(_, e)| e.is_none()) {
                let at = (first + b as u64) * BLOCK;
                let rec = &buf[b * RECORD as usize..(b + 1) * RECORD as usize];
                *slot = match Record::of(rec, at) {
                    Record::Data(d) => Some(Expect::Data(i, d)),
                    Record::Zero => Some(Expect::Zero(Some(i))),
                    Record::None if root => Some(Expect::Zero(None)),
                    Record::None if link.scheme.records_zeroes() => None,
                    Record::None => Some(Expect::Unknown(i)),
                };
            }
        }
        Ok(out
            .into_iter()
            .map(|e| e.unwrap_or(Expect::Zero(None)))
            .collect())
    }

    /// What the first block found not as it must be was, if one was.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().map(|f| f.clone()).unwrap_or(None)
    }

    /// The error for the block at `offset` (the first one is kept, see [`ChainCheck::failure`]).
    fn differs(&self, offset: u64, what: String) -> Error {
        let message = format!(
            "disk {} of backup {}: the block at offset {offset} {what}",
            self.key, self.top
        );
        if let Ok(mut first) = self.failure.lock() {
            first.get_or_insert_with(|| message.clone());
        }
        Error::new(ErrorKind::External, message).with_help(format!(
            "The repository was damaged and the restore stopped there (a file target is removed; \
             an NBD target keeps what was written before). Run `sendense backup verify {}`, \
             restore from another backup or repository, or pass --no-verify to restore what the \
             images hold without checking.",
            self.top
        ))
    }

    fn check_block(&self, offset: u64, data: &[u8], expect: Expect) -> Result<()> {
        let zero = data.iter().all(|b| *b == 0);
        match expect {
            Expect::Unknown(_) => {
                self.unchecked
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Expect::Zero(_) if zero => Ok(()),
            Expect::Zero(Some(i)) => Err(self.differs(
                offset,
                format!(
                    "holds data where backup {} wrote zeroes",
                    self.links[i].backup
                ),
            )),
            Expect::Zero(None) => Err(self.differs(
                offset,
                "holds data where no backup of the chain wrote any".into(),
            )),
            Expect::Data(i, want) => {
                let link = &self.links[i];
                if link.scheme.matches(offset, data, &want, self.size) {
                    Ok(())
                } else {
                    Err(self.differs(
                        offset,
                        format!("differs from what backup {} wrote", link.backup),
                    ))
                }
            }
        }
    }
}

impl ChainCheck {
    /// The first block in `[offset, offset + len)` that some link holds data for with no newer
    /// link writing zeroes over it, and the backup that wrote that data. Unlike a restore's
    /// check, a link without a record is looked through even when its scheme records no zero
    /// writes: for finding changes a dirty bitmap missed, data that may still be there counts.
    pub fn recorded_data(&self, offset: u64, len: u64) -> Result<Option<(u64, String)>> {
        let first = offset / BLOCK;
        let end = offset.saturating_add(len).div_ceil(BLOCK);
        let mut candidates: Vec<u64> = Vec::new();
        for link in &self.links {
            if let Some(file) = &link.file {
                recorded_blocks(file, first, end, &mut candidates, &link.backup)?;
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut rec = [0u8; RECORD as usize];
        for block in candidates {
            for link in &self.links {
                let Some(file) = &link.file else {
                    continue;
                };
                read_records(file, block, &mut rec, &link.backup)?;
                match Record::of(&rec, block * BLOCK) {
                    Record::Data(_) => return Ok(Some((block * BLOCK, link.backup.clone()))),
                    Record::Zero => break,
                    Record::None => {}
                }
            }
        }
        Ok(None)
    }
}

impl BlockCheck for ChainCheck {
    fn check_data(&self, offset: u64, data: &[u8]) -> Result<()> {
        let blocks: Vec<&[u8]> = data.chunks(BLOCK as usize).collect();
        let expect = self.expect(offset / BLOCK, blocks.len())?;
        for (i, (block, e)) in blocks.into_iter().zip(expect).enumerate() {
            self.check_block(offset + i as u64 * BLOCK, block, e)?;
        }
        Ok(())
    }

    fn check_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let first = offset / BLOCK;
        let end = offset.saturating_add(len).div_ceil(BLOCK);
        // Only blocks some link holds a record for can be anything but zeroes.
        let mut candidates: Vec<u64> = Vec::new();
        for link in &self.links {
            let Some(file) = &link.file else {
                continue;
            };
            recorded_blocks(file, first, end, &mut candidates, &link.backup)?;
        }
        candidates.sort_unstable();
        candidates.dedup();
        for block in candidates {
            match self.expect(block, 1)?[0] {
                Expect::Data(i, _) => {
                    return Err(self.differs(
                        block * BLOCK,
                        format!(
                            "reads as zeroes where backup {} wrote data",
                            self.links[i].backup
                        ),
                    ))
                }
                Expect::Zero(_) | Expect::Unknown(_) => {}
            }
        }
        // Above a link that records no zero writes (the full aside, below which there is
        // nothing), or with a link that recorded nothing at all, a block without records is
        // not known to be zeroes.
        let last = self.links.len() - 1;
        let undecided = self
            .links
            .iter()
            .enumerate()
            .any(|(i, l)| l.file.is_none() || (i < last && !l.scheme.records_zeroes()));
        if undecided {
            self.unchecked.fetch_add(len, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Reads the records of the blocks from `first` into `buf` (past the file's end: none).
fn read_records(records: &Records, first: u64, buf: &mut [u8], backup: &str) -> Result<()> {
    let file = match records {
        Records::Sparse(f) => f,
        Records::Packed(p) => {
            return p.read_records(first, buf).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("reading the digests of backup {backup}: {e}"),
                )
            })
        }
    };
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], first * RECORD + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("reading the digests of backup {backup}: {e}"),
                ))
            }
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// Adds to `out` the blocks in `[first, end)` that `file` holds a record for, reading only the
/// file's data regions.
fn recorded_blocks(
    records: &Records,
    first: u64,
    end: u64,
    out: &mut Vec<u64>,
    backup: &str,
) -> Result<()> {
    match records {
        Records::Sparse(file) => digests::scan_records(file, first, end, |block, _| {
            out.push(block);
            true
        }),
        Records::Packed(p) => p.scan(first, end, |block, _| {
            out.push(block);
            true
        }),
    }
    .map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("reading the digests of backup {backup}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::digests::DigestFile;
    use crate::transfer::BlockDigests;
    use std::path::Path;

    /// A link of a chain in `dir`: its digest file written by `write`, its digest recorded.
    fn link(dir: &Path, id: &str, size: u64, write: impl Fn(&DigestFile)) -> ExpectedLink {
        let file = dir.join(format!("{id}.qcow2"));
        let dfile = digests::digests_of(&file);
        let d = DigestFile::create(&dfile, size).unwrap();
        write(&d);
        ExpectedLink {
            backup: id.into(),
            file,
            size,
            digest: Some(digests::file_digest(&dfile, Scheme::CURRENT).unwrap()),
            image_bytes: None,
            damaged: None,
            manifest: None,
            repo: dir.to_path_buf(),
        }
    }

    fn block(v: u8) -> Vec<u8> {
        vec![v; BLOCK as usize]
    }

    #[test]
    fn the_newest_record_decides_and_no_record_means_zeroes() {
        let dir = tempfile::tempdir().unwrap();
        let size = 8 * BLOCK;
        // Full: data 1 in blocks 0..4. Incremental: data 2 in block 1, zeroes in block 2.
        let full = link(dir.path(), "full", size, |d| {
            for b in 0..4 {
                d.record(b * BLOCK, &block(1)).unwrap();
            }
        });
        let inc = link(dir.path(), "inc", size, |d| {
            d.record(BLOCK, &block(2)).unwrap();
            d.record_zeroes(2 * BLOCK, BLOCK).unwrap();
        });
        // The digest files as they are, and packed as an S3 repository holds them: the same.
        let links = [inc.clone(), full.clone()];
        let checks = [
            ChainCheck::open(2000, &links).unwrap(),
            ChainCheck::open_packed(2000, &links, packed(&links)).unwrap(),
        ];
        for check in checks {
            the_newest_record_decides(check);
        }
        // The full alone: its own blocks.
        let check = ChainCheck::open(2000, std::slice::from_ref(&full)).unwrap();
        check.check_data(2 * BLOCK, &block(1)).unwrap();
        assert!(check.check_data(BLOCK, &block(2)).is_err());
        // A packed file that is not the recorded one is refused.
        let mut wrong = packed(&links);
        wrong.swap(0, 1);
        let e = ChainCheck::open_packed(2000, &links, wrong).unwrap_err();
        assert!(e.message().contains("was changed since the backup"), "{e}");
    }

    /// The packed form of each link's digest file, opened.
    fn packed(links: &[ExpectedLink]) -> Vec<Option<PackedDigests>> {
        links
            .iter()
            .map(|l| {
                let sparse = digests::digests_of(&l.file);
                let out = sparse.with_extension("packed");
                digests::packed::pack(&File::open(&sparse).unwrap(), &sparse, &out).unwrap();
                Some(PackedDigests::open(Box::new(File::open(&out).unwrap()), "p").unwrap())
            })
            .collect()
    }

    /// The checks of a chain of `inc` over `full` (see the test above).
    fn the_newest_record_decides(check: ChainCheck) {
        // What a restore of the incremental reads.
        let mut disk = block(1);
        disk.extend(block(2));
        disk.extend(block(0));
        disk.extend(block(1));
        check.check_data(0, &disk).unwrap();
        check.check_zeroes(4 * BLOCK, 4 * BLOCK).unwrap();
        check.check_zeroes(2 * BLOCK, BLOCK).unwrap();
        assert_eq!(check.unchecked_bytes(), 0);
        // The full's old data showing through the zeroed block; data where nothing was
        // written; zeroes where data was written; a changed byte.
        let err = |e: Error| e.message().to_string();
        let shows = check.check_data(2 * BLOCK, &block(1)).unwrap_err();
        assert!(err(shows).contains("offset 131072 holds data where backup inc wrote zeroes"));
        let stray = check.check_data(5 * BLOCK, &block(7)).unwrap_err();
        assert!(err(stray).contains("holds data where no backup of the chain wrote any"));
        let lost = check.check_zeroes(0, 4 * BLOCK).unwrap_err();
        assert!(err(lost).contains("offset 0 reads as zeroes where backup full wrote data"));
        let lost = check.check_zeroes(BLOCK, BLOCK).unwrap_err();
        assert!(err(lost).contains("where backup inc wrote data"));
        let mut flipped = block(2);
        flipped[100] ^= 4;
        let differs = check.check_data(BLOCK, &flipped).unwrap_err();
        assert!(err(differs).contains("offset 65536 differs from what backup inc wrote"));
    }

    #[test]
    fn a_changed_digest_file_is_refused_and_old_schemes_leave_blocks_unchecked() {
        let dir = tempfile::tempdir().unwrap();
        let size = 4 * BLOCK;
        let full = link(dir.path(), "full", size, |d| {
            d.record(0, &block(1)).unwrap();
        });
        let mut inc = link(dir.path(), "inc", size, |_| {});
        // An incremental written before zero writes were recorded: its empty record may mean
        // "zeroed", so the full's record below cannot decide block 0.
        let dfile = digests::digests_of(&inc.file);
        inc.digest = Some(digests::file_digest(&dfile, Scheme::OffsetKeyed).unwrap());
        let check = ChainCheck::open(2000, &[inc.clone(), full.clone()]).unwrap();
        check.check_data(0, &block(0)).unwrap();
        check.check_data(0, &block(1)).unwrap();
        assert_eq!(check.unchecked_bytes(), 2 * BLOCK);
        // A record changed after the backup: refused before anything is read.
        let fdigests = digests::digests_of(&full.file);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&fdigests)
            .unwrap();
        f.write_all_at(&[1u8; 32], RECORD).unwrap();
        let e = ChainCheck::open(2000, &[inc, full]).unwrap_err();
        assert!(e.message().contains("was changed since the backup"), "{e}");
    }

    #[test]
    fn data_a_dirty_bitmap_may_have_missed_is_found_through_every_link() {
        let dir = tempfile::tempdir().unwrap();
        let size = 4 * BLOCK;
        let full = link(dir.path(), "full", size, |d| {
            d.record(0, &block(1)).unwrap();
            d.record(BLOCK, &block(1)).unwrap();
        });
        // An incremental that zeroed block 1 (its marker hides the full's data there).
        let inc = link(dir.path(), "inc", size, |d| {
            d.record_zeroes(BLOCK, BLOCK).unwrap();
        });
        let check = ChainCheck::open(2000, &[inc.clone(), full.clone()]).unwrap();
        assert_eq!(check.recorded_data(BLOCK, 3 * BLOCK).unwrap(), None);
        assert_eq!(
            check.recorded_data(0, 4 * BLOCK).unwrap(),
            Some((0, "full".to_string()))
        );
        // An incremental of a scheme without zero markers: its silence hides nothing, so the
        // full's data may still be what the chain holds there.
        let mut old = link(dir.path(), "old", size, |_| {});
        let dfile = digests::digests_of(&old.file);
        old.digest = Some(digests::file_digest(&dfile, Scheme::OffsetKeyed).unwrap());
        let check = ChainCheck::open(2000, &[old, full]).unwrap();
        assert_eq!(
            check.recorded_data(BLOCK, 3 * BLOCK).unwrap(),
            Some((BLOCK, "full".to_string()))
        );
    }

    #[test]
    fn ranges_of_zeroes_read_only_where_digest_files_hold_data() {
        let dir = tempfile::tempdir().unwrap();
        // A 64 GiB disk: a 32 MiB digest file, one record at its end.
        let size = 64 << 30;
        let full = link(dir.path(), "full", size, |d| {
            d.record(size - BLOCK, &block(3)).unwrap();
        });
        let check = ChainCheck::open(2000, &[full]).unwrap();
        check.check_zeroes(0, size - BLOCK).unwrap();
        assert!(check.check_zeroes(0, size).is_err());
        check.check_data(size - BLOCK, &block(3)).unwrap();
    }
}
