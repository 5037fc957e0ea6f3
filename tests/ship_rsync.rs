//! `pg-backups ship` to a remote host over rsync/ssh (Debian's sshd on loopback, keys and
//! known_hosts made by the test), and destinations that fail independently.

mod common;

use common::s3::S3Server;
use common::ssh::SshServer;
use common::*;

fn files() -> Vec<(&'static str, usize)> {
    vec![
        ("postgres_cluster.sql.gz", 200_000),
        ("postgres_globals.sql.gz", 1_500),
        ("postgres_db_O%27Brien.sql.gz", 3 * 1024 * 1024),
    ]
}

#[test]
fn ship_to_a_remote_host_copies_checked_files_and_skips_them_next_time() {
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path(), "20250101_000000", &files());
    make_folder(dir.path(), "20250102_000000", &files()[..2]);
    let envs = ssh.env();

    let run = pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    let dest = &run.json["destinations"][0];
    assert_eq!(dest["destination"], "remote");
    assert_eq!(dest["shipped"], 2, "{}", run.stdout);
    for folder in ["20250101_000000", "20250102_000000"] {
        let local = dir.path().join(folder);
        let remote = ssh.remote().join(folder);
        for entry in std::fs::read_dir(&local).unwrap().flatten() {
            let name = entry.file_name();
            assert_eq!(
                sha256_file(&remote.join(&name)),
                sha256_file(&entry.path()),
                "{folder}/{}",
                name.to_string_lossy()
            );
        }
        assert_eq!(mode(&remote), 0o700);
        assert_eq!(mode(&remote.join("manifest.json")), 0o600);
    }

    let again = pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    assert_eq!(again.json["destinations"][0]["shipped"], 0);
    assert_eq!(again.json["destinations"][0]["skipped"], 2);

    // A remote folder without manifest is completed by the next ship.
    std::fs::remove_file(ssh.remote().join("20250101_000000/manifest.json")).unwrap();
    std::fs::remove_file(ssh.remote().join("20250101_000000/postgres_globals.sql.gz")).unwrap();
    std::fs::create_dir(ssh.remote().join("not a backup")).unwrap();
    let list = pgb_run(&envs, dir.path(), &["list", "--source", "remote"]).expect(0);
    let status = |name: &str| listed_status(&list, name);
    assert_eq!(status("20250101_000000"), "incomplete");
    assert_eq!(status("20250102_000000"), "complete");
    assert_eq!(status("not a backup"), "invalid");
    let run = pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    assert_eq!(run.json["destinations"][0]["shipped"], 1);
    assert!(ssh.remote().join("20250101_000000/manifest.json").exists());
}

#[test]
fn a_host_key_is_never_trusted_on_first_sight_unless_asked() {
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path(), "20250101_000000", &files()[..1]);
    let home = tempfile::tempdir().unwrap();
    let envs = with(
        &without(&ssh.env(), "RSYNC_KNOWN_HOSTS"),
        "HOME",
        home.path().to_str().unwrap(),
    );
    // No known_hosts anywhere: 78, naming both ways out, and nothing was contacted.
    let run = pgb_run(&envs, dir.path(), &["ship"]).expect(78);
    for var in ["RSYNC_KNOWN_HOSTS", "RSYNC_ACCEPT_NEW_HOST_KEYS"] {
        assert!(run.message().contains(var), "{}", run.message());
    }
    assert!(!home.path().join(".ssh/known_hosts").exists());
    // Asked for: the first contact is trusted and remembered.
    let envs = with(&envs, "RSYNC_ACCEPT_NEW_HOST_KEYS", "true");
    pgb_run(&envs, dir.path(), &["ship"]).expect(0);
    // ssh may hash the host names it records: ask ssh-keygen whether the host is known.
    let found = std::process::Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{}", ssh.port))
        .arg("-f")
        .arg(home.path().join(".ssh/known_hosts"))
        .output()
        .unwrap();
    assert!(found.status.success(), "the host key was not remembered");
    // And the remembered key is checked: the second contact works without any prompt, also
    // without RSYNC_ACCEPT_NEW_HOST_KEYS (~/.ssh/known_hosts is a default known_hosts).
    pgb_run(&envs, dir.path(), &["list", "--source", "remote"]).expect(0);
    let strict = without(&envs, "RSYNC_ACCEPT_NEW_HOST_KEYS");
    pgb_run(&strict, dir.path(), &["list", "--source", "remote"]).expect(0);
}

#[test]
fn remote_errors_have_their_exit_codes_and_say_what_to_check() {
    let mut ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path(), "20250101_000000", &files()[..2]);
    let envs = ssh.env();

    let run = pgb_run(
        &with(
            &envs,
            "RSYNC_SSH_KEY",
            ssh.path("other_key").to_str().unwrap(),
        ),
        dir.path(),
        &["ship"],
    )
    .expect(77);
    assert!(run.message().contains("RSYNC_SSH_KEY"), "{}", run.message());

    let run = pgb_run(
        &with(
            &envs,
            "RSYNC_KNOWN_HOSTS",
            ssh.path("wrong_known_hosts").to_str().unwrap(),
        ),
        dir.path(),
        &["ship"],
    )
    .expect(77);
    assert!(run.message().contains("host key"), "{}", run.message());
    assert!(
        run.message().contains("RSYNC_KNOWN_HOSTS"),
        "{}",
        run.message()
    );

    // A remote path that cannot be written: a read-only filesystem, or a path under a file.
    let ro = ssh.path("readonly");
    std::fs::create_dir(&ro).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&ro)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let target = if mounted {
        ro.join("backups")
    } else {
        std::fs::write(ssh.path("a-file"), b"x").unwrap();
        ssh.path("a-file").join("backups")
    };
    let run = pgb_run(
        &with(&envs, "RSYNC_PATH", target.to_str().unwrap()),
        dir.path(),
        &["ship"],
    );
    if mounted {
        let _ = std::process::Command::new("umount").arg(&ro).status();
    }
    let run = run.expect(73);
    assert!(run.message().contains("RSYNC_PATH"), "{}", run.message());

    let run = pgb_run(&without(&envs, "RSYNC_HOST"), dir.path(), &["ship"]).expect(78);
    assert!(run.message().contains("RSYNC_HOST"), "{}", run.message());

    ssh.stop();
    let run = pgb_run(&envs, dir.path(), &["ship"]).expect(69);
    assert!(run.message().contains("RSYNC_PORT"), "{}", run.message());
}

#[test]
fn destinations_fail_independently() {
    let ssh = SshServer::start();
    let mut s3 = S3Server::start();
    s3.create_bucket("pg-backups-test");
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path(), "20250101_000000", &files()[..2]);
    let mut envs = ssh.env();
    envs.extend(s3.env("pg-backups-test", ""));
    s3.kill();
    let run = pgb_run(&envs, dir.path(), &["ship"]).expect(69);
    assert_eq!(run.json["status"], "partial");
    let dests = run.json["destinations"].as_array().unwrap();
    let by = |name: &str| {
        dests
            .iter()
            .find(|d| d["destination"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by("s3")["status"], "failed");
    assert_eq!(by("remote")["status"], "ok");
    assert_eq!(by("remote")["shipped"], 1);
    assert!(ssh.remote().join("20250101_000000/manifest.json").exists());
}

#[test]
fn a_local_file_changed_after_dump_is_never_sent_to_the_remote_host() {
    let ssh = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    let folder = make_folder(dir.path(), "20250101_000000", &files());
    let victim = folder.join("postgres_globals.sql.gz");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let run = pgb_run(&ssh.env(), dir.path(), &["ship"]).expect(65);
    assert!(
        run.message().contains("postgres_globals.sql.gz"),
        "{}",
        run.message()
    );
    assert!(
        !ssh.remote().join("20250101_000000").exists(),
        "nothing was sent for a folder that no longer matches its manifest"
    );
}
