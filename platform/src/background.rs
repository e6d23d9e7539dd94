//! A service's work besides answering calls (outbox relay, event consumer, sweepers, key
//! rotation, fan-out), handed to [`Host::serve`](crate::server::Host::serve) by name. Each task
//! runs inside a span of its own (`task = "<name>"`), so its logs say whose they are. On
//! shutdown, after the in-flight calls have drained, the tasks are asked to stop one by one in
//! the order they were added: list the ones that produce work first and the outbox relay last,
//! so that the relay still publishes what the others wrote while stopping.

use std::{future::Future, pin::Pin, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tracing::Instrument;

type Start = Box<dyn FnOnce(Stop) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The background tasks of a service, not yet started.
#[derive(Default)]
pub struct Background {
    tasks: Vec<(&'static str, Start)>,
}

/// Tells a task that it is asked to stop. Cloning it is cheap.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Completes once the task is asked to stop (or its owner is gone).
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// A task that runs until `stop` fires and then returns, leaving nothing half-done (the
    /// relay publishes what is left; the consumer finishes the event in hand).
    pub fn task<F, Fut>(mut self, name: &'static str, run: F) -> Self
    where
        F: FnOnce(Stop) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push((name, Box::new(move |stop| Box::pin(run(stop)))));
        self
    }

    /// A loop that holds nothing half-done across its awaits: it is simply dropped when asked to
    /// stop.
    pub fn cancellable(self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) -> Self {
        self.task(name, |mut stop| async move {
            tokio::select! {
                () = work => {}
                () = stop.requested() => {}
            }
        })
    }

    /// `job` every `every` (the first round at once); a failed round is logged and the next runs
    /// on schedule. A round under way when the stop comes is finished, not cut.
    pub fn every<F, Fut, E>(self, name: &'static str, every: Duration, job: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send,
        E: std::fmt::Display,
    {
        self.task(name, move |mut stop| async move {
            let mut ticker = tokio::time::interval(every);
            // A round that overran is followed by a full pause, not by a burst of late rounds.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = stop.requested() => return,
                }
                if let Err(error) = job().await {
                    tracing::warn!(%error, "round failed");
                }
            }
        })
    }

    /// The service's event consumer.
    pub fn consuming<H: crate::messaging::Handler>(self, consumer: crate::messaging::Consumer<H>) -> Self {
        self.task("consuming events", |stop| consumer.run(stop))
    }

    /// The outbox relay: add it last, so that it publishes what the tasks before it wrote while
    /// they stopped.
    pub fn relaying(self, relay: crate::messaging::Relay) -> Self {
        self.task("relaying the outbox", |stop| relay.run(stop))
    }

    /// The names, in stop order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(name, _)| *name).collect()
    }

    /// Starts every task, each in its own span.
    pub fn start(self) -> Running {
        let tasks = self
            .tasks
            .into_iter()
            .map(|(name, start)| {
                let (stop_tx, stop_rx) = watch::channel(false);
                let span = tracing::info_span!("task", task = name);
                let handle = tokio::spawn(start(Stop(stop_rx)).instrument(span));
                (name, stop_tx, handle)
            })
            .collect();
        Running { tasks }
    }
}

/// Started tasks. Dropped without [`Running::stop`] (a server that failed), they are aborted.
pub struct Running {
    tasks: Vec<(&'static str, watch::Sender<bool>, JoinHandle<()>)>,
}

impl Running {
    /// Asks each task to stop, in the order they were added, and waits up to `grace` for each;
    /// one that takes longer is aborted and logged.
    pub async fn stop(mut self, grace: Duration) {
        for (name, stop, mut handle) in std::mem::take(&mut self.tasks) {
            let _ = stop.send(true);
            match tokio::time::timeout(grace, &mut handle).await {
                Ok(Ok(())) => tracing::debug!(task = name, "stopped"),
                Ok(Err(error)) => tracing::error!(task = name, %error, "task ended abnormally"),
                Err(_) => {
                    tracing::warn!(task = name, ?grace, "task outlived the grace period: aborted");
                    handle.abort();
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for (_, _, handle) in &self.tasks {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn tasks_stop_one_by_one_in_the_order_they_were_added() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut background = Background::new();
        for name in ["sweeper", "consumer", "relay"] {
            let log = log.clone();
            background = background.task(name, move |mut stop| async move {
                stop.requested().await;
                // The later task must not be asked before this one has returned.
                tokio::time::sleep(Duration::from_millis(20)).await;
                log.lock().expect("log").push(name);
            });
        }
        assert_eq!(background.names(), ["sweeper", "consumer", "relay"]);
        background.start().stop(Duration::from_secs(5)).await;
        assert_eq!(*log.lock().expect("log"), ["sweeper", "consumer", "relay"]);
    }

    #[tokio::test]
    async fn a_round_under_way_is_finished_not_cut() {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let started_tx = Mutex::new(Some(started_tx));
        let finished = Arc::new(Mutex::new(0));
        let rounds = finished.clone();
        let running = Background::new()
            .every("slow", Duration::from_secs(60), move || {
                let rounds = rounds.clone();
                if let Some(tx) = started_tx.lock().expect("lock").take() {
                    let _ = tx.send(());
                }
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    *rounds.lock().expect("rounds") += 1;
                    Ok::<(), String>(())
                }
            })
            .start();
        started.await.expect("the first round starts at once");
        running.stop(Duration::from_secs(5)).await;
        assert_eq!(
            *finished.lock().expect("rounds"),
            1,
            "the round in progress ran to its end"
        );
    }

    #[tokio::test]
    async fn a_task_that_ignores_the_stop_is_aborted_after_the_grace() {
        let dropped = Arc::new(Mutex::new(false));
        struct SetOnDrop(Arc<Mutex<bool>>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                *self.0.lock().expect("flag") = true;
            }
        }
        let guard = SetOnDrop(dropped.clone());
        let running = Background::new()
            .task("stubborn", move |_stop| async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            })
            .start();
        running.stop(Duration::from_millis(50)).await;
        // Aborting takes effect at the task's next poll.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(*dropped.lock().expect("flag"), "the stubborn task was aborted");
    }

    #[tokio::test]
    async fn a_cancellable_loop_is_dropped_when_asked_to_stop() {
        let running = Background::new()
            .cancellable("fanout", std::future::pending::<()>())
            .start();
        tokio::time::timeout(Duration::from_secs(1), running.stop(Duration::from_secs(30)))
            .await
            .expect("stopped at once, without waiting for the grace");
    }
}
