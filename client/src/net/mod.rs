//! Networking: the REST API ([`http`]) and the UDP game connection and its threads ([`link`]),
//! which keeps the replicated view (`landworld_shared::protocol::replica`).
//!
//! This plugin starts the [`link::Link`] when `--server` is given and, each frame in
//! `PreUpdate` (before every reader in `Update`), turns what the network threads reported into [`FromServer`] messages that
//! the game and UI plugins read, and keeps [`Connection`] (status, who we are) up to date.
//! Systems send with [`Net::send`] / [`Net::request`].

pub mod http;
pub mod link;

use std::time::{Duration, Instant};

use bevy::prelude::*;
use landworld_shared::protocol::game::{ClientMessage, ServerMessage};
use uuid::Uuid;

use crate::cli::ServerLogin;
use link::{HttpJob, Link, LinkConfig, LinkStatus, NetEvent};

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<Connection>()
        .add_message::<FromServer>()
        .add_systems(Startup, start_link)
        .add_systems(PreUpdate, receive_net);
}

/// Something the network threads reported, in order.
#[derive(Message, Clone, Debug)]
pub struct FromServer(pub NetEvent);

/// The network threads (absent when playing offline, without `--server`).
#[derive(Resource, Default)]
pub struct Net(Option<Link>);

impl Net {
    pub fn is_online(&self) -> bool {
        self.0.is_some()
    }

    /// Queues a game message (dropped while disconnected).
    pub fn send(&self, msg: ClientMessage) {
        if let Some(link) = &self.0 {
            link.send(msg);
        }
    }

    pub fn request(&self, job: HttpJob) {
        if let Some(link) = &self.0 {
            link.request(job);
        }
    }

    pub fn link(&self) -> Option<&Link> {
        self.0.as_ref()
    }
}

/// What the UI shows about the connection.
#[derive(Resource, Debug, Default)]
pub struct Connection {
    /// `None` when offline (no `--server`).
    pub status: Option<LinkStatus>,
    /// When the next reconnect attempt starts.
    pub retry_at: Option<Instant>,
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    /// The server greeted this connection (our avatar is in the world).
    pub welcomed: bool,
    /// Welcomes received (one per connection): other plugins reset on a new one.
    pub sessions: u32,
}

impl Connection {
    pub fn is_connected(&self) -> bool {
        self.status == Some(LinkStatus::Connected) && self.welcomed
    }

    /// A short line for the status bar.
    pub fn describe(&self, now: Instant) -> String {
        let who = self.username.as_deref().unwrap_or("?");
        match &self.status {
            None => "offline: world viewer (no --server)".into(),
            Some(LinkStatus::SigningIn) => "signing in...".into(),
            Some(LinkStatus::Connecting) => "connecting...".into(),
            Some(LinkStatus::Connected) if self.welcomed => format!("connected as {who}"),
            Some(LinkStatus::Connected) => "joining the world...".into(),
            Some(LinkStatus::Reconnecting { attempt, reason, .. }) => {
                let left = self.retry_at.map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                format!("reconnecting in {:.0} s (attempt {attempt}): {reason}", left.as_secs_f32().ceil())
            }
            Some(LinkStatus::Failed(reason)) => format!("disconnected: {reason}"),
        }
    }
}

fn start_link(mut commands: Commands, login: Res<ServerLogin>, mut conn: ResMut<Connection>) {
    let Some(server) = login.server.clone() else {
        commands.insert_resource(Net(None));
        return;
    };
    let config = LinkConfig {
        server,
        username: login.username.clone().unwrap_or_default(),
        password: login.password.clone().unwrap_or_default(),
        register: login.register,
    };
    conn.username = Some(config.username.clone());
    conn.status = Some(LinkStatus::SigningIn);
    match Link::start(config) {
        Ok(link) => commands.insert_resource(Net(Some(link))),
        Err(e) => {
            error!(error = %e, "cannot start the network threads");
            conn.status = Some(LinkStatus::Failed(format!("cannot start the network threads: {e}")));
            commands.insert_resource(Net(None));
        }
    }
}

fn receive_net(net: Option<Res<Net>>, mut conn: ResMut<Connection>, mut out: MessageWriter<FromServer>) {
    let Some(link) = net.as_deref().and_then(Net::link) else { return };
    for event in link.drain() {
        match &event {
            NetEvent::Status(status) => {
                if !matches!(status, LinkStatus::Connected) {
                    conn.welcomed = false;
                }
                conn.retry_at = match status {
                    LinkStatus::Reconnecting { retry_in, .. } => Some(Instant::now() + *retry_in),
                    _ => None,
                };
                conn.status = Some(status.clone());
            }
            NetEvent::SignedIn(user) => {
                conn.user_id = Some(user.id);
                conn.username = Some(user.username.clone());
            }
            NetEvent::Game(ServerMessage::Welcome { user_id, username, .. }) => {
                conn.user_id = Some(*user_id);
                conn.username = Some(username.clone());
                conn.welcomed = true;
                conn.sessions += 1;
                // Chat rooms and their history (again after a reconnect: nothing is lost), and
                // the status of everyone (the game protocol only sends changes).
                link.request(HttpJob::Sessions);
                link.request(HttpJob::OnlineUsers);
            }
            _ => {}
        }
        out.write(FromServer(event));
    }
}
