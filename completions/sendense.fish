# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_sendense_global_optspecs
    string join \n state-dir= config= json v/verbose q/quiet h/help V/version
end

function __fish_sendense_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_sendense_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_sendense_using_subcommand
    set -l cmd (__fish_sendense_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c sendense -n "__fish_sendense_needs_command" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_needs_command" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_needs_command" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_needs_command" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_needs_command" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_needs_command" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "init" -d 'Create the state directory, the catalog and a commented default config'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "repo" -d 'Manage backup repositories'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "vm" -d 'Manage the VMs Sendense backs up'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "node" -d 'Remote nodes: hypervisor hosts whose sendense-sna the hub drives over SSH'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "vcenter" -d 'vCenters: the vSphere servers VMware VMs are reached through'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "policy" -d 'Policies: where a group\'s backups go, when, how long they are kept, where they are copied'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "group" -d 'Protection groups: VMs backed up together under one policy'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "schedule" -d 'When groups run'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "daemon" -d 'Run what is due, whenever it is due, in the foreground (for systemd)'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "backup" -d 'Back up VMs and inspect backups'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "job" -d 'Inspect jobs (backups, restores, ...)'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "restore" -d 'Restore disks as they were at a backup: standalone images, or into an NBD target'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "export" -d 'Serve a restore point over NBD until interrupted (instant recovery, inspection)'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "mount" -d 'Mount a restore point\'s partitions read-only (or list the mounts: `mount list`)'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "umount" -d 'Unmount a restore point mounted with `sendense mount`'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "files" -d 'Files of a restore point, without mounting by hand'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "nbd" -d 'NBD exports Sendense started'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "cleanup" -d 'Find and remove what interrupted jobs left behind'
complete -c sendense -n "__fish_sendense_needs_command" -f -a "doctor" -d 'Check the catalog (every page, index and reference) and, when it is damaged, say how to rebuild it from the repositories'
complete -c sendense -n "__fish_sendense_using_subcommand init" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand init" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand init" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand init" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand init" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand init" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand init" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -f -a "add" -d 'Create a repository in DIR, or in S3-compatible object storage, and register it'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -f -a "list" -d 'List repositories'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -f -a "show" -d 'Show a repository with a fresh capacity reading (an S3 repository: what its bucket says, nothing written)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -f -a "test" -d 'Check a repository: mount guard, identity, a durable write (write, fsync, read back, delete a 1 MiB probe), capacity; for an S3 repository its identity, a probe written, read, listed and deleted, and Object Lock'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -f -a "import" -d 'Register an existing repository and rebuild its backups in the catalog from its manifests'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -f -a "refresh" -d 'Re-read the capacity of every repository and check each is present'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and not __fish_seen_subcommand_from add list show test import refresh remove" -f -a "remove" -d 'Unregister a repository. Refused (exit 5) while it holds backups; its files are kept'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l path -d 'Directory of the repository (local disk or a mounted NFS/CIFS share)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l s3 -d 'Make the repository in S3-compatible object storage instead' -r
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l region -d 'The S3 region (default us-east-1)' -r
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l credentials-file -d 'The S3 keys: an AWS credentials file, readable by its owner only' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l profile -d 'The profile of the credentials file to use' -r
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l ca-file -d 'CA certificates (PEM) to trust besides the system\'s, for a private CA' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l object-lock -d 'Lock every object written for DAYS days (S3 Object Lock)' -r
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l lock-mode -d 'The Object Lock mode' -r -f -a "compliance\t''
governance\t''"
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l path-style -d 'Address buckets as https://ENDPOINT/BUCKET (Ceph RGW and MinIO often need it) instead of https://BUCKET.ENDPOINT'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l require-mount -d 'Refuse to use DIR unless it is a mount point (never fill the root filesystem because a share was not mounted)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l default -d 'Make it the default repository'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from show" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from show" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from test" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from test" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from test" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from test" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from test" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from test" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from test" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l s3 -d 'Import a repository in S3-compatible object storage instead (the keys and options as for `repo add --s3`)' -r
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l name -d 'Name to register it under (default: the name it was created with)' -r
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l region -d 'The S3 region (default us-east-1)' -r
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l credentials-file -d 'The S3 keys: an AWS credentials file, readable by its owner only' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l profile -d 'The profile of the credentials file to use' -r
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l ca-file -d 'CA certificates (PEM) to trust besides the system\'s' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l object-lock -d 'Lock every object written from now on for DAYS days (S3 Object Lock)' -r
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l lock-mode -d 'The Object Lock mode' -r -f -a "compliance\t''
governance\t''"
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l require-mount -d 'Refuse to use the path unless it is a mount point'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l default -d 'Make it the default repository'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l take-over -d 'Take the repository over from the hub that owns it: that hub\'s backups and deletes there are refused from then on'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l salvage -d 'Also register backups whose manifest is lost when their images, digest files and backing links prove them (each gets a new manifest)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l path-style -d 'Address buckets as https://ENDPOINT/BUCKET'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from import" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from refresh" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from refresh" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from refresh" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from refresh" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from refresh" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from refresh" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from refresh" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand repo; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -f -a "add" -d 'Register a VM: a live QEMU VM (--qmp), disk image files of a stopped VM (--disk), or existing NBD exports (--nbd)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -f -a "discover" -d 'Show the disks of a running QEMU VM without registering it'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -f -a "list" -d 'List VMs'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -f -a "show" -d 'Show a VM, its disks and the state of their change-tracking checkpoints'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and not __fish_seen_subcommand_from add discover list show remove" -f -a "remove" -d 'Unregister a VM. Refused (exit 5) while backups of it exist'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l disk -d 'A disk image of the VM; repeat for each disk, in device order' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l qmp -d 'The QMP socket of a running QEMU VM' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l nbd -d 'An NBD export of one disk (nbd://HOST:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH); repeat for each disk, in order' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l pre-hook -d 'Command run before the snapshot of an --nbd VM (arguments split like a shell, no shell)' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l post-hook -d 'Command run after the backup of an --nbd VM' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l node -d 'The VM runs on this node: --qmp and --disk are paths there, which the node\'s sendense-sna opens on the hub\'s request, over SSH (with --vcenter: the node reads the VM\'s snapshots through its own VDDK)' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l vcenter -d 'A VMware VM of this vCenter (see `sendense vcenter add`), named by --path or --uuid' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l path -d 'Its inventory path (/DATACENTER/vm/[FOLDER/]NAME)' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l uuid -d 'Its BIOS uuid (`config.uuid`)' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l group -d 'Put the VM in this protection group (repeat for several)' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -l qmp -d 'The QMP socket of a running QEMU VM (on the node, with --node)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -l node -d 'The VM runs on this node: its sendense-sna looks, over SSH' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -l vcenter -d 'List the VMs of this vCenter, with their disks' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -l filter -d 'Only VMs whose name contains TEXT' -r
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from discover" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from show" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from show" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand vm; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -f -a "add" -d 'Add a node: connect over SSH, pin its host key, check its sendense-sna'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -f -a "install" -d 'Copy this hub\'s sendense-sna to a node'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -f -a "list" -d 'List nodes'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -f -a "show" -d 'Show one node'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -f -a "test" -d 'Connect to a node, check its host key and its sendense-sna'
complete -c sendense -n "__fish_sendense_using_subcommand node; and not __fish_seen_subcommand_from add install list show test remove" -f -a "remove" -d 'Remove a node (refused while VMs run there)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -l ssh -d 'Where: [USER@]HOST[:PORT] (user: the hub\'s user, port 22 by default)' -r
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -l identity -d 'Private key file to sign in with (default: the ssh-agent\'s keys)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -l host-key -d 'The node\'s host key fingerprint (SHA256:...), checked on the node beforehand' -r
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -l sna-path -d 'sendense-sna on the node (default: `sendense-sna` on the account\'s PATH)' -r
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -l accept-host-key -d 'Pin whichever host key the node presents (shown in the output)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -l install -d 'When the node has no sendense-sna of this hub\'s version, install the hub\'s own (as --sna-path when given)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from install" -l to -d 'Where on the node (default: where the node\'s is, else ~/.local/lib/sendense/sendense-sna)' -r
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from install" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from install" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from install" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from install" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from install" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from install" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from install" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from show" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from show" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from test" -l throughput -d 'Also measure the node-to-hub rate through the SSH connection (the way backup data travels): the node sends this many MiB (1-4096) through a forward on its loopback' -r
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from test" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from test" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from test" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from test" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from test" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from test" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from test" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand node; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -f -a "add" -d 'Add a vCenter (or ESXi host): connect, pin its certificate, check the login'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -f -a "list" -d 'List vCenters'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -f -a "show" -d 'Show one vCenter'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -f -a "test" -d 'Connect to a vCenter: its certificate must be the pinned one, the login must pass'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and not __fish_seen_subcommand_from add list show test remove" -f -a "remove" -d 'Remove a vCenter and its password file'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -l url -d 'https://HOST[:PORT]/sdk' -r
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -l user -d 'The account to log in as (e.g. backup@vsphere.local)' -r
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -l password-file -d 'A file holding its password (one line; only you may read it)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -l thumbprint -d 'The certificate\'s thumbprint (SHA-1 AA:BB:... or SHA-256)' -r
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -l accept-certificate -d 'Pin whichever certificate the server presents (shown in the output)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from show" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from show" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from test" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from test" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from test" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from test" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from test" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from test" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from test" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand vcenter; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -f -a "add" -d 'Add a policy'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -f -a "list" -d 'List policies'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -f -a "show" -d 'Show one policy'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -f -a "edit" -d 'Change a policy: only the settings given change'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and not __fish_seen_subcommand_from add list show edit remove" -f -a "remove" -d 'Remove a policy; refused while a group uses it'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l repo -d 'Repository the backups go to' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l schedule -d 'When backups run (cron, local time)' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l full-every -d 'Every Nth backup of a disk is a full' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l full-schedule -d 'When backups are fulls (cron)' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l verify -d 'When the backups are verified (cron)' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l keep-last -d 'Keep the N newest backups' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l keep-hourly -d 'Keep the newest backup of each of the N most recent hours that have one' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l keep-daily -d '... of days' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l keep-weekly -d '... of ISO weeks' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l keep-monthly -d '... of months' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l keep-yearly -d '... of years' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l copy-to -d 'Copy each VM\'s newest backup into this repository after every scheduled run (only the chain links it lacks move)' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l copy-keep-last -d 'In the copy repository: keep the N newest copies' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l copy-keep-hourly -d '... the newest of each of the N most recent hours' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l copy-keep-daily -d '... days' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l copy-keep-weekly -d '... ISO weeks' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l copy-keep-monthly -d '... months' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l copy-keep-yearly -d '... years' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from show" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from show" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l repo -d 'Repository the backups go to' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l schedule -d 'When backups run (cron), or `none`' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l full-every -d 'Every Nth backup of a disk is a full (0: clear)' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l full-schedule -d 'When backups are fulls (cron), or `none`' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l verify -d 'When the backups are verified (cron), or `none`' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l keep-last -d 'Keep the N newest backups' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l keep-hourly -d '... the newest of each of the N most recent hours' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l keep-daily -d '... days' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l keep-weekly -d '... ISO weeks' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l keep-monthly -d '... months' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l keep-yearly -d '... years' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l copy-to -d 'Copy each VM\'s newest backup into this repository after every scheduled run (or `none`)' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l copy-keep-last -d 'In the copy repository: keep the N newest copies' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l copy-keep-hourly -d '... the newest of each of the N most recent hours' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l copy-keep-daily -d '... days' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l copy-keep-weekly -d '... ISO weeks' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l copy-keep-monthly -d '... months' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l copy-keep-yearly -d '... years' -r
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from edit" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand policy; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -f -a "add" -d 'Add a protection group'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -f -a "edit" -d 'Change a group\'s policy, parallelism or priority'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -f -a "add-vm" -d 'Put a VM into a group'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -f -a "remove-vm" -d 'Take a VM out of a group (its backups stay)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -f -a "list" -d 'List groups with their next runs'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -f -a "show" -d 'Show one group'
complete -c sendense -n "__fish_sendense_using_subcommand group; and not __fish_seen_subcommand_from add edit add-vm remove-vm list show remove" -f -a "remove" -d 'Remove a group (its VMs and backups stay)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add" -l policy -d 'Its policy' -r
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add" -l max-parallel -d 'At most this many of its VMs backed up at once' -r
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add" -l priority -d 'Higher runs first' -r
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from edit" -l policy -d 'Its policy' -r
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from edit" -l max-parallel -d 'At most this many of its VMs backed up at once' -r
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from edit" -l priority -d 'Higher runs first' -r
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from edit" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from edit" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from edit" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from edit" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from edit" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from edit" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from edit" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add-vm" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add-vm" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add-vm" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add-vm" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add-vm" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add-vm" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from add-vm" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove-vm" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove-vm" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove-vm" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove-vm" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove-vm" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove-vm" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove-vm" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from show" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from show" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand group; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and not __fish_seen_subcommand_from list run" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and not __fish_seen_subcommand_from list run" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and not __fish_seen_subcommand_from list run" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and not __fish_seen_subcommand_from list run" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and not __fish_seen_subcommand_from list run" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and not __fish_seen_subcommand_from list run" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and not __fish_seen_subcommand_from list run" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and not __fish_seen_subcommand_from list run" -f -a "list" -d 'Each group\'s schedule, next run and last result'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and not __fish_seen_subcommand_from list run" -f -a "run" -d 'Run, once, everything due now; safe to start from cron every minute'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from run" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from run" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from run" -l dry-run -d 'Only show what is due'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from run" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from run" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from run" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand schedule; and __fish_seen_subcommand_from run" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand daemon" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand daemon" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand daemon" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand daemon" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand daemon" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand daemon" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand daemon" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -f -a "start" -d 'Back up a VM: one consistent snapshot of all its disks; full or incremental per disk'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -f -a "list" -d 'List backups, newest first'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -f -a "show" -d 'Show one backup, its disks, and the repositories that hold copies of it'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -f -a "verify" -d 'Check backups: qemu-img check of every image of their chains, then a full read of the data each backup wrote against the digests recorded at backup time'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -f -a "copy" -d 'Copy a backup into another repository; only the chain links it lacks move'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -f -a "delete" -d 'Delete any backup; later backups that depend on it keep their data'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -f -a "consolidate" -d 'Make a VM\'s newest backup a standalone full, from the repository (a synthetic full)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and not __fish_seen_subcommand_from start list show verify copy delete consolidate prune" -f -a "prune" -d 'Remove the backups keep rules do not keep; chains keep working'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -l repo -d 'Repository (default: the default repository)' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -l full -d 'A full backup of every disk'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -l incremental -d 'Incremental for every disk, or fail with the reason'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -l require-quiesce -d 'VMware VMs: fail when the guest cannot be quiesced, instead of backing up from a crash-consistent snapshot with a warning'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from start" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from list" -l vm -d 'Only this VM' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from list" -l repo -d 'Only this repository' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from show" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from show" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from verify" -l repo -d 'Check the copy of the backup in this repository' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from verify" -l vm -d 'Every backup of this VM' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from verify" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from verify" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from verify" -l all -d 'Every backup'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from verify" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from verify" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from verify" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from verify" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from copy" -l to -d 'The destination repository' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from copy" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from copy" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from copy" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from copy" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from copy" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from copy" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from copy" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from delete" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from delete" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from delete" -l dry-run -d 'Only show what would be removed and merged'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from delete" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from delete" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from delete" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from consolidate" -l disk -d 'Only this disk' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from consolidate" -l repo -d 'The VM\'s newest backup in this repository' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from consolidate" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from consolidate" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from consolidate" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from consolidate" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from consolidate" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from consolidate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from consolidate" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l vm -d 'Only this VM' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l repo -d 'Only this repository' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l keep-last -d 'Keep the N newest backups' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l keep-hourly -d 'Keep the newest backup of each of the N most recent hours that have one' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l keep-daily -d '... of days' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l keep-weekly -d '... of ISO weeks' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l keep-monthly -d '... of months' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l keep-yearly -d '... of years' -r
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l dry-run -d 'Only show the marks'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand backup; and __fish_seen_subcommand_from prune" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -f -a "list" -d 'List jobs, newest first'
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -f -a "show" -d 'Show one job'
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -f -a "log" -d 'Print a job\'s log'
complete -c sendense -n "__fish_sendense_using_subcommand job; and not __fish_seen_subcommand_from list show log cancel" -f -a "cancel" -d 'Ask a running job to stop; it cancels cleanly (as Ctrl-C would)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -l vm -d 'Only jobs of this VM' -r
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -l group -d 'Only jobs of the VMs in this group' -r
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -l policy -d 'Only jobs of the VMs in the groups that use this policy' -r
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -l status -d 'Only jobs in this state' -r -f -a "pending\t''
running\t''
completed\t''
failed\t''
cancelled\t''"
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -l limit -d 'At most this many jobs' -r
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from show" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from show" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from show" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from log" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from log" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from log" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from log" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from log" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from log" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from log" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from cancel" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from cancel" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from cancel" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from cancel" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from cancel" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from cancel" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand job; and __fish_seen_subcommand_from cancel" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand restore" -l repo -d 'Restore from the copy of the backup in this repository (`backup show ID` lists them)' -r
complete -c sendense -n "__fish_sendense_using_subcommand restore" -l disk -d 'Disk key to restore' -r
complete -c sendense -n "__fish_sendense_using_subcommand restore" -l to -d 'Destination: a file, a directory (--all) or an NBD URL' -r
complete -c sendense -n "__fish_sendense_using_subcommand restore" -l format -d 'Format of restored files' -r -f -a "qcow2\t''
raw\t''"
complete -c sendense -n "__fish_sendense_using_subcommand restore" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand restore" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand restore" -l all -d 'Every disk of the backup (PATH is a directory)'
complete -c sendense -n "__fish_sendense_using_subcommand restore" -l force -d 'Replace existing files'
complete -c sendense -n "__fish_sendense_using_subcommand restore" -l no-verify -d 'Do not check the blocks against the backups\' digests (a damaged backup then restores what its images hold)'
complete -c sendense -n "__fish_sendense_using_subcommand restore" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand restore" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand restore" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand restore" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand restore" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand export" -l repo -d 'Serve the copy of the backup in this repository' -r
complete -c sendense -n "__fish_sendense_using_subcommand export" -l disk -d 'Disk key' -r
complete -c sendense -n "__fish_sendense_using_subcommand export" -l port -d 'Listen on this port of 127.0.0.1' -r
complete -c sendense -n "__fish_sendense_using_subcommand export" -l socket -d 'Listen on this Unix socket' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand export" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand export" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand export" -l writable -d 'Accept writes into a temporary overlay (discarded at the end)'
complete -c sendense -n "__fish_sendense_using_subcommand export" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand export" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand export" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand export" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -l disk -d 'Disk key' -r
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -l repo -d 'Mount the copy of the backup in this repository' -r
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -l idle -d 'Unmount after this many seconds unused (0: never)' -r
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -l foreground -d 'Stay in the foreground until Ctrl-C (or umount) instead of going on in the background'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -l no-verify -d 'Serve the blocks without checking them against the backup\'s digests'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and not __fish_seen_subcommand_from list" -a "list" -d 'List mounted restore points'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand mount; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand mount; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand mount; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand umount" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand umount" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand umount" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand umount" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand umount" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand umount" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand umount" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand files; and not __fish_seen_subcommand_from ls get" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand files; and not __fish_seen_subcommand_from ls get" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand files; and not __fish_seen_subcommand_from ls get" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand files; and not __fish_seen_subcommand_from ls get" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand files; and not __fish_seen_subcommand_from ls get" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand files; and not __fish_seen_subcommand_from ls get" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand files; and not __fish_seen_subcommand_from ls get" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand files; and not __fish_seen_subcommand_from ls get" -f -a "ls" -d 'List a restore point\'s partitions, or the entries at PATH (PARTITION/path)'
complete -c sendense -n "__fish_sendense_using_subcommand files; and not __fish_seen_subcommand_from ls get" -f -a "get" -d 'Copy files and directories of a restore point out, with their metadata'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from ls" -l disk -d 'Disk key' -r
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from ls" -l repo -d 'Read the copy of the backup in this repository' -r
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from ls" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from ls" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from ls" -l no-verify -d 'Read the blocks without checking them against the backup\'s digests'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from ls" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from ls" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from ls" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from ls" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -l disk -d 'Disk key' -r
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -l to -d 'Destination directory (made when missing), or `-` for a tar stream on stdout' -r
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -l repo -d 'Read the copy of the backup in this repository' -r
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -l no-verify -d 'Read the blocks without checking them against the backup\'s digests'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand files; and __fish_seen_subcommand_from get" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and not __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and not __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and not __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and not __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and not __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and not __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and not __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and not __fish_seen_subcommand_from list" -f -a "list" -d 'List the NBD exports Sendense started (port, export, pid, job, file, age)'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and __fish_seen_subcommand_from list" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and __fish_seen_subcommand_from list" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and __fish_seen_subcommand_from list" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand nbd; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand cleanup" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand cleanup" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand cleanup" -l dry-run -d 'Only show what would be removed'
complete -c sendense -n "__fish_sendense_using_subcommand cleanup" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand cleanup" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand cleanup" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand cleanup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand cleanup" -s V -l version -d 'Print version'
complete -c sendense -n "__fish_sendense_using_subcommand doctor" -l state-dir -d 'State directory (catalog, config). Default: $SENDENSE_HOME, else /var/lib/sendense for root, else $XDG_DATA_HOME/sendense' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand doctor" -l config -d 'Configuration file (default: <state-dir>/config.yaml)' -r -F
complete -c sendense -n "__fish_sendense_using_subcommand doctor" -l json -d 'Print one JSON document on stdout (NDJSON events for long operations)'
complete -c sendense -n "__fish_sendense_using_subcommand doctor" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c sendense -n "__fish_sendense_using_subcommand doctor" -s q -l quiet -d 'Only errors on stderr'
complete -c sendense -n "__fish_sendense_using_subcommand doctor" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sendense -n "__fish_sendense_using_subcommand doctor" -s V -l version -d 'Print version'
