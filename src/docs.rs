//! Shell completions and man pages, generated from the same clap definition as `--help`, so
//! they never drift from the flags the binary really has.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pg-backups", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes `pg-backups.1` and `pg-backups-<command>.1` into `dir`, or returns `pg-backups.1`.
pub fn man(dir: Option<&Path>) -> std::io::Result<String> {
    let cmd = Cli::command();
    let render = |c: clap::Command| -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        clap_mangen::Man::new(c).render(&mut out)?;
        Ok(out)
    };
    let Some(dir) = dir else {
        return Ok(String::from_utf8_lossy(&render(cmd)?).into_owned());
    };
    std::fs::create_dir_all(dir)?;
    let mut written = vec!["pg-backups.1".to_string()];
    std::fs::write(dir.join("pg-backups.1"), render(cmd.clone())?)?;
    for sub in cmd.get_subcommands() {
        let name = format!("pg-backups-{}", sub.get_name());
        let page = sub.clone().name(name.clone());
        std::fs::write(dir.join(format!("{name}.1")), render(page)?)?;
        written.push(format!("{name}.1"));
    }
    Ok(format!(
        "wrote {} man pages into {}: {}\n",
        written.len(),
        dir.display(),
        written.join(", ")
    ))
}
