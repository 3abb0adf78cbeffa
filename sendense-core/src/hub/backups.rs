//! Backups as the handle sees them: list and show (taking, deleting and reading them:
//! [`crate::backup`], [`crate::restore`], [`crate::verify`]).

use crate::catalog::BackupRecord;
use crate::error::Result;
use crate::sendense::Sendense;

impl Sendense {
    /// Backups, newest first.
    pub fn backups(&self, filter: &crate::catalog::BackupFilter) -> Result<Vec<BackupRecord>> {
        if let Some(r) = &filter.repo {
            self.catalog().repo(r)?;
        }
        self.catalog().backups(filter)
    }

    /// One backup.
    pub fn backup_record(&self, id: &str) -> Result<BackupRecord> {
        self.catalog().backup(id)
    }
}
