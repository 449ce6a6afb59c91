//! Where things are in the TOML text: key paths (`cluster[0].url`) and line/column positions,
//! found through the spanned document that the `toml` crate parses.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a key in the config, shown as `policy.cpu.low` or `cluster[1].url` (indexes count
/// from 0, in file order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(index));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// The config text with its spanned parse, for turning spans into lines and key paths into spans.
pub(crate) struct Doc<'a> {
    text: &'a str,
    table: Spanned<DeTable<'a>>,
}

impl<'a> Doc<'a> {
    pub fn parse(text: &'a str) -> Result<Self, toml::de::Error> {
        Ok(Doc {
            text,
            table: DeTable::parse(text)?,
        })
    }

    pub fn location(&self, offset: usize) -> Location {
        location(self.text, offset)
    }

    /// The deepest key path whose key or value covers `offset` (where a serde error points).
    pub fn path_at(&self, offset: usize) -> KeyPath {
        let mut best = KeyPath::root();
        find_in_table(self.table.get_ref(), offset, &KeyPath::root(), &mut best);
        best
    }

    /// Where `path` is: its value, or the nearest parent that exists (e.g. the `[[cluster]]`
    /// header of a missing key).
    pub fn location_of(&self, path: &KeyPath) -> Option<Location> {
        let mut span: Option<Range<usize>> = None;
        let mut value: Option<&DeValue<'a>> = None;
        let mut table = Some(self.table.get_ref());
        for seg in &path.0 {
            let next = match (seg, table, value) {
                (Seg::Key(k), Some(t), _) => t.get(k.as_str()),
                (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = Some(next.span());
            value = Some(next.get_ref());
            table = next.get_ref().as_table();
        }
        span.map(|s| self.location(s.start))
    }
}

pub(crate) fn location(text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    Location { line, column }
}

fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn find_in_table(table: &DeTable<'_>, offset: usize, here: &KeyPath, best: &mut KeyPath) {
    for (key, value) in table.iter() {
        let path = here.key(key.get_ref());
        if covers(&key.span(), offset) || covers(&value.span(), offset) {
            *best = path.clone();
        }
        find_in_value(value.get_ref(), offset, &path, best);
    }
}

fn find_in_value(value: &DeValue<'_>, offset: usize, here: &KeyPath, best: &mut KeyPath) {
    match value {
        DeValue::Table(t) => find_in_table(t, offset, here, best),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let path = here.index(i);
                if covers(&item.span(), offset) {
                    *best = path.clone();
                }
                find_in_value(item.get_ref(), offset, &path, best);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_display() {
        let p = KeyPath::root().key("cluster").index(1).key("url");
        assert_eq!(p.to_string(), "cluster[1].url");
        assert_eq!(KeyPath::root().key("a b").to_string(), "\"a b\"");
    }

    #[test]
    fn locations_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(location(text, 0), Location { line: 1, column: 1 });
        let at = text.find('2').unwrap_or(0);
        assert_eq!(location(text, at), Location { line: 2, column: 6 });
    }

    #[test]
    fn finds_paths_and_locations() {
        let text = "[[cluster]]\nname = \"a\"\n\n[[cluster]]\nname = \"b\"\nurl = \"x\"\n\
                    [policy.cpu]\nhigh = 3\n[policy]\nmemory = { low = 4 }\n";
        let doc = Doc::parse(text).unwrap();
        let url = KeyPath::root().key("cluster").index(1).key("url");
        assert_eq!(doc.location_of(&url), Some(Location { line: 6, column: 7 }));
        let offset = text.find("\"x\"").unwrap_or(0);
        assert_eq!(doc.path_at(offset), url);
        // A missing key points at its table's header.
        let missing = KeyPath::root().key("cluster").index(0).key("url");
        assert_eq!(doc.location_of(&missing).map(|l| l.line), Some(1));
        let high = KeyPath::root().key("policy").key("cpu").key("high");
        assert_eq!(doc.location_of(&high).map(|l| l.line), Some(8));
        let low = text.find("4 }").unwrap_or(0);
        assert_eq!(doc.path_at(low).to_string(), "policy.memory.low");
    }
}
