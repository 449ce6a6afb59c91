//! The streaming parser of a `metrics/export` body. Hand-written for speed and a small,
//! constant memory at thousands of VMs: the body is read in chunks, the envelope walked by
//! hand, and each sample parsed in place (a fast reader for plain samples, `serde_json` as the
//! fallback). Kept apart from the typed endpoints in `api.rs`.

use std::fmt;
use std::io::Read;

use serde::de::{IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

use super::types::{MetricSample, ShortStr};

/// Parses a `metrics/export` body, `{"data": {"data": [ sample, ... ]}}`, without building the
/// array: each usable sample is handed to `on_sample` as it is read. Returns the number of
/// samples handed over. Public for benchmarks (`examples/bench.rs`).
///
/// At thousands of VMs the body is tens of megabytes, so this is built for speed and a small,
/// constant memory: the body is read in 64 KiB chunks, the envelope is walked by hand, and each
/// sample, a small flat object, is parsed from the chunk in place (`serde_json` over a slice,
/// its strings borrowed, nothing allocated per sample). Only one sample has to fit in memory.
pub fn parse_metrics_export(
    reader: &mut dyn Read,
    on_sample: &mut dyn FnMut(MetricSample),
) -> Result<u64, String> {
    let mut stream = JsonStream::new(reader);
    let mut count = None;
    stream.object(&mut |stream, key| {
        if key == "data" && count.is_none() {
            let mut inner = None;
            stream.object(&mut |stream, key| {
                if key == "data" && inner.is_none() {
                    inner = Some(parse_sample_list(stream, on_sample)?);
                    Ok(())
                } else {
                    stream.skip_value()
                }
            })?;
            count = Some(inner.ok_or("missing field `data` in `data`")?);
            Ok(())
        } else {
            stream.skip_value()
        }
    })?;
    stream.end()?;
    count.ok_or_else(|| "missing field `data`".to_string())
}

fn parse_sample_list(
    stream: &mut JsonStream<'_>,
    on_sample: &mut dyn FnMut(MetricSample),
) -> Result<u64, String> {
    let mut count = 0;
    stream.array(&mut |stream| {
        let usable = stream.value(&mut |slice, at_eof| {
            let (sample, used) = match fast_sample(slice) {
                Some(parsed) => parsed,
                None => serde_sample(slice)?,
            };
            if used == slice.len() && !at_eof {
                // A sample is always followed by `,` or `]`: this one may be cut.
                return Err(Parsed::NeedMore);
            }
            Ok((sample, used))
        })?;
        if let Some(sample) = usable {
            on_sample(sample);
            count += 1;
        }
        Ok(())
    })?;
    Ok(count)
}

/// One sample read by `serde_json` from the start of `bytes`: the usable sample (or `None`
/// when a field is missing or unusable) and the bytes it took.
fn serde_sample(bytes: &[u8]) -> Result<(Option<MetricSample>, usize), Parsed> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<RawSample>();
    let raw = match values.next() {
        Some(Ok(raw)) => raw,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(Parsed::NeedMore),
    };
    let sample = match (raw.timestamp, raw.id, raw.metric, raw.value) {
        (Some(timestamp), Some(id), Some(metric), Some(value)) => Some(MetricSample {
            timestamp,
            id: ShortStr::new(&id.0),
            metric: ShortStr::new(&metric.0),
            value,
        }),
        _ => None,
    };
    Ok((sample, values.byte_offset()))
}

/// The usual sample, read without `serde_json` (three times faster): a flat object of strings
/// without escapes, plain JSON numbers and `true`/`false`/`null`, with `timestamp` an
/// unsigned integer, `value` a finite number and `id`/`metric` strings. Anything else (an
/// escape, a nested value, a number as a string, a duplicate field, an object cut at the
/// end of `bytes`, ...) gives `None`, and [`serde_sample`] reads it; where both read a
/// sample, they read the same (a test holds them to it).
fn fast_sample(bytes: &[u8]) -> Option<(Option<MetricSample>, usize)> {
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut i = 1;
    let (mut timestamp, mut id, mut metric, mut value) = (None, None, None, None);
    skip_ws(bytes, &mut i);
    if bytes.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            skip_ws(bytes, &mut i);
            let key = plain_string(bytes, &mut i)?;
            skip_ws(bytes, &mut i);
            if bytes.get(i) != Some(&b':') {
                return None;
            }
            i += 1;
            skip_ws(bytes, &mut i);
            match key {
                b"timestamp" if timestamp.is_none() => {
                    let digits = number(bytes, &mut i)?;
                    if !digits.iter().all(u8::is_ascii_digit) {
                        return None;
                    }
                    timestamp = Some(std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?);
                }
                b"value" if value.is_none() => {
                    let text = std::str::from_utf8(number(bytes, &mut i)?).ok()?;
                    value = Some(text.parse::<f64>().ok().filter(|v| v.is_finite())?);
                }
                b"id" if id.is_none() => {
                    id = Some(std::str::from_utf8(plain_string(bytes, &mut i)?).ok()?);
                }
                b"metric" if metric.is_none() => {
                    metric = Some(std::str::from_utf8(plain_string(bytes, &mut i)?).ok()?);
                }
                b"timestamp" | b"value" | b"id" | b"metric" => return None,
                other => {
                    std::str::from_utf8(other).ok()?;
                    skip_scalar(bytes, &mut i)?;
                }
            }
            skip_ws(bytes, &mut i);
            match bytes.get(i)? {
                b',' => i += 1,
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    // What serde_json accepts after a value.
    if let Some(next) = bytes.get(i)
        && !matches!(
            next,
            b' ' | b'\n' | b'\t' | b'\r' | b'"' | b'[' | b']' | b'{' | b'}' | b',' | b':'
        )
    {
        return None;
    }
    let sample = match (timestamp, id, metric, value) {
        (Some(timestamp), Some(id), Some(metric), Some(value)) => Some(MetricSample {
            timestamp,
            id: ShortStr::new(id),
            metric: ShortStr::new(metric),
            value,
        }),
        _ => None,
    };
    Some((sample, i))
}

fn skip_ws(bytes: &[u8], i: &mut usize) {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(*i) {
        *i += 1;
    }
}

/// The content of a string without escapes or control characters.
fn plain_string<'a>(bytes: &'a [u8], i: &mut usize) -> Option<&'a [u8]> {
    if bytes.get(*i) != Some(&b'"') {
        return None;
    }
    let start = *i + 1;
    let mut j = start;
    loop {
        match *bytes.get(j)? {
            b'"' => break,
            b'\\' | 0..=0x1f => return None,
            _ => j += 1,
        }
    }
    *i = j + 1;
    Some(&bytes[start..j])
}

/// A number as JSON writes it: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number<'a>(bytes: &'a [u8], i: &mut usize) -> Option<&'a [u8]> {
    let start = *i;
    let mut j = start;
    let digits = |j: &mut usize| {
        let from = *j;
        while bytes.get(*j).is_some_and(u8::is_ascii_digit) {
            *j += 1;
        }
        *j > from
    };
    if bytes.get(j) == Some(&b'-') {
        j += 1;
    }
    match bytes.get(j) {
        Some(b'0') => j += 1,
        Some(b'1'..=b'9') => {
            digits(&mut j);
        }
        _ => return None,
    }
    if bytes.get(j) == Some(&b'.') {
        j += 1;
        if !digits(&mut j) {
            return None;
        }
    }
    if let Some(b'e' | b'E') = bytes.get(j) {
        j += 1;
        if let Some(b'+' | b'-') = bytes.get(j) {
            j += 1;
        }
        if !digits(&mut j) {
            return None;
        }
    }
    // A number running to the end of what was read may go on: let serde tell.
    if j == bytes.len() {
        return None;
    }
    *i = j;
    Some(&bytes[start..j])
}

/// A field we do not use: an ASCII string, a number, `true`, `false` or `null`.
fn skip_scalar(bytes: &[u8], i: &mut usize) -> Option<()> {
    match bytes.get(*i)? {
        b'"' => {
            let text = plain_string(bytes, i)?;
            text.is_ascii().then_some(())
        }
        b't' | b'f' | b'n' => {
            let rest = &bytes[*i..];
            let word: &[u8] = [&b"true"[..], b"false", b"null"]
                .into_iter()
                .find(|w| rest.starts_with(w))?;
            *i += word.len();
            Some(())
        }
        _ => number(bytes, i).map(|_| ()),
    }
}

/// A sample as sent; anything unusable (no id, non-numeric value) is skipped, not fatal.
/// Other fields (`type`) are skipped.
#[derive(Deserialize)]
struct RawSample<'a> {
    #[serde(default, deserialize_with = "loose_u64")]
    timestamp: Option<u64>,
    #[serde(default, borrow)]
    id: Option<Text<'a>>,
    #[serde(default, borrow)]
    metric: Option<Text<'a>>,
    #[serde(default, deserialize_with = "loose_f64")]
    value: Option<f64>,
}

/// A string borrowed from the body when it has no escapes.
struct Text<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

/// Like `types::de_opt_u64` (a number, or a number in a string; anything else is `None`),
/// without buffering the value.
fn loose_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Option<u64>, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, v: f64) -> Result<Option<u64>, E> {
            Ok((0.0..1.8e19).contains(&v).then_some(v as u64))
        }
        fn visit_str<E>(self, v: &str) -> Result<Option<u64>, E> {
            Ok(v.trim().parse().ok())
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// Like `types::de_opt_f64`: finite numbers, also in strings; anything else is `None`.
fn loose_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Option<f64>, E> {
            Ok(Some(v as f64))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Option<f64>, E> {
            Ok(Some(v as f64))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Option<f64>, E> {
            Ok(v.is_finite().then_some(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Option<f64>, E> {
            Ok(v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<f64>, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Option<f64>, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// Why a value could not be taken from the buffer.
enum Parsed {
    /// The value runs past what has been read: read more and try again.
    NeedMore,
    Invalid(serde_json::Error),
}

impl From<serde_json::Error> for Parsed {
    fn from(e: serde_json::Error) -> Parsed {
        if e.is_eof() {
            Parsed::NeedMore
        } else {
            Parsed::Invalid(e)
        }
    }
}

/// Makes a value of the bytes at hand (and whether the body ends there): the value and the
/// bytes it took, or why not.
type ValueParser<'p, T> = dyn FnMut(&[u8], bool) -> Result<(T, usize), Parsed> + 'p;

/// Largest single JSON value (a sample, a key, a skipped field) held in memory.
const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
const CHUNK_BYTES: usize = 64 * 1024;

/// A JSON document read in chunks, walked by hand for its structure, each leaf value parsed
/// by `serde_json` straight from the chunk.
struct JsonStream<'r> {
    reader: &'r mut dyn Read,
    buf: Vec<u8>,
    /// Next byte to look at.
    pos: usize,
    /// End of the bytes read into `buf`.
    end: usize,
    eof: bool,
}

impl<'r> JsonStream<'r> {
    fn new(reader: &'r mut dyn Read) -> Self {
        JsonStream {
            reader,
            buf: vec![0; CHUNK_BYTES],
            pos: 0,
            end: 0,
            eof: false,
        }
    }

    /// Reads more, keeping the bytes from `pos` on. False at the end of the body.
    fn fill(&mut self) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_VALUE_BYTES {
                return Err(format!(
                    "a single value is larger than {} MiB",
                    MAX_VALUE_BYTES >> 20
                ));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Like [`JsonStream::fill`], but reads until the buffer is full (or the body ends): a
    /// value cut at the end of the buffer is parsed again only once the buffer has doubled,
    /// not after every short read, so a value of n bytes costs O(n) however it arrives (a
    /// 15 MiB value in 16 KiB TLS records was parsed from its start 960 times).
    fn fill_buffer(&mut self) -> Result<bool, String> {
        if !self.fill()? {
            return Ok(false);
        }
        while self.end < self.buf.len() && self.fill()? {}
        Ok(true)
    }

    /// The next byte that is not whitespace, not consumed; `None` at the end of the body.
    fn peek(&mut self) -> Result<Option<u8>, String> {
        loop {
            while self.pos < self.end {
                match self.buf[self.pos] {
                    b' ' | b'\n' | b'\r' | b'\t' => self.pos += 1,
                    byte => return Ok(Some(byte)),
                }
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn expect(&mut self, wanted: u8) -> Result<(), String> {
        match self.peek()? {
            Some(byte) if byte == wanted => {
                self.pos += 1;
                Ok(())
            }
            Some(byte) => Err(format!(
                "expected `{}`, found `{}` at byte {}",
                wanted as char, byte as char, self.pos
            )),
            None => Err(format!(
                "expected `{}`, found the end of the answer",
                wanted as char
            )),
        }
    }

    /// Parses one value at the current position with `parse(bytes, at_eof)`, which returns
    /// what it made of it and how many bytes it used, reading more while it needs more.
    fn value<T>(&mut self, parse: &mut ValueParser<'_, T>) -> Result<T, String> {
        if self.peek()?.is_none() {
            return Err("unexpected end of the answer".into());
        }
        loop {
            match parse(&self.buf[self.pos..self.end], self.eof) {
                Ok((value, used)) => {
                    self.pos += used;
                    return Ok(value);
                }
                Err(Parsed::NeedMore) => {
                    if !self.fill_buffer()? {
                        return Err("unexpected end of the answer".into());
                    }
                }
                Err(Parsed::Invalid(e)) => return Err(e.to_string()),
            }
        }
    }

    /// Any value of type `T` (keys, skipped values).
    fn typed<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, String> {
        self.value(&mut |slice, at_eof| {
            let mut values = serde_json::Deserializer::from_slice(slice).into_iter::<T>();
            match values.next() {
                Some(Ok(value)) => {
                    let used = values.byte_offset();
                    // A number running to the end of what was read may go on.
                    if used == slice.len() && !at_eof {
                        Err(Parsed::NeedMore)
                    } else {
                        Ok((value, used))
                    }
                }
                Some(Err(e)) => Err(e.into()),
                None => Err(Parsed::NeedMore),
            }
        })
    }

    fn skip_value(&mut self) -> Result<(), String> {
        self.typed::<IgnoredAny>().map(|_| ())
    }

    /// Walks an object, handing each key to `on_key`, which must consume its value.
    fn object(
        &mut self,
        on_key: &mut dyn FnMut(&mut Self, String) -> Result<(), String>,
    ) -> Result<(), String> {
        self.expect(b'{')?;
        if self.peek()? == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key: String = self.typed()?;
            self.expect(b':')?;
            on_key(self, key)?;
            match self.peek()? {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.expect(b'}'),
            }
        }
    }

    /// Walks an array, calling `on_item` for each element, which must consume it.
    fn array(
        &mut self,
        on_item: &mut dyn FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        self.expect(b'[')?;
        if self.peek()? == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            on_item(self)?;
            match self.peek()? {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.expect(b']'),
            }
        }
    }

    /// Nothing but whitespace may follow the document.
    fn end(&mut self) -> Result<(), String> {
        match self.peek()? {
            None => Ok(()),
            Some(byte) => Err(format!(
                "trailing characters after the answer (`{}`)",
                byte as char
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_stream_is_parsed_and_bad_samples_skipped() {
        let body = br#"{"data":{"data":[
            {"timestamp":100,"id":"qemu/101","metric":"cpu_current","value":0.5,"type":"gauge"},
            {"timestamp":100,"id":"qemu/101","metric":"mem_used","value":"1024"},
            {"timestamp":100,"metric":"cpu_current","value":0.5},
            {"timestamp":110,"id":"node/pve1","metric":"cpu_current","value":null}
        ]}}"#;
        let mut seen = Vec::new();
        let count = parse_metrics_export(&mut &body[..], &mut |s| seen.push(s)).unwrap();
        assert_eq!(count, 2);
        assert_eq!(seen[1].value, 1024.0);
        assert_eq!(seen[0].id, "qemu/101");
    }

    #[test]
    fn malformed_metrics_are_an_error() {
        for body in [
            &br#"{"data":{"data":[{"timestamp":1,"#[..],
            br#"{"data":{"data":{"x":1}}}"#,
            br#"{"data":{"data":[{"timestamp":1}]}"#,
            br#"{"data":{"data":[{"timestamp":1}]}}x"#,
            br#"{"data":{"data":[{"timestamp":1} {"timestamp":2}]}}"#,
            br#"{"data":{"data":[1]}}"#,
            br#"{"data":{"other":[]}}"#,
            br#"{"data":null}"#,
            br#"{}"#,
            b"",
        ] {
            let text = String::from_utf8_lossy(body);
            assert!(
                parse_metrics_export(&mut &body[..], &mut |_| {}).is_err(),
                "accepted: {text}"
            );
        }
    }

    /// Hands out the body a few bytes at a time, as a slow network would.
    struct Trickle<'a> {
        body: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.body.len());
            buf[..n].copy_from_slice(&self.body[..n]);
            self.body = &self.body[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_huge_value_in_short_reads_is_parsed_a_logarithmic_number_of_times() {
        // A 15 MiB string value arriving 16 KiB at a time (TLS records).
        let mut body = b"\"".to_vec();
        body.extend(std::iter::repeat_n(b'x', 15 << 20));
        body.extend(b"\" ]");
        let mut reader = Trickle {
            body: &body,
            step: 16 * 1024,
        };
        let mut stream = JsonStream::new(&mut reader);
        let mut attempts = 0;
        let len = stream
            .value(&mut |slice, at_eof| {
                attempts += 1;
                let mut values = serde_json::Deserializer::from_slice(slice).into_iter::<String>();
                match values.next() {
                    Some(Ok(s)) => Ok((s.len(), values.byte_offset())),
                    Some(Err(e)) if e.is_eof() && !at_eof => Err(Parsed::NeedMore),
                    Some(Err(e)) => Err(e.into()),
                    None => Err(Parsed::NeedMore),
                }
            })
            .unwrap();
        assert_eq!(len, 15 << 20);
        // 64 KiB doubling to 16 MiB: 9 buffer sizes; once per short read would be 960.
        assert!(attempts <= 10, "{attempts} parse attempts");
        // And the whole export with such a sample in it still parses.
        let mut export =
            br#"{"data":{"data":[{"timestamp":1,"id":"qemu/101","metric":"cpu","value":1,"junk":"#
                .to_vec();
        export.extend(&body[..body.len() - 2]);
        export.extend(b"}]}}");
        let mut seen = 0;
        let count = parse_metrics_export(
            &mut Trickle {
                body: &export,
                step: 16 * 1024,
            },
            &mut |_| seen += 1,
        )
        .unwrap();
        assert_eq!((count, seen), (1, 1));
    }

    #[test]
    fn metrics_are_the_same_whatever_the_chunks_and_layout() {
        // Extra keys around and inside the envelope (with a long number and nested values
        // that must be skipped), keys in any order, escapes, numbers as strings, whitespace.
        let body = br#" { "total" : 123456789012 , "data" : { "meta": {"a": [1, {"b": "]}"}]},
            "data" : [
              {"value": 0.25, "metric": "cpu_current", "id": "qemu/101", "timestamp": 100},
              {"timestamp": "110", "id": "qemu\/101", "metric": "cpu_max", "value": "2"},
              {"timestamp": 120, "id": "node/pve1", "metric": "mem_used", "value": 1e3,
               "type": "gauge", "extra": {"x": [1, 2]}},
              {"timestamp": 130, "id": "qemu/101", "metric": "uptime", "value": true}
            ] , "more": "x" }, "message": null } "#;
        let mut expected = Vec::new();
        let count = parse_metrics_export(&mut &body[..], &mut |s| expected.push(s)).unwrap();
        assert_eq!(count, 3);
        assert_eq!(expected[0].value, 0.25);
        assert_eq!(expected[1].id, "qemu/101");
        assert_eq!(expected[1].metric, "cpu_max");
        assert_eq!(expected[1].timestamp, 110);
        assert_eq!(expected[2].value, 1000.0);
        for step in [1, 2, 3, 7, 64] {
            let mut seen = Vec::new();
            let mut reader = Trickle { body, step };
            let count = parse_metrics_export(&mut reader, &mut |s| seen.push(s)).unwrap();
            assert_eq!(count, 3, "step {step}");
            assert_eq!(seen, expected, "step {step}");
        }
    }

    /// Both readers of a sample, on many variants of sample objects (usual, odd, broken and
    /// cut): wherever the fast one reads a sample, serde reads the same sample from the same
    /// bytes.
    #[test]
    fn the_fast_sample_reader_agrees_with_serde() {
        let fields: [(&str, &[&str]); 5] = [
            (
                "timestamp",
                &[
                    "100",
                    "0",
                    "18446744073709551615",
                    "18446744073709551616",
                    "1.5",
                    "-1",
                    "\"100\"",
                    "null",
                    "1e2",
                    "0100",
                    "true",
                ],
            ),
            (
                "id",
                &[
                    "\"qemu/101\"",
                    "\"node/pve1\"",
                    "\"qemu\\/101\"",
                    "\"ü/1\"",
                    "\"\"",
                    "101",
                    "null",
                    "\"a\u{1}b\"",
                ],
            ),
            (
                "metric",
                &["\"cpu_current\"", "\"mem_used\"", "\"cpu_\\u006dax\"", "7"],
            ),
            (
                "value",
                &[
                    "0",
                    "0.5",
                    "-0.0",
                    "1e3",
                    "1E-2",
                    "2.5e+3",
                    "123456789012345678901234",
                    "1e400",
                    "\"2\"",
                    "null",
                    "true",
                    "01",
                    "1.",
                    ".5",
                    "-",
                    "0.1234567890123456789",
                ],
            ),
            (
                "type",
                &[
                    "\"gauge\"",
                    "\"gäuge\"",
                    "\"ga\\\"uge\"",
                    "true",
                    "false",
                    "null",
                    "nul",
                    "-3.5e2",
                    "[1]",
                    "{\"a\":1}",
                ],
            ),
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let spaces = ["", "", "", " ", "\n  "];
        let (mut fast_read, mut compared) = (0, 0);
        for _ in 0..20_000 {
            let mut order: Vec<usize> = (0..fields.len()).collect();
            for k in (1..order.len()).rev() {
                order.swap(k, next(k + 1));
            }
            let mut text = String::from("{");
            let mut first = true;
            for &f in &order {
                let (name, values) = fields[f];
                // Usually the first, plain value; sometimes an odd one, missing or doubled.
                let times = match next(20) {
                    0 => 0,
                    1 => 2,
                    _ => 1,
                };
                for _ in 0..times {
                    let value = if next(3) == 0 {
                        values[next(values.len())]
                    } else {
                        values[0]
                    };
                    if !first {
                        text.push(',');
                    }
                    first = false;
                    let sp = spaces[next(spaces.len())];
                    text.push_str(&format!("{sp}\"{name}\"{sp}:{sp}{value}{sp}"));
                }
            }
            text.push('}');
            text.push_str([",", "]", " ", "x", "", "}"][next(6)]);
            let mut bytes = text.into_bytes();
            if next(8) == 0 {
                bytes.truncate(next(bytes.len() + 1));
            }
            let Some((sample, used)) = fast_sample(&bytes) else {
                continue;
            };
            fast_read += 1;
            let text = String::from_utf8_lossy(&bytes);
            let (expected, expected_used) = match serde_sample(&bytes) {
                Ok(parsed) => parsed,
                Err(Parsed::NeedMore) => panic!("fast read a cut object: {text}"),
                Err(Parsed::Invalid(e)) => panic!("fast read what serde refuses ({e}): {text}"),
            };
            assert_eq!(used, expected_used, "{text}");
            match (sample, expected) {
                (Some(a), Some(b)) => {
                    compared += 1;
                    assert_eq!(
                        (a.timestamp, &a.id, &a.metric),
                        (b.timestamp, &b.id, &b.metric)
                    );
                    let tolerance = b.value.abs() * 1e-15;
                    assert!((a.value - b.value).abs() <= tolerance, "{text}");
                }
                (None, None) => {}
                (a, b) => panic!("fast {a:?}, serde {b:?}: {text}"),
            }
        }
        // The variants exercise both readers.
        assert!(
            fast_read > 3_000 && compared > 2_000,
            "{fast_read} {compared}"
        );
    }

    #[test]
    fn a_large_body_is_parsed_across_many_chunks() {
        let mut body = String::from(r#"{"data":{"data":["#);
        let n = 20_000;
        for i in 0..n {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"id":"qemu/{}","metric":"mem_used","timestamp":{},"type":"gauge","value":{}}}"#,
                100 + i % 50,
                1000 + i / 50 * 10,
                i
            ));
        }
        body.push_str("]}}");
        let mut sum = 0.0;
        let mut reader = Trickle {
            body: body.as_bytes(),
            step: 4093,
        };
        let count = parse_metrics_export(&mut reader, &mut |s| sum += s.value).unwrap();
        assert_eq!(count, n);
        assert_eq!(sum, (0..n).map(|i| i as f64).sum::<f64>());
    }
}
