//! [`BackgroundTask`]: the one long-running task a backend keeps for a connection of its
//! own (a Redis subscription, a PostgreSQL `LISTEN` session), started when first needed,
//! started again if it ended (its runtime shut down, as each `#[tokio::test]`'s does), and
//! aborted with the backend.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use tokio::task::JoinHandle;

/// The slot for one long-running task a backend keeps for a connection of its own (a Redis
/// subscription, a PostgreSQL `LISTEN` session): started when first needed, started again if
/// it ended (its runtime shut down, as each `#[tokio::test]`'s does), and aborted on drop.
#[derive(Debug, Default)]
pub struct BackgroundTask {
    task: Mutex<Option<JoinHandle<()>>>,
}

impl BackgroundTask {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `start()` on the current runtime unless the task is running; returns whether
    /// it spawned (so the caller can reset state a dead task left behind first: `start` is
    /// called only then).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    pub fn ensure_running<F>(&self, start: impl FnOnce() -> F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return false;
        }
        *task = Some(tokio::spawn(start()));
        true
    }

    /// True while the task runs.
    pub fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// For a waiter whose notifications come through a background connection whose state
/// `live` reports (`true` while it listens): `true` when it is up, and was up from the
/// start of this call, so the caller can wait for notifications. While it is down, waits
/// for it to come back or a jittered `poll` interval (at most until `deadline`), and
/// returns `false`: the caller should return and look at the store, since a release may
/// have gone unheard.
pub async fn listening(
    live: &mut tokio::sync::watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    poll: std::time::Duration,
) -> bool {
    let mut was_down = false;
    while !*live.borrow_and_update() {
        was_down = true;
        let fallback = (tokio::time::Instant::now() + super::jitter(poll)).min(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(fallback) => return false,
            changed = live.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(fallback).await;
                    return false;
                }
            }
        }
    }
    !was_down
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn starts_once_restarts_after_it_ended_and_aborts_on_drop() {
        let starts = Arc::new(AtomicUsize::new(0));
        let slot = BackgroundTask::new();
        let forever = |starts: &Arc<AtomicUsize>| {
            let starts = Arc::clone(starts);
            move || async move {
                starts.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
        };
        assert!(slot.ensure_running(forever(&starts)));
        assert!(!slot.ensure_running(forever(&starts)), "already running");
        tokio::task::yield_now().await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert!(slot.is_running());

        let ends = BackgroundTask::new();
        assert!(ends.ensure_running(|| async {}));
        while ends.is_running() {
            tokio::task::yield_now().await;
        }
        assert!(ends.ensure_running(|| async {}), "restarted after it ended");

        drop(slot);
        tokio::task::yield_now().await;
        assert_eq!(
            Arc::strong_count(&starts),
            1,
            "the aborted task dropped its clone"
        );
    }
}
