//! The overlay in the map's top-left corner: the connection status (a coloured dot: green
//! connected, amber connecting or reconnecting with the countdown, red given up, grey offline)
//! with the own position, and the nearby users: every avatar in view, nearest first, with its
//! presence dot and distance in tiles. Clicking a nearby user opens a private chat with them.
//! F5 / F6 / F7 set the own status to online / away / busy (the own avatar's dot follows the
//! server's `Presence` answer).

use std::time::{Duration, Instant};

use bevy::prelude::*;
use landworld_shared::protocol::game::ClientMessage;
use landworld_shared::protocol::ws::Status;
use landworld_shared::world::chebyshev;
use uuid::Uuid;

use super::{TEXT_DIM, font};
use crate::app::World;
use crate::game::avatars::{Avatar, OwnAvatar, PresenceBook, status_color};
use crate::game::movement::Prediction;
use crate::net::link::{HttpJob, LinkStatus};
use crate::net::{Connection, Net};
use crate::ui::chat::ChatInput;

/// Users listed at most.
const LISTED: usize = 12;
const HUD_BG: Color = Color::srgba(0.06, 0.07, 0.1, 0.85);
const ROW_HOVER_BG: Color = Color::srgba(0.3, 0.35, 0.5, 0.9);

pub(super) fn plugin(app: &mut App) {
    app.add_systems(Startup, spawn_hud)
        .add_systems(Update, (set_own_status, draw_status, draw_nearby, click_nearby).chain());
}

#[derive(Component)]
struct StatusDot;
#[derive(Component)]
struct StatusText;
#[derive(Component)]
struct NearbyList;
/// A row of the nearby list: the user it opens a private chat with.
#[derive(Component)]
struct NearbyRow(Uuid);

/// The colour of the connection status dot.
pub fn connection_color(conn: &Connection) -> Color {
    match &conn.status {
        None => Color::srgb_u8(140, 140, 140),
        Some(LinkStatus::Connected) if conn.welcomed => Color::srgb_u8(70, 210, 100),
        Some(LinkStatus::Failed(_)) => Color::srgb_u8(225, 55, 55),
        Some(_) => Color::srgb_u8(245, 175, 40),
    }
}

fn spawn_hud(mut commands: Commands) {
    commands.spawn((
        Name::new("hud"),
        Node {
            position_type: PositionType::Absolute,
            left: px(8),
            top: px(8),
            max_width: px(600),
            flex_direction: FlexDirection::Column,
            align_items: AlignItems::FlexStart,
            row_gap: px(6),
            ..default()
        },
        children![
            (
                Node {
                    padding: UiRect::axes(px(8), px(5)),
                    column_gap: px(8),
                    align_items: AlignItems::Center,
                    border_radius: BorderRadius::all(px(4)),
                    ..default()
                },
                BackgroundColor(HUD_BG),
                children![
                    (
                        StatusDot,
                        Node { width: px(10), height: px(10), border_radius: BorderRadius::MAX, ..default() },
                        BackgroundColor(Color::srgb_u8(140, 140, 140)),
                    ),
                    (StatusText, Text::new(""), font(14.0), TextColor(Color::WHITE)),
                ],
            ),
            (
                NearbyList,
                Node {
                    padding: UiRect::all(px(8)),
                    flex_direction: FlexDirection::Column,
                    row_gap: px(3),
                    min_width: px(200),
                    border_radius: BorderRadius::all(px(4)),
                    ..default()
                },
                BackgroundColor(HUD_BG),
                Visibility::Hidden,
            ),
        ],
    ));
}

fn set_own_status(keys: Res<ButtonInput<KeyCode>>, input: Res<ChatInput>, net: Res<Net>, conn: Res<Connection>) {
    if input.focused || !conn.is_connected() {
        return;
    }
    let status = if keys.just_pressed(KeyCode::F5) {
        Status::Online
    } else if keys.just_pressed(KeyCode::F6) {
        Status::Away
    } else if keys.just_pressed(KeyCode::F7) {
        Status::Busy
    } else {
        return;
    };
    net.send(ClientMessage::SetStatus { status });
}

fn draw_status(
    conn: Res<Connection>,
    prediction: Res<Prediction>,
    world: Res<World>,
    book: Res<PresenceBook>,
    mut dot: Single<&mut BackgroundColor, With<StatusDot>>,
    mut text: Single<&mut Text, With<StatusText>>,
) {
    let mut line = conn.describe(Instant::now());
    if conn.is_connected()
        && let Some(at) = prediction.predicted
    {
        if let Some(me) = conn.user_id {
            line.push_str(&format!(" ({})", book.of(me).as_str()));
        }
        line.push_str(&format!("  ({}, {})", at.x, at.y));
        if let Some(land) = world.0.land_at(at) {
            line.push_str(&format!(" - {}", land.name));
        }
    }
    if text.0 != line {
        text.0 = line;
    }
    let color = connection_color(&conn);
    if dot.0 != color {
        dot.0 = color;
    }
}

/// Rebuilds the list when who is near (or their status) changes, at most every 200 ms.
fn draw_nearby(
    mut commands: Commands,
    prediction: Res<Prediction>,
    book: Res<PresenceBook>,
    avatars: Query<&Avatar, Without<OwnAvatar>>,
    list: Single<(Entity, &mut Visibility), With<NearbyList>>,
    mut shown: Local<Vec<(Uuid, String, u32, Status)>>,
    mut last: Local<Option<Instant>>,
) {
    let now = Instant::now();
    if last.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(200)) {
        return;
    }
    *last = Some(now);
    let Some(me) = prediction.predicted else { return };
    let mut rows: Vec<(Uuid, String, u32, Status)> =
        avatars.iter().map(|a| (a.user_id, a.username.clone(), chebyshev(me, a.tile), book.of(a.user_id))).collect();
    rows.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.1.cmp(&b.1)));
    let total = rows.len();
    rows.truncate(LISTED);
    if *shown == rows && total <= LISTED {
        return;
    }
    let (entity, mut visibility) = list.into_inner();
    *visibility = if rows.is_empty() { Visibility::Hidden } else { Visibility::Inherited };
    commands.entity(entity).despawn_children();
    commands.entity(entity).with_children(|parent| {
        let title =
            if total > LISTED { format!("Nearby ({total}, nearest {LISTED})") } else { format!("Nearby ({total})") };
        parent.spawn((Text::new(title), font(13.0), TextColor(TEXT_DIM)));
        for (user, name, distance, status) in &rows {
            parent.spawn((
                NearbyRow(*user),
                Button,
                Node {
                    column_gap: px(6),
                    align_items: AlignItems::Center,
                    padding: UiRect::axes(px(4), px(1)),
                    ..default()
                },
                BackgroundColor(Color::NONE),
                children![
                    (
                        Node { width: px(8), height: px(8), border_radius: BorderRadius::MAX, ..default() },
                        BackgroundColor(status_color(*status)),
                    ),
                    (Text::new(name.clone()), font(13.0), TextColor(Color::WHITE)),
                    (Text::new(format!("{distance} tiles, {}", status.as_str())), font(12.0), TextColor(TEXT_DIM),),
                ],
            ));
        }
    });
    *shown = rows;
}

fn click_nearby(
    net: Res<Net>,
    mut rows: Query<(&Interaction, &NearbyRow, &mut BackgroundColor), Changed<Interaction>>,
) {
    for (interaction, row, mut bg) in &mut rows {
        match interaction {
            Interaction::Pressed => net.request(HttpJob::OpenPrivate(row.0)),
            Interaction::Hovered => bg.0 = ROW_HOVER_BG,
            Interaction::None => bg.0 = Color::NONE,
        }
    }
}
