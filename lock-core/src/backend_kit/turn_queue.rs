//! [`TurnQueues`]: the processes waiting for one name become the head of the waiters (see
//! [`WaitTurn`](super::turn::WaitTurn)) in the order they came.
//!
//! A process that is not the head joins the queue for the name's turn file: a thread of its
//! own blocks in `flock(LOCK_EX)` on the file. The kernel keeps blocked `flock` requests in
//! the order they were made and, when the head lets go of the lock (it got the lease, its
//! wait ended, or its process died, however it died), wakes them in that order, so the one
//! that has waited longest runs first and takes it. Its process then leads. Racing for the
//! lock after a notification instead (as the waiters did before) lets the order the kernel
//! wakes the racers in decide, which favoured some processes for good: with 16 processes
//! each holding a lock for 5 ms, one wait reached 0.5-0.9 s, against 0.11 s (about its fair share) in this queue.
//!
//! One thread per turn file per process at most (a process that waits behind others for many
//! names at once has one per name, each blocked in the kernel, with a small stack): a wait
//! that ends while its thread is still blocked leaves it blocked (keeping the process's
//! place), and the next wait of the process takes it up. A thread that gets the lock once
//! nobody in its process wants it lets go at once, which passes the turn to the next in the
//! kernel's queue.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Above this many turn files, queues no waiter uses are forgotten.
const PRUNE_ABOVE: usize = 64;

/// Stack size of a queueing thread: it only opens a file and blocks on it.
const THREAD_STACK: usize = 64 * 1024;

/// One process's queues, by turn file.
#[derive(Debug, Default)]
pub(crate) struct TurnQueues {
    queues: Mutex<HashMap<PathBuf, Arc<Queue>>>,
}

#[derive(Debug)]
struct Queue {
    path: PathBuf,
    state: Mutex<State>,
    /// Told when the thread got the lock, or failed.
    done: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Waiters of this process that want the turn.
    wanted: usize,
    /// The turn file, locked for this process, until a waiter takes it.
    ready: Option<File>,
    /// A thread is blocked on the lock.
    blocked: bool,
    /// The thread could not open or lock the file (a waiter then does without the queue).
    failed: bool,
}

impl TurnQueues {
    /// This process's place in the queue for the turn file at `path`, kept while the returned
    /// value lives.
    pub(crate) fn join(&self, path: &Path) -> Place {
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            if queues.len() >= PRUNE_ABOVE {
                queues.retain(|_, queue| Arc::strong_count(queue) > 1);
            }
            Arc::clone(queues.entry(path.to_owned()).or_insert_with(|| {
                Arc::new(Queue {
                    path: path.to_owned(),
                    state: Mutex::default(),
                    done: Notify::new(),
                })
            }))
        };
        queue.state().wanted += 1;
        Place { queue }
    }
}

impl Queue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A waiter's place in a turn file's queue (see [`TurnQueues::join`]).
#[derive(Debug)]
pub(crate) struct Place {
    queue: Arc<Queue>,
}

impl Place {
    /// Waits until this process's turn comes: returns the turn file, locked (by an open file
    /// description of its own), or `None` when no thread could wait for it (the caller then
    /// does without the queue). Cancel-safe: a lock that arrives once nobody waits is passed
    /// on (see [`Drop`]).
    pub(crate) async fn turn(&mut self) -> Option<File> {
        loop {
            let done = self.queue.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            {
                let mut state = self.queue.state();
                if let Some(file) = state.ready.take() {
                    return Some(file);
                }
                if std::mem::take(&mut state.failed) {
                    return None;
                }
                if !state.blocked {
                    let queue = Arc::clone(&self.queue);
                    let started = std::thread::Builder::new()
                        .name("lock-turn-queue".into())
                        .stack_size(THREAD_STACK)
                        .spawn(move || block(&queue));
                    if started.is_err() {
                        return None;
                    }
                    state.blocked = true;
                }
            }
            done.await;
        }
    }
}

impl Drop for Place {
    /// Gives the place up; a lock that arrived for nobody goes to the next in the queue.
    fn drop(&mut self) {
        let unclaimed = {
            let mut state = self.queue.state();
            state.wanted -= 1;
            if state.wanted == 0 {
                state.ready.take()
            } else {
                None
            }
        };
        drop(unclaimed);
    }
}

/// The queueing thread: blocks until the lock is this process's, then hands it to a waiter
/// that wants it, or lets go at once if none does.
fn block(queue: &Queue) {
    let locked = File::open(&queue.path).and_then(|file| {
        loop {
            match file.lock() {
                Ok(()) => return Ok(file),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    });
    let unclaimed = {
        let mut state = queue.state();
        state.blocked = false;
        match locked {
            Ok(file) if state.wanted > 0 => {
                state.ready = Some(file);
                None
            }
            Ok(file) => Some(file),
            Err(_) => {
                state.failed = true;
                None
            }
        }
    };
    drop(unclaimed);
    queue.done.notify_waiters();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn temp_path(tag: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "lock-core-turn-queue-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, b"").unwrap();
        path
    }

    fn locked(path: &Path) -> File {
        let file = File::open(path).unwrap();
        super::super::private_file::try_lock(&file).unwrap();
        file
    }

    /// Several "processes" (a queue set each) queue behind a head: each gets the turn when
    /// the one before lets go, in the order they joined.
    #[tokio::test]
    async fn processes_get_the_turn_in_the_order_they_queued() {
        let path = temp_path("order");
        let head = locked(&path);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let processes: Vec<Arc<TurnQueues>> = (0..4).map(|_| Arc::default()).collect();
        for (i, queues) in processes.iter().enumerate() {
            let (queues, path, tx) = (Arc::clone(queues), path.clone(), tx.clone());
            tokio::spawn(async move {
                let mut place = queues.join(&path);
                let file = place.turn().await.expect("a thread waits");
                tx.send((i, file)).unwrap();
            });
            // Each blocks in the kernel before the next joins.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(rx.try_recv().is_err(), "the head holds the turn");
        drop(head);
        for expected in 0..4 {
            let (i, file) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the turn passed on")
                .unwrap();
            assert_eq!(i, expected, "in the order they queued");
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(rx.try_recv().is_err(), "one at a time");
            drop(file);
        }
        std::fs::remove_file(&path).unwrap();
    }

    /// A waiter that stops waiting keeps its process's place; when the lock comes and no
    /// waiter of that process wants it, it goes straight to the next in the queue.
    #[tokio::test]
    async fn a_turn_nobody_wants_any_more_passes_on() {
        let path = temp_path("unwanted");
        let head = locked(&path);
        let gone = TurnQueues::default();
        let mut place = gone.join(&path);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), place.turn())
                .await
                .is_err(),
            "the head holds it"
        );
        drop(place);
        let next = TurnQueues::default();
        let mut next_place = next.join(&path);
        let waiting = tokio::spawn(async move { next_place.turn().await.is_some() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(head);
        let got = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("passed on by the process nobody waits in")
            .unwrap();
        assert!(got);
        std::fs::remove_file(&path).unwrap();
    }

    /// The next wait of a process takes up the place its previous wait left.
    #[tokio::test]
    async fn a_later_wait_takes_up_the_place() {
        let path = temp_path("later");
        let head = locked(&path);
        let queues = TurnQueues::default();
        let mut first = queues.join(&path);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), first.turn())
                .await
                .is_err()
        );
        let mut second = queues.join(&path);
        drop(first);
        drop(head);
        let file = tokio::time::timeout(Duration::from_secs(10), second.turn())
            .await
            .expect("the place was kept")
            .expect("a thread waits");
        assert!(
            super::super::private_file::try_lock(&File::open(&path).unwrap()).is_err(),
            "it holds the turn"
        );
        drop(file);
        std::fs::remove_file(&path).unwrap();
    }
}
