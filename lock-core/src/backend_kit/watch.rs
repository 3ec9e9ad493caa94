//! [`FileWatch`]: sleeping in the kernel until one of a few files changes (inotify on Linux),
//! so that a process waiting for a lease in a single-host store costs no CPU and wakes within
//! microseconds of a release or of its holder's exit.

use std::io;
use std::path::Path;

/// A set of watched files; [`changed`](Self::changed) returns at their next event.
///
/// On platforms without inotify, [`new`](Self::new) fails with
/// [`io::ErrorKind::Unsupported`] and callers poll instead.
#[derive(Debug)]
pub struct FileWatch {
    inner: sys::Watch,
}

impl FileWatch {
    /// An empty watch.
    ///
    /// # Errors
    ///
    /// No inotify on this platform, or the per-user limit of inotify instances is reached
    /// (`fs.inotify.max_user_instances`): the caller polls instead.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            inner: sys::Watch::new()?,
        })
    }

    /// Wakes on any change of `path`: written, its attributes changed, deleted or moved.
    /// Opening it for writing and closing it without writing does not wake (a contender
    /// that opens a lease file read-write and finds the lock held changes nothing).
    ///
    /// # Errors
    ///
    /// `path` does not exist or cannot be watched.
    pub fn changes_of(&mut self, path: &Path) -> io::Result<()> {
        self.inner.add(path, sys::CHANGES)
    }

    /// Wakes when a descriptor open for writing on `path` is closed, as happens when the
    /// process that has it open exits (however it exits). Opening it read-only and closing
    /// it does not wake.
    ///
    /// # Errors
    ///
    /// `path` does not exist or cannot be watched.
    pub fn closed_for_writing(&mut self, path: &Path) -> io::Result<()> {
        self.inner.add(path, sys::CLOSED_FOR_WRITING)
    }

    /// Waits for the next event on any watched file (events that arrived meanwhile count),
    /// then drains what is queued.
    ///
    /// # Errors
    ///
    /// Reading the events failed.
    pub async fn changed(&mut self) -> io::Result<()> {
        self.inner.changed().await
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use tokio::io::unix::AsyncFd;

    pub(super) const CHANGES: u32 =
        libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
    pub(super) const CLOSED_FOR_WRITING: u32 = libc::IN_CLOSE_WRITE | libc::IN_DELETE_SELF;

    #[derive(Debug)]
    pub(super) struct Watch {
        /// Always `Some` until dropped.
        fd: Option<AsyncFd<OwnedFd>>,
    }

    impl Drop for Watch {
        /// Closing an inotify instance that has watches waits for the kernel's SRCU grace
        /// period (`fsnotify_destroy_group`): measured 0.1 to 16 ms here, which a waiter would
        /// otherwise add to every hand-off. So the descriptor is closed on Tokio's blocking
        /// pool, and even deregistering it (a system call, and waking a pool thread) waits
        /// for a task that yields once first: a waiter woken by a release makes its acquire
        /// attempt, and hears its answer, before.
        fn drop(&mut self) {
            let Some(fd) = self.fd.take() else {
                return;
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let closing = runtime.clone();
                    drop(runtime.spawn(async move {
                        tokio::task::yield_now().await;
                        let owned = fd.into_inner();
                        drop(closing.spawn_blocking(move || drop(owned)));
                    }));
                }
                Err(_) => drop(fd.into_inner()),
            }
        }
    }

    impl Watch {
        fn fd(&self) -> &AsyncFd<OwnedFd> {
            self.fd.as_ref().expect("set until dropped")
        }
    }

    impl Watch {
        pub(super) fn new() -> io::Result<Self> {
            // SAFETY: no pointers; the returned descriptor is checked and then owned.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a fresh descriptor nothing else owns.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: the descriptor is owned by `owned`, which the AsyncFd keeps and closes
            // only after deregistering it; nothing else can close it meanwhile.
            let fd = unsafe { AsyncFd::register(owned)? };
            Ok(Self { fd: Some(fd) })
        }

        pub(super) fn add(&mut self, path: &Path, mask: u32) -> io::Result<()> {
            let c_path = CString::new(path.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
            // SAFETY: a valid descriptor and a NUL-terminated path that outlives the call.
            let wd = unsafe {
                libc::inotify_add_watch(self.fd().get_ref().as_raw_fd(), c_path.as_ptr(), mask)
            };
            if wd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        pub(super) async fn changed(&mut self) -> io::Result<()> {
            loop {
                let mut guard = self.fd().readable().await?;
                match guard.try_io(|fd| drain(fd.get_ref().as_raw_fd())) {
                    Ok(result) => return result,
                    Err(_would_block) => {}
                }
            }
        }
    }

    /// Room for one event of the longest name (`struct inotify_event`, `NAME_MAX`, its NUL),
    /// and more: a watched file's events carry no name (16 bytes each).
    pub(super) const EVENTS_BUFFER: usize = 512;

    /// Reads the queued events: `Ok` once some were read (until a read does not fill the
    /// buffer; an event that did not fit is read by the next wait, which then returns at
    /// once), `WouldBlock` if there were none. The buffer is on this function's
    /// stack, not in the waiting future: a future that holds it would be over 4 KiB (a large
    /// allocation each time a waiter waits, and cold memory cleared on its path), and the
    /// usual wake-up is one or two events.
    fn drain(fd: std::os::fd::RawFd) -> io::Result<()> {
        let mut buf = [0_u8; EVENTS_BUFFER];
        let mut read_some = false;
        loop {
            // SAFETY: reads into a buffer of the length passed.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            match usize::try_from(n) {
                Ok(n) if n < buf.len() => return Ok(()),
                Ok(_) => read_some = true,
                Err(_) => {
                    let error = io::Error::last_os_error();
                    return match error.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock if read_some => Ok(()),
                        _ => Err(error),
                    };
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::path::Path;

    pub(super) const CHANGES: u32 = 0;
    pub(super) const CLOSED_FOR_WRITING: u32 = 0;

    #[derive(Debug)]
    pub(super) enum Watch {}

    impl Watch {
        pub(super) fn new() -> io::Result<Self> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "file watches need inotify (Linux)",
            ))
        }

        pub(super) fn add(&mut self, _: &Path, _: u32) -> io::Result<()> {
            match *self {}
        }

        pub(super) async fn changed(&mut self) -> io::Result<()> {
            match *self {}
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    use super::*;

    fn temp_file(tag: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "lock-core-watch-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, b"").unwrap();
        path
    }

    async fn wakes(watch: &mut FileWatch) -> bool {
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn stays_asleep(watch: &mut FileWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(100), watch.changed())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_write_or_a_delete_wakes_a_change_watch() {
        let path = temp_file("changes");
        let mut watch = FileWatch::new().unwrap();
        watch.changes_of(&path).unwrap();
        assert!(stays_asleep(&mut watch).await);
        drop(std::fs::OpenOptions::new().write(true).open(&path).unwrap());
        assert!(
            stays_asleep(&mut watch).await,
            "opened for writing, nothing written"
        );
        std::fs::write(&path, b"x").unwrap();
        assert!(wakes(&mut watch).await);
        assert!(stays_asleep(&mut watch).await, "the events were drained");
        std::fs::remove_file(&path).unwrap();
        assert!(wakes(&mut watch).await);
    }

    #[tokio::test]
    async fn one_wake_drains_more_events_than_one_read_holds() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_file("many");
        let mut watch = FileWatch::new().unwrap();
        watch.changes_of(&path).unwrap();
        // Alternating writes and mode changes: inotify merges only identical events in a
        // row, so each of these queues one (16 bytes, no name), 6 buffers' worth in all.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let events = 6 * sys::EVENTS_BUFFER / 16;
        for i in 0..events / 2 {
            std::io::Write::write_all(&mut &file, b"x").unwrap();
            let mode = if i % 2 == 0 { 0o600 } else { 0o640 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        assert!(wakes(&mut watch).await);
        assert!(
            stays_asleep(&mut watch).await,
            "{events} queued events were read by the first wake"
        );
        std::fs::write(&path, b"y").unwrap();
        assert!(wakes(&mut watch).await, "a later change still wakes");
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn only_closing_a_writer_wakes_a_close_watch() {
        let path = temp_file("close");
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut watch = FileWatch::new().unwrap();
        watch.closed_for_writing(&path).unwrap();
        drop(std::fs::File::open(&path).unwrap());
        assert!(stays_asleep(&mut watch).await, "a reader's close");
        drop(writer);
        assert!(wakes(&mut watch).await, "the writer's close");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_missing_file_cannot_be_watched() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut watch = FileWatch::new().unwrap();
        let missing = std::env::temp_dir().join("lock-core-watch-missing-file");
        let error = watch.changes_of(&missing).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
