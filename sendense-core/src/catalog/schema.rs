//! Catalog schema and migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Migrations run at open inside
//! one `BEGIN IMMEDIATE` transaction that re-reads the version first, so two processes opening a
//! fresh catalog at once apply each migration exactly once. A catalog written by a newer Sendense
//! (a higher version than [`MIGRATIONS`] knows) is refused rather than misread.
//!
//! Design rules: every relation is a foreign key (never a string match on ids); rows that
//! outlive their parent on purpose use `ON DELETE SET NULL`; rows that must stop a deletion use
//! `RESTRICT` (a repository or VM that still has backups, a backup another one depends on).

/// Each entry is one migration; entry N brings the catalog to `user_version` N+1.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11];

const V1: &str = r#"
CREATE TABLE catalog_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Remote nodes (sendense-sna hosts) reached over SSH.
CREATE TABLE nodes (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    host       TEXT NOT NULL,
    port       INTEGER NOT NULL DEFAULT 22 CHECK (port BETWEEN 1 AND 65535),
    ssh_user   TEXT NOT NULL,
    host_key   TEXT,
    sna_path   TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE vms (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    source_kind TEXT NOT NULL CHECK (source_kind IN ('image', 'qemu', 'nbd', 'vmware')),
    source      TEXT NOT NULL DEFAULT '{}',
    node_id     INTEGER REFERENCES nodes(id) ON DELETE RESTRICT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX vms_node ON vms(node_id);

-- Disk keys are assigned once, at discovery, and matched by identity afterwards.
CREATE TABLE vm_disks (
    id         INTEGER PRIMARY KEY,
    vm_id      INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    disk_key   INTEGER NOT NULL CHECK (disk_key >= 2000),
    identity   TEXT NOT NULL,
    format     TEXT,
    size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),
    checkpoint TEXT,
    present    INTEGER NOT NULL DEFAULT 1 CHECK (present IN (0, 1)),
    created_at TEXT NOT NULL,
    UNIQUE (vm_id, disk_key),
    UNIQUE (vm_id, identity)
);

CREATE TABLE repositories (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    path            TEXT NOT NULL UNIQUE,
    repo_uuid       TEXT NOT NULL UNIQUE,
    require_mount   INTEGER NOT NULL DEFAULT 0 CHECK (require_mount IN (0, 1)),
    is_default      INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    total_bytes     INTEGER,
    available_bytes INTEGER,
    refreshed_at    TEXT,
    created_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX repositories_one_default ON repositories(is_default) WHERE is_default = 1;

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL
                     CHECK (kind IN ('backup', 'restore', 'verify', 'export', 'copy', 'prune', 'cleanup')),
    vm_id            INTEGER REFERENCES vms(id) ON DELETE SET NULL,
    vm_name          TEXT,
    repo_id          INTEGER REFERENCES repositories(id) ON DELETE SET NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    pid              INTEGER,
    pid_start        INTEGER,
    host             TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    ended_at         TEXT,
    bytes_total      INTEGER NOT NULL DEFAULT 0,
    bytes_done       INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1))
);
CREATE INDEX jobs_vm ON jobs(vm_id, created_at);
CREATE INDEX jobs_status ON jobs(status);

CREATE TABLE job_events (
    id      INTEGER PRIMARY KEY,
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    ts      TEXT NOT NULL,
    level   TEXT NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
    message TEXT NOT NULL,
    data    TEXT
);
CREATE INDEX job_events_job ON job_events(job_id, id);

-- A backup is VM-level: one snapshot, one row, one manifest; its disks are in backup_disks.
CREATE TABLE backups (
    id           TEXT PRIMARY KEY,
    vm_id        INTEGER NOT NULL REFERENCES vms(id) ON DELETE RESTRICT,
    repo_id      INTEGER NOT NULL REFERENCES repositories(id) ON DELETE RESTRICT,
    job_id       INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    created_at   TEXT NOT NULL,
    completed_at TEXT,
    manifest     TEXT
);
CREATE INDEX backups_vm ON backups(vm_id, created_at);
CREATE INDEX backups_repo ON backups(repo_id);
CREATE INDEX backups_job ON backups(job_id);

-- The parent of an incremental is the previous backup of THE SAME disk: the composite foreign
-- key makes any other parent impossible, and RESTRICT keeps a parent from being deleted.
CREATE TABLE backup_disks (
    backup_id        TEXT NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    disk_key         INTEGER NOT NULL,
    vm_disk_id       INTEGER REFERENCES vm_disks(id) ON DELETE SET NULL,
    mode             TEXT NOT NULL CHECK (mode IN ('full', 'incremental')),
    reason           TEXT NOT NULL,
    file             TEXT NOT NULL,
    parent_backup_id TEXT,
    checkpoint       TEXT,
    size_bytes       INTEGER NOT NULL CHECK (size_bytes >= 0),
    bytes_read       INTEGER NOT NULL DEFAULT 0,
    bytes_written    INTEGER NOT NULL DEFAULT 0,
    digest           TEXT,
    status           TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    error            TEXT,
    PRIMARY KEY (backup_id, disk_key),
    FOREIGN KEY (parent_backup_id, disk_key)
        REFERENCES backup_disks(backup_id, disk_key) ON DELETE RESTRICT,
    CHECK ((mode = 'full' AND parent_backup_id IS NULL)
        OR (mode = 'incremental' AND parent_backup_id IS NOT NULL))
);
CREATE INDEX backup_disks_parent ON backup_disks(parent_backup_id, disk_key);
CREATE INDEX backup_disks_vm_disk ON backup_disks(vm_disk_id);

-- Every NBD export Sendense started: a TCP port on 127.0.0.1 or a Unix socket. Processes are
-- identified by pid AND start time (/proc/PID/stat field 22), so a reused pid is never mistaken
-- for the process Sendense started.
CREATE TABLE nbd_exports (
    id           INTEGER PRIMARY KEY,
    port         INTEGER UNIQUE CHECK (port BETWEEN 1 AND 65535),
    socket       TEXT UNIQUE,
    export_name  TEXT NOT NULL,
    job_id       INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    owner_pid    INTEGER NOT NULL,
    owner_start  INTEGER NOT NULL,
    pid          INTEGER,
    pid_start    INTEGER,
    cmdline      TEXT,
    file         TEXT,
    allocated_at TEXT NOT NULL,
    CHECK (port IS NOT NULL OR socket IS NOT NULL)
);
CREATE INDEX nbd_exports_job ON nbd_exports(job_id);

CREATE TABLE policies (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    keep_last    INTEGER CHECK (keep_last >= 0),
    keep_daily   INTEGER CHECK (keep_daily >= 0),
    keep_weekly  INTEGER CHECK (keep_weekly >= 0),
    keep_monthly INTEGER CHECK (keep_monthly >= 0),
    keep_yearly  INTEGER CHECK (keep_yearly >= 0),
    created_at   TEXT NOT NULL
);

CREATE TABLE copy_rules (
    id           INTEGER PRIMARY KEY,
    policy_id    INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    dest_repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE RESTRICT,
    keep_last    INTEGER CHECK (keep_last >= 0),
    enabled      INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at   TEXT NOT NULL,
    UNIQUE (policy_id, dest_repo_id)
);
CREATE INDEX copy_rules_repo ON copy_rules(dest_repo_id);

CREATE TABLE protection_groups (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    policy_id   INTEGER REFERENCES policies(id) ON DELETE SET NULL,
    repo_id     INTEGER REFERENCES repositories(id) ON DELETE RESTRICT,
    created_at  TEXT NOT NULL
);

-- A VM may belong to several groups.
CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES protection_groups(id) ON DELETE CASCADE,
    vm_id    INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    priority INTEGER NOT NULL DEFAULT 0,
    enabled  INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    PRIMARY KEY (group_id, vm_id)
);
CREATE INDEX group_members_vm ON group_members(vm_id);

CREATE TABLE schedules (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    cron        TEXT NOT NULL,
    group_id    INTEGER REFERENCES protection_groups(id) ON DELETE CASCADE,
    vm_id       INTEGER REFERENCES vms(id) ON DELETE CASCADE,
    repo_id     INTEGER REFERENCES repositories(id) ON DELETE RESTRICT,
    mode        TEXT NOT NULL DEFAULT 'auto' CHECK (mode IN ('auto', 'full', 'incremental')),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    last_run_at TEXT,
    last_job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    created_at  TEXT NOT NULL,
    CHECK ((group_id IS NULL) <> (vm_id IS NULL))
);
CREATE INDEX schedules_group ON schedules(group_id);
CREATE INDEX schedules_vm ON schedules(vm_id);

-- Copies of backups into other repositories (3-2-1).
CREATE TABLE copies (
    id             INTEGER PRIMARY KEY,
    backup_id      TEXT NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    rule_id        INTEGER REFERENCES copy_rules(id) ON DELETE SET NULL,
    dest_repo_id   INTEGER NOT NULL REFERENCES repositories(id) ON DELETE RESTRICT,
    job_id         INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    created_at     TEXT NOT NULL,
    completed_at   TEXT,
    error          TEXT,
    UNIQUE (backup_id, dest_repo_id)
);
CREATE INDEX copies_dest ON copies(dest_repo_id);
"#;

/// Crash safety: what a killed job left outside the catalog's own rows is recorded before it
/// exists, so the reconciliation can find it.
const V2: &str = r#"
-- A backup job may leave objects on its source (QEMU block jobs, fleecing nodes, exports,
-- checkpoint bitmaps) until its teardown ran: set when the job is created, cleared once the
-- source is known clean; the reconciliation repairs the sources of ended jobs that still have it.
ALTER TABLE jobs ADD COLUMN source_dirty INTEGER NOT NULL DEFAULT 0 CHECK (source_dirty IN (0, 1));

-- A delete in progress: set (synced) before the first file goes; the reconciliation finishes
-- the delete of a backup whose deleting process is gone. Such a backup is never read again.
ALTER TABLE backups ADD COLUMN deleting_at TEXT;

-- Files a job creates outside the repository and the scratch directory (a restore's
-- `<file>.partial`), recorded before they are created: the reconciliation removes those of
-- jobs that ended.
CREATE TABLE job_files (
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    path   TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
);
"#;

/// Integrity: what a backup's files must still be, and what checks found.
const V3: &str = r#"
-- The length of each committed image: images are never written after their commit, so a
-- truncated or appended image is found by its length, before anything reads it.
ALTER TABLE backup_disks ADD COLUMN image_bytes INTEGER CHECK (image_bytes IS NULL OR image_bytes >= 0);

-- Why the backup is damaged, as the last `backup verify` or restore that read it found; NULL
-- when none found damage (a verify that finds it whole clears it). Nothing builds on a
-- damaged backup.
ALTER TABLE backups ADD COLUMN damaged TEXT;

-- This hub's identity: the owner it writes into the repositories it registers, so a second
-- hub importing one is refused unless it takes it over (and then this hub stops writing there).
CREATE TABLE hub (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    hub_id     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO hub (id, hub_id, created_at)
    VALUES (1, lower(hex(randomblob(16))), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
"#;

/// One record for every process Sendense starts (qemu-nbd, nbdkit, sendense-sna, hooks): the
/// export rows keep their address and point at the process serving it.
const V4: &str = r#"
-- Every child process Sendense started and has not yet seen end. `owner_*` is the sendense
-- process that started it; `pid`/`pid_start` the child once it runs (NULL while it starts: its
-- exact command line, unique by construction, finds it then); `group_leader` = 1 when it leads
-- a process group of its own that is stopped as a whole; `token` is a random marker in the
-- environment of a group leader, which everything it starts inherits, so what it left running
-- after it died is still found (and nothing else is).
CREATE TABLE children (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('qemu-nbd', 'nbdkit', 'sendense-sna', 'hook')),
    label        TEXT NOT NULL,
    job_id       INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    owner_pid    INTEGER NOT NULL,
    owner_start  INTEGER NOT NULL,
    pid          INTEGER,
    pid_start    INTEGER,
    cmdline      TEXT NOT NULL,
    group_leader INTEGER NOT NULL DEFAULT 0 CHECK (group_leader IN (0, 1)),
    token        TEXT,
    started_at   TEXT NOT NULL
);
CREATE INDEX children_job ON children(job_id);

ALTER TABLE nbd_exports ADD COLUMN child_id INTEGER REFERENCES children(id) ON DELETE SET NULL;

-- Servers recorded by an older Sendense move into the new record.
INSERT INTO children (kind, label, job_id, owner_pid, owner_start, pid, pid_start, cmdline, started_at)
    SELECT 'qemu-nbd', 'export ' || export_name, job_id, owner_pid, owner_start, pid, pid_start,
           cmdline, allocated_at
    FROM nbd_exports WHERE cmdline IS NOT NULL;
UPDATE nbd_exports SET child_id = (
    SELECT c.id FROM children c
    WHERE c.kind = 'qemu-nbd' AND c.cmdline = nbd_exports.cmdline
      AND c.owner_pid = nbd_exports.owner_pid AND c.owner_start = nbd_exports.owner_start
) WHERE cmdline IS NOT NULL;
ALTER TABLE nbd_exports DROP COLUMN pid;
ALTER TABLE nbd_exports DROP COLUMN pid_start;
ALTER TABLE nbd_exports DROP COLUMN cmdline;
"#;

/// Unattended protection: policies (where, when, how long, copies) and groups of VMs. The
/// tables of the first schema were never used; they are replaced by ones with the rules this
/// needs (a policy a group uses cannot be removed).
const V5: &str = r#"
DROP TABLE copies;
DROP TABLE schedules;
DROP TABLE group_members;
DROP TABLE protection_groups;
DROP TABLE copy_rules;
DROP TABLE policies;

-- Where a group's backups go, when (cron, local time; NULL: by hand only), when a backup is a
-- full (every N backups, or on its own schedule), when the backups are verified, and how many
-- are kept (the prune rules; all 0: everything is kept).
CREATE TABLE policies (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    repo_id         INTEGER NOT NULL REFERENCES repositories(id) ON DELETE RESTRICT,
    schedule        TEXT,
    full_every      INTEGER CHECK (full_every IS NULL OR full_every >= 1),
    full_schedule   TEXT,
    verify_schedule TEXT,
    keep_last       INTEGER NOT NULL DEFAULT 0 CHECK (keep_last >= 0),
    keep_hourly     INTEGER NOT NULL DEFAULT 0 CHECK (keep_hourly >= 0),
    keep_daily      INTEGER NOT NULL DEFAULT 0 CHECK (keep_daily >= 0),
    keep_weekly     INTEGER NOT NULL DEFAULT 0 CHECK (keep_weekly >= 0),
    keep_monthly    INTEGER NOT NULL DEFAULT 0 CHECK (keep_monthly >= 0),
    keep_yearly     INTEGER NOT NULL DEFAULT 0 CHECK (keep_yearly >= 0),
    created_at      TEXT NOT NULL,
    CHECK (full_every IS NULL OR full_schedule IS NULL)
);
CREATE INDEX policies_repo ON policies(repo_id);

-- Where a policy's backups are copied, and how many copies are kept there.
CREATE TABLE copy_rules (
    id           INTEGER PRIMARY KEY,
    policy_id    INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    dest_repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE RESTRICT,
    keep_last    INTEGER NOT NULL DEFAULT 0 CHECK (keep_last >= 0),
    keep_hourly  INTEGER NOT NULL DEFAULT 0 CHECK (keep_hourly >= 0),
    keep_daily   INTEGER NOT NULL DEFAULT 0 CHECK (keep_daily >= 0),
    keep_weekly  INTEGER NOT NULL DEFAULT 0 CHECK (keep_weekly >= 0),
    keep_monthly INTEGER NOT NULL DEFAULT 0 CHECK (keep_monthly >= 0),
    keep_yearly  INTEGER NOT NULL DEFAULT 0 CHECK (keep_yearly >= 0),
    created_at   TEXT NOT NULL,
    UNIQUE (policy_id, dest_repo_id)
);
CREATE INDEX copy_rules_repo ON copy_rules(dest_repo_id);

-- VMs protected together by one policy. A VM may be in several groups.
CREATE TABLE protection_groups (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    policy_id    INTEGER NOT NULL REFERENCES policies(id) ON DELETE RESTRICT,
    max_parallel INTEGER NOT NULL DEFAULT 1 CHECK (max_parallel >= 1),
    priority     INTEGER NOT NULL DEFAULT 0,
    last_run_at  TEXT,
    last_result  TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX protection_groups_policy ON protection_groups(policy_id);

CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES protection_groups(id) ON DELETE CASCADE,
    vm_id    INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    added_at TEXT NOT NULL,
    PRIMARY KEY (group_id, vm_id)
);
CREATE INDEX group_members_vm ON group_members(vm_id);

-- Copies of backups into other repositories (3-2-1).
CREATE TABLE copies (
    id           INTEGER PRIMARY KEY,
    backup_id    TEXT NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    rule_id      INTEGER REFERENCES copy_rules(id) ON DELETE SET NULL,
    dest_repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE RESTRICT,
    job_id       INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    created_at   TEXT NOT NULL,
    completed_at TEXT,
    error        TEXT,
    UNIQUE (backup_id, dest_repo_id)
);
CREATE INDEX copies_dest ON copies(dest_repo_id);
"#;

/// Copies (3-2-1): a copy of a backup in another repository is a backup of its own there (its
/// own id, rows, chain and retention), which records the backup it copies. The table of the
/// previous schema, never used, goes.
const V6: &str = r#"
DROP TABLE copies;

-- The backup this one is a copy of (the first backup of that restore point; no foreign key:
-- the original may be deleted while its copies stay).
ALTER TABLE backups ADD COLUMN copy_of TEXT;
CREATE INDEX backups_copy_of ON backups(copy_of);

-- The scheduled instant a group's backups were last verified for (its policy's verify
-- schedule), and what that found.
ALTER TABLE protection_groups ADD COLUMN last_verify_at TEXT;

-- How many backups of the disk were taken from its source since the last full taken from it
-- (0: this one is such a full; NULL: not known). Merges and consolidations leave it alone, so a
-- policy's `full_every` counts backups taken, however short prune keeps the chains.
ALTER TABLE backup_disks ADD COLUMN since_full INTEGER;
-- Backups of earlier schemas: their depth in the chain as it is now, the best count known.
WITH RECURSIVE depth(backup_id, disk_key, n) AS (
    SELECT backup_id, disk_key, 0 FROM backup_disks WHERE parent_backup_id IS NULL
    UNION ALL
    SELECT c.backup_id, c.disk_key, depth.n + 1 FROM backup_disks c
    JOIN depth ON c.parent_backup_id = depth.backup_id AND c.disk_key = depth.disk_key
)
UPDATE backup_disks SET since_full = (SELECT n FROM depth
    WHERE depth.backup_id = backup_disks.backup_id AND depth.disk_key = backup_disks.disk_key);
ALTER TABLE protection_groups ADD COLUMN last_verify_result TEXT;
"#;

/// Remote nodes: how the hub signs in (a private key file, or the agent), and what it found
/// there last.
const V7: &str = r#"
ALTER TABLE nodes ADD COLUMN identity TEXT;
ALTER TABLE nodes ADD COLUMN sna_version TEXT;
ALTER TABLE nodes ADD COLUMN checked_at TEXT;
"#;

/// vCenters: the vSphere servers VMware VMs are reached through (their passwords are files of
/// the state directory, not rows).
const V8: &str = r#"
CREATE TABLE vcenters (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    url         TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    thumbprint  TEXT NOT NULL,
    full_name   TEXT,
    api_version TEXT,
    checked_at  TEXT,
    created_at  TEXT NOT NULL
);
"#;

/// Mounted restore points, the job kind `mount` that serves them and the child kind
/// `qemu-storage-daemon` that exports them. SQLite cannot change a CHECK constraint, so the jobs
/// and children tables are rebuilt as SQLite documents it: a new table, the rows copied, the old
/// one dropped, the new one renamed — foreign keys off meanwhile (see `Catalog::migrate`), so the
/// other tables' references keep naming `jobs` and `children` and no delete cascades.
const V9: &str = r#"
CREATE TABLE jobs_v9 (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL
                     CHECK (kind IN ('backup', 'restore', 'verify', 'export', 'copy', 'prune',
                                     'cleanup', 'mount')),
    vm_id            INTEGER REFERENCES vms(id) ON DELETE SET NULL,
    vm_name          TEXT,
    repo_id          INTEGER REFERENCES repositories(id) ON DELETE SET NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    pid              INTEGER,
    pid_start        INTEGER,
    host             TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    ended_at         TEXT,
    bytes_total      INTEGER NOT NULL DEFAULT 0,
    bytes_done       INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    source_dirty     INTEGER NOT NULL DEFAULT 0 CHECK (source_dirty IN (0, 1))
);
INSERT INTO jobs_v9 (id, kind, vm_id, vm_name, repo_id, status, pid, pid_start, host, created_at,
                  started_at, ended_at, bytes_total, bytes_done, error, cancel_requested,
                  source_dirty)
    SELECT id, kind, vm_id, vm_name, repo_id, status, pid, pid_start, host, created_at,
           started_at, ended_at, bytes_total, bytes_done, error, cancel_requested, source_dirty
    FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v9 RENAME TO jobs;
CREATE INDEX jobs_vm ON jobs(vm_id, created_at);
CREATE INDEX jobs_status ON jobs(status);

CREATE TABLE children_v9 (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('qemu-nbd', 'nbdkit', 'sendense-sna', 'hook',
                                               'qemu-storage-daemon')),
    label        TEXT NOT NULL,
    job_id       INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    owner_pid    INTEGER NOT NULL,
    owner_start  INTEGER NOT NULL,
    pid          INTEGER,
    pid_start    INTEGER,
    cmdline      TEXT NOT NULL,
    group_leader INTEGER NOT NULL DEFAULT 0 CHECK (group_leader IN (0, 1)),
    token        TEXT,
    started_at   TEXT NOT NULL
);
INSERT INTO children_v9 (id, kind, label, job_id, owner_pid, owner_start, pid, pid_start, cmdline,
                      group_leader, token, started_at)
    SELECT id, kind, label, job_id, owner_pid, owner_start, pid, pid_start, cmdline,
           group_leader, token, started_at
    FROM children;
DROP TABLE children;
ALTER TABLE children_v9 RENAME TO children;
CREATE INDEX children_job ON children(job_id);

-- A restore point mounted: recorded before anything of it exists, so the reconciliation finds
-- and undoes what a killed mount left (filesystem mounts, loop devices, the FUSE export, the
-- directories it made). `work_dir` holds the export file and the overlay that takes the
-- journal replay; `partitions` is what got mounted, as JSON.
CREATE TABLE mounts (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL UNIQUE REFERENCES jobs(id) ON DELETE CASCADE,
    backup_id   TEXT NOT NULL,
    disk_key    INTEGER NOT NULL,
    dir         TEXT NOT NULL UNIQUE,
    work_dir    TEXT NOT NULL,
    created_dir INTEGER NOT NULL CHECK (created_dir IN (0, 1)),
    owner_pid   INTEGER NOT NULL,
    owner_start INTEGER NOT NULL,
    idle_secs   INTEGER NOT NULL,
    partitions  TEXT,
    created_at  TEXT NOT NULL,
    ready_at    TEXT
);
"#;

/// Repositories in S3-compatible object storage: `kind` says which (`dir` for a directory),
/// `path` holds an S3 repository's address (`https://ENDPOINT/BUCKET[/PREFIX]`, unique like a
/// directory's path), `settings` its region, addressing, credentials file and Object Lock (JSON;
/// never a key). Every query of directory repositories names `kind = 'dir'`.
const V10: &str = r#"
ALTER TABLE repositories ADD COLUMN kind TEXT NOT NULL DEFAULT 'dir' CHECK (kind IN ('dir', 's3'));
ALTER TABLE repositories ADD COLUMN settings TEXT;
"#;

/// Backups in S3 repositories (copies): each object a copy writes is recorded before it is
/// uploaded — a copy that dies leaves rows naming exactly what to remove — then with the version
/// the bucket gave it, its size and the instant (Unix seconds) its Object Lock holds until.
/// `delete_after` marks a backup asked to go whose objects are locked: it is kept, shown as
/// `expired`, and deleted by `cleanup` once every lock has ended.
const V11: &str = r#"
CREATE TABLE s3_objects (
    backup_id    TEXT NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    rel          TEXT NOT NULL,
    version      TEXT,
    size         INTEGER CHECK (size >= 0),
    retain_until INTEGER,
    written      INTEGER NOT NULL DEFAULT 0 CHECK (written IN (0, 1)),
    PRIMARY KEY (backup_id, rel)
);
ALTER TABLE backups ADD COLUMN delete_after TEXT;
"#;
