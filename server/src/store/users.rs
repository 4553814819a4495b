//! Users: accounts, roles, last-seen times.

use sqlx::Row;
use uuid::Uuid;

use super::{Db, StoreError, StoreResult, on_pool};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
    pub last_seen: Option<i64>,
}

const COLUMNS: &str = "id, username, display_name, password_hash, role, created_at, last_seen";

/// Builds a [`UserRow`] from a row of either backend (expanded per backend by `on_pool!`).
macro_rules! user_from_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<UserRow, sqlx::Error>(UserRow {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            display_name: row.try_get("display_name")?,
            password_hash: row.try_get("password_hash")?,
            role: row.try_get("role")?,
            created_at: row.try_get("created_at")?,
            last_seen: row.try_get("last_seen")?,
        })
    }};
}

impl Db {
    /// Inserts a user; a taken username (case-insensitive) is [`StoreError::Conflict`].
    pub async fn insert_user(&self, user: &UserRow) -> StoreResult<()> {
        on_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO users (id, username, display_name, password_hash, role, created_at, last_seen) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(user.id)
            .bind(&user.username)
            .bind(&user.display_name)
            .bind(&user.password_hash)
            .bind(&user.role)
            .bind(user.created_at)
            .bind(user.last_seen)
            .execute(p)
            .await
            .map_err(StoreError::from_insert)?;
        });
        Ok(())
    }

    /// Inserts users whose username (case-insensitive) is not taken yet, all in one
    /// transaction; existing usernames are skipped. Returns how many rows were inserted.
    /// Used by `load-users` to create load-test accounts in batches.
    pub async fn insert_users_if_absent(&self, users: &[UserRow]) -> StoreResult<u64> {
        if users.is_empty() {
            return Ok(0);
        }
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            let mut inserted = 0;
            for user in users {
                inserted += sqlx::query(
                    "INSERT INTO users (id, username, display_name, password_hash, role, created_at, last_seen) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(user.id)
                .bind(&user.username)
                .bind(&user.display_name)
                .bind(&user.password_hash)
                .bind(&user.role)
                .bind(user.created_at)
                .bind(user.last_seen)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok(inserted)
        })
    }

    /// The users with these usernames (case-insensitive), in no particular order; names without
    /// an account are absent from the result.
    pub async fn users_by_usernames(&self, usernames: &[String]) -> StoreResult<Vec<UserRow>> {
        let mut out = Vec::with_capacity(usernames.len());
        // Well under SQLite's and PostgreSQL's bound-parameter limits.
        for chunk in usernames.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("lower(${i})")).collect();
            let sql = format!("SELECT {COLUMNS} FROM users WHERE lower(username) IN ({})", placeholders.join(", "));
            on_pool!(self, |p| {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for name in chunk {
                    query = query.bind(name);
                }
                for row in query.fetch_all(p).await? {
                    out.push(user_from_row!(row)?);
                }
            });
        }
        Ok(out)
    }

    pub async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRow>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE lower(username) = lower($1)"));
        on_pool!(self, |p| {
            let row = sqlx::query(sql).bind(username).fetch_optional(p).await?;
            Ok(row.map(|r| user_from_row!(r)).transpose()?)
        })
    }

    pub async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<UserRow>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE id = $1"));
        on_pool!(self, |p| {
            let row = sqlx::query(sql).bind(id).fetch_optional(p).await?;
            Ok(row.map(|r| user_from_row!(r)).transpose()?)
        })
    }

    pub async fn set_user_role(&self, id: Uuid, role: &str) -> StoreResult<()> {
        let done = on_pool!(self, |p| {
            sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
                .bind(role)
                .bind(id)
                .execute(p)
                .await?
                .rows_affected()
        });
        if done == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    pub async fn set_user_password(&self, id: Uuid, password_hash: &str) -> StoreResult<()> {
        on_pool!(self, |p| {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(password_hash)
                .bind(id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    pub async fn set_last_seen(&self, id: Uuid, at_ms: i64) -> StoreResult<()> {
        on_pool!(self, |p| {
            sqlx::query("UPDATE users SET last_seen = $1 WHERE id = $2").bind(at_ms).bind(id).execute(p).await?;
        });
        Ok(())
    }
}
