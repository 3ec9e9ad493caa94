//! Processes: finding `redis-server`, the guardian shells, and waiting for a server.

use std::io;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) use crate::process::Guarded;
use crate::process::alive;

/// The `redis-server` to run: `LOCK_TEST_REDIS_SERVER` if set, else the first on `PATH`.
pub(crate) fn redis_server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LOCK_TEST_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A shell that runs a clean-up command when this process dies without saying otherwise:
/// it waits on its stdin, which closes when this process exits however it exits (a `static`
/// never dropped, a crash, SIGKILL). It runs in its own process group, so a Ctrl-C meant
/// for the test run does not kill it before it has cleaned up. (Used for containers.)
#[derive(Debug)]
pub(crate) struct Guardian {
    shell: Child,
}

impl Guardian {
    /// Starts the shell; `on_death` is a shell command run with `args` as `"$1"`, `"$2"`...
    /// unless [`stop`](Self::stop) is called first.
    pub(crate) fn spawn(on_death: &str, args: &[&str]) -> io::Result<Self> {
        use std::os::unix::process::CommandExt;
        let script = format!("read how\n[ \"$how\" = stop ] || {{ {on_death}\n}}");
        let shell = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Self { shell })
    }

    /// Tells the shell not to run its command, and waits for it to exit.
    pub(crate) fn stop(mut self) {
        use std::io::Write;
        if let Some(mut stdin) = self.shell.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let _ = self.shell.wait();
    }

    /// What this process's death does: closes the shell's stdin without a word, and waits
    /// for its command to finish.
    #[cfg(test)]
    fn abandon(mut self) {
        drop(self.shell.stdin.take());
        let _ = self.shell.wait();
    }
}

/// Waits until the server on `port` answers (`+PONG`, or `-NOAUTH` when it wants a
/// password), while `pid` lives.
pub(crate) fn wait_until_ready(port: u16, pid: u32, within: Duration) -> io::Result<()> {
    use std::io::{Read, Write};
    let start = Instant::now();
    loop {
        if !alive(pid) {
            return Err(io::Error::other("redis-server exited during startup"));
        }
        let attempt = (|| -> io::Result<bool> {
            let mut stream = TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )?;
            stream.set_read_timeout(Some(Duration::from_millis(500)))?;
            stream.write_all(b"PING\r\n")?;
            let mut buf = [0_u8; 64];
            let n = stream.read(&mut buf)?;
            let reply = &buf[..n];
            Ok(reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH"))
        })();
        if let Ok(true) = attempt {
            return Ok(());
        }
        if start.elapsed() > within {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("redis-server on port {port} did not answer within {within:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guardian_cleans_up_when_abandoned_and_not_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (abandoned, stopped) = (dir.path().join("abandoned"), dir.path().join("stopped"));
        let touch = r#"touch -- "$1""#;
        Guardian::spawn(touch, &[abandoned.to_str().unwrap()])
            .unwrap()
            .abandon();
        Guardian::spawn(touch, &[stopped.to_str().unwrap()])
            .unwrap()
            .stop();
        assert!(abandoned.exists(), "the clean-up did not run");
        assert!(!stopped.exists(), "the clean-up ran although stopped");
    }
}
