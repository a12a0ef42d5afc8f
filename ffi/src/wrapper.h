/* Headers bound by bindgen for precursor-ffi (DPDK 22.11). The build passes
 * `pkg-config --cflags libdpdk` verbatim, which already has `-include rte_config.h`. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_ring.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_eth_ring.h>
#include <rte_bus_vdev.h>

#include "shim.h"
