//! Did the guest take what it was given? A live grow can succeed on the Proxmox side and do
//! nothing for the guest: hot-added vCPUs and memory must be brought online inside it (on
//! Linux by a udev rule or `memhp_default_state=online`; minimal images often lack both).
//! Where the VM runs the QEMU guest agent, it is asked once after a grow; a guest that left
//! what was added offline gets the change reverted and the fix to run inside it.

use std::time::{Duration, Instant};

use crate::apply::{self, ApplyTiming, Outcome};
use crate::policy::Resource;
use crate::pve::types::{GuestMemoryBlock, GuestVcpu};
use crate::pve::{ApiError, ApiErrorKind, Client};
use crate::state::{ConfigWrite, key_of};
use crate::units::MIB;

/// What the guest agent said of one grown resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Onlined {
    /// What was added is online.
    Yes,
    /// Added but left offline: `online` of `expected` (vCPUs, or MiB).
    Offline { online: u64, expected: u64 },
    /// Could not tell (the agent did not answer, or the token may not ask it).
    Unknown(String),
}

/// The vCPUs online against the `expected` count. Pure.
pub fn judge_vcpus(expected: u64, vcpus: &[GuestVcpu]) -> Onlined {
    let online = vcpus.iter().filter(|v| v.online).count() as u64;
    if online >= expected {
        Onlined::Yes
    } else {
        Onlined::Offline { online, expected }
    }
}

/// The memory online after a grow to `expected_mib` that added `added_mib`. Pure. Only
/// offline blocks count against the guest (the block list leaves out holes and firmware
/// areas, so the online total never quite reaches the size); offline memory of at least
/// half of what was added means the added memory did not come online.
pub fn judge_memory(
    expected_mib: u64,
    added_mib: u64,
    blocks: &[GuestMemoryBlock],
    block_bytes: u64,
) -> Onlined {
    let offline_mib = offline_mib(blocks, block_bytes);
    if offline_mib == 0 || offline_mib.saturating_mul(2) < added_mib {
        Onlined::Yes
    } else {
        Onlined::Offline {
            online: expected_mib.saturating_sub(offline_mib),
            expected: expected_mib,
        }
    }
}

/// The memory the guest holds offline, in MiB.
pub fn offline_mib(blocks: &[GuestMemoryBlock], block_bytes: u64) -> u64 {
    let offline = blocks.iter().filter(|b| !b.online).count() as u64;
    offline.saturating_mul(block_bytes) / MIB
}

/// What to run inside a Linux guest so that added vCPUs or memory come online (the rules
/// of Proxmox's hotplug documentation).
pub fn fix_inside_the_guest(resource: Resource) -> &'static str {
    match resource {
        Resource::Cpu => {
            "inside the guest, add the udev rule SUBSYSTEM==\"cpu\", ACTION==\"add\", \
             TEST==\"online\", ATTR{online}==\"0\", ATTR{online}=\"1\" (e.g. \
             /lib/udev/rules.d/80-hotplug-cpu.rules)"
        }
        Resource::Memory => {
            "inside the guest, boot with memhp_default_state=online on the kernel command line, \
             or add the udev rule SUBSYSTEM==\"memory\", ACTION==\"add\", TEST==\"state\", \
             ATTR{state}==\"offline\", ATTR{state}=\"online\""
        }
    }
}

/// The grown resources of `change` (against the sizes before it), as (resource, before, after).
pub fn grown(
    change: &ConfigWrite,
    vcpus_before: u64,
    memory_before: u64,
) -> Vec<(Resource, u64, u64)> {
    let mut out = Vec::new();
    if let Some(to) = change.vcpus.filter(|to| *to > vcpus_before) {
        out.push((Resource::Cpu, vcpus_before, to));
    }
    if let Some(to) = change.memory_mib.filter(|to| *to > memory_before) {
        out.push((Resource::Memory, memory_before, to));
    }
    out
}

/// Asks the guest agent about one grown resource, giving the guest up to `wait` to bring it
/// online (polled every quarter of it).
pub fn confirm(
    client: &Client,
    node: &str,
    vmid: u32,
    (resource, from, to): (Resource, u64, u64),
    wait: Duration,
) -> Onlined {
    let started = Instant::now();
    loop {
        let judged = match resource {
            Resource::Cpu => client
                .agent_vcpus(node, vmid)
                .map(|vcpus| judge_vcpus(to, &vcpus)),
            Resource::Memory => client.agent_memory_blocks(node, vmid).and_then(|blocks| {
                let size = client.agent_memory_block_size(node, vmid)?;
                Ok(judge_memory(to, to - from, &blocks, size))
            }),
        };
        match judged {
            Ok(Onlined::Offline { .. }) if started.elapsed() < wait => {
                std::thread::sleep(wait / 4);
            }
            Ok(onlined) => return onlined,
            Err(e) => return Onlined::Unknown(agent_unavailable(&e)),
        }
    }
}

/// What the guest agent told of a write's grown resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// Nobody asked: no agent, a container, or the write did not go live.
    NotAsked,
    /// The agent was asked; these grown resources it could not confirm, with why.
    Asked {
        unconfirmed: Vec<(Resource, String)>,
    },
}

impl Confirmation {
    /// The agent confirmed `resource` online (or found nothing of it to confirm).
    pub fn confirmed(&self, resource: Resource) -> bool {
        match self {
            Confirmation::NotAsked => false,
            Confirmation::Asked { unconfirmed } => unconfirmed.iter().all(|(r, _)| *r != resource),
        }
    }
}

/// After a write that went live: ask the guest agent about each grown resource, and take
/// back what the guest left offline (it only costs the host and reads as a load drop).
/// Returns the write's outcome as it now stands, and the grown resources the agent could
/// not confirm, with why.
pub fn check_after_write(
    client: &Client,
    node: &str,
    vmid: u32,
    change: &ConfigWrite,
    (vcpus_before, memory_before): (u64, u64),
    timing: ApplyTiming,
) -> (Outcome, Confirmation) {
    let mut unconfirmed = Vec::new();
    let mut offline = Vec::new();
    for grow in grown(change, vcpus_before, memory_before) {
        match confirm(client, node, vmid, grow, timing.guest_online_wait) {
            Onlined::Yes => {}
            Onlined::Offline { online, expected } => offline.push(Offline {
                resource: grow.0,
                from: grow.1,
                to: grow.2,
                online,
                expected,
            }),
            Onlined::Unknown(why) => unconfirmed.push((grow.0, why)),
        }
    }
    let outcome = if offline.is_empty() {
        Outcome::Applied
    } else {
        take_back(client, node, vmid, &offline, timing)
    };
    (outcome, Confirmation::Asked { unconfirmed })
}

/// A grown resource the guest left offline.
struct Offline {
    resource: Resource,
    from: u64,
    to: u64,
    online: u64,
    expected: u64,
}

/// Writes the sizes before the grow back for what the guest left offline.
fn take_back(
    client: &Client,
    node: &str,
    vmid: u32,
    offline: &[Offline],
    timing: ApplyTiming,
) -> Outcome {
    let mut revert = ConfigWrite::default();
    let mut said = Vec::new();
    for o in offline {
        let (what, unit) = match o.resource {
            Resource::Cpu => {
                revert.vcpus = Some(o.from);
                ("vCPUs", "vCPUs")
            }
            Resource::Memory => {
                revert.memory_mib = Some(o.from);
                ("memory", "MiB")
            }
        };
        said.push(format!(
            "the guest left the added {what} offline ({} of {} {unit} online after {} → {}): {}",
            o.online,
            o.expected,
            o.from,
            o.to,
            fix_inside_the_guest(o.resource)
        ));
    }
    let taken_back = match client.vm_config_current(node, vmid) {
        Ok(config) => apply::apply(client, node, vmid, &config, &revert, timing),
        Err(e) => Outcome::Failed(e.to_string()),
    };
    // What the VM runs with now: the sizes before where taken back, else the grown ones.
    let grown_to = |resource| {
        offline
            .iter()
            .find(|o| o.resource == resource)
            .map(|o| o.to)
    };
    let (vcpus_now, memory_mib_now, done) = match &taken_back {
        Outcome::Applied => (revert.vcpus, revert.memory_mib, "; taken back".to_string()),
        other => (
            grown_to(Resource::Cpu),
            grown_to(Resource::Memory),
            format!(
                "; TAKING IT BACK FAILED ({}): it stays, unused by the guest",
                why_not_applied(other)
            ),
        ),
    };
    Outcome::Refused {
        keys: offline
            .iter()
            .map(|o| key_of(o.resource).to_string())
            .collect(),
        message: format!("{}{done}", said.join("; ")),
        vcpus_now,
        memory_mib_now,
        host_max_memory_mib: None,
        guest_offline: true,
    }
}

/// The words of a write's outcome other than applied.
fn why_not_applied(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Applied => "applied",
        Outcome::Refused { message, .. } => message,
        Outcome::Skipped(why) | Outcome::Unsettled(why) | Outcome::Failed(why) => why,
    }
}

/// Why the agent could not tell, with what would let it.
pub fn agent_unavailable(error: &ApiError) -> String {
    if error.kind == ApiErrorKind::Permission {
        "the token may not ask the guest agent (grant VM.GuestAgent.Audit on Proxmox VE 9, \
         VM.Monitor before) to have added vCPUs and memory confirmed online"
            .to_string()
    } else {
        format!("the guest agent did not answer ({})", error.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vcpus(online: &[bool]) -> Vec<GuestVcpu> {
        online
            .iter()
            .enumerate()
            .map(|(i, &online)| GuestVcpu {
                logical_id: i as u64,
                online,
            })
            .collect()
    }

    fn blocks(online: usize, offline: usize) -> Vec<GuestMemoryBlock> {
        (0..online + offline)
            .map(|i| GuestMemoryBlock {
                phys_index: i as u64,
                online: i < online,
            })
            .collect()
    }

    #[test]
    fn added_vcpus_left_offline_are_told_apart() {
        assert_eq!(judge_vcpus(4, &vcpus(&[true; 4])), Onlined::Yes);
        assert_eq!(
            judge_vcpus(4, &vcpus(&[true, true, false, false])),
            Onlined::Offline {
                online: 2,
                expected: 4
            }
        );
    }

    #[test]
    fn added_memory_left_offline_is_told_apart() {
        const BLOCK: u64 = 128 * MIB;
        // 4 GiB grown to 6 GiB: 16 blocks of 128 MiB added.
        assert_eq!(
            judge_memory(6144, 2048, &blocks(47, 0), BLOCK),
            Onlined::Yes
        );
        assert_eq!(
            judge_memory(6144, 2048, &blocks(31, 16), BLOCK),
            Onlined::Offline {
                online: 4096,
                expected: 6144
            }
        );
        // One block some admin took offline is not the guest ignoring 2 GiB.
        assert_eq!(
            judge_memory(6144, 2048, &blocks(46, 1), BLOCK),
            Onlined::Yes
        );
    }

    #[test]
    fn only_grown_resources_are_asked_about() {
        let change = ConfigWrite {
            vcpus: Some(4),
            memory_mib: Some(2048),
            balloon_mib: None,
        };
        assert_eq!(grown(&change, 2, 4096), vec![(Resource::Cpu, 2, 4)]);
        assert_eq!(
            grown(&change, 4, 1024),
            vec![(Resource::Memory, 1024, 2048)]
        );
    }
}
