//! Typed calls of the Proxmox VE endpoints pvescale uses.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::time::{Duration, Instant};

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::client::Client;
use super::error::{ApiError, ApiErrorKind, ApiResult};
use super::types::{
    Consolidation, MetricSample, NodeStatus, PendingItem, ResourceRow, Resources, RrdPoint,
    TaskStatus, Timeframe, Version, VmConfig, VmCurrentStatus, de_opt_f64, de_opt_u64,
};

/// Largest `metrics/export` answer we accept. At 5000 VMs a 5-minute window is about
/// 100 MB; it is parsed as a stream, so this bounds time, not memory.
pub const METRICS_BODY_LIMIT: u64 = 1024 * 1024 * 1024;

/// How a config write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// `OK` or `WARNINGS: ...`.
    Ok(String),
    /// The task ended with this error text.
    Failed(String),
    /// Still running when we stopped waiting: the outcome is settled by a later read.
    StillRunning,
}

impl Client {
    pub fn version(&self) -> ApiResult<Version> {
        self.get("/version", &[])
    }

    /// Every guest and node of the cluster in one call.
    pub fn resources(&self) -> ApiResult<Resources> {
        let rows: Vec<ResourceRow> = self.get("/cluster/resources", &[])?;
        Ok(Resources::from_rows(rows))
    }

    /// The privileges of the authenticated user or token, per ACL path.
    pub fn permissions(&self) -> ApiResult<BTreeMap<String, BTreeMap<String, serde_json::Value>>> {
        self.get("/access/permissions", &[])
    }

    /// Streams `cluster/metrics/export?history=1&start-time=T` sample by sample (the answer
    /// can hold millions of samples; none is kept here). Returns the number of samples.
    pub fn metrics_export(
        &self,
        start_time: u64,
        mut on_sample: impl FnMut(MetricSample),
    ) -> ApiResult<u64> {
        let query = [
            ("history", "1".to_string()),
            ("start-time", start_time.to_string()),
        ];
        // get_with may retry, so the callback is handed over through a RefCell.
        let callback = std::cell::RefCell::new(&mut on_sample);
        self.get_with(
            "/cluster/metrics/export",
            &query,
            METRICS_BODY_LIMIT,
            |reader| {
                let mut guard = callback.borrow_mut();
                parse_metrics_stream(reader, &mut **guard)
            },
        )
    }

    pub fn rrddata(
        &self,
        node: &str,
        vmid: u32,
        timeframe: Timeframe,
        cf: Consolidation,
    ) -> ApiResult<Vec<RrdPoint>> {
        self.get(
            &format!("/nodes/{node}/qemu/{vmid}/rrddata"),
            &[
                ("timeframe", timeframe.as_str().to_string()),
                ("cf", cf.as_str().to_string()),
            ],
        )
    }

    pub fn node_status(&self, node: &str) -> ApiResult<NodeStatus> {
        self.get(&format!("/nodes/{node}/status"), &[])
    }

    /// The config the running VM has (`current=1`: pending values not merged in).
    pub fn vm_config_current(&self, node: &str, vmid: u32) -> ApiResult<VmConfig> {
        self.get(
            &format!("/nodes/{node}/qemu/{vmid}/config"),
            &[("current", "1".to_string())],
        )
    }

    /// Runtime status; used only to learn whether the guest reports balloon statistics
    /// (its `cpu` figure is meaningless on a first call and is not used).
    pub fn vm_status_current(&self, node: &str, vmid: u32) -> ApiResult<VmCurrentStatus> {
        self.get(&format!("/nodes/{node}/qemu/{vmid}/status/current"), &[])
    }

    pub fn vm_pending(&self, node: &str, vmid: u32) -> ApiResult<Vec<PendingItem>> {
        self.get(&format!("/nodes/{node}/qemu/{vmid}/pending"), &[])
    }

    /// Asynchronous config write; returns the task's UPID. Never retried.
    pub fn vm_config_post(
        &self,
        node: &str,
        vmid: u32,
        params: &[(&str, String)],
    ) -> ApiResult<String> {
        let upid: Option<String> =
            self.post(&format!("/nodes/{node}/qemu/{vmid}/config"), params)?;
        upid.filter(|u| u.starts_with("UPID:")).ok_or_else(|| {
            ApiError::new(
                ApiErrorKind::Decode,
                format!("POST /nodes/{node}/qemu/{vmid}/config"),
                "answer without a task id (UPID)",
            )
        })
    }

    /// Synchronous config write. Never retried.
    pub fn vm_config_put(&self, node: &str, vmid: u32, params: &[(&str, String)]) -> ApiResult<()> {
        let _: serde_json::Value =
            self.put(&format!("/nodes/{node}/qemu/{vmid}/config"), params)?;
        Ok(())
    }

    /// Drops pending changes of these keys so nothing of ours waits for the next reboot.
    pub fn vm_revert(
        &self,
        node: &str,
        vmid: u32,
        keys: &[&str],
        digest: Option<&str>,
    ) -> ApiResult<()> {
        let mut params = vec![("revert", keys.join(","))];
        if let Some(digest) = digest {
            params.push(("digest", digest.to_string()));
        }
        self.vm_config_put(node, vmid, &params)
    }

    pub fn task_status(&self, node: &str, upid: &str) -> ApiResult<TaskStatus> {
        self.get(
            &format!("/nodes/{node}/tasks/{}/status", encode_path_segment(upid)),
            &[],
        )
    }

    /// Polls a task until it stops or `limit` passes (then `StillRunning`).
    pub fn wait_task(
        &self,
        node: &str,
        upid: &str,
        limit: Duration,
        poll: Duration,
    ) -> ApiResult<TaskOutcome> {
        let started = Instant::now();
        let mut interval = poll;
        loop {
            let status = self.task_status(node, upid)?;
            if !status.is_running() {
                let exit = status.exitstatus.clone().unwrap_or_default();
                return Ok(if status.succeeded() {
                    TaskOutcome::Ok(exit)
                } else {
                    TaskOutcome::Failed(exit)
                });
            }
            if started.elapsed() + interval > limit {
                return Ok(TaskOutcome::StillRunning);
            }
            std::thread::sleep(interval);
            interval = (interval * 2).min(Duration::from_secs(2));
        }
    }
}

/// UPIDs contain `:`, which is fine in a path, but be safe with anything else.
fn encode_path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b':'
            | b'@'
            | b'!' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Parses `{"data": {"data": [ sample, ... ]}}` without building the array.
fn parse_metrics_stream(
    reader: &mut dyn Read,
    on_sample: &mut dyn FnMut(MetricSample),
) -> Result<u64, String> {
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(64 * 1024, reader));
    let count = OuterEnvelope { on_sample }
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(count)
}

struct OuterEnvelope<'a> {
    on_sample: &'a mut dyn FnMut(MetricSample),
}

impl<'de> DeserializeSeed<'de> for OuterEnvelope<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OuterEnvelope<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("{\"data\": {\"data\": [...]}}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut count = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "data" && count.is_none() {
                count = Some(map.next_value_seed(InnerEnvelope {
                    on_sample: &mut *self.on_sample,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        count.ok_or_else(|| serde::de::Error::missing_field("data"))
    }
}

struct InnerEnvelope<'a> {
    on_sample: &'a mut dyn FnMut(MetricSample),
}

impl<'de> DeserializeSeed<'de> for InnerEnvelope<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InnerEnvelope<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("{\"data\": [...]}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut count = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "data" && count.is_none() {
                count = Some(map.next_value_seed(SampleList {
                    on_sample: &mut *self.on_sample,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        count.ok_or_else(|| serde::de::Error::missing_field("data"))
    }
}

struct SampleList<'a> {
    on_sample: &'a mut dyn FnMut(MetricSample),
}

impl<'de> DeserializeSeed<'de> for SampleList<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_seq(self)
    }
}

/// A sample as sent; anything unusable (no id, non-numeric value) is skipped, not fatal.
#[derive(Deserialize)]
struct RawSample {
    #[serde(default, deserialize_with = "de_opt_u64")]
    timestamp: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    value: Option<f64>,
}

impl<'de> Visitor<'de> for SampleList<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of metric samples")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut count = 0;
        while let Some(raw) = seq.next_element::<RawSample>()? {
            if let (Some(timestamp), Some(id), Some(metric), Some(value)) =
                (raw.timestamp, raw.id, raw.metric, raw.value)
            {
                (self.on_sample)(MetricSample {
                    timestamp,
                    id,
                    metric,
                    value,
                });
                count += 1;
            }
        }
        Ok(count)
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
        let count = parse_metrics_stream(&mut &body[..], &mut |s| seen.push(s)).unwrap();
        assert_eq!(count, 2);
        assert_eq!(seen[1].value, 1024.0);
        assert_eq!(seen[0].id, "qemu/101");
    }

    #[test]
    fn malformed_metrics_are_an_error() {
        let body = br#"{"data":{"data":[{"timestamp":1,"#;
        assert!(parse_metrics_stream(&mut &body[..], &mut |_| {}).is_err());
        let wrong = br#"{"data":{"data":{"x":1}}}"#;
        assert!(parse_metrics_stream(&mut &wrong[..], &mut |_| {}).is_err());
    }
}
