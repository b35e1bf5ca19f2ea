//! Events whose effect needs nothing from Stripe are written in groups (decisions 0028 and
//! 0029): each goes to the queue of one of [`GROUP_WRITERS`] writers, chosen by its customer,
//! and a writer takes every event queued for it (up to [`GROUP_SIZE`]) and applies them in one
//! transaction, so a burst of deliveries costs a few commits instead of one each. Every event
//! of one customer goes to the same writer, so two groups written at the same time never lock
//! the same account. If a group's transaction fails, its events are applied again one
//! transaction each, so one event's failure is only that event's.

use super::effects::Effect;
use super::{ApplyError, Event, Outcome, Webhooks};
use std::hash::{DefaultHasher, Hash, Hasher};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The most events one group transaction applies.
pub const GROUP_SIZE: usize = 64;
/// How many group transactions may be open at once (each a task of [`Webhooks::write_groups`]).
pub const GROUP_WRITERS: usize = 2;

/// An event waiting for its group, and where to answer.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) event: Event,
    pub(super) effect: Effect,
    pub(super) reply: oneshot::Sender<Result<Outcome, ApplyError>>,
}

/// The writers' queues: one sender and one receiver per writer.
pub(super) type Queues = (Vec<mpsc::Sender<Job>>, Vec<Mutex<mpsc::Receiver<Job>>>);

/// A queue for each of the [`GROUP_WRITERS`] writers.
pub(super) fn queues() -> Queues {
    (0..GROUP_WRITERS).map(|_| mpsc::channel(GROUP_SIZE * 4)).map(|(tx, rx)| (tx, Mutex::new(rx))).unzip()
}

/// The writer whose queue an effect goes to: the same for every event of one customer; events
/// that name no customer go to the first.
pub(super) fn writer_of(effect: &Effect) -> usize {
    let Some(customer) = effect.customer() else { return 0 };
    let mut hasher = DefaultHasher::new();
    customer.hash(&mut hasher);
    usize::try_from(hasher.finish() % GROUP_WRITERS as u64).unwrap_or(0)
}

impl Webhooks {
    /// Writes groups of the events queued for writer `writer` (below [`GROUP_WRITERS`]) until
    /// `cancel`; then takes no more, and writes what is queued (later deliveries get a
    /// transaction each). Run one for each writer.
    pub async fn write_groups(self, writer: usize, cancel: CancellationToken) {
        let Some(inbox) = self.inboxes.get(writer) else { return };
        loop {
            let group = {
                let mut inbox = inbox.lock().await;
                let first = tokio::select! {
                    job = inbox.recv() => job,
                    () = cancel.cancelled() => {
                        // A closed queue still hands out what it holds, then None.
                        inbox.close();
                        inbox.recv().await
                    }
                };
                let Some(first) = first else { return };
                let mut group = vec![first];
                while group.len() < GROUP_SIZE {
                    match inbox.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                group
            };
            self.write_group(group).await;
        }
    }

    /// Writes `group` in one transaction, answering each delivery; if that fails, applies each
    /// event on its own.
    async fn write_group(&self, mut group: Vec<Job>) {
        group.sort_by(|a, b| {
            (a.effect.customer(), a.event.created, &a.event.id).cmp(&(
                b.effect.customer(),
                b.event.created,
                &b.event.id,
            ))
        });
        let work: Vec<(Event, Effect)> = group.iter().map(|j| (j.event.clone(), j.effect.clone())).collect();
        match self.write(work).await {
            Ok(outcomes) => {
                tracing::debug!(events = group.len(), "webhook group written");
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(
                    events = group.len(),
                    error = format!("{e:#}"),
                    "webhook group failed; applying its events one by one"
                );
                futures::future::join_all(group.into_iter().map(|job| async move {
                    let outcome = self.apply_alone(job.event, job.effect).await;
                    let _ = job.reply.send(outcome);
                }))
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::effects::samples::{attach, checkout, detach};
    use super::*;

    #[test]
    fn every_event_of_one_customer_goes_to_the_same_writer() {
        let writer = writer_of(&attach("pm_1", "cus_a"));
        assert!(writer < GROUP_WRITERS);
        assert_eq!(writer_of(&detach("pm_9", "cus_a")), writer);
        assert_eq!(writer_of(&checkout("evt_1", "cus_a")), writer);
        // Customers spread over the writers.
        let used: std::collections::HashSet<usize> =
            (0..64).map(|i| writer_of(&attach("pm_1", &format!("cus_{i}")))).collect();
        assert_eq!(used.len(), GROUP_WRITERS);
    }
}
