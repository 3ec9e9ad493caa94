//! [`Target`]: the store a conformance run exercises.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use lock_core::{LockBackend, LockName, Locker, async_trait};

/// A way for a test to make the store lose its latest writes, as a power loss under
/// `synchronous=NORMAL`, a restored backup, a restart from an older snapshot or a failover
/// to a replica that lagged do. The write-loss case uses it to check that fences are never
/// reissued; a store that cannot simulate it (a live deployment) simply has none, and
/// `lockctl conformance` reports that case as not applicable.
#[async_trait]
pub trait WriteLoss: Send + Sync + 'static {
    /// Remembers the store's state now (everything the store keeps for the suite's names).
    async fn checkpoint(&self);

    /// Puts the store back as it was at the last checkpoint, losing every write since,
    /// while the target's clients stay open (as after a failover or an in-place restore).
    async fn roll_back(&self);
}

/// A store under test: one client of it (and optionally a second, independent client of the
/// same store), plus a name prefix that keeps the suite's locks apart from everything else.
///
/// Every lock name a case uses starts with the prefix, so the suite can run against a live
/// deployment without touching other locks.
#[derive(Clone)]
pub struct Target {
    label: String,
    backend: Arc<dyn LockBackend>,
    second: Arc<dyn LockBackend>,
    prefix: String,
    keep_alive: Vec<Arc<dyn Any + Send + Sync>>,
    write_loss: Option<Arc<dyn WriteLoss>>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("label", &self.label)
            .field("backend", &self.backend)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A target over `backend`, labelled `label` in failure messages.
    pub fn new(label: impl Into<String>, backend: Arc<dyn LockBackend>) -> Self {
        Self {
            label: label.into(),
            second: Arc::clone(&backend),
            backend,
            prefix: String::new(),
            keep_alive: Vec::new(),
            write_loss: None,
        }
    }

    /// Adds a second, independent client of the same store (another connection, another
    /// open of the same file). Race cases split their contenders between the two clients,
    /// so the store, not one client's internal locking, must keep them apart.
    pub fn with_second_client(mut self, second: Arc<dyn LockBackend>) -> Self {
        self.second = second;
        self
    }

    /// Prefixes every lock name the suite uses with `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Keeps `value` (a temporary directory, a server process) alive as long as the target.
    pub fn keep_alive(mut self, value: impl Any + Send + Sync) -> Self {
        self.keep_alive.push(Arc::new(value));
        self
    }

    /// Gives the suite a way to make the store lose its latest writes (see [`WriteLoss`]).
    pub fn with_write_loss(mut self, hook: Arc<dyn WriteLoss>) -> Self {
        self.write_loss = Some(hook);
        self
    }

    /// The write-loss hook, if the target has one.
    pub fn write_loss(&self) -> Option<&Arc<dyn WriteLoss>> {
        self.write_loss.as_ref()
    }

    /// The label used in failure messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The prefix of every lock name the suite uses.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The primary client.
    pub fn backend(&self) -> &Arc<dyn LockBackend> {
        &self.backend
    }

    /// The second client (the primary again if none was given).
    pub fn second(&self) -> &Arc<dyn LockBackend> {
        &self.second
    }

    /// Client `i` of the two, alternating, for spreading contenders.
    pub fn client(&self, i: usize) -> &Arc<dyn LockBackend> {
        if i.is_multiple_of(2) {
            &self.backend
        } else {
            &self.second
        }
    }

    /// A [`Locker`] over the primary client.
    pub fn locker(&self) -> Locker {
        Locker::new(Arc::clone(&self.backend))
    }

    /// The lock name `prefix + suffix`.
    ///
    /// # Panics
    ///
    /// If the result is not a legal name (the suite's own suffixes always are).
    pub fn name(&self, suffix: &str) -> LockName {
        LockName::new(format!("{}{suffix}", self.prefix)).unwrap_or_else(|e| {
            panic!(
                "suite bug: name {suffix:?} under prefix {:?}: {e}",
                self.prefix
            )
        })
    }

    /// Names of exactly `len` bytes under the prefix (padded with `fill`).
    pub fn name_of_len(&self, len: usize, fill: char) -> String {
        let mut name = self.prefix.clone();
        while name.len() + fill.len_utf8() <= len {
            name.push(fill);
        }
        while name.len() < len {
            name.push('x');
        }
        name
    }
}
