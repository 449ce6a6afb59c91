//! The DIMM grid of Proxmox VE memory hotplug.
//!
//! With memory hotplug, a VM has 1024 MiB of static memory and the rest in DIMMs: 32 DIMMs of
//! 512 MiB, then 32 of 1024 MiB, then 32 of 2048 MiB, and so on, the DIMM size doubling every
//! 32 DIMMs. The sizes a VM can have are therefore 1024 + k·512 up to 17408 MiB, then steps of
//! 1024 up to 50176, of 2048 up to 115712, and so on (`pve-api/FACTS.md`). Proxmox rounds up
//! when adding and down when removing, and a stopped VM with an off-grid value fails to start,
//! so pvescale only ever sends sizes on this grid.
//!
//! The maximum depends on the host (qemu-server Memory.pm `get_max_mem`): 2^(bits − 21) MiB
//! for the host's physical address bits rounded down to even, capped at 40 bits unless the
//! CPU type is `host` or `max`, at most 4 TiB. pvescale stays within 524288 MiB (the value
//! for the default CPU types on hosts of 40 bits or more; the largest grid size not above it
//! is [`max_on_grid`], 508928 MiB), and within a smaller maximum once Proxmox has named it
//! in a refusal (`VmFacts::host_max_memory_mib`). VMs with 1 GiB hugepages use a different
//! grid and are not covered here.

/// Memory that is not in DIMMs (MiB): the smallest size with memory hotplug.
pub const STATIC_MIB: u64 = 1024;

/// The largest memory pvescale sets (MiB): Proxmox's maximum for the default CPU types on a
/// host of 40 physical address bits or more.
pub const MAX_MIB: u64 = 524_288;

/// Size of the DIMMs of the first group (MiB).
const FIRST_DIMM_MIB: u64 = 512;

/// DIMMs per group; the DIMM size doubles from one group to the next.
const DIMMS_PER_GROUP: u64 = 32;

/// Number of groups Proxmox VE defines (256 DIMMs in all).
const GROUPS: u32 = 8;

/// The groups of the grid as `(start, dimm size, end)`: sizes `start + k·size` for
/// `k in 1..=32` end at `end`.
fn groups() -> impl Iterator<Item = (u64, u64, u64)> {
    (0..GROUPS).scan(STATIC_MIB, |start, g| {
        let size = FIRST_DIMM_MIB << g;
        let from = *start;
        let end = from + DIMMS_PER_GROUP * size;
        *start = end;
        Some((from, size, end))
    })
}

/// The grid size at or above `mib` (not capped at [`MAX_MIB`]), `None` beyond the last group.
fn ceil_uncapped(mib: u64) -> Option<u64> {
    if mib <= STATIC_MIB {
        return Some(STATIC_MIB);
    }
    groups()
        .find(|&(_, _, end)| mib <= end)
        .map(|(start, size, _)| start + (mib - start).div_ceil(size) * size)
}

/// The largest size on the grid that is not above [`MAX_MIB`]: 508928 MiB.
pub fn max_on_grid() -> u64 {
    let mut best = STATIC_MIB;
    for (start, size, end) in groups() {
        if end <= MAX_MIB {
            best = end;
        } else {
            if start < MAX_MIB {
                best = start + (MAX_MIB - start) / size * size;
            }
            break;
        }
    }
    best
}

/// Whether `mib` is a size a VM with memory hotplug can have (and is not above the maximum).
pub fn is_on_grid(mib: u64) -> bool {
    mib <= max_on_grid() && ceil_uncapped(mib) == Some(mib)
}

/// The smallest grid size `>= mib`; `None` when that would be above the maximum.
/// Anything up to 1024 MiB rounds up to 1024 MiB.
pub fn round_up(mib: u64) -> Option<u64> {
    ceil_uncapped(mib).filter(|&m| m <= max_on_grid())
}

/// The largest grid size `<= mib`; `None` below 1024 MiB. Anything above the maximum rounds
/// down to [`max_on_grid`].
pub fn round_down(mib: u64) -> Option<u64> {
    if mib < STATIC_MIB {
        return None;
    }
    let max = max_on_grid();
    if mib >= max {
        return Some(max);
    }
    groups()
        .find(|&(_, _, end)| mib <= end)
        .map(|(start, size, _)| start + (mib - start) / size * size)
}

/// The next grid size strictly above `mib` (one DIMM more), if within the maximum.
pub fn next_above(mib: u64) -> Option<u64> {
    round_up(mib.saturating_add(1))
}

/// The next grid size strictly below `mib` (one DIMM less), if any.
pub fn next_below(mib: u64) -> Option<u64> {
    mib.checked_sub(1).and_then(round_down)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_follows_the_dimm_groups() {
        assert!(is_on_grid(1024));
        assert!(is_on_grid(1536));
        assert!(is_on_grid(17408));
        assert!(!is_on_grid(17920), "1024 MiB steps after 17408");
        assert!(is_on_grid(18432));
        assert!(is_on_grid(50176));
        assert!(!is_on_grid(51200), "2048 MiB steps after 50176");
        assert!(is_on_grid(52224));
        assert!(is_on_grid(115712));
        assert!(!is_on_grid(117760), "4096 MiB steps after 115712");
        assert!(is_on_grid(119808));
        assert!(!is_on_grid(1000));
        assert!(!is_on_grid(0));
        assert!(!is_on_grid(2000));
    }

    #[test]
    fn maximum_is_the_last_grid_size_within_524288() {
        assert_eq!(max_on_grid(), 508_928);
        assert!(is_on_grid(508_928));
        assert!(
            !is_on_grid(MAX_MIB),
            "524288 itself is between two grid sizes"
        );
        assert!(!is_on_grid(508_928 + 16_384), "above the maximum");
    }

    #[test]
    fn rounding_up_and_down() {
        assert_eq!(round_up(0), Some(1024));
        assert_eq!(round_up(1024), Some(1024));
        assert_eq!(round_up(1025), Some(1536));
        assert_eq!(round_up(17409), Some(18432));
        assert_eq!(round_up(50177), Some(52224));
        assert_eq!(round_up(508_929), None);
        assert_eq!(round_down(1023), None);
        assert_eq!(round_down(1024), Some(1024));
        assert_eq!(round_down(1535), Some(1024));
        assert_eq!(round_down(18431), Some(17408));
        assert_eq!(round_down(52223), Some(50176));
        assert_eq!(round_down(10_000_000), Some(508_928));
        assert_eq!(next_above(4096), Some(4608));
        assert_eq!(next_above(17408), Some(18432));
        assert_eq!(next_above(508_928), None);
        assert_eq!(next_below(4096), Some(3584));
        assert_eq!(next_below(18432), Some(17408));
        assert_eq!(next_below(1024), None);
    }

    #[test]
    fn every_rounding_lands_on_the_grid() {
        for mib in (0..600_000).step_by(97) {
            if let Some(up) = round_up(mib) {
                assert!(is_on_grid(up) && up >= mib, "{mib} → {up}");
                assert_eq!(round_down(up), Some(up));
            }
            if let Some(down) = round_down(mib) {
                assert!(is_on_grid(down) && (down <= mib), "{mib} → {down}");
                assert_eq!(round_up(down), Some(down));
            }
        }
    }
}
