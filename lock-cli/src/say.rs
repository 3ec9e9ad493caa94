//! What lockctl prints, written so that a reader that went away cannot make it panic.
//!
//! `eprintln!` panics when stderr is a pipe that nobody reads any more (`lockctl run ...
//! 2>&1 | head -1`, a CI log collector that went away): `lockctl run` would then die before
//! running its command, or while supervising it. Its messages are for people; losing one
//! must not change what happens to the command or the lease. `say!` writes the line in
//! one `write` (so lines of lockctl and its keeper do not interleave) and ignores failure.
//!
//! `out!` is `print!` for what a command is run for (`status`'s table, `conformance`'s
//! progress, `bench`'s figures): when stdout is a pipe whose reader has gone (`lockctl
//! status | head -1`), lockctl ends at once with status 141, quietly, as SIGPIPE ends
//! `cat`, instead of the panic `print!` makes of it. lockctl keeps SIGPIPE ignored (Rust's
//! default) rather than dying by it: a store connection over a Unix socket that its server
//! closed must be an error lockctl reports, not a silent death.

use std::fmt;
use std::io::Write;

/// Writes `args` and a newline to stderr, ignoring failure.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let mut text = fmt::format(args);
    text.push('\n');
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// `eprintln!` that never panics: see the [module documentation](self).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say::line(format_args!($($arg)*))
    };
}

/// lockctl's status when stdout's reader went away: 128 + SIGPIPE, as a shell reports a
/// process that SIGPIPE ended.
const READER_GONE: i32 = 128 + libc::SIGPIPE;

/// Writes `args` to stdout; see the [module documentation](self) for a closed stdout. Any
/// other failure to write (a full disk) is said on stderr, once per write.
pub(crate) fn out(args: fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(READER_GONE)
        }
        Err(error) => line(format_args!("lockctl: cannot write to stdout: {error}")),
    }
}

/// `print!` that ends lockctl quietly when stdout's reader went away: see the [module
/// documentation](self).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::say::out(format_args!($($arg)*))
    };
}

/// `println!` as `out!`.
macro_rules! outln {
    () => {
        $crate::say::out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::say::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}
