//! [`Port`]: one ethdev port (a NIC, SR-IOV VF, or a vdev: tap, af_packet,
//! memif, ring).

use std::cell::Cell;
use std::ffi::{c_char, CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::burst::MbufBurst;
use super::eal::{Eal, EalRef};
use super::error::{check, DpdkError};
use super::mempool::Mempool;
use super::ring_pair::RingPairShared;
use crate::sys;

const PORTS_MAX: usize = sys::RTE_MAX_ETHPORTS as usize;

/// Which port ids have a live `Port` (one owner per device).
static PORT_CLAIMED: [AtomicBool; PORTS_MAX] = [const { AtomicBool::new(false) }; PORTS_MAX];

/// Held while a port id changes hands: from a `Port` being dropped (close, then the claim
/// released) to a port created and claimed in this process (a ring pair). Without it a
/// closed port's id, free in DPDK before its claim is released, can be handed to a new
/// port on another thread, which then finds it claimed (PortInUse). Never on a hot path.
pub(crate) static PORT_LIFECYCLE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What [`Port::configure`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    /// RX queues (each polled by one thread).
    pub rx_queues: u16,
    /// TX queues.
    pub tx_queues: u16,
    /// Descriptors per RX queue; clamped to the device's limits.
    pub rx_descriptors: u16,
    /// Descriptors per TX queue; clamped to the device's limits.
    pub tx_descriptors: u16,
    /// L3 MTU in bytes (1500 for standard Ethernet).
    pub mtu_bytes: u16,
    /// Receive frames for any destination MAC.
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mtu_bytes: 1500,
            promiscuous: true,
        }
    }
}

/// What [`Port::configure`] actually applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedPortConfig {
    /// RX queues configured.
    pub rx_queues: u16,
    /// TX queues configured.
    pub tx_queues: u16,
    /// Descriptors per RX queue after clamping to the device's limits.
    pub rx_descriptors: u16,
    /// Descriptors per TX queue after clamping.
    pub tx_descriptors: u16,
    /// The MTU recorded by ethdev.
    pub mtu_bytes: u16,
    /// False when the PMD has no MTU setting (`rte_eth_dev_set_mtu` says
    /// ENOTSUP, e.g. net_ring): it then passes frames of any size its mbufs hold,
    /// and the MTU is only a number the application should enforce itself.
    pub mtu_enforced: bool,
    /// Whether promiscuous mode is on (false when asked but unsupported).
    pub promiscuous: bool,
}

/// Link state (`rte_eth_link_get_nowait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStatus {
    /// Link is up.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
}

/// Basic port counters (`rte_eth_stats_get`); fields a PMD does not count stay 0
/// (net_ring counts packets, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets dropped by the device because the RX queues were full.
    pub rx_missed: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// RX mbuf allocation failures (pool exhausted).
    pub rx_nombuf: u64,
}

/// One ethdev port, owned: at most one `Port` per device in the process.
/// Stopped and closed (`rte_eth_dev_close`) on drop; a ring-pair port is also
/// removed from the vdev bus, so its name can be reused.
///
/// `Send` but not `Sync`: DPDK queues are not thread-safe, so the polling
/// thread owns the port.
pub struct Port {
    id: u16,
    name: String,
    /// RX / TX queues usable by the bursts: the configured counts while
    /// started, 0 otherwise (DPDK does not check queue ids on the fast path).
    active_rx_queues: u16,
    active_tx_queues: u16,
    applied: Option<AppliedPortConfig>,
    /// Kept alive while the port may allocate from it.
    pool: Option<Mempool>,
    /// Set for ports made by [`crate::ring_port_pair`].
    ring_pair: Option<Arc<RingPairShared>>,
    _eal: EalRef,
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("started", &self.is_started())
            .field("applied", &self.applied)
            .finish()
    }
}

/// The ethdev name of `port_id`.
pub(crate) fn port_name(port_id: u16) -> Option<String> {
    let mut buf = [0 as c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf has RTE_ETH_NAME_MAX_LEN bytes, the size DPDK writes at most
    // (NUL included); the EAL is running (callers hold a reference).
    let ret = unsafe { sys::rte_eth_dev_get_name_by_port(port_id, buf.as_mut_ptr()) };
    if ret != 0 {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated string.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

impl Port {
    /// The port named `name` (`rte_eth_dev_get_port_by_name`): a vdev created by
    /// an EAL `--vdev` argument (`net_tap0`, `net_af_packet0`, `net_ring0`,
    /// `net_memif0`, ...) or a PCI address (`0000:01:00.0`).
    pub fn by_name(eal: &Eal, name: &str) -> Result<Port, DpdkError> {
        let not_found = || DpdkError::PortNotFound {
            name: name.to_owned(),
            available: eal.port_names(),
        };
        let c_name = CString::new(name).map_err(|_| not_found())?;
        let mut port_id: u16 = 0;
        // SAFETY: c_name is a valid C string, port_id a valid out-pointer; the
        // EAL is running (eal).
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut port_id) };
        if ret != 0 {
            return Err(not_found());
        }
        Port::claim(port_id, None)
    }

    /// The port with id `port_id`.
    pub fn from_id(port_id: u16) -> Result<Port, DpdkError> {
        Port::claim(port_id, None)
    }

    pub(crate) fn claim(
        port_id: u16,
        ring_pair: Option<Arc<RingPairShared>>,
    ) -> Result<Port, DpdkError> {
        let eal = EalRef::acquire()?;
        // SAFETY: the EAL is running; any port id is accepted and checked.
        let valid = unsafe { sys::rte_eth_dev_is_valid_port(port_id) } == 1;
        let name = match port_name(port_id) {
            Some(name) if valid && (port_id as usize) < PORTS_MAX => name,
            _ => {
                return Err(DpdkError::PortNotFound {
                    name: format!("port id {port_id}"),
                    available: Vec::new(),
                })
            }
        };
        if PORT_CLAIMED[port_id as usize].swap(true, Ordering::AcqRel) {
            return Err(DpdkError::PortInUse { port_id, name });
        }
        Ok(Port {
            id: port_id,
            name,
            active_rx_queues: 0,
            active_tx_queues: 0,
            applied: None,
            pool: None,
            ring_pair,
            _eal: eal,
            _not_sync: PhantomData,
        })
    }

    /// ethdev port id.
    #[inline]
    pub fn id(&self) -> u16 {
        self.id
    }

    /// ethdev name (`net_tap0`, `net_ring_NAME_a`, `0000:01:00.0`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True between [`Port::start`] and [`Port::stop`].
    pub fn is_started(&self) -> bool {
        self.active_rx_queues > 0 || self.active_tx_queues > 0
    }

    /// What the last [`Port::configure`] applied.
    pub fn applied_config(&self) -> Option<&AppliedPortConfig> {
        self.applied.as_ref()
    }

    /// The device's driver and limits (`rte_eth_dev_info_get`).
    fn dev_info(&self) -> Result<sys::rte_eth_dev_info, DpdkError> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: info is a valid out-pointer; the port is valid and ours.
        check("rte_eth_dev_info_get", unsafe {
            sys::rte_eth_dev_info_get(self.id, &mut info)
        })?;
        Ok(info)
    }

    /// Configures queues, descriptors, MTU and promiscuity; RX queues draw mbufs
    /// from `pool` (kept alive by the port). The port must be stopped.
    ///
    /// Descriptor counts are clamped to the device's limits
    /// (`rte_eth_dev_adjust_nb_rx_tx_desc`); queue counts and MTU outside its
    /// limits are errors. See [`Port::applied_config`] for what was applied,
    /// including whether the PMD enforces the MTU at all.
    pub fn configure(&mut self, cfg: &PortConfig, pool: &Mempool) -> Result<(), DpdkError> {
        if self.is_started() {
            return Err(DpdkError::InvalidArgument {
                what: "port state",
                reason: format!(
                    "port {} is started: stop() it before configure()",
                    self.name
                ),
            });
        }
        let info = self.dev_info()?;
        let invalid = |reason: String| DpdkError::InvalidArgument {
            what: "port configuration",
            reason,
        };
        if cfg.rx_queues == 0 || cfg.rx_queues > info.max_rx_queues {
            return Err(invalid(format!(
                "rx_queues {} must be 1..={} for {}",
                cfg.rx_queues, info.max_rx_queues, self.name
            )));
        }
        if cfg.tx_queues == 0 || cfg.tx_queues > info.max_tx_queues {
            return Err(invalid(format!(
                "tx_queues {} must be 1..={} for {}",
                cfg.tx_queues, info.max_tx_queues, self.name
            )));
        }
        if cfg.rx_descriptors == 0 || cfg.tx_descriptors == 0 {
            return Err(invalid("descriptor counts must be > 0".into()));
        }
        if cfg.mtu_bytes < info.min_mtu || cfg.mtu_bytes > info.max_mtu {
            return Err(invalid(format!(
                "mtu_bytes {} must be {}..={} for {}",
                cfg.mtu_bytes, info.min_mtu, info.max_mtu, self.name
            )));
        }

        let mut conf = sys::rte_eth_conf::default();
        conf.rxmode.mtu = cfg.mtu_bytes as u32;
        // SAFETY: conf is a valid, fully initialized rte_eth_conf; the port is ours
        // and stopped.
        check("rte_eth_dev_configure", unsafe {
            sys::rte_eth_dev_configure(self.id, cfg.rx_queues, cfg.tx_queues, &conf)
        })?;
        // From here the old queue setup is gone.
        self.applied = None;

        let mut rx_descriptors = cfg.rx_descriptors;
        let mut tx_descriptors = cfg.tx_descriptors;
        // SAFETY: both are valid in/out pointers; the port is configured.
        check("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut rx_descriptors, &mut tx_descriptors)
        })?;

        // SAFETY: the port is valid; returns a socket id or -1 (SOCKET_ID_ANY).
        let socket = unsafe { sys::rte_eth_dev_socket_id(self.id) };
        for queue in 0..cfg.rx_queues {
            // SAFETY: queue < the configured count; NULL rxconf means the PMD's
            // defaults; pool is a live pktmbuf pool that self keeps alive below
            // for as long as the queue can use it. -1 as unsigned is SOCKET_ID_ANY,
            // as DPDK expects.
            check("rte_eth_rx_queue_setup", unsafe {
                sys::rte_eth_rx_queue_setup(
                    self.id,
                    queue,
                    rx_descriptors,
                    socket as u32,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            })?;
        }
        self.pool = Some(pool.clone());
        if let Some(ring_pair) = &self.ring_pair {
            ring_pair.keep_pool(pool);
        }
        for queue in 0..cfg.tx_queues {
            // SAFETY: queue < the configured count; NULL txconf means defaults.
            check("rte_eth_tx_queue_setup", unsafe {
                sys::rte_eth_tx_queue_setup(
                    self.id,
                    queue,
                    tx_descriptors,
                    socket as u32,
                    std::ptr::null(),
                )
            })?;
        }

        // SAFETY: the port is configured.
        let mtu_enforced = match unsafe { sys::rte_eth_dev_set_mtu(self.id, cfg.mtu_bytes) } {
            0 => true,
            ret if ret == -libc::ENOTSUP => false,
            ret => return Err(DpdkError::call("rte_eth_dev_set_mtu", -ret)),
        };
        let mut mtu_bytes = cfg.mtu_bytes;
        // SAFETY: valid out-pointer, valid port.
        check("rte_eth_dev_get_mtu", unsafe {
            sys::rte_eth_dev_get_mtu(self.id, &mut mtu_bytes)
        })?;

        let promiscuous = if cfg.promiscuous {
            // SAFETY: valid, configured port.
            match unsafe { sys::rte_eth_promiscuous_enable(self.id) } {
                0 => true,
                ret if ret == -libc::ENOTSUP => false,
                ret => return Err(DpdkError::call("rte_eth_promiscuous_enable", -ret)),
            }
        } else {
            // SAFETY: valid, configured port. Unsupported means "never promiscuous".
            let ret = unsafe { sys::rte_eth_promiscuous_disable(self.id) };
            if ret != 0 && ret != -libc::ENOTSUP {
                return Err(DpdkError::call("rte_eth_promiscuous_disable", -ret));
            }
            false
        };

        self.applied = Some(AppliedPortConfig {
            rx_queues: cfg.rx_queues,
            tx_queues: cfg.tx_queues,
            rx_descriptors,
            tx_descriptors,
            mtu_bytes,
            mtu_enforced,
            promiscuous,
        });
        Ok(())
    }

    /// Starts the port (`rte_eth_dev_start`); it must be configured.
    pub fn start(&mut self) -> Result<(), DpdkError> {
        let Some(applied) = self.applied else {
            return Err(DpdkError::InvalidArgument {
                what: "port state",
                reason: format!(
                    "port {} is not configured: call configure() first",
                    self.name
                ),
            });
        };
        if self.is_started() {
            return Ok(());
        }
        // SAFETY: the port is ours, configured, and its queues are set up.
        check("rte_eth_dev_start", unsafe {
            sys::rte_eth_dev_start(self.id)
        })?;
        self.active_rx_queues = applied.rx_queues;
        self.active_tx_queues = applied.tx_queues;
        Ok(())
    }

    /// Stops the port (`rte_eth_dev_stop`); bursts return 0 until restarted.
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if !self.is_started() {
            return Ok(());
        }
        self.active_rx_queues = 0;
        self.active_tx_queues = 0;
        // SAFETY: the port is ours and started; no burst runs concurrently
        // (&mut self, and Port is not Sync).
        check("rte_eth_dev_stop", unsafe {
            sys::rte_eth_dev_stop(self.id)
        })?;
        Ok(())
    }

    /// The port's MAC address (`rte_eth_macaddr_get`; zeros if DPDK cannot say).
    pub fn mac_address(&self) -> [u8; 6] {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid out-pointer, valid port.
        let ret = unsafe { sys::rte_eth_macaddr_get(self.id, &mut addr) };
        if ret == 0 {
            addr.addr_bytes
        } else {
            [0; 6]
        }
    }

    /// Link state without waiting (`rte_eth_link_get_nowait`; down if DPDK
    /// cannot say).
    pub fn link(&self) -> LinkStatus {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: valid out-pointer, valid port.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.id, &mut link) };
        if ret != 0 {
            return LinkStatus::default();
        }
        let up = link.link_status() == sys::RTE_ETH_LINK_UP as u16;
        let speed_mbps = if link.link_speed == sys::RTE_ETH_SPEED_NUM_UNKNOWN {
            0
        } else {
            link.link_speed
        };
        LinkStatus { up, speed_mbps }
    }

    /// Port counters (`rte_eth_stats_get`; zeros if the PMD cannot say).
    pub fn stats(&self) -> PortStats {
        let mut stats = sys::rte_eth_stats::default();
        // SAFETY: valid out-pointer, valid port.
        let ret = unsafe { sys::rte_eth_stats_get(self.id, &mut stats) };
        if ret != 0 {
            return PortStats::default();
        }
        PortStats {
            rx_packets: stats.ipackets,
            tx_packets: stats.opackets,
            rx_bytes: stats.ibytes,
            tx_bytes: stats.obytes,
            rx_missed: stats.imissed,
            rx_errors: stats.ierrors,
            tx_errors: stats.oerrors,
            rx_nombuf: stats.rx_nombuf,
        }
    }

    /// Zeroes the counters (`rte_eth_stats_reset`).
    pub fn reset_stats(&self) -> Result<(), DpdkError> {
        // SAFETY: valid port.
        check("rte_eth_stats_reset", unsafe {
            sys::rte_eth_stats_reset(self.id)
        })?;
        Ok(())
    }

    /// Receives into the empty slots of `burst` from RX queue `queue`
    /// (`rte_eth_rx_burst`); returns how many arrived. 0 when the burst is
    /// full, the port is not started, or `queue` is not configured.
    #[inline]
    pub fn rx_burst<const N: usize>(&self, queue: u16, burst: &mut MbufBurst<N>) -> usize {
        if queue >= self.active_rx_queues {
            return 0;
        }
        let (slots, free) = burst.spare_slots();
        if free == 0 {
            return 0;
        }
        // SAFETY: the port is started and `queue` is one of its configured RX
        // queues; only this thread polls it (Port is the unique owner of the
        // device and is not Sync). slots points at `free` writable slots.
        let received =
            unsafe { sys::prc_eth_rx_burst(self.id, queue, slots, free as u16) } as usize;
        // SAFETY: DPDK wrote `received <= free` non-null mbufs, now ours.
        unsafe { burst.assume_pushed(received) };
        received
    }

    /// Sends mbufs from the front of `burst` on TX queue `queue`
    /// (`rte_eth_tx_burst`) and returns how many the queue took; the rest stay
    /// in `burst` (moved to the front) for the caller to retry or drop.
    #[inline]
    pub fn tx_burst<const N: usize>(&self, queue: u16, burst: &mut MbufBurst<N>) -> usize {
        if queue >= self.active_tx_queues || burst.is_empty() {
            return 0;
        }
        let len = burst.len();
        // SAFETY: the port is started and `queue` is one of its configured TX
        // queues, used by this thread only (see rx_burst). The first `len` slots
        // hold owned mbufs; DPDK takes ownership of the first `sent`.
        let sent = unsafe { sys::prc_eth_tx_burst(self.id, queue, burst.raw_slots(), len as u16) }
            as usize;
        // SAFETY: sent <= len, and DPDK now owns those mbufs.
        unsafe { burst.consume_front(sent) };
        sent
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        let _lifecycle = PORT_LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_started() {
            // Errors cannot be reported from drop; close below stops anyway.
            let _ = self.stop();
        }
        // SAFETY: the port is ours; nothing uses it after this (the claim is
        // released only below). close frees the queues' mbufs to their pools,
        // which self.pool still keeps alive.
        unsafe { sys::rte_eth_dev_close(self.id) };
        if self.ring_pair.is_some() {
            if let Ok(name) = CString::new(self.name.as_str()) {
                // SAFETY: name is a valid C string; the ethdev is closed, so this
                // only removes the (ring PMD) vdev from the bus, freeing its name.
                unsafe { sys::rte_vdev_uninit(name.as_ptr()) };
            }
        }
        PORT_CLAIMED[self.id as usize].store(false, Ordering::Release);
    }
}
