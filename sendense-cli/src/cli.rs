//! The command line, as clap definitions. `man/` and `completions/` are generated from these.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const ROOT_DETAILS: &str = "\
EXIT STATUS
  0    success
  1    failed (an external tool, I/O, the catalog or a peer failed)
  2    usage error: bad arguments, an invalid name, or an invalid config file
  3    partly failed: some parts succeeded and others did not
  4    not found: the named VM, repository, backup, job or disk does not exist
  5    busy, locked or refused: a name already exists, a lock is held, or the
       operation would lose data (removing a repository that still holds backups)
  130  interrupted (Ctrl-C, SIGTERM, SIGHUP) or cancelled (`sendense job cancel`):
       the operation stopped and cleaned up. A second signal ends sendense at
       once; the next sendense command finishes the cleanup.

CRASH SAFETY
  A sendense process may be killed at any instant (kill -9, a power cut): the
  next sendense command, whichever it is, finds what it left and undoes or
  finishes it. A backup is complete, or it is gone with all its files; a delete
  is finished; no qemu-nbd or sendense-sna keeps running; nothing of the backup
  stays in the VM, whose next backup is incremental and misses no change.

ENVIRONMENT
  SENDENSE_HOME   state directory when --state-dir is not given
  XDG_DATA_HOME   non-root users without SENDENSE_HOME use $XDG_DATA_HOME/sendense
                  (else ~/.local/share/sendense); root uses /var/lib/sendense
  NO_COLOR        disables colours in error messages

FILES
  <state-dir>/sendense.db    the catalog (SQLite, mode 0600)
  <state-dir>/config.yaml    the configuration (optional; written by `sendense init`)
  <repo>/sendense-repo.yaml  marks a directory as a Sendense repository

CONFIGURATION
  Every key is optional; an unknown key is an error naming the key and its line.
  The defaults, as `sendense init` writes them:

";

/// Sendense: agentless, VM-level, incremental backup for hypervisor virtual machines.
#[derive(Debug, Parser)]
#[command(
    name = "sendense",
    version,
    about = "Agentless, VM-level, incremental backup for hypervisor virtual machines",
    long_about = "Sendense takes one consistent snapshot of all disks of a VM, moves only allocated \
                  (full) or changed (incremental) blocks over NBD into QCOW2 chains kept in backup \
                  repositories, and tracks everything in a local SQLite catalog.",
    after_long_help = root_details(),
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

fn root_details() -> String {
    format!(
        "{ROOT_DETAILS}{}",
        sendense_core::config::DEFAULT_CONFIG_TEXT
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    )
}

/// Options every command takes.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for
    /// root, else $XDG_DATA_HOME/sendense.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Configuration file (default: <state-dir>/config.yaml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout (NDJSON events for long operations).
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the state directory, the catalog and a commented default config.
    #[command(after_long_help = "JSON OUTPUT
  {\"state_dir\": \"/var/lib/sendense\", \"catalog\": \".../sendense.db\",
   \"config\": \".../config.yaml\", \"catalog_created\": true,
   \"config_created\": true, \"schema_version\": 2}

Running init again is safe: an existing catalog is migrated, an existing
config is never overwritten.")]
    Init,
    /// Manage backup repositories.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Manage the VMs Sendense backs up.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Remote nodes: hypervisor hosts whose sendense-sna the hub drives over SSH.
    #[command(subcommand)]
    Node(NodeCommand),
    /// vCenters: the vSphere servers VMware VMs are reached through.
    #[command(subcommand)]
    Vcenter(VcenterCommand),
    /// Policies: where a group's backups go, when, how long they are kept, where they are copied.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Protection groups: VMs backed up together under one policy.
    #[command(subcommand)]
    Group(GroupCommand),
    /// When groups run.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Run what is due, whenever it is due, in the foreground (for systemd).
    #[command(
        after_long_help = "`schedule run` whenever a group is due, sleeping in between (and looking at
least once a minute for groups and policies added meanwhile). Each run that did
something is printed as `schedule run` prints it (one JSON document per line
with --json). SIGTERM, SIGINT or SIGHUP stop it: running backups are cancelled
and clean up as cancelled jobs do, and it exits 0. contrib/ has a systemd
service for it, and a timer for `schedule run` as the alternative."
    )]
    Daemon,
    /// Back up VMs and inspect backups.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Inspect jobs (backups, restores, ...).
    #[command(subcommand)]
    Job(JobCommand),
    /// Restore disks as they were at a backup: standalone images, or into an NBD target.
    #[command(group(clap::ArgGroup::new("disks").required(true).args(["disk", "all"])))]
    #[command(
        after_long_help = "A restored file has no backing chain and stays thin (holes stay holes). With
--all, PATH is a directory that receives <vm>-disk-<key>.<format> files.
--to nbd://HOST:PORT/EXPORT (or nbd+unix://...) writes into an existing NBD
export, e.g. a VM's disk. An existing file is replaced only with --force; a
failed restore leaves no file behind.

Every block is checked against the digests its backups recorded before it is
written: a block that differs (bit rot, a damaged or rewired chain) fails the
restore with exit 1, naming the backup, disk and offset, and nothing is
published. --no-verify skips the check and says so.

JSON OUTPUT
  NDJSON progress events, then the summary:
  {\"backup\": \"<id>\", \"vm\": \"pgtest1\", \"job\": 9, \"format\": \"qcow2\",
   \"disks\": [{\"key\": 2000, \"to\": \"/restore/pgtest1-disk-2000.qcow2\",
              \"bytes_read\": ..., \"bytes_written\": ..., \"seconds\": ..., \"mib_per_sec\": ...,
              \"bytes_verified\": ..., \"bytes_unchecked\": 0}], \"verified\": true}"
    )]
    Restore {
        /// Backup id.
        backup: String,
        /// Restore from the copy of the backup in this repository (`backup show ID` lists them).
        #[arg(long)]
        repo: Option<String>,
        /// Disk key to restore.
        #[arg(long)]
        disk: Option<u32>,
        /// Every disk of the backup (PATH is a directory).
        #[arg(long)]
        all: bool,
        /// Destination: a file, a directory (--all) or an NBD URL.
        #[arg(long, value_name = "PATH|URL")]
        to: String,
        /// Format of restored files.
        #[arg(long, value_parser = ["qcow2", "raw"], default_value = "qcow2")]
        format: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        /// Do not check the blocks against the backups' digests (a damaged backup then restores
        /// what its images hold).
        #[arg(long)]
        no_verify: bool,
    },
    /// Serve a restore point over NBD until interrupted (instant recovery, inspection).
    #[command(group(clap::ArgGroup::new("listen").args(["port", "socket"])))]
    #[command(
        after_long_help = "Read-only by default; with --writable, writes go to a temporary overlay that is
discarded at the end: the backup is never modified. The export listens on
127.0.0.1 (a port from nbd_ports, or --port) or a Unix socket (--socket), shows
in `sendense nbd list`, and is gone when sendense exits (Ctrl-C, SIGTERM, SIGHUP,
or `sendense job cancel JOB`). A VM can boot from it; nbdfuse or qemu-nbd -c can
mount it. The backup and its chain cannot be deleted while they are served.

JSON OUTPUT
  {\"backup\": \"<id>\", \"disk\": 2000, \"url\": \"nbd://127.0.0.1:10100/pgtest1-disk-2000\",
   \"writable\": false, \"job\": 12}   (printed once the export is ready)"
    )]
    Export {
        /// Backup id.
        backup: String,
        /// Serve the copy of the backup in this repository.
        #[arg(long)]
        repo: Option<String>,
        /// Disk key.
        #[arg(long)]
        disk: u32,
        /// Listen on this port of 127.0.0.1.
        #[arg(long)]
        port: Option<u16>,
        /// Listen on this Unix socket.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Accept writes into a temporary overlay (discarded at the end).
        #[arg(long)]
        writable: bool,
    },
    /// Mount a restore point's partitions read-only (or list the mounts: `mount list`).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    #[command(
        after_long_help = "The disk of the backup is opened through a temporary overlay (the backup is
never written: a journal the kernel replays lands in the overlay) and exported as
a file (qemu-storage-daemon over FUSE); its partition table (GPT or MBR) is read
and every partition holding a filesystem this host can mount is mounted
read-only, nodev, nosuid, noexec at DIR/<partition> (p1, p2, ...; `disk` for a
filesystem on the whole disk): ext4, XFS and Btrfs by the kernel, NTFS by
ntfs-3g. Other partitions are listed with the reason. DIR must be empty and
writable by no one else, or is made (0700, and removed again).

The mount goes on in the background (a job: `job list`), until `sendense umount
DIR`, `sendense job cancel JOB`, or --idle seconds (default: mount_idle_secs of
the configuration, 3600; 0: never) in which nothing read from it and no program
used it. --foreground keeps it in this terminal until Ctrl-C. A mount whose
process was killed is undone by the next sendense command. Needs root, /dev/fuse,
loop devices, qemu-storage-daemon (qemu-system-common), and ntfs-3g for NTFS.
Every block read is checked against the backup's digests first (Sendense serves
the chain to qemu-storage-daemon): a damaged block reads as an input/output
error, never as wrong bytes; the mount's end then names its offset (`job log`),
exits 1 and marks the backup damaged. --no-verify serves the blocks unchecked. A
backup marked damaged is not mounted.

JSON OUTPUT
  {\"backup\": \"<id>\", \"vm\": \"pg\", \"disk\": 2000, \"dir\": \"/mnt/pg\", \"job\": 12,
   \"idle_secs\": 3600, \"partitions\": [{\"name\": \"p1\", \"offset\": 1048576,
   \"size\": ..., \"table\": \"gpt\", \"content\": \"ext4\", \"label\": \"root\",
   \"path\": \"/mnt/pg/p1\", \"reason\": null}]}"
    )]
    Mount {
        #[command(subcommand)]
        list: Option<MountCommand>,
        /// Backup id.
        #[arg(required = true)]
        backup: Option<String>,
        /// Disk key.
        #[arg(long, required = true)]
        disk: Option<u32>,
        /// Where the partitions go: an empty directory, or a new one.
        #[arg(required = true)]
        dir: Option<PathBuf>,
        /// Mount the copy of the backup in this repository.
        #[arg(long)]
        repo: Option<String>,
        /// Stay in the foreground until Ctrl-C (or umount) instead of going on in the
        /// background.
        #[arg(long)]
        foreground: bool,
        /// Unmount after this many seconds unused (0: never).
        #[arg(long, value_name = "SECS")]
        idle: Option<u64>,
        /// Serve the blocks without checking them against the backup's digests.
        #[arg(long)]
        no_verify: bool,
    },
    /// Unmount a restore point mounted with `sendense mount`.
    #[command(
        after_long_help = "Refused (exit 5) while a program has its working directory or a file open
below DIR (they are named). Everything of the mount goes: the filesystem mounts,
their loop devices, the export, the directories it made.

JSON OUTPUT
  The mount as `mount list` shows it."
    )]
    Umount {
        /// The directory given to `sendense mount`.
        dir: PathBuf,
    },
    /// Files of a restore point, without mounting by hand.
    #[command(subcommand)]
    Files(FilesCommand),
    /// NBD exports Sendense started.
    #[command(subcommand)]
    Nbd(NbdCommand),
    /// Find and remove what interrupted jobs left behind.
    #[command(
        after_long_help = "Removes, for sendense processes that are gone: jobs left running (marked failed
with the reason), the backups they were writing (images, digest files, manifest),
the processes they started that still run (qemu-nbd, nbdkit, sendense-sna, hooks
and what hooks started: matched by recorded pid, start time and command line, or
by the marker in their environment, never by name; a process Sendense did not
start is never touched), the ports of their exports, deletes they began
(finished), what their backups left in the VM's
source (QEMU block jobs, fleecing nodes, NBD exports and server; checkpoint
bitmaps folded back into the recorded checkpoint), files a restore was writing,
scratch directories, and lock files nobody holds. All of this runs automatically
whenever sendense opens its state. `cleanup` also lists files of a repository's
layout that look unfinished (.partial images, temporary manifests) but that no
job of this hub wrote: they are left alone (another hub may be writing them).
It also aborts multipart uploads left unfinished under each S3 repository's
prefix (stored and billed, never visible), unless a copy of this hub runs.
Nothing outside a repository's layout is ever touched; --dry-run reports exactly
what the real run does.
Files of a repository that is not mounted (or not the registered one) are left
alone until it is back. Exit status 3 when something could not be cleaned up
(listed under errors).

JSON OUTPUT
  {\"dry_run\": false,
   \"actions\": [{\"action\": \"fail_job\" | \"discard_backup\" | \"stop_qemu_nbd\" |
                           \"stop_nbdkit\" | \"stop_sendense_sna\" | \"stop_hook\" |
                           \"forget_process\" | \"release_port\" | \"finish_delete\" |
                           \"repair_source\" | \"remove_file\" | \"remove_dir\" |
                           \"abort_upload\",
                \"target\": \"...\", \"reason\": \"...\"}],
   \"errors\": [], \"strays\": [\"<path>\"]}"
    )]
    Cleanup {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the catalog (every page, index and reference) and, when it is damaged, say how to
    /// rebuild it from the repositories.
    #[command(
        after_long_help = "The catalog is opened read-only: nothing is migrated, reconciled or written.
Exit status 0 when the catalog is whole, 1 when it is damaged; then the advice
lists the steps: move the state directory aside, `sendense init`, and
`sendense repo import PATH --take-over` for every repository it still names.

JSON OUTPUT
  {\"catalog\": \"/var/lib/sendense/sendense.db\", \"ok\": false,
   \"problems\": [\"...\"], \"repositories\": [[\"local\", \"/srv/backup\"]],
   \"advice\": [\"...\"]}"
    )]
    Doctor,
}

#[derive(Debug, Subcommand)]
pub enum NbdCommand {
    /// List the NBD exports Sendense started (port, export, pid, job, file, age).
    #[command(after_long_help = "JSON OUTPUT
  An array of exports:
  [{\"id\": 3, \"port\": 10100, \"socket\": null, \"export\": \"pgtest1-disk-2000\",
    \"job\": 7, \"owner_pid\": 4242, \"pid\": 4250, \"file\": \"/srv/backup/...qcow2.partial\",
    \"allocated_at\": \"...\", \"url\": \"nbd://127.0.0.1:10100/pgtest1-disk-2000\",
    \"alive\": true, \"age_seconds\": 12}]")]
    List,
}

const REPO_JSON: &str = "JSON OUTPUT
  A repository object:
  {\"name\": \"local\", \"path\": \"/srv/backup\", \"repo_id\": \"<uuid>\",
   \"require_mount\": false, \"is_default\": true,
   \"total_bytes\": 107374182400, \"available_bytes\": 53687091200,
   \"refreshed_at\": \"2026-11-25T21:10:06Z\", \"created_at\": \"2026-11-25T21:10:06Z\",
   \"backups\": 0}";

const S3_REPO_JSON: &str = "  An S3 repository (--s3) is shown as
  {\"name\": \"offsite\", \"url\": \"https://s3.example.com/backups/hub1\",
   \"repo_id\": \"<uuid>\", \"region\": \"us-east-1\", \"path_style\": true,
   \"credentials_file\": \"/etc/sendense/s3.cred\", \"lock_days\": 30,
   \"lock_mode\": \"compliance\", \"created_at\": \"...\", \"backups\": 0,
   \"probe\": {\"probe_bytes\": 1048576, \"write_ms\": 12.0, \"read_ms\": 4.1,
   \"object_lock\": true, \"lock_checked\": \"compliance\", \"pending_uploads\": 0}}
  (never a key).";

const VCENTER_JSON: &str = "JSON OUTPUT
  A vCenter object (never the password):
  {\"name\": \"vc1\", \"url\": \"https://vc.example.com:443/sdk\",
   \"user\": \"backup@vsphere.local\", \"thumbprint\": \"AA:BB:...\",
   \"full_name\": \"VMware vCenter Server 8.0.2 build-...\", \"api_version\": \"8.0.2.0\",
   \"checked_at\": \"...\", \"created_at\": \"...\"}
  `vcenter add` and `vcenter test` add what the server said now:
   \"about\": {\"full_name\": ..., \"api_version\": ..., \"api_type\": \"VirtualCenter\",
             \"instance_uuid\": ...}";

#[derive(Debug, Subcommand)]
pub enum VcenterCommand {
    /// Add a vCenter (or ESXi host): connect, pin its certificate, check the login.
    #[command(after_long_help = format!("The server certificate is pinned: the thumbprint given with --thumbprint (SHA-1,
as the vSphere client shows it, AA:BB:..., or SHA-256), or, with
--accept-certificate, the one the server presents (shown in the output). Without
either, nothing is recorded and the error shows the server's thumbprint. From
then on a server presenting another certificate is refused (exit 5) with both
thumbprints. The password is read from --password-file (a file only you can
read, one line) and kept in a 0600 file of the state directory: never in an
argument, a log line or --json. Exit status 5 for a certificate that is not the
pinned one; 1 when the server cannot be reached or refuses the login; 2 for bad
input (a URL that is not https://HOST[:PORT]/sdk, a password file others can read).

{VCENTER_JSON}"))]
    Add {
        /// vCenter name.
        name: String,
        /// https://HOST[:PORT]/sdk.
        #[arg(long, value_name = "URL")]
        url: String,
        /// The account to log in as (e.g. backup@vsphere.local).
        #[arg(long, value_name = "USER")]
        user: String,
        /// A file holding its password (one line; only you may read it).
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
        /// The certificate's thumbprint (SHA-1 AA:BB:... or SHA-256).
        #[arg(long, value_name = "THUMBPRINT", conflicts_with = "accept_certificate")]
        thumbprint: Option<String>,
        /// Pin whichever certificate the server presents (shown in the output).
        #[arg(long)]
        accept_certificate: bool,
    },
    /// List vCenters.
    #[command(after_long_help = format!("{VCENTER_JSON}

`vcenter list --json` prints an array of vCenter objects."))]
    List,
    /// Show one vCenter.
    #[command(after_long_help = VCENTER_JSON)]
    Show {
        /// vCenter name.
        name: String,
    },
    /// Connect to a vCenter: its certificate must be the pinned one, the login must pass.
    #[command(after_long_help = format!("Exit status 0 when it answered with its pinned certificate and accepted the
login; 5 for another certificate (both thumbprints named); 4 for an unknown
vCenter; 1 when it cannot be reached or refuses the login.

{VCENTER_JSON}"))]
    Test {
        /// vCenter name.
        name: String,
    },
    /// Remove a vCenter and its password file.
    #[command(after_long_help = "JSON OUTPUT
  The removed vCenter object.")]
    Remove {
        /// vCenter name.
        name: String,
    },
}

const NODE_JSON: &str = "JSON OUTPUT
  A node object:
  {\"name\": \"kvm1\", \"host\": \"kvm1.example.com\", \"port\": 22, \"user\": \"sendense\",
   \"host_key\": \"SHA256:...\", \"identity\": \"/root/.ssh/sendense_ed25519\" | null,
   \"sna_path\": \"sendense-sna\", \"sna_version\": \"0.1.0\",
   \"checked_at\": \"...\", \"created_at\": \"...\", \"vms\": [\"pgtest1\"]}";

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Add a node: connect over SSH, pin its host key, check its sendense-sna.
    #[command(after_long_help = format!("The node's host key is pinned: the fingerprint given with --host-key (read it
on the node: `ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub`), or, with
--accept-host-key, the one the node presents (shown in the output). Without
either, nothing is recorded and the error shows the node's fingerprint. From then
on a node presenting another host key is refused (exit 5) with both fingerprints.
The hub signs in with --identity FILE (an unencrypted private key only the hub's
user can read), else with the keys of the ssh-agent at SSH_AUTH_SOCK. The node's
`sendense-sna hello` must report this hub's version (else exit 5; --install, or
`sendense node install` later, copies the hub's own there).

{NODE_JSON}"))]
    Add {
        /// Node name.
        name: String,
        /// Where: [USER@]HOST[:PORT] (user: the hub's user, port 22 by default).
        #[arg(long, value_name = "[USER@]HOST[:PORT]")]
        ssh: String,
        /// Private key file to sign in with (default: the ssh-agent's keys).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// The node's host key fingerprint (SHA256:...), checked on the node beforehand.
        #[arg(long, value_name = "SHA256:...", conflicts_with = "accept_host_key")]
        host_key: Option<String>,
        /// Pin whichever host key the node presents (shown in the output).
        #[arg(long)]
        accept_host_key: bool,
        /// sendense-sna on the node (default: `sendense-sna` on the account's PATH).
        #[arg(long, value_name = "PATH")]
        sna_path: Option<String>,
        /// When the node has no sendense-sna of this hub's version, install the hub's own (as
        /// --sna-path when given).
        #[arg(long)]
        install: bool,
    },
    /// Copy this hub's sendense-sna to a node.
    #[command(
        after_long_help = "The hub's own sendense-sna binary goes over the node's SSH connection to --to,
else where the node's is, else ~/.local/lib/sendense/sendense-sna of the node
account (created 0700, written under a temporary name and renamed into place once
whole), is run there to check that
it reports this hub's version, and becomes the node's sendense-sna. Refused for a
node of another CPU architecture. Run it after upgrading the hub.

JSON OUTPUT
  As `node test`."
    )]
    Install {
        /// Node name.
        name: String,
        /// Where on the node (default: where the node's is, else
        /// ~/.local/lib/sendense/sendense-sna).
        #[arg(long, value_name = "PATH")]
        to: Option<String>,
    },
    /// List nodes.
    #[command(after_long_help = format!("{NODE_JSON}

`node list --json` prints an array of node objects."))]
    List,
    /// Show one node.
    #[command(after_long_help = NODE_JSON)]
    Show {
        /// Node name.
        name: String,
    },
    /// Connect to a node, check its host key and its sendense-sna.
    #[command(
        after_long_help = "Exit status 0 when the node answered with its pinned host key and this hub's
version; 5 when its host key or version differ (both named); 4 when the node is
not known or has no sendense-sna at its path; 1 when it cannot be reached or does
not accept the hub's key; 2 when the key file is readable by others or there is
no ssh-agent.

A forward the node account may not open (authorized_keys without port-forwarding)
fails --throughput with exit 5.

JSON OUTPUT
  {\"node\": \"kvm1\", \"host_key\": \"SHA256:...\",
   \"hello\": {\"version\": \"0.1.0\", \"node_protocol\": 2, \"source_protocol\": 1},
   \"millis\": 48,
   \"throughput\": {\"bytes\": 268435456, \"seconds\": 1.9, \"mib_per_sec\": 134.7}}
  (throughput with --throughput only)"
    )]
    Test {
        /// Node name.
        name: String,
        /// Also measure the node-to-hub rate through the SSH connection (the way backup data
        /// travels): the node sends this many MiB (1-4096) through a forward on its loopback.
        #[arg(long, value_name = "MIB")]
        throughput: Option<u64>,
    },
    /// Remove a node (refused while VMs run there).
    Remove {
        /// Node name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a repository in DIR, or in S3-compatible object storage, and register it.
    #[command(after_long_help = format!("{REPO_JSON}
{S3_REPO_JSON}

DIR is created (mode 0700) when missing, unless --require-mount is given.
The first repository directory becomes the default.

--s3 https://ENDPOINT/BUCKET[/PREFIX] makes a repository in a bucket (AWS S3,
Ceph RGW, MinIO, Wasabi, ...): the bucket must exist and the place be empty.
The keys are read from --credentials-file (0600; AWS's INI format, [default]
or --profile, aws_access_key_id and aws_secret_access_key), else from
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, else from ~/.aws/credentials
(AWS_PROFILE) — never from the command line. They are proven before anything is
registered: a 1 MiB probe written, read back, listed and deleted; with
--object-lock DAYS the bucket must have Object Lock enabled (it can only be
enabled when a bucket is created), a probe locked for two seconds is checked,
and every object Sendense writes there is locked DAYS days (--lock-mode
compliance, the default: no one can delete it or shorten its lock, not even the
bucket's owner; governance: users with the bypass permission can). Plain http
is taken for a server on this host only. S3 repositories take copies of
backups; backups are written to repository directories."))]
    #[command(group(clap::ArgGroup::new("place").required(true).args(["path", "s3"])))]
    Add {
        /// Repository name.
        name: String,
        /// Directory of the repository (local disk or a mounted NFS/CIFS share).
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
        /// Make the repository in S3-compatible object storage instead.
        #[arg(long, value_name = "https://ENDPOINT/BUCKET[/PREFIX]")]
        s3: Option<String>,
        /// The S3 region (default us-east-1).
        #[arg(long, requires = "s3")]
        region: Option<String>,
        /// Address buckets as https://ENDPOINT/BUCKET (Ceph RGW and MinIO often need it)
        /// instead of https://BUCKET.ENDPOINT.
        #[arg(long, requires = "s3")]
        path_style: bool,
        /// The S3 keys: an AWS credentials file, readable by its owner only.
        #[arg(long, value_name = "FILE", requires = "s3")]
        credentials_file: Option<PathBuf>,
        /// The profile of the credentials file to use.
        #[arg(long, requires = "s3")]
        profile: Option<String>,
        /// CA certificates (PEM) to trust besides the system's, for a private CA.
        #[arg(long, value_name = "FILE", requires = "s3")]
        ca_file: Option<PathBuf>,
        /// Lock every object written for DAYS days (S3 Object Lock).
        #[arg(long, value_name = "DAYS", requires = "s3")]
        object_lock: Option<u32>,
        /// The Object Lock mode.
        #[arg(long, value_name = "MODE", default_value = "compliance",
              value_parser = ["compliance", "governance"], requires = "object_lock")]
        lock_mode: String,
        /// Refuse to use DIR unless it is a mount point (never fill the root filesystem
        /// because a share was not mounted).
        #[arg(long, requires = "path")]
        require_mount: bool,
        /// Make it the default repository.
        #[arg(long, requires = "path")]
        default: bool,
    },
    /// List repositories.
    #[command(after_long_help = "JSON OUTPUT
  An array of repository objects (see `sendense repo add --help`), each with
  \"kind\": \"dir\" or \"s3\".")]
    List,
    /// Show a repository with a fresh capacity reading (an S3 repository: what its bucket
    /// says, nothing written).
    #[command(after_long_help = format!("{REPO_JSON}
  with two more keys: \"mount_point\" (bool: DIR is a mount point now) and
  \"problem\" (string or null: missing, not mounted, or another repository).
  An S3 repository (see `sendense repo add --help`, without \"probe\") has
  \"kind\": \"s3\", \"object_lock\" (bool: the bucket has it), \"pending_uploads\"
  (uploads left unfinished) and \"problem\" (not reached, keys refused, another
  repository or none there); nothing is written to show it."))]
    Show {
        /// Repository name.
        name: String,
    },
    /// Check a repository: mount guard, identity, a durable write (write, fsync, read back,
    /// delete a 1 MiB probe), capacity; for an S3 repository its identity, a probe written,
    /// read, listed and deleted, and Object Lock.
    #[command(after_long_help = "JSON OUTPUT
  {\"name\": \"local\", \"path\": \"/srv/backup\", \"ok\": true, \"probe_bytes\": 1048576,
   \"write_ms\": 3.1, \"total_bytes\": ..., \"available_bytes\": ..., \"free_bytes\": ...,
   \"mount_point\": false}

  An S3 repository: its object (see `sendense repo add --help`) with \"ok\": true.

A failed check exits non-zero with the reason (4: missing, 5: not mounted or
another repository at the path, or the keys may not do what is needed, 1: the
write failed).")]
    Test {
        /// Repository name.
        name: String,
    },
    /// Register an existing repository and rebuild its backups in the catalog from its manifests.
    #[command(
        after_long_help = "Use it when the hub was lost: the repository alone is enough to restore.

A repository has one owner, the hub that writes into it. Importing a repository
another hub owns is refused (exit 5) unless --take-over; the other hub's
backups and deletes there are refused from then on.

Every backup that cannot be registered is named, and the import exits 3: a
manifest that fails its checks, a missing image or parent, and images whose
manifest is lost. With --salvage, such images are registered when they prove
themselves: each opens, is a full or backed by the same disk's image of a
registered backup, and every block of data it holds matches its digest file.
A salvaged backup gets a new manifest; its change-tracking checkpoint is lost,
so the VM's next backup is a full.

--s3 https://ENDPOINT/BUCKET[/PREFIX] imports an S3 repository (keys and options
as for `repo add --s3`) from the bucket alone: each manifest object checked, a
backup registered when its image and digest objects are there with the recorded
lengths and its parents are registered, each object's lock read back. Its JSON
has the S3 repository object as \"repo\" and no \"backups_salvaged\".

JSON OUTPUT
  {\"repo\": {repository object}, \"vms_created\": [\"pgtest1\"],
   \"backups_imported\": [\"<backup-id>\", ...], \"backups_known\": [],
   \"backups_salvaged\": [], \"warnings\": [],
   \"skipped\": [\"<backup-id>: image ... is missing\"]}"
    )]
    #[command(group(clap::ArgGroup::new("place").required(true).args(["path", "s3"])))]
    Import {
        /// Directory holding sendense-repo.yaml.
        path: Option<PathBuf>,
        /// Import a repository in S3-compatible object storage instead (the keys and options
        /// as for `repo add --s3`).
        #[arg(long, value_name = "https://ENDPOINT/BUCKET[/PREFIX]")]
        s3: Option<String>,
        /// Name to register it under (default: the name it was created with).
        #[arg(long)]
        name: Option<String>,
        /// Refuse to use the path unless it is a mount point.
        #[arg(long, requires = "path")]
        require_mount: bool,
        /// Make it the default repository.
        #[arg(long, requires = "path")]
        default: bool,
        /// Take the repository over from the hub that owns it: that hub's backups and deletes
        /// there are refused from then on.
        #[arg(long)]
        take_over: bool,
        /// Also register backups whose manifest is lost when their images, digest files and
        /// backing links prove them (each gets a new manifest).
        #[arg(long, requires = "path")]
        salvage: bool,
        /// The S3 region (default us-east-1).
        #[arg(long, requires = "s3")]
        region: Option<String>,
        /// Address buckets as https://ENDPOINT/BUCKET.
        #[arg(long, requires = "s3")]
        path_style: bool,
        /// The S3 keys: an AWS credentials file, readable by its owner only.
        #[arg(long, value_name = "FILE", requires = "s3")]
        credentials_file: Option<PathBuf>,
        /// The profile of the credentials file to use.
        #[arg(long, requires = "s3")]
        profile: Option<String>,
        /// CA certificates (PEM) to trust besides the system's.
        #[arg(long, value_name = "FILE", requires = "s3")]
        ca_file: Option<PathBuf>,
        /// Lock every object written from now on for DAYS days (S3 Object Lock).
        #[arg(long, value_name = "DAYS", requires = "s3")]
        object_lock: Option<u32>,
        /// The Object Lock mode.
        #[arg(long, value_name = "MODE", default_value = "compliance",
              value_parser = ["compliance", "governance"], requires = "object_lock")]
        lock_mode: String,
    },
    /// Re-read the capacity of every repository and check each is present.
    #[command(after_long_help = "JSON OUTPUT
  An array of objects as in `sendense repo show`. Exit status 3 when some
  repositories have problems, 1 when all have.")]
    Refresh,
    /// Unregister a repository. Refused (exit 5) while it holds backups; its files are kept.
    #[command(after_long_help = "JSON OUTPUT
  The removed repository object.")]
    Remove {
        /// Repository name.
        name: String,
    },
}

const VM_JSON: &str = "JSON OUTPUT
  A VM object:
  {\"name\": \"pgtest1\", \"source\": \"image\", \"source_options\": {},
   \"created_at\": \"...\", \"updated_at\": \"...\", \"backups\": 0,
   \"node\": null | \"kvm1\",
   \"disks\": [{\"key\": 2000, \"identity\": \"/srv/vms/pgtest1-os.qcow2\",
               \"format\": \"qcow2\", \"size_bytes\": 10737418240,
               \"checkpoint\": null, \"present\": true}]}";

/// `sendense mount list`.
#[derive(Debug, Subcommand)]
pub enum MountCommand {
    /// List mounted restore points.
    #[command(after_long_help = "JSON OUTPUT
  An array of {\"job\", \"backup\", \"disk\", \"dir\", \"owner_pid\", \"idle_secs\",
  \"partitions\", \"created_at\", \"ready_at\"}.")]
    List,
}

/// `sendense files ...`.
#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// List a restore point's partitions, or the entries at PATH (PARTITION/path).
    #[command(
        after_long_help = "The disk is mounted read-only in a private directory for the command (see
`sendense mount --help`) and unmounted when it ends. Without PATH: the
partitions, with their filesystems. PATH is PARTITION/path, e.g. p1/etc; a
symbolic link resolves inside its partition, never on this host.

JSON OUTPUT
  {\"backup\": \"<id>\", \"disk\": 2000, \"partitions\": [...as mount...],
   \"entries\": [{\"path\": \"p1/etc/hosts\", \"kind\": \"file\", \"mode\": 420,
     \"uid\": 0, \"gid\": 0, \"size\": 221, \"mtime\": 1764460800,
     \"mtime_nsec\": 0, \"target\": \"...\" (symlinks)}]}"
    )]
    Ls {
        /// Backup id.
        backup: String,
        /// Disk key.
        #[arg(long)]
        disk: u32,
        /// PARTITION/path (none: the partitions).
        path: Option<String>,
        /// Read the copy of the backup in this repository.
        #[arg(long)]
        repo: Option<String>,
        /// Read the blocks without checking them against the backup's digests.
        #[arg(long)]
        no_verify: bool,
    },
    /// Copy files and directories of a restore point out, with their metadata.
    #[command(
        after_long_help = "Each PATH (PARTITION/path) is copied into DIR under its own name, with what
is below it: mode, owner, times, symbolic links (as links), hard links, holes
and FIFOs kept; device nodes and sockets skipped (named); extended attributes
and ACLs not copied. DIR is made 0700 when new; an existing DIR writable by
others is refused. A name that exists in DIR already is refused, and nothing is
ever written outside DIR; a failed copy leaves nothing. --to - writes one tar
stream (GNU format, device nodes included) to stdout. Every block read is checked
against the backup's digests: a damaged one fails the command (exit 1) naming its
offset, and the backup is marked damaged; --no-verify reads without checking.

JSON OUTPUT
  {\"backup\": \"<id>\", \"disk\": 2000, \"entries\": 12, \"bytes\": 40960,
   \"skipped\": []}   (not with --to -)"
    )]
    Get {
        /// Backup id.
        backup: String,
        /// Disk key.
        #[arg(long)]
        disk: u32,
        /// PARTITION/path to copy; repeat for several.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
        /// Destination directory (made when missing), or `-` for a tar stream on stdout.
        #[arg(long, value_name = "DIR|-")]
        to: String,
        /// Read the copy of the backup in this repository.
        #[arg(long)]
        repo: Option<String>,
        /// Read the blocks without checking them against the backup's digests.
        #[arg(long)]
        no_verify: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Register a VM: a live QEMU VM (--qmp), disk image files of a stopped VM (--disk), or
    /// existing NBD exports (--nbd).
    #[command(after_long_help = format!("{VM_JSON}

Sources:
  --qmp SOCKET   a running QEMU/KVM VM; its disks are discovered over QMP
                 (identity: the device's qdev path). Backups take one consistent
                 snapshot of all disks while the guest runs; qcow2 disks get
                 incremental backups through persistent dirty bitmaps.
  --disk PATH    an image file of a stopped VM (identity: its canonical path);
                 qcow2 images get incrementals, raw images are always full.
                 A file held by a running QEMU is refused at backup time.
  --vcenter NAME --path /DC/vm/VM | --uuid UUID
                 a VMware VM of a vCenter added with `sendense vcenter add`;
                 its disks keep vSphere's device keys (2000, 2001, 2016, ...;
                 identity: the key and the backing's uuid or file). Backups take
                 one snapshot of the VM and read it through nbdkit's VDDK plugin
                 (configuration keys vddk.libdir, vddk.plugin); incrementals copy
                 the areas changed block tracking reports.
  --nbd URL      an existing NBD export per disk (identity: the URL); always
                 full backups. --pre-hook / --post-hook run a command before the
                 snapshot and after the backup, without a shell, with SENDENSE_VM,
                 SENDENSE_JOB, SENDENSE_PHASE (and SENDENSE_RESULT after) set.

With --node N, --qmp and --disk name a socket and files on node N (see `sendense
node add`): the hub never opens them; the node's sendense-sna does. With --vcenter,
--node N backs the VM up through node N: the node logs in to the vCenter and runs
nbdkit with its own VDDK (SENDENSE_SNA_VDDK_LIBDIR, SENDENSE_SNA_VDDK_PLUGIN and
SENDENSE_SNA_VDDK_TRANSPORTS in the node's environment); the hub only looks the
VM up.

Disks get the keys 2000, 2001, ... in device order. Later backups match disks by
identity: a new disk gets the next free key, a vanished disk is reported."))]
    #[command(group(clap::ArgGroup::new("source").required(true).args(["disks", "qmp", "nbd", "vcenter"])))]
    Add {
        /// VM name (letters, digits, `.`, `-`, `_`, unicode; no `/`).
        name: String,
        /// A disk image of the VM; repeat for each disk, in device order.
        #[arg(long = "disk", value_name = "PATH")]
        disks: Vec<PathBuf>,
        /// The QMP socket of a running QEMU VM.
        #[arg(long, value_name = "SOCKET")]
        qmp: Option<PathBuf>,
        /// An NBD export of one disk (nbd://HOST:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH);
        /// repeat for each disk, in order.
        #[arg(long = "nbd", value_name = "URL")]
        nbd: Vec<String>,
        /// Command run before the snapshot of an --nbd VM (arguments split like a shell, no shell).
        #[arg(long, value_name = "CMD", requires = "nbd")]
        pre_hook: Option<String>,
        /// Command run after the backup of an --nbd VM.
        #[arg(long, value_name = "CMD", requires = "nbd")]
        post_hook: Option<String>,
        /// The VM runs on this node: --qmp and --disk are paths there, which the node's
        /// sendense-sna opens on the hub's request, over SSH (with --vcenter: the node reads
        /// the VM's snapshots through its own VDDK).
        #[arg(long, conflicts_with = "nbd")]
        node: Option<String>,
        /// A VMware VM of this vCenter (see `sendense vcenter add`), named by --path or --uuid.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["disks", "qmp", "nbd"])]
        vcenter: Option<String>,
        /// Its inventory path (/DATACENTER/vm/[FOLDER/]NAME).
        #[arg(
            long,
            value_name = "PATH",
            requires = "vcenter",
            conflicts_with = "uuid"
        )]
        path: Option<String>,
        /// Its BIOS uuid (`config.uuid`).
        #[arg(long, value_name = "UUID", requires = "vcenter")]
        uuid: Option<String>,
        /// Put the VM in this protection group (repeat for several).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Show the disks of a running QEMU VM without registering it.
    #[command(after_long_help = "JSON OUTPUT
  [{\"identity\": \"/machine/peripheral/vd0/virtio-backend\", \"format\": \"qcow2\",
    \"size_bytes\": 10737418240, \"detail\": \"node disk0, file /srv/vms/pg-os.qcow2\"}]")]
    #[command(group(clap::ArgGroup::new("what").required(true).args(["qmp", "vcenter"])))]
    Discover {
        /// The QMP socket of a running QEMU VM (on the node, with --node).
        #[arg(long, value_name = "SOCKET")]
        qmp: Option<PathBuf>,
        /// The VM runs on this node: its sendense-sna looks, over SSH.
        #[arg(long, requires = "qmp")]
        node: Option<String>,
        /// List the VMs of this vCenter, with their disks.
        #[arg(long, value_name = "NAME", conflicts_with = "qmp")]
        vcenter: Option<String>,
        /// Only VMs whose name contains TEXT.
        #[arg(long, value_name = "TEXT", requires = "vcenter")]
        filter: Option<String>,
    },
    /// List VMs.
    #[command(after_long_help = "JSON OUTPUT
  An array of VM objects (see `sendense vm add --help`).")]
    List,
    /// Show a VM, its disks and the state of their change-tracking checkpoints.
    #[command(after_long_help = format!("{VM_JSON}
  vm show adds to each disk \"checkpoint_state\": {{\"state\": \"present\" | \"none\" |
  \"missing\" | \"inconsistent\" | \"unsupported\", \"detail\": reason (unsupported only)}},
  read live from the source (null when the source cannot be reached), and
  \"groups\": [{{\"name\": \"prod\", \"policy\": \"nightly\", \"next_run\": \"...\" | null}}]."))]
    Show {
        /// VM name.
        name: String,
    },
    /// Unregister a VM. Refused (exit 5) while backups of it exist.
    #[command(after_long_help = "JSON OUTPUT
  The removed VM object.")]
    Remove {
        /// VM name.
        name: String,
    },
}

const BACKUP_JSON: &str = "JSON OUTPUT
  A backup object:
  {\"id\": \"20261125T211006Z-1a2b3c\", \"vm\": \"pgtest1\", \"repo\": \"local\",
   \"status\": \"completed\" | \"running\" | \"deleting\", \"created_at\": \"...\",
   \"completed_at\": \"...\", \"job\": 7, \"damaged\": null,
   \"copy_of\": null | \"<id of the backup it copies>\",
   \"disks\": [{\"key\": 2000, \"mode\": \"full\" | \"incremental\", \"reason\": \"...\",
              \"file\": \"/srv/backup/pgtest1/2000/<id>.qcow2\", \"parent\": null | \"<id>\",
              \"size_bytes\": ..., \"bytes_read\": ..., \"bytes_written\": ...,
              \"checkpoint\": \"sendense-<id>\" | null, \"digest\": null,
              \"status\": \"completed\", \"error\": null}]}";

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up a VM: one consistent snapshot of all its disks; full or incremental per disk.
    #[command(
        after_long_help = "Each disk is incremental when the repository holds a completed chain for it,
the source still has the checkpoint of the chain's top and the disk size is
unchanged; otherwise full, with the reason shown (first backup in repository,
new disk, disk resized, checkpoint missing on source, --full requested, previous
backup failed its check, ...). A chain whose links are not as recorded (missing,
rewired, resized, unreadable) is never extended.
A second backup of the same VM while one runs is refused (exit 5). Ctrl-C,
SIGTERM, SIGHUP or `sendense job cancel` cancel cleanly (exit 130): exports
stopped, new images deleted, the previous checkpoint kept.

JSON OUTPUT
  NDJSON events, one per line ({\"ts\", \"job\", \"event\": \"job_started\" | \"step\" |
  \"snapshot_taken\" | \"disk_started\" | \"disk_progress\" | \"disk_finished\" |
  \"warning\" | \"job_finished\", ...}), then the summary object:
  {\"backup\": \"<id>\", \"job\": 7, \"vm\": \"pgtest1\", \"repo\": \"local\",
   \"status\": \"completed\", \"seconds\": 12.3, \"vanished\": [],
   \"disks\": [{\"key\": 2000, \"mode\": \"incremental\", \"reason\": \"...\",
              \"file\": \"...\", \"parent\": \"<id>\", \"bytes_read\": ..., \"bytes_written\": ...,
              \"bytes_zero\": ..., \"seconds\": ..., \"mib_per_sec\": ...}]}"
    )]
    Start {
        /// VM name.
        vm: String,
        /// Repository (default: the default repository).
        #[arg(long)]
        repo: Option<String>,
        /// A full backup of every disk.
        #[arg(long, conflicts_with = "incremental")]
        full: bool,
        /// Incremental for every disk, or fail with the reason.
        #[arg(long)]
        incremental: bool,
        /// VMware VMs: fail when the guest cannot be quiesced, instead of backing up from a
        /// crash-consistent snapshot with a warning.
        #[arg(long)]
        require_quiesce: bool,
    },
    /// List backups, newest first.
    #[command(after_long_help = format!("{BACKUP_JSON}

`backup list --json` prints an array of backup objects."))]
    List {
        /// Only this VM.
        #[arg(long)]
        vm: Option<String>,
        /// Only this repository.
        #[arg(long)]
        repo: Option<String>,
    },
    /// Show one backup, its disks, and the repositories that hold copies of it.
    #[command(after_long_help = format!("{BACKUP_JSON}

`backup show --json` adds \"copies\": every backup of the same restore point
(the first backup and its copies) as [{{\"backup\": \"<id>\", \"repo\": \"offsite\",
\"status\": \"completed\"}}]."))]
    Show {
        /// Backup id.
        id: String,
    },
    /// Check backups: qemu-img check of every image of their chains, then a full read of the
    /// data each backup wrote against the digests recorded at backup time.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "vm", "all"])))]
    #[command(
        after_long_help = "Problems are named by backup, disk and offset: bit rot or tampering in a data
cluster, a truncated image, a changed digest file, a deleted chain link, data
beyond the end of the disk, a link backed by another image than its recorded
parent or of another size, a missing or disagreeing manifest. Each image lists its first 20 problems, then counts
the rest. Verify runs as a job (`sendense job cancel` stops it); the backups it
reads cannot be deleted meanwhile.
Exit status 0 when everything is intact, 1 when anything is wrong.

JSON OUTPUT
  {\"ok\": true, \"backups\": [\"<id>\"],
   \"images\": [{\"backup\": \"<id>\", \"disk\": 2000, \"file\": \"...\",
               \"bytes_verified\": 1048576, \"problems\": []}]}"
    )]
    Verify {
        /// Backup id (its whole chain is checked).
        id: Option<String>,
        /// Check the copy of the backup in this repository.
        #[arg(long, requires = "id")]
        repo: Option<String>,
        /// Every backup of this VM.
        #[arg(long)]
        vm: Option<String>,
        /// Every backup.
        #[arg(long)]
        all: bool,
    },
    /// Copy a backup into another repository; only the chain links it lacks move.
    #[command(
        after_long_help = "The copy is a backup of its own in the destination (an id with the same time
stamp, its own retention) that records the backup it copies: `restore ID --repo
REPO`, `verify ID --repo REPO` and `export ID --repo REPO` use it, and it stays
restorable when the first repository is lost (`repo import` of the destination
rebuilds it). The chain of the backup is copied oldest first, skipping every link
whose restore point the destination holds already, so the copy of an incremental
moves only that incremental's data and copies of a chain stay a chain of the same
small increments (backing paths relative). Each image file is copied as it is
(holes stay holes) and checked before it is committed, as `backup verify` checks
one: qemu-img check, its digest file, and every block against the digest recorded
at backup time; a mismatch fails the copy and leaves nothing of that link.

Into an S3 repository the links go as objects: each image checked as above
(an incremental staged and pointed at its parent's copy by `qemu-img rebase
-u`), uploaded in parts with their checksums, its digest file packed beside it,
with Object Lock its ancestors' locks extended to its date, and its manifest
written last, once. Each object is recorded before its upload: a failed copy
removes what it wrote, one killed commits nothing and `cleanup` removes it.
Copies from an S3 repository are refused (exit 5): restore from it.

Refused (exit 5) while a backup, delete or copy of the VM runs; refused for a
damaged chain. Ctrl-C or `job cancel` stop it cleanly (exit 130): the links
committed so far stay, the one being written goes.

JSON OUTPUT
  {\"backup\": \"<id>\", \"point\": \"<id of the first backup>\", \"to\": \"offsite\",
   \"copy\": \"<id in the destination>\",
   \"copied\": [{\"from\": \"<id>\", \"backup\": \"<id>\", \"bytes_written\": 1048576}],
   \"present\": [[\"<id>\", \"<id there>\"]], \"bytes_written\": 1048576}"
    )]
    Copy {
        /// Backup id.
        id: String,
        /// The destination repository.
        #[arg(long)]
        to: String,
    },
    /// Delete any backup; later backups that depend on it keep their data.
    #[command(
        after_long_help = "Removes the manifest, the images and digest files, and the catalog rows. When a
later backup's image of a disk is backed by the deleted backup's image, the
deleted image's data is merged into it first (its own clusters win): that
backup restores exactly as before, now backed by the deleted backup's parent,
or standalone when the deleted backup was a full. Such a merge costs what the
later backup holds, not the disk's size; block digests follow the data, so
`backup verify` passes afterwards. --dry-run shows, per disk, what merges into
what.

Refused (exit 5) while a backup of the VM runs, or while a restore, export or
verify reads the backup or one that depends on it; refused when the backup or
one depending on it is damaged (take a --full backup and delete the damaged
chain newest first), or for digests written by an older Sendense. The backup
is marked deleted, and a merge's journal is written into the repository
(<vm>/merges/<id>.yaml), before the first file changes: an interrupted delete
is finished by the next sendense command, or by `repo import`.

In an S3 repository nothing is merged: a backup that other backups depend on or
whose objects are locked is marked expired instead (\"status\": \"expired\",
\"delete_after\": when its last lock ends), still restorable, and `sendense
cleanup` deletes it once nothing holds it. --dry-run says why it would stay.

JSON OUTPUT
  The deleted backup object, with \"status\": \"deleted\" (or \"expired\"). With
  --dry-run:
  {\"backup\": \"<id>\", \"vm\": \"pgtest1\",
   \"disks\": [{\"key\": 2000, \"merge_into\": \"<id>\" | null,
               \"new_parent\": \"<id>\" | null}],
   \"kept\": \"<why it would be expired, not deleted>\" (S3 only)}"
    )]
    Delete {
        /// Backup id.
        id: String,
        /// Only show what would be removed and merged.
        #[arg(long)]
        dry_run: bool,
    },
    /// Make a VM's newest backup a standalone full, from the repository (a synthetic full).
    #[command(
        after_long_help = "Copies the chain of each disk of the newest completed backup of VM (in --repo,
else in the repository of its newest backup) into one standalone image that
takes the backup's place (`qemu-img convert` of the chain; the source is not
read). The backup restores to exactly the same data, now without opening older
images, and the next incrementals build on it; the older backups stay restore
points of their own, which nothing depends on any more, so prune removes them
without merges. Block digests follow the data. A disk that is a full already is
left alone. The configuration key max_chain_length does this automatically
whenever a backup makes a chain longer.

Refused (exit 5) while a backup of the VM runs or the backup is read, and for a
damaged chain or digests of an older Sendense. The journal
<vm>/merges/<id>.full.yaml is written into the repository before the first file
changes: an interrupted consolidation is finished by the next sendense command.

JSON OUTPUT
  {\"backup\": \"<id>\", \"vm\": \"pgtest1\",
   \"disks\": [{\"key\": 2000, \"links_before\": 12, \"image_bytes\": 1073741824}]}"
    )]
    Consolidate {
        /// VM name.
        vm: String,
        /// Only this disk.
        #[arg(long, value_name = "KEY")]
        disk: Option<u32>,
        /// The VM's newest backup in this repository.
        #[arg(long)]
        repo: Option<String>,
    },
    /// Remove the backups keep rules do not keep; chains keep working.
    #[command(
        after_long_help = "Applies keep rules to the completed backups of each VM in each repository (or
only --vm, --repo), as Proxmox Backup Server does: backups are taken newest first;
--keep-last N keeps the N newest; then --keep-hourly, --keep-daily,
--keep-weekly (ISO weeks, Monday first), --keep-monthly and --keep-yearly each
keep the newest backup of each of the N most recent periods that have one, in
the local time zone (TZ). A period that already holds a backup kept by an
earlier rule is skipped and not counted, so rules combine without counting a
backup twice. Everything else goes.

A removed backup that a kept one depends on is merged: its data goes into its
child (see `backup delete`), so every kept backup restores exactly as before.
Backups nothing kept depends on are removed newest first, then the merged ones
oldest first, each merge moving only what its child holds.

Example: hourly backups, kept for a day, then daily for two weeks, then
monthly for a year:
  sendense backup prune --keep-hourly 24 --keep-daily 14 --keep-monthly 12

Refused (exit 5) for a VM with a running backup; a backup being restored,
exported or verified is left (and reported). Exit status 0 when everything
marked was removed, 3 when some backups stay, 5 when none could go because
they were busy.

In an S3 repository nothing is merged: a backup a kept one depends on, or whose
objects are locked, is marked expired (\"expired\": why) and deleted by
`sendense cleanup` once nothing holds it; --dry-run says which and why.

JSON OUTPUT
  {\"dry_run\": false, \"rules\": {\"last\": 2, \"hourly\": 0, \"daily\": 7, ...},
   \"groups\": [{\"vm\": \"pgtest1\", \"repo\": \"local\",
                \"backups\": [{\"id\": \"<id>\", \"created_at\": \"...\",
                             \"mark\": \"keep\", \"rule\": \"keep-daily\"} |
                            {..., \"mark\": \"remove\"} |
                            {..., \"mark\": \"merge\", \"into\": \"<id>\"},
                            ... \"error\": \"...\" when it stays,
                            \"expired\": \"...\" when kept expired (S3)]}],
   \"kept\": 9, \"removed\": 3, \"expired\": 0, \"failed\": 0}"
    )]
    Prune {
        /// Only this VM.
        #[arg(long)]
        vm: Option<String>,
        /// Only this repository.
        #[arg(long)]
        repo: Option<String>,
        #[command(flatten)]
        keep: KeepArgs,
        /// Only show the marks.
        #[arg(long)]
        dry_run: bool,
    },
}

const JOB_JSON: &str = "JSON OUTPUT
  A job object:
  {\"id\": 7, \"kind\": \"backup\", \"vm\": \"pgtest1\", \"repo\": \"local\",
   \"status\": \"completed\", \"pid\": 4242, \"host\": \"hub1\",
   \"created_at\": \"...\", \"started_at\": \"...\", \"ended_at\": \"...\",
   \"bytes_total\": 0, \"bytes_done\": 0, \"error\": null}
  kind is one of backup, restore, verify, export, copy, prune, cleanup;
  status is one of pending, running, completed, failed, cancelled.";

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// List jobs, newest first.
    #[command(after_long_help = format!("{JOB_JSON}

`job list --json` prints an array of job objects."))]
    List {
        /// Only jobs of this VM.
        #[arg(long)]
        vm: Option<String>,
        /// Only jobs of the VMs in this group.
        #[arg(long)]
        group: Option<String>,
        /// Only jobs of the VMs in the groups that use this policy.
        #[arg(long)]
        policy: Option<String>,
        /// Only jobs in this state.
        #[arg(long, value_parser = ["pending", "running", "completed", "failed", "cancelled"])]
        status: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one job.
    #[command(after_long_help = JOB_JSON)]
    Show {
        /// Job id.
        id: i64,
    },
    /// Print a job's log.
    #[command(after_long_help = "JSON OUTPUT
  [{\"ts\": \"...\", \"level\": \"info\", \"message\": \"snapshot of 2 disk(s) taken\"}, ...]")]
    Log {
        /// Job id.
        id: i64,
    },
    /// Ask a running job to stop; it cancels cleanly (as Ctrl-C would).
    #[command(
        after_long_help = "Backups, restores, verifies and exports stop within a second and clean up as
after a failure; their job ends cancelled.

JSON OUTPUT
  The job object. Refused (exit 5) when the job has already ended."
    )]
    Cancel {
        /// Job id.
        id: i64,
    },
}

/// The clap command, for generating man pages and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Keep rules (prune, policies): each keeps the newest backup of each of the N most recent
/// periods that have one.
#[derive(Debug, Args, Clone, Default)]
pub struct KeepArgs {
    /// Keep the N newest backups.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest backup of each of the N most recent hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// ... of days.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// ... of ISO weeks.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// ... of months.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// ... of years.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
}

/// Keep rules of a policy's copies (`--copy-keep-*`).
#[derive(Debug, Args, Clone, Default)]
pub struct CopyKeepArgs {
    /// In the copy repository: keep the N newest copies.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "copy_to")]
    pub copy_keep_last: u32,
    /// ... the newest of each of the N most recent hours.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "copy_to")]
    pub copy_keep_hourly: u32,
    /// ... days.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "copy_to")]
    pub copy_keep_daily: u32,
    /// ... ISO weeks.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "copy_to")]
    pub copy_keep_weekly: u32,
    /// ... months.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "copy_to")]
    pub copy_keep_monthly: u32,
    /// ... years.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "copy_to")]
    pub copy_keep_yearly: u32,
}

const POLICY_ADD_HELP: &str =
    "A policy says where a group's backups go (--repo), when they run (--schedule;
without one, only by hand), which are fulls (--full-every N: every Nth backup
of a disk; or --full-schedule), when they are verified (--verify), how long
they are kept (the --keep-* rules of `backup prune`; none: all are kept), and
where they are copied (--copy-to, with --copy-keep-* for the copies).

Schedules are five-field cron expressions in the local time zone (TZ): minute
hour day-of-month month day-of-week, names like MON and JAN allowed, or
@hourly, @daily, @midnight, @weekly, @monthly, @yearly. A bad expression is an
error that shows which field is wrong.

Example: nightly at 02:00, a full every 7 nights, a week of dailies and six
monthlies, copies kept 30 days offsite:
  sendense policy add nightly --repo local --schedule '0 2 * * *' \\
      --full-every 7 --keep-daily 7 --keep-monthly 6 \\
      --copy-to offsite --copy-keep-daily 30

JSON OUTPUT
  A policy object:
  {\"name\": \"nightly\", \"repo\": \"local\", \"schedule\": \"0 2 * * *\",
   \"full_every\": 7, \"full_schedule\": null, \"verify_schedule\": null,
   \"keep\": {\"last\": 0, \"hourly\": 0, \"daily\": 7, \"weekly\": 0,
            \"monthly\": 6, \"yearly\": 0},
   \"copies\": [{\"repo\": \"offsite\", \"keep\": {...}}], \"groups\": [\"prod\"],
   \"created_at\": \"...\"}";

const SCHEDULE_LIST_HELP: &str = "JSON OUTPUT
  [{\"name\": \"prod\", \"policy\": \"nightly\", \"max_parallel\": 2, \"priority\": 10,
    \"vms\": [\"pgtest1\"], \"schedule\": \"0 2 * * *\",
    \"next_run\": \"2026-12-01T02:00:00Z\", \"last_run_at\": null,
    \"last_result\": null, \"verify_schedule\": \"0 6 * * SUN\" | null,
    \"next_verify\": \"...\" | null, \"last_verify_at\": null,
    \"last_verify_result\": null, \"created_at\": \"...\"}]";

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Add a policy.
    #[command(after_long_help = POLICY_ADD_HELP)]
    Add {
        /// Policy name.
        name: String,
        /// Repository the backups go to.
        #[arg(long)]
        repo: String,
        /// When backups run (cron, local time).
        #[arg(long, value_name = "CRON")]
        schedule: Option<String>,
        /// Every Nth backup of a disk is a full.
        #[arg(long, value_name = "N", conflicts_with = "full_schedule")]
        full_every: Option<u32>,
        /// When backups are fulls (cron).
        #[arg(long, value_name = "CRON")]
        full_schedule: Option<String>,
        /// When the backups are verified (cron).
        #[arg(long, value_name = "CRON")]
        verify: Option<String>,
        #[command(flatten)]
        keep: KeepArgs,
        /// Copy each VM's newest backup into this repository after every scheduled run (only the
        /// chain links it lacks move).
        #[arg(long, value_name = "REPO")]
        copy_to: Option<String>,
        #[command(flatten)]
        copy_keep: CopyKeepArgs,
    },
    /// List policies.
    List,
    /// Show one policy.
    Show {
        /// Policy name.
        name: String,
    },
    /// Change a policy: only the settings given change.
    #[command(
        after_long_help = "--schedule none, --full-schedule none, --verify none and
--full-every 0 clear those settings; setting --full-every clears
--full-schedule and the other way round. Any --keep-* given replaces that
rule. --copy-to sets the copy target (--copy-to none removes it); the same
target keeps its --copy-keep-* rules unless some are given. A changed schedule
starts now: its groups do not run at once for an instant already past."
    )]
    Edit {
        /// Policy name.
        name: String,
        /// Repository the backups go to.
        #[arg(long)]
        repo: Option<String>,
        /// When backups run (cron), or `none`.
        #[arg(long, value_name = "CRON")]
        schedule: Option<String>,
        /// Every Nth backup of a disk is a full (0: clear).
        #[arg(long, value_name = "N")]
        full_every: Option<u32>,
        /// When backups are fulls (cron), or `none`.
        #[arg(long, value_name = "CRON")]
        full_schedule: Option<String>,
        /// When the backups are verified (cron), or `none`.
        #[arg(long, value_name = "CRON")]
        verify: Option<String>,
        /// Keep the N newest backups.
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// ... the newest of each of the N most recent hours.
        #[arg(long, value_name = "N")]
        keep_hourly: Option<u32>,
        /// ... days.
        #[arg(long, value_name = "N")]
        keep_daily: Option<u32>,
        /// ... ISO weeks.
        #[arg(long, value_name = "N")]
        keep_weekly: Option<u32>,
        /// ... months.
        #[arg(long, value_name = "N")]
        keep_monthly: Option<u32>,
        /// ... years.
        #[arg(long, value_name = "N")]
        keep_yearly: Option<u32>,
        /// Copy each VM's newest backup into this repository after every scheduled run (or
        /// `none`).
        #[arg(long, value_name = "REPO")]
        copy_to: Option<String>,
        #[command(flatten)]
        copy_keep: CopyKeepArgs,
    },
    /// Remove a policy; refused while a group uses it.
    Remove {
        /// Policy name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Add a protection group.
    #[command(
        after_long_help = "A group's VMs are backed up together under its policy: at most
--max-parallel of them at once, groups of higher --priority first. A VM may be
in several groups.

Example:
  sendense group add prod --policy nightly --max-parallel 2 --priority 10
  sendense group add-vm prod pgtest1"
    )]
    Add {
        /// Group name.
        name: String,
        /// Its policy.
        #[arg(long)]
        policy: String,
        /// At most this many of its VMs backed up at once.
        #[arg(long, value_name = "N", default_value_t = 1)]
        max_parallel: u32,
        /// Higher runs first.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 0,
            allow_negative_numbers = true
        )]
        priority: i64,
    },
    /// Change a group's policy, parallelism or priority.
    Edit {
        /// Group name.
        name: String,
        /// Its policy.
        #[arg(long)]
        policy: Option<String>,
        /// At most this many of its VMs backed up at once.
        #[arg(long, value_name = "N")]
        max_parallel: Option<u32>,
        /// Higher runs first.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        priority: Option<i64>,
    },
    /// Put a VM into a group.
    AddVm {
        /// Group name.
        group: String,
        /// VM name.
        vm: String,
    },
    /// Take a VM out of a group (its backups stay).
    RemoveVm {
        /// Group name.
        group: String,
        /// VM name.
        vm: String,
    },
    /// List groups with their next runs.
    List,
    /// Show one group.
    Show {
        /// Group name.
        name: String,
    },
    /// Remove a group (its VMs and backups stay).
    Remove {
        /// Group name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Each group's schedule, next run and last result.
    #[command(after_long_help = SCHEDULE_LIST_HELP)]
    List,
    /// Run, once, everything due now; safe to start from cron every minute.
    #[command(
        after_long_help = "A group is due when its policy's schedule has an instant since the group
last ran (runs missed while the hub was down run once, for the latest instant).
Due groups run higher priority first; each backs up its VMs into the policy's
repository, at most --max-parallel at once; a VM whose backup is already
running is skipped and reported. A backup is a full when the policy's
--full-schedule has an instant since the full its chain starts with, or when
--full-every backups were taken since the last full from the source. A backup
that fails in a way that may pass is tried again (configuration
`schedule.retries`, `schedule.retry_delay_secs`, doubling). Then each VM's
newest backup is copied into the policy's --copy-to repository (only the chain
links missing there move), and the keep rules prune each VM: the policy's in its
repository, the --copy-keep-* rules in the copy repository. Last, the groups
whose policy's --verify schedule is due have every backup of their VMs verified
(copies included). Only one run at a time: a second one finds the first running
and starts nothing (verifies hold a lock of their own, so a long verify does not
hold up the backups that come due meanwhile). A crontab line:
  * * * * *  root  sendense schedule run -q

A VM in two due groups whose policies use the same repository is backed up
once. Exit status 0 when everything due succeeded (or nothing was due), 3 when
some backups, copies or verifies failed, 1 when something was due and nothing
could run, 130 when it was interrupted (what had not ended is reported
cancelled; groups whose backups it interrupted run again next time).

JSON OUTPUT
  {\"dry_run\": false, \"already_running\": false, \"now\": \"...\", \"cancelled\": false,
   \"groups\": [{\"group\": \"prod\", \"policy\": \"nightly\", \"due_at\": \"...\",
     \"vms\": [{\"vm\": \"pgtest1\", \"result\": \"completed\" | \"failed\" | \"skipped\" | \"due\",
              \"backup\": \"<id>\", \"requested\": \"auto\" | \"full\",
              \"seconds\": 3.2, \"bytes\": 1048576, \"error\": null, \"attempts\": 1}],
     \"copies\": [{\"vm\": \"pgtest1\", \"to\": \"offsite\", \"result\": \"completed\",
                 \"backup\": \"<id>\", \"copy\": \"<id there>\", \"links\": 1,
                 \"bytes\": 1048576, \"seconds\": 0.4, \"error\": null}],
     \"prune\": [\"pgtest1 in `local`: 7 kept, 1 removed, 0 stay\"]}],
   \"verifies\": [{\"group\": \"prod\", \"due_at\": \"...\", \"vm\": \"pgtest1\",
                 \"result\": \"completed\" | \"failed\" | \"due\", \"images\": 9,
                 \"bytes\": 1073741824, \"seconds\": 12.5, \"error\": null}]}"
    )]
    Run {
        /// Only show what is due.
        #[arg(long)]
        dry_run: bool,
    },
}
