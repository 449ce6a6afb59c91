//! Typed calls of the Proxmox VE endpoints pvescale uses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::client::Client;
use super::error::{ApiError, ApiErrorKind, ApiResult};
use super::types::{
    AgentAnswer, ClusterStatusRow, ConfigDigest, Consolidation, CtCurrentStatus, GuestMemoryBlock,
    GuestMemoryBlockInfo, GuestVcpu, HaManagerStatus, MetricSample, NodeStatus, PendingItem,
    ResourceRow, Resources, RrdPoint, TaskEntry, TaskStatus, Timeframe, Version, VmConfig,
    VmCurrentStatus,
};

pub use super::export::parse_metrics_export;
use crate::guest::GuestKind;

/// `/nodes/{node}/qemu/{vmid}/{what}` or `/nodes/{node}/lxc/{vmid}/{what}`.
fn guest_path(kind: GuestKind, node: &str, vmid: u32, what: &str) -> String {
    format!("/nodes/{node}/{}/{vmid}/{what}", kind.api_segment())
}

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

    /// Membership and quorum of the cluster.
    pub fn cluster_status(&self) -> ApiResult<Vec<ClusterStatusRow>> {
        self.get("/cluster/status", &[])
    }

    /// The HA manager's status (who is master, and since when it last wrote).
    pub fn ha_manager_status(&self) -> ApiResult<HaManagerStatus> {
        self.get("/cluster/ha/status/manager_status", &[])
    }

    /// The node's finished config-write tasks (`qmconfig`) started since `since`, newest
    /// first, from its full task index (pve-manager Tasks.pm: 50 by default; we ask for up
    /// to `limit`).
    pub fn node_config_tasks(
        &self,
        node: &str,
        since: u64,
        limit: u32,
    ) -> ApiResult<Vec<TaskEntry>> {
        self.get(
            &format!("/nodes/{node}/tasks"),
            &[
                ("typefilter", "qmconfig".to_string()),
                ("since", since.to_string()),
                ("limit", limit.to_string()),
            ],
        )
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
                parse_metrics_export(reader, &mut **guard)
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
        self.guest_rrddata(GuestKind::Vm, node, vmid, timeframe, cf)
    }

    /// `rrddata` of a VM or container (the same fields; a PVE 9 container's pressure figures
    /// are its own cgroup's).
    pub fn guest_rrddata(
        &self,
        kind: GuestKind,
        node: &str,
        vmid: u32,
        timeframe: Timeframe,
        cf: Consolidation,
    ) -> ApiResult<Vec<RrdPoint>> {
        self.get(
            &guest_path(kind, node, vmid, "rrddata"),
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
        self.guest_config_current(GuestKind::Vm, node, vmid)
    }

    /// The config a running VM or container has (`current=1`: pending values not merged in;
    /// both qemu-server and pve-container take it).
    pub fn guest_config_current(
        &self,
        kind: GuestKind,
        node: &str,
        vmid: u32,
    ) -> ApiResult<VmConfig> {
        self.get(
            &guest_path(kind, node, vmid, "config"),
            &[("current", "1".to_string())],
        )
    }

    /// Runtime status; used only to learn whether the guest reports balloon statistics
    /// (its `cpu` figure is meaningless on a first call and is not used).
    pub fn vm_status_current(&self, node: &str, vmid: u32) -> ApiResult<VmCurrentStatus> {
        self.get(&format!("/nodes/{node}/qemu/{vmid}/status/current"), &[])
    }

    /// The guest's vCPUs and whether each is online, from the QEMU guest agent (qemu-server
    /// API2/Qemu/Agent.pm: `VM.GuestAgent.Audit` on PVE 9, `VM.Monitor` before).
    pub fn agent_vcpus(&self, node: &str, vmid: u32) -> ApiResult<Vec<GuestVcpu>> {
        let answer: AgentAnswer<Vec<GuestVcpu>> =
            self.get(&format!("/nodes/{node}/qemu/{vmid}/agent/get-vcpus"), &[])?;
        Ok(answer.result)
    }

    /// The guest's memory blocks and whether each is online, from the guest agent.
    pub fn agent_memory_blocks(&self, node: &str, vmid: u32) -> ApiResult<Vec<GuestMemoryBlock>> {
        let answer: AgentAnswer<Vec<GuestMemoryBlock>> = self.get(
            &format!("/nodes/{node}/qemu/{vmid}/agent/get-memory-blocks"),
            &[],
        )?;
        Ok(answer.result)
    }

    /// The size of one of the guest's memory blocks, in bytes, from the guest agent.
    pub fn agent_memory_block_size(&self, node: &str, vmid: u32) -> ApiResult<u64> {
        let answer: AgentAnswer<GuestMemoryBlockInfo> = self.get(
            &format!("/nodes/{node}/qemu/{vmid}/agent/get-memory-block-info"),
            &[],
        )?;
        Ok(answer.result.size)
    }

    /// A container's runtime status; used for its own cgroup's pressure.
    pub fn ct_status_current(&self, node: &str, vmid: u32) -> ApiResult<CtCurrentStatus> {
        self.get(
            &guest_path(GuestKind::Ct, node, vmid, "status/current"),
            &[],
        )
    }

    pub fn vm_pending(&self, node: &str, vmid: u32) -> ApiResult<Vec<PendingItem>> {
        self.guest_pending(GuestKind::Vm, node, vmid)
    }

    pub fn guest_pending(
        &self,
        kind: GuestKind,
        node: &str,
        vmid: u32,
    ) -> ApiResult<Vec<PendingItem>> {
        self.get(&guest_path(kind, node, vmid, "pending"), &[])
    }

    /// Asynchronous config write; returns the task's UPID. Never retried. It carries the
    /// digest of the config it was computed from: a concurrent edit makes it fail.
    pub fn vm_config_post(
        &self,
        node: &str,
        vmid: u32,
        params: &[(&str, String)],
        digest: &ConfigDigest,
    ) -> ApiResult<String> {
        let params = with_digest(params, digest);
        let upid: Option<String> =
            self.post(&format!("/nodes/{node}/qemu/{vmid}/config"), &params)?;
        upid.filter(|u| u.starts_with("UPID:")).ok_or_else(|| {
            ApiError::new(
                ApiErrorKind::Decode,
                format!("POST /nodes/{node}/qemu/{vmid}/config"),
                "answer without a task id (UPID)",
            )
        })
    }

    /// Synchronous config write, with the digest of the config it was computed from. Never
    /// retried.
    pub fn vm_config_put(
        &self,
        node: &str,
        vmid: u32,
        params: &[(&str, String)],
        digest: &ConfigDigest,
    ) -> ApiResult<()> {
        self.guest_config_put(GuestKind::Vm, node, vmid, params, digest)
    }

    /// Synchronous config write of a VM or container (a container's only write: pve-container's
    /// `PUT .../lxc/{vmid}/config` returns null and applies under the config lock before it
    /// answers). Never retried.
    pub fn guest_config_put(
        &self,
        kind: GuestKind,
        node: &str,
        vmid: u32,
        params: &[(&str, String)],
        digest: &ConfigDigest,
    ) -> ApiResult<()> {
        let params = with_digest(params, digest);
        let _: serde_json::Value = self.put(&guest_path(kind, node, vmid, "config"), &params)?;
        Ok(())
    }

    /// Drops pending changes of these keys so nothing of ours waits for the next reboot.
    pub fn vm_revert(
        &self,
        node: &str,
        vmid: u32,
        keys: &[&str],
        digest: &ConfigDigest,
    ) -> ApiResult<()> {
        self.vm_config_put(node, vmid, &[("revert", keys.join(","))], digest)
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
        // A task just started is still running: a first look at once only costs a request.
        std::thread::sleep((poll / 2).min(limit));
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

/// The parameters of a config write with its digest last.
fn with_digest<'a>(params: &[(&'a str, String)], digest: &ConfigDigest) -> Vec<(&'a str, String)> {
    params
        .iter()
        .filter(|(name, _)| *name != "digest")
        .cloned()
        .chain(std::iter::once(("digest", digest.to_string())))
        .collect()
}
