//! What a `readings` run keeps while it reads (decision 0043): each read's PodMetrics readings
//! and the pods they are of, stored with the run's counters in one transaction and only while
//! the run is still leased to the reading replica, so a replica that dies mid-window loses
//! nothing it read and the one taking the run over continues from there. The run's lease is
//! renewed with every read, and between reads.
//!
//! The readings of one pod are stored once per reading (`end_ms`): a reading read twice, or by
//! two replicas around a takeover, counts once. [`load`] hands them back in the order read.

use crate::collect::readings::{PodInfo, Reading};
use crate::schema::{readings, run_pods, runs};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hopsbridge_domain::{ClusterId, RunState};
use std::collections::HashMap;

use crate::runs::Claimed;

/// One read: when, what it read, the pods listed for readings of pods not seen before, and the
/// API calls it took.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// Calendar time of the read.
    pub at: DateTime<Utc>,
    /// The readings (those ending before the window's start are left out).
    pub readings: &'a [Reading],
    /// Pods newly seen Running.
    pub pods: &'a [((String, String), PodInfo)],
    /// HTTP requests sent, retries included.
    pub api_calls: u64,
    /// Whether the PodMetrics list was read (false: the read failed, only its calls count).
    pub read: bool,
}

/// What a readings run has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Reads stored.
    pub reads: u64,
    /// API calls counted.
    pub api_calls: u64,
    /// Calendar time of the first read.
    pub first_read_at: Option<DateTime<Utc>>,
}

fn big(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Renews the run's lease for `lease_secs` (real time) if it is still leased to `replica`;
/// answers whether it was.
///
/// # Errors
/// When Postgres fails.
pub async fn renew(conn: &mut AsyncPgConnection, run: &Claimed, replica: &str, lease_secs: i64) -> QueryResult<bool> {
    // Raw SQL: make_interval, which the DSL cannot say.
    diesel::sql_query(
        "UPDATE runs SET lease_until = now() + make_interval(secs => $4)
         WHERE cluster_id = $1 AND window_start = $2 AND status = 'running' AND claimed_by = $3",
    )
    .bind::<SqlUuid, _>(run.cluster_id)
    .bind::<Timestamptz, _>(run.window_start)
    .bind::<Text, _>(replica)
    .bind::<BigInt, _>(lease_secs)
    .execute(conn)
    .await
    .map(|n| n == 1)
}

/// Stores `read` for `run` and renews its lease, if the run is still leased to `replica`;
/// answers whether it was (when not, nothing is written).
///
/// # Errors
/// When Postgres fails.
pub async fn store(
    conn: &mut AsyncPgConnection,
    run: &Claimed,
    replica: &str,
    lease_secs: i64,
    read: Read<'_>,
) -> QueryResult<bool> {
    // First, so the row stays locked until the readings are in: a completion waits for them.
    let ours = diesel::sql_query(
        "UPDATE runs SET lease_until = now() + make_interval(secs => $4),
             reads = reads + $5, api_calls = api_calls + $6,
             first_read_at = CASE WHEN $5 > 0 THEN coalesce(first_read_at, $7) ELSE first_read_at END,
             read_through = CASE WHEN $5 > 0 THEN $7 ELSE read_through END
         WHERE cluster_id = $1 AND window_start = $2 AND status = 'running' AND claimed_by = $3",
    )
    .bind::<SqlUuid, _>(run.cluster_id)
    .bind::<Timestamptz, _>(run.window_start)
    .bind::<Text, _>(replica)
    .bind::<BigInt, _>(lease_secs)
    .bind::<Integer, _>(i32::from(read.read))
    .bind::<BigInt, _>(i64::try_from(read.api_calls).unwrap_or(i64::MAX))
    .bind::<Timestamptz, _>(read.at)
    .execute(conn)
    .await?;
    if ours != 1 {
        return Ok(false);
    }
    let start_ms = run.window_start.timestamp_millis();
    for chunk in read.pods.chunks(5000) {
        let (mut ns, mut pod, mut owner, mut gpus, mut cpu, mut memory) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((n, p), info) in chunk {
            ns.push(n.as_str());
            pod.push(p.as_str());
            owner.push(info.owner.as_str());
            gpus.push(i64::try_from(info.gpus).unwrap_or(i64::MAX));
            cpu.push(big(info.cpu_request));
            memory.push(big(info.memory_request));
        }
        // Raw SQL: unnest binds each column as one array (see samples::insert).
        diesel::sql_query(
            "INSERT INTO run_pods (cluster_id, window_start, namespace, pod, owner, gpus,
                                   cpu_request_nanocores, memory_request_bytes)
             SELECT $1, $2, u.ns, u.pod, u.owner, u.gpus, u.cpu, u.memory
             FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[])
                  AS u(ns, pod, owner, gpus, cpu, memory)
             ON CONFLICT DO NOTHING",
        )
        .bind::<SqlUuid, _>(run.cluster_id)
        .bind::<Timestamptz, _>(run.window_start)
        .bind::<Array<Text>, _>(ns)
        .bind::<Array<Text>, _>(pod)
        .bind::<Array<Text>, _>(owner)
        .bind::<Array<BigInt>, _>(gpus)
        .bind::<Array<BigInt>, _>(cpu)
        .bind::<Array<BigInt>, _>(memory)
        .execute(conn)
        .await?;
    }
    let kept: Vec<&Reading> = read.readings.iter().filter(|r| r.end_ms >= start_ms).collect();
    for chunk in kept.chunks(5000) {
        let (mut ns, mut pod, mut end, mut window, mut cpu, mut memory) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in chunk {
            ns.push(r.key.0.as_str());
            pod.push(r.key.1.as_str());
            end.push(r.end_ms);
            window.push(r.window_ms.max(0));
            cpu.push(big(r.cpu));
            memory.push(big(r.memory));
        }
        diesel::sql_query(
            "INSERT INTO readings (cluster_id, window_start, namespace, pod, end_ms, window_ms, cpu_nanocores, memory_bytes)
             SELECT $1, $2, u.ns, u.pod, u.end_ms, u.window_ms, u.cpu, u.memory
             FROM unnest($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[])
                  AS u(ns, pod, end_ms, window_ms, cpu, memory)
             ON CONFLICT DO NOTHING",
        )
        .bind::<SqlUuid, _>(run.cluster_id)
        .bind::<Timestamptz, _>(run.window_start)
        .bind::<Array<Text>, _>(ns)
        .bind::<Array<Text>, _>(pod)
        .bind::<Array<BigInt>, _>(end)
        .bind::<Array<BigInt>, _>(window)
        .bind::<Array<BigInt>, _>(cpu)
        .bind::<Array<BigInt>, _>(memory)
        .execute(conn)
        .await?;
    }
    Ok(true)
}

/// The run's progress so far.
///
/// # Errors
/// When Postgres fails.
pub async fn progress(conn: &mut AsyncPgConnection, cluster: ClusterId, start: DateTime<Utc>) -> QueryResult<Progress> {
    let (reads, api_calls, first_read_at): (i32, i64, Option<DateTime<Utc>>) = runs::table
        .find((cluster, start))
        .select((runs::reads, runs::api_calls, runs::first_read_at))
        .first(conn)
        .await?;
    Ok(Progress {
        reads: u64::try_from(reads).unwrap_or(0),
        api_calls: u64::try_from(api_calls).unwrap_or(0),
        first_read_at,
    })
}

/// The pods the run has seen, by (namespace, name).
///
/// # Errors
/// When Postgres fails.
pub async fn pods(
    conn: &mut AsyncPgConnection,
    cluster: ClusterId,
    start: DateTime<Utc>,
) -> QueryResult<HashMap<(String, String), PodInfo>> {
    let rows: Vec<(String, String, String, i64, i64, i64)> = run_pods::table
        .filter(run_pods::cluster_id.eq(cluster))
        .filter(run_pods::window_start.eq(start))
        .select((
            run_pods::namespace,
            run_pods::pod,
            run_pods::owner,
            run_pods::gpus,
            run_pods::cpu_request_nanocores,
            run_pods::memory_request_bytes,
        ))
        .load(conn)
        .await?;
    let positive = |v: i64| u128::try_from(v).unwrap_or(0);
    Ok(rows
        .into_iter()
        .map(|(ns, pod, owner, gpus, cpu, memory)| {
            let info = PodInfo {
                owner,
                gpus: u64::try_from(gpus).unwrap_or(0),
                cpu_request: positive(cpu),
                memory_request: positive(memory),
            };
            ((ns, pod), info)
        })
        .collect())
}

/// The run's readings, each pod's in the order they were read (by their end).
///
/// # Errors
/// When Postgres fails.
pub async fn load(conn: &mut AsyncPgConnection, cluster: ClusterId, start: DateTime<Utc>) -> QueryResult<Vec<Reading>> {
    let rows: Vec<(String, String, i64, i64, i64, i64)> = readings::table
        .filter(readings::cluster_id.eq(cluster))
        .filter(readings::window_start.eq(start))
        .order((readings::namespace, readings::pod, readings::end_ms))
        .select((
            readings::namespace,
            readings::pod,
            readings::end_ms,
            readings::window_ms,
            readings::cpu_nanocores,
            readings::memory_bytes,
        ))
        .load(conn)
        .await?;
    let positive = |v: i64| u128::try_from(v).unwrap_or(0);
    Ok(rows
        .into_iter()
        .map(|(ns, pod, end_ms, window_ms, cpu, memory)| Reading {
            key: (ns, pod),
            end_ms,
            window_ms,
            cpu: positive(cpu),
            memory: positive(memory),
        })
        .collect())
}

/// Whether the run is still leased to `replica` (for a replica deciding to stop reading).
///
/// # Errors
/// When Postgres fails.
pub async fn held(conn: &mut AsyncPgConnection, run: &Claimed, replica: &str) -> QueryResult<bool> {
    let n: i64 = runs::table
        .find((run.cluster_id, run.window_start))
        .filter(runs::status.eq(RunState::Running))
        .filter(runs::claimed_by.eq(replica))
        .count()
        .get_result(conn)
        .await?;
    Ok(n == 1)
}
