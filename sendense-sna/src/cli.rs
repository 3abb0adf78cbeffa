//! The `sendense-sna` command line.

use clap::{Args, Parser, Subcommand};

/// Sendense node data mover.
#[derive(Debug, Parser)]
#[command(
    name = "sendense-sna",
    version,
    about = "Sendense node data mover",
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Print NDJSON events and a final JSON summary on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy one NBD export into another, moving only allocated (or changed) data.
    #[command(
        after_long_help = "URLs are nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH.

Holes and all-zero blocks are written with WRITE_ZEROES (correct for any destination, including
an incremental QCOW2 overlay); with --destination-is-zero they are skipped.

JSON OUTPUT
  NDJSON events ({\"ts\", \"event\": \"disk_started\" | \"disk_progress\" | \"disk_finished\", ...}),
  then one summary line:
  {\"size\": ..., \"bytes_planned\": ..., \"bytes_read\": ..., \"bytes_written\": ...,
   \"bytes_zero\": ..., \"seconds\": ..., \"connections\": 4, \"mib_per_sec\": ...}
  (\"connections\": the number used; a copy with little to do uses fewer than --connections)"
    )]
    Copy(CopyArgs),
    /// Run a backup transfer planned by the hub: a JSON plan on stdin, NDJSON on stdout.
    #[command(after_long_help = "Node protocol 2. The plan (stdin):
  {\"protocol\": 2, \"job\": 7,
   \"disks\": [{\"key\": 2000, \"mode\": \"full\" | \"incremental\", \"reason\": \"...\",
              \"source\": \"nbd+unix:///pgtest1-disk-2000?socket=...\",
              \"target\": \"nbd://127.0.0.1:10100/pgtest1-disk-2000\",
              \"bitmap\": null | \"sendense-...\", \"size_bytes\": ...,
              \"record_digests\": true, \"digest_scheme\": \"blake3kz-64k\"}],
   \"connections\": 4, \"requests\": 4, \"request_size\": 1048576}

Output (stdout), one JSON document per line: events; the digest of every block
written as data, {\"digest\": {\"disk\": 2000, \"offset\": 65536, \"record\": \"<64 hex>\"}},
and of every range written as zeroes, {\"zeroes\": {\"disk\": 2000, \"offset\": ...,
\"len\": ...}} (the hub writes the digest files); last
  {\"summary\": {\"protocol\": 2, \"results\": [{\"key\": 2000, \"bytes_read\": ...,
                \"bytes_written\": ..., \"bytes_zero\": ..., \"seconds\": ...,
                \"digest_scheme\": \"blake3kz-64k\", \"whole_blocks\": true}]}}
A plan of another protocol version, or with an unknown digest scheme, is a bad
plan (exit 2); a plan without \"digest_scheme\" means blake3k-64k.
Exit status: 0 done, 1 failed, 2 bad plan, 130 cancelled (SIGINT).")]
    Transfer,
    /// Run the source side of a VM for the hub: one JSON call per line on stdin, the answers
    /// on stdout.
    #[command(after_long_help = "Source protocol 2. The hub sends one call per line:
  {\"call\": \"open\", \"protocol\": 2, \"kind\": \"qemu\", \"options\": {\"qmp\": \"/run/vm.qmp\"}}
  {\"call\": \"discover\"}   {\"call\": \"checkpoints\", \"disks\": [...]}
  {\"call\": \"repair\", \"req\": {...}}   {\"call\": \"snapshot\", \"req\": {...}}
  {\"call\": \"finish\", \"success\": true}
and reads, per call, log lines {\"log\": \"...\"} then {\"ok\": <result>} or
{\"error\": {\"kind\", \"message\", \"help\"}}. The source object lives for the
session: a snapshot and its finish are one session. When stdin closes, what a
snapshot left is torn down and the process exits 0; so after 120 s without a
call or {\"call\": \"ping\"} (SENDENSE_SNA_SESSION_IDLE_SECS).
Kinds: qemu (a QMP socket), image (files), vmware (a vCenter VM: the login
travels in the open call; nbdkit's VDDK plugin from the environment:
SENDENSE_SNA_VDDK_LIBDIR, default /usr/lib/vmware-vix-disklib;
SENDENSE_SNA_VDDK_PLUGIN, default vddk; SENDENSE_SNA_VDDK_TRANSPORTS, default the
hub's). Scratch directories: $SENDENSE_SNA_STATE/jobs (default
~/.local/state/sendense-sna).")]
    Source,
    /// Run the node command the hub asked for over SSH (`$SSH_ORIGINAL_COMMAND`) when it is
    /// one of this program's node commands, and refuse anything else: the `command=` of a node
    /// account's authorized_keys entry.
    #[command(after_long_help = "In ~/.ssh/authorized_keys of the node account:
  restrict,port-forwarding,permitlisten=\"127.0.0.1:*\",from=\"HUB\",command=\"/PATH/sendense-sna ssh-command\" ssh-ed25519 AAAA...
Runs `[--json] hello | source | transfer | send-test PORT BYTES` of this
sendense-sna (whatever path the hub named); anything else is refused (exit 5).
`sendense node install` cannot run under it: install sendense-sna by hand.")]
    SshCommand,
    /// Send BYTES to a port on this host's loopback, as fast as it goes (`sendense node test
    /// --throughput` measures the hub's forward with it).
    #[command(
        after_long_help = "Connects to 127.0.0.1:PORT (nothing else), writes BYTES and
closes; prints {\"bytes\": ..., \"seconds\": ...}."
    )]
    SendTest {
        /// The port on 127.0.0.1.
        port: u16,
        /// How many bytes.
        bytes: u64,
    },
    /// Print who this node is: its version and the protocols it speaks (JSON).
    #[command(
        after_long_help = "The hub asks this first, over SSH, and refuses a node of another version:
  {\"version\": \"0.1.0\", \"node_protocol\": 2, \"source_protocol\": 1}"
    )]
    Hello,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source export.
    pub src: String,
    /// Destination export.
    pub dst: String,
    /// Copy only the ranges this dirty bitmap marks (qemu:dirty-bitmap:NAME on the source).
    #[arg(long, value_name = "NAME")]
    pub bitmap: Option<String>,
    /// The destination reads as zeroes already (a fresh image): skip holes and zero blocks.
    #[arg(long)]
    pub destination_is_zero: bool,
    /// NBD connections to each side, at most (a copy with little to do uses fewer).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
    /// Requests in flight per connection, at most.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub requests: u32,
    /// Largest single request in bytes (a power of two).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub request_size: u32,
}
