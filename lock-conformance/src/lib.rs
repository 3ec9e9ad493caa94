#![doc = include_str!("../README.md")]

pub mod cases;
mod runner;
pub mod support;
mod target;

pub use runner::{Case, CaseOutcome, NEEDS_WRITE_LOSS, run_case};
pub use target::{Target, WriteLoss};

#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// Every case of the suite, by name, for runners that pick cases at run time
/// (`lockctl conformance`).
pub static CASES: &[Case] = __with_cases!(@registry);

/// Expands every conformance case into its own `#[tokio::test]` inside `mod $module`, so
/// `cargo test` lists them as `$module::case_name`.
///
/// `$target` is an expression evaluated once per test that yields a future of a
/// [`Target`] (an `async` block or a call to an `async fn`); names in it resolve in the
/// enclosing module.
///
/// ```no_run
/// async fn memory() -> lock_conformance::Target {
///     lock_conformance::Target::new("memory", std::sync::Arc::new(lock_core::memory::MemoryBackend::new()))
/// }
/// lock_conformance::conformance_tests!(memory_backend, memory());
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $target:expr) => {
        $crate::__with_cases!(@tests $module, $target);
    };
}

/// The single list of cases; both the test macro and [`CASES`] expand from it.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_cases {
    ($($how:tt)*) => {
        $crate::__expand_cases! { [$($how)*]
            lifecycle
            second_acquire_fails_while_held
            names_are_independent
            names_differing_in_case_or_encoding_are_distinct
            hostile_names_are_safe_and_distinct
            inspect_shows_holder_fence_and_expiry
            clients_share_one_store
            list_shows_live_leases_under_a_prefix
            one_winner_among_100_concurrent_tasks
            increments_under_the_lock_are_exact
            one_winner_for_a_stale_lease
            stale_lease_is_taken_over
            heartbeat_extends_past_the_original_ttl
            heartbeat_many_renews_each_lease_in_order
            heartbeat_by_another_token_is_lease_lost
            heartbeat_after_expiry_is_lease_lost
            heartbeat_after_takeover_is_lease_lost
            release_after_takeover_leaves_the_new_holder_alone
            release_is_idempotent
            fence_increases_across_every_handover
            fences_are_per_name_monotonic
            force_release_frees_and_the_next_fence_is_higher
            force_release_of_a_free_name_is_false
            bad_ttls_are_refused_without_touching_the_lease
            boundary_ttls_are_accepted
            invalid_names_are_refused
            absurd_durations_are_refused_or_saturate
            forged_leases_are_refused
            lock_times_out_within_wait_plus_slack
            lock_waits_for_a_release
            cancelled_lock_leaves_nothing_held
            guard_keeps_its_lease_alive_past_three_ttls
            lost_fires_after_a_force_release
            with_lock_cancels_its_future_on_loss
            with_lock_runs_and_releases
            dropped_guard_releases_its_lease
            wait_for_change_wakes_on_release
            fences_rise_after_the_store_loses_writes
            semaphore_never_exceeds_its_limit_among_50_tasks
            one_winner_for_the_last_free_permit
            an_expired_permit_frees_its_slot
            fences_rise_across_permits
            a_different_limit_is_refused_naming_both
            limit_one_behaves_as_a_lock
            inspect_all_and_list_show_every_permit
            an_early_release_holds_until_the_minimum_hold_ends
            a_dropped_guard_holds_until_the_minimum_hold_ends
            a_release_after_the_minimum_hold_frees_at_once
            one_leader_among_5_campaigners
            resign_hands_over_to_another_campaigner
            force_release_ends_a_term_and_run_restarts_under_a_higher_fence
            observe_sees_every_change_in_order
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __expand_cases {
    ([@tests $module:ident, $target:expr] $($case:ident)*) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[$crate::__private::tokio::test(
                    crate = "lock_conformance::__private::tokio",
                    flavor = "multi_thread",
                    worker_threads = 2
                )]
                async fn $case() {
                    $crate::cases::$case($target.await).await;
                }
            )*
        }
    };
    ([@registry] $($case:ident)*) => {
        &[$(
            $crate::Case {
                name: stringify!($case),
                run: |target| ::std::boxed::Box::pin($crate::cases::$case(target)),
            }
        ),*]
    };
}
