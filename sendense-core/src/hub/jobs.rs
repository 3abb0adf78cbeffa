//! Jobs as the handle sees them: list, show, log, cancel (how jobs run: [`crate::jobs`]).

use crate::catalog::{JobFilter, JobRecord};
use crate::error::Result;
use crate::sendense::Sendense;

impl Sendense {
    /// Jobs, newest first.
    pub fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        if let Some(g) = &filter.group {
            self.catalog().group(g)?;
        }
        if let Some(p) = &filter.policy {
            self.catalog().policy(p)?;
        }
        self.catalog().jobs(filter)
    }

    /// One job.
    pub fn job(&self, id: i64) -> Result<JobRecord> {
        self.catalog().job(id)
    }

    /// Job `id`'s log, oldest line first.
    pub fn job_log_lines(&self, id: i64) -> Result<Vec<crate::catalog::JobLogLine>> {
        self.catalog().job_log(id)
    }

    /// Asks the process running job `id` to cancel it (`job cancel`); refused for a job that
    /// has ended or whose kind cannot be cancelled.
    pub fn cancel_job(&mut self, id: i64) -> Result<JobRecord> {
        self.catalog_mut().request_cancel(id)
    }
}
