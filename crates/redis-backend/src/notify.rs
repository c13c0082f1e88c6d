//! The gateway's subscription: completions published on its channel wake its local waiters.
//!
//! The batcher publishes a batch's results (a JSON array of [`Notice`]s) on the channel of the
//! gateway named in each task's `reply_to`. A waiter gets its task's result from the message
//! itself, without reading the store again. Waiters register before they read the store, so a
//! completion is never missed between the read and the wait; if the subscription is down (or a
//! task was submitted elsewhere), waiters still re-read the store every second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use batchgate_protocol::api::TaskStatus;
use batchgate_queue::{Completion, Outcome};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Pause before resubscribing after the connection broke.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(500);

/// One task's result as published to its gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Which task.
    pub task_id: String,
    /// `SUCCESS` or `FAILED`.
    pub status: TaskStatus,
    /// The output, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The reason, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the result was stored, ms since the Unix epoch.
    pub completed_at: u64,
}

impl Notice {
    /// The notice of a completion.
    pub fn of(c: &Completion) -> Notice {
        let (status, output, error) = match &c.outcome {
            Outcome::Success(o) => (TaskStatus::Success, Some(o.clone()), None),
            Outcome::Failed(e) => (TaskStatus::Failed, None, Some(e.clone())),
        };
        Notice {
            task_id: c.task_id.clone(),
            status,
            output,
            error,
            completed_at: c.completed_at,
        }
    }
}

type Waiters = HashMap<String, Vec<oneshot::Sender<Notice>>>;

/// Local waiters by task id, woken by messages on this gateway's channel.
#[derive(Debug, Default)]
pub struct Notifier {
    /// A waiter that timed out leaves a closed sender, removed on the next notice of that id
    /// or by [`Notifier::prune`].
    waiters: Mutex<Waiters>,
}

impl Notifier {
    /// Registers interest in `task_id`; the receiver gets the task's notice.
    pub fn register(&self, task_id: &str) -> oneshot::Receiver<Notice> {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(task_id.to_owned()).or_default().push(tx);
        rx
    }

    /// Hands each notice of `message` (a JSON array) to the waiters of its task.
    pub fn wake(&self, message: &str) {
        let notices: Vec<Notice> = match serde_json::from_str(message) {
            Ok(n) => n,
            Err(error) => {
                debug!(%error, "bad notification payload");
                return;
            }
        };
        let mut waiters = self.lock();
        for notice in notices {
            for tx in waiters.remove(&notice.task_id).unwrap_or_default() {
                let _ = tx.send(notice.clone());
            }
        }
    }

    /// Drops registrations whose waiters have all gone; keeps the map bounded by live waits.
    pub fn prune(&self) {
        self.lock().retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
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

    fn notice(id: &str) -> Notice {
        Notice {
            task_id: id.into(),
            status: TaskStatus::Success,
            output: Some(format!("out {id}")),
            error: None,
            completed_at: 9,
        }
    }

    #[tokio::test]
    async fn wake_hands_the_notice_to_every_waiter_of_its_task() {
        let n = Notifier::default();
        let a1 = n.register("a");
        let a2 = n.register("a");
        let mut b = n.register("b");
        let message = serde_json::to_string(&[notice("a"), notice("c")]).expect("json");
        n.wake(&message);
        assert_eq!(a1.await.expect("notice"), notice("a"));
        assert_eq!(a2.await.expect("notice"), notice("a"));
        n.wake("not json");
        assert!(b.try_recv().is_err() && !n.lock().is_empty());
        drop(b);
        n.prune();
        assert!(n.lock().is_empty());
    }
}
