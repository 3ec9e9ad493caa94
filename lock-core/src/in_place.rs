//! [`InPlace`]: a store call that runs in its caller's task, and in a task of its own only
//! if the caller stops waiting for it.
//!
//! An acquire attempt or a release must run to its end once started, whatever the caller
//! does: a lease granted to a caller that went away must be freed, and a release must free
//! the lease even if the caller's future is dropped (a `select!`, a timeout). Spawning every
//! such call gives that, but costs each one a task and a trip through the scheduler (the
//! caller yields, the runtime polls the new task, which answers through a channel): 10 to
//! 15 µs on a hand-off between processes, where the caller waits anyway. An `InPlace` is
//! polled by the caller itself; only when it is dropped before it finished is the rest
//! moved into a spawned task, followed by what must happen to an answer nobody receives.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What to do with the answer of a call whose caller went away.
type Orphaned<T> = Box<dyn FnOnce(T) -> Boxed<()> + Send + 'static>;

/// A call polled in place; see the [module documentation](self).
///
/// Resolves to `Err(())` if the call panicked (the panic is caught, so a faulty backend
/// does not bring down the caller's task; callers report it as a bug in the backend).
pub(crate) struct InPlace<T: Send + 'static> {
    call: Option<Boxed<T>>,
    orphaned: Option<Orphaned<T>>,
}

impl<T: Send + 'static> InPlace<T> {
    /// `call`, whose answer goes to `orphaned` instead if the caller drops this first.
    pub(crate) fn new<F, O, OF>(call: F, orphaned: O) -> Self
    where
        F: Future<Output = T> + Send + 'static,
        O: FnOnce(T) -> OF + Send + 'static,
        OF: Future<Output = ()> + Send + 'static,
    {
        Self {
            call: Some(Box::pin(call)),
            orphaned: Some(Box::new(move |answer| Box::pin(orphaned(answer)))),
        }
    }
}

impl<T: Send + 'static> Future for InPlace<T> {
    type Output = Result<T, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(call) = self.call.as_mut() else {
            return Poll::Ready(Err(()));
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(answer)) => {
                self.call = None;
                Poll::Ready(Ok(answer))
            }
            Err(_panic) => {
                self.call = None;
                Poll::Ready(Err(()))
            }
        }
    }
}

impl<T: Send + 'static> Drop for InPlace<T> {
    fn drop(&mut self) {
        let (Some(call), Some(orphaned)) = (self.call.take(), self.orphaned.take()) else {
            return;
        };
        // Outside a runtime nothing can finish it; dropping it is all there is (the TTL
        // frees whatever it may have been granted).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(async move { orphaned(call.await).await }));
        }
    }
}

impl<T: Send + 'static> std::fmt::Debug for InPlace<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlace")
            .field("finished", &self.call.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn an_awaited_call_answers_its_caller_and_nobody_else() {
        let orphans = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&orphans);
        let call = InPlace::new(async { 7 }, move |_| async move {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(call.await, Ok(7));
        tokio::task::yield_now().await;
        assert_eq!(orphans.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_call_dropped_half_way_finishes_in_a_task_and_its_answer_goes_to_the_orphan_handler()
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (go, gate) = tokio::sync::oneshot::channel::<()>();
        let call = InPlace::new(
            async move {
                gate.await.unwrap();
                42
            },
            move |answer| async move {
                tx.send(answer).unwrap();
            },
        );
        // Polled once (it starts), then abandoned, as a timeout does.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), call)
                .await
                .is_err()
        );
        go.send(()).unwrap();
        assert_eq!(rx.await.unwrap(), 42, "finished without its caller");
    }

    #[tokio::test]
    async fn a_panicking_call_is_reported_not_propagated() {
        let call = InPlace::new(
            async {
                if std::hint::black_box(true) {
                    panic!("a faulty backend");
                }
                1
            },
            |_| async {},
        );
        assert_eq!(call.await, Err(()));
    }
}
