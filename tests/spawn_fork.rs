//! The spawn cases of `tests/spawn.rs`, through the std-based fallback path (forced with
//! `PROCESSKIT_SPAWN=fork`, read once per process, hence its own test binary).
#![cfg(target_os = "linux")] // the fallback switch and /proc checks are Linux-only
#[path = "spawn_cases/mod.rs"]
mod cases;
mod common;

fn force_fork() {
    // Every test sets the same value before its first spawn; the crate reads it once.
    std::env::set_var("PROCESSKIT_SPAWN", "fork");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_program_is_not_found() {
    force_fork();
    cases::missing_program_is_not_found().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_executable_file_is_permission_denied() {
    force_fork();
    cases::non_executable_file_is_permission_denied().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_exec_leaves_no_zombie_or_fd() {
    force_fork();
    cases::failed_exec_leaves_no_zombie_or_fd().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_is_found_on_the_child_path() {
    force_fork();
    cases::program_is_found_on_the_child_path().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_is_applied() {
    force_fork();
    cases::env_is_applied().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cwd_is_applied() {
    force_fork();
    cases::cwd_is_applied().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_stdio_fds_are_inherited() {
    force_fork();
    cases::only_stdio_fds_are_inherited().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setsid_makes_a_session_leader() {
    force_fork();
    cases::setsid_makes_a_session_leader().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uid_gid_and_groups_are_dropped() {
    force_fork();
    cases::uid_gid_and_groups_are_dropped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_runs_inside_its_cgroup() {
    force_fork();
    cases::child_runs_inside_its_cgroup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_after_kill_in_the_same_group_works() {
    force_fork();
    cases::spawn_after_kill_in_the_same_group_works().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_frozen_cgroups_are_not_reused() {
    force_fork();
    cases::killed_and_frozen_cgroups_are_not_reused().await;
}

// Blocks a signal on the spawning thread itself: a current-thread runtime spawns from here.
#[tokio::test(flavor = "current_thread")]
async fn signal_mask_and_sigpipe_are_reset() {
    force_fork();
    cases::signal_mask_and_sigpipe_are_reset(false).await;
}
