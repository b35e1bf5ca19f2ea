//! Pod lifetimes and watch spans in Postgres (decision 0070). Raw SQL throughout: batches are
//! bound as arrays (`unnest`), and starts and ends merge with `least`, which the DSL cannot say.

use crate::collect::readings::Lifetime;
use crate::collect::watch::PodLife;
use crate::window::Window;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::ClusterId;

/// A span of time in which a watch knew every pod of a cluster, and the resourceVersion its
/// writes reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// When the list that began it was answered.
    pub from: DateTime<Utc>,
    /// The last event, bookmark or clean end written.
    pub through: DateTime<Utc>,
    /// Where a watch continuing it starts.
    pub resource_version: String,
}

fn big(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The clusters metering measures (those it schedules windows of).
///
/// # Errors
/// When Postgres fails.
pub async fn measured_clusters(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<ClusterId>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        cluster_id: uuid::Uuid,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT cluster_id FROM clusters WHERE status <> 'inactive' OR drained_at IS NULL ORDER BY cluster_id",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| ClusterId::from(r.cluster_id)).collect())
}

/// Writes `pods`' lifetimes; a start or end already known is kept when earlier. A uid must
/// appear once.
///
/// # Errors
/// When Postgres fails.
pub async fn upsert(conn: &mut AsyncPgConnection, cluster: ClusterId, pods: &[PodLife]) -> diesel::QueryResult<()> {
    for chunk in pods.chunks(5000) {
        let uid: Vec<&str> = chunk.iter().map(|p| p.uid.as_str()).collect();
        let ns: Vec<&str> = chunk.iter().map(|p| p.namespace.as_str()).collect();
        let pod: Vec<&str> = chunk.iter().map(|p| p.name.as_str()).collect();
        let owner: Vec<&str> = chunk.iter().map(|p| p.owner.as_str()).collect();
        let gpus: Vec<i64> = chunk.iter().map(|p| i64::try_from(p.gpus).unwrap_or(i64::MAX)).collect();
        let cpu: Vec<i64> = chunk.iter().map(|p| big(p.cpu_request)).collect();
        let memory: Vec<i64> = chunk.iter().map(|p| big(p.memory_request)).collect();
        let created: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|p| p.created_at).collect();
        let started: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|p| p.started_at).collect();
        let ended: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|p| p.ended_at).collect();
        diesel::sql_query(
            "INSERT INTO pod_lifetimes (cluster_id, uid, namespace, pod, owner, gpus, cpu_request_nanocores,
                                        memory_request_bytes, created_at, started_at, ended_at)
             SELECT $1, u.uid, u.ns, u.pod, u.owner, u.gpus, u.cpu, u.memory, u.created, u.started, u.ended
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[],
                         $9::timestamptz[], $10::timestamptz[], $11::timestamptz[])
                  AS u(uid, ns, pod, owner, gpus, cpu, memory, created, started, ended)
             ON CONFLICT (cluster_id, uid) DO UPDATE SET
                 owner = excluded.owner, gpus = excluded.gpus,
                 cpu_request_nanocores = excluded.cpu_request_nanocores,
                 memory_request_bytes = excluded.memory_request_bytes,
                 created_at = coalesce(pod_lifetimes.created_at, excluded.created_at),
                 started_at = least(pod_lifetimes.started_at, excluded.started_at),
                 ended_at = least(pod_lifetimes.ended_at, excluded.ended_at)",
        )
        .bind::<SqlUuid, _>(cluster)
        .bind::<Array<Text>, _>(uid)
        .bind::<Array<Text>, _>(ns)
        .bind::<Array<Text>, _>(pod)
        .bind::<Array<Text>, _>(owner)
        .bind::<Array<BigInt>, _>(gpus)
        .bind::<Array<BigInt>, _>(cpu)
        .bind::<Array<BigInt>, _>(memory)
        .bind::<Array<Nullable<Timestamptz>>, _>(created)
        .bind::<Array<Nullable<Timestamptz>>, _>(started)
        .bind::<Array<Nullable<Timestamptz>>, _>(ended)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// After a list sent at `sent`: writes every listed pod, ends the open lifetimes of pods created
/// before `sent` that the list no longer has (they ended unseen; their end is bounded by the
/// list), and starts `span`.
///
/// # Errors
/// When Postgres fails.
pub async fn relisted(
    conn: &mut AsyncPgConnection,
    cluster: ClusterId,
    replica: &str,
    (sent, span): (DateTime<Utc>, &Span),
    pods: &[PodLife],
) -> diesel::QueryResult<()> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<PodLife> = pods.iter().filter(|p| seen.insert(p.uid.as_str())).cloned().collect();
    upsert(conn, cluster, &unique).await?;
    let uids: Vec<&str> = unique.iter().map(|p| p.uid.as_str()).collect();
    diesel::sql_query(
        "UPDATE pod_lifetimes SET ended_at = $3
         WHERE cluster_id = $1 AND ended_at IS NULL AND created_at < $4 AND NOT (uid = ANY($2))",
    )
    .bind::<SqlUuid, _>(cluster)
    .bind::<Array<Text>, _>(uids)
    .bind::<Timestamptz, _>(span.from)
    .bind::<Timestamptz, _>(sent)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "INSERT INTO pod_watch_spans (cluster_id, replica, synced_from, synced_through, resource_version)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (cluster_id, synced_from) DO NOTHING",
    )
    .bind::<SqlUuid, _>(cluster)
    .bind::<Text, _>(replica)
    .bind::<Timestamptz, _>(span.from)
    .bind::<Timestamptz, _>(span.through)
    .bind::<Text, _>(&span.resource_version)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves `span` on to its `through` and resourceVersion (never back).
///
/// # Errors
/// When Postgres fails.
pub async fn extend(conn: &mut AsyncPgConnection, cluster: ClusterId, span: &Span) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "UPDATE pod_watch_spans SET synced_through = $3, resource_version = $4
         WHERE cluster_id = $1 AND synced_from = $2 AND synced_through <= $3",
    )
    .bind::<SqlUuid, _>(cluster)
    .bind::<Timestamptz, _>(span.from)
    .bind::<Timestamptz, _>(span.through)
    .bind::<Text, _>(&span.resource_version)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct SpanRow {
    #[diesel(sql_type = Timestamptz)]
    synced_from: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    synced_through: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    resource_version: String,
}

/// The span of `cluster` that reached furthest, if any.
///
/// # Errors
/// When Postgres fails.
pub async fn latest_span(conn: &mut AsyncPgConnection, cluster: ClusterId) -> diesel::QueryResult<Option<Span>> {
    let rows: Vec<SpanRow> = diesel::sql_query(
        "SELECT synced_from, synced_through, resource_version FROM pod_watch_spans
         WHERE cluster_id = $1 ORDER BY synced_through DESC LIMIT 1",
    )
    .bind::<SqlUuid, _>(cluster)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(|r| Span {
        from: r.synced_from,
        through: r.synced_through,
        resource_version: r.resource_version,
    }))
}

/// Whether a span of `cluster` began by `window`'s start, and whether one covers it whole.
///
/// # Errors
/// When Postgres fails.
pub async fn covers(
    conn: &mut AsyncPgConnection,
    cluster: ClusterId,
    window: Window,
) -> diesel::QueryResult<(bool, bool)> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bool)]
        begun: bool,
        #[diesel(sql_type = Bool)]
        covered: bool,
    }
    let (start, end) = (window.start_time(), window.end_time());
    let row: Row = diesel::sql_query(
        "SELECT coalesce(bool_or(true), false) AS begun, coalesce(bool_or(synced_through >= $3), false) AS covered
         FROM pod_watch_spans WHERE cluster_id = $1 AND synced_from <= $2",
    )
    .bind::<SqlUuid, _>(cluster)
    .bind::<Timestamptz, _>(start)
    .bind::<Timestamptz, _>(end)
    .get_result(conn)
    .await?;
    Ok((row.begun, row.covered))
}

/// The lifetimes of `cluster`'s pods that ran during `window`.
///
/// # Errors
/// When Postgres fails.
pub async fn in_window(
    conn: &mut AsyncPgConnection,
    cluster: ClusterId,
    window: Window,
) -> diesel::QueryResult<Vec<Lifetime>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        namespace: String,
        #[diesel(sql_type = Text)]
        pod: String,
        #[diesel(sql_type = Text)]
        owner: String,
        #[diesel(sql_type = BigInt)]
        gpus: i64,
        #[diesel(sql_type = BigInt)]
        cpu_request_nanocores: i64,
        #[diesel(sql_type = BigInt)]
        memory_request_bytes: i64,
        #[diesel(sql_type = Timestamptz)]
        started_at: DateTime<Utc>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        ended_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT namespace, pod, owner, gpus, cpu_request_nanocores, memory_request_bytes, started_at, ended_at
         FROM pod_lifetimes
         WHERE cluster_id = $1 AND started_at IS NOT NULL AND started_at < $3
           AND (ended_at IS NULL OR ended_at > $2)",
    )
    .bind::<SqlUuid, _>(cluster)
    .bind::<Timestamptz, _>(window.start_time())
    .bind::<Timestamptz, _>(window.end_time())
    .load(conn)
    .await?;
    let positive = |v: i64| u128::try_from(v).unwrap_or(0);
    Ok(rows
        .into_iter()
        .map(|r| Lifetime {
            key: (r.namespace, r.pod),
            owner: r.owner,
            gpus: u64::try_from(r.gpus).unwrap_or(0),
            cpu_request: positive(r.cpu_request_nanocores),
            memory_request: positive(r.memory_request_bytes),
            start_ms: r.started_at.timestamp_millis(),
            end_ms: r.ended_at.map(|t| t.timestamp_millis()),
        })
        .collect())
}

/// Marks `cluster`'s samples of `window` as billed from lifetimes.
///
/// # Errors
/// When Postgres fails.
pub async fn mark_samples(conn: &mut AsyncPgConnection, cluster: ClusterId, window: Window) -> diesel::QueryResult<()> {
    diesel::sql_query("UPDATE samples SET lifetimes = true WHERE cluster_id = $1 AND window_start = $2")
        .bind::<SqlUuid, _>(cluster)
        .bind::<Timestamptz, _>(window.start_time())
        .execute(conn)
        .await?;
    Ok(())
}
