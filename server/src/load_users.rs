//! `landworld-server load-users`: bulk load-test accounts and their access tokens.
//!
//! Logging 19,000 users in over REST would cost 19,000 argon2id verifications (~50 ms each on a
//! small machine), so this command talks to the database and the signing key directly:
//!
//! - accounts are named `<prefix>0000`, `<prefix>0001`, … (at least four digits);
//! - **the password is hashed once** with argon2id and that one PHC string (one salt) is stored
//!   for every account created in the run. That is fine for throw-away load-test accounts and
//!   must never be done for real ones: equal hashes reveal equal passwords;
//! - new accounts are inserted in batched transactions; names that already exist are reused as
//!   they are (their password and role are not touched), so rerunning is idempotent;
//! - tokens are signed with the server's own key ([`TokenKeys::load_or_create`] on the same data
//!   directory or `jwt_secret` as `serve`) and the configured lifetime, so a server started with
//!   the same configuration accepts them;
//! - `--scatter` also saves a random walkable position per account (deterministic by index),
//!   so that the avatars spawn spread over the map rather than on the few spawn points.
//!
//! The output is one JSON object per line: `{"user_id", "username", "token"}`, in index order.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use landworld_shared::limits;
use landworld_shared::world::{TilePos, WorldMap};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::{self, TokenKeys};
use crate::config::{Config, LoadUsersArgs};
use crate::store::positions::SavedPosition;
use crate::store::users::UserRow;
use crate::store::{Db, now_ms};

/// Accounts inserted per transaction.
const BATCH: usize = 1000;

/// One line of the output file.
#[derive(Debug, Serialize)]
pub struct TokenLine<'a> {
    pub user_id: Uuid,
    pub username: &'a str,
    pub token: &'a str,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadUsersSummary {
    pub created: u64,
    pub reused: u64,
    pub written: u64,
}

/// The username of account `index`.
pub fn username(prefix: &str, index: u32) -> String {
    format!("{prefix}{index:04}")
}

/// Creates the missing accounts and writes the tokens file. `config` is the resolved
/// configuration of the same flags `serve` takes (data directory, database, key, token lifetime).
pub async fn run(config: &Config, db: &Db, args: &LoadUsersArgs) -> anyhow::Result<LoadUsersSummary> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let last = args.count - 1;
    for name in [username(&args.prefix, 0), username(&args.prefix, last)] {
        limits::validate_username(&name).map_err(|e| anyhow::anyhow!("username {name:?}: {e}"))?;
    }
    limits::validate_password(&args.password).map_err(|e| anyhow::anyhow!("--password: {e}"))?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let keys = TokenKeys::load_or_create(config.jwt_secret.as_deref(), &config.data_dir, config.token_ttl)
        .context("loading the token signing key")?;
    let password = args.password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .context("hashing task")?
        .context("hashing the password")?;
    let map = if args.scatter {
        let path = config.world.clone();
        let map = tokio::task::spawn_blocking(move || WorldMap::load(&path))
            .await
            .context("map loading task")?
            .with_context(|| format!("loading world {}", config.world.display()))?;
        Some(map)
    } else {
        None
    };

    let mut out: Box<dyn Write> = if args.out == Path::new("-") {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        Box::new(std::io::BufWriter::new(file))
    };

    let mut summary = LoadUsersSummary { created: 0, reused: 0, written: 0 };
    let indexes: Vec<u32> = (0..args.count).collect();
    for chunk in indexes.chunks(BATCH) {
        let names: Vec<String> = chunk.iter().map(|&i| username(&args.prefix, i)).collect();
        let now = now_ms();
        let rows: Vec<UserRow> = names
            .iter()
            .map(|name| UserRow {
                id: Uuid::new_v4(),
                username: name.clone(),
                display_name: None,
                password_hash: hash.clone(),
                role: "user".to_string(),
                created_at: now,
                last_seen: None,
            })
            .collect();
        let created = db.insert_users_if_absent(&rows).await.context("inserting accounts")?;
        summary.created += created;
        summary.reused += names.len() as u64 - created;
        let found: HashMap<String, UserRow> = db
            .users_by_usernames(&names)
            .await
            .context("reading accounts back")?
            .into_iter()
            .map(|u| (u.username.to_lowercase(), u))
            .collect();
        let mut positions = Vec::new();
        for (&index, name) in chunk.iter().zip(&names) {
            let user = found
                .get(&name.to_lowercase())
                .with_context(|| format!("account {name} is missing after insertion"))?;
            let token = keys.issue(user.id, &user.username, &user.role).context("signing a token")?;
            serde_json::to_writer(&mut out, &TokenLine { user_id: user.id, username: &user.username, token: &token })?;
            out.write_all(b"\n")?;
            summary.written += 1;
            if let Some(map) = &map
                && let Some(pos) = scatter_position(map, index)
            {
                positions.push(SavedPosition { user_id: user.id, x: pos.x, y: pos.y, radius: limits::DEFAULT_RADIUS });
            }
        }
        db.save_positions(&positions, now).await.context("saving scattered positions")?;
    }
    out.flush()?;
    Ok(summary)
}

/// A walkable tile chosen pseudo-randomly (but reproducibly) from the account index.
fn scatter_position(map: &WorldMap, index: u32) -> Option<TilePos> {
    let mut state = u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED;
    for _ in 0..256 {
        let r = splitmix64(&mut state);
        let x = (r % u64::from(map.width.max(1))) as i32;
        let y = ((r >> 32) % u64::from(map.height.max(1))) as i32;
        let p = TilePos::new(x, y);
        if map.is_walkable(p) {
            return Some(p);
        }
    }
    None
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_zero_padded() {
        assert_eq!(username("lg", 7), "lg0007");
        assert_eq!(username("lg", 18_999), "lg18999");
    }

    #[test]
    fn scatter_is_walkable_and_reproducible() {
        let map = WorldMap::open(64, 64);
        let a = scatter_position(&map, 3);
        assert!(a.is_some_and(|p| map.is_walkable(p)));
        assert_eq!(a, scatter_position(&map, 3));
    }
}
