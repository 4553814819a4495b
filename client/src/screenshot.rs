//! `--screenshot FILE --frames N`: once the world has loaded and the GPU has no render
//! pipelines left to compile, render `N` more frames, capture the primary window with
//! `Screenshot::primary_window()` + `save_to_disk`, wait until the PNG is on disk, then exit 0.
//! Gives up with exit code 2 after [`TIMEOUT`], or 3 at once when signing in fails for good.
//!
//! "Loaded" is the tile map spawned and, with `--server`, also: connected and welcomed, the
//! first snapshot applied, the own avatar spawned, everyone's status read, the chat sessions
//! listed and every history
//! asked for arrived (the land room's included when standing on a land) — see [`online_ready`].
//!
//! Pipelines compile asynchronously, so "N frames" alone could capture a frame drawn before
//! the tile map's shader was ready; a render-world system publishes how many pipelines are still
//! waiting, and frames only count while that is zero.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::render::render_resource::PipelineCache;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured, save_to_disk};
use bevy::render::{Render, RenderApp, RenderSystems};

use crate::game::avatars::{OwnAvatar, PresenceBook};
use crate::net::link::LinkStatus;
use crate::net::{Connection, Net};
use crate::render::tilemap::TilemapStatus;
use crate::ui::chat::ChatState;

/// Longest a screenshot run may take, from start to file.
pub const TIMEOUT: Duration = Duration::from_secs(180);

pub struct ScreenshotPlugin {
    pub path: PathBuf,
    pub frames: u32,
}

/// Pipelines still compiling, as last seen by the render world.
#[derive(Resource, Clone, Default)]
struct WaitingPipelines(Arc<AtomicUsize>);

#[derive(Resource)]
struct ScreenshotJob {
    path: PathBuf,
    frames: u32,
    ready_frames: u32,
    started: Instant,
    state: JobState,
}

#[derive(PartialEq, Eq, Debug)]
enum JobState {
    Rendering,
    Requested,
    Captured,
}

impl Plugin for ScreenshotPlugin {
    fn build(&self, app: &mut App) {
        // A stale file from an earlier run must not pass for this run's screenshot.
        if let Err(err) = std::fs::remove_file(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), %err, "cannot remove the old screenshot");
        }
        let waiting = WaitingPipelines(Arc::new(AtomicUsize::new(usize::MAX)));
        app.insert_resource(waiting.clone())
            .insert_resource(ScreenshotJob {
                path: self.path.clone(),
                frames: self.frames,
                ready_frames: 0,
                started: Instant::now(),
                state: JobState::Rendering,
            })
            .add_systems(Update, drive_screenshot);
        if let Some(render_app) = app.get_sub_app_mut(RenderApp) {
            render_app
                .insert_resource(waiting)
                .add_systems(Render, count_waiting_pipelines.in_set(RenderSystems::Cleanup));
        } else {
            warn!("no render app: the screenshot will be taken after {} frames only", self.frames);
            app.world_mut().resource::<WaitingPipelines>().0.store(0, Ordering::Relaxed);
        }
    }
}

fn count_waiting_pipelines(cache: Res<PipelineCache>, waiting: Res<WaitingPipelines>) {
    waiting.0.store(cache.waiting_pipelines().count(), Ordering::Relaxed);
}

/// Whether everything a connected client shows has arrived (always true offline).
fn online_ready(net: &Net, conn: &Connection, chat: &ChatState, presence: &PresenceBook, own_spawned: bool) -> bool {
    let Some(link) = net.link() else { return true };
    if !conn.is_connected() || !own_spawned || !presence.loaded || link.replica().snapshots == 0 {
        return false;
    }
    let land_loaded = match chat.current_land {
        None => true,
        Some(_) => chat.land_room().and_then(|r| chat.rooms.get(&r)).is_some_and(|r| r.history_loaded),
    };
    chat.sessions_loaded && chat.pending_history.is_empty() && land_loaded
}

fn drive_screenshot(
    mut commands: Commands,
    mut job: ResMut<ScreenshotJob>,
    status: Res<TilemapStatus>,
    waiting: Res<WaitingPipelines>,
    net: Res<Net>,
    conn: Res<Connection>,
    chat: Res<ChatState>,
    presence: Res<PresenceBook>,
    own: Query<(), With<OwnAvatar>>,
    mut exit: MessageWriter<AppExit>,
) {
    if job.started.elapsed() > TIMEOUT {
        error!(state = ?job.state, connection = ?conn.status, "screenshot timed out");
        exit.write(AppExit::from_code(2));
        return;
    }
    if let Some(LinkStatus::Failed(reason)) = &conn.status {
        error!(%reason, "cannot take the screenshot: signing in failed");
        exit.write(AppExit::from_code(3));
        return;
    }
    match job.state {
        JobState::Rendering => {
            let ready = status.spawned && online_ready(&net, &conn, &chat, &presence, !own.is_empty());
            if ready && waiting.0.load(Ordering::Relaxed) == 0 {
                job.ready_frames += 1;
            } else {
                job.ready_frames = 0;
            }
            if job.ready_frames >= job.frames {
                info!(path = %job.path.display(), frames = job.frames, "taking screenshot");
                commands
                    .spawn(Screenshot::primary_window())
                    .observe(save_to_disk(job.path.clone()))
                    .observe(mark_captured);
                job.state = JobState::Requested;
            }
        }
        JobState::Requested => {}
        JobState::Captured => {
            // `save_to_disk` writes synchronously when the capture arrives; the file is complete
            // once it exists, which is at the latest a frame after `mark_captured` ran.
            match std::fs::metadata(&job.path) {
                Ok(meta) if meta.len() > 0 => {
                    info!(path = %job.path.display(), bytes = meta.len(), "screenshot saved");
                    exit.write(AppExit::Success);
                }
                _ => {}
            }
        }
    }
}

fn mark_captured(_captured: On<ScreenshotCaptured>, mut job: ResMut<ScreenshotJob>) {
    job.state = JobState::Captured;
}
