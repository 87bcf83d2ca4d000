//! Stopping: Ctrl-C (or SIGTERM) stops taking rows and lets what is in flight finish; a second
//! one exits at once. Fatal answers stop the run the same way. A worker hands each answer to
//! the ledger writer and moves on without waiting for its commit (only a success waits, for the
//! verdict on its label), so at a stop some answers may be held by the writer, not yet on disk:
//! the drain gives them [`DRAIN_LIMIT`](super::DRAIN_LIMIT) to commit, and at a second Ctrl-C
//! they go to the side file in the last words, said under the ledger writer's own lock
//! (`Held::seal`): an answer handed over while they are said, or after, is written there by
//! whoever hands it over, and the process exits once those are on disk.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::output::Printer;

/// Why the run stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Interrupted,
    Aborted(String),
}

/// What must happen before the process exits at a second Ctrl-C (write the answers the ledger
/// has not taken yet to the side file).
pub type LastWords = Box<dyn Fn() + Send + Sync>;

pub struct Shutdown {
    stopping: CancellationToken,
    reason: Mutex<Option<StopReason>>,
    last_words: Mutex<Option<LastWords>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            stopping: CancellationToken::new(),
            reason: Mutex::new(None),
            last_words: Mutex::new(None),
        }
    }
}

impl Shutdown {
    /// Asks everyone to stop; the first reason given is kept.
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.stopping.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves once a stop was asked for.
    pub async fn stopped(&self) {
        self.stopping.cancelled().await;
    }

    /// What to do before exiting at a second Ctrl-C.
    pub fn before_exit(&self, last_words: LastWords) {
        *self.last_words.lock().unwrap_or_else(|e| e.into_inner()) = Some(last_words);
    }

    /// Listens for Ctrl-C and SIGTERM: the first stops the run, the second exits with 130 (after
    /// the last words: no answer that arrived is dropped).
    pub fn listen_for_signals(self: &Arc<Self>, printer: Arc<Printer>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut signals = Signals::new();
            signals.next().await;
            printer.info(
                "stopping: no new rows; waiting for the requests in flight (press Ctrl-C again to exit now)",
            );
            me.stop(StopReason::Interrupted);
            signals.next().await;
            if let Some(last_words) = me
                .last_words
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                last_words();
            }
            printer.info("exiting now; every committed outcome is in the ledger");
            std::process::exit(130);
        });
    }
}

/// SIGINT and SIGTERM, registered once so that no second signal is missed.
#[cfg(unix)]
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn next(&mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.int) => {}
            _ = recv(&mut self.term) => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> Self {
        Signals
    }
    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
