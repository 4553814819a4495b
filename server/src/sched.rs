//! Thread priorities: which of the server's threads the kernel lets wait when the machine is
//! busy.
//!
//! Three tiers, as nice values (Linux; elsewhere every thread keeps the default):
//! - [`WORLD_NICE`] for the world thread: the tick has a deadline every 1/tick-hz seconds.
//! - [`SERVER_NICE`] for the rest of the server: request handlers, WebSocket readers, the chat
//!   writer and the database's threads — the short steps a message's ack, and so its delivery,
//!   wait on. The binary sets it on its main thread before the async runtime starts, so every
//!   thread started afterwards inherits it.
//! - [`FANOUT_NICE`] for the chat fan-out's delivery thread (acks are sent elsewhere): writing a delivery round to a thousand
//!   sockets is the bulk of the server's CPU time under chat load, and it can wait a little
//!   for the steps above (it then also finds more messages to write at once). Without this,
//!   a round and a commit compete as equals, and every message's commit waits for CPU behind
//!   the rounds writing earlier ones (docs/performance.md, "Sweeping rounds").
//!
//! Raising a priority (a negative value) needs `CAP_SYS_NICE` (root): without it those threads
//! keep the default and the server says so in its log. Lowering one always works.

/// The world thread.
pub const WORLD_NICE: i32 = -10;
/// Everything else of the server but the chat delivery thread.
pub const SERVER_NICE: i32 = -5;
/// The chat fan-out's delivery thread.
pub const FANOUT_NICE: i32 = 10;

/// Sets the calling thread's nice value (threads it starts afterwards inherit it).
pub fn set_current_thread_nice(nice: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        rustix::process::setpriority_process(Some(tid), nice).map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "thread priorities are only set on Linux"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value.
    #[cfg(target_os = "linux")]
    fn current_thread_nice() -> Option<i32> {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn lowering_a_threads_priority_always_works_and_stays_with_that_thread() {
        let before = current_thread_nice();
        let (nice, other) = std::thread::spawn(|| {
            set_current_thread_nice(FANOUT_NICE).expect("lowering needs no privilege");
            let nice = current_thread_nice();
            // A thread started afterwards inherits it.
            let inherited = std::thread::spawn(current_thread_nice).join().expect("thread");
            (nice, inherited)
        })
        .join()
        .expect("thread");
        assert_eq!(nice, Some(FANOUT_NICE));
        assert_eq!(other, Some(FANOUT_NICE));
        assert_eq!(current_thread_nice(), before, "other threads keep theirs");
    }
}
