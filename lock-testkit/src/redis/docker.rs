//! A Redis container for machines without `redis-server` but with a Docker daemon.
//!
//! testcontainers starts the container and removes it when the [`DockerRedis`] is dropped.
//! A test binary keeps its server in a `static`, which is never dropped, so a guardian shell
//! also removes it (`docker rm -f`) when the test process exits. Both need the `docker`
//! command and a daemon that answers, which [`usable`] checks before anything is started.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testcontainers::Container;
use testcontainers::runners::SyncRunner;
use testcontainers_modules::redis::Redis;

use super::process::Guardian;

/// How long the Docker daemon may take to answer `docker version`.
const PING_LIMIT: Duration = Duration::from_secs(5);

/// `Ok` when the `docker` command is installed and its daemon answered within
/// [`PING_LIMIT`]; otherwise why Docker cannot be used.
pub(crate) fn usable() -> Result<(), String> {
    let mut ping = Command::new("docker");
    ping.args(["version", "--format", "{{.Server.Version}}"]);
    let version = run_bounded(ping, PING_LIMIT)?;
    if version.is_empty() {
        return Err("`docker version` reported no server version".to_owned());
    }
    Ok(())
}

/// Runs `command` for at most `limit` and returns its trimmed stdout when it succeeds, or
/// what went wrong: not installed, too slow (then it is killed), or failed (its stderr).
fn run_bounded(mut command: Command, limit: Duration) -> Result<String, String> {
    let shown = format!("{:?}", command.get_program());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown} ({e}); is it installed?"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} got no answer within {limit:?}"));
            }
            Err(e) => return Err(format!("waiting for {shown} failed: {e}")),
        }
    }
    // It has exited: this only collects what it wrote (a line or two, which fit in the
    // pipes while it ran).
    let output = child
        .wait_with_output()
        .map_err(|e| format!("reading the output of {shown} failed: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!("{shown} failed ({}): {why}", output.status))
    }
}

/// A `redis` container, removed when dropped or, failing that, when the test process exits.
pub struct DockerRedis {
    /// `Some` until dropped.
    container: Option<Container<Redis>>,
    port: u16,
    /// Removes the container if this process exits without dropping it.
    guardian: Option<Guardian>,
}

impl std::fmt::Debug for DockerRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRedis")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl DockerRedis {
    /// Starts a container and its guardian (on a thread of its own, since the blocking
    /// runner cannot run inside a Tokio runtime). Check [`usable`] first.
    ///
    /// # Panics
    ///
    /// When the container or its guardian does not start.
    pub(crate) fn start() -> Self {
        std::thread::spawn(|| {
            let container = Redis::default()
                .start()
                .unwrap_or_else(|e| panic!("starting a Redis container failed: {e}"));
            let id = container.id().to_owned();
            let guardian = match Guardian::spawn(r#"docker rm -f -v "$1" >/dev/null 2>&1"#, &[&id])
            {
                Ok(guardian) => guardian,
                Err(e) => {
                    drop(container);
                    panic!("cannot start the shell that removes container {id} at exit: {e}");
                }
            };
            let port = match container.get_host_port_ipv4(6379) {
                Ok(port) => port,
                Err(e) => {
                    drop(container);
                    guardian.stop();
                    panic!("the Redis container {id} has no port: {e}");
                }
            };
            Self {
                container: Some(container),
                port,
                guardian: Some(guardian),
            }
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for DockerRedis {
    fn drop(&mut self) {
        // testcontainers removes the container on its own runtime, which cannot block
        // inside a Tokio runtime (a test's): drop it on a thread of its own.
        if let Some(container) = self.container.take() {
            let _ = std::thread::spawn(move || drop(container)).join();
        }
        if let Some(guardian) = self.guardian.take() {
            guardian.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn a_bounded_command_reports_its_output_or_why_it_failed() {
        let limit = Duration::from_secs(5);
        assert_eq!(run_bounded(sh("echo ' 27.1 '"), limit).unwrap(), "27.1");
        let failed = run_bounded(sh("echo 'Cannot connect' >&2; exit 1"), limit).unwrap_err();
        assert!(failed.contains("Cannot connect"), "{failed}");
        let missing = run_bounded(Command::new("/nonexistent/docker"), limit).unwrap_err();
        assert!(missing.contains("installed"), "{missing}");
    }

    #[test]
    fn a_daemon_that_does_not_answer_is_given_up_on_in_time() {
        let start = Instant::now();
        let slow = run_bounded(sh("exec sleep 30"), Duration::from_millis(300)).unwrap_err();
        assert!(slow.contains("no answer"), "{slow}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
}
