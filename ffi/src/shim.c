/* Hand-written C shim: DPDK's fast path is `static inline` (and rte_errno /
 * the lcore id are thread-local macros), which bindgen cannot link to.
 * Each function here is one line; compiled with `pkg-config --cflags libdpdk`. */
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_ring.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>

#include "shim.h"

int prc_rte_errno(void) { return rte_errno; }
unsigned prc_lcore_id(void) { return rte_lcore_id(); }
uint64_t prc_rdtsc(void) { return rte_rdtsc(); }
uint64_t prc_get_tsc_cycles(void) { return rte_get_tsc_cycles(); }

uint16_t prc_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
                          uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t prc_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
                          uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *prc_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int prc_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}
void prc_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
char *prc_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *prc_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *prc_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int prc_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
void prc_pktmbuf_reset(struct rte_mbuf *m) { rte_pktmbuf_reset(m); }
uint16_t prc_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t prc_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }

unsigned prc_ring_enqueue_burst(struct rte_ring *r, void *const *obj_table, unsigned n,
                                unsigned *free_space)
{
	return rte_ring_enqueue_burst(r, obj_table, n, free_space);
}
unsigned prc_ring_dequeue_burst(struct rte_ring *r, void **obj_table, unsigned n,
                                unsigned *available)
{
	return rte_ring_dequeue_burst(r, obj_table, n, available);
}
unsigned prc_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }
