//! Lands: rectangular parcels of the map, seeded from the map's `lands` layer on first start.

use sqlx::Row;
use uuid::Uuid;

use super::{Db, StoreError, StoreResult, on_pool};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LandRow {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
    pub owner_id: Option<Uuid>,
    pub created_at: i64,
}

const COLUMNS: &str = "id, name, description, x, y, width, height, owner_id, created_at";

macro_rules! land_from_row {
    ($row:expr) => {{
        let row = $row;
        Ok::<LandRow, sqlx::Error>(LandRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            x: row.try_get("x")?,
            y: row.try_get("y")?,
            width: row.try_get("width")?,
            height: row.try_get("height")?,
            owner_id: row.try_get("owner_id")?,
            created_at: row.try_get("created_at")?,
        })
    }};
}

macro_rules! insert_land_query {
    ($land:expr) => {{
        let land = $land;
        sqlx::query(
            "INSERT INTO lands (id, name, description, x, y, width, height, owner_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(land.id)
        .bind(&land.name)
        .bind(&land.description)
        .bind(land.x)
        .bind(land.y)
        .bind(land.width)
        .bind(land.height)
        .bind(land.owner_id)
        .bind(land.created_at)
    }};
}

impl Db {
    pub async fn count_lands(&self) -> StoreResult<i64> {
        Ok(on_pool!(self, |p| sqlx::query_scalar("SELECT COUNT(*) FROM lands").fetch_one(p).await?))
    }

    /// Inserts every land in one transaction (seeding from the map).
    pub async fn insert_lands(&self, lands: &[LandRow]) -> StoreResult<()> {
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            for land in lands {
                insert_land_query!(land).execute(&mut *tx).await.map_err(StoreError::from_insert)?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn insert_land(&self, land: &LandRow) -> StoreResult<()> {
        self.insert_lands(std::slice::from_ref(land)).await
    }

    pub async fn list_lands(&self) -> StoreResult<Vec<LandRow>> {
        on_pool!(self, |p| {
            let rows =
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM lands ORDER BY created_at, name")))
                    .fetch_all(p)
                    .await?;
            Ok(rows.into_iter().map(|r| land_from_row!(r)).collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub async fn land_by_id(&self, id: Uuid) -> StoreResult<Option<LandRow>> {
        on_pool!(self, |p| {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM lands WHERE id = $1")))
                .bind(id)
                .fetch_optional(p)
                .await?;
            Ok(row.map(|r| land_from_row!(r)).transpose()?)
        })
    }

    /// Overwrites a land's mutable fields.
    pub async fn update_land(&self, land: &LandRow) -> StoreResult<()> {
        let done = on_pool!(self, |p| {
            sqlx::query(
                "UPDATE lands SET name = $1, description = $2, x = $3, y = $4, width = $5, height = $6, owner_id = $7 \
                 WHERE id = $8",
            )
            .bind(&land.name)
            .bind(&land.description)
            .bind(land.x)
            .bind(land.y)
            .bind(land.width)
            .bind(land.height)
            .bind(land.owner_id)
            .bind(land.id)
            .execute(p)
            .await?
            .rows_affected()
        });
        if done == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}
