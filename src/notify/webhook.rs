//! Generic webhooks: a JSON POST in one of a few shapes (pvescale's own, Slack-compatible,
//! Discord, ntfy), with the configured headers.

use std::time::Duration;

use serde_json::{Value, json};

use super::events::EventKind;
use super::message::{Message, truncate};
use super::{SendError, http};
use crate::config::notify::{WebhookConfig, WebhookFormat};

/// Discord refuses longer `content`.
const DISCORD_MAX: usize = 2000;
/// ntfy turns longer messages into attachments.
const NTFY_MAX: usize = 3900;
/// Slack cuts messages far longer than this; keep them readable.
const SLACK_MAX: usize = 12000;

/// Where the body goes, and the body.
pub(super) fn request(cfg: &WebhookConfig, msg: &Message) -> (String, Value) {
    let url = cfg.url.expose().to_string();
    let title = msg.title();
    let text = msg.text();
    match cfg.format {
        WebhookFormat::Json => (url, msg.json()),
        WebhookFormat::Slack => (
            url,
            json!({ "text": truncate(&slack_escape(&format!("*{title}*\n{text}")), SLACK_MAX) }),
        ),
        WebhookFormat::Discord => (
            url,
            json!({
                "content": truncate(&format!("**{title}**\n{text}"), DISCORD_MAX),
                // Never ping @everyone or a role because a VM name looks like one.
                "allowed_mentions": { "parse": [] },
            }),
        ),
        WebhookFormat::Ntfy => {
            // Validation made sure the URL names a topic.
            let (root, topic) =
                crate::config::notify::ntfy_parts(&url).unwrap_or((url, String::new()));
            let priority = match msg.most_urgent() {
                Some(EventKind::Failed | EventKind::Refused) => 4,
                _ => 3,
            };
            let mut tags: Vec<&str> = msg.kinds().iter().map(|k| k.as_str()).collect();
            if msg.most_urgent() == Some(EventKind::Failed) {
                tags.insert(0, "warning");
            }
            (
                root,
                json!({
                    "topic": topic,
                    "title": title,
                    "message": truncate(&text, NTFY_MAX),
                    "priority": priority,
                    "tags": tags,
                }),
            )
        }
    }
}

pub(super) fn send(cfg: &WebhookConfig, msg: &Message, timeout: Duration) -> Result<(), SendError> {
    let (url, body) = request(cfg, msg);
    let headers: Vec<(&str, &str)> = cfg
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.expose()))
        .collect();
    http::post_json(
        &url,
        &headers,
        &body,
        cfg.ca_file.as_deref(),
        cfg.proxy.as_ref(),
        timeout,
    )
}

/// Slack's mrkdwn wants `&`, `<` and `>` escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
