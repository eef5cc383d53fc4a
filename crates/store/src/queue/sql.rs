//! `impl_job_queue!`: the job queue's SQL written once for both backends.

/// The backend's `enqueue_in_tx` and `JobQueue` for its store: the SQL both
/// backends share. Expanded in each backend's `queue.rs` as
/// `impl_job_queue!(Store, tx: T, time: T, id_in_list: "…")`: the
/// transaction type `enqueue_in_tx` takes, how a time is stored
/// ([`StoredTime`]), and the SQL that tests `id` against the id list bound
/// as `$3` (`id_list`'s value). The names the body leaves unqualified
/// resolve in that file:
/// - `begin_write(&pool)` and the pools `self.read` and `self.worker`;
/// - the steps of a claim round: `claim_heads(&mut tx, &request, &token)`
///   (the heads, `ClaimedHeads`), `followers_of(&mut tx, &request, &heads)`
///   (the jobs behind each head, by group) and `lease(&mut tx, &request,
///   &token, &ids)`, then `release_strays(&mut tx, &ids, &token, now)`;
/// - keeping `job_heads` in step, in this order within a write:
///   `lock_groups_of(&mut tx, &ids)` before changing those jobs,
///   `sync_heads_of(&mut tx, &ids)` after their visibility changed,
///   `refresh_heads(&mut tx, &Groups)` after jobs left or rejoined their
///   groups, `lock_dead_groups(&mut tx, queue, &ids)` before a redrive;
/// - `release_leased` and `delete_leased(&mut tx, &ids, &tokens, …)`: the
///   listed (id, lease token) pairs whose lease still holds, released or
///   deleted;
/// - `id_list(&[JobId])`: a list of ids as the backend binds it.
macro_rules! impl_job_queue {
    ($store:ty, tx: $tx:ty, time: $time:ty, id_in_list: $id_in_list:literal) => {
        /// Enqueues `job` inside the caller's transaction, so the job exists
        /// exactly when the business write that needs it commits. The job
        /// becomes its group's head when the group has none, or when it is
        /// older than the head (on PostgreSQL, an enqueue that commits late
        /// with an earlier sequence number; SQLite's one writer never does);
        /// on PostgreSQL the upsert locks the head row either way, which is
        /// what orders this enqueue against a completion that is about to
        /// remove the group's last job.
        pub(crate) async fn enqueue_in_tx(tx: &mut $tx, job: &$crate::NewJob) -> $crate::Result<$crate::JobId> {
            use $crate::queue::StoredTime as _;
            // A duplicate's holder may complete between our insert and our
            // read (not on SQLite, whose write lock is held); a second attempt
            // then inserts. Two rounds settle any such race.
            for _ in 0..2 {
                let inserted: Option<(String, i64)> = sqlx::query_as(
                    "INSERT INTO jobs (id, queue, group_key, payload, dedup_key, state, visible_at, max_receives, \
                       visibility_timeout_ms, created_at) \
                     VALUES ($1, $2, $3, $4, $5, 'ready', $6, $7, $8, $9) \
                     ON CONFLICT (queue, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING RETURNING id, seq",
                )
                .bind(job.id.as_str())
                .bind(&job.queue)
                .bind(&job.group_key)
                .bind(job.payload_text())
                .bind(&job.dedup_key)
                .bind(<$time>::store(job.first_visible_at()))
                .bind(job.max_receives_column())
                .bind(job.visibility_timeout_ms())
                .bind(<$time>::store(job.now))
                .fetch_optional(&mut **tx)
                .await?;
                if let Some((id, seq)) = inserted {
                    sqlx::query(
                        "INSERT INTO job_heads (queue, group_key, seq, job_id, visible_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (queue, group_key) DO UPDATE \
                           SET seq = excluded.seq, job_id = excluded.job_id, visible_at = excluded.visible_at \
                         WHERE excluded.seq < job_heads.seq",
                    )
                    .bind(&job.queue)
                    .bind(&job.group_key)
                    .bind(seq)
                    .bind(&id)
                    .bind(<$time>::store(job.first_visible_at()))
                    .execute(&mut **tx)
                    .await?;
                    return Ok($crate::JobId::from_trusted(id));
                }
                let existing: Option<String> =
                    sqlx::query_scalar("SELECT id FROM jobs WHERE queue = $1 AND dedup_key = $2")
                        .bind(&job.queue)
                        .bind(&job.dedup_key)
                        .fetch_optional(&mut **tx)
                        .await?;
                if let Some(id) = existing {
                    return Ok($crate::JobId::from_trusted(id));
                }
            }
            Err($crate::StoreError::Conflict(format!(
                "dedup key {:?} of queue {} is held by a job this transaction cannot see",
                job.dedup_key, job.queue
            )))
        }

        /// Records `error` on a job `lease` still owns, inside the caller's
        /// transaction: ready again at `retry_at`, or dead-lettered when its
        /// receives are used up, or at once when `retry_at` is `None` (a
        /// failure that no retry can mend). Lets a business write and the
        /// job's fate commit together (a subscription's last failed charge
        /// and its move to `past_due`).
        pub(crate) async fn fail_in_tx(
            tx: &mut $tx,
            job: &$crate::JobId,
            lease: &$crate::LeaseToken,
            error: &str,
            retry_at: Option<chrono::DateTime<chrono::Utc>>,
        ) -> $crate::Result<$crate::FailOutcome> {
            use $crate::queue::StoredTime as _;
            lock_groups_of(tx, &[job.as_str()]).await?;
            // A dead job keeps its lease end as `visible_at`: roughly when it died.
            let row: Option<(String, $time, String, String)> = sqlx::query_as(
                "UPDATE jobs SET \
                   state = CASE WHEN $5 OR receive_count >= max_receives THEN 'dead' ELSE 'ready' END, \
                   visible_at = CASE WHEN $5 OR receive_count >= max_receives THEN visible_at ELSE $4 END, \
                   last_error = $3, lease_token = NULL \
                 WHERE id = $1 AND lease_token = $2 AND state = 'in_flight' \
                 RETURNING state, visible_at, queue, group_key",
            )
            .bind(job.as_str())
            .bind(lease.as_str())
            .bind(error)
            .bind(retry_at.map(<$time>::store))
            .bind(retry_at.is_none())
            .fetch_optional(&mut **tx)
            .await?;
            // Dead: the next job heads the group. Retrying: the head waits for its retry time.
            if let Some((_, _, queue, group)) = &row {
                let groups = $crate::queue::Groups::from_rows(vec![(queue.clone(), group.clone())]);
                refresh_heads(tx, &groups).await?;
            }
            let Some((state, visible_at, _, _)) = row else {
                return Ok($crate::FailOutcome::LeaseLost);
            };
            Ok(match $crate::JobState::parse(&state)? {
                $crate::JobState::Dead => $crate::FailOutcome::DeadLettered,
                _ => $crate::FailOutcome::Retrying {
                    visible_at: visible_at.load()?,
                },
            })
        }

        /// One round of a claim (`claim_in_rounds`): the heads, the jobs
        /// right behind them, their lease in one statement; returns the runs
        /// and how many heads the round dead-lettered.
        async fn claim_round(
            tx: &mut $tx,
            request: &$crate::queue::ClaimRequest<'_>,
        ) -> $crate::Result<(Vec<Vec<$crate::ClaimedJob>>, usize)> {
            let token = request.token;
            let $crate::queue::ClaimedHeads {
                heads,
                mut leased,
                dead_lettered,
            } = claim_heads(tx, request, token).await?;
            let mut expected: std::collections::HashMap<String, Vec<String>> = heads
                .iter()
                .map(|head| (head.group_key.clone(), vec![head.job_id.clone()]))
                .collect();
            if request.run_length > 1 && !heads.is_empty() {
                for (group, followers) in followers_of(tx, request, &heads).await? {
                    if let Some(run) = expected.get_mut(&group) {
                        run.extend($crate::queue::run_prefix(followers));
                    }
                }
            }
            // Lease what the heads' claim did not.
            let taken: std::collections::HashSet<&str> = leased.iter().map(|job| job.id.as_str()).collect();
            let ids: Vec<&str> = expected
                .values()
                .flatten()
                .map(String::as_str)
                .filter(|id| !taken.contains(id))
                .collect();
            if !ids.is_empty() {
                let more = lease(tx, request, token, &ids).await?;
                leased.extend(more);
            }
            let order: Vec<String> = heads.into_iter().map(|head| head.group_key).collect();
            let (runs, strays) = $crate::queue::into_runs(&order, &expected, leased, token);
            if !strays.is_empty() {
                release_strays(tx, &strays, token, request.now).await?;
            }
            // The leased heads are claimable again when their leases end.
            let head_ids: Vec<&str> = expected
                .values()
                .filter_map(|run| run.first())
                .map(String::as_str)
                .collect();
            sync_heads_of(tx, &head_ids).await?;
            Ok((runs, dead_lettered))
        }

        #[async_trait::async_trait]
        impl $crate::JobQueue for $store {
            async fn enqueue(&self, job: &$crate::NewJob) -> $crate::Result<$crate::JobId> {
                let mut tx = begin_write(&self.worker).await?;
                let id = enqueue_in_tx(&mut tx, job).await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn claim_runs_as(
                &self,
                queue: &str,
                worker_id: &str,
                groups: u32,
                run_length: u32,
                token: &$crate::LeaseToken,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<Vec<$crate::ClaimedJob>>> {
                $crate::queue::claim_in_rounds(
                    queue,
                    worker_id,
                    groups,
                    run_length,
                    token,
                    now,
                    |request| async move {
                        let mut tx = begin_write(&self.worker).await?;
                        let round = claim_round(&mut tx, &request).await?;
                        tx.commit().await?;
                        Ok(round)
                    },
                )
                .await
            }

            async fn release(
                &self,
                jobs: &[($crate::JobId, $crate::LeaseToken)],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                if jobs.is_empty() {
                    return Ok(0);
                }
                let (ids, tokens) = $crate::queue::lease_pairs(jobs);
                let mut tx = begin_write(&self.worker).await?;
                lock_groups_of(&mut tx, &ids).await?;
                let released = release_leased(&mut tx, &ids, &tokens, now).await?;
                sync_heads_of(&mut tx, &ids).await?;
                tx.commit().await?;
                Ok(released)
            }

            async fn release_claim(
                &self,
                queue: &str,
                token: &$crate::LeaseToken,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                // Read first, then released as `release` does, which checks
                // each lease again under the groups' locks.
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM jobs WHERE queue = $1 AND state = 'in_flight' AND lease_token = $2",
                )
                .bind(queue)
                .bind(token.as_str())
                .fetch_all(&self.worker)
                .await?;
                let leases: Vec<($crate::JobId, $crate::LeaseToken)> = ids
                    .into_iter()
                    .map(|id| ($crate::JobId::from_trusted(id), token.clone()))
                    .collect();
                $crate::JobQueue::release(self, &leases, now).await
            }

            async fn heartbeat(
                &self,
                job: &$crate::JobId,
                lease: &$crate::LeaseToken,
                extend_by: std::time::Duration,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<bool> {
                use $crate::queue::StoredTime as _;
                let mut tx = begin_write(&self.worker).await?;
                lock_groups_of(&mut tx, &[job.as_str()]).await?;
                let extended = sqlx::query(
                    "UPDATE jobs SET visible_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'in_flight'",
                )
                .bind(job.as_str())
                .bind(lease.as_str())
                .bind(<$time>::store($crate::queue::lease_end(now, extend_by)))
                .execute(&mut *tx)
                .await?;
                sync_heads_of(&mut tx, &[job.as_str()]).await?;
                tx.commit().await?;
                Ok(extended.rows_affected() == 1)
            }

            async fn complete(&self, job: &$crate::JobId, lease: &$crate::LeaseToken) -> $crate::Result<bool> {
                Ok(self.complete_batch(&[(job.clone(), lease.clone())]).await? == 1)
            }

            async fn complete_batch(&self, jobs: &[($crate::JobId, $crate::LeaseToken)]) -> $crate::Result<u64> {
                if jobs.is_empty() {
                    return Ok(0);
                }
                // One transaction, so one commit, whatever the batch size. A
                // pair listed twice still removes its job once, and counts once.
                let (ids, tokens) = $crate::queue::lease_pairs(jobs);
                let mut tx = begin_write(&self.worker).await?;
                lock_groups_of(&mut tx, &ids).await?;
                let deleted = delete_leased(&mut tx, &ids, &tokens).await?;
                let removed = deleted.len() as u64;
                refresh_heads(&mut tx, &$crate::queue::Groups::from_rows(deleted)).await?;
                tx.commit().await?;
                Ok(removed)
            }

            async fn fail(
                &self,
                job: &$crate::JobId,
                lease: &$crate::LeaseToken,
                error: &str,
                retry_at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::FailOutcome> {
                let mut tx = begin_write(&self.worker).await?;
                let outcome = fail_in_tx(&mut tx, job, lease, error, Some(retry_at)).await?;
                tx.commit().await?;
                Ok(outcome)
            }

            async fn expedite(
                &self,
                queue: &str,
                dedup_key: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<bool> {
                use $crate::queue::StoredTime as _;
                let found: Option<(String, String)> =
                    sqlx::query_as("SELECT id, state FROM jobs WHERE queue = $1 AND dedup_key = $2")
                        .bind(queue)
                        .bind(dedup_key)
                        .fetch_optional(&self.worker)
                        .await?;
                let Some((id, state)) = found else {
                    return Ok(false);
                };
                let id = $crate::JobId::from_trusted(id);
                match $crate::JobState::parse(&state)? {
                    $crate::JobState::Dead => Ok(self.redrive(queue, &$crate::Redrive::Jobs(vec![id]), now).await? > 0),
                    $crate::JobState::InFlight => Ok(false),
                    $crate::JobState::Ready => {
                        let mut tx = begin_write(&self.worker).await?;
                        lock_groups_of(&mut tx, &[id.as_str()]).await?;
                        let moved = sqlx::query(
                            "UPDATE jobs SET visible_at = $2 WHERE id = $1 AND state = 'ready' AND visible_at > $2",
                        )
                        .bind(id.as_str())
                        .bind(<$time>::store(now))
                        .execute(&mut *tx)
                        .await?;
                        sync_heads_of(&mut tx, &[id.as_str()]).await?;
                        tx.commit().await?;
                        Ok(moved.rows_affected() > 0)
                    }
                }
            }

            async fn dead_letters(&self, queue: &str, limit: i64) -> $crate::Result<Vec<$crate::Job>> {
                let rows: Vec<$crate::queue::JobRow<$time>> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::queue::job_columns!(),
                    " FROM jobs WHERE queue = $1 AND state = 'dead' ORDER BY seq LIMIT $2"
                ))
                .bind(queue)
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
                rows.into_iter().map($crate::Job::try_from).collect()
            }

            async fn redrive(
                &self,
                queue: &str,
                which: &$crate::Redrive,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                use $crate::queue::StoredTime as _;
                let ids = match which {
                    $crate::Redrive::All => None,
                    $crate::Redrive::Jobs(ids) => Some(id_list(ids)?),
                };
                let mut tx = begin_write(&self.worker).await?;
                lock_dead_groups(&mut tx, queue, &ids).await?;
                let moved: Vec<(String, String)> = sqlx::query_as(concat!(
                    "UPDATE jobs SET state = 'ready', receive_count = 0, visible_at = $2, lease_token = NULL, ",
                    "  leased_by = NULL ",
                    "WHERE queue = $1 AND state = 'dead' AND ($3 IS NULL OR ",
                    $id_in_list,
                    ") RETURNING queue, group_key"
                ))
                .bind(queue)
                .bind(<$time>::store(now))
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
                let count = moved.len() as u64;
                // A redriven job keeps its sequence number, so it may head its group again.
                refresh_heads(&mut tx, &$crate::queue::Groups::from_rows(moved)).await?;
                tx.commit().await?;
                Ok(count)
            }

            async fn stats(&self, now: chrono::DateTime<chrono::Utc>) -> $crate::Result<Vec<$crate::QueueStats>> {
                use $crate::queue::StoredTime as _;
                let rows: Vec<(String, i64, i64, i64, i64, Option<$time>)> = sqlx::query_as(
                    "SELECT queue, \
                       count(*) FILTER (WHERE state <> 'dead' AND visible_at <= $1), \
                       count(*) FILTER (WHERE state = 'in_flight' AND visible_at > $1), \
                       count(*) FILTER (WHERE state = 'ready' AND visible_at > $1), \
                       count(*) FILTER (WHERE state = 'dead'), \
                       min(created_at) FILTER (WHERE state <> 'dead' AND visible_at <= $1) \
                     FROM jobs GROUP BY queue ORDER BY queue",
                )
                .bind(<$time>::store(now))
                .fetch_all(&self.read)
                .await?;
                rows.into_iter()
                    .map(|(queue, ready, in_flight, delayed, dead, oldest)| {
                        let oldest = oldest.map(<$time>::load).transpose()?;
                        Ok($crate::QueueStats {
                            queue,
                            ready,
                            in_flight,
                            delayed,
                            dead,
                            oldest_ready_age_s: oldest.map(|at| (now - at).num_seconds().max(0)),
                        })
                    })
                    .collect()
            }
        }
    };
}
pub(crate) use impl_job_queue;
