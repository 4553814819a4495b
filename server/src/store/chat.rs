//! Chat storage: sessions (land, private, group, proximity), members, read markers, and messages
//! stored as ciphertext only (see [`crate::chat::crypto`]).
//!
//! Messages are written by the chat writer in batches (on SQLite through its own connection,
//! [`super::message_writer`]; on PostgreSQL [`Db::insert_message_batch`]): one
//! transaction holds the rows of many senders, the proximity recipients, and each touched
//! session's new `last_seq`, so a crash leaves either all of a batch or none of it.

use sqlx::Row;
use uuid::Uuid;

use super::{Db, StoreError, StoreResult, fixed_chunks, on_pool};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub id: Uuid,
    pub kind: String,
    pub name: String,
    pub land_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    pub created_at: i64,
    pub last_seq: i64,
}

/// A stored message (content still sealed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRow {
    pub id: Uuid,
    pub session_id: Uuid,
    pub seq: i64,
    pub sender_id: Uuid,
    pub sender_username: String,
    pub client_msg_id: Option<String>,
    pub key_id: i32,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub pos_x: Option<i32>,
    pub pos_y: Option<i32>,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
}

/// A message to insert.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub id: Uuid,
    pub session_id: Uuid,
    pub seq: i64,
    pub sender_id: Uuid,
    pub client_msg_id: Option<String>,
    pub key_id: i32,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub pos: Option<(i32, i32)>,
    pub created_at: i64,
    /// Proximity messages: who may read it in history (the sender included).
    pub recipients: Vec<Uuid>,
}

/// A message found by its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingMessage {
    pub sender_id: Uuid,
    pub client_msg_id: String,
    pub id: Uuid,
    pub session_id: Uuid,
    pub seq: i64,
    pub created_at: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatTotals {
    pub sessions: i64,
    pub messages: i64,
    pub messages_today: i64,
}

const SESSION_COLUMNS: &str = "id, kind, name, land_id, created_by, created_at, last_seq";
const MESSAGE_COLUMNS: &str = "m.id, m.session_id, m.seq, m.sender_id, u.username AS sender_username, \
     m.client_msg_id, m.key_id, m.nonce, m.ciphertext, m.pos_x, m.pos_y, m.created_at, m.deleted_at";
macro_rules! session_from_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<SessionRow, sqlx::Error>(SessionRow {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            name: row.try_get("name")?,
            land_id: row.try_get("land_id")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            last_seq: row.try_get("last_seq")?,
        })
    }};
}

macro_rules! message_from_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<MessageRow, sqlx::Error>(MessageRow {
            id: row.try_get("id")?,
            session_id: row.try_get("session_id")?,
            seq: row.try_get("seq")?,
            sender_id: row.try_get("sender_id")?,
            sender_username: row.try_get("sender_username")?,
            client_msg_id: row.try_get("client_msg_id")?,
            key_id: row.try_get("key_id")?,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
            pos_x: row.try_get("pos_x")?,
            pos_y: row.try_get("pos_y")?,
            created_at: row.try_get("created_at")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }};
}

/// The key of the private session between two users, the same whichever asks.
pub fn pair_key(a: Uuid, b: Uuid) -> String {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    format!("{lo}:{hi}")
}

/// History query bounds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Page {
    pub after_seq: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: i64,
}

impl Db {
    async fn insert_session(&self, row: &SessionRow, pair: Option<&str>, members: &[Uuid]) -> StoreResult<()> {
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO chat_sessions (id, kind, name, land_id, pair_key, created_by, created_at, last_seq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
            )
            .bind(row.id)
            .bind(&row.kind)
            .bind(&row.name)
            .bind(row.land_id)
            .bind(pair)
            .bind(row.created_by)
            .bind(row.created_at)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_insert)?;
            for m in members {
                sqlx::query("INSERT INTO chat_members (session_id, user_id, added_at) VALUES ($1, $2, $3)")
                    .bind(row.id)
                    .bind(m)
                    .bind(row.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_insert)?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn session_where(&self, clause: &str, key: SessionKey<'_>) -> StoreResult<Option<SessionRow>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE {clause}"));
        on_pool!(self, |p| {
            let q = sqlx::query(sql);
            let q = match key {
                SessionKey::Id(id) => q.bind(id),
                SessionKey::Text(t) => q.bind(t.to_string()),
                SessionKey::None => q,
            };
            let row = q.fetch_optional(p).await?;
            Ok(row.map(|r| session_from_row!(r)).transpose()?)
        })
    }

    pub async fn session_by_id(&self, id: Uuid) -> StoreResult<Option<SessionRow>> {
        self.session_where("id = $1", SessionKey::Id(id)).await
    }

    pub async fn session_by_land(&self, land_id: Uuid) -> StoreResult<Option<SessionRow>> {
        self.session_where("land_id = $1", SessionKey::Id(land_id)).await
    }

    /// The land's session, created on first use.
    pub async fn ensure_land_session(&self, land_id: Uuid, name: &str, now: i64) -> StoreResult<SessionRow> {
        if let Some(s) = self.session_by_land(land_id).await? {
            return Ok(s);
        }
        let row = SessionRow {
            id: Uuid::new_v4(),
            kind: "land".into(),
            name: name.to_string(),
            land_id: Some(land_id),
            created_by: None,
            created_at: now,
            last_seq: 0,
        };
        match self.insert_session(&row, None, &[]).await {
            Ok(()) => Ok(row),
            Err(StoreError::Conflict) => self.session_by_land(land_id).await?.ok_or(StoreError::NotFound),
            Err(e) => Err(e),
        }
    }

    /// The one proximity session, created on first use.
    pub async fn ensure_proximity_session(&self, now: i64) -> StoreResult<SessionRow> {
        if let Some(s) = self.session_where("kind = 'proximity'", SessionKey::None).await? {
            return Ok(s);
        }
        let row = SessionRow {
            id: Uuid::new_v4(),
            kind: "proximity".into(),
            name: "Nearby".into(),
            land_id: None,
            created_by: None,
            created_at: now,
            last_seq: 0,
        };
        match self.insert_session(&row, None, &[]).await {
            Ok(()) => Ok(row),
            Err(StoreError::Conflict) => {
                self.session_where("kind = 'proximity'", SessionKey::None).await?.ok_or(StoreError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// The private session between `a` and `b`, created once.
    pub async fn ensure_private_session(&self, a: Uuid, b: Uuid, name: &str, now: i64) -> StoreResult<SessionRow> {
        let key = pair_key(a, b);
        if let Some(s) = self.session_where("pair_key = $1", SessionKey::Text(&key)).await? {
            return Ok(s);
        }
        let row = SessionRow {
            id: Uuid::new_v4(),
            kind: "private".into(),
            name: name.to_string(),
            land_id: None,
            created_by: Some(a),
            created_at: now,
            last_seq: 0,
        };
        match self.insert_session(&row, Some(&key), &[a, b]).await {
            Ok(()) => Ok(row),
            Err(StoreError::Conflict) => {
                self.session_where("pair_key = $1", SessionKey::Text(&key)).await?.ok_or(StoreError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn create_group(&self, name: &str, creator: Uuid, members: &[Uuid], now: i64) -> StoreResult<SessionRow> {
        let row = SessionRow {
            id: Uuid::new_v4(),
            kind: "group".into(),
            name: name.to_string(),
            land_id: None,
            created_by: Some(creator),
            created_at: now,
            last_seq: 0,
        };
        self.insert_session(&row, None, members).await?;
        Ok(row)
    }

    /// Members of a private or group session with their usernames.
    pub async fn session_members(&self, session_id: Uuid) -> StoreResult<Vec<(Uuid, String)>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT u.id, u.username FROM chat_members m JOIN users u ON u.id = m.user_id \
                 WHERE m.session_id = $1 ORDER BY m.added_at, u.username",
            )
            .bind(session_id)
            .fetch_all(p)
            .await?;
            rows.into_iter()
                .map(|r| Ok((r.try_get("id")?, r.try_get("username")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(Into::into)
        })
    }

    /// Adds a member; true when newly added.
    pub async fn add_member(&self, session_id: Uuid, user_id: Uuid, now: i64) -> StoreResult<bool> {
        on_pool!(self, |p| {
            let done = sqlx::query(
                "INSERT INTO chat_members (session_id, user_id, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (session_id, user_id) DO NOTHING",
            )
            .bind(session_id)
            .bind(user_id)
            .bind(now)
            .execute(p)
            .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Removes a member; true when they were one.
    pub async fn remove_member(&self, session_id: Uuid, user_id: Uuid) -> StoreResult<bool> {
        on_pool!(self, |p| {
            let done = sqlx::query("DELETE FROM chat_members WHERE session_id = $1 AND user_id = $2")
                .bind(session_id)
                .bind(user_id)
                .execute(p)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Private and group sessions the user belongs to.
    pub async fn member_sessions(&self, user_id: Uuid) -> StoreResult<Vec<SessionRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM chat_sessions s JOIN chat_members m ON m.session_id = s.id \
             WHERE m.user_id = $1 ORDER BY s.created_at",
            SESSION_COLUMNS.split(", ").map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ")
        ));
        on_pool!(self, |p| {
            let rows = sqlx::query(sql).bind(user_id).fetch_all(p).await?;
            rows.into_iter().map(|r| session_from_row!(r)).collect::<Result<Vec<_>, _>>().map_err(Into::into)
        })
    }

    /// Every session's id, kind and last seq (loaded once at start).
    pub async fn all_last_seqs(&self) -> StoreResult<Vec<(Uuid, i64)>> {
        on_pool!(self, |p| {
            let rows = sqlx::query("SELECT id, last_seq FROM chat_sessions").fetch_all(p).await?;
            rows.into_iter()
                .map(|r| Ok((r.try_get("id")?, r.try_get("last_seq")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(Into::into)
        })
    }

    pub async fn last_seq(&self, session_id: Uuid) -> StoreResult<i64> {
        Ok(self.session_by_id(session_id).await?.map_or(0, |s| s.last_seq))
    }

    pub async fn read_seq(&self, session_id: Uuid, user_id: Uuid) -> StoreResult<i64> {
        on_pool!(self, |p| {
            let row = sqlx::query("SELECT seq FROM chat_reads WHERE session_id = $1 AND user_id = $2")
                .bind(session_id)
                .bind(user_id)
                .fetch_optional(p)
                .await?;
            Ok(match row {
                Some(r) => r.try_get("seq")?,
                None => 0,
            })
        })
    }

    /// Moves the read marker forward (never back). Returns the stored marker.
    pub async fn mark_read(&self, session_id: Uuid, user_id: Uuid, seq: i64) -> StoreResult<i64> {
        on_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO chat_reads (session_id, user_id, seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (session_id, user_id) DO UPDATE SET seq = \
                 CASE WHEN excluded.seq > chat_reads.seq THEN excluded.seq ELSE chat_reads.seq END",
            )
            .bind(session_id)
            .bind(user_id)
            .bind(seq)
            .execute(p)
            .await?;
        });
        self.read_seq(session_id, user_id).await
    }

    /// Unread proximity messages addressed to the user after `seq`.
    pub async fn unread_proximity(&self, session_id: Uuid, user_id: Uuid, after: i64) -> StoreResult<i64> {
        on_pool!(self, |p| {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM message_recipients r JOIN messages m ON m.id = r.message_id \
                 WHERE r.user_id = $1 AND m.session_id = $2 AND m.seq > $3 AND m.deleted_at IS NULL \
                 AND m.sender_id <> $1",
            )
            .bind(user_id)
            .bind(session_id)
            .bind(after)
            .fetch_one(p)
            .await?;
            Ok(row.try_get("n")?)
        })
    }

    /// Session, seq and creation time of these messages (those that exist).
    pub async fn message_heads(&self, ids: &[Uuid]) -> StoreResult<Vec<(Uuid, Uuid, i64, i64)>> {
        let mut found = Vec::new();
        for chunk in fixed_chunks(ids) {
            on_pool!(self, |p| {
                let mut qb =
                    sqlx::QueryBuilder::new("SELECT id, session_id, seq, created_at FROM messages WHERE id IN (");
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                for r in qb.build().fetch_all(p).await? {
                    found.push((
                        r.try_get("id")?,
                        r.try_get("session_id")?,
                        r.try_get("seq")?,
                        r.try_get("created_at")?,
                    ));
                }
            });
        }
        Ok(found)
    }

    /// Keys of a session's messages after `after_seq`, oldest first, at most `limit` (rebuilding
    /// the key store: see [`crate::chat::keys`]).
    pub async fn message_keys_after(
        &self,
        session_id: Uuid,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<ExistingMessage>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT sender_id, client_msg_id, id, session_id, seq, created_at FROM messages \
                 WHERE session_id = $1 AND seq > $2 AND client_msg_id IS NOT NULL ORDER BY seq LIMIT $3",
            )
            .bind(session_id)
            .bind(after_seq)
            .bind(limit)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(ExistingMessage {
                        sender_id: r.try_get("sender_id")?,
                        client_msg_id: r.try_get("client_msg_id")?,
                        id: r.try_get("id")?,
                        session_id: r.try_get("session_id")?,
                        seq: r.try_get("seq")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(Into::into)
        })
    }

    /// Inserts a batch of messages, their proximity recipients and the sessions' new last seqs
    /// in one transaction.
    pub async fn insert_message_batch(&self, messages: &[NewMessage], last_seqs: &[(Uuid, i64)]) -> StoreResult<()> {
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            for chunk in fixed_chunks(messages) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO messages (id, session_id, seq, sender_id, client_msg_id, key_id, nonce, ciphertext, \
                     pos_x, pos_y, created_at) ",
                );
                qb.push_values(chunk, |mut b, m| {
                    b.push_bind(m.id)
                        .push_bind(m.session_id)
                        .push_bind(m.seq)
                        .push_bind(m.sender_id)
                        .push_bind(m.client_msg_id.as_deref())
                        .push_bind(m.key_id)
                        .push_bind(&m.nonce[..])
                        .push_bind(&m.ciphertext[..])
                        .push_bind(m.pos.map(|p| p.0))
                        .push_bind(m.pos.map(|p| p.1))
                        .push_bind(m.created_at);
                });
                qb.build().execute(&mut *tx).await.map_err(StoreError::from_insert)?;
            }
            let recipients: Vec<(Uuid, Uuid)> =
                messages.iter().flat_map(|m| m.recipients.iter().map(move |u| (m.id, *u))).collect();
            for chunk in fixed_chunks(&recipients) {
                let mut qb = sqlx::QueryBuilder::new("INSERT INTO message_recipients (message_id, user_id) ");
                qb.push_values(chunk, |mut b, (m, u)| {
                    b.push_bind(*m).push_bind(*u);
                });
                qb.build().execute(&mut *tx).await.map_err(StoreError::from_insert)?;
            }
            for (session, seq) in last_seqs {
                sqlx::query("UPDATE chat_sessions SET last_seq = $1 WHERE id = $2 AND last_seq < $1")
                    .bind(seq)
                    .bind(session)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// A page of history in ascending seq. For proximity sessions pass `recipient` to see only the
    /// messages that user received. Returns up to `limit` rows and whether more exist in the
    /// paging direction.
    pub async fn history(
        &self,
        session_id: Uuid,
        recipient: Option<Uuid>,
        page: Page,
    ) -> StoreResult<(Vec<MessageRow>, bool)> {
        let limit = page.limit.clamp(1, 1000);
        // Without `after_seq` the page ends at `before_seq` (or the newest message): read newest
        // first, then reverse. With `after_seq` it starts right after it.
        let backwards = page.after_seq.is_none();
        let mut sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.sender_id WHERE m.session_id = $1"
        );
        if recipient.is_some() {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM message_recipients r WHERE r.message_id = m.id AND r.user_id = $2)",
            );
        } else {
            sql.push_str(" AND $2 IS NULL");
        }
        sql.push_str(" AND m.seq > $3 AND m.seq < $4");
        sql.push_str(if backwards { " ORDER BY m.seq DESC" } else { " ORDER BY m.seq ASC" });
        sql.push_str(" LIMIT $5");
        let sql = sqlx::AssertSqlSafe(sql);
        let after = page.after_seq.unwrap_or(0);
        let before = page.before_seq.unwrap_or(i64::MAX);
        let mut rows = on_pool!(self, |p| {
            let rows = sqlx::query(sql)
                .bind(session_id)
                .bind(recipient)
                .bind(after)
                .bind(before)
                .bind(limit + 1)
                .fetch_all(p)
                .await?;
            rows.into_iter().map(|r| message_from_row!(r)).collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        if backwards {
            rows.reverse();
        }
        Ok((rows, has_more))
    }

    pub async fn message_by_id(&self, id: Uuid) -> StoreResult<Option<MessageRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.sender_id WHERE m.id = $1"
        ));
        on_pool!(self, |p| {
            let row = sqlx::query(sql).bind(id).fetch_optional(p).await?;
            Ok(row.map(|r| message_from_row!(r)).transpose()?)
        })
    }

    pub async fn is_recipient(&self, message_id: Uuid, user_id: Uuid) -> StoreResult<bool> {
        on_pool!(self, |p| {
            let row = sqlx::query("SELECT 1 AS one FROM message_recipients WHERE message_id = $1 AND user_id = $2")
                .bind(message_id)
                .bind(user_id)
                .fetch_optional(p)
                .await?;
            Ok(row.is_some())
        })
    }

    /// Soft delete: marks the row deleted and drops its ciphertext. False if already deleted.
    pub async fn soft_delete_message(&self, id: Uuid, now: i64) -> StoreResult<bool> {
        on_pool!(self, |p| {
            let done = sqlx::query(
                "UPDATE messages SET deleted_at = $1, ciphertext = $2, nonce = $2 WHERE id = $3 AND deleted_at IS NULL",
            )
            .bind(now)
            .bind(Vec::<u8>::new())
            .bind(id)
            .execute(p)
            .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Sets a message's creation time (operations and tests: ageing rows for retention).
    pub async fn backdate_message(&self, id: Uuid, created_at: i64) -> StoreResult<()> {
        on_pool!(self, |p| {
            sqlx::query("UPDATE messages SET created_at = $1 WHERE id = $2")
                .bind(created_at)
                .bind(id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Deletes messages created before `cutoff` (Unix ms). Returns how many.
    pub async fn purge_messages_before(&self, cutoff: i64) -> StoreResult<u64> {
        on_pool!(self, |p| {
            let done = sqlx::query("DELETE FROM messages WHERE created_at < $1").bind(cutoff).execute(p).await?;
            Ok(done.rows_affected())
        })
    }

    pub async fn chat_totals(&self, today_start: i64) -> StoreResult<ChatTotals> {
        on_pool!(self, |p| {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM chat_sessions) AS sessions, \
                 (SELECT COUNT(*) FROM messages WHERE deleted_at IS NULL) AS messages, \
                 (SELECT COUNT(*) FROM messages WHERE deleted_at IS NULL AND created_at >= $1) AS today",
            )
            .bind(today_start)
            .fetch_one(p)
            .await?;
            Ok(ChatTotals {
                sessions: row.try_get("sessions")?,
                messages: row.try_get("messages")?,
                messages_today: row.try_get("today")?,
            })
        })
    }

    /// Rows sealed with a key other than `key_id`, oldest first (for key rotation).
    /// `skip` rows are passed over (ones that failed to re-seal).
    pub async fn messages_not_sealed_with(&self, key_id: i32, limit: i64, skip: i64) -> StoreResult<Vec<MessageRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.sender_id \
             WHERE m.key_id <> $1 AND m.deleted_at IS NULL ORDER BY m.created_at, m.id LIMIT $2 OFFSET $3"
        ));
        on_pool!(self, |p| {
            let rows = sqlx::query(sql).bind(key_id).bind(limit).bind(skip).fetch_all(p).await?;
            rows.into_iter().map(|r| message_from_row!(r)).collect::<Result<Vec<_>, sqlx::Error>>().map_err(Into::into)
        })
    }

    /// Replaces rows' sealed content (key rotation), in one transaction.
    pub async fn reseal_messages(&self, rows: &[(Uuid, i32, Vec<u8>, Vec<u8>)]) -> StoreResult<()> {
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            for (id, key_id, nonce, ciphertext) in rows {
                sqlx::query("UPDATE messages SET key_id = $1, nonce = $2, ciphertext = $3 WHERE id = $4")
                    .bind(key_id)
                    .bind(nonce)
                    .bind(ciphertext)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

impl Page {
    /// The newest `limit` messages.
    pub fn latest(limit: i64) -> Self {
        Self { after_seq: None, before_seq: None, limit }
    }
}

enum SessionKey<'a> {
    Id(Uuid),
    Text(&'a str),
    None,
}
