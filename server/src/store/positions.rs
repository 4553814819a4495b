//! Avatar positions, persisted periodically by the world and restored on the next login.

use sqlx::Row;
use uuid::Uuid;

use super::{Db, StoreResult, on_pool};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedPosition {
    pub user_id: Uuid,
    pub x: i32,
    pub y: i32,
    pub radius: u32,
}

impl Db {
    pub async fn load_position(&self, user_id: Uuid) -> StoreResult<Option<SavedPosition>> {
        on_pool!(self, |p| {
            let row = sqlx::query("SELECT x, y, radius FROM positions WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(p)
                .await?;
            match row {
                None => Ok(None),
                Some(r) => {
                    let radius: i32 = r.try_get("radius")?;
                    Ok(Some(SavedPosition {
                        user_id,
                        x: r.try_get("x")?,
                        y: r.try_get("y")?,
                        radius: u32::try_from(radius).unwrap_or(landworld_shared::limits::DEFAULT_RADIUS),
                    }))
                }
            }
        })
    }

    /// Upserts a batch of positions in one transaction.
    pub async fn save_positions(&self, batch: &[SavedPosition], at_ms: i64) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            for pos in batch {
                sqlx::query(
                    "INSERT INTO positions (user_id, x, y, radius, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (user_id) DO UPDATE SET x = excluded.x, y = excluded.y, \
                     radius = excluded.radius, updated_at = excluded.updated_at",
                )
                .bind(pos.user_id)
                .bind(pos.x)
                .bind(pos.y)
                .bind(i32::try_from(pos.radius).unwrap_or(i32::MAX))
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
