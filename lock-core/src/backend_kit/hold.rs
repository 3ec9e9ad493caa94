//! [`ProcessHold`]: how a single-host store (SQLite, a lock directory) learns at once that a
//! holder's process died, instead of waiting out its TTL.
//!
//! Every process that takes leases in a store keeps one *hold file* in the store's hold
//! directory, created when its first backend on that store opens and exclusively locked
//! (`flock`) for as long as any backend of the process uses the store. The kernel drops that
//! lock the moment the process dies, however it dies (SIGKILL, OOM killer, a crash). The
//! file holds the process id, so that a waiter woken by the file's close can tell a holder
//! that is exiting (its lock about to go) from one that lives on (see [`holder_leaving`]).
//!
//! Each lease record names its holder's hold with a [`stamp`](ProcessHold::stamp): the hold
//! file's name, its device and inode, and a tag of the lease's owner token. A contender that
//! finds a live lease [`probe`]s the hold it names:
//!
//! - the file's lock is held: the holder's process lives (perhaps paused or slow): the TTL
//!   decides, as everywhere else ([`Holder::Alive`]);
//! - the lock can be taken, the file is the very one the stamp names (same device and inode,
//!   still at its path), the record was written on this host and the stamp belongs to the
//!   record's owner: the process is gone ([`Holder::Gone`]); the contender takes the lease
//!   over in the same atomic step as any takeover, then [`finish`](GoneHolder::finish)es;
//! - anything else (the file is missing, deleted or replaced, the record comes from another
//!   host or from a writer that did not stamp it, the stamp cannot be read): doubt, and the
//!   TTL decides ([`Holder::Unknown`]).
//!
//! A replaced file cannot pass for the holder's: the holder keeps its file open, so its
//! inode cannot be reused while it lives. An open file description of the holder inherited
//! by a child it forked keeps the lock, so such a holder counts as alive (files are opened
//! close-on-exec, so commands a holder runs do not inherit it).
//!
//! The hold stands for the process, not for one lease: a record names the hold of the
//! process that holds that lease, so "the hold's lock is free" means "the holder of this
//! lease died". On platforms without `flock` every probe answers [`Holder::Unknown`].

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use super::private_file;
use crate::holder::OwnerToken;

/// The suffix of hold file names.
const SUFFIX: &str = ".hold";

/// This process's hold in one store: a locked file that the kernel unlocks when the
/// process dies. See the [module documentation](self).
#[derive(Debug)]
pub struct ProcessHold {
    dir: PathBuf,
    file_name: String,
    /// `<file name>:<device>:<inode>:`, the start of every stamp of this hold, formatted once.
    stamp_prefix: String,
    /// Kept open (and so locked) for the hold's life.
    _file: File,
}

impl ProcessHold {
    /// This process's hold in the hold directory `dir` (created if missing, mode 0700 where
    /// that applies), shared by every backend of this process on that directory while any of
    /// them keeps it. When the last one drops it, the file is deleted.
    ///
    /// # Errors
    ///
    /// The directory cannot be created, or the file cannot be created or locked: callers
    /// carry on without a hold (their leases are then freed by their TTL only).
    pub fn of_process(dir: &Path) -> io::Result<Arc<Self>> {
        let mut holds = registry();
        if let Some(hold) = holds.get(dir).and_then(Weak::upgrade) {
            return Ok(hold);
        }
        holds.retain(|_, hold| hold.strong_count() > 0);
        let hold = Arc::new(Self::create(dir)?);
        holds.insert(dir.to_owned(), Arc::downgrade(&hold));
        Ok(hold)
    }

    fn create(dir: &Path) -> io::Result<Self> {
        let file_name = format!("{:032x}{SUFFIX}", rand::random::<u128>());
        let path = dir.join(&file_name);
        let open = || {
            create_private_dir(dir)?;
            private_file::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
        };
        // Another process may remove the directory, empty, between the two steps: once more.
        let file = match open() {
            Err(error) if error.kind() == io::ErrorKind::NotFound => open()?,
            other => other?,
        };
        let locked = private_file::try_lock(&file).and_then(|()| sys::identity(&file));
        if locked.is_ok() {
            // Its process id, for a waiter that sees the file closed while still locked (see
            // `holder_leaving`). Without it (a write that failed) such a waiter only looks
            // again later: the hold still works.
            let _ =
                io::Write::write_all(&mut &file, format!("{}\n", std::process::id()).as_bytes());
        }
        match locked {
            Ok((dev, ino)) => Ok(Self {
                dir: dir.to_owned(),
                stamp_prefix: format!("{file_name}:{dev}:{ino}:"),
                file_name,
                _file: file,
            }),
            Err(error) => {
                let _ = fs::remove_file(&path);
                Err(error)
            }
        }
    }

    /// What a lease record of `owner` stores to name this hold:
    /// `<file name>:<device>:<inode>:<owner tag>`.
    pub fn stamp(&self, owner: OwnerToken) -> String {
        // As `format_stamp`, without formatting machinery: every acquire makes one.
        let mut stamp = String::with_capacity(self.stamp_prefix.len() + 16);
        stamp.push_str(&self.stamp_prefix);
        super::hex::push_lower(&mut stamp, &owner_tag(owner).to_be_bytes());
        stamp
    }

    /// The hold file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.file_name)
    }

    /// Every hold this process has now (one per store it took leases in).
    ///
    /// A program that runs commands for the leases it holds can let them inherit these (see
    /// [`as_raw_fd`](Self::as_raw_fd)), as `flock(1)` lets its command inherit the lock:
    /// the hold, and so the process's leases, then count as alive until the program *and*
    /// its commands are gone. `lockctl run` does this.
    pub fn all_of_process() -> Vec<Arc<Self>> {
        registry().values().filter_map(Weak::upgrade).collect()
    }

    /// The locked file's descriptor (close-on-exec, as every file this library opens).
    #[cfg(unix)]
    pub fn as_raw_fd(&self) -> std::os::unix::io::RawFd {
        std::os::unix::io::AsRawFd::as_raw_fd(&self._file)
    }

    /// Whether `stamp` names this process's hold.
    pub fn is_mine(&self, stamp: &str) -> bool {
        Stamp::parse(stamp).is_some_and(|s| s.file_name == self.file_name)
    }
}

impl Drop for ProcessHold {
    fn drop(&mut self) {
        // Deleted while still locked, so no prober can mistake it for a dead holder's; the
        // directory goes too when it is left empty.
        let _ = fs::remove_file(self.path());
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `<file name>:<device>:<inode>:<owner tag>`.
#[cfg(test)]
fn format_stamp(file_name: &str, dev: u64, ino: u64, owner: OwnerToken) -> String {
    format!("{file_name}:{dev}:{ino}:{:016x}", owner_tag(owner))
}

/// This process's holds, by hold directory.
fn registry() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Weak<ProcessHold>>> {
    static HOLDS: OnceLock<Mutex<HashMap<PathBuf, Weak<ProcessHold>>>> = OnceLock::new();
    HOLDS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The owner token's tag in a stamp: ties the stamp to the record's owner, so a stamp left in
/// a record by a writer that did not update it (an older library) is never read as the hold
/// of the record's current holder. Not secret: records hold the token itself.
fn owner_tag(owner: OwnerToken) -> u64 {
    let token = owner.as_u128();
    // Truncations intended: the two halves of the token, folded.
    #[allow(clippy::cast_possible_truncation)]
    let tag = (token as u64) ^ ((token >> 64) as u64);
    tag
}

/// A parsed stamp.
#[derive(Debug, PartialEq, Eq)]
struct Stamp<'a> {
    file_name: &'a str,
    dev: u64,
    ino: u64,
    tag: u64,
}

impl<'a> Stamp<'a> {
    fn parse(stamp: &'a str) -> Option<Self> {
        let mut parts = stamp.split(':');
        let file_name = parts.next()?;
        let dev = parts.next()?.parse().ok()?;
        let ino = parts.next()?.parse().ok()?;
        let tag = u64::from_str_radix(parts.next()?, 16).ok()?;
        // A file name of this module's making only: no path separators, no `..`.
        let hex = file_name.strip_suffix(SUFFIX)?;
        let sound = hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        (parts.next().is_none() && sound).then_some(Self {
            file_name,
            dev,
            ino,
            tag,
        })
    }
}

/// Creates `dir` and its parents; a directory this creates is private to its owner.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// What a [`probe`] learned about a lease's holder.
#[derive(Debug)]
pub enum Holder {
    /// The holder's process lives (its hold is locked): the TTL decides.
    Alive,
    /// The holder's process is gone: take the lease over, then call
    /// [`GoneHolder::finish`].
    Gone(GoneHolder),
    /// Nothing can be concluded: the TTL decides.
    Unknown,
}

/// The hold file of a holder whose process is gone, locked by the prober so that no other
/// prober acts on it meanwhile.
#[derive(Debug)]
pub struct GoneHolder {
    path: PathBuf,
    file: File,
}

impl GoneHolder {
    /// Deletes the dead holder's hold file, once its lease was taken over (or freed).
    pub fn finish(self) {
        // Still the same file at the path: never delete a file someone put there since.
        if same_file_at(&self.path, &self.file) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Whether the holder of a lease recorded by `owner` on `host` with hold `stamp` is alive,
/// for a store whose hold directory is `dir`. See the [module documentation](self).
pub fn probe(dir: &Path, stamp: &str, owner: OwnerToken, host: &str) -> Holder {
    let Some(stamp) = Stamp::parse(stamp) else {
        return Holder::Unknown;
    };
    if stamp.tag != owner_tag(owner) || host != crate::holder::host_name() {
        return Holder::Unknown;
    }
    let path = dir.join(stamp.file_name);
    // Read-only: closing it is not a write, which waiters watch for.
    let Ok(file) = File::open(&path) else {
        return Holder::Unknown;
    };
    match private_file::try_lock(&file) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Holder::Alive,
        Err(_) => return Holder::Unknown,
    }
    let same = sys::identity(&file).is_ok_and(|id| id == (stamp.dev, stamp.ino));
    if same && same_file_at(&path, &file) {
        Holder::Gone(GoneHolder { path, file })
    } else {
        Holder::Unknown
    }
}

/// Whether the process that keeps the hold file at `path` is exiting: the kernel reports the
/// close of the file (to [`FileWatch::closed_for_writing`](super::FileWatch::closed_for_writing))
/// before it drops the file's lock, so a prober woken by that close may find the lock still
/// held for a moment. Reads the process id the hold file holds and `/proc/<pid>/stat`;
/// `false` when either cannot be read.
pub fn holder_leaving(path: &Path) -> bool {
    super::process_state::of_pid_in(path) == super::process_state::ProcessState::Leaving
}

/// The hold file a stamp names, in the hold directory `dir`, to watch for its holder's exit
/// (see [`FileWatch::closed_for_writing`](super::FileWatch::closed_for_writing)).
pub fn stamp_path(dir: &Path, stamp: &str) -> Option<PathBuf> {
    Stamp::parse(stamp).map(|s| dir.join(s.file_name))
}

/// Whether `path` still names the file `file` has open.
fn same_file_at(path: &Path, file: &File) -> bool {
    match (sys::identity(file), sys::path_identity(path)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(unix)]
mod sys {
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    pub(super) fn identity(file: &File) -> io::Result<(u64, u64)> {
        let meta = file.metadata()?;
        Ok((meta.dev(), meta.ino()))
    }

    pub(super) fn path_identity(path: &Path) -> io::Result<(u64, u64)> {
        let meta = std::fs::metadata(path)?;
        Ok((meta.dev(), meta.ino()))
    }
}

#[cfg(not(unix))]
mod sys {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    fn unsupported() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "process holds need flock")
    }

    pub(super) fn identity(_: &File) -> io::Result<(u64, u64)> {
        Err(unsupported())
    }

    pub(super) fn path_identity(_: &Path) -> io::Result<(u64, u64)> {
        Err(unsupported())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lock-core-hold-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn host() -> String {
        crate::holder::host_name()
    }

    #[test]
    fn a_live_hold_is_alive_and_one_process_shares_it() {
        let dir = temp_dir("live");
        let hold = ProcessHold::of_process(&dir).unwrap();
        assert!(Arc::ptr_eq(&hold, &ProcessHold::of_process(&dir).unwrap()));
        let owner = OwnerToken::random();
        let stamp = hold.stamp(owner);
        assert!(hold.is_mine(&stamp));
        let (dev, ino) = sys::identity(&hold._file).unwrap();
        assert_eq!(stamp, format_stamp(&hold.file_name, dev, ino, owner));
        // Another open file description of the same process conflicts too.
        assert!(matches!(probe(&dir, &stamp, owner, &host()), Holder::Alive));
        let path = hold.path();
        // It names its process, which is not exiting.
        let pid = fs::read_to_string(&path).unwrap();
        assert_eq!(pid, format!("{}\n", std::process::id()));
        assert!(!holder_leaving(&path));
        drop(hold);
        assert!(!path.exists(), "the last user deletes the hold file");
        assert!(!dir.exists(), "and the directory it emptied");
        assert!(matches!(
            probe(&dir, &stamp, owner, &host()),
            Holder::Unknown
        ));
    }

    #[test]
    fn a_dead_hold_is_gone_once_and_finish_deletes_it() {
        let dir = temp_dir("dead");
        let owner = OwnerToken::random();
        // A dead holder's hold: a file that was locked, whose descriptor is now closed.
        let path = dir.join(format!("{:032x}{SUFFIX}", 7));
        let file = File::create(&path).unwrap();
        private_file::try_lock(&file).unwrap();
        let (dev, ino) = sys::identity(&file).unwrap();
        let stamp = format_stamp(path.file_name().unwrap().to_str().unwrap(), dev, ino, owner);
        drop(file);
        assert!(path.exists());
        let Holder::Gone(gone) = probe(&dir, &stamp, owner, &host()) else {
            panic!("the hold's lock is free: its holder is gone");
        };
        // While one prober has it, another sees it locked (and waits for the TTL or for
        // the first to act).
        assert!(matches!(probe(&dir, &stamp, owner, &host()), Holder::Alive));
        gone.finish();
        assert!(!path.exists());
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            probe(&dir, &stamp, owner, &host()),
            Holder::Unknown
        ));
    }

    #[test]
    fn doubt_is_unknown() {
        let dir = temp_dir("doubt");
        let owner = OwnerToken::random();
        let hold = ProcessHold::create(&dir).unwrap();
        let (stamp, path) = (hold.stamp(owner), hold.path());
        // The holder lives, but its file was deleted and another put at its path.
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"").unwrap();
        assert!(matches!(
            probe(&dir, &stamp, owner, &host()),
            Holder::Unknown
        ));
        // Another owner's stamp, another host, or a damaged stamp: never gone.
        fs::remove_file(&path).unwrap();
        let other = OwnerToken::random();
        assert!(matches!(
            probe(&dir, &stamp, other, &host()),
            Holder::Unknown
        ));
        assert!(matches!(
            probe(&dir, &stamp, owner, "another-host"),
            Holder::Unknown
        ));
        for bad in ["", "x", "../../etc/passwd:1:2:3", &stamp.replace(':', ";")] {
            assert!(matches!(probe(&dir, bad, owner, &host()), Holder::Unknown));
        }
        drop(hold);
        assert!(
            !dir.exists(),
            "the last hold's drop removes the emptied directory"
        );
    }
}
