//! What a run left behind, read back through the platform: the events on the streams, a schema's
//! rows, the outboxes' backlog, the dead letters, a durable consumer's position, and
//! [`Platform::audit`], which counts what must exist once per person ([`Audit`], [`Expected`]).

use crate::{Person, Platform};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::events::{ClusterAssignedV1, Envelope, PaymentMethodAddedV1};
use hopsbridge_contracts::{Event, Service};
use prost::Message;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

impl Platform {
    /// How many messages of `E` are on its producer's stream: each publish the stream kept,
    /// so a second event for one change shows as two.
    pub async fn published<E: Event>(&self) -> usize {
        use futures::StreamExt;
        let js = self.bus.jetstream().await;
        let Ok(stream) = js.get_stream(self.bus.subjects().stream(E::PRODUCER)).await else {
            return 0;
        };
        let subject = self.bus.subjects().event::<E>();
        let Ok(counts) = stream.info_with_subjects(&subject).await else {
            return 0;
        };
        let counts: Vec<(String, usize)> = counts.filter_map(|r| async move { r.ok() }).collect().await;
        counts.into_iter().filter(|(s, _)| *s == subject).map(|(_, n)| n).sum()
    }

    /// Every message of `E` on its producer's stream, decoded from its envelope, in the
    /// stream's order: each publish the stream kept, with none left out.
    pub async fn published_events<E: Event>(&self) -> Vec<E> {
        self.stream_messages(E::PRODUCER, self.bus.subjects().event::<E>())
            .await
            .into_iter()
            .map(|(_, payload)| {
                let envelope = Envelope::decode(payload.as_slice()).expect("an envelope");
                E::decode(envelope.payload.as_slice()).expect("the event in its envelope")
            })
            .collect()
    }

    /// The rows `sql` answers with `schema` as its search path, as JSON objects (none: empty).
    pub async fn rows(&self, schema: &str, sql: &str) -> Vec<Value> {
        let mut conn = self.db.connect(schema).await;
        let wrapped = format!("SELECT json_agg(t)::text AS j FROM ({sql}) t");
        let found: JsonRows = diesel::sql_query(wrapped).get_result(&mut conn).await.expect("the query's rows");
        found
            .j
            .map(|j| serde_json::from_str::<Value>(&j).expect("JSON from Postgres"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Outbox rows not yet published, per service with data: zero everywhere once every relay
    /// has caught up.
    pub async fn outbox_backlog(&self) -> BTreeMap<&'static str, i64> {
        let mut backlog = BTreeMap::new();
        for service in Service::WITH_DATA {
            let mut conn = self.db.connect(service.name()).await;
            let n: Count = diesel::sql_query("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
                .get_result(&mut conn)
                .await
                .expect("count the outbox");
            backlog.insert(service.name(), n.n);
        }
        backlog
    }

    /// Every dead letter the services kept: (service, consumer, reason, replay outcome).
    pub async fn dead_letters(&self) -> Vec<DeadLetterRow> {
        let mut all = Vec::new();
        for service in Service::WITH_DATA {
            let mut conn = self.db.connect(service.name()).await;
            let rows: Vec<DeadLetterRow> = diesel::sql_query(format!(
                "SELECT '{}' AS service, consumer, reason, replay_outcome FROM dead_letters ORDER BY first_failed_at",
                service.name()
            ))
            .load(&mut conn)
            .await
            .expect("read the dead letters");
            all.extend(rows);
        }
        all
    }

    /// Where the durable consumer `name` (e.g. `provisioning-payment_method_added`) of
    /// `producer`'s stream stands, as JetStream reports it.
    pub async fn consumer_state(&self, producer: Service, name: &str) -> ConsumerState {
        let js = self.bus.jetstream().await;
        let stream = js.get_stream(self.bus.subjects().stream(producer)).await.expect("the producer's stream");
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(name).await.expect("the durable consumer");
        let info = consumer.info().await.expect("the consumer's info");
        ConsumerState {
            deliveries: info.delivered.consumer_sequence,
            acknowledged: info.ack_floor.consumer_sequence,
            ack_pending: info.num_ack_pending,
            pending: info.num_pending,
        }
    }

    /// Counts, for `people`, what must exist once per person however the journey went: every
    /// Stripe customer and subscription (cancelled ones too), every Hopsworks account with their
    /// email on any cluster (deactivated ones too), their assignments, and every
    /// PaymentMethodAddedV1 and ClusterAssignedV1 message about them on the streams. A
    /// duplicate that was later undone still counts.
    pub async fn audit(&self, people: &[Person]) -> Audit {
        let mut audit = Audit::default();
        let customers = self.world.stripe.customers();
        let subscriptions = self.world.stripe.subscriptions();
        let hopsworks_users: Vec<_> = self.world.clusters.iter().flat_map(|c| c.hopsworks.users()).collect();
        let per_person = |ids: Vec<String>| {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for id in ids {
                *counts.entry(id).or_default() += 1;
            }
            counts
        };
        let cards =
            per_person(self.published_events::<PaymentMethodAddedV1>().await.into_iter().map(|e| e.user_id).collect());
        let assigned =
            per_person(self.published_events::<ClusterAssignedV1>().await.into_iter().map(|e| e.user_id).collect());
        let mut conn = self.db.connect("provisioning").await;
        for person in people {
            let id = person.user_id.to_string();
            audit.people.push(person.auth0.email.clone());
            let theirs: Vec<&Value> =
                customers.iter().filter(|c| c["metadata"]["hopsbridge_user_id"] == id.as_str()).collect();
            audit.customers.push(theirs.len());
            let subs = subscriptions.iter().filter(|s| theirs.iter().any(|c| c["id"] == s["customer"])).count();
            audit.subscriptions.push(subs);
            let accounts = hopsworks_users
                .iter()
                .filter(|u| u.email.eq_ignore_ascii_case(&person.auth0.email))
                .collect::<Vec<_>>();
            audit.hopsworks_users.push(accounts.len());
            let expected = format!(".{}", person.auth0.sub);
            audit
                .subject_matches
                .push(accounts.iter().all(|a| a.uuid.as_deref().is_some_and(|u| u.ends_with(&expected))));
            let n: Count = diesel::sql_query("SELECT count(*) AS n FROM assignments WHERE user_id = $1")
                .bind::<diesel::sql_types::Uuid, _>(person.user_id)
                .get_result(&mut conn)
                .await
                .expect("count assignments");
            audit.assignments.push(n.n);
            audit.cards_added.push(cards.get(&id).copied().unwrap_or(0));
            audit.clusters_assigned.push(assigned.get(&id).copied().unwrap_or(0));
        }
        let over: Vec<Count> = diesel::sql_query(
            "SELECT count(*) AS n FROM clusters c WHERE c.capacity < \
             (SELECT count(*) FROM assignments a WHERE a.cluster_id = c.id)",
        )
        .load(&mut conn)
        .await
        .expect("cluster occupancy");
        audit.clusters_over_capacity = <[_]>::first(&over).map_or(0, |c| c.n);
        audit
    }
}

/// A dead letter as [`Platform::dead_letters`] reads it.
#[derive(Clone, Debug, QueryableByName)]
pub struct DeadLetterRow {
    /// The service that kept it.
    #[diesel(sql_type = Text)]
    pub service: String,
    /// The consumer that gave up.
    #[diesel(sql_type = Text)]
    pub consumer: String,
    /// Why.
    #[diesel(sql_type = Text)]
    pub reason: String,
    /// What its last replay did, if it was replayed.
    #[diesel(sql_type = Nullable<Text>)]
    pub replay_outcome: Option<String>,
}

/// A durable consumer's position ([`Platform::consumer_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumerState {
    /// Deliveries so far, redeliveries included (JetStream's consumer sequence).
    pub deliveries: u64,
    /// Deliveries up to which everything is acknowledged.
    pub acknowledged: u64,
    /// Delivered and not acknowledged.
    pub ack_pending: usize,
    /// Not delivered yet.
    pub pending: u64,
}

/// What [`Platform::audit`] found, one entry per person in the order they were given.
#[derive(Debug, Default)]
pub struct Audit {
    /// The people's emails.
    pub people: Vec<String>,
    /// Stripe customers carrying the person's user id.
    pub customers: Vec<usize>,
    /// Their subscriptions, whatever their status.
    pub subscriptions: Vec<usize>,
    /// Hopsworks accounts with their email over every cluster, whatever their status.
    pub hopsworks_users: Vec<usize>,
    /// Whether every one of their Hopsworks accounts' uuid ends with their Auth0 subject.
    pub subject_matches: Vec<bool>,
    /// Their assignments in provisioning.
    pub assignments: Vec<i64>,
    /// PaymentMethodAddedV1 messages about them on billing's stream.
    pub cards_added: Vec<usize>,
    /// ClusterAssignedV1 messages about them on provisioning's stream.
    pub clusters_assigned: Vec<usize>,
    /// Clusters with more assignments than capacity.
    pub clusters_over_capacity: i64,
}

/// What [`Audit::assert_expected`] expects: one of everything per person, except where a test
/// names a person (by their index in the audit) whose journey legitimately made more.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    subscriptions: HashMap<usize, usize>,
    hopsworks_users: HashMap<usize, usize>,
    assignments: HashMap<usize, i64>,
    cards_added: HashMap<usize, usize>,
    clusters_assigned: HashMap<usize, usize>,
}

impl Expected {
    /// One customer, subscription, Hopsworks account, assignment, PaymentMethodAddedV1 and
    /// ClusterAssignedV1 per person.
    #[must_use]
    pub fn once() -> Self {
        Self::default()
    }

    /// Person `index` has `n` subscriptions (e.g. a member who left a team and got their own).
    #[must_use]
    pub fn subscriptions(mut self, index: usize, n: usize) -> Self {
        self.subscriptions.insert(index, n);
        self
    }

    /// Person `index` has `n` Hopsworks accounts (e.g. moved to another cluster).
    #[must_use]
    pub fn hopsworks_users(mut self, index: usize, n: usize) -> Self {
        self.hopsworks_users.insert(index, n);
        self
    }

    /// Person `index` has `n` assignments.
    #[must_use]
    pub fn assignments(mut self, index: usize, n: i64) -> Self {
        self.assignments.insert(index, n);
        self
    }

    /// Person `index` added a card `n` times.
    #[must_use]
    pub fn cards_added(mut self, index: usize, n: usize) -> Self {
        self.cards_added.insert(index, n);
        self
    }

    /// Person `index` was assigned a cluster `n` times.
    #[must_use]
    pub fn clusters_assigned(mut self, index: usize, n: usize) -> Self {
        self.clusters_assigned.insert(index, n);
        self
    }
}

impl Audit {
    /// Every person has exactly one of everything and no cluster is over capacity.
    pub fn assert_exactly_once(&self) {
        self.assert_expected(&Expected::once());
    }

    /// Every person has what `expected` says (one of everything unless it names them) and no
    /// cluster is over capacity.
    pub fn assert_expected(&self, expected: &Expected) {
        fn check<T: PartialEq + Copy + std::fmt::Debug>(
            what: &str,
            people: &[String],
            found: &[T],
            one: T,
            named: &HashMap<usize, T>,
        ) {
            let wrong: Vec<String> = found
                .iter()
                .enumerate()
                .filter(|(i, n)| **n != named.get(i).copied().unwrap_or(one))
                .map(|(i, n)| format!("{} has {n:?}", people.get(i).map_or("?", String::as_str)))
                .collect();
            assert!(wrong.is_empty(), "{what} per person: {}", wrong.join(", "));
        }
        let people = &self.people;
        check("Stripe customers", people, &self.customers, 1, &HashMap::new());
        check("subscriptions", people, &self.subscriptions, 1, &expected.subscriptions);
        check("Hopsworks users", people, &self.hopsworks_users, 1, &expected.hopsworks_users);
        check("assignments", people, &self.assignments, 1, &expected.assignments);
        check("PaymentMethodAddedV1 messages", people, &self.cards_added, 1, &expected.cards_added);
        check("ClusterAssignedV1 messages", people, &self.clusters_assigned, 1, &expected.clusters_assigned);
        assert!(self.subject_matches.iter().all(|m| *m), "Hopsworks subjects: {:?}", self.subject_matches);
        assert_eq!(self.clusters_over_capacity, 0, "clusters over capacity");
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct JsonRows {
    #[diesel(sql_type = Nullable<Text>)]
    j: Option<String>,
}
