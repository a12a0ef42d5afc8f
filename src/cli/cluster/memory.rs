//! How much memory each broker of a local cluster gets, and from where: the data plane's
//! own rule (`plan_memory` in dataplane/src/node.rs, operations.md §2) applied to N brokers
//! and the hugepages free now.

use super::*;

/// Where each broker's memory comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct MemoryPlan {
    /// DPDK's mbuf pool in hugepages (`hugepages = auto|required`), else `--no-huge`.
    pub(super) dpdk_hugepages: bool,
    /// Active segments in hugetlbfs, else in /dev/shm.
    pub(super) segments_in_hugepages: bool,
    pub(super) description: String,
}

/// Hugepage bytes one broker's DPDK takes, and its segments (at start-up, plus room for
/// [`PARTITIONS_BUDGETED`] partitions), as the data plane's `plan_memory` counts them.
pub(super) fn broker_memory_bytes(mbufs: u32, segment_bytes: u64) -> (u64, u64) {
    let dpdk = u64::from(mbufs) * MBUF_ROOM_BYTES + DPDK_OVERHEAD_BYTES;
    let segment = segment_bytes + HUGE_PAGE_BYTES;
    let segments = (2 + 4) * segment + PARTITIONS_BUDGETED * 2 * segment;
    (dpdk, segments)
}

/// Decides where the brokers' memory comes from, from the free hugepages: all in
/// hugepages when they suffice, else DPDK in hugepages and segments in /dev/shm, else
/// neither (`--no-huge`); the `maximum` preset requires DPDK's in hugepages.
pub(super) fn plan_memory(
    nodes: u32,
    mbufs: u32,
    segment_bytes: u64,
    preset: Preset,
    hugepages_free: u64,
) -> Result<MemoryPlan> {
    if !segment_bytes.is_multiple_of(HUGE_PAGE_BYTES) || segment_bytes == 0 {
        bail!("--segment-bytes {segment_bytes}: a multiple of 2 MiB (the huge page size)");
    }
    let (dpdk, segments) = broker_memory_bytes(mbufs, segment_bytes);
    let n = u64::from(nodes);
    let mib = |bytes: u64| bytes >> 20;
    let free = mib(hugepages_free);
    if hugepages_free >= n * (dpdk + segments) {
        return Ok(MemoryPlan {
            dpdk_hugepages: true,
            segments_in_hugepages: true,
            description: format!(
                "DPDK and active segments in hugepages: {nodes} x {} MiB of {free} MiB free \
                 ({} MiB segments, room for {PARTITIONS_BUDGETED} partitions per broker)",
                mib(dpdk + segments),
                mib(segment_bytes)
            ),
        });
    }
    if hugepages_free >= n * dpdk {
        return Ok(MemoryPlan {
            dpdk_hugepages: true,
            segments_in_hugepages: false,
            description: format!(
                "DPDK in hugepages ({nodes} x {} MiB of {free} MiB free), active segments in \
                 /dev/shm (hugepages for them too would need {nodes} x {} MiB more)",
                mib(dpdk),
                mib(segments)
            ),
        });
    }
    if preset == Preset::Maximum {
        bail!(
            "preset maximum requires hugepages: {nodes} broker(s) need {nodes} x {} MiB, \
             {free} MiB are free (echo N > /proc/sys/vm/nr_hugepages, or fewer --nodes, \
             or --mbufs)",
            mib(dpdk)
        );
    }
    Ok(MemoryPlan {
        dpdk_hugepages: false,
        segments_in_hugepages: false,
        description: format!(
            "no hugepages ({free} MiB free, {nodes} x {} MiB needed): DPDK runs with --no-huge \
             ({NO_HUGE_MEMORY_MB} MiB each), active segments in /dev/shm",
            mib(dpdk)
        ),
    })
}

/// Free hugepage bytes, 0 without a hugetlbfs at /dev/hugepages.
pub(super) fn hugepages_free_bytes() -> u64 {
    if !precursor_config::hugetlbfs_mounted(Path::new("/dev/hugepages")) {
        return 0;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field("HugePages_Free:") * field("Hugepagesize:") * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_brokers_fit_in_the_hugepages_ci_reserves() {
        let gib2 = 2 << 30;
        let plan = plan_memory(
            3,
            MBUFS_DEFAULT,
            SEGMENT_BYTES_DEFAULT,
            Preset::Balanced,
            gib2,
        )
        .unwrap();
        assert!(
            plan.dpdk_hugepages && plan.segments_in_hugepages,
            "{plan:?}"
        );
        // Five still fit when nothing else holds hugepages.
        let plan = plan_memory(
            5,
            MBUFS_DEFAULT,
            SEGMENT_BYTES_DEFAULT,
            Preset::Balanced,
            gib2,
        )
        .unwrap();
        assert!(plan.segments_in_hugepages, "{plan:?}");
        // Fewer pages: DPDK keeps them, segments go to /dev/shm; none: --no-huge.
        let plan = plan_memory(
            3,
            MBUFS_DEFAULT,
            SEGMENT_BYTES_DEFAULT,
            Preset::Balanced,
            300 << 20,
        )
        .unwrap();
        assert!(
            plan.dpdk_hugepages && !plan.segments_in_hugepages,
            "{plan:?}"
        );
        let plan =
            plan_memory(3, MBUFS_DEFAULT, SEGMENT_BYTES_DEFAULT, Preset::Balanced, 0).unwrap();
        assert!(!plan.dpdk_hugepages, "{plan:?}");
        let refused = plan_memory(3, MBUFS_DEFAULT, SEGMENT_BYTES_DEFAULT, Preset::Maximum, 0);
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("requires hugepages"));
        assert!(plan_memory(3, MBUFS_DEFAULT, 3 << 20, Preset::Balanced, 0).is_err());
    }
}
