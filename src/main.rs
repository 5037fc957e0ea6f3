use std::io::Write;
use std::process::ExitCode;

// The musl build (the images') allocates through mimalloc: with musl's own malloc it spent up to
// ~20 % more CPU than the glibc build where it decrypts and hashes (verify); with mimalloc, about
// the same. README, Performance, has the figures (and why the images set
// MIMALLOC_ARENA_EAGER_COMMIT=0).
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match pg_backups::run(std::env::args_os().collect()) {
        pg_backups::Exit::Text(text) => {
            // A closed pipe (`… | head`) is the reader's choice, not an error of ours.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        pg_backups::Exit::Report {
            stdout,
            stderr,
            exit_code,
        } => {
            if let Some(message) = stderr {
                let _ = writeln!(std::io::stderr().lock(), "{message}");
            }
            if !stdout.is_empty() {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", stdout.trim_end_matches('\n'));
                let _ = out.flush();
            }
            ExitCode::from(u8::try_from(exit_code).unwrap_or(70))
        }
    }
}
