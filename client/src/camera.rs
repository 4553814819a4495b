//! The 2D camera: spawned centred on the world's first spawn point. Once the own avatar is in
//! the world the camera follows it (centred in the part of the window the chat panel leaves
//! free); without a server it is panned with the arrow keys or WASD (hold Shift to go faster).
//! Kept inside the map and on whole pixels so the pixel art stays crisp.

use bevy::prelude::*;

use crate::app::World;
use crate::game::avatars::OwnAvatar;
use crate::render::tile_center;
use crate::ui::PANEL_WIDTH;

/// Pan speed in pixels per second (times 3 with Shift).
const PAN_SPEED: f32 = 640.0;

pub(super) fn plugin(app: &mut App) {
    app.add_systems(Startup, spawn_camera)
        .add_systems(PostUpdate, (pan_camera, follow_own_avatar).chain().before(TransformSystems::Propagate));
}

/// The camera; `0` is its exact position (the transform holds it rounded to whole pixels).
#[derive(Component)]
pub struct MainCamera(Vec2);

fn spawn_camera(mut commands: Commands, world: Res<World>) {
    let map = &world.0;
    let start = map.spawns.first().copied().unwrap_or_default();
    let center = tile_center(map, start).round();
    commands.spawn((Camera2d, MainCamera(center), Msaa::Off, Transform::from_xyz(center.x, center.y, 100.0)));
}

fn follow_own_avatar(
    own: Query<&Transform, (With<OwnAvatar>, Without<MainCamera>)>,
    camera: Single<(&mut Transform, &mut MainCamera)>,
) {
    let Ok(avatar) = own.single() else { return };
    let (mut transform, mut camera) = camera.into_inner();
    // The chat panel covers the right of the window: centre the avatar in what is left.
    camera.0 = avatar.translation.truncate() + Vec2::new(PANEL_WIDTH / 2.0, 0.0);
    transform.translation.x = camera.0.x.round();
    transform.translation.y = camera.0.y.round();
}

fn pan_camera(
    keys: Res<ButtonInput<KeyCode>>,
    time: Res<Time>,
    world: Res<World>,
    own: Query<(), With<OwnAvatar>>,
    camera: Single<(&mut Transform, &mut MainCamera)>,
) {
    if !own.is_empty() {
        return; // the keys walk the avatar
    }
    let mut dir = Vec2::ZERO;
    if keys.any_pressed([KeyCode::ArrowLeft, KeyCode::KeyA]) {
        dir.x -= 1.0;
    }
    if keys.any_pressed([KeyCode::ArrowRight, KeyCode::KeyD]) {
        dir.x += 1.0;
    }
    if keys.any_pressed([KeyCode::ArrowUp, KeyCode::KeyW]) {
        dir.y += 1.0;
    }
    if keys.any_pressed([KeyCode::ArrowDown, KeyCode::KeyS]) {
        dir.y -= 1.0;
    }
    if dir == Vec2::ZERO {
        return;
    }
    let fast = if keys.any_pressed([KeyCode::ShiftLeft, KeyCode::ShiftRight]) { 3.0 } else { 1.0 };
    let step = dir.normalize() * PAN_SPEED * fast * time.delta_secs();
    let map = &world.0;
    let max = Vec2::new((map.width * map.tile_width) as f32, -((map.height * map.tile_height) as f32));
    let (mut transform, mut camera) = camera.into_inner();
    camera.0 = (camera.0 + step).clamp(Vec2::new(0.0, max.y), Vec2::new(max.x, 0.0));
    transform.translation.x = camera.0.x.round();
    transform.translation.y = camera.0.y.round();
}
