//! Command-line surface. This module only parses: every value stays a raw string so that
//! `config/` can validate it once and name the offending variable in its message.
//!
//! Every setting is a flag with an environment fallback, so `.env` files, systemd
//! `EnvironmentFile=`, compose `env_file:` and `docker run -e` all configure the same thing.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const PG: &str = "PostgreSQL server";
const BACKUP: &str = "Backup";
const LOCAL: &str = "Local retention";
const S3: &str = "S3-compatible storage";
const RSYNC: &str = "Remote host over rsync/ssh";
const OUTPUT: &str = "Output and monitoring";

/// Secrets have no flags: every user of the machine can read a process's arguments.
const SECRETS_HELP: &str = "\
Secrets are read from the environment (or --env-file, or a *_FILE variable), never from flags:
  PGPASSWORD      [env: PGPASSWORD]      or PGPASSWORD_FILE
  S3_ACCESS_KEY   [env: S3_ACCESS_KEY]   or S3_ACCESS_KEY_FILE (else AWS_ACCESS_KEY_ID, the SDK chain)
  S3_SECRET_KEY   [env: S3_SECRET_KEY]   or S3_SECRET_KEY_FILE (else AWS_SECRET_ACCESS_KEY)
  NOTIFY_URL      [env: NOTIFY_URL]      or NOTIFY_URL_FILE: the JSON result is POSTed there
  HEALTHCHECK_URL [env: HEALTHCHECK_URL] or HEALTHCHECK_URL_FILE: /start, success, /fail pings
  NOTIFY_URLS     [env: NOTIFY_URLS]     or NOTIFY_URLS_FILE: slack://, discord://, teams://,
                  telegram://, ntfy://, gotify://, smtp://, generic+https:// (shoutrrr's forms)

On a terminal the result is text for a person; otherwise (or with --json) every run prints \
one JSON object on stdout. It exits with a sysexits code (0 ok, 1 stale \
backup, 64 usage, 65 data, 66 not found, 69 unreachable, 70 bug, 73 cannot create / refused, \
74 I/O, 75 locked, 77 permission, 78 configuration incomplete).";

#[derive(Debug, Parser)]
#[command(
    name = "pg-backups",
    version,
    about = "Disaster recovery for PostgreSQL: checked logical dumps, shipped off the machine, \
             pruned safely, restored on the first try.",
    long_about = None,
    after_help = SECRETS_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take one backup: globals, one file per database and the cluster file, in a new UTC folder.
    Dump,
    /// Copy every local backup folder that an enabled destination (S3, remote) lacks.
    Ship,
    /// Apply retention at local, S3 and remote; never removes the newest complete backup.
    Prune(PruneArgs),
    /// List backups at local, S3 and remote with status, size and age.
    List(ListArgs),
    /// Check a backup's checksums and gzip streams; optionally restore it into scratch databases.
    Verify(VerifyArgs),
    /// Monitoring: exit 1 when the newest complete backup at any enabled destination is too old.
    Check(CheckArgs),
    /// Protect a folder from every retention rule (or lift the protection with --unpin).
    Pin(PinArgs),
    /// Check a folder made by the original backup scripts (no manifest) and make it a backup.
    Adopt(AdoptArgs),
    /// Restore the cluster, the globals or one database from local, S3 or remote.
    Restore(RestoreArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(CompletionsArgs),
    /// Write the man pages (pg-backups.1 and one per command) into DIR, or print pg-backups.1.
    Man(ManArgs),
    /// Ping HEALTHCHECK_URL: start, success or fail (pg-backups-cycle pings once per cycle).
    Ping(PingArgs),
    /// Tell NOTIFY_URLS how a pg-backups-cycle went (the cycle's exit code and JSON lines).
    Notify(NotifyArgs),
}

#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// The exit code of the cycle (0: it succeeded).
    pub code: i32,
    /// The file that holds the cycle's JSON lines, one result per line.
    pub results: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PingArgs {
    /// start, success or fail.
    #[arg(value_parser = ["start", "success", "fail"])]
    pub signal: String,
    /// The exit code of the cycle's first failure (sent in the body of a `fail` ping).
    pub code: Option<i32>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (default: print pg-backups.1 on stdout).
    pub dir: Option<PathBuf>,
}

impl Command {
    /// The name used in the JSON result.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Dump => "dump",
            Command::Ship => "ship",
            Command::Prune(_) => "prune",
            Command::List(_) => "list",
            Command::Verify(_) => "verify",
            Command::Check(_) => "check",
            Command::Pin(_) => "pin",
            Command::Adopt(_) => "adopt",
            Command::Restore(_) => "restore",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
            Command::Ping(_) => "ping",
            Command::Notify(_) => "notify",
        }
    }
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Print the plan (what would be deleted or kept, and why) and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Where to look: local, s3, remote or all (the enabled ones).
    #[arg(long, default_value = "all")]
    pub source: String,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Folder name (YYYYMMDD_HHMMSS) or `latest` (the newest complete folder).
    #[arg(default_value = "latest")]
    pub folder: String,
    /// Where the folder is: local, s3 or remote (default: local; s3 with
    /// BACKUP_LOCAL_COPY=false).
    #[arg(long)]
    pub source: Option<String>,
    /// Also restore every database file into a scratch database and count tables and rows.
    #[arg(long)]
    pub restore_test: bool,
    /// Parallel jobs for a custom-format database in the restore test (pg_restore -j).
    #[arg(long, env = "RESTORE_JOBS", default_value = "1")]
    pub jobs: String,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Oldest acceptable age of the newest complete backup, with a unit: `26h`, `90m`, `2d`.
    /// Default: the longest gap between two runs of BACKUP_SCHEDULE plus two hours (26h for a
    /// daily schedule, 7d 2h for a weekly one).
    #[arg(long)]
    pub max_age: Option<String>,
    /// Oldest acceptable age of the last successful restore drill (`verify --restore-test`,
    /// which the supplied drill units run on DRILL_SCHEDULE), with a unit: `8d`. Older, or no
    /// drill at all, is stale (exit 1). Unset: the drill is not checked.
    #[arg(long, env = "DRILL_MAX_AGE")]
    pub drill_max_age: Option<String>,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// Folder name (YYYYMMDD_HHMMSS).
    pub folder: String,
    /// Remove the pin instead of adding it.
    #[arg(long)]
    pub unpin: bool,
    /// Where to pin: local, s3, remote or all (every enabled destination that holds it).
    #[arg(long, default_value = "all")]
    pub source: String,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// Folder name (YYYYMMDD_HHMMSS).
    pub folder: Option<String>,
    /// Every folder the scripts made, at every destination asked for.
    #[arg(long)]
    pub all: bool,
    /// Where: local, s3, remote or all (every enabled destination).
    #[arg(long, default_value = "all")]
    pub source: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Where the backup is: local, s3 or remote.
    #[arg(long, env = "RESTORE_SOURCE")]
    pub source: Option<String>,
    /// Folder name (YYYYMMDD_HHMMSS) or `latest`.
    #[arg(long, env = "RESTORE_FOLDER")]
    pub folder: Option<String>,
    /// What to restore: cluster, globals or database.
    #[arg(long = "type", env = "RESTORE_TYPE")]
    pub restore_type: Option<String>,
    /// The database to restore (by its real name) when the type is `database`.
    #[arg(long, env = "RESTORE_DATABASE")]
    pub database: Option<String>,
    /// Restore the database under this name instead of its own.
    #[arg(long, env = "RESTORE_TARGET_DATABASE")]
    pub target_database: Option<String>,
    /// Allow dropping a database that already exists on the target (true/false).
    #[arg(long, env = "RESTORE_DROP_EXISTING")]
    pub drop_existing: Option<String>,
    /// Parallel jobs for a custom-format database (pg_restore -j).
    #[arg(long, env = "RESTORE_JOBS", default_value = "1")]
    pub jobs: String,
    /// Where downloads from S3 or the remote host are staged (default: a temporary folder).
    #[arg(long, env = "RESTORE_DIR")]
    pub restore_dir: Option<String>,
}

/// Settings shared by every command. Each is `--flag` or its environment variable.
///
/// Paths are plain strings here: an empty variable (as `.env` files and compose `env_file:`
/// write unset settings) means "not set", which clap's path parser would refuse.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Load KEY=value lines from this file first (variables already set in the environment win).
    #[arg(long, global = true, value_name = "PATH", env = "PG_BACKUPS_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    /// Result format on stdout: json (one line) or text (for a person). Default: text on a
    /// terminal, json otherwise.
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["json", "text"])]
    pub output: Option<String>,
    /// Same as --output json.
    #[arg(long, global = true, conflicts_with = "output")]
    pub json: bool,
    /// Indent the JSON result.
    #[arg(long, global = true)]
    pub pretty: bool,

    /// PostgreSQL host.
    #[arg(long, global = true, env = "PGHOST", default_value = "postgres-primary", help_heading = PG)]
    pub pghost: String,
    /// Set by [`parse`]: PGHOST came from the default, not from the operator.
    #[arg(skip)]
    pub pghost_defaulted: bool,
    /// PostgreSQL port.
    #[arg(long, global = true, env = "PGPORT", default_value = "5432", help_heading = PG)]
    pub pgport: String,
    /// PostgreSQL user (a superuser, to dump roles and every database).
    #[arg(long, global = true, env = "PGUSER", default_value = "postgres", help_heading = PG)]
    pub pguser: String,
    /// Read the PostgreSQL password from this file (Docker secrets, systemd credentials).
    #[arg(long, global = true, env = "PGPASSWORD_FILE", help_heading = PG)]
    pub pgpassword_file: Option<String>,
    /// libpq password file, used when no password is given.
    #[arg(long, global = true, env = "PGPASSFILE", help_heading = PG)]
    pub pgpassfile: Option<String>,
    /// libpq SSL mode (disable, prefer, require, verify-ca, verify-full).
    #[arg(long, global = true, env = "PGSSLMODE", help_heading = PG)]
    pub pgsslmode: Option<String>,
    /// Directories of PostgreSQL client tools (pg_dump, pg_dumpall, psql, pg_restore),
    /// `:`-separated. pg-backups uses the tools of the server's major version when present,
    /// else the newest not older than the server. Default: /usr/lib/postgresql/*/bin and PATH.
    #[arg(long, global = true, env = "PG_BIN_DIR", help_heading = PG)]
    pub pg_bin_dir: Option<String>,

    /// Local backup root.
    #[arg(long, global = true, env = "BACKUP_DIR", default_value = "/backups", help_heading = BACKUP)]
    pub backup_dir: String,
    /// Cron schedule, used by the supplied scheduler units and for `check`'s default max age.
    #[arg(long, global = true, env = "BACKUP_SCHEDULE", default_value = "0 */6 * * *", help_heading = BACKUP)]
    pub backup_schedule: String,
    /// Cron schedule of the restore drill (`verify latest --restore-test`), used only by the
    /// supplied drill units; `check --drill-max-age` / DRILL_MAX_AGE says how old it may get.
    #[arg(long, global = true, env = "DRILL_SCHEDULE", default_value = "0 3 * * 0", help_heading = BACKUP)]
    pub drill_schedule: String,
    /// Comma list of databases to dump (default: all but template0 and template1).
    #[arg(long, global = true, env = "BACKUP_DATABASES", help_heading = BACKUP)]
    pub backup_databases: Option<String>,
    /// Comma list of databases to leave out.
    #[arg(long, global = true, env = "BACKUP_EXCLUDE_DATABASES", help_heading = BACKUP)]
    pub backup_exclude_databases: Option<String>,
    /// Databases dumped at once.
    #[arg(long, global = true, env = "BACKUP_JOBS", default_value = "2", help_heading = BACKUP)]
    pub backup_jobs: String,
    /// plain (SQL: gunzip -c | psql restores it) or custom (pg_dump -Fc per database, for
    /// parallel restore with RESTORE_JOBS).
    #[arg(long, global = true, env = "BACKUP_FORMAT", default_value = "plain", help_heading = BACKUP)]
    pub backup_format: String,
    /// gzip or zstd (faster, smaller). A custom archive uses pg_dump's own compression.
    #[arg(long, global = true, env = "BACKUP_COMPRESSION", default_value = "gzip", help_heading = BACKUP)]
    pub backup_compression: String,
    /// gzip 1 (fast) to 9 (small), default 6; zstd 1 to 19, default 3.
    #[arg(long, global = true, env = "BACKUP_COMPRESSION_LEVEL", help_heading = BACKUP)]
    pub backup_compression_level: Option<String>,
    /// Encrypt every backup file to these age public keys (age1…, or ssh-ed25519/ssh-rsa public
    /// keys), comma or space separated. The private keys are never needed to back up.
    #[arg(long, global = true, env = "AGE_RECIPIENTS", help_heading = BACKUP)]
    pub age_recipients: Option<String>,
    /// A file of age recipients, one per line (age's recipients-file format).
    #[arg(long, global = true, env = "AGE_RECIPIENTS_FILE", help_heading = BACKUP)]
    pub age_recipients_file: Option<String>,
    /// The private key(s) verify and restore decrypt with: an age identity file (age-keygen)
    /// or an unencrypted ssh private key. Keep it off the backup host.
    #[arg(long, global = true, env = "AGE_IDENTITY_FILE", help_heading = BACKUP)]
    pub age_identity_file: Option<String>,

    /// false: dump streams every file straight into S3 (needs S3_ENABLED; nothing is written
    /// under BACKUP_DIR but the lock, and RSYNC_ENABLED must stay false: rsync ships a local
    /// copy). list, verify, pin and check then look at S3.
    #[arg(long, global = true, env = "BACKUP_LOCAL_COPY", default_value = "true", help_heading = BACKUP)]
    pub backup_local_copy: String,

    /// Keep every complete local backup younger than this many days, plus the newest older one.
    #[arg(long, global = true, env = "LOCAL_RETENTION_DAYS", default_value = "1", help_heading = LOCAL)]
    pub local_retention_days: String,
    /// Always keep the N newest complete local backups, whatever their age.
    #[arg(long, global = true, env = "LOCAL_KEEP_LAST", default_value = "3", help_heading = LOCAL)]
    pub local_keep_last: String,
    /// Also keep the newest local backup of each of the last N days.
    #[arg(long, global = true, env = "LOCAL_KEEP_DAILY", default_value = "0", help_heading = LOCAL)]
    pub local_keep_daily: String,
    /// Also keep the newest local backup of each of the last N ISO weeks.
    #[arg(long, global = true, env = "LOCAL_KEEP_WEEKLY", default_value = "0", help_heading = LOCAL)]
    pub local_keep_weekly: String,
    /// Also keep the newest local backup of each of the last N months.
    #[arg(long, global = true, env = "LOCAL_KEEP_MONTHLY", default_value = "0", help_heading = LOCAL)]
    pub local_keep_monthly: String,

    /// Ship backups to S3-compatible storage (true/false).
    #[arg(long, global = true, env = "S3_ENABLED", default_value = "false", help_heading = S3)]
    pub s3_enabled: String,
    /// Bucket name.
    #[arg(long, global = true, env = "S3_BUCKET", help_heading = S3)]
    pub s3_bucket: Option<String>,
    /// Region (default us-east-1 when an endpoint is set).
    #[arg(long, global = true, env = "S3_REGION", help_heading = S3)]
    pub s3_region: Option<String>,
    /// Read the access key id from this file.
    #[arg(long, global = true, env = "S3_ACCESS_KEY_FILE", help_heading = S3)]
    pub s3_access_key_file: Option<String>,
    /// Read the secret access key from this file.
    #[arg(long, global = true, env = "S3_SECRET_KEY_FILE", help_heading = S3)]
    pub s3_secret_key_file: Option<String>,
    /// Endpoint URL for Spaces, MinIO, R2, B2, Wasabi … (e.g. https://fra1.digitaloceanspaces.com).
    #[arg(long, global = true, env = "S3_ENDPOINT", help_heading = S3)]
    pub s3_endpoint: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, global = true, env = "S3_PREFIX", default_value = "", help_heading = S3)]
    pub s3_prefix: String,
    /// Path-style addressing (MinIO, SeaweedFS), true/false.
    #[arg(long, global = true, env = "S3_FORCE_PATH_STYLE", default_value = "false", help_heading = S3)]
    pub s3_force_path_style: String,
    /// Keep every complete S3 backup younger than this many days, plus the newest older one.
    #[arg(long, global = true, env = "S3_RETENTION_DAYS", default_value = "7", help_heading = S3)]
    pub s3_retention_days: String,
    /// Always keep the N newest complete S3 backups, whatever their age.
    #[arg(long, global = true, env = "S3_KEEP_LAST", default_value = "3", help_heading = S3)]
    pub s3_keep_last: String,
    /// Also keep the newest S3 backup of each of the last N days.
    #[arg(long, global = true, env = "S3_KEEP_DAILY", default_value = "0", help_heading = S3)]
    pub s3_keep_daily: String,
    /// Also keep the newest S3 backup of each of the last N ISO weeks.
    #[arg(long, global = true, env = "S3_KEEP_WEEKLY", default_value = "0", help_heading = S3)]
    pub s3_keep_weekly: String,
    /// Also keep the newest S3 backup of each of the last N months.
    #[arg(long, global = true, env = "S3_KEEP_MONTHLY", default_value = "0", help_heading = S3)]
    pub s3_keep_monthly: String,
    /// Multipart part size, e.g. `64MiB` (at least 5 MiB). Default: the smallest multiple of
    /// 1 MiB, at least 16 MiB, that keeps the file within S3_MAX_PARTS parts.
    #[arg(long, global = true, env = "S3_PART_SIZE", help_heading = S3)]
    pub s3_part_size: Option<String>,
    /// The provider's part limit (10000 on AWS; some providers allow only 1000).
    #[arg(long, global = true, env = "S3_MAX_PARTS", default_value = "10000", help_heading = S3)]
    pub s3_max_parts: String,
    /// Server-side encryption of every object: AES256 or aws:kms.
    #[arg(long, global = true, env = "S3_SSE", help_heading = S3)]
    pub s3_sse: Option<String>,
    /// The KMS key for S3_SSE=aws:kms (default: the bucket's or the account's).
    #[arg(long, global = true, env = "S3_SSE_KMS_KEY_ID", help_heading = S3)]
    pub s3_sse_kms_key_id: Option<String>,
    /// Storage class of every object: STANDARD_IA, GLACIER_IR, ONEZONE_IA … (the provider's).
    #[arg(long, global = true, env = "S3_STORAGE_CLASS", help_heading = S3)]
    pub s3_storage_class: Option<String>,
    /// S3 Object Lock on every object of a backup: GOVERNANCE or COMPLIANCE (with
    /// S3_OBJECT_LOCK_DAYS). The bucket must have Object Lock enabled.
    #[arg(long, global = true, env = "S3_OBJECT_LOCK_MODE", help_heading = S3)]
    pub s3_object_lock_mode: Option<String>,
    /// Days each object stays locked, counted from its backup's time (the folder name).
    #[arg(long, global = true, env = "S3_OBJECT_LOCK_DAYS", help_heading = S3)]
    pub s3_object_lock_days: Option<String>,

    /// Ship backups to a remote host with rsync over ssh (true/false).
    #[arg(long, global = true, env = "RSYNC_ENABLED", default_value = "false", help_heading = RSYNC)]
    pub rsync_enabled: String,
    /// Remote host name or address.
    #[arg(long, global = true, env = "RSYNC_HOST", help_heading = RSYNC)]
    pub rsync_host: Option<String>,
    /// Remote user.
    #[arg(long, global = true, env = "RSYNC_USER", default_value = "root", help_heading = RSYNC)]
    pub rsync_user: String,
    /// Remote ssh port.
    #[arg(long, global = true, env = "RSYNC_PORT", default_value = "22", help_heading = RSYNC)]
    pub rsync_port: String,
    /// Remote backup root (absolute path).
    #[arg(long, global = true, env = "RSYNC_PATH", help_heading = RSYNC)]
    pub rsync_path: Option<String>,
    /// Private key for ssh. Default: the first that exists of $CREDENTIALS_DIRECTORY/rsync_ssh_key
    /// (systemd LoadCredential=), /run/secrets/pg_backups_ssh_key (Docker and Kubernetes
    /// secrets), else ssh's own default identities (~/.ssh/id_*).
    #[arg(long, global = true, env = "RSYNC_SSH_KEY", help_heading = RSYNC)]
    pub rsync_ssh_key: Option<String>,
    /// known_hosts file that holds the remote host's key. Default: the first that exists of
    /// $CREDENTIALS_DIRECTORY/rsync_known_hosts, /run/secrets/pg_backups_known_hosts,
    /// ~/.ssh/known_hosts. A host key is never trusted on first sight unless
    /// RSYNC_ACCEPT_NEW_HOST_KEYS=true.
    #[arg(long, global = true, env = "RSYNC_KNOWN_HOSTS", help_heading = RSYNC)]
    pub rsync_known_hosts: Option<String>,
    /// Trust the host key on first contact and remember it in ~/.ssh/known_hosts (true/false);
    /// only for hosts with a persistent ~/.ssh.
    #[arg(long, global = true, env = "RSYNC_ACCEPT_NEW_HOST_KEYS", default_value = "false", help_heading = RSYNC)]
    pub rsync_accept_new_host_keys: String,
    /// Keep every complete remote backup younger than this many days, plus the newest older one.
    #[arg(long, global = true, env = "RSYNC_RETENTION_DAYS", default_value = "30", help_heading = RSYNC)]
    pub rsync_retention_days: String,
    /// Always keep the N newest complete remote backups, whatever their age.
    #[arg(long, global = true, env = "RSYNC_KEEP_LAST", default_value = "3", help_heading = RSYNC)]
    pub rsync_keep_last: String,
    /// Also keep the newest remote backup of each of the last N days.
    #[arg(long, global = true, env = "RSYNC_KEEP_DAILY", default_value = "0", help_heading = RSYNC)]
    pub rsync_keep_daily: String,
    /// Also keep the newest remote backup of each of the last N ISO weeks.
    #[arg(long, global = true, env = "RSYNC_KEEP_WEEKLY", default_value = "0", help_heading = RSYNC)]
    pub rsync_keep_weekly: String,
    /// Also keep the newest remote backup of each of the last N months.
    #[arg(long, global = true, env = "RSYNC_KEEP_MONTHLY", default_value = "0", help_heading = RSYNC)]
    pub rsync_keep_monthly: String,

    /// Read NOTIFY_URL (where the JSON result of a run is POSTed) from this file.
    #[arg(long, global = true, env = "NOTIFY_URL_FILE", help_heading = OUTPUT)]
    pub notify_url_file: Option<String>,
    /// When NOTIFY_URL and NOTIFY_URLS are told: failure (default) or always.
    #[arg(long, global = true, env = "NOTIFY_ON", default_value = "failure", help_heading = OUTPUT)]
    pub notify_on: String,
    /// Read NOTIFY_URLS (services that get a message a person reads: slack://, discord://,
    /// teams://, telegram://, ntfy://, gotify://, smtp://, generic+https://) from this file.
    #[arg(long, global = true, env = "NOTIFY_URLS_FILE", help_heading = OUTPUT)]
    pub notify_urls_file: Option<String>,
    /// Read HEALTHCHECK_URL (healthchecks.io-style ping URL) from this file.
    #[arg(long, global = true, env = "HEALTHCHECK_URL_FILE", help_heading = OUTPUT)]
    pub healthcheck_url_file: Option<String>,
    /// Timeout of each NOTIFY_URL / HEALTHCHECK_URL request (3 attempts at most) and of each
    /// NOTIFY_URLS message (2 attempts, all services at once); a dead endpoint never fails or
    /// holds up a backup.
    #[arg(long, global = true, env = "NOTIFY_TIMEOUT", default_value = "10s", help_heading = OUTPUT)]
    pub notify_timeout: String,
    /// node_exporter textfile that each run updates (atomically).
    #[arg(long, global = true, env = "METRICS_FILE", help_heading = OUTPUT)]
    pub metrics_file: Option<String>,
    /// Log format on stderr: text or json.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "text", help_heading = OUTPUT)]
    pub log_format: String,
}

/// Options each command's own `--help` shows; the settings are listed once, by
/// `pg-backups --help`, and named per command in its help's last lines.
const SHOWN_IN_COMMANDS: &[&str] = &["env_file", "output", "json", "pretty"];

/// The settings each command reads, for its `--help`.
fn settings_read_by(command: &str) -> String {
    const PG: &str = "PGHOST PGPORT PGUSER PGPASSWORD(_FILE) PGPASSFILE PGSSLMODE PG_BIN_DIR";
    const DEST: &str = "S3_ENABLED S3_BUCKET S3_ENDPOINT S3_REGION S3_PREFIX S3_ACCESS_KEY(_FILE) \
                        S3_SECRET_KEY(_FILE) S3_FORCE_PATH_STYLE RSYNC_ENABLED RSYNC_HOST RSYNC_USER \
                        RSYNC_PORT RSYNC_PATH RSYNC_SSH_KEY RSYNC_KNOWN_HOSTS";
    const TELL: &str = "NOTIFY_URL(_FILE) NOTIFY_URLS(_FILE) NOTIFY_ON HEALTHCHECK_URL(_FILE) \
                        METRICS_FILE LOG_FORMAT";
    let text = match command {
        "dump" => format!(
            "{PG} BACKUP_DIR BACKUP_DATABASES BACKUP_EXCLUDE_DATABASES BACKUP_JOBS BACKUP_FORMAT \
             BACKUP_COMPRESSION(_LEVEL) AGE_RECIPIENTS(_FILE) {TELL}"
        ),
        "ship" => {
            format!(
                "BACKUP_DIR {DEST} S3_PART_SIZE S3_MAX_PARTS S3_SSE S3_SSE_KMS_KEY_ID S3_STORAGE_CLASS \
                 S3_OBJECT_LOCK_MODE S3_OBJECT_LOCK_DAYS {TELL}"
            )
        }
        "prune" => format!(
            "BACKUP_DIR LOCAL_* {DEST} S3_RETENTION_DAYS S3_KEEP_* S3_OBJECT_LOCK_MODE \
             RSYNC_RETENTION_DAYS RSYNC_KEEP_* {TELL}"
        ),
        "check" => format!("BACKUP_DIR BACKUP_SCHEDULE {DEST} {TELL}"),
        "verify" => format!("BACKUP_DIR {DEST} AGE_IDENTITY_FILE {PG} (--restore-test) {TELL}"),
        "restore" => format!("{PG} BACKUP_DIR {DEST} AGE_IDENTITY_FILE RESTORE_* {TELL}"),
        "list" | "pin" => format!("BACKUP_DIR {DEST} LOG_FORMAT"),
        "adopt" => format!("BACKUP_DIR {DEST} S3_OBJECT_LOCK_MODE S3_OBJECT_LOCK_DAYS LOG_FORMAT"),
        "ping" => "HEALTHCHECK_URL(_FILE) NOTIFY_TIMEOUT".to_string(),
        "notify" => "NOTIFY_URLS(_FILE) NOTIFY_ON NOTIFY_TIMEOUT".to_string(),
        _ => return String::new(),
    };
    format!(
        "Settings it reads (a flag, the environment or --env-file; `pg-backups --help` lists \
         every setting):\n  {}",
        wrap(&text, 92).join("\n  ")
    )
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().map(|l| l.len()).unwrap_or(0);
        if line > 0 && line + 1 + word.len() > width {
            lines.push(String::new());
        }
        if let Some(l) = lines.last_mut() {
            if !l.is_empty() {
                l.push(' ');
            }
            l.push_str(word);
        }
    }
    lines
}

/// The parser. Settings stay accepted after the command word (`pg-backups dump
/// --backup-dir X`), but a command's `--help` shows its own options, not the 60 settings.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    // Propagate the global settings into every command first, then hide them there.
    cmd.build();
    for sub in cmd.get_subcommands_mut() {
        let note = settings_read_by(sub.get_name());
        let built = std::mem::take(sub);
        *sub = built
            .mut_args(|a| {
                if a.is_global_set() && !SHOWN_IN_COMMANDS.contains(&a.get_id().as_str()) {
                    a.hide(true)
                } else {
                    a
                }
            })
            .after_help(note);
    }
    cmd
}

/// Every variable a flag falls back to (`env = ...`), of every command: the settings for
/// which an empty value means "not set" (see `envfile`). Read from the parser itself, so a new
/// setting is covered the day its flag is added.
pub fn env_names() -> std::collections::BTreeSet<String> {
    let cmd = command();
    std::iter::once(&cmd)
        .chain(cmd.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

/// Parses a command line with [`command`].
pub fn parse(args: &[OsString]) -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
    // The settings are global: the command's matches hold their source.
    let sub = matches.subcommand().map(|(_, m)| m).unwrap_or(&matches);
    cli.global.pghost_defaulted =
        sub.value_source("pghost") == Some(clap::parser::ValueSource::DefaultValue);
    Ok(cli)
}

/// `--json` / `--output FORMAT` found before clap runs, so that a command line that does not
/// parse still answers in the format asked for.
pub fn output_from_args(args: &[OsString]) -> Option<bool> {
    let mut json = None;
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        match arg.as_ref() {
            "--" => break,
            "--json" => json = Some(true),
            "--output" => json = iter.next().map(|v| v.to_string_lossy() != "text"),
            other => {
                if let Some(v) = other.strip_prefix("--output=") {
                    json = Some(v != "text");
                }
            }
        }
    }
    json
}

/// Finds `--env-file PATH` before clap runs, because the file must be loaded into the
/// environment before clap reads its `env` fallbacks.
pub fn env_file_from_args(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == "--env-file" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--env-file=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// The subcommand word, for the JSON result of a run whose arguments did not parse.
pub fn command_word(args: &[OsString]) -> String {
    const NAMES: [&str; 13] = [
        "dump",
        "ship",
        "prune",
        "list",
        "verify",
        "check",
        "pin",
        "adopt",
        "restore",
        "completions",
        "man",
        "ping",
        "notify",
    ];
    args.iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .find(|a| NAMES.contains(&a.as_ref()))
        .map(|a| a.into_owned())
        .unwrap_or_else(|| "pg-backups".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn env_file_is_found_in_both_spellings() {
        assert_eq!(
            env_file_from_args(&args(&["pg-backups", "--env-file", "a.env", "dump"])),
            Some(PathBuf::from("a.env"))
        );
        assert_eq!(
            env_file_from_args(&args(&["pg-backups", "dump", "--env-file=b.env"])),
            Some(PathBuf::from("b.env"))
        );
        assert_eq!(env_file_from_args(&args(&["pg-backups", "dump"])), None);
    }

    #[test]
    fn command_word_ignores_flags() {
        assert_eq!(
            command_word(&args(&["pg-backups", "--pretty", "dump"])),
            "dump"
        );
        assert_eq!(
            command_word(&args(&["pg-backups", "--bogus"])),
            "pg-backups"
        );
    }

    #[test]
    fn env_names_come_from_every_command() {
        let names = env_names();
        for name in [
            "PGHOST",
            "BACKUP_JOBS",
            "LOG_FORMAT",
            "PG_BACKUPS_ENV_FILE",
            "RESTORE_SOURCE",
            "RESTORE_JOBS",
        ] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        assert!(names.len() > 60, "{names:?}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
