//! Processes and ports: signals, `/proc/PID/stat`, free loopback ports.
//!
//! Linux only, as the tests are: process state is read from `/proc`.

use std::io::{self, BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// CPU time (user + system) this process has used, from `getrusage`.
#[allow(unsafe_code)]
pub fn cpu_time() -> std::time::Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given a valid pointer to; on failure the
    // zeroed struct stays, which reads as no time.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + std::time::Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Sends `signal` (`libc::SIGTERM`...) to process `pid`.
///
/// # Errors
///
/// When `pid` is out of range or `kill(2)` fails (no such process, not permitted).
#[allow(unsafe_code)]
pub fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What `/proc/PID/stat` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stat {
    /// The state letter: `R` running, `S` sleeping, `T` stopped, `Z` zombie...
    pub state: char,
    /// The parent's pid.
    pub ppid: u32,
    /// The process group id.
    pub pgrp: u32,
}

/// The state, parent and process group of `pid`; `None` once it is gone (reaped).
pub fn stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses a `/proc/PID/stat` line. The command name, in parentheses, may itself hold
/// spaces and parentheses, so fields are counted after the last `)`: state, ppid, pgrp.
fn parse_stat(stat: &str) -> Option<Stat> {
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid, pgrp })
}

/// True while `pid` exists and is not a zombie (to check that no process outlives its
/// test).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// True while `pid` is stopped (state `T`: SIGSTOP, SIGTSTP).
pub fn is_stopped(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state == 'T')
}

/// True while `pid` is stopped, or cannot run any more of its own code before it stops:
/// SIGSTOP is pending to it (`SigPnd` or `ShdPnd` in `/proc/PID/status`). A shell caught
/// by a stop between `vfork` and its child's `exec` waits for the stopped child in state
/// `D` and only shows `T` once the child has run again.
pub fn is_stopped_or_stopping(pid: u32) -> bool {
    is_stopped(pid)
        || std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
            status.lines().any(|line| {
                line.strip_prefix("SigPnd:")
                    .or_else(|| line.strip_prefix("ShdPnd:"))
                    .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                    .is_some_and(|mask| mask & (1 << (libc::SIGSTOP - 1)) != 0)
            })
        })
}

/// A loopback port nothing listens on right now (for a server to bind, or a port where
/// nothing answers).
///
/// # Panics
///
/// When no loopback port can be bound.
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` different loopback ports nothing listens on right now (each is held while the next
/// is found, so they differ).
///
/// # Panics
///
/// When no loopback port can be bound.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
        })
        .collect();
    std::array::from_fn(|i| {
        listeners[i]
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
            .port()
    })
}

/// A server process run under a guardian shell: the shell is our child and the server its.
/// When our end of the shell's stdin closes (we stop it, or this process dies however it
/// dies), the shell stops the server, reaps it and exits, so no server outlives the test
/// binary. When this process died without stopping it (a server kept in a `static` is never
/// dropped), the shell also removes the server's directory, so nothing is left in `/tmp`.
#[derive(Debug)]
pub(crate) struct Guarded {
    shell: Child,
    pid: u32,
}

impl Guarded {
    /// Starts `binary args...` with its output in `log`; `dir` is the server's own
    /// directory, removed if this process dies without calling [`stop`](Self::stop). The
    /// guardian SIGKILLs it.
    pub(crate) fn spawn(
        binary: &Path,
        args: &[String],
        log: &Path,
        dir: &Path,
    ) -> io::Result<Self> {
        Self::spawn_as(&[], "kill -9 $pid 2>/dev/null", binary, args, log, dir)
    }

    /// As [`spawn`](Self::spawn), with the server started through `wrapper` (say
    /// `runuser -u postgres --`, which forks the server and waits for it: the guardian
    /// finds the server as the wrapper's child), and stopped with the shell commands
    /// `stop`, which find its pid in `$pid` (say, a graceful signal first and SIGKILL after
    /// a while). The guardian itself runs as this process's user, so it can remove `dir`
    /// wherever this process could create it.
    pub(crate) fn spawn_as(
        wrapper: &[&str],
        stop: &str,
        binary: &Path,
        args: &[String],
        log: &Path,
        dir: &Path,
    ) -> io::Result<Self> {
        let find_server = if wrapper.is_empty() {
            "pid=$!; outer=$pid"
        } else {
            // The wrapper's child, once it has forked it (or nothing if it died first).
            r#"outer=$!
pid=
while [ -z "$pid" ] && kill -0 $outer 2>/dev/null; do
  pid=$(pgrep -P $outer | head -1)
  [ -n "$pid" ] || sleep 0.01
done
[ -n "$pid" ] || pid=$outer"#
        };
        let script = format!(
            r#"log="$1"; dir="$2"; shift 2
"$@" >"$log" 2>&1 &
{find_server}
echo $pid
read how
{stop}
kill -9 $pid 2>/dev/null
# A wrapper that stopped itself when its child was stopped (runuser, su) must run to exit.
kill -CONT $outer 2>/dev/null
wait
[ "$how" = stop ] || rm -rf -- "$dir""#
        );
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(log)
            .arg(dir)
            .args(wrapper)
            .arg(binary)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = shell
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout from the guardian shell"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let pid = line.trim().parse().map_err(|_| {
            io::Error::other(format!(
                "the guardian shell printed {line:?} instead of a pid"
            ))
        })?;
        Ok(Self { shell, pid })
    }

    /// The server's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILLs the server, lets the shell reap it, and reaps the shell; the directory
    /// stays (its owner removes it, or restarts a server in it).
    pub(crate) fn stop(mut self) {
        use std::io::Write;
        let _ = signal(self.pid, libc::SIGKILL);
        if let Some(mut stdin) = self.shell.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let _ = self.shell.wait();
    }
}

/// The processes whose parent is `pid` (from `/proc`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| stat(*child).is_some_and(|s| s.ppid == pid))
        .collect()
}

/// True when this process runs as root (whom some servers refuse to run as).
#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing and always succeeds.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_after_the_command_name() {
        let line = "42 (a (b) c) T 7 9 9 0 -1";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'T',
                ppid: 7,
                pgrp: 9
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_not_stopped() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(!is_stopped(me));
        assert_eq!(
            stat(me).map(|s| s.ppid),
            Some(std::os::unix::process::parent_id())
        );
    }

    #[test]
    fn free_ports_differ() {
        let [a, b, c] = free_ports();
        assert!(a != b && b != c && a != c, "{a} {b} {c}");
    }
}
