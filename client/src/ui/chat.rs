//! The chat: what is known of each room ([`ChatState`]: scrollback from the REST history plus
//! live messages, merged by `seq`), the three tabs (land room, proximity, private), the input
//! box, and their drawing in the side panel.
//!
//! Keys: Enter starts typing and sends, Escape cancels, Tab switches tabs (F1/F2/F3 pick one).
//! Clicking a tab selects it; clicking a nearby user opens a private room with them (see
//! [`super::hud`]).
//!
//! Which room is the land room: the session of kind `land` for the land the avatar stands on
//! (from `Welcome`/`Moved` and `GET /api/v1/chat/sessions`, re-read when the server says we
//! joined a room we do not know).

use std::collections::{BTreeMap, HashMap, HashSet};

use bevy::input::ButtonState;
use bevy::input::keyboard::{Key, KeyboardInput};
use bevy::prelude::*;
use landworld_shared::limits::MAX_CONTENT_BYTES;
use landworld_shared::protocol::game::{ClientMessage, ServerMessage};
use uuid::Uuid;

use super::{PANEL_BG, TEXT_DIM, font};
use crate::net::http::{HistoryMessage, SessionInfo};
use crate::net::link::{HttpJob, NetEvent};
use crate::net::{Connection, FromServer, Net};

/// Lines shown in the scrollback.
const SHOWN_LINES: usize = 60;
/// Lines kept per room.
const KEPT_LINES: usize = 500;
pub const INPUT_BG: Color = Color::srgb_u8(12, 14, 22);
const TAB_BG: Color = Color::srgb_u8(40, 46, 64);
const TAB_ACTIVE_BG: Color = Color::srgb_u8(70, 90, 150);
const ME_COLOR: Color = Color::srgb_u8(255, 214, 0);
const SENDER_COLOR: Color = Color::srgb_u8(130, 200, 255);
const NOTICE_COLOR: Color = Color::srgb_u8(240, 140, 120);

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<ChatState>().init_resource::<ChatInput>().add_systems(Startup, spawn_chat_panel).add_systems(
        Update,
        (apply_chat_events, type_chat, click_tabs, draw_tabs, draw_scrollback, draw_input).chain(),
    );
}

/// The chat tabs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Component)]
pub enum Tab {
    Land,
    Proximity,
    Private,
}

impl Tab {
    const ALL: [Tab; 3] = [Tab::Land, Tab::Proximity, Tab::Private];

    fn label(self) -> &'static str {
        match self {
            Tab::Land => "Land",
            Tab::Proximity => "Proximity",
            Tab::Private => "Private",
        }
    }

    fn next(self) -> Tab {
        match self {
            Tab::Land => Tab::Proximity,
            Tab::Proximity => Tab::Private,
            Tab::Private => Tab::Land,
        }
    }
}

/// One chat line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub sender_id: Uuid,
    pub sender: String,
    pub content: String,
    /// `HH:MM` (UTC) from the server's timestamp.
    pub time: String,
    pub deleted: bool,
}

/// A room as the chat knows it.
#[derive(Debug, Default)]
pub struct RoomLog {
    /// `land`, `private`, `group`, `proximity`; empty until the sessions list names it.
    pub kind: String,
    pub name: String,
    pub land_id: Option<Uuid>,
    /// By seq: history and live messages merge without duplicates.
    pub lines: BTreeMap<i64, Line>,
    pub history_loaded: bool,
}

impl RoomLog {
    fn insert(&mut self, seq: i64, line: Line) {
        self.lines.insert(seq, line);
        while self.lines.len() > KEPT_LINES {
            self.lines.pop_first();
        }
    }
}

/// Everything the chat knows.
#[derive(Resource, Debug)]
pub struct ChatState {
    pub rooms: HashMap<Uuid, RoomLog>,
    /// The land the avatar stands on.
    pub current_land: Option<Uuid>,
    /// The private room the Private tab writes to.
    pub private_room: Option<Uuid>,
    pub tab: Tab,
    /// Messages from the client and the server about the chat itself (errors).
    pub notices: Vec<String>,
    /// The sessions list arrived at least once since connecting.
    pub sessions_loaded: bool,
    /// Rooms whose history was asked for and has not arrived.
    pub pending_history: HashSet<Uuid>,
    /// Lands whose session was asked for.
    land_sessions_asked: HashSet<Uuid>,
    /// Sent messages waiting for their ack: client_msg_id → content.
    pending_sends: HashMap<String, String>,
    sent: u64,
    /// New lines per tab since it was last shown.
    pub unread: HashMap<Tab, u32>,
    me: Option<Uuid>,
}

impl Default for ChatState {
    fn default() -> Self {
        Self {
            rooms: HashMap::new(),
            current_land: None,
            private_room: None,
            tab: Tab::Land,
            notices: Vec::new(),
            sessions_loaded: false,
            pending_history: HashSet::new(),
            land_sessions_asked: HashSet::new(),
            pending_sends: HashMap::new(),
            sent: 0,
            unread: HashMap::new(),
            me: None,
        }
    }
}

/// `HH:MM` of an RFC 3339 timestamp (`2026-01-02T13:45:00Z`), or empty.
fn hh_mm(created_at: &str) -> String {
    created_at.get(11..16).filter(|t| t.as_bytes().get(2) == Some(&b':')).unwrap_or_default().to_string()
}

impl ChatState {
    fn room_of_kind(&self, kind: &str) -> Option<Uuid> {
        self.rooms.iter().find(|(_, r)| r.kind == kind).map(|(id, _)| *id)
    }

    /// The land room of the land we stand on.
    pub fn land_room(&self) -> Option<Uuid> {
        let land = self.current_land?;
        self.rooms.iter().find(|(_, r)| r.kind == "land" && r.land_id == Some(land)).map(|(id, _)| *id)
    }

    pub fn proximity_room(&self) -> Option<Uuid> {
        self.room_of_kind("proximity")
    }

    /// The tab a room's messages show in.
    fn tab_of(&self, room: Uuid) -> Option<Tab> {
        let r = self.rooms.get(&room)?;
        match r.kind.as_str() {
            "proximity" => Some(Tab::Proximity),
            "private" | "group" => Some(Tab::Private),
            "land" if self.land_room() == Some(room) => Some(Tab::Land),
            _ => None,
        }
    }

    /// The lines of a tab, oldest first, with the room name for the private tab.
    pub fn lines(&self, tab: Tab) -> Vec<(Option<&str>, &Line)> {
        match tab {
            Tab::Land => self.room_lines(self.land_room()),
            Tab::Proximity => self.room_lines(self.proximity_room()),
            Tab::Private => {
                let mut all: Vec<(&str, Option<&str>, &Line)> = Vec::new();
                for r in self.rooms.values().filter(|r| r.kind == "private" || r.kind == "group") {
                    all.extend(r.lines.values().map(|l| (r.name.as_str(), Some(r.name.as_str()), l)));
                }
                all.sort_by(|a, b| a.2.time.cmp(&b.2.time));
                all.into_iter().map(|(_, n, l)| (n, l)).collect()
            }
        }
    }

    fn room_lines(&self, room: Option<Uuid>) -> Vec<(Option<&str>, &Line)> {
        room.and_then(|r| self.rooms.get(&r)).map(|r| r.lines.values().map(|l| (None, l)).collect()).unwrap_or_default()
    }

    /// Where the current tab sends, or why it cannot.
    pub fn target(&self) -> Result<String, &'static str> {
        match self.tab {
            Tab::Land => self.land_room().map(|r| r.to_string()).ok_or("you are not standing on a land"),
            Tab::Proximity => Ok("proximity".to_string()),
            Tab::Private => self.private_room.map(|r| r.to_string()).ok_or("click a nearby user to talk privately"),
        }
    }

    fn request_history(&mut self, room: Uuid, net: &Net) {
        let loaded = self.rooms.get(&room).is_some_and(|r| r.history_loaded);
        if !loaded && self.pending_history.insert(room) {
            net.request(HttpJob::History(room));
        }
    }

    /// Makes sure the land room of the land we stand on gets known.
    fn find_land_room(&mut self, net: &Net) {
        if let Some(land) = self.current_land
            && self.land_room().is_none()
            && self.land_sessions_asked.insert(land)
        {
            net.request(HttpJob::LandSession(land));
        }
    }

    fn add_session(&mut self, s: &SessionInfo, net: &Net) {
        let room = self.rooms.entry(s.id).or_default();
        room.kind = s.kind.clone();
        room.name = s.name.clone();
        room.land_id = s.land_id;
        self.request_history(s.id, net);
    }

    fn add_line(&mut self, room: Uuid, seq: i64, line: Line, live: bool) {
        let mine = Some(line.sender_id) == self.me;
        self.rooms.entry(room).or_default().insert(seq, line);
        if live
            && !mine
            && let Some(tab) = self.tab_of(room)
            && tab != self.tab
        {
            *self.unread.entry(tab).or_default() += 1;
        }
    }

    fn notice(&mut self, text: impl Into<String>) {
        self.notices.push(text.into());
        if self.notices.len() > 5 {
            self.notices.remove(0);
        }
    }

    /// Sends the input to the current tab's room; returns the message to send, or keeps a
    /// notice saying why not.
    pub fn compose(&mut self, content: &str, now_tag: u64) -> Option<ClientMessage> {
        let content = content.trim();
        if content.is_empty() {
            return None;
        }
        if content.len() > MAX_CONTENT_BYTES {
            self.notice(format!("a message holds at most {MAX_CONTENT_BYTES} bytes"));
            return None;
        }
        let room = match self.target() {
            Ok(room) => room,
            Err(why) => {
                self.notice(why);
                return None;
            }
        };
        self.sent += 1;
        let client_msg_id = format!("lwc-{now_tag:x}-{}", self.sent);
        self.pending_sends.insert(client_msg_id.clone(), content.to_string());
        Some(ClientMessage::SendChat { room, content: content.to_string(), client_msg_id: Some(client_msg_id) })
    }

    /// Applies one network event.
    pub fn apply(&mut self, event: &NetEvent, net: &Net) {
        match event {
            NetEvent::SignedIn(user) => self.me = Some(user.id),
            NetEvent::Game(msg) => self.apply_game(msg, net),
            NetEvent::Sessions(list) => {
                for s in list {
                    self.add_session(s, net);
                }
                self.sessions_loaded = true;
                self.find_land_room(net);
            }
            NetEvent::Session(session) => self.add_session(session, net),
            NetEvent::History { room, messages } => {
                self.pending_history.remove(room);
                for m in messages {
                    let HistoryMessage { seq, sender_id, sender_username, content, created_at, deleted, .. } = m;
                    let line = Line {
                        sender_id: *sender_id,
                        sender: sender_username.clone(),
                        content: if *deleted { "(deleted)".into() } else { content.clone() },
                        time: hh_mm(created_at),
                        deleted: *deleted,
                    };
                    self.add_line(*room, *seq, line, false);
                }
                self.rooms.entry(*room).or_default().history_loaded = true;
            }
            NetEvent::HistoryFailed { room, reason } => {
                self.pending_history.remove(room);
                // Not retried until the next connection; live messages still show.
                self.rooms.entry(*room).or_default().history_loaded = true;
                self.notice(format!("cannot load the history: {reason}"));
            }
            NetEvent::PrivateOpened(session) => {
                self.add_session(session, net);
                self.private_room = Some(session.id);
                self.tab = Tab::Private;
            }
            NetEvent::Problem(text) => self.notice(text.clone()),
            NetEvent::Status(_) | NetEvent::Online(_) => {}
        }
    }

    fn apply_game(&mut self, msg: &ServerMessage, net: &Net) {
        match msg {
            ServerMessage::Welcome { user_id, land_id, .. } => {
                self.me = Some(*user_id);
                self.current_land = *land_id;
                // A new connection: reload every room's history (what came while we were away
                // merges in by seq) and the sessions list.
                self.sessions_loaded = false;
                self.pending_history.clear();
                self.land_sessions_asked.clear();
                for room in self.rooms.values_mut() {
                    room.history_loaded = false;
                }
            }
            ServerMessage::Moved { land_id, .. } => {
                self.current_land = *land_id;
                if self.sessions_loaded {
                    self.find_land_room(net);
                }
            }
            ServerMessage::JoinedRoom { room_id, kind, name, .. } => {
                let room = self.rooms.entry(*room_id).or_default();
                room.kind = kind.clone();
                room.name = name.clone();
                self.request_history(*room_id, net);
            }
            // Walked onto a land (or was added to a group): learn what the room is.
            ServerMessage::UserJoined { room_id, user_id, .. }
                if Some(*user_id) == self.me && self.rooms.get(room_id).is_none_or(|r| r.kind.is_empty()) =>
            {
                net.request(HttpJob::Sessions);
            }
            ServerMessage::Chat { room_id, seq, sender_id, sender_username, content, created_at, .. } => {
                let line = Line {
                    sender_id: *sender_id,
                    sender: sender_username.clone(),
                    content: content.clone(),
                    time: hh_mm(created_at),
                    deleted: false,
                };
                let known = self.rooms.get(room_id).is_some_and(|r| !r.kind.is_empty());
                self.add_line(*room_id, *seq, line, true);
                if !known {
                    net.request(HttpJob::Sessions);
                }
                if self.private_room.is_none() && self.rooms.get(room_id).is_some_and(|r| r.kind == "private") {
                    self.private_room = Some(*room_id);
                }
            }
            ServerMessage::ChatAck { room_id, seq, client_msg_id, .. } => {
                let pending = client_msg_id.as_ref().and_then(|c| self.pending_sends.remove(c));
                if let (Some(content), Some(me)) = (pending, self.me) {
                    let line =
                        Line { sender_id: me, sender: "me".into(), content, time: String::new(), deleted: false };
                    let room = self.rooms.entry(*room_id).or_default();
                    room.lines.entry(*seq).or_insert(line);
                }
            }
            ServerMessage::ChatDeleted { room_id, message_id: _ } => {
                // The id is not kept per line; reload the room's history to show it deleted.
                if let Some(room) = self.rooms.get_mut(room_id) {
                    room.history_loaded = false;
                }
                self.request_history(*room_id, net);
            }
            ServerMessage::Error { code, message, reference } => {
                let about_moves = code == "invalid_position"
                    || reference.as_deref().is_some_and(|r| r == "move" || r == "update_location");
                if !about_moves {
                    self.notice(format!("{code}: {message}"));
                }
            }
            _ => {}
        }
    }
}

/// The input box.
#[derive(Resource, Debug, Default)]
pub struct ChatInput {
    pub focused: bool,
    pub text: String,
}

#[derive(Component)]
struct ScrollbackText;
#[derive(Component)]
struct TitleText;
#[derive(Component)]
struct InputText;
#[derive(Component)]
struct TabLabel;

fn apply_chat_events(mut events: MessageReader<FromServer>, net: Res<Net>, mut chat: ResMut<ChatState>) {
    for FromServer(event) in events.read() {
        chat.apply(event, &net);
    }
}

fn type_chat(
    mut keys: MessageReader<KeyboardInput>,
    mut input: ResMut<ChatInput>,
    mut chat: ResMut<ChatState>,
    net: Res<Net>,
    conn: Res<Connection>,
) {
    for key in keys.read() {
        if key.state != ButtonState::Pressed {
            continue;
        }
        if !input.focused {
            match &key.logical_key {
                Key::Enter if net.is_online() => input.focused = true,
                Key::Tab => chat.tab = chat.tab.next(),
                Key::F1 => chat.tab = Tab::Land,
                Key::F2 => chat.tab = Tab::Proximity,
                Key::F3 => chat.tab = Tab::Private,
                _ => {}
            }
            continue;
        }
        match &key.logical_key {
            Key::Enter => {
                let text = std::mem::take(&mut input.text);
                input.focused = false;
                if !conn.is_connected() {
                    chat.notice("not connected; the message was not sent");
                    continue;
                }
                let tag = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or_default();
                if let Some(msg) = chat.compose(&text, tag) {
                    net.send(msg);
                }
            }
            Key::Escape => {
                input.text.clear();
                input.focused = false;
            }
            Key::Backspace => {
                input.text.pop();
            }
            Key::Space => input.text.push(' '),
            Key::Character(s) if input.text.len() + s.len() <= MAX_CONTENT_BYTES => {
                input.text.extend(s.chars().filter(|c| !c.is_control()));
            }
            _ => {}
        }
    }
}

fn click_tabs(mut chat: ResMut<ChatState>, tabs: Query<(&Interaction, &Tab), Changed<Interaction>>) {
    for (interaction, tab) in &tabs {
        if *interaction == Interaction::Pressed {
            chat.tab = *tab;
        }
    }
}

fn draw_tabs(
    mut chat: ResMut<ChatState>,
    mut tabs: Query<(&Tab, &mut BackgroundColor, &Children)>,
    mut labels: Query<&mut Text, With<TabLabel>>,
) {
    if !chat.is_changed() {
        return;
    }
    let current = chat.tab;
    chat.unread.remove(&current);
    for (tab, mut bg, children) in &mut tabs {
        bg.0 = if *tab == current { TAB_ACTIVE_BG } else { TAB_BG };
        let unread = chat.unread.get(tab).copied().unwrap_or_default();
        let label = if unread > 0 { format!("{} ({unread})", tab.label()) } else { tab.label().to_string() };
        for child in children.iter() {
            if let Ok(mut text) = labels.get_mut(child)
                && text.0 != label
            {
                text.0 = label.clone();
            }
        }
    }
}

fn draw_scrollback(
    mut commands: Commands,
    chat: Res<ChatState>,
    scrollback: Single<Entity, With<ScrollbackText>>,
    mut title: Single<&mut Text, With<TitleText>>,
) {
    if !chat.is_changed() {
        return;
    }
    title.0 = match chat.tab {
        Tab::Land => match chat.land_room().and_then(|r| chat.rooms.get(&r)) {
            Some(room) => format!("Land room: {}", room.name),
            None => "Land room: (not on a land)".into(),
        },
        Tab::Proximity => "Proximity: everyone within your radius".into(),
        Tab::Private => match chat.private_room.and_then(|r| chat.rooms.get(&r)) {
            Some(room) => format!("Private: {}", room.name),
            None => "Private: click a nearby user".into(),
        },
    };
    let lines = chat.lines(chat.tab);
    let start = lines.len().saturating_sub(SHOWN_LINES);
    let me = chat.me;
    let entity = *scrollback;
    commands.entity(entity).despawn_children();
    commands.entity(entity).with_children(|parent| {
        for (room, line) in &lines[start..] {
            let sender_color = if Some(line.sender_id) == me { ME_COLOR } else { SENDER_COLOR };
            let prefix = match room {
                Some(name) => format!("[{name}] "),
                None => String::new(),
            };
            parent.spawn((
                Text::new(format!("{prefix}{} ", line.time)),
                font(13.0),
                TextColor(TEXT_DIM),
                children![
                    (TextSpan::new(format!("{}: ", line.sender)), font(13.0), TextColor(sender_color)),
                    (
                        TextSpan::new(line.content.clone()),
                        font(13.0),
                        TextColor(if line.deleted { TEXT_DIM } else { Color::WHITE }),
                    ),
                ],
            ));
        }
        for notice in &chat.notices {
            parent.spawn((Text::new(notice.clone()), font(12.0), TextColor(NOTICE_COLOR)));
        }
    });
}

fn draw_input(
    input: Res<ChatInput>,
    chat: Res<ChatState>,
    net: Res<Net>,
    mut text: Single<&mut Text, With<InputText>>,
) {
    if !input.is_changed() && !chat.is_changed() {
        return;
    }
    let shown = if !net.is_online() {
        "Chat needs --server (see --help)".to_string()
    } else if input.focused {
        // Show the end of a long message.
        let tail: String = input.text.chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        format!("> {tail}_")
    } else {
        format!("Enter: chat in {} | Tab: switch", chat.tab.label())
    };
    if text.0 != shown {
        text.0 = shown;
    }
}

fn spawn_chat_panel(mut commands: Commands) {
    let tabs: Vec<Entity> = Tab::ALL
        .iter()
        .map(|&tab| {
            commands
                .spawn((
                    tab,
                    Button,
                    Node { padding: UiRect::axes(px(10), px(4)), border_radius: BorderRadius::all(px(4)), ..default() },
                    BackgroundColor(if tab == Tab::Land { TAB_ACTIVE_BG } else { TAB_BG }),
                    children![(TabLabel, Text::new(tab.label()), font(14.0), TextColor(Color::WHITE))],
                ))
                .id()
        })
        .collect();
    let tab_row = commands.spawn(Node { column_gap: px(6), ..default() }).add_children(&tabs).id();
    let title = commands.spawn((TitleText, Text::new(""), font(13.0), TextColor(TEXT_DIM))).id();
    let scrollback = commands
        .spawn((
            ScrollbackText,
            Node {
                flex_direction: FlexDirection::Column,
                justify_content: JustifyContent::FlexEnd,
                flex_grow: 1.0,
                min_height: px(0),
                overflow: Overflow::clip(),
                row_gap: px(2),
                ..default()
            },
        ))
        .id();
    let input = commands
        .spawn((
            Node { padding: UiRect::all(px(6)), border: UiRect::all(px(1)), ..default() },
            BackgroundColor(INPUT_BG),
            BorderColor::all(TAB_BG),
            children![(InputText, Text::new(""), font(14.0), TextColor(Color::WHITE))],
        ))
        .id();
    commands
        .spawn((
            Name::new("chat panel"),
            super::ChatPanel,
            Node {
                position_type: PositionType::Absolute,
                right: px(0),
                top: px(0),
                width: px(super::PANEL_WIDTH),
                height: percent(100),
                flex_direction: FlexDirection::Column,
                padding: UiRect::all(px(8)),
                row_gap: px(6),
                ..default()
            },
            BackgroundColor(PANEL_BG),
        ))
        .add_children(&[tab_row, title, scrollback, input]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(kind: &str, land: Option<Uuid>) -> SessionInfo {
        SessionInfo { id: Uuid::new_v4(), kind: kind.into(), name: format!("{kind} room"), land_id: land, last_seq: 0 }
    }

    fn chat(room: Uuid, seq: i64, from: Uuid, text: &str) -> NetEvent {
        NetEvent::Game(ServerMessage::Chat {
            room_id: room,
            message_id: Uuid::new_v4(),
            seq,
            sender_id: from,
            sender_username: "ann".into(),
            content: text.into(),
            created_at: "2026-11-23T20:41:07.000Z".into(),
            client_msg_id: None,
        })
    }

    #[test]
    fn history_and_live_messages_merge_by_seq_per_tab() {
        let net = Net::default();
        let mut c = ChatState::default();
        let me = Uuid::new_v4();
        let land = Uuid::new_v4();
        c.apply(
            &NetEvent::Game(ServerMessage::Welcome {
                user_id: me,
                username: "me".into(),
                tick_hz: 20,
                x: 1,
                y: 1,
                land_id: Some(land),
                view_radius: 32,
            }),
            &net,
        );
        let land_s = session("land", Some(land));
        let prox = session("proximity", None);
        c.apply(&NetEvent::Sessions(vec![land_s.clone(), prox.clone()]), &net);
        assert!(c.sessions_loaded);
        assert_eq!(c.pending_history.len(), 2);
        assert_eq!(c.land_room(), Some(land_s.id));
        let ann = Uuid::new_v4();
        c.apply(&chat(land_s.id, 3, ann, "live"), &net);
        let history = vec![HistoryMessage {
            room_id: land_s.id,
            seq: 2,
            sender_id: ann,
            sender_username: "ann".into(),
            content: "old".into(),
            created_at: "2026-11-23T20:40:00Z".into(),
            deleted: false,
        }];
        c.apply(&NetEvent::History { room: land_s.id, messages: history }, &net);
        c.apply(&chat(land_s.id, 3, ann, "live"), &net);
        let lines: Vec<&str> = c.lines(Tab::Land).iter().map(|(_, l)| l.content.as_str()).collect();
        assert_eq!(lines, vec!["old", "live"]);
        assert_eq!(c.lines(Tab::Land)[0].1.time, "20:40");
        assert!(c.lines(Tab::Proximity).is_empty());
        // A proximity message while the land tab is shown counts as unread there.
        c.apply(&chat(prox.id, 1, ann, "psst"), &net);
        assert_eq!(c.unread.get(&Tab::Proximity), Some(&1));
        // Sending: the land tab targets the land room; the private tab needs a room first.
        let msg = c.compose("  hi  ", 7).expect("a message");
        assert!(
            matches!(&msg, ClientMessage::SendChat { room, content, client_msg_id: Some(_) } if *room == land_s.id.to_string() && content == "hi")
        );
        assert!(c.compose("   ", 7).is_none());
        c.tab = Tab::Private;
        assert!(c.compose("secret", 7).is_none());
        assert_eq!(c.notices.last().map(String::as_str), Some("click a nearby user to talk privately"));
        // Stepping off the land leaves the land tab without a room.
        c.apply(&NetEvent::Game(ServerMessage::Moved { x: 0, y: 0, land_id: None }), &net);
        assert_eq!(c.land_room(), None);
    }

    #[test]
    fn acks_show_own_messages_and_private_rooms_open_the_tab() {
        let net = Net::default();
        let mut c = ChatState::default();
        let me = Uuid::new_v4();
        c.apply(&NetEvent::SignedIn(crate::net::http::UserInfo { id: me, username: "me".into() }), &net);
        let private = session("private", None);
        c.apply(&NetEvent::PrivateOpened(private.clone()), &net);
        assert_eq!((c.tab, c.private_room), (Tab::Private, Some(private.id)));
        let Some(ClientMessage::SendChat { client_msg_id: Some(id), .. }) = c.compose("yo", 1) else {
            panic!("a message");
        };
        c.apply(
            &NetEvent::Game(ServerMessage::ChatAck {
                room_id: private.id,
                message_id: Uuid::new_v4(),
                seq: 1,
                client_msg_id: Some(id),
            }),
            &net,
        );
        let lines = c.lines(Tab::Private);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].1.content.as_str(), lines[0].1.sender_id), ("yo", me));
        assert_eq!(hh_mm("garbage"), "");
    }
}
