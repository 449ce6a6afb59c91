//! Text from servers (the Proxmox API, notification servers) made safe to show: control
//! characters, line breaks and the Unicode characters that reorder a line are written out as
//! escapes (`\n`, `\u{1b}`), so that a VM name, tag or error message can neither drive a
//! terminal (ESC sequences) nor forge a line in the journal ("\n<0>..." would be a new line at
//! emergency priority).
//!
//! It is applied where such text enters pvescale's types: every JSON answer of the API
//! ([`escape_json`], in `pve::client`), every API error message (`pve::error::ApiError`) and
//! what a notification server answers. Everything downstream (the state, the history, the
//! reports, logs, tables and notifications) then only ever holds one-line, inert text, and no
//! output path can forget to escape it.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is shown as an escape: C0 and C1 controls (line breaks and ESC among them),
/// DEL, the Unicode line and paragraph separators, and the bidirectional overrides and
/// isolates (which make a terminal show a line in another order than it is).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every [`is_unsafe`] character written out: `\n`, `\r`, `\t`, else `\u{hex}`
/// (as Rust writes it). Borrowed, without a copy, when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape`] applied to every string and object key in `value`, in place.
pub fn escape_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Cow::Owned(escaped) = escape(s) {
                *s = escaped;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(escape_json),
        Value::Object(map) => {
            if map.keys().any(|k| k.chars().any(is_unsafe)) {
                let entries = std::mem::take(map);
                for (k, v) in entries {
                    map.insert(escape(&k).into_owned(), v);
                }
            }
            map.values_mut().for_each(escape_json);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_line_breaks_and_reordering_are_escaped() {
        assert_eq!(escape("web-01"), "web-01");
        assert!(matches!(escape("plain ünïcode ✓"), Cow::Borrowed(_)));
        assert_eq!(
            escape("evil\u{1b}[2J\u{1b}]0;owned\u{7}\n<0>forged"),
            "evil\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\n<0>forged"
        );
        assert_eq!(escape("a\r\tb\u{7f}\u{9b}c"), "a\\r\\tb\\u{7f}\\u{9b}c");
        assert_eq!(escape("x\u{202e}y\u{2028}"), "x\\u{202e}y\\u{2028}");
        assert!(!escape("\u{0}\u{1f}\u{85}").chars().any(is_unsafe));
    }

    #[test]
    fn json_strings_and_keys_are_escaped_in_place() {
        let mut v = serde_json::json!({
            "data": [{"name": "a\nb", "tags": "x;\u{1b}[31m", "vmid": 101}],
            "errors": {"bad\nkey": "why\r"}
        });
        escape_json(&mut v);
        assert_eq!(v["data"][0]["name"], "a\\nb");
        assert_eq!(v["data"][0]["tags"], "x;\\u{1b}[31m");
        assert_eq!(v["data"][0]["vmid"], 101);
        assert_eq!(v["errors"]["bad\\nkey"], "why\\r");
    }
}
