//! Exit codes for I/O errors, shared by every layer's error type (a leaf: imports nothing of
//! ours, so the error modules can all use it without import circles).

/// The sysexits code of a local I/O error: a missing file is 66, anything else 74. A local
/// permission problem is an I/O error too: 77 is kept for PostgreSQL, S3 and ssh refusing us.
pub fn io_exit_code(e: &std::io::Error) -> i32 {
    match e.kind() {
        std::io::ErrorKind::NotFound => exitcode::NOINPUT,
        _ => exitcode::IOERR,
    }
}
