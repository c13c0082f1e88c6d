//! The gateway's subscription: completions published on its channel wake its local waiters.
//!
//! The batcher publishes the ids of a batch's tasks (space-separated) on the channel of the
//! gateway named in each task's `reply_to`. Waiters register before they read the store, so a
//! completion is never missed between the read and the wait; if the subscription is down (or a
//! task was submitted elsewhere), waiters still re-read the store every 250 ms.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Pause before resubscribing after the connection broke.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(500);

/// Local waiters by task id, woken by messages on this gateway's channel.
#[derive(Debug, Default)]
pub struct Notifier {
    /// Senders are dropped to wake; a waiter that timed out leaves a closed sender, removed on
    /// the next wake of that id or by [`Notifier::prune`].
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

impl Notifier {
    /// Registers interest in `task_id`; the receiver completes (with an error) when woken.
    pub fn register(&self, task_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(task_id.to_owned()).or_default().push(tx);
        rx
    }

    /// Wakes every waiter of the ids in `message` (space-separated).
    pub fn wake(&self, message: &str) {
        let mut waiters = self.lock();
        for id in message.split_ascii_whitespace() {
            waiters.remove(id);
        }
    }

    /// Drops registrations whose waiters have all gone; keeps the map bounded by live waits.
    pub fn prune(&self) {
        self.lock().retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<()>>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to `channel` and wakes waiters until `stop`, resubscribing after failures.
    pub async fn run(
        self: std::sync::Arc<Self>,
        client: redis::Client,
        channel: String,
        stop: CancellationToken,
    ) {
        let mut prune = tokio::time::interval(Duration::from_secs(5));
        while !stop.is_cancelled() {
            let mut pubsub = match client.get_async_pubsub().await {
                Ok(p) => p,
                Err(error) => {
                    debug!(%error, "notification subscription failed; retrying");
                    pause(&stop).await;
                    continue;
                }
            };
            if let Err(error) = pubsub.subscribe(&channel).await {
                warn!(%error, "cannot subscribe to the notification channel");
                pause(&stop).await;
                continue;
            }
            info!(%channel, "subscribed to completion notifications");
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = prune.tick() => self.prune(),
                    message = messages.next() => match message {
                        Some(m) => match m.get_payload::<String>() {
                            Ok(ids) => self.wake(&ids),
                            Err(error) => debug!(%error, "bad notification payload"),
                        },
                        None => {
                            warn!("notification subscription closed; resubscribing");
                            break;
                        }
                    },
                }
            }
            pause(&stop).await;
        }
    }
}

async fn pause(stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wake_reaches_every_waiter_of_the_ids_named() {
        let n = Notifier::default();
        let a1 = n.register("a");
        let a2 = n.register("a");
        let mut b = n.register("b");
        n.wake("a c");
        assert!(a1.await.is_err(), "woken by the dropped sender");
        assert!(a2.await.is_err());
        assert!(b.try_recv().is_err() && !n.lock().is_empty());
        drop(b);
        n.prune();
        assert!(n.lock().is_empty());
    }
}
