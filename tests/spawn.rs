//! The Linux spawn path (clone3 with `CLONE_VM | CLONE_VFORK`, born in the cgroup): exec
//! errors, environment, cwd, credentials, session, signal state, fds, cgroup placement.
//! The same cases run through the std-based fallback in `tests/spawn_fork.rs`.
#![cfg(target_os = "linux")] // the clone3 spawn path and /proc checks are Linux-only
#[path = "spawn_cases/mod.rs"]
mod cases;
mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_program_is_not_found() {
    cases::missing_program_is_not_found().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_executable_file_is_permission_denied() {
    cases::non_executable_file_is_permission_denied().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_exec_leaves_no_zombie_or_fd() {
    cases::failed_exec_leaves_no_zombie_or_fd().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_is_found_on_the_child_path() {
    cases::program_is_found_on_the_child_path().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_is_applied() {
    cases::env_is_applied().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cwd_is_applied() {
    cases::cwd_is_applied().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_stdio_fds_are_inherited() {
    cases::only_stdio_fds_are_inherited().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setsid_makes_a_session_leader() {
    cases::setsid_makes_a_session_leader().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uid_gid_and_groups_are_dropped() {
    cases::uid_gid_and_groups_are_dropped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_runs_inside_its_cgroup() {
    cases::child_runs_inside_its_cgroup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_after_kill_in_the_same_group_works() {
    cases::spawn_after_kill_in_the_same_group_works().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_frozen_cgroups_are_not_reused() {
    cases::killed_and_frozen_cgroups_are_not_reused().await;
}

// Blocks a signal on the spawning thread itself: a current-thread runtime spawns from here.
#[tokio::test(flavor = "current_thread")]
async fn signal_mask_and_sigpipe_are_reset() {
    cases::signal_mask_and_sigpipe_are_reset(true).await;
}
