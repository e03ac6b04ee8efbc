//! A writer's connection: its statements, prepared once, and how statements are pipelined.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio_postgres::{Client, NoTls, Statement};

use super::error::describe;
use crate::StoreError;

/// A claim's candidates in one capability set, locked so that no other transaction (of this
/// process or another) takes them meanwhile; those another holds are skipped.
pub(super) const CLAIM_SQL: &str = "SELECT priority, turn, id FROM tasks
    WHERE state = 'pending' AND ready_at IS NOT NULL AND capset = $1 ORDER BY priority DESC, turn, id LIMIT $2
    FOR UPDATE SKIP LOCKED";

/// Rows per state in `state_counts`; a writer adds to the shard of its backend pid.
pub(super) const COUNT_SHARDS: i32 = 16;

pub(super) const SAVEPOINT: &str = "SAVEPOINT cmd";
pub(super) const RELEASE: &str = "RELEASE SAVEPOINT cmd";
pub(super) const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT cmd; RELEASE SAVEPOINT cmd";

/// A statement of a pipelined run, sent when first polled; its answer is the rows it changed.
pub(super) type Step<'c> =
    Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'c>>;

/// Awaits every future, all polled together: statements issued on one connection this way are
/// sent back to back (pipelined), in the order of `futures`, and answered in order.
pub(super) async fn join_all<'a, T>(
    mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + 'a>>>,
) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// One writer's connection and its prepared statements.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) s: Stmts,
    /// The `state_counts` shard this connection adds to.
    pub(super) shard: i32,
}

macro_rules! statements {
    ($($name:ident = $sql:expr;)*) => {
        /// The writer's statements, prepared once per connection.
        pub(super) struct Stmts {
            $(pub(super) $name: Statement,)*
        }

        impl Stmts {
            async fn prepare(client: &Client) -> Result<Stmts, tokio_postgres::Error> {
                let sqls: &[&str] = &[$($sql,)*];
                let futures = sqls
                    .iter()
                    .map(|sql| Box::pin(client.prepare(sql)) as Pin<Box<dyn Future<Output = _> + Send + '_>>)
                    .collect();
                let mut prepared = join_all(futures).await.into_iter();
                Ok(Stmts {
                    $($name: prepared.next().expect("one statement per name")?,)*
                })
            }
        }
    };
}

statements! {
    lock_batch = "SELECT id, version, state FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE";
    lock_task = "SELECT version, state FROM tasks WHERE id = $1 FOR UPDATE";
    update_task = "UPDATE tasks SET state = $2, version = $3, ready_at = $4, timer_at = $5,
                          lease_agent = $6, updated_at = $7, snapshot = $8, paused = $9,
                          flow = $10::text::jsonb, parked = NULL, parked_until = NULL,
                          parked_ready = NULL
                   WHERE id = $1";
    release_keys = "UPDATE concurrency_held h SET held = h.held - 1,
                                                  freed_at = GREATEST(h.freed_at, $2)
                    FROM tasks t, jsonb_array_elements(t.flow->'concurrency') c
                    WHERE t.id = $1 AND h.key = c->>0";
    unpark_released = "UPDATE tasks SET parked = NULL, parked_until = NULL, ready_at = parked_ready,
                                        parked_ready = NULL
                       WHERE id IN (
                           SELECT (SELECT p.id FROM tasks p
                                   WHERE p.parked = 'concurrency:' || (c->>0)
                                   ORDER BY p.priority DESC, p.turn, p.id LIMIT 1)
                           FROM tasks t, jsonb_array_elements(t.flow->'concurrency') c
                           WHERE t.id = $1)";
    take_keys = "INSERT INTO concurrency_held (key, held)
                 SELECT k, n FROM unnest($1::text[], $2::int8[]) AS u(k, n)
                 ON CONFLICT (key) DO UPDATE SET held = concurrency_held.held + excluded.held";
    release_named_keys = "UPDATE concurrency_held SET held = held - 1,
                                                      freed_at = GREATEST(freed_at, $2)
                          WHERE key = ANY($1::text[])";
    unpark_named_released = "UPDATE tasks SET parked = NULL, parked_until = NULL,
                                              ready_at = parked_ready, parked_ready = NULL
                             WHERE id IN (
                                 SELECT (SELECT p.id FROM tasks p WHERE p.parked = k
                                         ORDER BY p.priority DESC, p.turn, p.id LIMIT 1)
                                 FROM unnest($1::text[]) AS u(k))";
    correct_limit = "UPDATE limits SET
                         level = GREATEST(-units * per_ms, LEAST(units * per_ms,
                             LEAST(units * per_ms, level + GREATEST(0, $2 - refilled_at) * units)
                             - $3 * per_ms)),
                         refilled_at = GREATEST(refilled_at, $2)
                     WHERE key = $1";
    unpark_refunded = "UPDATE tasks SET parked = NULL, parked_until = NULL, ready_at = parked_ready,
                                        parked_ready = NULL
                       WHERE id IN (SELECT id FROM tasks WHERE parked = $1
                                    ORDER BY priority DESC, turn, id LIMIT $2)";
    assign_turns = "WITH x AS (SELECT id, g, row_number() OVER (PARTITION BY g ORDER BY o) AS k
                               FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS u(g, id, o)),
                         wanted AS (SELECT g, count(*) AS n FROM x GROUP BY g),
                         clock AS (SELECT coalesce(max(pass), 0) AS p FROM fair_clock),
                         taken AS (INSERT INTO fair_groups (grp, pass)
                                   SELECT g, (SELECT p FROM clock) + n FROM wanted ORDER BY g
                                   ON CONFLICT (grp) DO UPDATE
                                       SET pass = GREATEST(fair_groups.pass, (SELECT p FROM clock))
                                                  + excluded.pass - (SELECT p FROM clock)
                                   RETURNING grp, pass)
                    UPDATE tasks t SET turn = (taken.pass - w.n + x.k - 1) / $3
                    FROM x JOIN wanted w ON w.g = x.g JOIN taken ON taken.grp = x.g
                    WHERE t.id = x.id";
    claimed_turn = "INSERT INTO fair_clock (shard, pass) VALUES ($1, $2)
                    ON CONFLICT (shard) DO UPDATE SET pass = GREATEST(fair_clock.pass, excluded.pass)";
    lock_limits = "SELECT key, units, per_ms, level, refilled_at FROM limits
                   WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE";
    lock_held = "INSERT INTO concurrency_held (key, held)
                 SELECT k, 0 FROM unnest($1::text[]) AS u(k) ORDER BY k
                 ON CONFLICT (key) DO UPDATE SET held = concurrency_held.held
                 RETURNING key, held, freed_at";
    park_task = "UPDATE tasks SET parked = $2, parked_until = $3, parked_ready = ready_at,
                                  ready_at = NULL
                 WHERE id = $1 AND state = 'pending' AND ready_at IS NOT NULL";
    unpark_due = "UPDATE tasks SET parked = NULL, parked_until = NULL, ready_at = parked_ready,
                                   parked_ready = NULL
                  WHERE id IN (SELECT id FROM tasks WHERE parked IS NOT NULL AND parked_until <= $1
                               ORDER BY parked_until, id LIMIT $2 FOR UPDATE SKIP LOCKED)";
    store_bucket = "UPDATE limits SET level = $2, refilled_at = $3 WHERE key = $1";
    insert_history = "INSERT INTO history (task_id, seq, at, actor, event, fencing_token, payload)
                      VALUES ($1, $2, $3, $4, $5, $6, $7)";
    insert_outbox = "INSERT INTO outbox (task_id, effect, created_at)
                     SELECT t, e, c FROM unnest($1::uuid[], $2::text[], $3::int8[])
                         WITH ORDINALITY AS u(t, e, c, o)
                     ORDER BY o";
    // A transition's effects, but `ReleaseDependents` ($4) of a task nobody depends on.
    insert_transition_outbox = "INSERT INTO outbox (task_id, effect, created_at)
                     SELECT t, e, c FROM unnest($1::uuid[], $2::text[], $3::int8[])
                         WITH ORDINALITY AS u(t, e, c, o)
                     WHERE e <> $4 OR EXISTS (SELECT 1 FROM edges WHERE dependency = t)
                     ORDER BY o";
    release_dependents = "UPDATE tasks SET deps_open = deps_open - 1
                          WHERE id IN (SELECT dependent FROM edges WHERE dependency = $1)";
    // The dependents of the tasks $1 left blocked with no dependency open: id, snapshot, spec.
    released_by = "SELECT t.id, t.snapshot, s.spec FROM tasks t JOIN task_specs s ON s.task_id = t.id
                   WHERE t.id IN (SELECT dependent FROM edges WHERE dependency = ANY($1::uuid[]))
                     AND t.state = 'blocked' AND t.deps_open = 0";
    // The dependencies of each of the tasks $1: dependent, key, id, state, last change.
    dependencies_of = "SELECT e.dependent, t.key, t.id, t.state, t.updated_at FROM edges e
                       JOIN tasks t ON t.id = e.dependency
                       WHERE e.dependent = ANY($1::uuid[]) ORDER BY e.dependent, t.key";
    reopen_dependents = "UPDATE tasks SET deps_open = deps_open + 1
                         WHERE id IN (SELECT dependent FROM edges WHERE dependency = $1)";
    detach_dependents = "DELETE FROM edges WHERE dependency = $1";
    update_spec = "UPDATE task_specs SET spec = $2 WHERE task_id = $1";
    pause_workflow = "UPDATE workflows SET paused = $2 WHERE id = $1";
    insert_audit = "INSERT INTO audit (at, actor, action, workflow_id, task_id, reason, detail)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)";
    signal_delivered = "UPDATE signals SET delivered_at = $2 WHERE id = $1 AND delivered_at IS NULL";
    add_counts = "INSERT INTO state_counts (state, shard, n)
                  SELECT s, $1, d FROM unnest($2::text[], $3::int8[]) WITH ORDINALITY AS u(s, d, o)
                  ORDER BY o
                  ON CONFLICT (state, shard) DO UPDATE SET n = state_counts.n + excluded.n";
    find_idempotent = "SELECT id, request_hash FROM workflows WHERE idempotency_key = $1";
    insert_workflow = "INSERT INTO workflows (id, name, idempotency_key, request_hash, created_at,
                                              outputs, budgets)
                       VALUES ($1, $2, $3, $4, $5, $6, $7)";
    insert_keyed_workflow = "INSERT INTO workflows (id, name, idempotency_key, request_hash, created_at,
                                                    outputs, budgets)
                             VALUES ($1, $2, $3, $4, $5, $6, $7)
                             ON CONFLICT (idempotency_key) DO NOTHING";
    add_usage = "INSERT INTO workflow_usage (workflow_id, unit, micros)
                 SELECT $1, u, m FROM unnest($2::text[], $3::int8[]) AS x(u, m)
                 ON CONFLICT (workflow_id, unit)
                 DO UPDATE SET micros = workflow_usage.micros + excluded.micros";
    set_budgets = "UPDATE workflows SET budgets = $2 WHERE id = $1";
    workflow_paused_locked = "SELECT paused IS NOT NULL FROM workflows
                              WHERE id = $1 AND deleting IS NULL FOR SHARE";
    workflows_deleting_locked = "SELECT id, deleting IS NOT NULL FROM workflows
                                 WHERE id = ANY($1::uuid[]) ORDER BY id FOR SHARE";
    insert_labels = "INSERT INTO workflow_labels (workflow_id, key, value)
                     SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS u(k, v)";
    task_keys = "SELECT key, id FROM tasks WHERE workflow_id = $1 ORDER BY id";
    insert_capsets = "INSERT INTO capsets (capset)
                      SELECT c FROM unnest($1::text[]) WITH ORDINALITY AS u(c, o) ORDER BY o
                      ON CONFLICT DO NOTHING";
    insert_tasks = "INSERT INTO tasks (id, workflow_id, key, state, version, priority, capset,
                                      ready_at, timer_at, lease_agent, deps_open, updated_at, snapshot,
                                      flow)
                    SELECT id, wf, key, state, version, priority, capset, ready_at, timer_at,
                           lease_agent, 0, updated_at, snapshot, flow::jsonb
                    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[],
                                $6::int4[], $7::text[], $8::int8[], $9::int8[], $10::uuid[],
                                $11::int8[], $12::text[], $13::text[])
                        WITH ORDINALITY AS u(id, wf, key, state, version, priority, capset, ready_at,
                                             timer_at, lease_agent, updated_at, snapshot, flow, o)
                    ORDER BY o
                    ON CONFLICT DO NOTHING
                    RETURNING id";
    insert_specs = "INSERT INTO task_specs (task_id, spec)
                    SELECT * FROM unnest($1::uuid[], $2::text[])";
    insert_histories = "INSERT INTO history (task_id, seq, at, actor, event, fencing_token, payload)
                        SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::text[],
                                             $5::text[], $6::int8[], $7::text[])";
    insert_edges = "INSERT INTO edges (dependency, dependent)
                    SELECT * FROM unnest($1::uuid[], $2::uuid[])";
    count_open = "WITH counted AS (
                      UPDATE tasks t SET deps_open = t.deps_open + x.n
                      FROM (SELECT e.dependent, count(*)::int4 AS n
                            FROM unnest($1::uuid[], $2::uuid[]) AS e(dependency, dependent)
                            JOIN tasks d ON d.id = e.dependency
                            WHERE d.state <> 'completed'
                            GROUP BY e.dependent) x
                      WHERE t.id = x.dependent
                      RETURNING t.id, t.state)
                  SELECT id FROM counted WHERE state NOT IN ('blocked', 'cancelled')";
    mark_referenced = "UPDATE artifacts SET referenced = true
                       WHERE sha256 = ANY($1::text[]) AND NOT referenced";
    insert_refs = "INSERT INTO artifact_refs (artifact, task_id)
                   SELECT * FROM unnest($1::text[], $2::uuid[])
                   ON CONFLICT DO NOTHING";
    capsets = "SELECT capset FROM capsets";
    lock_agent = "SELECT 1 FROM agents WHERE id = $1 FOR UPDATE";
    // Counted up to the limit (`$2`), in `tasks_by_agent`'s order, so that the planner walks
    // that index: a walk marks the entries of the agent's past leases dead as it passes them,
    // once no transaction can see them. A bare count (and a limit without the order, in the
    // generic plan) was planned as a bitmap scan, which marks nothing: with two nodes it read
    // every lease the agent ever held, 10,000 entries and up to 20 ms per claim.
    count_leases = "SELECT count(*) FROM (SELECT FROM tasks WHERE lease_agent = $1
                                          ORDER BY id LIMIT $2) held";
    claim_candidates = CLAIM_SQL;
    load_tasks = "SELECT t.id, t.snapshot, s.spec FROM tasks t JOIN task_specs s ON s.task_id = t.id
                  WHERE t.id = ANY($1::uuid[])";
    ack_outbox = "DELETE FROM outbox WHERE id = ANY($1::int8[])";
    upsert_agent = "INSERT INTO agents (id, name, capabilities, concurrency, registered_at, last_seen,
                                       registered_by)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)
                    ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                        capabilities = excluded.capabilities, concurrency = excluded.concurrency,
                        last_seen = excluded.last_seen";
}

impl Conn {
    /// A new connection with its statements prepared; a failure leaves the store
    /// [`StoreError::Unavailable`] for this batch.
    pub(super) async fn connect(
        config: &tokio_postgres::Config,
        location: &str,
    ) -> Result<Conn, StoreError> {
        let failed = |e: tokio_postgres::Error| StoreError::Unavailable {
            detail: format!(
                "cannot connect to PostgreSQL at {location}: {}",
                describe(&e)
            ),
        };
        let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the client then reports
            // the closed connection on its next use.
            let _ = connection.await;
        });
        let s = Stmts::prepare(&client).await.map_err(failed)?;
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(failed)?;
        Ok(Conn {
            client,
            s,
            shard: pid.rem_euclid(COUNT_SHARDS),
        })
    }
}
