//! Gotify: `POST <url>/message` with the application token in `X-Gotify-Key` (not in the
//! URL, where proxies and logs would keep it).

use std::time::Duration;

use serde_json::json;

use super::message::Message;
use super::{SendError, http};
use crate::config::notify::GotifyConfig;

/// Priority of a message without events (a test, a held-back note).
const PLAIN_PRIORITY: u8 = 5;

/// The request body: title, text, and the priority of the most urgent event.
pub(super) fn body(cfg: &GotifyConfig, msg: &Message) -> serde_json::Value {
    let priority = msg
        .most_urgent()
        .and_then(|k| cfg.priority.get(&k).copied())
        .unwrap_or(PLAIN_PRIORITY);
    json!({
        "title": msg.title(),
        "message": msg.text(),
        "priority": priority,
        "extras": { "client::display": { "contentType": "text/plain" } },
    })
}

pub(super) fn send(cfg: &GotifyConfig, msg: &Message, timeout: Duration) -> Result<(), SendError> {
    http::post_json(
        &format!("{}/message", cfg.url),
        &[("X-Gotify-Key", cfg.token.expose())],
        &body(cfg, msg),
        cfg.ca_file.as_deref(),
        cfg.proxy.as_ref(),
        timeout,
    )
}
